//! Argument constraints in the evaluator: rules of one match are alternatives, a call is decided
//! with its arguments and a list by whether some arguments would do, step-up names the rule that
//! would allow, document tools and resources follow their `get` constraints; and, over random
//! policies and calls, a list never hides a tool a call would be allowed, more scopes never deny
//! more, and the order of rules does not change the policy.

mod support;

use palisade_crds::arguments::Violation;
use palisade_crds::{Effect, Identity, Policy, PolicyDocument, Reason};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

fn document(rules: &str) -> PolicyDocument {
    support::handbook_document(
        false,
        &format!(
            "tools:
  - {{name: get_doc, collection: handbook, action: get}}
  - {{name: read_all, collection: handbook, action: readAll}}
rules:
{rules}"
        ),
    )
}

fn args(value: Value) -> Map<String, Value> {
    value.as_object().unwrap().clone()
}

const ALTERNATIVES: &str = r#"
  - {match: get_doc, requiredScopes: ["docs:read"], arguments: {name: {glob: ["public-*"]}}}
  - {match: get_doc, requiredScopes: ["docs:admin"]}
  - {match: read_all, requiredScopes: ["docs:admin"]}
"#;

#[test]
fn rules_of_one_match_are_alternatives_and_a_call_is_decided_with_its_arguments() {
    let policy = Policy::new(document(ALTERNATIVES)).unwrap();
    let reader = policy.access(&Identity::with_scopes(["docs:read"]));
    assert_eq!(reader.check_tool("get_doc").effect, Effect::Allow);
    let public = args(json!({"name": "public-faq.md"}));
    assert_eq!(reader.check_call("get_doc", Some(&public)).effect, Effect::Allow);

    let secret = args(json!({"name": "salaries.md"}));
    let denied = reader.check_call("get_doc", Some(&secret));
    assert_eq!((denied.effect, denied.reason), (Effect::Deny, Reason::ArgumentDenied));
    let failure = denied.argument.unwrap();
    assert_eq!((failure.argument, failure.violation), ("name", Violation::Glob));
    // Step-up: the administrator's rule would allow these arguments.
    assert_eq!(denied.step_up.unwrap().required_scopes, ["docs:admin"]);
    assert_eq!(reader.explain_call("get_doc", Some(&secret)).missing, ["docs:admin"]);
    // Missing or mistyped arguments fail closed.
    assert_eq!(
        reader.check_call("get_doc", None).argument.map(|a| a.violation),
        Some(Violation::Missing)
    );
    let number = args(json!({"name": 7}));
    assert_eq!(
        reader
            .check_call("get_doc", Some(&number))
            .argument
            .map(|a| a.violation),
        Some(Violation::NotAString)
    );

    let admin = policy.access(&Identity::with_scopes(["docs:admin"]));
    assert_eq!(admin.check_call("get_doc", Some(&secret)).effect, Effect::Allow);
    let nobody = policy.access(&Identity::with_scopes(["other"]));
    let decision = nobody.check_call("get_doc", Some(&secret));
    assert_eq!(decision.reason, Reason::MissingScopes);
    // Both rules would allow the public document with one scope more: the first in the
    // document's (canonical) order is named.
    assert_eq!(nobody.explain_call("get_doc", Some(&public)).missing, ["docs:admin"]);
}

#[test]
fn resources_follow_the_constraints_of_get() {
    let policy = Policy::new(document(ALTERNATIVES)).unwrap();
    let reader = policy.access(&Identity::with_scopes(["docs:read"]));
    assert!(reader.check_collection("handbook").effect.permits());
    assert!(reader.check_document("handbook", "public-faq.md").effect.permits());
    let secret = reader.check_document("handbook", "salaries.md");
    assert_eq!((secret.effect, secret.reason), (Effect::Deny, Reason::ArgumentDenied));
    let admin = policy.access(&Identity::with_scopes(["docs:admin"]));
    assert!(admin.check_document("handbook", "salaries.md").effect.permits());
}

#[test]
fn a_caller_dependent_rule_lists_a_tool_only_for_callers_it_can_allow() {
    let policy = Policy::new(document(
        r#"
  - {match: get_doc, requiredScopes: [], arguments: {name: {glob: ["{group}-*"]}}}
  - {match: read_all, requiredScopes: ["docs:admin"]}
"#,
    ))
    .unwrap();
    let without_groups = policy.access(&Identity::with_scopes(Vec::<String>::new()));
    let decision = without_groups.check_tool("get_doc");
    assert_eq!(
        (decision.effect, decision.reason),
        (Effect::Deny, Reason::ArgumentDenied)
    );
    let team_a = Identity {
        groups: vec!["team-a".into()],
        ..Identity::default()
    };
    let access = policy.access(&team_a);
    assert!(access.check_tool("get_doc").effect.permits());
    assert!(
        access
            .check_call("get_doc", Some(&args(json!({"name": "team-a-plan.md"}))))
            .effect
            .permits()
    );
    assert!(
        !access
            .check_call("get_doc", Some(&args(json!({"name": "team-b-plan.md"}))))
            .effect
            .permits()
    );
}

#[test]
fn policy_tests_assert_calls_with_arguments_and_say_which_constraint_decided() {
    let (server, mut policies) = support::sample("filesystem-proxy.yaml");
    let compiled = palisade_crds::compile(&server, &policies.iter().collect::<Vec<_>>(), &Default::default()).unwrap();
    assert_eq!(compiled.failed_tests().count(), 0);
    // A case that expects a traversal to be allowed fails, naming the argument and the rule.
    policies[0].spec.tests[0].allowed_calls.push(
        serde_json::from_value(json!({"tool": "read_text_file", "arguments": {"path": "/data/public/../private/x"}}))
            .unwrap(),
    );
    let compiled = palisade_crds::compile(&server, &policies.iter().collect::<Vec<_>>(), &Default::default()).unwrap();
    let failures: Vec<&String> = compiled.failed_tests().flat_map(|t| &t.failures).collect();
    assert_eq!(
        failures,
        [
            "call to read_text_file with {\"path\":\"/data/public/../private/x\"} is denied (argument \"path\" matches none of the allowed globs under the rules it holds; a rule requiring files:write would allow it)"
        ]
    );
}

const PATHS: [&str; 8] = [
    "/data/public/a",
    "/data/public/../secret",
    "/data/secret/x",
    "/data/public/%2e%2e/x",
    "/data/shared/team/docs/a",
    "public/a",
    "/data/public",
    "/DATA/public/a",
];
const GLOBS: [&str; 4] = ["/data/public/**", "/data/*/team/**", "**", "/data/secret/*"];
const SCOPES: [&str; 3] = ["s:a", "s:b", "s:c"];

/// Up to three alternatives for `get_doc`: (required scopes, globs on `name` or none).
fn alternatives() -> impl Strategy<Value = Vec<(Vec<usize>, Option<Vec<usize>>)>> {
    prop::collection::vec(
        (
            prop::collection::vec(0usize..SCOPES.len(), 0..2),
            prop::option::of(prop::collection::vec(0usize..GLOBS.len(), 1..3)),
        ),
        1..4,
    )
}

fn rules_yaml(alternatives: &[(Vec<usize>, Option<Vec<usize>>)]) -> String {
    let mut out = String::from("  - {match: read_all, requiredScopes: [\"s:admin\"]}\n");
    for (scopes, globs) in alternatives {
        let scopes: Vec<String> = scopes.iter().map(|&s| format!("{:?}", SCOPES[s])).collect();
        let arguments = globs.as_ref().map_or(String::new(), |globs| {
            let globs: Vec<String> = globs.iter().map(|&g| format!("{:?}", GLOBS[g])).collect();
            format!(", arguments: {{name: {{glob: [{}]}}}}", globs.join(", "))
        });
        out.push_str(&format!(
            "  - {{match: get_doc, requiredScopes: [{}]{arguments}}}\n",
            scopes.join(", ")
        ));
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn lists_calls_and_scopes_agree(
        alternatives in alternatives(),
        held in prop::collection::vec(0usize..SCOPES.len(), 0..3),
        more in 0usize..SCOPES.len(),
        path in 0usize..PATHS.len(),
    ) {
        let mut distinct = alternatives.clone();
        distinct.sort();
        distinct.dedup();
        let policy = Policy::new(document(&rules_yaml(&distinct))).unwrap();
        let scopes: Vec<&str> = held.iter().map(|&s| SCOPES[s]).collect();
        let access = policy.access(&Identity::with_scopes(scopes.clone()));
        let call = args(json!({"name": PATHS[path]}));
        let allowed = access.check_call("get_doc", Some(&call)).effect == Effect::Allow;
        // A tool a call may be made to is listed.
        if allowed {
            prop_assert_eq!(access.check_tool("get_doc").effect, Effect::Allow);
        }
        // More scopes never deny what fewer allowed.
        let mut more_scopes = scopes.clone();
        more_scopes.push(SCOPES[more]);
        let wider = policy.access(&Identity::with_scopes(more_scopes));
        if allowed {
            prop_assert_eq!(wider.check_call("get_doc", Some(&call)).effect, Effect::Allow);
        }
        // The order the alternatives are written in does not matter.
        let mut reversed = distinct.clone();
        reversed.reverse();
        let other = Policy::new(document(&rules_yaml(&reversed))).unwrap();
        prop_assert_eq!(other.hash(), policy.hash());
        let same = other.access(&Identity::with_scopes(scopes)).check_call("get_doc", Some(&call)).effect;
        prop_assert_eq!(same == Effect::Allow, allowed);
    }
}

#[test]
fn a_token_claim_is_a_caller_value_in_rules_and_in_policy_tests() {
    let (server, mut policies) = support::sample("filesystem-proxy.yaml");
    // Readers may also read their team's share, the team named by the token's `team` claim.
    policies[0].spec.tools.push(
        serde_json::from_value(json!({
            "match": "read_*",
            "requiredScopes": ["files:read"],
            "arguments": {"path": {"glob": ["/data/teams/{claims.team}/**"]}}
        }))
        .unwrap(),
    );
    policies[0].spec.tests.push(
        serde_json::from_value(json!({
            "name": "a reader reads its own team's share",
            "identity": {"subject": "dev", "groups": ["team-d"], "claims": {"team": ["ops"]}},
            "allowedCalls": [{"tool": "read_text_file", "arguments": {"path": "/data/teams/ops/runbook.md"}}],
            "deniedCalls": [
                {"tool": "read_text_file", "arguments": {"path": "/data/teams/finance/salaries.csv"}},
                {"tool": "read_text_file", "arguments": {"path": "/data/teams/ops/../finance/x"}}
            ]
        }))
        .unwrap(),
    );
    let refs: Vec<&palisade_crds::McpAccessPolicy> = policies.iter().collect();
    let compiled = palisade_crds::compile(&server, &refs, &Default::default()).unwrap();
    assert_eq!(compiled.failed_tests().count(), 0, "{:?}", compiled.tests);
    assert_eq!(compiled.policy.claim_names(), ["team"]);

    // The same caller without the claim: the team rule allows nothing.
    let identity = |claims: Vec<(String, Vec<String>)>| Identity {
        source: Some(palisade_crds::IdentitySource::Issuer("https://sso.example.com".into())),
        subject: Some("dev".into()),
        groups: vec!["team-d".into()],
        claims,
        ..Identity::default()
    };
    let catalog = compiled.policy.catalog(["read_text_file"]);
    let runbook = args(json!({"path": "/data/teams/ops/runbook.md"}));
    let without = compiled.policy.access(&identity(vec![]));
    assert_eq!(
        without.check_call_in(&catalog, "read_text_file", Some(&runbook)).reason,
        Reason::ArgumentDenied
    );
    // A claim value that is not one safe segment is never substituted.
    let climbing = compiled
        .policy
        .access(&identity(vec![("team".into(), vec!["ops/../finance".into()])]));
    let finance = args(json!({"path": "/data/teams/ops/../finance/x"}));
    assert_eq!(
        climbing
            .check_call_in(&catalog, "read_text_file", Some(&finance))
            .reason,
        Reason::ArgumentDenied
    );
    // A claim on an anonymous test identity is refused with its path.
    policies[0].spec.tests.last_mut().unwrap().identity =
        serde_json::from_value(json!({"anonymous": true, "claims": {"team": ["ops"]}})).unwrap();
    let refs: Vec<&palisade_crds::McpAccessPolicy> = policies.iter().collect();
    let problems = palisade_crds::compile(&server, &refs, &Default::default()).unwrap_err();
    assert_eq!(
        problems.to_string(),
        "McpAccessPolicy default/files-access: spec.tests[4].identity.claims: an anonymous identity has no claims"
    );
}
