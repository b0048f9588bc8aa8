//! Leader election on the real API server: of two operator processes exactly one reconciles;
//! killing the leader hands over to the other within the lease duration.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;

use super::reconcile::{hmac_secret, switch_to_audit_and_wait, wait_reconciled};
use crate::support::operator::{OPERATOR_NAMESPACE, Operator, install_rbac};
use crate::support::{Cluster, repo_file, wait_for};

const NAMESPACE: &str = "team-leader";
/// The operator's lease timing (`palisade-operator run`: client-go's defaults).
const LEASE_DURATION: Duration = Duration::from_secs(15);
const RETRY_PERIOD: Duration = Duration::from_secs(2);
const RECONCILES: &str = "palisade_operator_reconciles_total";

async fn holder(leases: &Api<Lease>) -> Option<String> {
    leases
        .get_opt("palisade-operator")
        .await
        .ok()
        .flatten()?
        .spec?
        .holder_identity
}

pub async fn exactly_one_of_two_operators_writes(cluster: &mut Cluster) {
    let kubeconfig = install_rbac(cluster).await;
    cluster.namespace(NAMESPACE).await;
    hmac_secret(cluster, NAMESPACE);
    let leases: Api<Lease> = Api::namespaced(cluster.client.clone(), OPERATOR_NAMESPACE);
    // A Lease left by an earlier case's operator must expire first; wait for it to be free.
    let mut first = Operator::start(cluster, &kubeconfig, "leader-one", &[]);
    wait_for("leader-one holds the Lease", LEASE_DURATION * 3, || {
        let leases = leases.clone();
        async move { (holder(&leases).await.as_deref() == Some("leader-one")).then_some(()) }
    })
    .await;
    assert_eq!(first.identity(), "leader-one");
    let mut second = Operator::start(cluster, &kubeconfig, "leader-two", &[]);
    cluster
        .kubectl()
        .apply(NAMESPACE, &repo_file("config/samples/company-info.yaml"));
    let servers = Api::namespaced(cluster.client.clone(), NAMESPACE);
    wait_reconciled(&servers, "company-info", &["company-info-access"]).await;
    // The follower has started (its metrics answer) and reconciled nothing.
    wait_for("leader-two serves its metrics", Duration::from_secs(30), || {
        let second = &second;
        async move {
            let url = format!("{}/health", second.http);
            let up = tokio::task::spawn_blocking(move || palisade_e2e::http_client().get(url).send().is_ok())
                .await
                .ok()?;
            up.then_some(())
        }
    })
    .await;
    assert!(first.metric(RECONCILES).await > 0.0, "the leader reconciles");
    assert_eq!(second.metric(RECONCILES).await, 0.0, "the follower never reconciles");
    assert_eq!(holder(&leases).await.as_deref(), Some("leader-one"));

    // The leader crashes; the follower takes over within the lease duration (plus its retry
    // period) and reconciles a change.
    first.kill();
    let killed = Instant::now();
    wait_for(
        "leader-two holds the Lease",
        LEASE_DURATION + Duration::from_secs(10),
        || {
            let leases = leases.clone();
            async move { (holder(&leases).await.as_deref() == Some("leader-two")).then_some(()) }
        },
    )
    .await;
    let handover = killed.elapsed();
    eprintln!("    handover after the leader's crash: {:.1} s", handover.as_secs_f64());
    // A follower takes over once it has seen the same Lease record for the lease duration on
    // its own clock; it looks every retry period, and saw the last renewal at most one retry
    // period after it was written.
    assert!(
        handover <= LEASE_DURATION + RETRY_PERIOD * 2,
        "handover took {handover:?}"
    );
    switch_to_audit_and_wait(
        &cluster.client,
        NAMESPACE,
        "the new leader rolls out a change",
        Duration::from_secs(60),
    )
    .await;
    assert!(second.metric(RECONCILES).await > 0.0, "the new leader reconciles");
    assert!(!second.exited(), "the new leader keeps running");
    drop(second);
    // Let the Lease expire so that a later case's operator can lead at once.
    tokio::time::sleep(Duration::from_secs(1)).await;
}
