//! Runs a policy's own test cases (`spec.tests`) against a prepared [`Policy`].
//!
//! Tests check what the policy *decides*: in `Audit` mode a would-deny counts as a denial, so a
//! policy's tests mean the same before and after it is switched to `Enforce`.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::access_policy::{PolicyTestSpec, TestCall};
use crate::catalog::Catalog;
use crate::compile::test_source;
use crate::document::RuleKind;
use crate::evaluator::{Effect, Explanation, Identity, Policy, Reason};
use crate::identity_source::IdentitySource;

/// Why a call is denied, for a failing `allowedCalls` case.
fn why_call_denied(explanation: &Explanation<'_>) -> String {
    let decision = &explanation.decision;
    match decision.reason {
        Reason::NoMatchingRule => "no rule matches it".to_owned(),
        Reason::UnknownTool => "the server has no such tool".to_owned(),
        Reason::AmbiguousRules => "rules of equal specificity disagree about it".to_owned(),
        Reason::ArgumentDenied => {
            let failed = decision
                .argument
                .map_or_else(|| "the arguments".to_owned(), |a| a.to_string());
            match decision.step_up {
                Some(rule) => format!(
                    "{failed} under the rules it holds; a rule requiring {} would allow it",
                    rule.required_scopes.join(", ")
                ),
                None => failed,
            }
        }
        _ => format!("missing scopes: {}", explanation.missing.join(", ")),
    }
}

/// The outcome of one test case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestOutcome {
    /// `namespace/name` of the policy the case belongs to.
    pub policy: String,
    /// Name of the case.
    pub name: String,
    /// Every assertion that did not hold; empty when the case passed.
    pub failures: Vec<String>,
}

impl TestOutcome {
    /// Whether every assertion held.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// The identity a test case describes, from `source` (see [`crate::compile::test_source`]).
pub fn test_identity(test: &PolicyTestSpec, namespace: &str, source: Option<IdentitySource>) -> Identity {
    let identity = &test.identity;
    Identity {
        source,
        subject: identity.subject.clone(),
        scopes: identity.scopes.clone(),
        roles: identity.roles.clone(),
        groups: identity.groups.clone(),
        service_account: identity
            .service_account
            .as_ref()
            .map(|sa| format!("{}/{}", sa.namespace.as_deref().unwrap_or(namespace), sa.name)),
        claims: identity
            .claims
            .iter()
            .map(|(name, values)| (name.clone(), values.clone()))
            .collect(),
        anonymous: identity.anonymous,
    }
}

/// Runs `tests` of policy `policy_key` (in namespace `namespace`) against `policy`: on the tools
/// the policy document defines, or, for a server in front of an upstream, on `catalog` (the tool
/// names the tests and rules mention; `visibleTools` then means "of those names").
pub fn run_policy_tests(
    policy: &Policy,
    catalog: Option<&Catalog>,
    policy_key: &str,
    namespace: &str,
    tests: &[PolicyTestSpec],
) -> Vec<TestOutcome> {
    tests
        .iter()
        .map(|test| TestOutcome {
            policy: policy_key.to_owned(),
            name: test.name.clone(),
            failures: run_one(policy, catalog, test, namespace),
        })
        .collect()
}

fn run_one(policy: &Policy, catalog: Option<&Catalog>, test: &PolicyTestSpec, namespace: &str) -> Vec<String> {
    let mut failures = Vec::new();
    let known_roles: BTreeSet<&str> = policy.document().roles.iter().map(|r| r.name.as_str()).collect();
    for role in &test.identity.roles {
        if !known_roles.contains(role.as_str()) {
            failures.push(format!(
                "identity role {role:?} is not defined by any policy of this server"
            ));
        }
    }
    let source = match test_source(&test.identity, &policy.document().authentication) {
        Ok(source) => source,
        Err(message) => {
            failures.push(message);
            return failures;
        }
    };
    let access = policy.access(&test_identity(test, namespace, source));
    let explain = |tool: &str| match catalog {
        Some(catalog) => access.explain_in(catalog, tool),
        None => access.explain_tool(tool),
    };
    let why_denied = |tool: &str| {
        let explanation = explain(tool);
        match explanation.decision.reason {
            Reason::NoMatchingRule => "no rule matches it".to_owned(),
            Reason::UnknownTool => "the server has no such tool".to_owned(),
            Reason::AmbiguousRules => "rules of equal specificity disagree about it".to_owned(),
            Reason::ArgumentDenied => {
                "no arguments satisfy the rules it holds (a caller value they name, such as a group or claim, is missing)"
                    .to_owned()
            }
            _ => format!("missing scopes: {}", explanation.missing.join(", ")),
        }
    };
    let why_allowed = |tool: &str| {
        let explanation = explain(tool);
        let rule = explanation.decision.rule.map_or("", |r| r.match_.as_str());
        let grants: Vec<String> = explanation
            .granted
            .iter()
            .map(|(scope, grant)| format!("{scope} from {grant}"))
            .collect();
        if grants.is_empty() {
            format!("rule {rule:?} requires no scope")
        } else {
            format!("rule {rule:?}; {}", grants.join(", "))
        }
    };
    let allows = |tool: &str| {
        let decision = match catalog {
            Some(catalog) => access.check_in(catalog, tool),
            None => access.check_tool(tool),
        };
        decision.effect == Effect::Allow
    };

    if let Some(expected) = &test.visible_tools {
        let expected: BTreeSet<&str> = expected.iter().map(String::as_str).collect();
        let visible: BTreeSet<&str> = match catalog {
            Some(catalog) => access.visible_in(catalog).collect(),
            None => policy
                .tools()
                .iter()
                .map(|t| t.name.as_str())
                .filter(|t| allows(t))
                .collect(),
        };
        for tool in visible.difference(&expected) {
            failures.push(format!(
                "sees {tool}, which visibleTools does not list ({})",
                why_allowed(tool)
            ));
        }
        for tool in expected.difference(&visible) {
            failures.push(format!("does not see {tool} ({})", why_denied(tool)));
        }
    }
    for tool in &test.allowed {
        if !allows(tool) {
            failures.push(format!("call to {tool} is denied ({})", why_denied(tool)));
        }
    }
    for tool in &test.denied {
        if allows(tool) {
            failures.push(format!("call to {tool} is allowed ({})", why_allowed(tool)));
        }
    }
    // Calls with arguments, decided as the server decides a `tools/call`.
    let decide_call = |call: &TestCall| {
        let arguments = Some(&call.arguments);
        match catalog {
            Some(catalog) => access.explain_call_in(catalog, &call.tool, arguments),
            None => access.explain_call(&call.tool, arguments),
        }
    };
    for call in &test.allowed_calls {
        let explanation = decide_call(call);
        if explanation.decision.effect != Effect::Allow {
            failures.push(format!(
                "call to {} with {} is denied ({})",
                call.tool,
                Value::Object(call.arguments.clone()),
                why_call_denied(&explanation)
            ));
        }
    }
    for call in &test.denied_calls {
        let explanation = decide_call(call);
        if explanation.decision.effect == Effect::Allow {
            let rule = explanation.decision.rule.map_or("", |r| r.match_.as_str());
            failures.push(format!(
                "call to {} with {} is allowed (rule {rule:?})",
                call.tool,
                Value::Object(call.arguments.clone())
            ));
        }
    }
    // A proxy's prompts and resources, each decided by the rules of its kind.
    let items = [
        (
            RuleKind::Prompt,
            "get of prompt",
            &test.allowed_prompts,
            &test.denied_prompts,
        ),
        (
            RuleKind::Resource,
            "read of resource",
            &test.allowed_resources,
            &test.denied_resources,
        ),
    ];
    for (kind, what, allowed, denied) in items {
        if allowed.is_empty() && denied.is_empty() {
            continue;
        }
        let catalog = policy.catalog_of(kind, allowed.iter().chain(denied.iter()).map(String::as_str));
        let explain = |name: &str| {
            let explanation = access.explain_in(&catalog, name);
            match explanation.decision.reason {
                Reason::NoMatchingRule => "no rule matches it".to_owned(),
                Reason::AmbiguousRules => "rules of equal specificity disagree about it".to_owned(),
                _ if explanation.decision.effect.permits() => {
                    format!("rule {:?}", explanation.decision.rule.map_or("", |r| r.match_.as_str()))
                }
                _ => format!("missing scopes: {}", explanation.missing.join(", ")),
            }
        };
        let permits = |name: &str| access.check_in(&catalog, name).effect == Effect::Allow;
        for name in allowed.iter().filter(|n| !permits(n)) {
            failures.push(format!("{what} {name} is denied ({})", explain(name)));
        }
        for name in denied.iter().filter(|n| permits(n)) {
            failures.push(format!("{what} {name} is allowed ({})", explain(name)));
        }
    }
    failures
}
