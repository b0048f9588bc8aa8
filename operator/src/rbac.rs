//! Every API permission the operator uses, in one table: the controller wiring and the API calls
//! of `run` draw their kinds from it, and a test compares it with `config/rbac/` exactly, so the
//! ClusterRole grants what the operator needs and nothing more.

/// Where a permission is granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The operator's ClusterRole (`config/rbac/cluster_role.yaml`), or, when it watches some
    /// namespaces only (`--watch-namespaces`), a Role with the same rules in each of them
    /// (`config/overlays/namespaced/role.yaml`, Helm value `watchNamespaces`). Every rule is on
    /// a namespaced resource.
    Cluster,
    /// The leader-election Role in the operator's own namespace (`config/rbac/leader_election_role.yaml`).
    LeaderElection,
}

/// One `(apiGroup, resource, verbs)` rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permission {
    /// Where it is granted.
    pub scope: Scope,
    /// API group (`""` for the core group).
    pub group: &'static str,
    /// Resource, with `/subresource` where one is used.
    pub resource: &'static str,
    /// Verbs, sorted.
    pub verbs: &'static [&'static str],
}

/// Verbs on the child kinds: watched (`list`, `watch`), server-side applied (`create`, `patch`:
/// an apply that creates an object is authorized as both), and deleted when a switch turns one
/// off (`delete`, found by `list` with the children's labels).
pub const CHILD_VERBS: &[&str] = &["create", "delete", "list", "patch", "watch"];

const fn cluster(group: &'static str, resource: &'static str, verbs: &'static [&'static str]) -> Permission {
    Permission {
        scope: Scope::Cluster,
        group,
        resource,
        verbs,
    }
}

/// Every permission the operator uses.
pub const PERMISSIONS: &[Permission] = &[
    // The two Palisade kinds: watched (never read one by one), and their status written by
    // server-side apply.
    cluster("palisade.dev", "mcpservers", &["list", "watch"]),
    cluster("palisade.dev", "mcpservers/status", &["patch"]),
    cluster("palisade.dev", "mcpaccesspolicies", &["list", "watch"]),
    cluster("palisade.dev", "mcpaccesspolicies/status", &["patch"]),
    // Children. ConfigMaps are also read (`get`) when an McpServer names one in spec.documents.
    cluster("", "configmaps", &["create", "delete", "get", "list", "patch", "watch"]),
    cluster("", "serviceaccounts", CHILD_VERBS),
    cluster("", "services", CHILD_VERBS),
    cluster("apps", "deployments", CHILD_VERBS),
    cluster("networking.k8s.io", "networkpolicies", CHILD_VERBS),
    cluster("policy", "poddisruptionbudgets", CHILD_VERBS),
    cluster("autoscaling", "horizontalpodautoscalers", CHILD_VERBS),
    cluster("external-secrets.io", "externalsecrets", CHILD_VERBS),
    // Secrets an McpServer names: only their metadata is read, to tell whether they exist.
    cluster("", "secrets", &["get", "list", "watch"]),
    // The servers' pods, watched (metadata and status kept) for rollout truth: which pods are
    // ready, and their addresses, whose `GET /ready` says which policy each serves.
    cluster("", "pods", &["list", "watch"]),
    // Events for changes and failures (kube's Recorder creates, then patches a series).
    cluster("events.k8s.io", "events", &["create", "patch"]),
    // Leader election.
    Permission {
        scope: Scope::LeaderElection,
        group: "coordination.k8s.io",
        resource: "leases",
        verbs: &["create", "get", "update"],
    },
];

/// The permission on `(group, resource)`, if the table has one.
pub fn permission(group: &str, resource: &str) -> Option<&'static Permission> {
    PERMISSIONS.iter().find(|p| p.group == group && p.resource == resource)
}

/// Whether the table grants `verb` on `(group, resource)`: the controller's tests check every
/// kind it watches, applies and deletes against this.
pub fn grants(group: &str, resource: &str, verb: &str) -> bool {
    permission(group, resource).is_some_and(|p| p.verbs.contains(&verb))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs_are_sorted_and_rules_unique() {
        for (i, p) in PERMISSIONS.iter().enumerate() {
            let mut sorted = p.verbs.to_vec();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted, p.verbs, "{p:?}");
            assert!(
                PERMISSIONS[..i]
                    .iter()
                    .all(|q| (q.group, q.resource) != (p.group, p.resource)),
                "{p:?}"
            );
        }
    }
}
