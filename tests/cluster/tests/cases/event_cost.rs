//! What the operator costs the API server: the requests of one reconcile of an McpServer, and
//! those of a status-only change of a child (a Deployment's status, which kube-controller-manager
//! and kubelet rewrite all the time), counted by the operator's own
//! `palisade_operator_kubernetes_requests_total` on a real API server.
//!
//! In the suite it proves that status-only changes of children trigger no reconcile (the filter
//! of `operator/src/controller/filters.rs`). `make bench` runs it with `PALISADE_BENCH_REPORT`
//! set to a Markdown file and writes the figures there: before the filter, kube's `owns` mapped
//! every such event to one reconcile of the owner, so an event cost one reconcile's requests.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams};
use palisade_crds::McpServer;
use serde_json::json;

use super::reconcile::{hmac_secret, wait_reconciled};
use crate::support::kubelet::Kubelet;
use crate::support::operator::{Operator, install_rbac};
use crate::support::{Cluster, repo_file, wait_for};

const NAMESPACES: [&str; 2] = ["team-cost-1", "team-cost-2"];
const SERVER: &str = "company-info";
/// Reconciles forced per server to measure one reconcile's requests.
const FORCED_PER_SERVER: usize = 3;
/// Status-only changes per server's Deployment.
const STATUS_CHANGES_PER_SERVER: usize = 20;

/// The operator's counters: requests by (verb, resource), reconciles, reconcile seconds.
#[derive(Debug, Clone, Default)]
struct Counters {
    requests: BTreeMap<(String, String), f64>,
    reconciles: f64,
    reconcile_seconds: f64,
}

impl Counters {
    /// Requests other than watch starts (a watch is one long request; they restart on their own
    /// schedule, not per event) and Lease renewals (every 2 s, whatever happens).
    fn calls(&self) -> f64 {
        self.requests
            .iter()
            .filter(|((verb, resource), _)| verb != "watch" && resource != "leases")
            .map(|(_, n)| n)
            .sum::<f64>()
            // An empty sum is -0.0.
            + 0.0
    }

    fn minus(&self, before: &Self) -> Self {
        Self {
            requests: self
                .requests
                .iter()
                .map(|(k, n)| (k.clone(), n - before.requests.get(k).copied().unwrap_or(0.0)))
                .filter(|(_, n)| *n > 0.0)
                .collect(),
            reconciles: self.reconciles - before.reconciles,
            reconcile_seconds: self.reconcile_seconds - before.reconcile_seconds,
        }
    }
}

async fn counters(operator: &Operator) -> Counters {
    let url = format!("{}/metrics", operator.http);
    let text = tokio::task::spawn_blocking(move || {
        palisade_e2e::http_client()
            .get(url)
            .send()
            .and_then(|r| r.text())
            .expect("scrape the operator")
    })
    .await
    .expect("scrape");
    let mut out = Counters::default();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else { continue };
        let label = |name: &str| {
            let start = series.find(&format!("{name}=\""))? + name.len() + 2;
            let end = series[start..].find('"')? + start;
            Some(series[start..end].to_owned())
        };
        if series.starts_with("palisade_operator_kubernetes_requests_total{") {
            let key = (label("verb").unwrap_or_default(), label("resource").unwrap_or_default());
            *out.requests.entry(key).or_default() += value;
        } else if series.starts_with("palisade_operator_reconciles_total{")
            && label("controller").as_deref() == Some("mcpserver")
        {
            out.reconciles += value;
        } else if series.starts_with("palisade_operator_reconcile_duration_seconds_sum{")
            && label("controller").as_deref() == Some("mcpserver")
        {
            out.reconcile_seconds += value;
        }
    }
    out
}

/// Waits until the operator has made no request and no reconcile for two seconds.
async fn quiet(operator: &Operator, what: &str) -> Counters {
    let start = Instant::now();
    let mut last = counters(operator).await;
    let mut since = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = counters(operator).await;
        if now.calls() != last.calls() || now.reconciles != last.reconciles {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "the operator never went quiet {what}; in the last 0.5 s: {:?}",
                now.minus(&last)
            );
            last = now;
            since = Instant::now();
        } else if since.elapsed() >= Duration::from_secs(2) {
            eprintln!("    ok: quiet {what} ({:.1} s)", start.elapsed().as_secs_f64());
            return now;
        }
    }
}

pub async fn a_status_only_change_of_a_child_costs_no_reconcile(cluster: &mut Cluster) {
    let kubeconfig = install_rbac(cluster).await;
    let sample = repo_file("config/samples/company-info.yaml");
    for namespace in NAMESPACES {
        cluster.namespace(namespace).await;
        hmac_secret(cluster, namespace);
        cluster.kubectl().apply(namespace, &sample);
    }
    let operator = Operator::start(
        cluster,
        &kubeconfig,
        "event-cost",
        &["--watch-namespaces", &NAMESPACES.join(",")],
    );
    // Pods that become ready: a server without ready pods is looked at again every few seconds
    // (rollout truth), one with ready pods only when something changes.
    let _kubelets: Vec<Kubelet> = NAMESPACES
        .iter()
        .map(|namespace| {
            Kubelet::start(
                &cluster.client,
                namespace,
                &cluster.plane.dir().join("pods").join(namespace),
                Duration::from_secs(2),
            )
        })
        .collect();
    let client = cluster.client.clone();
    for namespace in NAMESPACES {
        let servers: Api<McpServer> = Api::namespaced(client.clone(), namespace);
        wait_reconciled(&servers, SERVER, &["company-info-access"]).await;
        wait_for(
            &format!("{namespace}: PolicyRolledOut"),
            Duration::from_secs(90),
            || {
                let servers = servers.clone();
                async move {
                    let server = servers.get(SERVER).await.ok()?;
                    crate::support::condition(&server, "PolicyRolledOut")
                        .is_some_and(|(status, _)| status == "True")
                        .then_some(())
                }
            },
        )
        .await;
    }
    let start = quiet(&operator, "after the first reconciles").await;

    // One reconcile's requests: delete a child, which the operator puts back.
    for _ in 0..FORCED_PER_SERVER {
        for namespace in NAMESPACES {
            let services: Api<Service> = Api::namespaced(client.clone(), namespace);
            services
                .delete(SERVER, &DeleteParams::default())
                .await
                .expect("delete the Service");
            wait_for("the operator recreated the Service", Duration::from_secs(30), || {
                let services = services.clone();
                async move { services.get_opt(SERVER).await.ok().flatten().map(|_| ()) }
            })
            .await;
        }
    }
    let forced = quiet(&operator, "after the forced reconciles").await.minus(&start);
    assert!(
        forced.reconciles >= (FORCED_PER_SERVER * NAMESPACES.len()) as f64,
        "{forced:?}"
    );
    let per_reconcile = forced.calls() / forced.reconciles;

    // Status-only changes of the Deployments: what kube-controller-manager and kubelet write.
    let before_events = counters(&operator).await;
    for round in 0..STATUS_CHANGES_PER_SERVER {
        for namespace in NAMESPACES {
            let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
            deployments
                .patch_status(
                    SERVER,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"status": {"conditions": [{
                        "type": "PalisadeEventCost",
                        "status": "True",
                        "reason": "Round",
                        "message": format!("status-only change {round}"),
                    }]}})),
                )
                .await
                .expect("patch the Deployment's status");
        }
    }
    let events = (STATUS_CHANGES_PER_SERVER * NAMESPACES.len()) as f64;
    let after = quiet(&operator, "after the status-only changes")
        .await
        .minus(&before_events);
    assert_eq!(
        after.reconciles, 0.0,
        "{events} status-only changes of Deployments reconciled: {after:?}"
    );
    assert_eq!(after.calls(), 0.0, "status-only changes cost API calls: {after:?}");
    eprintln!(
        "    one reconcile: {per_reconcile:.1} API calls, {:.1} ms; a status-only change: {} reconciles, {} calls (was 1 reconcile, {per_reconcile:.1} calls)",
        1000.0 * forced.reconcile_seconds / forced.reconciles,
        after.reconciles / events,
        after.calls() / events,
    );
    if let Ok(path) = std::env::var("PALISADE_BENCH_REPORT") {
        write_report(&path, &forced, events, &after);
    }
}

const BEGIN: &str = "<!-- operator-api:begin -->";
const END: &str = "<!-- operator-api:end -->";

/// Replaces the block between [`BEGIN`] and [`END`] of the Markdown file at `path`.
fn write_report(path: &str, forced: &Counters, events: f64, after: &Counters) {
    let per_reconcile = forced.calls() / forced.reconciles;
    let mut lines = vec![
        BEGIN.to_owned(),
        format!(
            "Measured {} (UTC) by `make bench` (`PALISADE_BENCH_REPORT=docs/benchmarks.md cargo test -p palisade-cluster --test cluster -- event_cost`), \
             the operator's debug build on the local control plane, {} McpServers (the company-info sample).",
            jiff_now(),
            NAMESPACES.len()
        ),
        String::new(),
        "| | reconciles | API requests (without watch starts) | per event or reconcile |".to_owned(),
        "|---|---|---|---|".to_owned(),
        format!(
            "| one reconcile of an McpServer (forced {} times by deleting a child) | {} | {} | {per_reconcile:.1} requests, {:.1} ms |",
            forced.reconciles,
            forced.reconciles,
            forced.calls(),
            1000.0 * forced.reconcile_seconds / forced.reconciles
        ),
        format!(
            "| {events} status-only changes of the servers' Deployments, before the filter (each triggered one reconcile) | {events} | {:.0} | 1 reconcile, {per_reconcile:.1} requests |",
            events * per_reconcile
        ),
        format!(
            "| the same {events} changes, now | {} | {} | {} reconciles, {} requests |",
            after.reconciles,
            after.calls(),
            after.reconciles / events,
            after.calls() / events
        ),
        String::new(),
        "Requests of the forced reconciles, by verb and resource:".to_owned(),
        String::new(),
        "| verb | resource | requests | per reconcile |".to_owned(),
        "|---|---|---|---|".to_owned(),
    ];
    for ((verb, resource), n) in &forced.requests {
        if verb != "watch" && resource != "leases" {
            lines.push(format!("| {verb} | {resource} | {n} | {:.2} |", n / forced.reconciles));
        }
    }
    lines.push(END.to_owned());
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let (Some(start), Some(end)) = (text.find(BEGIN), text.find(END)) else {
        panic!("{path} has no {BEGIN} … {END} block");
    };
    let updated = format!("{}{}{}", &text[..start], lines.join("\n"), &text[end + END.len()..]);
    std::fs::write(path, updated).unwrap_or_else(|e| panic!("{path}: {e}"));
    eprintln!("    wrote the figures to {path}");
}

fn jiff_now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%d %H:%M")
        .to_string()
}
