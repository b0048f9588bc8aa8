//! The RBAC manifests in `config/rbac/` grant exactly what the operator's one table of API
//! permissions ([`palisade_operator::rbac::PERMISSIONS`]) lists: every kind and verb it uses,
//! and nothing more. (The scenario tests check the other direction: every API call the
//! controller makes is in the table.)

use std::collections::BTreeSet;
use std::path::Path;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule, Role};
use kube::Resource;
use palisade_operator::build::ExternalSecret;
use palisade_operator::rbac::{CHILD_VERBS, PERMISSIONS, Scope, grants};

type Grant = (String, String, String);

fn rbac_file(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/rbac").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn expand(rules: &[PolicyRule]) -> BTreeSet<Grant> {
    let mut grants = BTreeSet::new();
    for rule in rules {
        assert!(
            rule.resource_names.is_none() && rule.non_resource_urls.is_none(),
            "{rule:?}"
        );
        for group in rule.api_groups.iter().flatten() {
            for resource in rule.resources.iter().flatten() {
                for verb in &rule.verbs {
                    assert_ne!(verb, "*", "no wildcards");
                    assert_ne!(resource, "*", "no wildcards");
                    grants.insert((group.clone(), resource.clone(), verb.clone()));
                }
            }
        }
    }
    grants
}

fn table(scope: Scope) -> BTreeSet<Grant> {
    PERMISSIONS
        .iter()
        .filter(|p| p.scope == scope)
        .flat_map(|p| {
            p.verbs
                .iter()
                .map(|v| (p.group.to_owned(), p.resource.to_owned(), (*v).to_owned()))
        })
        .collect()
}

#[test]
fn the_cluster_role_grants_exactly_the_table() {
    let role: ClusterRole = yaml_serde::from_str(&rbac_file("cluster_role.yaml")).unwrap();
    assert_eq!(role.metadata.name.as_deref(), Some("palisade-operator"));
    let granted = expand(role.rules.as_deref().unwrap_or_default());
    let needed = table(Scope::Cluster);
    let missing: Vec<_> = needed.difference(&granted).collect();
    let extra: Vec<_> = granted.difference(&needed).collect();
    assert!(missing.is_empty(), "the ClusterRole lacks {missing:?}");
    assert!(
        extra.is_empty(),
        "the ClusterRole grants more than the operator uses: {extra:?}"
    );
}

#[test]
fn the_namespaced_overlay_role_grants_exactly_the_table() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/overlays/namespaced/role.yaml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let role: Role = yaml_serde::from_str(&text).unwrap();
    assert_eq!(role.metadata.name.as_deref(), Some("palisade-operator"));
    assert_eq!(
        expand(role.rules.as_deref().unwrap_or_default()),
        table(Scope::Cluster),
        "config/overlays/namespaced/role.yaml and the ClusterRole's rules differ"
    );
}

#[test]
fn the_leader_election_role_grants_exactly_the_table() {
    let role: Role = yaml_serde::from_str(&rbac_file("leader_election_role.yaml")).unwrap();
    assert_eq!(
        expand(role.rules.as_deref().unwrap_or_default()),
        table(Scope::LeaderElection)
    );
}

#[test]
fn every_child_kind_is_watched_applied_and_deleted() {
    fn check<K: Resource<DynamicType = ()>>() {
        let (group, plural) = (K::group(&()), K::plural(&()));
        for verb in CHILD_VERBS {
            assert!(grants(&group, &plural, verb), "{verb} {group}/{plural}");
        }
    }
    check::<ServiceAccount>();
    check::<NetworkPolicy>();
    check::<ConfigMap>();
    check::<ExternalSecret>();
    check::<Service>();
    check::<Deployment>();
    check::<PodDisruptionBudget>();
    check::<HorizontalPodAutoscaler>();
}

#[test]
fn the_aggregated_roles_extend_edit_and_view_with_the_palisade_kinds() {
    let text = rbac_file("aggregated_roles.yaml");
    let roles: Vec<ClusterRole> = text
        .split("\n---\n")
        .map(|doc| yaml_serde::from_str(doc).unwrap())
        .collect();
    let by_name = |name: &str| roles.iter().find(|r| r.metadata.name.as_deref() == Some(name)).unwrap();
    for (name, label, writes) in [
        ("palisade-edit", "rbac.authorization.k8s.io/aggregate-to-edit", true),
        ("palisade-view", "rbac.authorization.k8s.io/aggregate-to-view", false),
    ] {
        let role = by_name(name);
        assert_eq!(role.metadata.labels.as_ref().unwrap()[label], "true");
        let grants = expand(role.rules.as_deref().unwrap_or_default());
        for kind in ["mcpservers", "mcpaccesspolicies"] {
            assert!(grants.contains(&("palisade.dev".into(), kind.into(), "get".into())));
            assert_eq!(
                grants.contains(&("palisade.dev".into(), kind.into(), "create".into())),
                writes
            );
        }
        // Status belongs to the operator.
        assert!(
            grants
                .iter()
                .all(|(_, r, v)| !r.ends_with("/status") || v == "get" || v == "list" || v == "watch")
        );
    }
}
