//! The access-control matrices of the seeds, as tables over the evaluator, on the compiled samples.

mod support;

use palisade_crds::{Effect, Identity, IdentitySource, Reason};

fn visible(compiled: &palisade_crds::Compiled, identity: &Identity) -> Vec<String> {
    let access = compiled.policy.access(identity);
    access.visible_tools().map(|t| t.name.clone()).collect()
}

fn callable(compiled: &palisade_crds::Compiled, identity: &Identity) -> Vec<String> {
    let access = compiled.policy.access(identity);
    compiled
        .policy
        .tools()
        .iter()
        .filter(|t| access.check_tool(&t.name).effect.permits())
        .map(|t| t.name.clone())
        .collect()
}

/// Each row: token scopes, and the tools they must see and may call (both, in name order).
fn assert_matrix(compiled: &palisade_crds::Compiled, table: &[(&[&str], &[&str])]) {
    for &(scopes, expected) in table {
        let identity = Identity::with_scopes(scopes.iter().copied());
        assert_eq!(visible(compiled, &identity), expected, "visible with scopes {scopes:?}");
        assert_eq!(
            callable(compiled, &identity),
            expected,
            "callable with scopes {scopes:?}"
        );
    }
}

#[test]
fn seed_001_access_control_matrix() {
    let compiled = support::compiled_sample("company-info.yaml");
    let table: [(&[&str], &[&str]); 3] = [
        (&["public:read"], &["get_public_info"]),
        (
            &["public:read", "confidential:read"],
            &["get_confidential_info", "get_public_info"],
        ),
        (&[], &[]),
    ];
    assert_matrix(&compiled, &table);
}

#[test]
fn seed_001_denials_name_the_missing_scope() {
    let compiled = support::compiled_sample("company-info.yaml");
    let access = compiled.policy.access(&Identity::with_scopes(["public:read"]));
    let explanation = access.explain_tool("get_confidential_info");
    assert_eq!(explanation.decision.effect, Effect::Deny);
    assert_eq!(explanation.decision.reason, Reason::MissingScopes);
    assert_eq!(explanation.decision.rule.unwrap().match_, "get_confidential_info");
    assert_eq!(explanation.missing, ["confidential:read"]);
    assert_eq!(access.check_tool("no_such_tool").reason, Reason::UnknownTool);
    // Resources follow the collection: the public collection is readable, the confidential not.
    assert!(access.check_collection("public").effect.permits());
    assert!(!access.check_collection("confidential").effect.permits());
    assert_eq!(access.visible_collections().collect::<Vec<_>>(), ["public"]);
}

#[test]
fn seed_001_roles_grant_through_groups_with_wildcards() {
    let compiled = support::compiled_sample("company-info.yaml");
    let strategist = Identity {
        source: Some(IdentitySource::Issuer("palisade-dev".into())),
        subject: Some("dana".into()),
        groups: vec!["strategy-team".into()],
        ..Identity::default()
    };
    let access = compiled.policy.access(&strategist);
    assert_eq!(access.roles().collect::<Vec<_>>(), ["strategist"]);
    let explanation = access.explain_tool("get_public_info");
    assert_eq!(explanation.decision.effect, Effect::Allow);
    assert_eq!(
        explanation.granted,
        [("public:read", palisade_crds::evaluator::Grant::Role("strategist"))]
    );
}

#[test]
fn seed_002_scope_matrix() {
    let compiled = support::compiled_sample("sso-docs.yaml");
    let table: [(&[&str], &[&str]); 7] = [
        (&["checklist.list"], &["list_checklists"]),
        (&["checklist.read"], &["get_checklist"]),
        (&["process.read"], &["get_process"]),
        (&["process.search"], &["search_processes"]),
        (
            &["checklist.list", "checklist.read"],
            &["get_checklist", "list_checklists"],
        ),
        (
            &["checklist.list", "checklist.read", "process.read", "process.search"],
            &["get_checklist", "get_process", "list_checklists", "search_processes"],
        ),
        (&[], &[]),
    ];
    assert_matrix(&compiled, &table);
    // process.search alone may search but not read whole processes as resources.
    let access = compiled.policy.access(&Identity::with_scopes(["process.search"]));
    assert!(!access.check_collection("processes").effect.permits());
    let access = compiled.policy.access(&Identity::with_scopes(["process.read"]));
    assert!(access.check_collection("processes").effect.permits());
}

#[test]
fn every_sample_policy_test_passes() {
    for file in ["company-info.yaml", "sso-docs.yaml"] {
        let compiled = support::compiled_sample(file);
        assert!(!compiled.tests.is_empty(), "{file} has tests");
        let failed: Vec<_> = compiled.failed_tests().collect();
        assert!(failed.is_empty(), "{file}: {failed:#?}");
    }
}
