//! The second status writer: each McpAccessPolicy's `Accepted` condition, the servers it is
//! compiled into, and the result of its test cases on each of them.
//!
//! [`policy_status`] is pure: for every server the policy binds, it runs the very validation the
//! server controller runs before a rollout ([`crate::validate`]: the server with all of its
//! policies, the operator's Kubernetes checks and every policy's tests) and reports what concerns
//! this policy. The server controller decides what is rolled out; this module only reports, so a
//! policy's status can never claim something the servers do not do: `Accepted=True` ("in force")
//! only when every server it targets would roll it out, and `Accepted=False` naming the server
//! that refuses and why, even when the fault is in the server or in another policy.

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::ResourceExt;
use kube::core::DeserializeGuard;
use palisade_crds::access_policy::TestResultStatus;
use palisade_crds::compile::object_key;
use palisade_crds::conditions::{self, reason};
use palisade_crds::policy_tests::TestOutcome;
use palisade_crds::{CompileOptions, McpAccessPolicy, McpAccessPolicyStatus, McpServer, compile};

use super::status::condition;
use crate::bind::bound_policies;
use crate::settings::Settings;
use crate::validate::{ValidateError, validate};

/// A server that refuses the policies that target it, this one among them.
struct Refusal {
    server: String,
    error: ValidateError,
}

/// The status of `policy`, given every McpServer and McpAccessPolicy the operator sees and the
/// operator's settings (the same the server controller validates with).
pub fn policy_status(
    policy: &McpAccessPolicy,
    servers: &[Arc<DeserializeGuard<McpServer>>],
    policies: &[Arc<DeserializeGuard<McpAccessPolicy>>],
    settings: &Settings,
    previous: Option<&McpAccessPolicyStatus>,
    now: &Time,
) -> McpAccessPolicyStatus {
    let namespace = policy.namespace().unwrap_or_default();
    let key = object_key(policy);
    let object = format!("McpAccessPolicy {key}");
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
    let mut accepted_by = Vec::new();
    let mut refusals = Vec::new();
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
        let tests_of = |tests: &[TestOutcome]| -> Vec<TestResultStatus> {
            tests
                .iter()
                .filter(|t| t.policy == key)
                .map(|t| TestResultStatus {
                    name: t.name.clone(),
                    server: server_name.clone(),
                    passed: t.passed(),
                    message: (!t.passed()).then(|| t.failures.join("; ")),
                })
                .collect()
        };
        match validate(server, &bound.policies, settings) {
            Ok(validated) => {
                results.extend(tests_of(&validated.compiled().tests));
                accepted_by.push(server_name);
            }
            Err(error) => {
                // NB: the test results are still worth reporting when the server refuses for
                // another reason than the tests (a check of the operator's, another policy).
                let options = CompileOptions {
                    cluster_domain: &settings.cluster_domain,
                };
                if let Ok(compiled) = compile(server, &bound.policies, &options) {
                    results.extend(tests_of(&compiled.tests));
                }
                refusals.push(Refusal {
                    server: server_name,
                    error,
                });
            }
        }
    }

    let (ok, why, message) = if !cross_namespace.is_empty() {
        (false, reason::CROSS_NAMESPACE_REF, cross_namespace.join("; "))
    } else if !refusals.is_empty() {
        // The server's own reason (its `PolicyValid` condition says the same); an invalid spec
        // outranks failing tests.
        let why = if refusals
            .iter()
            .any(|r| matches!(r.error, ValidateError::InvalidSpec(_)))
        {
            reason::POLICY_INVALID
        } else {
            reason::POLICY_TEST_FAILED
        };
        let refused: Vec<String> = refusals
            .iter()
            .map(|r| {
                let problems = r.error.problems();
                let own = problems.iter().any(|p| p.object.as_deref() == Some(object.as_str()));
                let whom = if own {
                    "this policy"
                } else {
                    "its policies for reasons outside this policy"
                };
                format!(
                    "McpServer {} refuses {whom} ({}): {problems}",
                    r.server,
                    r.error.reason()
                )
            })
            .collect();
        let mut message = format!(
            "not in force: {}; the last valid policy stays in force there",
            refused.join("; ")
        );
        if !accepted_by.is_empty() {
            message.push_str(&format!("; in force on McpServer {}", accepted_by.join(", ")));
        }
        (false, why, message)
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
        let status = policy_status(
            &p,
            &[guard(server(SERVER))],
            &[guard(p.clone())],
            &Settings::default(),
            None,
            &now,
        );
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
            &Settings::default(),
            None,
            &now,
        );
        assert_eq!(status.conditions[0].reason, "PolicyTestFailed");
        assert!(status.conditions[0].message.contains("\"reads\""));
        assert_eq!(status.test_summary.as_deref(), Some("0/1"));

        let other = policy("metadata: {name: p, namespace: other}\nspec:\n  targetRefs: [{name: s, namespace: ns}]\n");
        let status = policy_status(
            &other,
            &[guard(server(SERVER))],
            &[guard(other.clone())],
            &Settings::default(),
            None,
            &now,
        );
        assert_eq!(status.conditions[0].reason, "CrossNamespaceRef");
        assert!(status.bound_servers.is_empty());

        let lonely = policy("metadata: {name: p, namespace: ns}\nspec:\n  targetRefs: [{name: nobody}]\n");
        let status = policy_status(
            &lonely,
            &[guard(server(SERVER))],
            &[guard(lonely.clone())],
            &Settings::default(),
            None,
            &now,
        );
        assert_eq!(status.conditions[0].reason, "NoTargets");
    }

    const GOOD: &str = "metadata: {name: good, namespace: ns}\nspec:\n  targetRefs: [{name: s}]\n  roles: [{name: r, scopes: [c:read]}]\n  tools: [{match: read, requiredScopes: [c:read]}]\n  tests: [{name: reads, identity: {scopes: [c:read]}, allowed: [read]}]\n";

    #[test]
    fn a_policy_the_server_refuses_for_an_operator_check_is_not_in_force() {
        // The policy compiles and its test passes, but the operator refuses the server (its
        // Service port is the metrics port): nothing is rolled out, so the policy is not in force.
        let now = Time(Timestamp::UNIX_EPOCH);
        let good = policy(GOOD);
        let refused = server(&format!("{SERVER}  service: {{port: 9090}}\n"));
        let status = policy_status(
            &good,
            &[guard(refused)],
            &[guard(good.clone())],
            &Settings::default(),
            None,
            &now,
        );
        let accepted = &status.conditions[0];
        assert_eq!(
            (accepted.status.as_str(), accepted.reason.as_str()),
            ("False", "PolicyInvalid")
        );
        assert_eq!(
            accepted.message,
            "not in force: McpServer s refuses its policies for reasons outside this policy (PolicyInvalid): \
             McpServer ns/s: spec.service.port: port 9090 is the Service's metrics port; choose another; the last \
             valid policy stays in force there"
        );
        assert_eq!(status.bound_servers, ["s"]);
        assert_eq!(status.test_summary.as_deref(), Some("1/1"));
    }

    #[test]
    fn a_failing_test_of_another_policy_on_the_server_keeps_this_one_out_of_force() {
        let now = Time(Timestamp::UNIX_EPOCH);
        let good = policy(GOOD);
        let failing = policy(
            "metadata: {name: failing, namespace: ns}\nspec:\n  targetRefs: [{name: s}]\n  tests: [{name: anonymous reads, identity: {anonymous: true}, allowed: [read]}]\n",
        );
        let all = [guard(good.clone()), guard(failing.clone())];
        let servers = [guard(server(SERVER))];
        let status = policy_status(&good, &servers, &all, &Settings::default(), None, &now);
        let accepted = &status.conditions[0];
        assert_eq!(
            (accepted.status.as_str(), accepted.reason.as_str()),
            ("False", "PolicyTestFailed")
        );
        assert_eq!(
            accepted.message,
            "not in force: McpServer s refuses its policies for reasons outside this policy (PolicyTestFailed): \
             McpAccessPolicy ns/failing: spec.tests[0]: test \"anonymous reads\" failed: call to read is denied \
             (missing scopes: c:read); the last valid policy stays in force there"
        );
        // Its own test passed: the summary says so.
        assert_eq!(status.test_summary.as_deref(), Some("1/1"));

        // The failing policy itself is refused as "this policy".
        let status = policy_status(&failing, &servers, &all, &Settings::default(), None, &now);
        assert!(
            status.conditions[0]
                .message
                .starts_with("not in force: McpServer s refuses this policy (PolicyTestFailed): "),
            "{}",
            status.conditions[0].message
        );
        assert_eq!(status.test_summary.as_deref(), Some("0/1"));
    }

    #[test]
    fn a_policy_refused_on_one_server_names_it_and_where_it_is_in_force() {
        let now = Time(Timestamp::UNIX_EPOCH);
        let both = policy(&GOOD.replace("targetRefs: [{name: s}]", "targetRefs: [{name: s}, {name: t}]"));
        let refused = server(&format!(
            "{}  service: {{port: 9090}}\n",
            SERVER.replace("name: s,", "name: t,")
        ));
        let status = policy_status(
            &both,
            &[guard(server(SERVER)), guard(refused)],
            &[guard(both.clone())],
            &Settings::default(),
            None,
            &now,
        );
        let accepted = &status.conditions[0];
        assert_eq!(accepted.status, "False");
        assert!(
            accepted.message.starts_with("not in force: McpServer t refuses"),
            "{}",
            accepted.message
        );
        assert!(
            accepted.message.ends_with("; in force on McpServer s"),
            "{}",
            accepted.message
        );
        assert_eq!(status.bound_servers, ["s", "t"]);
        assert_eq!(status.test_summary.as_deref(), Some("2/2"));
    }
}
