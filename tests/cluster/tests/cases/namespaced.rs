//! A namespace-scoped install: the operator watches two namespaces (`--watch-namespaces`) as a
//! ServiceAccount bound to exactly the Roles of `config/overlays/namespaced` (one per watched
//! namespace, plus the leader-election Role) and to no ClusterRole. It reconciles the servers
//! there, follows a policy change in each, leaves a server in a third namespace alone, and is
//! never refused by the API server.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use palisade_crds::McpServer;
use serde_json::{Value, json};

use super::reconcile::{hmac_secret, switch_to_audit_and_wait, wait_reconciled};
use crate::support::operator::{OPERATOR_NAMESPACE, Operator, service_account_kubeconfig};
use crate::support::{Cluster, repo_file};

const WATCHED: [&str; 2] = ["team-ns-a", "team-ns-b"];
const UNWATCHED: &str = "team-ns-c";
/// Its own ServiceAccount: the operator's usual one has the ClusterRole of the other cases.
const ACCOUNT: &str = "palisade-operator-namespaced";

/// The overlay's Role and RoleBinding for each of `WATCHED`, and the leader-election Role with a
/// binding of its own, all for `ACCOUNT`: (namespace, object).
fn namespaced_rbac(cluster: &Cluster) -> Vec<(String, Value)> {
    let root = palisade_cluster::repo_root();
    let rendered = cluster.kubectl().ok(&[
        "kustomize",
        &root.join("config/overlays/namespaced").display().to_string(),
    ]);
    let objects: Vec<Value> = rendered
        .split("\n---\n")
        .map(|doc| yaml_serde::from_str(doc).expect("kustomize prints YAML"))
        .collect();
    let find = |kind: &str, name: &str| {
        objects
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("config/overlays/namespaced has no {kind} {name}"))
            .clone()
    };
    assert!(
        objects.iter().all(|o| !(o["kind"] == "ClusterRoleBinding"
            || o["kind"] == "ClusterRole" && o["metadata"]["name"] == "palisade-operator")),
        "the overlay grants the operator no ClusterRole"
    );
    let subject = json!([{"kind": "ServiceAccount", "name": ACCOUNT, "namespace": OPERATOR_NAMESPACE}]);
    let mut out = vec![json!({
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": ACCOUNT, "namespace": OPERATOR_NAMESPACE},
    })];
    for namespace in WATCHED {
        let mut role = find("Role", "palisade-operator");
        role["metadata"]["namespace"] = json!(namespace);
        let mut binding = find("RoleBinding", "palisade-operator");
        binding["metadata"]["namespace"] = json!(namespace);
        binding["subjects"] = subject.clone();
        out.extend([role, binding]);
    }
    out.push(find("Role", "palisade-operator-leader-election"));
    let mut election = find("RoleBinding", "palisade-operator-leader-election");
    election["metadata"]["name"] = json!(format!("{ACCOUNT}-leader-election"));
    election["subjects"] = subject;
    out.push(election);
    out.into_iter()
        .map(|o| (o["metadata"]["namespace"].as_str().expect("namespaced").to_owned(), o))
        .collect()
}

pub async fn an_operator_with_roles_in_two_namespaces_reconciles_them_and_nothing_else(cluster: &mut Cluster) {
    cluster.namespace(OPERATOR_NAMESPACE).await;
    for namespace in WATCHED.iter().chain([&UNWATCHED]) {
        cluster.namespace(namespace).await;
        hmac_secret(cluster, namespace);
    }
    for (namespace, object) in namespaced_rbac(cluster) {
        cluster
            .kubectl()
            .apply(&namespace, &yaml_serde::to_string(&object).expect("YAML"));
    }
    let kubeconfig = service_account_kubeconfig(cluster, OPERATOR_NAMESPACE, ACCOUNT);
    // Exactly the Roles: no cluster-wide list, in a watched namespace or outside.
    let can = |verb: &str, resource: &str, namespace: Option<&str>| {
        let mut args = vec!["auth", "can-i", verb, resource, "--as"];
        let user = format!("system:serviceaccount:{OPERATOR_NAMESPACE}:{ACCOUNT}");
        args.push(&user);
        match namespace {
            Some(namespace) => args.extend(["-n", namespace]),
            None => args.push("--all-namespaces"),
        }
        let output = cluster.kubectl().run(&args, None);
        String::from_utf8_lossy(&output.stdout).trim() == "yes"
    };
    assert!(can("watch", "mcpservers.palisade.dev", Some(WATCHED[0])));
    assert!(can("patch", "deployments.apps", Some(WATCHED[1])));
    assert!(!can("watch", "mcpservers.palisade.dev", None), "no cluster-wide watch");
    assert!(
        !can("list", "secrets", Some(UNWATCHED)),
        "nothing outside the watched namespaces"
    );

    let identity = "namespaced";
    let operator = Operator::start(
        cluster,
        &kubeconfig,
        identity,
        &[
            "--watch-namespaces",
            &WATCHED.join(","),
            "--leader-election-name",
            ACCOUNT,
        ],
    );
    let sample = repo_file("config/samples/company-info.yaml");
    for namespace in WATCHED.iter().chain([&UNWATCHED]) {
        cluster.kubectl().apply(namespace, &sample);
    }
    let client = cluster.client.clone();
    for namespace in WATCHED {
        let servers: Api<McpServer> = Api::namespaced(client.clone(), namespace);
        wait_reconciled(&servers, "company-info", &["company-info-access"]).await;
    }

    // A policy change in each watched namespace reaches its server (one merged watch per kind).
    for namespace in WATCHED {
        switch_to_audit_and_wait(
            &client,
            namespace,
            &format!("the policy change in {namespace} rolled out"),
            Duration::from_secs(60),
        )
        .await;
    }

    // The server outside has no status and no children.
    let outside: Api<McpServer> = Api::namespaced(client.clone(), UNWATCHED);
    let server = outside.get("company-info").await.expect("the unwatched server");
    assert!(
        server.status.is_none(),
        "the operator left {UNWATCHED} alone: {:?}",
        server.status
    );
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), UNWATCHED);
    assert!(
        deployments.get_opt("company-info").await.expect("get").is_none(),
        "no Deployment in {UNWATCHED}"
    );

    let log_path = cluster
        .plane
        .dir()
        .join("logs")
        .join(format!("operator-{identity}.log"));
    drop(operator);
    let log = std::fs::read_to_string(&log_path).expect("operator log");
    let refused: Vec<&str> = log.lines().filter(|l| l.contains("forbidden")).collect();
    assert!(
        refused.is_empty(),
        "the API server refused the operator:\n{}",
        refused.join("\n")
    );
}
