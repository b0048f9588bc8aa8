//! The operator, as its own ServiceAccount with exactly `config/rbac/`, reconciles a sample on
//! the real API server: children with owner references and labels, status and events, drift put
//! back, policy changes rolled out, a failing policy not rolled out, garbage collection.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use palisade_crds::{McpAccessPolicy, McpServer};
use palisade_operator::names;
use serde_json::json;

use crate::support::operator::{Operator, install_rbac};
use crate::support::{Cluster, TEST_MANAGER, condition, repo_file, wait_for};

const NAMESPACE: &str = "team-a";
const SERVER: &str = "company-info";
const POLICY: &str = "company-info-access";

/// The sample's HMAC key Secret (the sample's comment tells users to create it).
pub fn hmac_secret(cluster: &Cluster, namespace: &str) {
    cluster.kubectl().ok(&[
        "create",
        "secret",
        "generic",
        "-n",
        namespace,
        "company-info-jwt",
        "--from-literal=hmac-key=cluster-suite-not-a-secret-0123456789abcdef",
    ]);
}

/// Waits until the McpServer's policy, documents and secrets conditions are True with
/// `policies` compiled in.
pub async fn wait_reconciled(servers: &Api<McpServer>, name: &str, policies: &[&str]) -> McpServer {
    wait_for(
        &format!("{name}: PolicyValid, DocumentsReady, SecretsReady True with {policies:?}"),
        Duration::from_secs(90),
        || {
            let servers = servers.clone();
            async move {
                let server = servers.get(name).await.ok()?;
                let bound = server.status.as_ref()?.bound_policies.clone();
                (bound == policies
                    && ["PolicyValid", "DocumentsReady", "SecretsReady"]
                        .iter()
                        .all(|t| condition(&server, t).is_some_and(|(s, _)| s == "True")))
                .then_some(server)
            }
        },
    )
    .await
}

/// Waits until `name`'s `PolicyValid` condition is `False` with `reason`; its message.
pub async fn wait_policy_refused(servers: &Api<McpServer>, name: &str, reason: &str) -> String {
    wait_for(
        &format!("{name}: PolicyValid=False ({reason})"),
        Duration::from_secs(60),
        || {
            let servers = servers.clone();
            async move {
                let server = servers.get(name).await.ok()?;
                let valid = server
                    .status?
                    .conditions
                    .into_iter()
                    .find(|c| c.type_ == "PolicyValid")?;
                (valid.status == "False" && valid.reason == reason).then_some(valid.message)
            }
        },
    )
    .await
}

/// Waits until namespace `namespace` has an event that `matches`.
pub async fn wait_event(client: &kube::Client, namespace: &str, what: &str, matches: impl Fn(&Event) -> bool) {
    let events: Api<Event> = Api::namespaced(client.clone(), namespace);
    let matches = &matches;
    wait_for(what, Duration::from_secs(30), || {
        let events = events.clone();
        async move {
            let list = events.list(&ListParams::default()).await.ok()?;
            list.items.iter().any(matches).then_some(())
        }
    })
    .await;
}

/// Switches the sample's policy in `namespace` to Audit mode and waits (up to `timeout`) until
/// the policy ConfigMap carries it: `what` names the wait.
pub async fn switch_to_audit_and_wait(client: &kube::Client, namespace: &str, what: &str, timeout: Duration) {
    Api::<McpAccessPolicy>::namespaced(client.clone(), namespace)
        .patch(
            POLICY,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"mode": "Audit"}})),
        )
        .await
        .expect("switch the policy to Audit");
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    wait_for(what, timeout, || {
        let config_maps = config_maps.clone();
        async move {
            let map = config_maps.get(&names::policy_config_map(SERVER)).await.ok()?;
            map.data?.values().any(|v| v.contains("mode: Audit")).then_some(())
        }
    })
    .await;
}

fn owned_by(meta: &kube::api::ObjectMeta, server: &McpServer) -> bool {
    meta.owner_references.as_ref().is_some_and(|owners| {
        owners.iter().any(|o| {
            o.kind == "McpServer"
                && o.name == server.metadata.name.as_deref().unwrap_or_default()
                && Some(&o.uid) == server.metadata.uid.as_ref()
                && o.controller == Some(true)
        })
    })
}

fn labelled(meta: &kube::api::ObjectMeta, server: &str) -> bool {
    let labels = meta.labels.clone().unwrap_or_default();
    labels.get(names::LABEL_MANAGED_BY).map(String::as_str) == Some(names::MANAGED_BY)
        && labels.get(names::LABEL_INSTANCE).map(String::as_str) == Some(server)
}

pub async fn the_operator_reconciles_a_sample_as_its_service_account(cluster: &mut Cluster) {
    let kubeconfig = install_rbac(cluster).await;
    cluster.namespace(NAMESPACE).await;
    let operator = Operator::start(cluster, &kubeconfig, "operator-a", &[]);
    hmac_secret(cluster, NAMESPACE);
    cluster
        .kubectl()
        .apply(NAMESPACE, &repo_file("config/samples/company-info.yaml"));

    let client = cluster.client.clone();
    let servers: Api<McpServer> = Api::namespaced(client.clone(), NAMESPACE);
    let policies: Api<McpAccessPolicy> = Api::namespaced(client.clone(), NAMESPACE);
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), NAMESPACE);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NAMESPACE);

    let server = wait_reconciled(&servers, SERVER, &[POLICY]).await;
    let status = server.status.clone().expect("status");
    assert_eq!(status.bound_policies, [POLICY]);
    // No kubelet runs the pods: the policy is applied but no pod serves it, so none is in force
    // (`rollout::` runs the pods and shows the other side).
    assert_eq!(status.policy_hash, None, "{status:?}");
    assert_eq!(
        condition(&server, "PolicyRolledOut"),
        Some(("False".into(), "NoReadyPods".into())),
        "{status:?}"
    );
    let policy_hash = config_maps
        .get(&names::policy_config_map(SERVER))
        .await
        .expect("policy ConfigMap")
        .metadata
        .annotations
        .unwrap_or_default()
        .get(names::POLICY_HASH_ANNOTATION)
        .cloned()
        .expect("the policy ConfigMap's hash annotation");
    assert!(policy_hash.starts_with("sha256:"), "{policy_hash}");
    assert_eq!(
        status.endpoint.as_deref(),
        Some("http://company-info.team-a.svc.cluster.local/mcp")
    );
    // No kubelet runs the pods: Ready is False for want of ready pods, as documented.
    assert_eq!(
        condition(&server, "Ready"),
        Some(("False".into(), "PodsNotReady".into())),
        "{status:?}"
    );

    // Every child: owned by the McpServer (controller reference) and labelled.
    let deployment = deployments.get(&names::deployment(SERVER)).await.expect("Deployment");
    assert!(owned_by(&deployment.metadata, &server) && labelled(&deployment.metadata, SERVER));
    let service = Api::<Service>::namespaced(client.clone(), NAMESPACE)
        .get(&names::service(SERVER))
        .await
        .expect("Service");
    assert!(owned_by(&service.metadata, &server) && labelled(&service.metadata, SERVER));
    let account = Api::<ServiceAccount>::namespaced(client.clone(), NAMESPACE)
        .get(&names::service_account(SERVER))
        .await
        .expect("ServiceAccount");
    assert!(owned_by(&account.metadata, &server) && labelled(&account.metadata, SERVER));
    let policy_map = config_maps
        .get(&names::policy_config_map(SERVER))
        .await
        .expect("policy ConfigMap");
    assert!(owned_by(&policy_map.metadata, &server) && labelled(&policy_map.metadata, SERVER));
    assert_eq!(
        policy_map
            .metadata
            .annotations
            .clone()
            .unwrap_or_default()
            .get(names::POLICY_HASH_ANNOTATION),
        Some(&policy_hash)
    );
    // The operator's own field manager owns what it applied.
    let managers: Vec<String> = deployment
        .metadata
        .managed_fields
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert!(managers.contains(&names::MANAGED_BY.to_owned()), "{managers:?}");

    // Events, as documented (events.k8s.io, regarding the McpServer).
    wait_event(&client, NAMESPACE, "a PodsNotReady event", |e| {
        e.reason.as_deref() == Some("PodsNotReady")
            && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(SERVER)
            && e.reporting_controller.as_deref() == Some(names::MANAGED_BY)
    })
    .await;

    // A child edited by hand is put back.
    deployments
        .patch(
            &names::deployment(SERVER),
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"template": {"spec": {"containers": [
                {"name": names::CONTAINER, "image": "example.com/tampered:1"}]}}}})),
        )
        .await
        .expect("edit the Deployment by hand");
    wait_for("the hand-edited image put back", Duration::from_secs(60), || {
        let deployments = deployments.clone();
        async move {
            let deployment = deployments.get(&names::deployment(SERVER)).await.ok()?;
            let image = deployment.spec?.template.spec?.containers.first()?.image.clone()?;
            (image != "example.com/tampered:1").then_some(())
        }
    })
    .await;
    // A deleted child comes back.
    let uid = policy_map.metadata.uid.clone();
    config_maps
        .delete(&names::policy_config_map(SERVER), &DeleteParams::default())
        .await
        .expect("delete the policy ConfigMap");
    wait_for(
        "the deleted policy ConfigMap recreated",
        Duration::from_secs(60),
        || {
            let config_maps = config_maps.clone();
            let uid = uid.clone();
            async move {
                let map = config_maps.get(&names::policy_config_map(SERVER)).await.ok()?;
                (map.metadata.uid != uid).then_some(())
            }
        },
    )
    .await;

    // A changed policy updates the policy ConfigMap.
    let patch = PatchParams::apply(TEST_MANAGER).force();
    policies
        .patch(
            POLICY,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"mode": "Audit"}})),
        )
        .await
        .expect("switch the policy to Audit");
    let changed = wait_for(
        "the policy ConfigMap carries the changed policy",
        Duration::from_secs(60),
        || {
            let config_maps = config_maps.clone();
            let before = policy_hash.clone();
            async move {
                let map = config_maps.get(&names::policy_config_map(SERVER)).await.ok()?;
                let hash = map.metadata.annotations?.get(names::POLICY_HASH_ANNOTATION)?.clone();
                (hash != before).then_some(map.data)
            }
        },
    )
    .await;

    // A policy whose own test fails is not rolled out: condition, event, last good policy kept.
    let mut policy = policies.get(POLICY).await.expect("policy");
    policy.spec.tests[0].name = "cluster suite: a failing case".into();
    policy.spec.tests[0].allowed = Vec::new();
    policy.spec.tests[0].denied = vec!["get_public_info".into()];
    policy.metadata.managed_fields = None;
    policy.metadata.resource_version = None;
    policy.status = None;
    policies
        .patch(POLICY, &patch, &Patch::Apply(&policy))
        .await
        .expect("apply the failing policy");
    wait_policy_refused(&servers, SERVER, "PolicyTestFailed").await;
    wait_event(&client, NAMESPACE, "a PolicyTestFailed Warning event", |e| {
        e.reason.as_deref() == Some("PolicyTestFailed") && e.type_.as_deref() == Some("Warning")
    })
    .await;
    let policy_in_force = || async {
        config_maps
            .get(&names::policy_config_map(SERVER))
            .await
            .expect("policy ConfigMap")
            .data
    };
    assert_eq!(policy_in_force().await, changed, "the last good policy stays in force");
    // ... and the broken policy holds back nothing else: the Deployment follows the server.
    servers
        .patch(
            SERVER,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 3}})),
        )
        .await
        .expect("scale the server");
    wait_for(
        "the Deployment follows the server while its policy is broken",
        Duration::from_secs(60),
        || {
            let deployments = deployments.clone();
            async move {
                let deployment = deployments.get(&names::deployment(SERVER)).await.ok()?;
                (deployment.spec?.replicas == Some(3)).then_some(())
            }
        },
    )
    .await;
    assert_eq!(
        policy_in_force().await,
        changed,
        "the last good policy is still in force"
    );

    // Deleting the McpServer: kube-controller-manager's garbage collector removes every child.
    servers
        .delete(SERVER, &DeleteParams::background())
        .await
        .expect("delete the McpServer");
    wait_for("every child garbage-collected", Duration::from_secs(90), || {
        let deployments = deployments.clone();
        let config_maps = config_maps.clone();
        let client = client.clone();
        async move {
            let selector = format!("{}={SERVER}", names::LABEL_INSTANCE);
            let params = ListParams::default().labels(&selector);
            let left = deployments.list(&params).await.ok()?.items.len()
                + config_maps.list(&params).await.ok()?.items.len()
                + Api::<Service>::namespaced(client.clone(), NAMESPACE)
                    .list(&params)
                    .await
                    .ok()?
                    .items
                    .len()
                + Api::<ServiceAccount>::namespaced(client, NAMESPACE)
                    .list(&params)
                    .await
                    .ok()?
                    .items
                    .len();
            (left == 0).then_some(())
        }
    })
    .await;
    drop(operator);
}

/// Waits until the API server refuses a Deployment in `namespace` for its quota. Its quota
/// admission learns of a new ResourceQuota through an informer, and an object created in the
/// namespace before that (its default ServiceAccount, its root CA ConfigMap) can leave it with
/// "no quota here" from a live lookup for up to 30 s: an apply in that window is admitted.
async fn quota_in_force(cluster: &Cluster, namespace: &str) {
    let deployments: Api<Deployment> = Api::namespaced(cluster.client.clone(), namespace);
    let probe: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "quota-probe"},
        "spec": {
            "selector": {"matchLabels": {"app": "quota-probe"}},
            "template": {
                "metadata": {"labels": {"app": "quota-probe"}},
                "spec": {"containers": [{"name": "probe", "image": "probe"}]},
            },
        },
    }))
    .expect("probe Deployment");
    wait_for("the quota refuses a Deployment", Duration::from_secs(90), || {
        let (deployments, probe) = (deployments.clone(), probe.clone());
        async move {
            match deployments.create(&Default::default(), &probe).await {
                Err(kube::Error::Api(refusal)) if refusal.message.contains("exceeded quota") => Some(()),
                Ok(_) => {
                    deployments
                        .delete("quota-probe", &DeleteParams::background())
                        .await
                        .expect("delete the admitted probe");
                    None
                }
                Err(_) => None,
            }
        }
    })
    .await;
}

/// An apply the API server refuses (here a ResourceQuota that allows no Deployment) reaches the
/// McpServer's status and a Warning event with the API server's message; once the quota is
/// gone, the retry applies and the condition clears.
pub async fn an_apply_refused_by_the_api_server_reaches_status_and_events(cluster: &mut Cluster) {
    const NS: &str = "team-quota";
    let kubeconfig = install_rbac(cluster).await;
    cluster.namespace(NS).await;
    cluster.kubectl().apply(
        NS,
        "apiVersion: v1\nkind: ResourceQuota\nmetadata: {name: no-deployments}\nspec: {hard: {count/deployments.apps: \"0\"}}\n",
    );
    quota_in_force(cluster, NS).await;
    let operator = Operator::start(cluster, &kubeconfig, "quota-one", &[]);
    hmac_secret(cluster, NS);
    cluster
        .kubectl()
        .apply(NS, &repo_file("config/samples/company-info.yaml"));
    let servers: Api<McpServer> = Api::namespaced(cluster.client.clone(), NS);
    let message = wait_for("Ready=False (ApplyFailed)", Duration::from_secs(60), || {
        let servers = servers.clone();
        async move {
            let server = servers.get(SERVER).await.ok()?;
            let ready = server.status?.conditions.into_iter().find(|c| c.type_ == "Ready")?;
            (ready.reason == "ApplyFailed").then_some(ready.message)
        }
    })
    .await;
    assert!(
        message.starts_with("the API server refused a child: cannot apply Deployment team-quota/company-info:")
            && message.contains("exceeded quota: no-deployments"),
        "{message}"
    );
    wait_event(&cluster.client, NS, "an ApplyFailed Warning event", |e| {
        e.reason.as_deref() == Some("ApplyFailed")
            && e.type_.as_deref() == Some("Warning")
            && e.note.as_deref().is_some_and(|n| n.contains("exceeded quota"))
    })
    .await;
    let server = servers.get(SERVER).await.expect("server");
    assert_eq!(
        server.status.and_then(|s| s.policy_hash),
        None,
        "a policy whose ConfigMap may not have been applied is not reported as rolled out"
    );

    cluster
        .kubectl()
        .ok(&["delete", "resourcequota", "no-deployments", "-n", NS]);
    wait_for(
        "the retry applies once the quota is gone",
        Duration::from_secs(90),
        || {
            let servers = servers.clone();
            async move {
                let server = servers.get(SERVER).await.ok()?;
                (condition(&server, "Ready")? == ("False".into(), "PodsNotReady".into())).then_some(())
            }
        },
    )
    .await;
    drop(operator);
}

/// An operator that starts with McpServers already in the cluster (the samples of the `api`
/// cases) reconciles every one of them. Found by this suite: all but one waited forever for the
/// policy cache (kube's `Store::wait_until_ready` wakes one of several waiters).
pub async fn an_operator_started_late_reconciles_every_existing_server(cluster: &mut Cluster) {
    let kubeconfig = install_rbac(cluster).await;
    let servers: Api<McpServer> = Api::namespaced(cluster.client.clone(), "samples");
    let names: Vec<String> = servers
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
        .into_iter()
        .filter_map(|s| s.metadata.name)
        .collect();
    assert!(names.len() >= 3, "the api cases left the samples: {names:?}");
    let operator = Operator::start(cluster, &kubeconfig, "late-one", &[]);
    wait_for(
        "every McpServer in samples has a status of its generation",
        Duration::from_secs(60),
        || {
            let servers = servers.clone();
            async move {
                let list = servers.list(&ListParams::default()).await.ok()?;
                list.items
                    .iter()
                    .all(|s| s.status.as_ref().and_then(|st| st.observed_generation) == s.metadata.generation)
                    .then_some(())
            }
        },
    )
    .await;
    drop(operator);
}
