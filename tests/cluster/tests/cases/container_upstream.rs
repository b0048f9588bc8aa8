//! `spec.upstream.container` through the real API server: an McpServer whose upstream is a stdio
//! MCP server run in the server's own pods is admitted and reconciled into a Deployment with the
//! shim's init container, the upstream's container and the socket volume only the two share;
//! kube-controller-manager makes the Pod and the kubelet stand-in runs all three containers as
//! processes (the init container installs the locally built `palisade-stdio-shim`, the upstream
//! container runs the command under it); a caller with a real token reaches the upstream's tool
//! through Palisade as the policy says, and the operator reports the upstream's tools in status.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use palisade_crds::McpServer;
use palisade_operator::names;
use serde_json::{Value, json};

use super::reconcile::wait_reconciled;
use crate::support::kubelet::Kubelet;
use crate::support::operator::{Operator, install_rbac};
use crate::support::{self, Cluster, condition, dev_token, wait_for};

const NAMESPACE: &str = "team-container";
const SERVER: &str = "notes";
const POLICY: &str = "notes-access";
const HMAC_KEY: &str = "cluster-suite-container-not-a-secret-0123456789";
const RESOURCE: &str = "https://notes.team-container.example.com/mcp";

/// A stdio MCP server in a few lines of Python (the image is not pulled: the harness runs the
/// command on this machine).
const UPSTREAM: &str = r#"import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if "id" not in m:
        continue
    method = m.get("method")
    if method == "initialize":
        r = {"protocolVersion": "2025-11-25", "capabilities": {"tools": {}}, "serverInfo": {"name": "notes", "version": "1"}}
    elif method == "tools/list":
        r = {"tools": [{"name": "read_notes", "inputSchema": {"type": "object"}}, {"name": "write_notes", "inputSchema": {"type": "object"}}]}
    elif method == "tools/call":
        r = {"content": [{"type": "text", "text": "notes from the container"}]}
    else:
        print(json.dumps({"jsonrpc": "2.0", "id": m["id"], "error": {"code": -32601, "message": "unknown"}}), flush=True)
        continue
    print(json.dumps({"jsonrpc": "2.0", "id": m["id"], "result": r}), flush=True)
"#;

fn objects() -> String {
    let script = serde_json::to_string(UPSTREAM).expect("a JSON string is a YAML string");
    format!(
        r#"apiVersion: palisade.dev/v1alpha1
kind: McpServer
metadata:
  name: {SERVER}
spec:
  upstream:
    container:
      image: docker.io/library/python:3.11-slim
      command: [python3, -c, {script}]
    timeoutSeconds: 10
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
    - name: readers read the notes
      identity: {{issuer: palisade-dev, subject: rita, groups: [readers]}}
      allowed: [read_notes]
      denied: [write_notes]
"#
    )
}

pub async fn a_stdio_upstream_runs_in_its_own_container_and_is_reached_through_palisade(cluster: &mut Cluster) {
    let kubeconfig = install_rbac(cluster).await;
    cluster.namespace(NAMESPACE).await;
    let kubectl = cluster.kubectl();
    kubectl.ok(&[
        "create",
        "secret",
        "generic",
        "-n",
        NAMESPACE,
        "notes-jwt",
        &format!("--from-literal=hmac-key={HMAC_KEY}"),
    ]);
    let _operator = Operator::start(cluster, &kubeconfig, "container", &[]);
    kubectl.apply(NAMESPACE, &objects());
    let servers: Api<McpServer> = Api::namespaced(cluster.client.clone(), NAMESPACE);
    wait_reconciled(&servers, SERVER, &[POLICY]).await;

    // The pod: the shim's init step, the upstream beside the server, sharing only the socket.
    let deployment = Api::<Deployment>::namespaced(cluster.client.clone(), NAMESPACE)
        .get(&names::deployment(SERVER))
        .await
        .expect("the Deployment");
    let pod = deployment.spec.and_then(|s| s.template.spec).expect("a pod template");
    let init: Vec<&str> = pod.init_containers.iter().flatten().map(|c| c.name.as_str()).collect();
    assert_eq!(init, ["install-stdio-shim"]);
    let containers: Vec<&str> = pod.containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(containers, ["server", "upstream"]);
    let upstream_mounts: Vec<&str> = pod.containers[1]
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| m.name.as_str())
        .collect();
    assert_eq!(
        upstream_mounts,
        ["upstream-tmp", "palisade-stdio-shim", "upstream-socket"]
    );

    let kubelet = Kubelet::start(
        &cluster.client,
        NAMESPACE,
        &cluster.plane.dir().join("pods").join(NAMESPACE),
        Duration::from_secs(1),
    );
    let base = wait_for("the pod runs", Duration::from_secs(90), || {
        let running = kubelet.running();
        async move { running.into_values().next() }
    })
    .await;
    let url = format!("{base}/mcp");
    let host = RESOURCE.trim_start_matches("https://").trim_end_matches("/mcp");
    let reader = dev_token(HMAC_KEY.as_bytes(), RESOURCE, "rita", &["readers"]);
    let call = |method: &'static str, params: Value| support::mcp_json(&url, Some(host), &reader, method, params);
    let (status, list) = call("tools/list", json!({})).await;
    let names: Vec<&str> = list["result"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("{list}"))
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!((status, names), (200, vec!["read_notes"]));
    let (status, answer) = call("tools/call", json!({"name": "read_notes", "arguments": {}})).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["result"]["content"][0]["text"], "notes from the container");
    let (status, answer) = call("tools/call", json!({"name": "write_notes", "arguments": {}})).await;
    assert_eq!(status, 403, "{answer}");

    // The operator lists the upstream's tools from the pod.
    let server = wait_for("the upstream's tools in status", Duration::from_secs(90), || {
        let servers = servers.clone();
        async move {
            let server = servers.get(SERVER).await.ok()?;
            (condition(&server, "ToolsPinned")? == ("False".into(), "ToolsUnpinned".into())).then_some(server)
        }
    })
    .await;
    let inventory = server.status.and_then(|s| s.upstream).expect("status.upstream");
    let tools: Vec<(&str, bool)> = inventory.tools.iter().map(|t| (t.name.as_str(), t.reachable)).collect();
    assert_eq!(tools, [("read_notes", true), ("write_notes", false)]);
    drop(kubelet);
}
