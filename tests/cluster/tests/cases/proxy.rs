//! Proxy mode through the real API server: an McpServer with `spec.upstream.url` and a header
//! from a Secret is admitted, reconciled (its policy's tests decided on the tool names they
//! mention), and the harness runs its pod; callers with real tokens reach the upstream's tool
//! through Palisade as the policy says, and the upstream — a `palisade-server` that admits only
//! one API key — sees the key from the Secret and the proxy's identity, never a caller's token.

use std::time::Duration;

use kube::Api;
use palisade_crds::McpServer;
use palisade_e2e::api_key_upstream;
use palisade_operator::names;
use serde_json::{Value, json};

use super::reconcile::wait_reconciled;
use crate::support::kubelet::{Kubelet, Pod};
use crate::support::operator::{Operator, install_rbac};
use crate::support::{self, Cluster, condition, dev_token, wait_for};

const NAMESPACE: &str = "team-proxy";
const SERVER: &str = "notes";
const POLICY: &str = "notes-access";
const UPSTREAM_KEY: &str = "cluster-suite-upstream-key-0123456789";
const HMAC_KEY: &str = "cluster-suite-proxy-not-a-secret-0123456789";
const RESOURCE: &str = "https://notes.team-proxy.example.com/mcp";

fn objects(upstream_url: &str) -> String {
    format!(
        r#"apiVersion: palisade.dev/v1alpha1
kind: McpServer
metadata:
  name: {SERVER}
spec:
  upstream:
    url: {upstream_url}
    timeoutSeconds: 10
    headers:
      - name: X-API-Key
        valueFrom:
          secretKeyRef: {{name: notes-upstream, key: api-key}}
  auth:
    resource: {RESOURCE}
    issuers:
      - issuer: palisade-dev
        hmacKey:
          secretKeyRef: {{name: notes-jwt, key: hmac-key}}
---
apiVersion: palisade.dev/v1alpha1
kind: McpAccessPolicy
metadata:
  name: {POLICY}
spec:
  targetRefs: [{{name: {SERVER}}}]
  roles: [{{name: reader, scopes: ["notes:read"]}}]
  bindings: [{{role: reader, issuer: palisade-dev, groups: [readers]}}]
  tools:
    - match: read_notes
      requiredScopes: ["notes:read"]
  tests:
    - name: readers read the upstream's notes
      identity: {{issuer: palisade-dev, subject: rita, groups: [readers]}}
      visibleTools: [read_notes]
    - name: others read nothing
      identity: {{issuer: palisade-dev, subject: otto}}
      denied: [read_notes, write_notes]
"#
    )
}

fn token(subject: &str, groups: &[&str]) -> String {
    dev_token(HMAC_KEY.as_bytes(), RESOURCE, subject, groups)
}

/// One JSON-RPC request: status and body.
async fn mcp(url: &str, token: &str, method: &str, params: Value) -> (u16, Value) {
    support::mcp_json(url, None, token, method, params).await
}

fn tool_names(list: &Value) -> Vec<String> {
    list["result"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("no tools in {list}"))
        .iter()
        .filter_map(|t| t["name"].as_str().map(str::to_owned))
        .collect()
}

pub async fn a_proxy_reaches_its_upstream_with_the_secret_s_credentials_and_only_as_the_policy_says(
    cluster: &mut Cluster,
) {
    let kubeconfig = install_rbac(cluster).await;
    cluster.namespace(NAMESPACE).await;
    let (upstream_fixture, upstream) = tokio::task::spawn_blocking(|| api_key_upstream::start(UPSTREAM_KEY))
        .await
        .expect("join");
    let kubectl = cluster.kubectl();
    for (secret, key, value) in [
        ("notes-jwt", "hmac-key", HMAC_KEY),
        ("notes-upstream", "api-key", UPSTREAM_KEY),
    ] {
        kubectl.ok(&[
            "create",
            "secret",
            "generic",
            "-n",
            NAMESPACE,
            secret,
            &format!("--from-literal={key}={value}"),
        ]);
    }
    let operator = Operator::start(cluster, &kubeconfig, "proxy", &[]);
    kubectl.apply(NAMESPACE, &objects(&upstream.mcp_url()));
    let servers: Api<McpServer> = Api::namespaced(cluster.client.clone(), NAMESPACE);
    let reconciled = wait_reconciled(&servers, SERVER, &[POLICY]).await;
    let status = reconciled.status.expect("status");
    assert_eq!(
        status.reachable_tools, None,
        "a proxy's tools are its upstream's: not counted from the policy"
    );

    let dir = cluster.plane.dir().join("pods").join(SERVER);
    let pod = Pod::start(&cluster.client, NAMESPACE, &names::deployment(SERVER), &dir).await;
    let url = pod.mcp_url();
    let reader = token("rita", &["readers"]);
    let other = token("otto", &[]);

    let (status, list) = mcp(&url, &reader, "tools/list", json!({})).await;
    assert_eq!(
        (status, tool_names(&list)),
        (200, vec![api_key_upstream::TOOL.to_owned()])
    );
    let read = json!({"name": api_key_upstream::TOOL, "arguments": {}});
    let (status, answer) = mcp(&url, &reader, "tools/call", read.clone()).await;
    assert_eq!(status, 200, "{answer}");
    assert!(
        answer["result"]["content"]
            .to_string()
            .contains(api_key_upstream::CONTENT),
        "{answer}"
    );
    let (status, list) = mcp(&url, &other, "tools/list", json!({})).await;
    assert_eq!((status, tool_names(&list)), (200, Vec::<String>::new()));
    let (status, answer) = mcp(&url, &other, "tools/call", read).await;
    assert_eq!(status, 403, "{answer}");

    // The upstream served the key from the Secret, as the proxy; no caller ever reached it.
    let events = wait_for("the upstream's audit of the call", Duration::from_secs(10), || {
        let events: Vec<Value> = upstream
            .audit_events()
            .into_iter()
            .filter(|e| e["mcp_method"] == "tools/call")
            .collect();
        async move { (!events.is_empty()).then_some(events) }
    })
    .await;
    assert!(
        events.iter().all(|e| e["subject"] == api_key_upstream::SUBJECT),
        "{events:?}"
    );
    assert!(
        upstream
            .audit_events()
            .iter()
            .all(|e| e["subject"] != "rita" && e["subject"] != "otto"),
        "a caller reached the upstream"
    );
    drop(pod);

    // The inventory: the Deployment's Pod run by the kubelet stand-in, asked by the operator.
    let kubelet = Kubelet::start(
        &cluster.client,
        NAMESPACE,
        &cluster.plane.dir().join("pods").join(NAMESPACE),
        Duration::from_secs(1),
    );
    let unpinned = wait_for("the upstream's tools in status", Duration::from_secs(90), || {
        let servers = servers.clone();
        async move {
            let server = servers.get(SERVER).await.ok()?;
            (condition(&server, "ToolsPinned")? == ("False".into(), "ToolsUnpinned".into())).then_some(server)
        }
    })
    .await;
    let inventory = unpinned
        .status
        .as_ref()
        .and_then(|s| s.upstream.clone())
        .expect("status.upstream");
    let names: Vec<&str> = inventory.tools.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, [api_key_upstream::TOOL], "{inventory:?}");
    let tool = &inventory.tools[0];
    assert!(tool.served && tool.reachable, "{tool:?}");
    assert_eq!(inventory.reachable_tools, 1);
    assert!(
        inventory.reported_by.as_deref().is_some_and(|p| p.starts_with(SERVER)),
        "{inventory:?}"
    );
    let pin = tool.sha256.clone();

    // Pinned: True. Pinned to another definition: the tool is withheld, a Warning event says so.
    let patch = |sha256: &str| {
        json!({"spec": {"upstream": {"tools": [{"name": api_key_upstream::TOOL, "sha256": sha256}]}}}).to_string()
    };
    let kubectl = cluster.kubectl();
    let patch_server = |sha256: &str| {
        kubectl.ok(&[
            "patch",
            "mcpserver",
            SERVER,
            "-n",
            NAMESPACE,
            "--type",
            "merge",
            "-p",
            &patch(sha256),
        ]);
    };
    patch_server(&pin);
    wait_tools_pinned(&servers, ("True", "AsExpected")).await;
    let rug_pulled = format!("sha256:{}", "0".repeat(64));
    patch_server(&rug_pulled);
    let changed = wait_tools_pinned(&servers, ("False", "ToolsChanged")).await;
    let message = &changed.1;
    assert!(
        message.contains(&format!(
            "{} is now {pin} (pinned {rug_pulled}, withheld)",
            api_key_upstream::TOOL
        )),
        "{message}"
    );
    let base = kubelet.running().into_values().next().expect("a running pod");
    let url = format!("{base}/mcp");
    let host = RESOURCE.trim_start_matches("https://").trim_end_matches("/mcp");
    let (status, list) = support::mcp_json(&url, Some(host), &reader, "tools/list", json!({})).await;
    assert_eq!((status, tool_names(&list)), (200, Vec::<String>::new()));
    let read = json!({"name": api_key_upstream::TOOL, "arguments": {}});
    let (_, refused) = support::mcp_json(&url, Some(host), &reader, "tools/call", read).await;
    assert_eq!(refused["error"]["data"]["code"], "TOOL_WITHHELD", "{refused}");
    let events = kubectl.ok(&[
        "get",
        "events",
        "-n",
        NAMESPACE,
        "--field-selector",
        "reason=ToolsChanged",
        "-o",
        "jsonpath={.items[*].type}",
    ]);
    assert!(events.contains("Warning"), "{events}");

    drop(kubelet);
    drop(operator);
    drop(upstream);
    drop(upstream_fixture);
}

/// Waits until condition ToolsPinned of the server is `expected` (status, reason); its message.
async fn wait_tools_pinned(servers: &Api<McpServer>, expected: (&str, &str)) -> (String, String) {
    let what = format!("ToolsPinned {expected:?}");
    wait_for(&what, Duration::from_secs(90), || {
        let servers = servers.clone();
        async move {
            let server = servers.get(SERVER).await.ok()?;
            let condition = server
                .status
                .as_ref()?
                .conditions
                .iter()
                .find(|c| c.type_ == "ToolsPinned")?
                .clone();
            ((condition.status.as_str(), condition.reason.as_str()) == expected)
                .then_some((condition.reason, condition.message))
        }
    })
    .await
}
