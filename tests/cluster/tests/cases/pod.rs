//! The product's promise, end to end through the real API server: the operator applies the
//! sample, the harness runs the Deployment's pod (see `support::kubelet`), real MCP clients call
//! it with real tokens, and `kubectl apply` of a changed McpAccessPolicy changes the running
//! server's decisions with no failed request in between; a policy whose tests fail leaves the
//! running decisions unchanged.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use kube::Api;
use palisade_crds::McpServer;
use palisade_operator::names;
use serde_json::{Value, json};

use super::reconcile::{hmac_secret, wait_reconciled};
use crate::support::kubelet::Pod;
use crate::support::operator::{Operator, install_rbac};
use crate::support::{Cluster, condition, dev_token, repo_file, wait_for};

const NAMESPACE: &str = "team-pod";
const SERVER: &str = "company-info";
/// The key `hmac_secret` stores (the sample's development issuer signs with it).
const HMAC_KEY: &[u8] = b"cluster-suite-not-a-secret-0123456789abcdef";
const RESOURCE: &str = "https://company-info.team-a.example.com/mcp";

fn token(subject: &str, groups: &[&str]) -> String {
    dev_token(HMAC_KEY, RESOURCE, subject, groups)
}

/// `tools/call` of `tool`: the HTTP status.
async fn call(url: &str, token: &str, tool: &str) -> Result<u16, String> {
    let (url, token, tool) = (url.to_owned(), token.to_owned(), tool.to_owned());
    tokio::task::spawn_blocking(move || {
        palisade_e2e::http_client()
            .post(url)
            .bearer_auth(token)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(
                json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                         "params": {"name": tool, "arguments": {}}})
                .to_string(),
            )
            .send()
            .map(|r| r.status().as_u16())
            .map_err(|e| e.to_string())
    })
    .await
    .expect("join")
}

/// One run of a pinned SDK client (`tests/clients/`): its JSON report.
async fn sdk_client(python: bool, url: &str, token: &str) -> Value {
    let scripts = palisade_cluster::repo_root().join("tests/clients");
    let mut command = if python {
        let mut c = Command::new(palisade_e2e::python());
        c.arg(scripts.join("python_client.py"));
        c
    } else {
        let mut c = Command::new("node");
        c.arg(scripts.join("ts_client.mjs"))
            .env("NODE_MODULES", palisade_e2e::node_modules());
        c
    };
    command
        .env("MCP_URL", url)
        .env("MCP_TOKEN", token)
        .stdin(Stdio::null())
        .stderr(Stdio::piped());
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("join")
        .expect("run the SDK client");
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str::<Value>(l.trim()).ok().filter(Value::is_object))
        .unwrap_or_else(|| {
            panic!(
                "the SDK client gave no report: {stdout}\n{}",
                String::from_utf8_lossy(&output.stderr)
            )
        })
}

fn sorted(report: &Value, pointer: &str) -> Vec<String> {
    let mut items: Vec<String> = report
        .pointer(pointer)
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("{pointer} in {report}"))
        .iter()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    items.sort();
    items
}

/// The sample's policy with the `employees` group bound to `role`, and its last test expecting
/// `confidential` for employees.
pub fn policy(role: &str, employees_read_strategy: bool) -> String {
    let sample = repo_file("config/samples/company-info.yaml");
    let policy = sample
        .split("\n---\n")
        .find(|d| d.contains("kind: McpAccessPolicy"))
        .expect("the sample's policy");
    let binding = "    - role: employee\n      issuer: palisade-dev\n      groups: [\"employees\"]";
    assert!(
        policy.contains(binding),
        "the sample no longer binds employees as this case expects"
    );
    let policy = policy.replace(
        binding,
        &format!("    - role: {role}\n      issuer: palisade-dev\n      groups: [\"employees\"]"),
    );
    // The last test is "employees do not read strategy".
    let last_test = "      allowed: [get_public_info]\n      denied: [get_confidential_info]";
    let at = policy.rfind(last_test).expect("the employees test");
    if employees_read_strategy {
        format!(
            "{}      allowed: [get_public_info, get_confidential_info]{}",
            &policy[..at],
            &policy[at + last_test.len()..]
        )
    } else {
        policy
    }
}

pub async fn the_running_server_follows_kubectl_apply_without_a_failed_request(cluster: &mut Cluster) {
    let kubeconfig = install_rbac(cluster).await;
    cluster.namespace(NAMESPACE).await;
    hmac_secret(cluster, NAMESPACE);
    let operator = Operator::start(cluster, &kubeconfig, "pod-one", &[]);
    cluster
        .kubectl()
        .apply(NAMESPACE, &repo_file("config/samples/company-info.yaml"));
    let servers: Api<McpServer> = Api::namespaced(cluster.client.clone(), NAMESPACE);
    wait_reconciled(&servers, SERVER, &["company-info-access"]).await;
    // This case runs the Deployment's template itself and writes no Pod status (`rollout::` does):
    // the hash to compare with is the one the operator applied.
    let first_hash = Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(cluster.client.clone(), NAMESPACE)
        .get(&names::policy_config_map(SERVER))
        .await
        .expect("policy ConfigMap")
        .metadata
        .annotations
        .unwrap_or_default()
        .get(names::POLICY_HASH_ANNOTATION)
        .cloned()
        .expect("policy hash annotation");

    let dir = cluster.plane.dir().join("pods").join(SERVER);
    let pod = Pod::start(&cluster.client, NAMESPACE, &names::deployment(SERVER), &dir).await;
    let url = pod.mcp_url();
    let employee = token("erin", &["employees"]);

    // Real clients, real tokens: an employee sees and calls the public tool only.
    for python in [true, false] {
        let report = sdk_client(python, &url, &employee).await;
        assert_eq!(sorted(&report, "/tools"), ["get_public_info"], "{report}");
        assert_eq!(report["calls"]["get_public_info"]["ok"], true, "{report}");
        assert_eq!(report["calls"]["get_confidential_info"]["httpStatus"], 403, "{report}");
    }
    let ready: Value = {
        let url = format!("{}/ready", pod.base_url);
        tokio::task::spawn_blocking(move || palisade_e2e::http_client().get(url).send().and_then(|r| r.json()))
            .await
            .expect("join")
            .expect("/ready")
    };
    assert_eq!(
        ready["policyHash"],
        first_hash.as_str(),
        "the pod enforces the applied policy: {ready}"
    );

    // Load: an employee calls the public tool every 20 ms for the rest of the case (stopped
    // however the case ends).
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let load = {
        let (url, token, stop, sent, failed) = (
            url.clone(),
            employee.clone(),
            stop.clone(),
            sent.clone(),
            failed.clone(),
        );
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                sent.fetch_add(1, Ordering::Relaxed);
                match call(&url, &token, "get_public_info").await {
                    Ok(200) => {}
                    other => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        eprintln!("    load: a request failed: {other:?}");
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let load = AbortOnDrop(Some(load));

    // `kubectl apply` of a changed policy: employees become strategists.
    let before_change = sent.load(Ordering::Relaxed);
    cluster.kubectl().apply(NAMESPACE, &policy("strategist", true));
    wait_for(
        "the running server lets employees read strategy",
        Duration::from_secs(60),
        || {
            let (url, token) = (url.clone(), employee.clone());
            async move { (call(&url, &token, "get_confidential_info").await == Ok(200)).then_some(()) }
        },
    )
    .await;

    let during_change = sent.load(Ordering::Relaxed) - before_change;
    // A policy whose tests fail (employees are back to their first role, but a test says they read strategy): refused
    // by the operator, and the running decisions stay.
    let before_refusal = sent.load(Ordering::Relaxed);
    cluster.kubectl().apply(NAMESPACE, &policy("employee", true));
    wait_for(
        "PolicyValid=False on the failing policy",
        Duration::from_secs(60),
        || {
            let servers = servers.clone();
            async move {
                let server = servers.get(SERVER).await.ok()?;
                (condition(&server, "PolicyValid")?.0 == "False").then_some(())
            }
        },
    )
    .await;
    // Longer than a projection and a reload take.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        call(&url, &employee, "get_confidential_info").await,
        Ok(200),
        "the last good policy still decides"
    );

    stop.store(true, Ordering::Relaxed);
    load.finish().await;
    let (sent, failed) = (sent.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    let after_refusal = sent - before_refusal;
    eprintln!(
        "    load: {sent} requests ({during_change} while the change rolled out, {after_refusal} after the refused policy), {failed} failed"
    );
    // The load ran across both changes (counted, not timed: the case's length varies).
    assert!(
        during_change > 0 && after_refusal > 0,
        "the load ran across both changes ({during_change}, {after_refusal})"
    );
    assert_eq!(failed, 0, "no request failed across the policy changes");

    // Every metric the chart's Grafana dashboard queries is in a real scrape of both binaries.
    let server_families = families(pod.metrics_url.clone()).await;
    let operator_families = families(format!("{}/metrics", operator.http)).await;
    let missing: Vec<String> = dashboard_metrics()
        .into_iter()
        .filter(|metric| {
            let scraped = if metric.starts_with("palisade_operator_") {
                &operator_families
            } else {
                &server_families
            };
            !family_names(metric).iter().any(|family| scraped.contains(*family))
        })
        .collect();
    assert_eq!(
        missing,
        Vec::<String>::new(),
        "dashboard metrics missing from the scrapes"
    );
    eprintln!(
        "    ok: the dashboard's {} metrics are in the scrapes of the server and the operator",
        dashboard_metrics().len()
    );
    drop(pod);
    drop(operator);
}

/// The metric families of a `/metrics` answer (its `# TYPE` lines).
async fn families(url: String) -> BTreeSet<String> {
    let text = tokio::task::spawn_blocking(move || palisade_e2e::http_client().get(url).send().and_then(|r| r.text()))
        .await
        .expect("join")
        .expect("a scrape");
    text.lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// The families a queried series may belong to: itself, or a counter's (`_total`) or a
/// histogram's (`_bucket`, `_sum`, `_count`) family.
fn family_names(series: &str) -> Vec<&str> {
    let mut names = vec![series];
    names.extend(
        ["_total", "_bucket", "_sum", "_count"]
            .iter()
            .filter_map(|s| series.strip_suffix(s)),
    );
    names
}

/// The `mcp_*` and `palisade_*` series the chart's Grafana dashboard queries: in its panels'
/// expressions and its template variables' queries (`label_values(palisade_ready, namespace)`).
fn dashboard_metrics() -> BTreeSet<String> {
    let text =
        std::fs::read_to_string(palisade_cluster::repo_root().join("charts/palisade/files/grafana-dashboard.json"))
            .expect("the dashboard");
    let dashboard: Value = serde_json::from_str(&text).expect("JSON");
    let panels = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .map(|target| target["expr"].as_str().expect("expr"));
    let variables = dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["type"] == "query")
        .map(|v| {
            v["query"]["query"]
                .as_str()
                .or(v["query"].as_str())
                .expect("a variable's query")
        });
    let mut metrics = BTreeSet::new();
    for expr in panels.chain(variables) {
        for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if word.starts_with("mcp_") || word.starts_with("palisade_") {
                metrics.insert(word.to_owned());
            }
        }
    }
    metrics
}

/// A task aborted when the case ends early (a failed assertion).
struct AbortOnDrop(Option<tokio::task::JoinHandle<()>>);

impl AbortOnDrop {
    async fn finish(mut self) {
        if let Some(task) = self.0.take() {
            task.await.expect("load task");
        }
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}
