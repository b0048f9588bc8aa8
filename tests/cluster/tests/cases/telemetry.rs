//! Traces on a real control plane, into a real OpenTelemetry Collector: the operator's reconcile
//! spans with their steps and API calls (OTLP gRPC, then http/protobuf), and the server pods' spans, whose export the
//! operator configures from its default (`--server-otlp-*`, the Helm chart's
//! `mcpServers.telemetry`) and `spec.telemetry`.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use palisade_crds::{McpAccessPolicy, McpServer};
use palisade_e2e::collector::{ExportedSpan, TraceCollector};
use palisade_operator::names;
use serde_json::json;

use super::reconcile::{hmac_secret, wait_policy_refused, wait_reconciled};
use crate::support::kubelet::Pod;
use crate::support::operator::{Operator, install_rbac};
use crate::support::{Cluster, dev_token, repo_file, wait_for};

const NAMESPACE: &str = "team-traces";
const SERVER: &str = "company-info";
const HMAC_KEY: &[u8] = b"cluster-suite-not-a-secret-0123456789abcdef";
const RESOURCE: &str = "https://company-info.team-a.example.com/mcp";
const CLIENT: i64 = 3;

/// Waits (without holding the runtime's thread) until `done` holds for the exported spans.
async fn spans(
    collector: &mut TraceCollector,
    what: &str,
    done: impl Fn(&[ExportedSpan]) -> bool + Send,
) -> Vec<ExportedSpan> {
    tokio::task::block_in_place(|| collector.wait_for(what, done))
}

/// Whether the reconcile span `reconcile` has each step of a reconcile among its children.
fn has_the_steps(spans: &[ExportedSpan], reconcile: &ExportedSpan) -> bool {
    let children: Vec<&str> = spans
        .iter()
        .filter(|s| s.parent_span_id == reconcile.span_id)
        .map(|s| s.name.as_str())
        .collect();
    ["dereference", "validate", "build", "apply", "status"]
        .iter()
        .all(|step| children.contains(step))
}

/// Replaces McpAccessPolicy `company-info-access` with what `change` makes of it.
async fn change_policy(policies: &Api<McpAccessPolicy>, change: impl FnOnce(&mut McpAccessPolicy)) {
    let mut policy = policies.get("company-info-access").await.expect("the policy");
    change(&mut policy);
    policies
        .replace("company-info-access", &PostParams::default(), &policy)
        .await
        .expect("replace the policy");
}

/// The `OTEL_*` variables of the server container of `deployment`.
fn otel_env(deployment: &Deployment) -> Vec<(String, String)> {
    deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|s| s.containers.iter().find(|c| c.name == names::CONTAINER))
        .and_then(|c| c.env.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|v| v.name.starts_with("OTEL_"))
        .map(|v| (v.name, v.value.unwrap_or_default()))
        .collect()
}

pub async fn the_operator_and_the_pods_it_configures_export_traces(cluster: &mut Cluster) {
    let mut collector = tokio::task::block_in_place(TraceCollector::start);
    let kubeconfig = install_rbac(cluster).await;
    cluster.namespace(NAMESPACE).await;
    hmac_secret(cluster, NAMESPACE);
    let (grpc, http) = (collector.grpc_endpoint.clone(), collector.http_endpoint.clone());
    let server_defaults = [
        "--server-otlp-endpoint",
        &http,
        "--server-otlp-protocol",
        "http/protobuf",
        "--server-otlp-resource-attributes",
        "k8s.cluster.name=suite,deployment.environment.name=test",
    ];
    let operator = Operator::start_with_env(
        cluster,
        &kubeconfig,
        "traces",
        &server_defaults,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", grpc.as_str()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    );
    cluster
        .kubectl()
        .apply(NAMESPACE, &repo_file("config/samples/company-info.yaml"));
    let servers: Api<McpServer> = Api::namespaced(cluster.client.clone(), NAMESPACE);
    wait_reconciled(&servers, SERVER, &["company-info-access"]).await;

    // The operator: a span per reconcile, its steps as children, the API requests under them.
    let is_reconcile = |s: &ExportedSpan| {
        s.name == "reconcile McpServer"
            && s.attribute("namespace") == Some(&json!(NAMESPACE))
            && s.resource.get("service.name") == Some(&json!("palisade-operator"))
    };
    let exported = spans(&mut collector, "a reconcile of the McpServer with its steps", |spans| {
        spans
            .iter()
            .filter(|s| is_reconcile(s))
            .any(|reconcile| has_the_steps(spans, reconcile))
    })
    .await;
    let reconcile = exported
        .iter()
        .filter(|s| is_reconcile(s))
        .find(|r| {
            exported
                .iter()
                .any(|s| s.parent_span_id == r.span_id && s.name == "apply")
        })
        .unwrap();
    assert_eq!(reconcile.attribute("name"), Some(&json!(SERVER)));
    assert_eq!(reconcile.parent_span_id, "", "a reconcile is a root span");
    let apply = exported
        .iter()
        .find(|s| s.parent_span_id == reconcile.span_id && s.name == "apply")
        .unwrap();
    // kube's own client spans: the server-side applies of the children.
    let calls: Vec<&ExportedSpan> = exported
        .iter()
        .filter(|s| s.parent_span_id == apply.span_id && s.kind == CLIENT)
        .collect();
    assert!(!calls.is_empty(), "no API request under apply: {exported:#?}");
    assert!(
        calls.iter().all(|c| c.attribute("http.method").is_some()
            && c.trace_id == reconcile.trace_id
            && c.start >= apply.start
            && c.end <= apply.end),
        "{calls:#?}"
    );
    // Only the operator's and kube's spans: not the exporter's own requests.
    let scopes: std::collections::BTreeSet<&str> = exported
        .iter()
        .filter(|s| s.resource.get("service.name") == Some(&json!("palisade-operator")))
        .map(|s| s.scope.as_str())
        .collect();
    assert_eq!(scopes.into_iter().collect::<Vec<_>>(), ["palisade-operator"]);

    // The pods: the operator's default applies (the McpServer sets no telemetry).
    let deployments: Api<Deployment> = Api::namespaced(cluster.client.clone(), NAMESPACE);
    let deployment = deployments.get(&names::deployment(SERVER)).await.expect("Deployment");
    let env = otel_env(&deployment);
    for (name, value) in [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", http.as_str()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ("OTEL_SERVICE_NAME", SERVER),
    ] {
        assert!(
            env.contains(&(name.to_owned(), value.to_owned())),
            "{name}={value} in {env:?}"
        );
    }
    // The pod runs with that environment, and its request spans arrive, in the caller's trace.
    let dir = cluster.plane.dir().join("pods").join("traces");
    let pod = Pod::start(&cluster.client, NAMESPACE, &names::deployment(SERVER), &dir).await;
    let token = dev_token(HMAC_KEY, RESOURCE, "erin", &["employees"]);
    let trace_id = "5af7651916cd43dd8448eb211c80319c";
    let url = pod.mcp_url();
    let status = tokio::task::spawn_blocking(move || {
        palisade_e2e::http_client()
            .post(url)
            .bearer_auth(token)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("traceparent", format!("00-{trace_id}-b7ad6b7169203331-01"))
            .body(
                json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                       "params": {"name": "get_public_info", "arguments": {}}})
                .to_string(),
            )
            .send()
            .map(|r| r.status().as_u16())
    })
    .await
    .expect("join")
    .expect("the call");
    assert_eq!(status, 200);
    let exported = spans(&mut collector, "the pod's request span", |spans| {
        spans.iter().any(|s| s.trace_id == trace_id && s.kind == 2)
    })
    .await;
    let request = exported.iter().find(|s| s.trace_id == trace_id && s.kind == 2).unwrap();
    assert_eq!(request.name, "tools/call get_public_info");
    assert_eq!(request.resource.get("service.name"), Some(&json!(SERVER)));
    assert_eq!(request.resource.get("k8s.namespace.name"), Some(&json!(NAMESPACE)));
    // The pod's name, from the downward API through kubelet's `$(...)` expansion.
    assert_eq!(
        request.resource.get("k8s.pod.name"),
        Some(&json!(format!("{}-stand-in", names::deployment(SERVER))))
    );
    assert_eq!(request.resource.get("k8s.cluster.name"), Some(&json!("suite")));
    drop(pod);

    // `spec.telemetry` sets the sampler, the service name and attributes (name by name over the
    // operator's).
    servers
        .patch(
            SERVER,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"telemetry": {
                "sampler": "traceidratio",
                "serviceName": "company-info-eu",
                "resourceAttributes": {"k8s.cluster.name": "eu-1"},
            }}})),
        )
        .await
        .expect("patch the McpServer");
    let expected = [
        ("OTEL_TRACES_SAMPLER", "traceidratio"),
        ("OTEL_SERVICE_NAME", "company-info-eu"),
        (
            "OTEL_RESOURCE_ATTRIBUTES",
            "k8s.namespace.name=team-traces,service.namespace=team-traces,k8s.deployment.name=company-info,\
             k8s.pod.name=$(PALISADE_POD_NAME),deployment.environment.name=test,k8s.cluster.name=eu-1",
        ),
    ];
    wait_for(
        "the Deployment with the server's sampler, name and attributes",
        Duration::from_secs(60),
        || {
            let deployments = deployments.clone();
            async move {
                let env = otel_env(&deployments.get(&names::deployment(SERVER)).await.ok()?);
                expected
                    .iter()
                    .all(|(name, value)| env.contains(&((*name).to_owned(), (*value).to_owned())))
                    .then_some(())
            }
        },
    )
    .await;
    // The reserved attributes are refused by the API server; a name the variable would read
    // otherwise by the operator, naming the field, while the pods keep what they run.
    let refused = servers
        .patch(
            SERVER,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"telemetry": {"resourceAttributes": {"k8s.pod.name": "x"}}}})),
        )
        .await
        .expect_err("k8s.pod.name is the operator's");
    assert!(
        refused
            .to_string()
            .contains("resourceAttributes cannot set k8s.namespace.name"),
        "{refused}"
    );
    servers
        .patch(
            SERVER,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"telemetry": {"resourceAttributes": {"team,x": "a"}}}})),
        )
        .await
        .expect("patch the McpServer");
    let message = wait_policy_refused(&servers, SERVER, "PolicyInvalid").await;
    assert!(
        message.contains(
            "spec.telemetry: resourceAttributes \"team,x\": a name is at most 128 letters, digits and '.', '_', '-', '/'"
        ),
        "{message}"
    );
    let env = otel_env(&deployments.get(&names::deployment(SERVER)).await.expect("Deployment"));
    assert!(
        env.contains(&("OTEL_SERVICE_NAME".to_owned(), "company-info-eu".to_owned())),
        "the last good Deployment stays: {env:?}"
    );
    servers
        .patch(
            SERVER,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"telemetry": {"resourceAttributes": {"team,x": null}}}})),
        )
        .await
        .expect("patch the McpServer");
    wait_reconciled(&servers, SERVER, &["company-info-access"]).await;

    // A policy whose own test fails: the reconcile keeps the policy in force and builds the other
    // children from the server's spec under its `build` step, reading the ConfigMap in force there.
    let policies: Api<McpAccessPolicy> = Api::namespaced(cluster.client.clone(), NAMESPACE);
    let good_tests = policies
        .get("company-info-access")
        .await
        .expect("the policy")
        .spec
        .tests;
    change_policy(&policies, |policy| {
        policy.spec.tests[0].allowed = Vec::new();
        policy.spec.tests[0].denied = vec!["get_public_info".into()];
    })
    .await;
    wait_policy_refused(&servers, SERVER, "PolicyTestFailed").await;
    let policy_map = names::policy_config_map(SERVER);
    let reads_the_policy_in_force = |span: &ExportedSpan| {
        span.kind == CLIENT
            && span.attribute("http.method") == Some(&json!("GET"))
            && span
                .attribute("http.url")
                .and_then(|u| u.as_str())
                .is_some_and(|u| u.ends_with(&format!("/configmaps/{policy_map}")))
    };
    spans(
        &mut collector,
        "a reconcile that keeps the policy in force, in its build step",
        |spans| {
            spans.iter().filter(|s| is_reconcile(s)).any(|reconcile| {
                spans
                    .iter()
                    .filter(|s| s.parent_span_id == reconcile.span_id && s.name == "build")
                    .any(|build| {
                        spans
                            .iter()
                            .any(|s| s.parent_span_id == build.span_id && reads_the_policy_in_force(s))
                    })
            })
        },
    )
    .await;
    change_policy(&policies, |policy| policy.spec.tests = good_tests).await;
    wait_reconciled(&servers, SERVER, &["company-info-access"]).await;

    // `spec.telemetry` wins: switched off for this server, the pods get no OTEL_* variable.
    servers
        .patch(
            SERVER,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"telemetry": {"enabled": false}}})),
        )
        .await
        .expect("patch the McpServer");
    wait_for(
        "the Deployment without OTEL_* variables",
        Duration::from_secs(60),
        || {
            let deployments = deployments.clone();
            async move {
                let deployment = deployments.get(&names::deployment(SERVER)).await.ok()?;
                otel_env(&deployment).is_empty().then_some(())
            }
        },
    )
    .await;

    // The operator over the other protocol: a new one (the first releases its Lease as it stops)
    // exporting over http/protobuf only, its spans told apart by a resource attribute; its first
    // reconcile of the McpServer arrives with its steps.
    drop(operator);
    let _operator = Operator::start_with_env(
        cluster,
        &kubeconfig,
        "traces-http",
        &server_defaults,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", http.as_str()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("OTEL_RESOURCE_ATTRIBUTES", "palisade.test.transport=http"),
        ],
    );
    spans(
        &mut collector,
        "a reconcile of the McpServer with its steps, over http/protobuf",
        |spans| {
            spans
                .iter()
                .filter(|s| is_reconcile(s) && s.resource.get("palisade.test.transport") == Some(&json!("http")))
                .any(|reconcile| has_the_steps(spans, reconcile))
        },
    )
    .await;
}
