//! The second status writer: each McpAccessPolicy's `Accepted` condition, the servers it is
//! compiled into, and the result of its test cases on each of them.
//!
//! [`policy_status`] is pure: it compiles every bound server with all of its policies (the same
//! compiler and evaluator the server controller and the server pods use) and reports what
//! concerns this policy. The server controller decides what is rolled out; this module only
//! reports, so a policy's status can never claim something the servers do not do.

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::ResourceExt;
use kube::core::DeserializeGuard;
use palisade_crds::access_policy::TestResultStatus;
use palisade_crds::compile::object_key;
use palisade_crds::conditions::{self, reason};
use palisade_crds::{McpAccessPolicy, McpAccessPolicyStatus, McpServer, compile};

use super::status::condition;
use crate::bind::bound_policies;

/// The status of `policy`, given every McpServer and McpAccessPolicy the operator sees.
pub fn policy_status(
    policy: &McpAccessPolicy,
    servers: &[Arc<DeserializeGuard<McpServer>>],
    policies: &[Arc<DeserializeGuard<McpAccessPolicy>>],
    previous: Option<&McpAccessPolicyStatus>,
    now: &Time,
) -> McpAccessPolicyStatus {
    let namespace = policy.namespace().unwrap_or_default();
    let key = object_key(policy);
    let readable_policies: Vec<&McpAccessPolicy> = policies.iter().filter_map(|p| p.0.as_ref().ok()).collect();

    let cross_namespace: Vec<String> = policy
        .spec
        .target_refs
        .iter()
        .enumerate()
        .filter(|(_, t)| t.namespace.as_deref().is_some_and(|ns| ns != namespace))
        .map(|(i, t)| {
            format!(
                "spec.targetRefs[{i}] names McpServer {}/{} in another namespace; a policy binds only servers in \
                 its own namespace ({namespace}): create the policy there instead",
                t.namespace.as_deref().unwrap_or_default(),
                t.name
            )
        })
        .collect();

    let mut bound_servers = Vec::new();
    let mut invalid = Vec::new();
    let mut results = Vec::new();
    let mut servers: Vec<&McpServer> = servers
        .iter()
        .filter_map(|s| s.0.as_ref().ok())
        .filter(|s| s.namespace().as_deref() == Some(namespace.as_str()))
        .collect();
    servers.sort_by_key(|s| s.name_any());
    for server in servers {
        let bound = bound_policies(server, readable_policies.iter().copied());
        if !bound.policies.iter().any(|p| object_key(*p) == key) {
            continue;
        }
        let server_name = server.name_any();
        bound_servers.push(server_name.clone());
        match compile(server, &bound.policies) {
            Ok(compiled) => {
                results.extend(
                    compiled
                        .tests
                        .iter()
                        .filter(|t| t.policy == key)
                        .map(|t| TestResultStatus {
                            name: t.name.clone(),
                            server: server_name.clone(),
                            passed: t.passed(),
                            message: (!t.passed()).then(|| t.failures.join("; ")),
                        }),
                )
            }
            Err(problems) => invalid.push(format!("on McpServer {server_name}: {problems}")),
        }
    }

    let failed: Vec<String> = results
        .iter()
        .filter(|r| !r.passed)
        .map(|r| {
            format!(
                "test {:?} on McpServer {}: {}",
                r.name,
                r.server,
                r.message.as_deref().unwrap_or_default()
            )
        })
        .collect();
    let (ok, why, message) = if !cross_namespace.is_empty() {
        (false, reason::CROSS_NAMESPACE_REF, cross_namespace.join("; "))
    } else if !invalid.is_empty() {
        (
            false,
            reason::POLICY_INVALID,
            format!(
                "does not compile {}; the last valid policy stays in force",
                invalid.join("; ")
            ),
        )
    } else if !failed.is_empty() {
        (
            false,
            reason::POLICY_TEST_FAILED,
            format!("{}; the last valid policy stays in force", failed.join("; ")),
        )
    } else if bound_servers.is_empty() {
        (
            false,
            reason::NO_TARGETS,
            format!(
                "targets no existing McpServer in namespace {namespace}; check spec.targetRefs and spec.targetSelector"
            ),
        )
    } else {
        (
            true,
            reason::AS_EXPECTED,
            format!("in force on McpServer {}", bound_servers.join(", ")),
        )
    };
    let status_value = if ok { "True" } else { "False" };
    let previous_conditions = previous.map(|p| p.conditions.as_slice()).unwrap_or_default();
    let last_transition_time = condition(previous_conditions, conditions::ACCEPTED)
        .filter(|c| c.status == status_value)
        .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
    let passed = results.iter().filter(|r| r.passed).count();
    McpAccessPolicyStatus {
        conditions: vec![Condition {
            type_: conditions::ACCEPTED.into(),
            status: status_value.into(),
            reason: why.into(),
            message,
            observed_generation: policy.metadata.generation,
            last_transition_time,
        }],
        observed_generation: policy.metadata.generation,
        bound_servers,
        test_summary: (!results.is_empty()).then(|| format!("{passed}/{}", results.len())),
        test_results: results,
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::jiff::Timestamp;

    use super::*;
    use crate::test_support::{policy, server};

    fn guard<K>(k: K) -> Arc<DeserializeGuard<K>> {
        Arc::new(DeserializeGuard(Ok(k)))
    }

    const SERVER: &str = "metadata: {name: s, namespace: ns}\nspec:\n  documents: [{collection: c, configMapRef: {name: c}}]\n  tools: [{name: read, collection: c, action: readAll}]\n  auth: {allowAnonymous: true}\n";

    #[test]
    fn accepted_with_test_results_on_each_bound_server() {
        let p = policy(
            "metadata: {name: p, namespace: ns, generation: 3}\nspec:\n  targetRefs: [{name: s}]\n  roles: [{name: r, scopes: [c:read]}]\n  tools: [{match: read, requiredScopes: [c:read]}]\n  tests: [{name: reads, identity: {scopes: [c:read]}, allowed: [read]}]\n",
        );
        let now = Time(Timestamp::UNIX_EPOCH);
        let status = policy_status(&p, &[guard(server(SERVER))], &[guard(p.clone())], None, &now);
        assert_eq!(status.bound_servers, ["s"]);
        assert_eq!(status.test_summary.as_deref(), Some("1/1"));
        assert_eq!(status.conditions[0].status, "True");
        assert_eq!(status.observed_generation, Some(3));
    }

    #[test]
    fn failing_tests_cross_namespace_refs_and_no_targets_are_refused() {
        let now = Time(Timestamp::UNIX_EPOCH);
        let failing = policy(
            "metadata: {name: p, namespace: ns}\nspec:\n  targetRefs: [{name: s}]\n  tests: [{name: reads, identity: {}, allowed: [read]}]\n",
        );
        let status = policy_status(
            &failing,
            &[guard(server(SERVER))],
            &[guard(failing.clone())],
            None,
            &now,
        );
        assert_eq!(status.conditions[0].reason, "PolicyTestFailed");
        assert!(status.conditions[0].message.contains("\"reads\""));
        assert_eq!(status.test_summary.as_deref(), Some("0/1"));

        let other = policy("metadata: {name: p, namespace: other}\nspec:\n  targetRefs: [{name: s, namespace: ns}]\n");
        let status = policy_status(&other, &[guard(server(SERVER))], &[guard(other.clone())], None, &now);
        assert_eq!(status.conditions[0].reason, "CrossNamespaceRef");
        assert!(status.bound_servers.is_empty());

        let lonely = policy("metadata: {name: p, namespace: ns}\nspec:\n  targetRefs: [{name: nobody}]\n");
        let status = policy_status(&lonely, &[guard(server(SERVER))], &[guard(lonely.clone())], None, &now);
        assert_eq!(status.conditions[0].reason, "NoTargets");
    }
}
