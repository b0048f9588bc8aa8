//! Rollout truth against a real API server: kube-controller-manager turns the operator's
//! Deployment into Pods, the harness plays kubelet for them ([`Kubelet`]: each pod on an address
//! of its own, its status written through the status subresource), and `PolicyRolledOut` and
//! `status.policyHash` follow what the pods' own `GET /ready` reports, never the ConfigMap alone.

use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use palisade_crds::McpServer;
use palisade_crds::mcp_server::PolicyRollout;
use palisade_operator::names;
use serde_json::Value;

use super::pod::policy;
use super::reconcile::hmac_secret;
use crate::support::kubelet::Kubelet;
use crate::support::operator::{Operator, install_rbac};
use crate::support::{Cluster, condition, repo_file, wait_for};

const NAMESPACE: &str = "team-rollout";
const SERVER: &str = "company-info";

/// The `policyHash` each running pod reports on `GET /ready` now (`None`: no answer).
async fn pod_hashes(kubelet: &Kubelet) -> Vec<Option<String>> {
    let urls: Vec<String> = kubelet.running().into_values().collect();
    tokio::task::spawn_blocking(move || {
        urls.iter()
            .map(|url| {
                let body: Value = palisade_e2e::http_client()
                    .get(format!("{url}/ready"))
                    .send()
                    .ok()?
                    .json()
                    .ok()?;
                body["policyHash"].as_str().map(str::to_owned)
            })
            .collect()
    })
    .await
    .expect("join")
}

/// The hash annotation of the policy ConfigMap the operator applied.
async fn applied_hash(config_maps: &Api<ConfigMap>) -> Option<String> {
    config_maps
        .get(&names::policy_config_map(SERVER))
        .await
        .ok()?
        .metadata
        .annotations?
        .get(names::POLICY_HASH_ANNOTATION)
        .cloned()
}

fn kubectl_wait(cluster: &Cluster) -> std::process::Output {
    cluster.kubectl().run(
        &[
            "wait",
            "--for=condition=PolicyRolledOut",
            &format!("mcpserver/{SERVER}"),
            "-n",
            NAMESPACE,
            "--timeout=60s",
        ],
        None,
    )
}

pub async fn policy_rolled_out_follows_the_hash_the_ready_pods_report(cluster: &mut Cluster) {
    let kubeconfig = install_rbac(cluster).await;
    cluster.namespace(NAMESPACE).await;
    hmac_secret(cluster, NAMESPACE);
    let _operator = Operator::start(cluster, &kubeconfig, "rollout", &[]);
    // A projection period of 2 s (kubelet's is up to a minute): long enough that the operator
    // sees the pods on the old policy after it applied the new one.
    let kubelet = Kubelet::start(
        &cluster.client,
        NAMESPACE,
        &cluster.plane.dir().join("pods").join(NAMESPACE),
        Duration::from_secs(2),
    );
    cluster
        .kubectl()
        .apply(NAMESPACE, &repo_file("config/samples/company-info.yaml"));
    let servers: Api<McpServer> = Api::namespaced(cluster.client.clone(), NAMESPACE);
    let config_maps: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), NAMESPACE);

    // The sample's two replicas run, and report the applied policy.
    let first = wait_for(
        "the policy applied is in force on both ready pods",
        Duration::from_secs(120),
        || {
            let (servers, config_maps) = (servers.clone(), config_maps.clone());
            async move {
                let hash = applied_hash(&config_maps).await?;
                let server = servers.get(SERVER).await.ok()?;
                let status = server.status.clone()?;
                (condition(&server, "PolicyRolledOut")? == ("True".into(), "AsExpected".into())
                    && status.policy_hash.as_deref() == Some(hash.as_str())
                    && status.policy_rollout
                        == [PolicyRollout {
                            hash: hash.clone(),
                            pods: 2,
                        }])
                .then_some(hash)
            }
        },
    )
    .await;
    assert_eq!(kubelet.running().len(), 2, "{:?}", kubelet.running());
    assert!(
        pod_hashes(&kubelet)
            .await
            .iter()
            .all(|h| h.as_deref() == Some(first.as_str()))
    );
    let waited = kubectl_wait(cluster);
    assert!(waited.status.success(), "{}", String::from_utf8_lossy(&waited.stderr));
    assert_eq!(
        String::from_utf8_lossy(&waited.stdout).trim(),
        format!("mcpserver.palisade.dev/{SERVER} condition met")
    );

    // A changed policy. Each sample reads the pods, then the status, then the pods again: a
    // status that says the new policy is in force while some pod served the old one both before
    // and after it is a lie.
    cluster.kubectl().apply(NAMESPACE, &policy("strategist", true));
    let second = wait_for(
        "the operator applied the changed policy",
        Duration::from_secs(60),
        || {
            let config_maps = config_maps.clone();
            let first = first.clone();
            async move { applied_hash(&config_maps).await.filter(|h| *h != first) }
        },
    )
    .await;
    let mut rolling_out_seen = None;
    let mut samples = 0;
    let started = std::time::Instant::now();
    loop {
        let before = pod_hashes(&kubelet).await;
        let server = servers.get(SERVER).await.expect("server");
        let after = pod_hashes(&kubelet).await;
        samples += 1;
        let status = server.status.clone().expect("status");
        let rolled = condition(&server, "PolicyRolledOut").expect("PolicyRolledOut");
        let old_before = before.iter().any(|h| h.as_deref() != Some(second.as_str()));
        let old_after = after.iter().any(|h| h.as_deref() != Some(second.as_str()));
        if rolled.0 == "True" && status.policy_hash.as_deref() == Some(second.as_str()) {
            assert!(
                !(old_before && old_after),
                "PolicyRolledOut=True with {second} while a pod served another policy: {before:?} {after:?}"
            );
            break;
        }
        if rolled == ("False".into(), "RollingOut".into()) {
            assert_eq!(
                status.policy_hash.as_deref(),
                Some(first.as_str()),
                "while rolling out, status.policyHash names the policy every pod serves"
            );
            let message = server
                .status
                .as_ref()
                .and_then(|s| s.conditions.iter().find(|c| c.type_ == "PolicyRolledOut"))
                .map(|c| c.message.clone())
                .unwrap_or_default();
            rolling_out_seen.get_or_insert((message, status.policy_rollout.clone()));
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "the new policy was not rolled out in time: {:?}",
            server.status
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (message, rollout) =
        rolling_out_seen.expect("PolicyRolledOut=False (RollingOut) while the pods still served the old policy");
    eprintln!("    ok: {samples} samples; while rolling out: {message} {rollout:?}");
    assert!(
        message.contains(&format!("ready pods serve policy {second}")),
        "{message}"
    );
    assert!(rollout.iter().any(|p| p.hash == first), "{rollout:?}");

    let waited = kubectl_wait(cluster);
    assert!(waited.status.success(), "{}", String::from_utf8_lossy(&waited.stderr));
    let server = servers.get(SERVER).await.expect("server");
    assert_eq!(
        server.status.expect("status").policy_rollout,
        [PolicyRollout {
            hash: second.clone(),
            pods: 2
        }]
    );
    assert!(
        pod_hashes(&kubelet)
            .await
            .iter()
            .all(|h| h.as_deref() == Some(second.as_str()))
    );
}
