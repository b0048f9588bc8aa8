//! The API server and etcd crash and come back while the operator reconciles: the operator
//! recovers without a restart of its own, with no duplicate or orphaned child.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::ListParams;
use palisade_cluster::Component;
use palisade_crds::McpServer;
use palisade_operator::names;

use super::reconcile::{hmac_secret, switch_to_audit_and_wait, wait_reconciled};
use crate::support::operator::{Operator, install_rbac};
use crate::support::{Cluster, repo_file};

const NAMESPACE: &str = "team-restart";

pub async fn the_operator_recovers_from_an_api_server_and_etcd_restart(cluster: &mut Cluster) {
    let kubeconfig = install_rbac(cluster).await;
    cluster.namespace(NAMESPACE).await;
    hmac_secret(cluster, NAMESPACE);
    let mut operator = Operator::start(cluster, &kubeconfig, "restart-one", &[]);
    cluster
        .kubectl()
        .apply(NAMESPACE, &repo_file("config/samples/company-info.yaml"));

    // Crash both while the first reconciles run.
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.plane.kill(Component::ApiServer);
    cluster.plane.kill(Component::Etcd);
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster
        .plane
        .start_component(Component::Etcd)
        .await
        .expect("etcd restarts");
    cluster
        .plane
        .start_component(Component::ApiServer)
        .await
        .expect("the API server restarts");

    let client = cluster.client.clone();
    let servers: Api<McpServer> = Api::namespaced(client.clone(), NAMESPACE);
    wait_reconciled(&servers, "company-info", &["company-info-access"]).await;
    assert!(!operator.exited(), "the operator survived without a restart");

    // Watches were re-established: a change made after the restart is rolled out.
    switch_to_audit_and_wait(
        &client,
        NAMESPACE,
        "the change after the restart rolled out",
        Duration::from_secs(90),
    )
    .await;
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), NAMESPACE);

    // Exactly the expected ConfigMaps, each once, all owned by the server.
    let server = servers.get("company-info").await.expect("server");
    let selector = format!("{}=company-info", names::LABEL_INSTANCE);
    let children = config_maps
        .list(&ListParams::default().labels(&selector))
        .await
        .expect("list");
    let owned: BTreeSet<String> = children
        .items
        .iter()
        .filter(|m| {
            m.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| Some(&o.uid) == server.metadata.uid.as_ref())
        })
        .filter_map(|m| m.metadata.name.clone())
        .collect();
    assert_eq!(owned.len(), children.items.len(), "no orphaned ConfigMap: {children:?}");
    assert_eq!(
        owned,
        BTreeSet::from([names::policy_config_map("company-info")]),
        "the sample's documents come from its own ConfigMaps; the operator adds only the policy"
    );
    assert!(!operator.exited());
    drop(operator);
}
