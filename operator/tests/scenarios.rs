//! The controller against a scripted API server (`tower_test::mock::pair`): every scenario runs
//! one reconcile, answers each API call from a script, and checks each call's method, path,
//! query (field manager, force), and body. Every call must also be granted by the operator's
//! RBAC table ([`palisade_operator::rbac`]).

use std::collections::BTreeSet;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{Pod, PodCondition, PodStatus};
use kube::api::ObjectMeta;
use palisade_operator::controller::rollout::{ProbeError, ReadyProbe};
use palisade_operator::names;

use http::{Method, Request, Response};
use http_body_util::BodyExt;
use kube::Client;
use kube::client::Body;
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use palisade_crds::{McpAccessPolicy, McpServer};
use palisade_operator::controller::{self, Context, Error};
use palisade_operator::metrics::Metrics;
use palisade_operator::settings::Settings;
use serde_json::{Value, json};

const NS: &str = "team-a";

/// One API call as the scripted server saw it.
#[derive(Debug, Clone)]
struct Call {
    method: Method,
    path: String,
    query: String,
    content_type: String,
    accept: String,
    body: Value,
}

impl Call {
    fn is(&self, method: &Method, path: &str) -> bool {
        self.method == method && self.path == path
    }

    fn is_apply(&self) -> bool {
        self.method == Method::PATCH && !self.path.contains("/events")
    }
}

/// A scripted answer.
enum Reply {
    Json(u16, Value),
    /// A plain-text answer, as the API server gives for a kind it does not serve.
    Text(u16, &'static str),
    /// The connection fails (as on a timeout).
    Fail,
}

fn not_found(what: &str) -> Reply {
    Reply::Json(
        404,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": format!("{what} not found"), "reason": "NotFound", "code": 404}),
    )
}

fn status_error(code: u16, reason: &str) -> Reply {
    Reply::Json(
        code,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": reason, "reason": reason, "code": code}),
    )
}

fn metadata_of(name: &str) -> Reply {
    Reply::Json(
        200,
        json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
               "metadata": {"name": name, "namespace": NS, "uid": format!("uid-{name}")}}),
    )
}

fn empty_list() -> Reply {
    Reply::Json(
        200,
        json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList",
               "metadata": {"resourceVersion": "1"}, "items": []}),
    )
}

/// The default answers of a healthy cluster with `server` in it: referenced objects exist,
/// applies echo the object (a Deployment with all pods ready), lists are empty, events are
/// created.
fn healthy(server: &Value, call: &Call) -> Reply {
    let base = format!("/api/v1/namespaces/{NS}");
    if call.method == Method::GET && call.query.contains("labelSelector") {
        return empty_list();
    }
    // A list by name (the live Deployment, read while autoscaling is on): not there yet.
    if call.method == Method::GET && call.query.contains("fieldSelector") {
        return Reply::Json(
            200,
            json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": []}),
        );
    }
    if call.method == Method::GET
        && let Some(name) = call
            .path
            .strip_prefix(&format!("{base}/configmaps/"))
            .or_else(|| call.path.strip_prefix(&format!("{base}/secrets/")))
    {
        return metadata_of(name);
    }
    if call.path.contains("/events") {
        return Reply::Json(201, call.body.clone());
    }
    if call.is_apply() && call.path.ends_with("/status") {
        let mut object = server.clone();
        object["status"] = call.body["status"].clone();
        return Reply::Json(200, object);
    }
    if call.is_apply() {
        let mut object = call.body.clone();
        object["metadata"]["generation"] = json!(1);
        if call.path.contains("/deployments/") {
            object["status"] = json!({"observedGeneration": 1, "replicas": 1, "readyReplicas": 1,
                                      "availableReplicas": 1, "updatedReplicas": 1});
        }
        return Reply::Json(200, object);
    }
    panic!("unscripted call {} {}?{}", call.method, call.path, call.query);
}

struct Harness {
    ctx: Arc<Context>,
    handle: tower_test::mock::Handle<Request<Body>, Response<Body>>,
    policies: reflector::store::Writer<DeserializeGuard<McpAccessPolicy>>,
    servers: reflector::store::Writer<DeserializeGuard<McpServer>>,
    /// What the server's one ready pod answers on `GET /ready`.
    pod: Arc<Mutex<PodAnswer>>,
}

/// The policy hash the scripted pod reports.
#[derive(Debug, Clone)]
enum PodAnswer {
    /// That of the policy ConfigMap applied last (a pod that reloads at once).
    FollowsApplied(Option<String>),
    /// This one, whatever was applied (a pod kubelet has not updated yet).
    Serves(String),
}

/// One ready pod of server `company-info` that answers what [`PodAnswer`] says.
struct ScriptedPod(Arc<Mutex<PodAnswer>>);

impl ReadyProbe for ScriptedPod {
    fn policy_hash(&self, address: SocketAddr) -> BoxFuture<'_, Result<String, ProbeError>> {
        assert_eq!(
            address,
            "10.0.0.7:8080".parse().unwrap(),
            "the pod's IP and the MCP port"
        );
        let answer = self.0.lock().unwrap().clone();
        Box::pin(async move {
            match answer {
                PodAnswer::FollowsApplied(Some(hash)) | PodAnswer::Serves(hash) => Ok(hash),
                PodAnswer::FollowsApplied(None) => Err(ProbeError::Status("/ready", 503)),
            }
        })
    }
}

fn ready_pod() -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some("company-info-5d8f-x2".into()),
            namespace: Some(NS.into()),
            labels: Some(names::labels("company-info", names::Component::Server)),
            ..ObjectMeta::default()
        },
        spec: None,
        status: Some(PodStatus {
            pod_ip: Some("10.0.0.7".into()),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: "True".into(),
                ..PodCondition::default()
            }]),
            ..PodStatus::default()
        }),
    }
}

fn harness() -> Harness {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let (policy_store, mut policies) = reflector::store::<DeserializeGuard<McpAccessPolicy>>();
    let (server_store, mut servers): (Store<DeserializeGuard<McpServer>>, _) = reflector::store();
    // Both caches have listed once (empty): the reconcilers wait for that.
    for event in [watcher::Event::Init, watcher::Event::InitDone] {
        policies.apply_watcher_event(&event);
    }
    for event in [watcher::Event::Init, watcher::Event::InitDone] {
        servers.apply_watcher_event(&event);
    }
    let (pod_store, mut pods) = reflector::store::<Pod>();
    pods.apply_watcher_event(&watcher::Event::Apply(ready_pod()));
    let pod = Arc::new(Mutex::new(PodAnswer::FollowsApplied(None)));
    let ctx = Context::new(
        client,
        Settings::default(),
        policy_store,
        server_store,
        Arc::new(Metrics::default()),
    )
    .with_pods(pod_store, Arc::new(ScriptedPod(pod.clone())));
    Harness {
        ctx: Arc::new(ctx),
        handle,
        policies,
        servers,
        pod,
    }
}

impl Harness {
    fn add_server(&mut self, server: McpServer) {
        self.servers
            .apply_watcher_event(&watcher::Event::Apply(DeserializeGuard(Ok(server))));
    }

    fn add_policy(&mut self, policy: McpAccessPolicy) {
        self.policies
            .apply_watcher_event(&watcher::Event::Apply(DeserializeGuard(Ok(policy))));
    }

    /// Runs one reconcile of `server`, answering every call with `script`.
    async fn reconcile(
        &mut self,
        server: &McpServer,
        mut script: impl FnMut(&Call) -> Reply,
    ) -> (Result<Action, Error>, Vec<Call>) {
        let object = Arc::new(DeserializeGuard(Ok(server.clone())));
        let task = tokio::spawn(controller::reconcile(object, self.ctx.clone()));
        self.serve(task, &mut script).await
    }

    /// Runs one reconcile of the status of `policy`.
    async fn reconcile_policy(
        &mut self,
        policy: &McpAccessPolicy,
        mut script: impl FnMut(&Call) -> Reply,
    ) -> (Result<Action, Error>, Vec<Call>) {
        let object = Arc::new(DeserializeGuard(Ok(policy.clone())));
        let task = tokio::spawn(controller::reconcile_policy(object, self.ctx.clone()));
        self.serve(task, &mut script).await
    }

    async fn serve(
        &mut self,
        mut task: tokio::task::JoinHandle<Result<Action, Error>>,
        script: &mut impl FnMut(&Call) -> Reply,
    ) -> (Result<Action, Error>, Vec<Call>) {
        let mut calls = Vec::new();
        let run = async {
            loop {
                tokio::select! {
                    result = &mut task => return result.expect("the reconcile panicked"),
                    request = self.handle.next_request() => {
                        let (request, send) = request.expect("the client went away");
                        let call = call_of(request).await;
                        check_call(&call);
                        if call.is_apply() && call.path.ends_with("-policy") {
                            let mut pod = self.pod.lock().unwrap();
                            if let PodAnswer::FollowsApplied(hash) = &mut *pod {
                                *hash = call.body["metadata"]["annotations"][names::POLICY_HASH_ANNOTATION]
                                    .as_str()
                                    .map(str::to_owned);
                            }
                        }
                        match script(&call) {
                            Reply::Json(code, body) => send.send_response(
                                Response::builder()
                                    .status(code)
                                    .header("content-type", "application/json")
                                    .body(Body::from(serde_json::to_vec(&body).unwrap()))
                                    .unwrap(),
                            ),
                            Reply::Text(code, body) => send.send_response(
                                Response::builder()
                                    .status(code)
                                    .header("content-type", "text/plain; charset=utf-8")
                                    .body(Body::from(body.as_bytes().to_vec()))
                                    .unwrap(),
                            ),
                            Reply::Fail => send.send_error(io::Error::new(io::ErrorKind::TimedOut, "timed out")),
                        }
                        calls.push(call);
                    }
                }
            }
        };
        let result = tokio::time::timeout(Duration::from_secs(10), run)
            .await
            .expect("the scenario did not finish in time: a wrong script?");
        (result, calls)
    }
}

async fn call_of(request: Request<Body>) -> Call {
    let (parts, body) = request.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    Call {
        method: parts.method,
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().unwrap_or_default().to_owned(),
        content_type: parts
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
        accept: parts
            .headers
            .get("accept")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
        body: if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        },
    }
}

/// What every call must satisfy: applies are server-side applies by palisade-operator, forced;
/// every call is granted by the RBAC table.
fn check_call(call: &Call) {
    if call.method == Method::PATCH && !call.path.contains("/events/") {
        assert_eq!(call.content_type, "application/apply-patch+yaml", "{call:?}");
        if call.query.contains("fieldManager=palisade-operator-replicas-handover") {
            // The replica handover (autoscaling switched on): never forced, Deployments only.
            assert!(call.path.contains("/deployments/"), "{call:?}");
            assert!(!call.query.contains("force"), "{call:?}");
        } else {
            assert!(
                call.query.split('&').any(|q| q == "fieldManager=palisade-operator"),
                "{call:?}"
            );
            assert!(call.query.contains("force=true"), "{call:?}");
        }
    }
    let (group, resource) = group_resource(&call.path);
    let verb = match call.method.as_str() {
        "GET" if call.query.contains("labelSelector") || !has_name(&call.path) => "list",
        "GET" => "get",
        "PATCH" => "patch",
        "POST" => "create",
        "DELETE" => "delete",
        "PUT" => "update",
        other => panic!("unexpected method {other}"),
    };
    assert!(
        palisade_operator::rbac::grants(&group, &resource, verb),
        "{verb} {group}/{resource} is not in the RBAC table ({call:?})"
    );
}

/// `(group, resource[/subresource])` of a namespaced API path.
fn group_resource(path: &str) -> (String, String) {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (group, rest) = match parts[0] {
        "api" => (String::new(), &parts[2..]),
        _ => (parts[1].to_owned(), &parts[3..]),
    };
    // rest: namespaces/<ns>/<resource>[/<name>[/<sub>]]
    let resource = match rest {
        [_, _, resource, _, sub] => format!("{resource}/{sub}"),
        [_, _, resource, ..] => (*resource).to_owned(),
        _ => panic!("unexpected path {path}"),
    };
    (group, resource)
}

fn has_name(path: &str) -> bool {
    path.trim_start_matches('/').split('/').count() > if path.starts_with("/api/") { 5 } else { 6 }
}

fn server(extra_spec: &str) -> McpServer {
    let yaml = format!(
        r#"apiVersion: palisade.dev/v1alpha1
kind: McpServer
metadata: {{name: company-info, namespace: {NS}, uid: uid-server, generation: 1}}
spec:
  documents:
    - {{collection: public, configMapRef: {{name: company-public-docs}}}}
    - {{collection: faq, inline: [{{name: faq.md, content: 'FAQ'}}]}}
  tools:
    - {{name: get_public_info, collection: public, action: readAll}}
    - {{name: get_faq, collection: faq, action: readAll}}
{extra_spec}"#
    );
    yaml_serde::from_str(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"))
}

const PLAIN_AUTH: &str = "  auth:\n    issuers:\n      - issuer: palisade-dev\n        hmacKey: {secretKeyRef: {name: company-info-jwt, key: hmac-key}}\n";
const EXTERNAL_AUTH: &str = "  auth:\n    issuers:\n      - issuer: palisade-dev\n        hmacKey:\n          externalSecret: {storeRef: {kind: ClusterSecretStore, name: gcp}, remoteKey: mcp-jwt-secret}\n";

fn policy(scopes: &str, tests: &str) -> McpAccessPolicy {
    let yaml = format!(
        r#"apiVersion: palisade.dev/v1alpha1
kind: McpAccessPolicy
metadata: {{name: company-info-access, namespace: {NS}, uid: uid-policy, generation: 1}}
spec:
  targetRefs: [{{name: company-info}}]
  roles:
    - {{name: employee, scopes: {scopes}}}
  tools:
    - {{match: get_public_info, requiredScopes: ["public:read"]}}
    - {{match: get_faq, requiredScopes: ["faq:read"]}}
  bindings:
    - {{role: employee, groups: [staff]}}
  tests:
{tests}"#
    );
    yaml_serde::from_str(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"))
}

const PASSING_TEST: &str = "    - {name: public readers see public info, identity: {scopes: [\"public:read\"]}, allowed: [get_public_info], denied: [get_faq]}\n";

fn applies(calls: &[Call]) -> Vec<(String, Value)> {
    calls
        .iter()
        .filter(|c| c.is_apply() && !c.path.ends_with("/status") && !c.path.contains("/events"))
        .map(|c| (c.path.clone(), c.body.clone()))
        .collect()
}

fn status_patch(calls: &[Call]) -> Option<&Value> {
    calls
        .iter()
        .find(|c| c.is_apply() && c.path.ends_with("/status"))
        .map(|c| &c.body["status"])
}

fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == type_)
        .unwrap_or_else(|| panic!("no {type_} in {status}"))
}

fn events(calls: &[Call]) -> Vec<(String, String)> {
    calls
        .iter()
        // A repeated event is a PATCH of the first one (a series), a new one a POST.
        .filter(|c| {
            c.path
                .starts_with(&format!("/apis/events.k8s.io/v1/namespaces/{NS}/events"))
        })
        .map(|c| {
            (
                c.body["type"].as_str().unwrap_or_default().to_owned(),
                c.body["reason"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// The server as the API server would hold it after `calls` wrote its status.
fn with_status(server: &McpServer, calls: &[Call]) -> McpServer {
    let mut next = server.clone();
    next.status = Some(serde_json::from_value(status_patch(calls).unwrap().clone()).unwrap());
    next
}

#[tokio::test]
async fn first_reconcile_applies_every_child_in_order_and_writes_the_status() {
    let mut h = harness();
    h.add_policy(policy(r#"["public:read"]"#, PASSING_TEST));
    let server = server(PLAIN_AUTH);
    let object = serde_json::to_value(&server).unwrap();
    let (result, calls) = h.reconcile(&server, |c| healthy(&object, c)).await;
    assert_eq!(result.unwrap(), Action::requeue(controller::RESYNC));

    let core = format!("/api/v1/namespaces/{NS}");
    let expected: Vec<(Method, String)> = vec![
        (Method::GET, format!("{core}/configmaps/company-public-docs")),
        (Method::GET, format!("{core}/secrets/company-info-jwt")),
        (Method::PATCH, format!("{core}/serviceaccounts/company-info")),
        (Method::PATCH, format!("{core}/configmaps/company-info-policy")),
        (Method::PATCH, format!("{core}/configmaps/company-info.docs.faq")),
        (Method::PATCH, format!("{core}/services/company-info")),
        (
            Method::PATCH,
            format!("/apis/apps/v1/namespaces/{NS}/deployments/company-info"),
        ),
        // Every kind of child is listed by label, to delete what was not applied.
        (Method::GET, format!("{core}/serviceaccounts")),
        (
            Method::GET,
            format!("/apis/networking.k8s.io/v1/namespaces/{NS}/networkpolicies"),
        ),
        (Method::GET, format!("{core}/configmaps")),
        (
            Method::GET,
            format!("/apis/external-secrets.io/v1/namespaces/{NS}/externalsecrets"),
        ),
        (Method::GET, format!("{core}/services")),
        (Method::GET, format!("/apis/apps/v1/namespaces/{NS}/deployments")),
        (
            Method::GET,
            format!("/apis/policy/v1/namespaces/{NS}/poddisruptionbudgets"),
        ),
        (
            Method::GET,
            format!("/apis/autoscaling/v2/namespaces/{NS}/horizontalpodautoscalers"),
        ),
        (
            Method::PATCH,
            format!("/apis/palisade.dev/v1alpha1/namespaces/{NS}/mcpservers/company-info/status"),
        ),
    ];
    let seen: Vec<(Method, String)> = calls
        .iter()
        .filter(|c| !c.path.ends_with("/events"))
        .map(|c| (c.method.clone(), c.path.clone()))
        .collect();
    assert_eq!(seen, expected);

    // Reads of referenced objects (a ConfigMap, a Secret) ask for metadata only.
    for call in &calls[..2] {
        assert!(call.accept.contains("as=PartialObjectMetadata"), "{call:?}");
    }
    // Deletion candidates are found by the children's labels, whatever their component.
    for call in &calls[7..15] {
        assert_eq!(
            call.query,
            "&labelSelector=app.kubernetes.io%2Finstance%3Dcompany-info%2Capp.kubernetes.io%2Fmanaged-by%3Dpalisade-operator",
            "{call:?}"
        );
        assert!(call.accept.contains("as=PartialObjectMetadataList"), "{call:?}");
    }
    for (path, body) in applies(&calls) {
        let owner = &body["metadata"]["ownerReferences"][0];
        assert_eq!(owner["uid"], "uid-server", "{path}");
        assert_eq!(owner["controller"], true, "{path}");
        assert_eq!(owner["kind"], "McpServer");
        assert_eq!(
            body["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            "palisade-operator"
        );
        assert_eq!(body["metadata"]["namespace"], NS);
    }
    let policy_cm = &applies(&calls)[1].1;
    assert!(
        policy_cm["data"]["policy.yaml"]
            .as_str()
            .unwrap()
            .contains("kind: PolicyDocument")
    );

    let status = status_patch(&calls).unwrap();
    assert_eq!(status["observedGeneration"], 1);
    assert_eq!(status["replicas"], 1);
    assert_eq!(status["readyReplicas"], 1);
    assert_eq!(status["endpoint"], "http://company-info.team-a.svc.cluster.local/mcp");
    assert_eq!(status["boundPolicies"], json!(["company-info-access"]));
    assert!(status["policyHash"].as_str().unwrap().starts_with("sha256:"));
    // The employee role reaches get_public_info; no role reaches get_faq.
    assert_eq!(status["reachableTools"], 1);
    assert_eq!(status["unreachableTools"], json!(["get_faq"]));
    for type_ in ["Ready", "PolicyValid", "DocumentsReady", "SecretsReady"] {
        assert_eq!(condition(status, type_)["status"], "True", "{type_}: {status}");
    }
    let status_call = calls.iter().find(|c| c.path.ends_with("/status")).unwrap();
    assert_eq!(status_call.body["apiVersion"], "palisade.dev/v1alpha1");
    assert_eq!(status_call.body["kind"], "McpServer");
    assert_eq!(
        events(&calls),
        [
            ("Normal".to_owned(), "Ready".to_owned()),
            ("Normal".to_owned(), "PolicyRolledOut".to_owned())
        ]
    );

    // A second reconcile of the unchanged world re-applies the same objects (drift is
    // corrected), writes no status and publishes no event.
    let server = with_status(&server, &calls);
    let object = serde_json::to_value(&server).unwrap();
    let (result, again) = h.reconcile(&server, |c| healthy(&object, c)).await;
    assert!(result.is_ok());
    assert_eq!(applies(&again), applies(&calls));
    assert!(status_patch(&again).is_none(), "an unchanged status is not written");
    assert!(events(&again).is_empty(), "no event without a change");
    // The same children as the first reconcile pruned: no list of children again.
    let prune_lists = |calls: &[Call]| {
        calls
            .iter()
            .filter(|c| c.method == Method::GET && c.query.contains("labelSelector="))
            .count()
    };
    assert!(prune_lists(&calls) >= 7, "the first reconcile prunes every kind");
    assert_eq!(prune_lists(&again), 0, "the second lists nothing to prune");
}

#[tokio::test]
async fn a_policy_change_changes_only_the_policy_config_map_and_the_status() {
    let mut h = harness();
    h.add_policy(policy(r#"["public:read"]"#, PASSING_TEST));
    let server = server(PLAIN_AUTH);
    let object = serde_json::to_value(&server).unwrap();
    let (_, first) = h.reconcile(&server, |c| healthy(&object, c)).await;
    let server = with_status(&server, &first);

    h.add_policy(policy(r#"["public:read", "faq:read"]"#, ""));
    let object = serde_json::to_value(&server).unwrap();
    let (result, second) = h.reconcile(&server, |c| healthy(&object, c)).await;
    assert!(result.is_ok());
    let (before, after) = (applies(&first), applies(&second));
    assert_eq!(before.len(), after.len());
    let changed: Vec<&str> = before
        .iter()
        .zip(&after)
        .filter(|(b, a)| b != a)
        .map(|(b, _)| b.0.as_str())
        .collect();
    assert_eq!(
        changed,
        [format!("/api/v1/namespaces/{NS}/configmaps/company-info-policy")]
    );
    let old_hash = first.iter().find(|c| c.path.ends_with("/status")).unwrap().body["status"]["policyHash"].clone();
    let status = status_patch(&second).expect("the status changes");
    assert_ne!(status["policyHash"], old_hash);
    assert_eq!(events(&second), [("Normal".to_owned(), "PolicyRolledOut".to_owned())]);
}

#[tokio::test]
async fn a_policy_is_in_force_only_once_the_ready_pods_report_it() {
    let mut h = harness();
    h.add_policy(policy(r#"["public:read"]"#, PASSING_TEST));
    let server = server(PLAIN_AUTH);
    let object = serde_json::to_value(&server).unwrap();
    let (_, first) = h.reconcile(&server, |c| healthy(&object, c)).await;
    let server = with_status(&server, &first);
    let old_hash = server.status.as_ref().unwrap().policy_hash.clone().expect("in force");

    // The new policy's ConfigMap is applied, but kubelet has not projected it into the pod yet.
    *h.pod.lock().unwrap() = PodAnswer::Serves(old_hash.clone());
    h.add_policy(policy(r#"["public:read", "faq:read"]"#, ""));
    let object = serde_json::to_value(&server).unwrap();
    let (result, second) = h.reconcile(&server, |c| healthy(&object, c)).await;
    assert_eq!(
        result.unwrap(),
        Action::requeue(controller::ROLLOUT_POLL),
        "looked at again soon, not in five minutes"
    );
    let status = status_patch(&second).expect("the status changes");
    assert_eq!(status["policyHash"], old_hash.as_str(), "the policy the pod serves");
    assert_eq!(status["policyRollout"], json!([{"hash": old_hash, "pods": 1}]));
    let rolled = condition(status, "PolicyRolledOut");
    assert_eq!(
        (rolled["status"].as_str(), rolled["reason"].as_str()),
        (Some("False"), Some("RollingOut"))
    );
    let message = rolled["message"].as_str().unwrap();
    assert!(
        message.starts_with("0 of 1 ready pods serve policy sha256:"),
        "{message}"
    );
    assert!(message.contains(&format!("; 1 on {old_hash}.")), "{message}");
    assert!(
        events(&second).is_empty(),
        "no PolicyRolledOut event yet: {:?}",
        events(&second)
    );
    let new_hash = applies(&second)
        .into_iter()
        .find(|(path, _)| path.ends_with("-policy"))
        .map(|(_, body)| body["metadata"]["annotations"][names::POLICY_HASH_ANNOTATION].clone())
        .unwrap();
    assert_ne!(new_hash, old_hash.as_str());

    // The pod reloaded: in force, with the event.
    let server = with_status(&server, &second);
    *h.pod.lock().unwrap() = PodAnswer::Serves(new_hash.as_str().unwrap().to_owned());
    let object = serde_json::to_value(&server).unwrap();
    let (result, third) = h.reconcile(&server, |c| healthy(&object, c)).await;
    assert_eq!(result.unwrap(), Action::requeue(controller::RESYNC));
    let status = status_patch(&third).expect("the status changes");
    assert_eq!(status["policyHash"], new_hash);
    assert_eq!(status["policyRollout"], json!([{"hash": new_hash, "pods": 1}]));
    assert_eq!(condition(status, "PolicyRolledOut")["status"], "True");
    assert_eq!(events(&third), [("Normal".to_owned(), "PolicyRolledOut".to_owned())]);
}

#[tokio::test]
async fn an_invalid_policy_is_not_rolled_out() {
    let mut h = harness();
    h.add_policy(policy(r#"["public:read"]"#, PASSING_TEST));
    let server = server(PLAIN_AUTH);
    let object = serde_json::to_value(&server).unwrap();
    let (_, first) = h.reconcile(&server, |c| healthy(&object, c)).await;
    let server = with_status(&server, &first);
    let good_hash = server.status.as_ref().unwrap().policy_hash.clone().unwrap();

    // A binding to a role that does not exist does not compile.
    let mut bad = policy(r#"["public:read"]"#, "");
    bad.spec.bindings[0].role = "nobody".into();
    h.add_policy(bad);
    let object = serde_json::to_value(&server).unwrap();
    // The policy ConfigMap in force, as the first reconcile applied it.
    let policy_path = format!("/api/v1/namespaces/{NS}/configmaps/company-info-policy");
    let in_force = applies(&first)
        .into_iter()
        .find(|(path, _)| *path == policy_path)
        .map(|(_, body)| body)
        .expect("the first reconcile applied the policy");
    let (result, calls) = h
        .reconcile(&server, |c| {
            if c.is(&Method::GET, &policy_path) {
                Reply::Json(200, in_force.clone())
            } else {
                healthy(&object, c)
            }
        })
        .await;
    let error = result.unwrap_err();
    assert!(!error.is_transient(), "{error}");
    assert_eq!(
        controller::error_policy(Arc::new(DeserializeGuard(Ok(server.clone()))), &error, h.ctx.clone()),
        Action::await_change()
    );
    // Every other child still follows the server's spec; the policy ConfigMap is applied with
    // the policy in force, byte for byte.
    let applied = applies(&calls);
    assert_eq!(applied.len(), applies(&first).len(), "{calls:?}");
    let kept = &applied.iter().find(|(path, _)| *path == policy_path).expect("policy").1;
    assert_eq!(kept["data"], in_force["data"]);
    assert_eq!(
        kept["metadata"]["annotations"]["palisade.dev/policy-hash"],
        good_hash.as_str()
    );
    let status = status_patch(&calls).unwrap();
    let policy_valid = condition(status, "PolicyValid");
    assert_eq!(policy_valid["status"], "False");
    assert_eq!(policy_valid["reason"], "PolicyInvalid");
    let message = policy_valid["message"].as_str().unwrap();
    assert!(
        message.contains("McpAccessPolicy team-a/company-info-access"),
        "{message}"
    );
    assert!(message.contains("\"nobody\""), "{message}");
    assert!(message.contains(&format!("{good_hash}) stays in force")), "{message}");
    assert_eq!(
        status["policyHash"],
        good_hash.as_str(),
        "the status names the policy in force"
    );
    assert_eq!(condition(status, "Ready")["status"], "False");
    assert!(events(&calls).contains(&("Warning".to_owned(), "PolicyInvalid".to_owned())));
}

#[tokio::test]
async fn a_failing_policy_test_is_not_rolled_out() {
    let mut h = harness();
    h.add_policy(policy(
        r#"["public:read"]"#,
        "    - {name: staff read the faq, identity: {groups: [staff]}, allowed: [get_faq]}\n",
    ));
    let server = server(PLAIN_AUTH);
    let object = serde_json::to_value(&server).unwrap();
    // No policy was ever rolled out (no policy ConfigMap): nothing is applied.
    let policy_path = format!("/api/v1/namespaces/{NS}/configmaps/company-info-policy");
    let (result, calls) = h
        .reconcile(&server, |c| {
            if c.is(&Method::GET, &policy_path) {
                not_found("configmaps \"company-info-policy\"")
            } else {
                healthy(&object, c)
            }
        })
        .await;
    assert!(matches!(result, Err(Error::Validate(_))));
    assert!(applies(&calls).is_empty());
    let policy_valid = condition(status_patch(&calls).unwrap(), "PolicyValid").clone();
    assert_eq!(policy_valid["reason"], "PolicyTestFailed");
    assert!(
        policy_valid["message"]
            .as_str()
            .unwrap()
            .contains("\"staff read the faq\"")
    );
    assert!(events(&calls).contains(&("Warning".to_owned(), "PolicyTestFailed".to_owned())));
}

#[tokio::test]
async fn a_missing_documents_config_map_is_reported_and_retried() {
    let mut h = harness();
    h.add_policy(policy(r#"["public:read"]"#, PASSING_TEST));
    let server = server(PLAIN_AUTH);
    let object = serde_json::to_value(&server).unwrap();
    let missing = format!("/api/v1/namespaces/{NS}/configmaps/company-public-docs");
    let (result, calls) = h
        .reconcile(&server, |c| {
            if c.is(&Method::GET, &missing) {
                not_found("configmaps \"company-public-docs\"")
            } else {
                healthy(&object, c)
            }
        })
        .await;
    assert_eq!(result.unwrap(), Action::requeue(controller::WAITING));
    assert_eq!(applies(&calls).len(), 5, "the rest is applied");
    let status = status_patch(&calls).unwrap();
    let documents = condition(status, "DocumentsReady");
    assert_eq!(documents["status"], "False");
    assert_eq!(documents["reason"], "ConfigMapNotFound");
    assert!(
        documents["message"]
            .as_str()
            .unwrap()
            .contains("ConfigMap team-a/company-public-docs (named in spec.documents[0].configMapRef.name)")
    );
    assert_eq!(condition(status, "Ready")["reason"], "ConfigMapNotFound");
    assert!(events(&calls).contains(&("Warning".to_owned(), "ConfigMapNotFound".to_owned())));
}

#[tokio::test]
async fn api_errors_are_retried_with_back_off_and_never_duplicate_objects() {
    let mut h = harness();
    h.add_policy(policy(r#"["public:read"]"#, PASSING_TEST));
    let server = server(PLAIN_AUTH);
    let object = serde_json::to_value(&server).unwrap();
    let guard = Arc::new(DeserializeGuard(Ok(server.clone())));
    let deployment = format!("/apis/apps/v1/namespaces/{NS}/deployments/company-info");
    let policy_cm = format!("/api/v1/namespaces/{NS}/configmaps/company-info-policy");

    let mut delays = Vec::new();
    let mut all_calls = Vec::new();
    // 409 Conflict on the Deployment, 500 on the status, a timeout on the policy ConfigMap.
    type Failure<'a> = (&'a str, Box<dyn Fn(&Call) -> bool + 'a>, fn() -> Reply);
    let failures: [Failure<'_>; 3] = [
        ("409", Box::new(|c: &Call| c.is(&Method::PATCH, &deployment)), || {
            status_error(409, "Conflict")
        }),
        ("500", Box::new(|c: &Call| c.path.ends_with("/status")), || {
            status_error(500, "InternalError")
        }),
        ("timeout", Box::new(|c: &Call| c.is(&Method::PATCH, &policy_cm)), || {
            Reply::Fail
        }),
    ];
    for (label, fails, reply) in &failures {
        let (result, calls) = h
            .reconcile(&server, |c| if fails(c) { reply() } else { healthy(&object, c) })
            .await;
        let error = result.expect_err(label);
        assert!(error.is_transient(), "{label}: {error}");
        delays.push(controller::error_policy(guard.clone(), &error, h.ctx.clone()));
        all_calls.extend(calls);
    }
    assert_eq!(
        delays,
        [
            Action::requeue(Duration::from_secs(5)),
            Action::requeue(Duration::from_secs(10)),
            Action::requeue(Duration::from_secs(20)),
        ],
        "exponential back-off"
    );
    let (result, calls) = h.reconcile(&server, |c| healthy(&object, c)).await;
    assert!(result.is_ok());
    all_calls.extend(calls);
    // Retries are server-side applies of the same objects: never a POST that could create a
    // second one.
    assert!(
        all_calls
            .iter()
            .all(|c| c.method != Method::POST || c.path.ends_with("/events"))
    );
    // Success resets the back-off.
    let (result, _) = h
        .reconcile(&server, |c| {
            if c.is(&Method::PATCH, &deployment) {
                status_error(500, "InternalError")
            } else {
                healthy(&object, c)
            }
        })
        .await;
    assert_eq!(
        controller::error_policy(guard, &result.unwrap_err(), h.ctx.clone()),
        Action::requeue(Duration::from_secs(5))
    );
}

#[tokio::test]
async fn nothing_is_applied_while_the_server_is_being_deleted() {
    let mut h = harness();
    h.add_policy(policy(r#"["public:read"]"#, PASSING_TEST));
    let mut server = server(PLAIN_AUTH);
    server.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
    ));
    let (result, calls) = h.reconcile(&server, |c| panic!("no call expected, got {c:?}")).await;
    assert_eq!(result.unwrap(), Action::await_change());
    assert!(calls.is_empty());
}

#[tokio::test]
async fn without_the_external_secret_crd_everything_else_is_applied() {
    // A Status, or what a real API server answers for a kind it does not serve: plain text.
    for (what, crd_missing) in [
        (
            "a Status",
            (|| not_found("the server could not find the requested resource")) as fn() -> Reply,
        ),
        ("plain text", || Reply::Text(404, "404 page not found\n")),
    ] {
        without_the_external_secret_crd(what, crd_missing).await;
    }
}

async fn without_the_external_secret_crd(what: &str, crd_missing: fn() -> Reply) {
    let mut h = harness();
    h.add_policy(policy(r#"["public:read"]"#, PASSING_TEST));
    let server = server(EXTERNAL_AUTH);
    let object = serde_json::to_value(&server).unwrap();
    let (result, calls) = h
        .reconcile(&server, |c| {
            if c.path.contains("/externalsecrets") {
                return crd_missing();
            }
            if c.method == Method::GET && c.path.contains("/secrets/") {
                return not_found("secret");
            }
            healthy(&object, c)
        })
        .await;
    assert_eq!(result.unwrap(), Action::requeue(controller::WAITING), "{what}");
    let applied: Vec<String> = applies(&calls).into_iter().map(|(p, _)| p).collect();
    assert!(
        applied
            .iter()
            .any(|p| p.ends_with("/externalsecrets/company-info-jwt") || p.contains("/externalsecrets/"))
    );
    assert!(
        applied.iter().any(|p| p.ends_with("/deployments/company-info")),
        "{applied:?}"
    );
    assert!(
        applied.iter().any(|p| p.ends_with("/services/company-info")),
        "{applied:?}"
    );
    // No list of ExternalSecrets when the CRD is known to be missing.
    assert!(
        !calls
            .iter()
            .any(|c| c.method == Method::GET && c.path.contains("/externalsecrets"))
    );
    let status = status_patch(&calls).unwrap();
    let secrets = condition(status, "SecretsReady");
    assert_eq!(secrets["status"], "False");
    assert_eq!(secrets["reason"], "ExternalSecretsNotInstalled");
    assert!(
        secrets["message"]
            .as_str()
            .unwrap()
            .contains("install External Secrets Operator")
    );
    assert_eq!(condition(status, "PolicyValid")["status"], "True");
}

/// The ExternalSecret as External Secrets Operator left it: the apply answers with its status.
fn external_secret_answer(server: &Value, call: &Call, ready: Value) -> Reply {
    if call.is_apply() && call.path.contains("/externalsecrets/") {
        let mut object = call.body.clone();
        object["status"] = json!({"refreshTime": "2026-11-22T04:00:00Z", "conditions": [ready]});
        return Reply::Json(200, object);
    }
    healthy(server, call)
}

#[tokio::test]
async fn secrets_ready_follows_the_external_secret_ready_condition() {
    let mut h = harness();
    h.add_policy(policy(r#"["public:read"]"#, PASSING_TEST));
    let server = server(EXTERNAL_AUTH);
    let object = serde_json::to_value(&server).unwrap();

    // The store refuses: the target Secret exists from an earlier sync, but SecretsReady (and so
    // Ready) is False with External Secrets Operator's own reason and message.
    let failing = json!({"type": "Ready", "status": "False", "reason": "SecretSyncedError",
                         "message": "could not get secret data from provider"});
    let (result, calls) = h
        .reconcile(&server, |c| external_secret_answer(&object, c, failing.clone()))
        .await;
    assert_eq!(result.unwrap(), Action::requeue(controller::WAITING));
    let status = status_patch(&calls).unwrap();
    let secrets = condition(status, "SecretsReady");
    assert_eq!(
        (&secrets["status"], &secrets["reason"], &secrets["message"]),
        (
            &json!("False"),
            &json!("ExternalSecretSyncFailed"),
            &json!(
                "ExternalSecret team-a/company-info-hmac-3792426a is not Ready (SecretSyncedError: could not get \
                 secret data from provider); the pods keep the value synced last (see `kubectl describe \
                 externalsecret -n team-a company-info-hmac-3792426a`)"
            )
        )
    );
    assert_eq!(condition(status, "Ready")["status"], "False");
    assert_eq!(condition(status, "PolicyValid")["status"], "True");
    // Everything else was applied.
    let applied: Vec<String> = applies(&calls).into_iter().map(|(p, _)| p).collect();
    assert!(
        applied.iter().any(|p| p.ends_with("/deployments/company-info")),
        "{applied:?}"
    );

    // External Secrets Operator syncs: SecretsReady and Ready turn True.
    let server = with_status(&server, &calls);
    let synced = json!({"type": "Ready", "status": "True", "reason": "SecretSynced", "message": "secret synced"});
    let (result, calls) = h
        .reconcile(&server, |c| external_secret_answer(&object, c, synced.clone()))
        .await;
    assert_eq!(result.unwrap(), Action::requeue(controller::RESYNC));
    let status = status_patch(&calls).unwrap();
    assert_eq!(condition(status, "SecretsReady")["status"], "True");
    assert_eq!(condition(status, "Ready")["status"], "True");
}

/// A server that syncs no secret, in a cluster without External Secrets Operator: the prune
/// step's list of ExternalSecrets answers 404 in plain text, which means "none".
#[tokio::test]
async fn a_cluster_without_the_external_secret_crd_has_no_external_secrets_to_prune() {
    let mut h = harness();
    h.add_policy(policy(r#"["public:read"]"#, PASSING_TEST));
    let server = server(PLAIN_AUTH);
    let object = serde_json::to_value(&server).unwrap();
    let (result, calls) = h
        .reconcile(&server, |c| {
            if c.path.contains("/externalsecrets") {
                return Reply::Text(404, "404 page not found\n");
            }
            healthy(&object, c)
        })
        .await;
    assert_eq!(result.unwrap(), Action::requeue(controller::RESYNC));
    assert!(
        calls
            .iter()
            .any(|c| c.method == Method::GET && c.path.contains("/externalsecrets"))
    );
    let status = status_patch(&calls).unwrap();
    assert_eq!(condition(status, "Ready")["status"], "True");
}

/// A child labelled for McpServer company-info, controlled by the owner with `uid`.
fn owned(name: &str, uid: &str) -> Value {
    json!({"metadata": {"name": name, "namespace": NS,
           "ownerReferences": [{"apiVersion": "palisade.dev/v1alpha1", "kind": "McpServer",
                                "name": "company-info", "uid": uid, "controller": true}]}})
}

fn metadata_list(items: Vec<Value>) -> Reply {
    Reply::Json(
        200,
        json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList", "metadata": {}, "items": items}),
    )
}

fn deleted(calls: &[Call]) -> Vec<&str> {
    calls
        .iter()
        .filter(|c| c.method == Method::DELETE)
        .map(|c| c.path.as_str())
        .collect()
}

/// Answers the lists of `listed` (path → items) and every delete; the rest as [`healthy`].
fn with_children<'a>(object: &'a Value, listed: &'a [(String, Vec<Value>)]) -> impl FnMut(&Call) -> Reply + 'a {
    move |c| {
        if let Some((_, items)) = listed.iter().find(|(path, _)| c.is(&Method::GET, path)) {
            return metadata_list(items.clone());
        }
        if c.method == Method::DELETE {
            return Reply::Json(
                200,
                json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}),
            );
        }
        healthy(object, c)
    }
}

#[tokio::test]
async fn switched_off_children_are_deleted_by_label_when_owned() {
    let mut h = harness();
    h.add_policy(policy(r#"["public:read"]"#, PASSING_TEST));
    let server = server(PLAIN_AUTH);
    let object = serde_json::to_value(&server).unwrap();
    let (nps, cms) = (
        format!("/apis/networking.k8s.io/v1/namespaces/{NS}/networkpolicies"),
        format!("/api/v1/namespaces/{NS}/configmaps"),
    );
    let listed = [
        (nps.clone(), vec![owned("company-info", "uid-server")]),
        (
            cms.clone(),
            vec![
                owned("company-info-policy", "uid-server"),
                owned("company-info.docs.faq", "uid-server"),
                // A collection removed from the spec.
                owned("company-info.docs.old", "uid-server"),
                // Labelled like a child, but another server's.
                owned("company-info.docs.other", "uid-someone-else"),
            ],
        ),
    ];
    let (result, calls) = h.reconcile(&server, with_children(&object, &listed)).await;
    assert!(result.is_ok());
    assert_eq!(
        deleted(&calls),
        [format!("{nps}/company-info"), format!("{cms}/company-info.docs.old")]
    );
}

/// Children under the names of an older operator (`<server>-docs-<collection>` before the
/// collision-free `<server>.docs.<collection>`), or of any kind, are deleted once the new names
/// are applied: a change of the naming scheme is an upgrade that leaves nothing behind.
#[tokio::test]
async fn an_upgrade_prunes_children_under_the_names_an_older_operator_gave_them() {
    let mut h = harness();
    h.add_policy(policy(r#"["public:read"]"#, PASSING_TEST));
    let server = server(PLAIN_AUTH);
    let object = serde_json::to_value(&server).unwrap();
    let (cms, services) = (
        format!("/api/v1/namespaces/{NS}/configmaps"),
        format!("/api/v1/namespaces/{NS}/services"),
    );
    let listed = [
        (
            cms.clone(),
            vec![
                owned("company-info-policy", "uid-server"),
                owned("company-info-docs-faq", "uid-server"),
                owned("company-info.docs.faq", "uid-server"),
            ],
        ),
        (
            services.clone(),
            vec![
                owned("company-info", "uid-server"),
                owned("company-info-headless", "uid-server"),
            ],
        ),
    ];
    let (result, calls) = h.reconcile(&server, with_children(&object, &listed)).await;
    assert!(result.is_ok());
    // The new names are applied before anything is deleted.
    let faq = calls
        .iter()
        .position(|c| c.is(&Method::PATCH, &format!("{cms}/company-info.docs.faq")))
        .expect("the collection is applied under its new name");
    let first_delete = calls.iter().position(|c| c.method == Method::DELETE).unwrap();
    assert!(faq < first_delete);
    assert_eq!(
        deleted(&calls),
        [
            format!("{cms}/company-info-docs-faq"),
            format!("{services}/company-info-headless")
        ]
    );
    // The pods mount the collection under its new name.
    let deployment = applies(&calls)
        .into_iter()
        .find(|(path, _)| path.ends_with("/deployments/company-info"))
        .unwrap()
        .1;
    let volumes = deployment["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap()
        .clone();
    assert!(
        volumes
            .iter()
            .any(|v| v["configMap"]["name"] == "company-info.docs.faq"),
        "{volumes:?}"
    );
}

/// A new server with autoscaling on: no live Deployment, nothing to hand over, and the one
/// Deployment apply leaves the count to the autoscaler.
#[tokio::test]
async fn a_new_server_with_autoscaling_has_nothing_to_hand_over() {
    let mut h = harness();
    h.add_policy(policy(r#"["public:read"]"#, PASSING_TEST));
    let server = server(&format!("{PLAIN_AUTH}  autoscaling: {{enabled: true}}\n"));
    let object = serde_json::to_value(&server).unwrap();
    let (result, calls) = h.reconcile(&server, |c| healthy(&object, c)).await;
    assert!(result.is_ok(), "{result:?}");
    let deployments = format!("/apis/apps/v1/namespaces/{NS}/deployments");
    let read = calls
        .iter()
        .find(|c| c.is(&Method::GET, &deployments) && c.query.contains("fieldSelector"))
        .expect("the live Deployment is looked up by name");
    assert!(
        read.query.contains("fieldSelector=metadata.name%3Dcompany-info"),
        "{read:?}"
    );
    let patches: Vec<&Call> = calls
        .iter()
        .filter(|c| c.is(&Method::PATCH, &format!("{deployments}/company-info")))
        .collect();
    assert_eq!(patches.len(), 1);
    assert_eq!(patches[0].body["spec"].get("replicas"), None);
}

/// A live Deployment whose `spec.replicas` (at `replicas`) was last set by `manager`'s apply.
fn live_deployment(replicas: i32, manager: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "DeploymentList", "metadata": {"resourceVersion": "7"},
           "items": [{"apiVersion": "apps/v1", "kind": "Deployment",
                      "metadata": {"name": "company-info", "namespace": NS,
                                   "managedFields": [{"manager": manager, "operation": "Apply",
                                                      "apiVersion": "apps/v1", "fieldsType": "FieldsV1",
                                                      "fieldsV1": {"f:spec": {"f:replicas": {}}}}]},
                      "spec": {"replicas": replicas,
                               "selector": {"matchLabels": {"app.kubernetes.io/instance": "company-info"}},
                               "template": {}}}]})
}

/// Switching the autoscaler on drops `spec.replicas` from the operator's apply. So that the
/// Deployment keeps its pods until the autoscaler acts, a second field manager first applies
/// the live count (not forced); once the autoscaler owns the count, nothing is handed over.
#[tokio::test]
async fn switching_autoscaling_on_hands_the_replica_count_over_before_the_apply() {
    let mut h = harness();
    h.add_policy(policy(r#"["public:read"]"#, PASSING_TEST));
    let server = server(&format!("{PLAIN_AUTH}  autoscaling: {{enabled: true}}\n"));
    let object = serde_json::to_value(&server).unwrap();
    let deployments = format!("/apis/apps/v1/namespaces/{NS}/deployments");
    let by_name = "fieldSelector=metadata.name%3Dcompany-info";
    let (result, calls) = h
        .reconcile(&server, |c| {
            if c.is(&Method::GET, &deployments) && c.query.contains(by_name) {
                return Reply::Json(200, live_deployment(4, "palisade-operator"));
            }
            healthy(&object, c)
        })
        .await;
    assert!(result.is_ok());
    let patches: Vec<&Call> = calls
        .iter()
        .filter(|c| c.is(&Method::PATCH, &format!("{deployments}/company-info")))
        .collect();
    assert_eq!(patches.len(), 2, "{patches:?}");
    let (handover, apply) = (patches[0], patches[1]);
    assert!(
        handover
            .query
            .contains("fieldManager=palisade-operator-replicas-handover")
    );
    assert!(!handover.query.contains("force"), "{handover:?}");
    assert_eq!(handover.body["spec"], json!({"replicas": 4}));
    assert_eq!(
        apply.body["spec"].get("replicas"),
        None,
        "the operator's apply drops the count"
    );
    assert!(
        calls.iter().any(|c| c.is(
            &Method::PATCH,
            &format!("/apis/autoscaling/v2/namespaces/{NS}/horizontalpodautoscalers/company-info")
        )),
        "the autoscaler is applied"
    );

    // Handed over: the operator's apply no longer owns the count; one Deployment patch.
    let (result, calls) = h
        .reconcile(&server, |c| {
            if c.is(&Method::GET, &deployments) && c.query.contains(by_name) {
                return Reply::Json(200, live_deployment(5, "kube-controller-manager"));
            }
            healthy(&object, c)
        })
        .await;
    assert!(result.is_ok());
    let patches = calls
        .iter()
        .filter(|c| c.is(&Method::PATCH, &format!("{deployments}/company-info")))
        .count();
    assert_eq!(patches, 1);

    // The autoscaler changed the count between the read and the handover: a conflict, and the
    // apply goes on.
    let (result, calls) = h
        .reconcile(&server, |c| {
            if c.is(&Method::GET, &deployments) && c.query.contains(by_name) {
                return Reply::Json(200, live_deployment(4, "palisade-operator"));
            }
            if c.query.contains("replicas-handover") {
                return status_error(409, "Conflict");
            }
            healthy(&object, c)
        })
        .await;
    assert!(result.is_ok(), "{result:?}");
    let patches = calls
        .iter()
        .filter(|c| c.is(&Method::PATCH, &format!("{deployments}/company-info")))
        .count();
    assert_eq!(patches, 2);
}

#[tokio::test]
async fn the_policy_status_reports_acceptance_bound_servers_and_test_results() {
    let mut h = harness();
    let p = policy(r#"["public:read"]"#, PASSING_TEST);
    h.add_policy(p.clone());
    let (result, calls) = h
        .reconcile_policy(&p, |c| {
            assert!(c.is(
                &Method::PATCH,
                &format!("/apis/palisade.dev/v1alpha1/namespaces/{NS}/mcpaccesspolicies/company-info-access/status")
            ));
            let mut object = serde_json::to_value(&p).unwrap();
            object["status"] = c.body["status"].clone();
            Reply::Json(200, object)
        })
        .await;
    assert!(result.is_ok());
    assert_eq!(calls.len(), 1);
    let status = &calls[0].body["status"];
    assert_eq!(status["conditions"][0]["type"], "Accepted");
    assert_eq!(status["conditions"][0]["reason"], "NoTargets");

    // Once the server exists, the policy is accepted with its test results.
    h.add_server(server(PLAIN_AUTH));
    let (result, calls) = h
        .reconcile_policy(&p, |c| {
            let mut object = serde_json::to_value(&p).unwrap();
            object["status"] = c.body["status"].clone();
            Reply::Json(200, object)
        })
        .await;
    assert!(result.is_ok());
    let status = &calls[0].body["status"];
    let query: BTreeSet<&str> = calls[0].query.split('&').filter(|q| !q.is_empty()).collect();
    assert_eq!(query, BTreeSet::from(["fieldManager=palisade-operator", "force=true"]));
    assert_eq!(status["conditions"][0]["status"], "True", "{status}");
    assert_eq!(status["boundServers"], json!(["company-info"]));
    assert_eq!(status["testSummary"], "1/1");
    assert_eq!(status["testResults"][0]["server"], "company-info");
    assert_eq!(status["testResults"][0]["passed"], true);

    // An unchanged status is not written again.
    let mut current = p.clone();
    current.status = Some(serde_json::from_value(status.clone()).unwrap());
    let (result, calls) = h
        .reconcile_policy(&current, |c| panic!("no call expected, got {c:?}"))
        .await;
    assert!(result.is_ok());
    assert!(calls.is_empty());
}

#[tokio::test]
async fn a_policy_is_not_accepted_while_its_server_refuses_the_policies() {
    // The policy compiles and passes its test, but another policy on the same server fails its
    // own: the server controller rolls out neither, so neither may say "in force".
    let mut h = harness();
    let p = policy(r#"["public:read"]"#, PASSING_TEST);
    let mut sibling = policy(
        r#"["public:read"]"#,
        "    - {name: anonymous callers read, identity: {anonymous: true}, allowed: [get_public_info]}\n",
    );
    sibling.metadata.name = Some("company-info-anonymous".into());
    sibling.spec.roles[0].name = "anonymous-reader".into();
    sibling.spec.bindings[0].role = "anonymous-reader".into();
    sibling.spec.tools.clear();
    h.add_policy(p.clone());
    h.add_policy(sibling);
    h.add_server(server(PLAIN_AUTH));
    let (result, calls) = h
        .reconcile_policy(&p, |c| {
            let mut object = serde_json::to_value(&p).unwrap();
            object["status"] = c.body["status"].clone();
            Reply::Json(200, object)
        })
        .await;
    assert!(result.is_ok());
    let status = &calls[0].body["status"];
    let accepted = &status["conditions"][0];
    assert_eq!(accepted["type"], "Accepted");
    assert_eq!(accepted["status"], "False", "{status}");
    assert_eq!(accepted["reason"], "PolicyTestFailed");
    assert_eq!(
        accepted["message"],
        format!(
            "not in force: McpServer company-info refuses its policies for reasons outside this policy \
             (PolicyTestFailed): McpAccessPolicy {NS}/company-info-anonymous: spec.tests[0]: test \
             \"anonymous callers read\" failed: call to get_public_info is denied (missing scopes: public:read); \
             the last valid policy stays in force there"
        )
    );
    // Its own test passed.
    assert_eq!(status["testSummary"], "1/1");
    assert_eq!(status["boundServers"], json!(["company-info"]));
}

#[tokio::test]
async fn a_malformed_server_is_skipped_without_any_call() {
    let mut h = harness();
    let malformed: DeserializeGuard<McpServer> = serde_json::from_value(json!({
        "apiVersion": "palisade.dev/v1alpha1", "kind": "McpServer",
        "metadata": {"name": "broken", "namespace": NS, "uid": "uid-broken"},
        "spec": {"documents": "not a list"}
    }))
    .unwrap();
    assert!(malformed.0.is_err());
    let task = tokio::spawn(controller::reconcile(Arc::new(malformed), h.ctx.clone()));
    let (result, calls) = h
        .serve(task, &mut |c: &Call| panic!("no call expected, got {c:?}"))
        .await;
    assert_eq!(result.unwrap(), Action::await_change());
    assert!(calls.is_empty());
}

#[tokio::test]
async fn watched_objects_map_to_the_servers_that_use_them() {
    let mut h = harness();
    let mut with_status = server(PLAIN_AUTH);
    with_status.status = Some(palisade_crds::McpServerStatus {
        bound_policies: vec!["old-policy".into()],
        ..Default::default()
    });
    h.add_server(with_status);
    let mut elsewhere = server(PLAIN_AUTH);
    elsewhere.metadata.namespace = Some("team-b".into());
    h.add_server(elsewhere);
    let servers = h.ctx.servers.clone();
    let names = |refs: Vec<kube::runtime::reflector::ObjectRef<DeserializeGuard<McpServer>>>| {
        refs.iter()
            .map(|r| format!("{}/{}", r.namespace.as_deref().unwrap_or_default(), r.name))
            .collect::<Vec<_>>()
    };

    // A policy that targets the server, and one that it had compiled in but no longer targets.
    let targeting = DeserializeGuard(Ok(policy(r#"["public:read"]"#, "")));
    assert_eq!(
        names(controller::servers_of_policy(&servers, &targeting)),
        ["team-a/company-info"]
    );
    let mut old: McpAccessPolicy = policy(r#"["public:read"]"#, "");
    old.metadata.name = Some("old-policy".into());
    old.spec.target_refs[0].name = "someone-else".into();
    assert_eq!(
        names(controller::servers_of_policy(&servers, &DeserializeGuard(Ok(old)))),
        ["team-a/company-info"]
    );

    // ConfigMaps and Secrets the server names, in its namespace only.
    let meta = |name: &str, ns: &str| kube::api::ObjectMeta {
        name: Some(name.into()),
        namespace: Some(ns.into()),
        ..Default::default()
    };
    let cm = kube::api::PartialObjectMeta::<k8s_openapi::api::core::v1::ConfigMap> {
        types: None,
        metadata: meta("company-public-docs", NS),
        _phantom: Default::default(),
    };
    assert_eq!(
        names(controller::servers_naming(&servers, &cm)),
        ["team-a/company-info"]
    );
    let secret = kube::api::PartialObjectMeta::<k8s_openapi::api::core::v1::Secret> {
        types: None,
        metadata: meta("company-info-jwt", NS),
        _phantom: Default::default(),
    };
    assert_eq!(
        names(controller::servers_naming(&servers, &secret)),
        ["team-a/company-info"]
    );
    let unrelated = kube::api::PartialObjectMeta::<k8s_openapi::api::core::v1::Secret> {
        types: None,
        metadata: meta("unrelated", NS),
        _phantom: Default::default(),
    };
    assert!(controller::servers_naming(&servers, &unrelated).is_empty());

    // And back: a server maps to the policies that target it.
    h.add_policy(policy(r#"["public:read"]"#, ""));
    let server = DeserializeGuard(Ok(server(PLAIN_AUTH)));
    let policies: Vec<String> = controller::policies_of_server(&h.ctx.policies, &server)
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(policies, ["company-info-access"]);
}

#[tokio::test]
async fn leader_election_creates_renews_and_follows_through_the_lease() {
    use palisade_operator::leader::LeaderElector;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let elector = LeaderElector::new(
        client,
        "palisade-system",
        "palisade-operator",
        "pod-a",
        Duration::from_secs(15),
    );
    let lease_path = "/apis/coordination.k8s.io/v1/namespaces/palisade-system/leases";
    let respond = |send: tower_test::mock::SendResponse<Response<Body>>, code: u16, body: Value| {
        send.send_response(
            Response::builder()
                .status(code)
                .body(Body::from(serde_json::to_vec(&body).unwrap()))
                .unwrap(),
        );
    };
    let lease = |holder: &str, renewed: &str| {
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
               "metadata": {"name": "palisade-operator", "namespace": "palisade-system", "resourceVersion": "7"},
               "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15, "renewTime": renewed}})
    };
    let script = async {
        // No Lease: create it.
        let (request, send) = handle.next_request().await.unwrap();
        assert_eq!(
            (request.method(), request.uri().path()),
            (&Method::GET, &*format!("{lease_path}/palisade-operator"))
        );
        respond(
            send,
            404,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}),
        );
        let (request, send) = handle.next_request().await.unwrap();
        assert_eq!((request.method(), request.uri().path()), (&Method::POST, lease_path));
        let body: Value = serde_json::from_slice(&request.into_body().collect().await.unwrap().to_bytes()).unwrap();
        assert_eq!(body["spec"]["holderIdentity"], "pod-a");
        respond(send, 201, body);
        // Held by another replica, freshly renewed: follow, write nothing.
        let (_, send) = handle.next_request().await.unwrap();
        let now = k8s_openapi::jiff::Timestamp::now().to_string();
        respond(send, 200, lease("pod-b", &now));
        // Held by us: renew with the resourceVersion read (a PUT, so a race is a 409).
        let (_, send) = handle.next_request().await.unwrap();
        respond(send, 200, lease("pod-a", "2020-01-01T00:00:00.000000Z"));
        let (request, send) = handle.next_request().await.unwrap();
        assert_eq!(request.method(), Method::PUT);
        let body: Value = serde_json::from_slice(&request.into_body().collect().await.unwrap().to_bytes()).unwrap();
        assert_eq!(body["metadata"]["resourceVersion"], "7");
        assert_ne!(body["spec"]["renewTime"], "2020-01-01T00:00:00.000000Z");
        respond(
            send,
            409,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict", "code": 409}),
        );
    };
    let elect = async {
        assert!(
            elector.try_acquire_or_renew().await.unwrap(),
            "creates the Lease and leads"
        );
        assert!(!elector.try_acquire_or_renew().await.unwrap(), "follows a live holder");
        assert!(
            !elector.try_acquire_or_renew().await.unwrap(),
            "a lost race is not leadership"
        );
    };
    tokio::time::timeout(Duration::from_secs(10), futures::future::join(script, elect))
        .await
        .expect("the scenario did not finish in time");
}
