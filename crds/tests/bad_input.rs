//! Bad input, one mistake at a time: every mistake a person can make in an McpServer, an
//! McpAccessPolicy or a hand-written PolicyDocument is reported as the exact list of problems
//! (object, field path and message), never as a panic, and all of them in one pass.
//!
//! Each test starts from the valid `company-info` sample (namespace `default`) and changes one
//! thing.

mod support;

use std::panic::{AssertUnwindSafe, catch_unwind};

use palisade_crds::access_policy::{McpAccessPolicySpec, PolicyTestSpec, ToolRuleSpec};
use palisade_crds::document::{Binding, KeySource};
use palisade_crds::mcp_server::{DocumentCollection, IssuerSpec, JwtAlgorithm, ToolSpec};
use palisade_crds::policy_tests::TestOutcome;
use palisade_crds::{
    CompileOptions, Compiled, McpAccessPolicy, McpServer, McpServerSpec, Policy, PolicyDocument, Problem, Problems,
    compile,
};
use proptest::prelude::*;
use serde::de::DeserializeOwned;

const SERVER: &str = "McpServer default/company-info";
const POLICY: &str = "McpAccessPolicy default/company-info-access";
const EXTRA: &str = "McpAccessPolicy default/zz-extra";
const COMPILED: &str = "compiled policy of McpServer default/company-info";

const MALFORMED_WILDCARD: &str = "malformed wildcard: '*' must stand for a whole ':'-separated segment, e.g. 'docs:*'";
const LITERAL_ONLY: &str = "required scopes are literal; '*' is only allowed in the scopes a role grants";
const EMPTY_SCOPE: &str = "scope must not be empty";
const SCOPE_WITH_SPACE: &str =
    "scope contains ' '; scopes are printable ASCII without spaces, '\"' or '\\' (RFC 6749 section 3.3)";
const NO_ASSERTION: &str = "a test must assert something: set visibleTools, allowed or denied (or allowedPrompts, deniedPrompts, allowedResources, deniedResources, allowedCalls, deniedCalls)";
const EMPTY_BINDING: &str =
    "a binding must name at least one subject, group or service account, or set anonymous: true";

fn tool_name_contains(c: char) -> String {
    format!("tool name contains {c:?}; allowed are A-Z, a-z, 0-9, '_', '-' and '.' ('*' only in a match pattern)")
}

fn problem(object: &str, path: &str, message: impl Into<String>) -> Problem {
    Problem::new(Some(object), path, message)
}

fn document_problem(path: &str, message: impl Into<String>) -> Problem {
    Problem::new(None, path, message)
}

fn yaml<T: DeserializeOwned>(text: &str) -> T {
    yaml_serde::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn sample() -> (McpServer, Vec<McpAccessPolicy>) {
    support::sample("company-info.yaml")
}

fn try_compile(server: &McpServer, policies: &[McpAccessPolicy]) -> Result<Compiled, Problems> {
    let refs: Vec<&McpAccessPolicy> = policies.iter().collect();
    compile(server, &refs, &CompileOptions::default())
}

/// The problems of a compile that must fail.
fn problems(server: &McpServer, policies: &[McpAccessPolicy]) -> Vec<Problem> {
    match try_compile(server, policies) {
        Ok(compiled) => panic!("expected problems, but compiled to {}", compiled.policy.hash()),
        Err(Problems(list)) => list,
    }
}

/// The problems after changing the sample's policy.
fn policy_problems(edit: impl FnOnce(&mut McpAccessPolicySpec)) -> Vec<Problem> {
    let (server, mut policies) = sample();
    edit(&mut policies[0].spec);
    problems(&server, &policies)
}

/// The problems after changing the sample's server.
fn server_problems(edit: impl FnOnce(&mut McpServerSpec)) -> Vec<Problem> {
    let (mut server, policies) = sample();
    edit(&mut server.spec);
    problems(&server, &policies)
}

/// A second policy, `default/zz-extra`, that sorts after the sample's.
fn extra_policy(spec: &str) -> McpAccessPolicy {
    let mut policy = McpAccessPolicy::new("zz-extra", yaml(spec));
    policy.metadata.namespace = Some("default".into());
    policy
}

// ---------------------------------------------------------------------------------------------
// McpAccessPolicy
// ---------------------------------------------------------------------------------------------

#[test]
fn binding_to_an_unknown_role() {
    let found = policy_problems(|spec| spec.bindings[0].role = "contractor".into());
    assert_eq!(
        found,
        [problem(
            POLICY,
            "spec.bindings[0].role",
            "role \"contractor\" is not defined in spec.roles"
        )]
    );
}

#[test]
fn exact_rule_for_a_tool_the_server_does_not_have() {
    let found = policy_problems(|spec| spec.tools[1].match_ = "get_secret_info".into());
    assert_eq!(
        found,
        [problem(
            POLICY,
            "spec.tools[1].match",
            format!("{SERVER} has no tool \"get_secret_info\"")
        )]
    );
}

#[test]
fn a_glob_matching_no_tool_is_only_a_warning() {
    let (server, mut policies) = sample();
    policies[0]
        .spec
        .tools
        .push(yaml("{match: list_*, requiredScopes: [public:read]}"));
    let compiled = try_compile(&server, &policies).unwrap();
    assert_eq!(
        compiled.warnings,
        [problem(
            POLICY,
            "spec.tools[2].match",
            format!("\"list_*\" matches no tool of {SERVER}")
        )]
    );
}

#[test]
fn duplicate_role_names() {
    let found = policy_problems(|spec| spec.roles.push(yaml("{name: employee, scopes: [public:read]}")));
    assert_eq!(
        found,
        [problem(POLICY, "spec.roles[2].name", "duplicate role \"employee\"")]
    );
}

#[test]
fn duplicate_role_names_with_other_scopes_are_reported_once() {
    let found = policy_problems(|spec| spec.roles.push(yaml("{name: employee, scopes: [confidential:read]}")));
    assert_eq!(
        found,
        [problem(POLICY, "spec.roles[2].name", "duplicate role \"employee\"")]
    );
}

#[test]
fn duplicate_tool_rules() {
    let found = policy_problems(|spec| {
        spec.tools
            .push(yaml("{match: get_public_info, requiredScopes: [public:read]}"))
    });
    assert_eq!(
        found,
        [problem(
            POLICY,
            "spec.tools[2].match",
            "duplicate rule for \"get_public_info\": another rule states the same scopes and arguments"
        )]
    );
}

#[test]
fn a_second_rule_for_a_tool_with_other_scopes_is_an_alternative() {
    let (server, mut policies) = sample();
    policies[0]
        .spec
        .tools
        .push(yaml("{match: get_public_info, requiredScopes: [admin]}"));
    let compiled = try_compile(&server, &policies).unwrap_or_else(|e| panic!("{e}"));
    let access = compiled.policy.access(&palisade_crds::Identity::with_scopes(["admin"]));
    assert!(access.check_tool("get_public_info").effect.permits());
}

#[test]
fn duplicate_test_names() {
    let found = policy_problems(|spec| spec.tests[3].name = spec.tests[1].name.clone());
    assert_eq!(
        found,
        [problem(
            POLICY,
            "spec.tests[3].name",
            "duplicate test \"a token with both scopes sees both tools\""
        )]
    );
}

#[test]
fn malformed_wildcards_in_role_scopes() {
    let found = policy_problems(|spec| {
        spec.roles[1].scopes = ["doc*:read", "public:*", "docs:re*", "docs:**", "*:read", "*"]
            .map(String::from)
            .into();
    });
    assert_eq!(
        found,
        [
            problem(POLICY, "spec.roles[1].scopes[0]", MALFORMED_WILDCARD),
            problem(POLICY, "spec.roles[1].scopes[2]", MALFORMED_WILDCARD),
            problem(POLICY, "spec.roles[1].scopes[3]", MALFORMED_WILDCARD),
        ]
    );
}

#[test]
fn wildcards_in_required_scopes() {
    let found = policy_problems(|spec| {
        spec.tools[0].required_scopes = ["public:read", "public:*"].map(String::from).into();
        spec.tools[1].required_scopes = vec!["*".into()];
    });
    assert_eq!(
        found,
        [
            problem(POLICY, "spec.tools[0].requiredScopes[1]", LITERAL_ONLY),
            problem(POLICY, "spec.tools[1].requiredScopes[0]", LITERAL_ONLY),
        ]
    );
}

#[test]
fn empty_scopes_and_scopes_with_a_space() {
    let found = policy_problems(|spec| {
        spec.roles[0].scopes = ["", "public read"].map(String::from).into();
        spec.tools[0].required_scopes = ["public read", ""].map(String::from).into();
        spec.tests[0].identity.scopes = vec!["public read".into()];
    });
    assert_eq!(
        found,
        [
            problem(POLICY, "spec.roles[0].scopes[0]", EMPTY_SCOPE),
            problem(POLICY, "spec.roles[0].scopes[1]", SCOPE_WITH_SPACE),
            problem(POLICY, "spec.tools[0].requiredScopes[0]", SCOPE_WITH_SPACE),
            problem(POLICY, "spec.tools[0].requiredScopes[1]", EMPTY_SCOPE),
            problem(POLICY, "spec.tests[0].identity.scopes[0]", SCOPE_WITH_SPACE),
        ]
    );
}

#[test]
fn invalid_tool_name_patterns() {
    let found = policy_problems(|spec| {
        spec.tools[0].match_ = "get info".into();
        spec.tools[1].match_ = "../x".into();
        spec.tools.push(yaml("{match: '', requiredScopes: []}"));
    });
    assert_eq!(
        found,
        [
            problem(POLICY, "spec.tools[0].match", tool_name_contains(' ')),
            problem(POLICY, "spec.tools[1].match", tool_name_contains('/')),
            problem(POLICY, "spec.tools[2].match", "tool name must not be empty"),
        ]
    );
}

#[test]
fn binding_without_anyone() {
    let found = policy_problems(|spec| {
        spec.bindings[1].groups.clear();
        spec.bindings[1].issuer = None;
    });
    assert_eq!(found, [problem(POLICY, "spec.bindings[1]", EMPTY_BINDING)]);
}

#[test]
fn bindings_must_not_bind_unauthenticated_callers_by_name() {
    let found = policy_problems(|spec| {
        spec.bindings[0].subjects = ["alice", "*", "system:anonymous"].map(String::from).into();
        spec.bindings[1].groups = ["strategy-team", "system:unauthenticated", "*"]
            .map(String::from)
            .into();
    });
    let subject = "bind unauthenticated callers with anonymous: true, never with a wildcard or system:anonymous";
    let group = "bind unauthenticated callers with anonymous: true, never with a wildcard or system:unauthenticated";
    assert_eq!(
        found,
        [
            problem(POLICY, "spec.bindings[0].subjects[1]", subject),
            problem(POLICY, "spec.bindings[0].subjects[2]", subject),
            problem(POLICY, "spec.bindings[1].groups[1]", group),
            problem(POLICY, "spec.bindings[1].groups[2]", group),
        ]
    );
}

#[test]
fn test_cases_naming_unknown_tools() {
    let found = policy_problems(|spec| {
        let test = &mut spec.tests[0];
        test.visible_tools.as_mut().unwrap().push("list_docs".into());
        test.allowed.push("get_private_info".into());
        test.denied.insert(0, "delete_everything".into());
    });
    assert_eq!(
        found,
        [
            problem(
                POLICY,
                "spec.tests[0].visibleTools[1]",
                format!("{SERVER} has no tool \"list_docs\"")
            ),
            problem(
                POLICY,
                "spec.tests[0].allowed[1]",
                format!("{SERVER} has no tool \"get_private_info\"")
            ),
            problem(
                POLICY,
                "spec.tests[0].denied[0]",
                format!("{SERVER} has no tool \"delete_everything\"")
            ),
        ]
    );
}

#[test]
fn a_tool_both_allowed_and_denied() {
    let found = policy_problems(|spec| spec.tests[4].denied.push("get_public_info".into()));
    assert_eq!(
        found,
        [problem(
            POLICY,
            "spec.tests[4].allowed[0]",
            "tool \"get_public_info\" is listed as both allowed and denied"
        )]
    );
}

#[test]
fn a_test_asserting_nothing() {
    let found = policy_problems(|spec| {
        spec.tests[1].visible_tools = None;
        // An empty visibleTools is an assertion: "sees nothing".
        spec.tests[2].denied.clear();
    });
    assert_eq!(found, [problem(POLICY, "spec.tests[1]", NO_ASSERTION)]);
}

#[test]
fn an_anonymous_test_identity_with_credentials() {
    let found = policy_problems(|spec| {
        spec.tests.push(yaml(
            "{name: anonymous with a scope, identity: {anonymous: true, subject: alice, scopes: [public:read]}, visibleTools: []}",
        ))
    });
    assert_eq!(
        found,
        [problem(
            POLICY,
            "spec.tests[5].identity",
            "an anonymous identity has no subject, scopes, roles, groups or service account"
        )]
    );
}

// ---------------------------------------------------------------------------------------------
// McpServer
// ---------------------------------------------------------------------------------------------

#[test]
fn duplicate_collection() {
    let found = server_problems(|spec| {
        spec.documents
            .push(yaml("{collection: public, configMapRef: {name: more-public-docs}}"));
    });
    assert_eq!(
        found,
        [problem(
            SERVER,
            "spec.documents[2].collection",
            "duplicate collection \"public\""
        )]
    );
}

#[test]
fn collection_name_is_not_a_dns_label() {
    let found = server_problems(|spec| {
        spec.documents[0].collection = "Public_Docs".into();
        spec.tools[0].collection = "Public_Docs".into();
        spec.documents[1].collection = "c".repeat(51);
        spec.tools[1].collection = "c".repeat(51);
    });
    let long = "c".repeat(51);
    assert_eq!(
        found,
        [
            problem(
                SERVER,
                "spec.documents[0].collection",
                "\"Public_Docs\" is not a DNS label of at most 50 characters"
            ),
            problem(
                SERVER,
                "spec.documents[1].collection",
                format!("{long:?} is not a DNS label of at most 50 characters")
            ),
        ]
    );
}

#[test]
fn tool_serving_an_undeclared_collection() {
    let found = server_problems(|spec| spec.tools[1].collection = "strategy".into());
    assert_eq!(
        found,
        [problem(
            SERVER,
            "spec.tools[1].collection",
            "collection \"strategy\" is not listed in spec.documents"
        )]
    );
}

#[test]
fn duplicate_tool_names() {
    let found = server_problems(|spec| {
        let mut tool = spec.tools[0].clone();
        tool.action = palisade_crds::mcp_server::ToolAction::Search;
        spec.tools.push(tool);
    });
    assert_eq!(
        found,
        [problem(
            SERVER,
            "spec.tools[2].name",
            "duplicate tool \"get_public_info\""
        )]
    );
}

#[test]
fn invalid_tool_names() {
    let found = server_problems(|spec| {
        let tool: ToolSpec = yaml("{name: 'get info', collection: public, action: get}");
        spec.tools.push(tool);
        spec.tools
            .push(yaml("{name: 'get_*', collection: public, action: get}"));
        spec.tools.push(yaml("{name: '', collection: public, action: get}"));
    });
    assert_eq!(
        found,
        [
            problem(SERVER, "spec.tools[2].name", tool_name_contains(' ')),
            problem(SERVER, "spec.tools[3].name", tool_name_contains('*')),
            problem(SERVER, "spec.tools[4].name", "tool name must not be empty"),
        ]
    );
}

#[test]
fn document_source_must_be_exactly_one_of_config_map_and_inline() {
    let found = server_problems(|spec| {
        spec.documents[0].inline = Some(vec![yaml("{name: public.md, content: hello}")]);
        spec.documents[1].config_map_ref = None;
    });
    let message = "set exactly one of configMapRef or inline";
    assert_eq!(
        found,
        [
            problem(SERVER, "spec.documents[0]", message),
            problem(SERVER, "spec.documents[1]", message)
        ]
    );
}

#[test]
fn duplicate_inline_documents() {
    let found = server_problems(|spec| {
        let collection: DocumentCollection = yaml(
            "{collection: public, inline: [{name: a.md, content: x}, {name: b.md, content: y}, {name: a.md, content: z}]}",
        );
        spec.documents[0] = collection;
    });
    assert_eq!(
        found,
        [problem(
            SERVER,
            "spec.documents[0].inline[2].name",
            "duplicate document \"a.md\""
        )]
    );
}

#[test]
fn duplicate_issuers() {
    let found = server_problems(|spec| {
        spec.auth.issuers.push(yaml(
            "{issuer: palisade-dev, jwksUri: https://dev.example.com/jwks.json}",
        ));
    });
    assert_eq!(
        found,
        [problem(
            SERVER,
            "spec.auth.issuers[2].issuer",
            "duplicate issuer \"palisade-dev\""
        )]
    );
}

#[test]
fn jwks_uri_and_hmac_key_both_set() {
    let found = server_problems(|spec| {
        spec.auth.issuers[1].jwks_uri = Some("https://dev.example.com/jwks.json".into());
    });
    assert_eq!(
        found,
        [problem(
            SERVER,
            "spec.auth.issuers[1]",
            "jwksUri and hmacKey are mutually exclusive"
        )]
    );
}

#[test]
fn hmac_algorithm_on_an_oidc_issuer() {
    let found = server_problems(|spec| spec.auth.issuers[0].algorithms = vec![JwtAlgorithm::HS256]);
    assert_eq!(
        found,
        [problem(
            SERVER,
            "spec.auth.issuers[0].algorithms",
            "a JWKS or OIDC issuer never accepts HS256 (its public keys would become HMAC secrets)"
        )]
    );
}

#[test]
fn issuer_problems_name_the_spec_path() {
    let found = server_problems(|spec| {
        // palisade-dev first: the compiled document sorts it after https://accounts.google.com.
        spec.auth.issuers.reverse();
        spec.auth.issuers[0].algorithms = vec![JwtAlgorithm::RS256];
    });
    assert_eq!(
        found,
        [problem(
            SERVER,
            "spec.auth.issuers[0].algorithms",
            "an hmacKey issuer accepts only HS256, HS384 or HS512, not RS256"
        )]
    );
}

#[test]
fn jwks_uri_is_not_a_url() {
    let found = server_problems(|spec| spec.auth.issuers[0].jwks_uri = Some("idp.example.com/jwks".into()));
    assert_eq!(
        found,
        [problem(
            SERVER,
            "spec.auth.issuers[0].jwksUri",
            "jwksUri must be an absolute http(s) URL"
        )]
    );
}

// ---------------------------------------------------------------------------------------------
// Many problems, many policies
// ---------------------------------------------------------------------------------------------

#[test]
fn every_problem_is_reported_in_one_pass() {
    let (mut server, mut policies) = sample();
    server
        .spec
        .tools
        .push(yaml("{name: 'get info', collection: press, action: get}"));
    let spec = &mut policies[0].spec;
    spec.roles[0].scopes.push("doc*:read".into());
    spec.tools[1].match_ = "get_secret_info".into();
    spec.bindings[1].role = "boss".into();
    spec.tests[3].allowed.push("get_secret".into());
    let found = problems(&server, &policies);
    assert_eq!(
        found,
        [
            problem(SERVER, "spec.tools[2].name", tool_name_contains(' ')),
            problem(
                SERVER,
                "spec.tools[2].collection",
                "collection \"press\" is not listed in spec.documents"
            ),
            problem(POLICY, "spec.roles[0].scopes[1]", MALFORMED_WILDCARD),
            problem(
                POLICY,
                "spec.tools[1].match",
                format!("{SERVER} has no tool \"get_secret_info\"")
            ),
            problem(
                POLICY,
                "spec.bindings[1].role",
                "role \"boss\" is not defined in spec.roles"
            ),
            problem(
                POLICY,
                "spec.tests[3].allowed[0]",
                format!("{SERVER} has no tool \"get_secret\"")
            ),
        ]
    );
    let display = Problems(found[2..3].to_vec()).to_string();
    assert_eq!(
        display,
        format!("{POLICY}: spec.roles[0].scopes[1]: {MALFORMED_WILDCARD}"),
        "Display is <object>: <path>: <message>"
    );
    assert_eq!(
        Problems(found[4..].to_vec()).to_string(),
        format!(
            "{POLICY}: spec.bindings[1].role: role \"boss\" is not defined in spec.roles; \
             {POLICY}: spec.tests[3].allowed[0]: {SERVER} has no tool \"get_secret\""
        )
    );
}

#[test]
fn two_policies_defining_a_role_differently() {
    let (server, mut policies) = sample();
    policies.push(extra_policy(
        "{targetRefs: [{name: company-info}], roles: [{name: employee, scopes: [public:read, confidential:read]}]}",
    ));
    let expected = [problem(
        EXTRA,
        "spec.roles[0]",
        format!(
            "role \"employee\" is also defined by {POLICY} spec.roles[0] with other scopes; a role must mean one thing on a server"
        ),
    )];
    assert_eq!(problems(&server, &policies), expected);
    // The same whatever order the policies come in.
    policies.reverse();
    assert_eq!(problems(&server, &policies), expected);
}

#[test]
fn two_policies_stating_a_rule_differently_state_alternatives() {
    let (server, mut policies) = sample();
    policies.push(extra_policy(
        "{targetRefs: [{name: company-info}], tools: [{match: get_public_info, requiredScopes: [admin]}]}",
    ));
    let compiled = try_compile(&server, &policies).unwrap_or_else(|e| panic!("{e}"));
    let rules: Vec<_> = compiled
        .policy
        .document()
        .rules
        .iter()
        .filter(|r| r.match_ == "get_public_info")
        .map(|r| (r.required_scopes.clone(), r.sources.clone()))
        .collect();
    assert_eq!(
        rules,
        [
            (vec!["admin".to_owned()], vec!["default/zz-extra".to_owned()]),
            (
                vec!["public:read".to_owned()],
                vec!["default/company-info-access".to_owned()]
            ),
        ]
    );
    // Either rule allows: the order of the policies does not matter.
    for scopes in [["admin"], ["public:read"]] {
        let access = compiled.policy.access(&palisade_crds::Identity::with_scopes(scopes));
        assert!(access.check_tool("get_public_info").effect.permits(), "{scopes:?}");
    }
    policies.reverse();
    let reversed = try_compile(&server, &policies).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(reversed.policy.hash(), compiled.policy.hash());
}

#[test]
fn an_audit_alternative_never_turns_an_enforced_denial_into_a_would_deny() {
    let (server, mut policies) = sample();
    policies.push(extra_policy(
        "{targetRefs: [{name: company-info}], mode: Audit, tools: [{match: get_confidential_info, requiredScopes: [confidential:read]}]}",
    ));
    let compiled = try_compile(&server, &policies).unwrap_or_else(|e| panic!("{e}"));
    let access = compiled
        .policy
        .access(&palisade_crds::Identity::with_scopes(["public:read"]));
    assert_eq!(
        access.check_tool("get_confidential_info").effect,
        palisade_crds::Effect::Deny
    );
}

#[test]
fn identical_definitions_in_two_policies_merge() {
    let (server, mut policies) = sample();
    policies.push(extra_policy(
        "{targetRefs: [{name: company-info}], \
          roles: [{name: employee, scopes: [public:read, public:read]}], \
          tools: [{match: get_public_info, requiredScopes: [public:read]}], \
          bindings: [{role: employee, issuer: palisade-dev, subjects: [zoe]}]}",
    ));
    let compiled = try_compile(&server, &policies).unwrap_or_else(|e| panic!("{e}"));
    let document = compiled.policy.document();
    let both = ["default/company-info-access", "default/zz-extra"];
    assert_eq!(document.metadata.policies, both);
    let employee = document.roles.iter().find(|r| r.name == "employee").unwrap();
    assert_eq!(employee.scopes, ["public:read"]);
    assert_eq!(employee.sources, both);
    let rule = document.rules.iter().find(|r| r.match_ == "get_public_info").unwrap();
    assert_eq!(rule.sources, both);
    assert_eq!(document.bindings.len(), 3, "bindings add up");
    assert_eq!(compiled.failed_tests().count(), 0);
}

// ---------------------------------------------------------------------------------------------
// Ambiguous rules
// ---------------------------------------------------------------------------------------------

/// The sample with its exact rules replaced by two globs of four literal characters each that
/// both match both tools, with different scopes.
fn ambiguous_globs() -> (McpServer, Vec<McpAccessPolicy>) {
    let (server, mut policies) = sample();
    policies[0].spec.tools = vec![
        yaml("{match: get_*, requiredScopes: [public:read]}"),
        yaml("{match: '*info', requiredScopes: [confidential:read]}"),
    ];
    (server, policies)
}

fn ambiguity(tool: &str) -> String {
    format!(
        "tool {tool:?} is matched equally specifically by rules \"*info\" and \"get_*\", which require different scopes, modes or arguments; add a rule for the exact name"
    )
}

#[test]
fn equally_specific_globs_with_different_scopes_are_rejected() {
    let (server, policies) = ambiguous_globs();
    // Paths of the tools as the McpServer lists them (get_public_info first).
    assert_eq!(
        problems(&server, &policies),
        [
            problem(COMPILED, "tools[1]", ambiguity("get_confidential_info")),
            problem(COMPILED, "tools[0]", ambiguity("get_public_info")),
        ]
    );
}

#[test]
fn equally_specific_globs_with_the_same_scopes_agree() {
    let (server, mut policies) = ambiguous_globs();
    policies[0].spec.tools[1].required_scopes = vec!["public:read".into()];
    let compiled = try_compile(&server, &policies).unwrap_or_else(|e| panic!("{e}"));
    let access = compiled
        .policy
        .access(&palisade_crds::Identity::with_scopes(["public:read"]));
    assert_eq!(access.visible_tools().count(), 2);
}

/// `*_info` has five literal characters, `get_*` four: not a tie, the longer one decides.
#[test]
fn a_glob_with_more_literal_characters_is_not_ambiguous() {
    let (server, mut policies) = ambiguous_globs();
    policies[0].spec.tools[1].match_ = "*_info".into();
    let compiled = try_compile(&server, &policies).unwrap_or_else(|e| panic!("{e}"));
    let access = compiled
        .policy
        .access(&palisade_crds::Identity::with_scopes(["public:read"]));
    let decision = access.check_tool("get_public_info");
    assert_eq!(decision.rule.unwrap().match_, "*_info");
    assert!(!decision.effect.permits());
}

#[test]
fn an_exact_rule_resolves_the_ambiguity() {
    let (server, mut policies) = ambiguous_globs();
    let exact: ToolRuleSpec = yaml("{match: get_confidential_info, requiredScopes: [confidential:read]}");
    policies[0].spec.tools.push(exact);
    // Only the tool without an exact rule is still ambiguous.
    assert_eq!(
        problems(&server, &policies),
        [problem(COMPILED, "tools[0]", ambiguity("get_public_info"))]
    );
    // With exact rules for both, the globs govern nothing and the sample's own tests pass.
    policies[0]
        .spec
        .tools
        .push(yaml("{match: get_public_info, requiredScopes: [public:read]}"));
    let compiled = try_compile(&server, &policies).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(compiled.failed_tests().count(), 0);
}

#[test]
fn a_more_specific_glob_resolves_the_ambiguity() {
    let (server, mut policies) = ambiguous_globs();
    policies[0]
        .spec
        .tools
        .push(yaml("{match: get_confidential_*, requiredScopes: [confidential:read]}"));
    assert_eq!(
        problems(&server, &policies),
        [problem(COMPILED, "tools[0]", ambiguity("get_public_info"))]
    );
}

// ---------------------------------------------------------------------------------------------
// A policy's own test cases
// ---------------------------------------------------------------------------------------------

#[test]
fn a_failing_policy_test_is_reported_by_name() {
    let (server, mut policies) = sample();
    let failing: PolicyTestSpec = yaml(
        "{name: a public token sees strategy, identity: {issuer: palisade-dev, subject: mallory, scopes: [public:read]}, \
          visibleTools: [get_public_info, get_confidential_info]}",
    );
    policies[0].spec.tests.push(failing);
    let compiled = try_compile(&server, &policies).unwrap_or_else(|e| panic!("{e}"));
    let failed: Vec<&TestOutcome> = compiled.failed_tests().collect();
    assert_eq!(
        failed,
        [&TestOutcome {
            policy: "default/company-info-access".into(),
            name: "a public token sees strategy".into(),
            failures: vec!["does not see get_confidential_info (missing scopes: confidential:read)".into()],
        }]
    );
    let passed: Vec<&str> = compiled
        .tests
        .iter()
        .filter(|t| t.passed())
        .map(|t| t.name.as_str())
        .collect();
    assert_eq!(
        passed,
        [
            "a public token sees only public information",
            "a token with both scopes sees both tools",
            "a token without scopes sees nothing",
            "the strategy team reads strategy through its group",
            "employees do not read strategy",
        ]
    );
    assert_eq!(compiled.tests.len(), 6);
}

#[test]
fn failing_allowed_and_denied_assertions_explain_themselves() {
    let (server, mut policies) = sample();
    policies[0].spec.tests.push(yaml(
        "{name: wrong expectations, identity: {issuer: palisade-dev, subject: erin, groups: [employees], roles: [ghost]}, \
          allowed: [get_confidential_info], denied: [get_public_info]}",
    ));
    let compiled = try_compile(&server, &policies).unwrap_or_else(|e| panic!("{e}"));
    let failed: Vec<&TestOutcome> = compiled.failed_tests().collect();
    assert_eq!(
        failed,
        [&TestOutcome {
            policy: "default/company-info-access".into(),
            name: "wrong expectations".into(),
            failures: vec![
                "identity role \"ghost\" is not defined by any policy of this server".into(),
                "call to get_confidential_info is denied (missing scopes: confidential:read)".into(),
                "call to get_public_info is allowed (rule \"get_public_info\"; public:read from role employee)".into(),
            ],
        }]
    );
}

// ---------------------------------------------------------------------------------------------
// Hand-written PolicyDocument
// ---------------------------------------------------------------------------------------------

const DOCUMENT: &str = r#"
apiVersion: palisade.dev/v1alpha1
kind: PolicyDocument
authentication:
  resource: https://docs.example.com/mcp
  issuers:
    - issuer: https://idp.example.com
      audiences: [https://docs.example.com/mcp]
      algorithms: [RS256]
      keys: {jwksUri: https://idp.example.com/jwks.json}
    - issuer: palisade-dev
      audiences: [https://docs.example.com/mcp]
      algorithms: [HS256]
      keys: {hmacKeyFile: /etc/palisade/secrets/jwt/hmac-key}
collections:
  - name: public
tools:
  - name: get_public_info
    collection: public
    action: readAll
rules:
  - match: get_public_info
    requiredScopes: [public:read]
roles:
  - name: employee
    scopes: [public:read]
bindings:
  - role: employee
    groups: [employees]
    from: {issuer: palisade-dev}
"#;

fn document() -> PolicyDocument {
    PolicyDocument::from_yaml(DOCUMENT).unwrap_or_else(|e| panic!("{e}"))
}

/// The problems of a document that must be rejected.
fn document_problems(edit: impl FnOnce(&mut PolicyDocument)) -> Vec<Problem> {
    let mut document = document();
    edit(&mut document);
    match Policy::new(document) {
        Ok(policy) => panic!("expected problems, but prepared {}", policy.hash()),
        Err(Problems(list)) => list,
    }
}

#[test]
fn the_hand_written_document_is_valid() {
    let policy = Policy::new(document()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(policy.tools().len(), 1);
}

#[test]
fn wrong_api_version_or_kind_is_refused_when_read() {
    let text = DOCUMENT.replace("palisade.dev/v1alpha1", "palisade.dev/v1");
    assert_eq!(
        PolicyDocument::from_yaml(&text).unwrap_err().to_string(),
        "expected apiVersion palisade.dev/v1alpha1 and kind PolicyDocument, found palisade.dev/v1 PolicyDocument"
    );
    let text = DOCUMENT.replace("kind: PolicyDocument", "kind: ConfigMap");
    assert_eq!(
        PolicyDocument::from_yaml(&text).unwrap_err().to_string(),
        "expected apiVersion palisade.dev/v1alpha1 and kind PolicyDocument, found palisade.dev/v1alpha1 ConfigMap"
    );
}

#[test]
fn wrong_api_version_is_refused_by_policy_new() {
    let found = document_problems(|d| d.api_version = "palisade.dev/v1".into());
    assert_eq!(
        found,
        [document_problem(
            "apiVersion",
            "expected \"palisade.dev/v1alpha1\", found \"palisade.dev/v1\""
        )]
    );
}

#[test]
fn wrong_kind_is_refused_by_policy_new_at_kind() {
    let found = document_problems(|d| d.kind = "Policy".into());
    assert_eq!(
        found,
        [document_problem(
            "kind",
            "expected \"PolicyDocument\", found \"Policy\""
        )]
    );
}

#[test]
fn unknown_fields_are_refused() {
    let text = DOCUMENT.replace("kind: PolicyDocument\n", "kind: PolicyDocument\nrole: []\n");
    assert_eq!(
        PolicyDocument::from_yaml(&text).unwrap_err().to_string(),
        "policy document is not valid: unknown field `role`, expected one of `apiVersion`, `kind`, `metadata`, \
         `mode`, `authentication`, `collections`, `tools`, `rules`, `roles`, `bindings`, `scopeImplications`, `upstream` at line 4 column 1"
    );
    let text = DOCUMENT.replace("    requiredScopes: [public:read]", "    requiredScope: [public:read]");
    assert_eq!(
        PolicyDocument::from_yaml(&text).unwrap_err().to_string(),
        "policy document is not valid: rules[0]: unknown field `requiredScope`, expected one of `kind`, `match`, \
         `requiredScopes`, `mode`, `arguments`, `sources` at line 23 column 5"
    );
}

#[test]
fn hmac_algorithm_on_a_jwks_issuer() {
    let found = document_problems(|d| d.authentication.issuers[0].algorithms.push(JwtAlgorithm::HS256));
    assert_eq!(
        found,
        [document_problem(
            "authentication.issuers[0].algorithms",
            "a JWKS or OIDC issuer never accepts HS256 (its public keys would become HMAC secrets)"
        )]
    );
}

#[test]
fn rsa_algorithm_on_an_hmac_issuer() {
    let found = document_problems(|d| d.authentication.issuers[1].algorithms = vec![JwtAlgorithm::RS256]);
    assert_eq!(
        found,
        [document_problem(
            "authentication.issuers[1].algorithms",
            "an HMAC issuer accepts only HS256, HS384 or HS512, not RS256"
        )]
    );
}

#[test]
fn oidc_discovery_needs_a_url_issuer() {
    let found = document_problems(|d| {
        let issuer = &mut d.authentication.issuers[1];
        issuer.keys = KeySource::OidcDiscovery;
        issuer.algorithms = vec![JwtAlgorithm::ES256];
    });
    assert_eq!(
        found,
        [document_problem(
            "authentication.issuers[1].issuer",
            "OIDC discovery needs the issuer to be an http(s) URL; set jwksUri or an HMAC key file instead"
        )]
    );
}

#[test]
fn resource_is_not_a_url() {
    let message = "resource must be an absolute http(s) URI without a fragment (RFC 8707 section 2)";
    for resource in [
        "docs.example.com/mcp",
        "ftp://docs.example.com/mcp",
        "https://docs.example.com/mcp#top",
    ] {
        let found = document_problems(|d| d.authentication.resource = resource.into());
        assert_eq!(
            found,
            [document_problem("authentication.resource", message)],
            "{resource}"
        );
    }
}

#[test]
fn no_way_to_authenticate() {
    // (Without the bindings, whose issuer would be gone too.)
    let found = document_problems(|d| {
        d.authentication.issuers.clear();
        d.bindings.clear();
    });
    assert_eq!(
        found,
        [document_problem(
            "authentication",
            "configure at least one issuer or an API-key table, or set allowAnonymous: true explicitly"
        )]
    );
    let mut anonymous = document();
    anonymous.authentication.issuers.clear();
    anonymous.authentication.allow_anonymous = true;
    anonymous.bindings.clear();
    assert!(Policy::new(anonymous).is_ok());
}

#[test]
fn issuer_without_audiences_or_algorithms() {
    let found = document_problems(|d| {
        d.authentication.issuers[0].audiences.clear();
        d.authentication.issuers[0].algorithms.clear();
    });
    assert_eq!(
        found,
        [
            document_problem(
                "authentication.issuers[0].audiences",
                "at least one audience is required"
            ),
            document_problem(
                "authentication.issuers[0].algorithms",
                "at least one algorithm is required"
            ),
        ]
    );
}

#[test]
fn binding_to_an_undefined_role() {
    let found = document_problems(|d| d.bindings[0].role = "contractor".into());
    assert_eq!(
        found,
        [document_problem(
            "bindings[0].role",
            "role \"contractor\" is not defined in roles"
        )]
    );
}

#[test]
fn bad_service_account_form() {
    let found = document_problems(|d| {
        d.bindings[0].service_accounts = ["builder", "/builder", "ci/"].map(String::from).into();
    });
    // Paths of the document as written.
    assert_eq!(
        found,
        [
            document_problem(
                "bindings[0].serviceAccounts[0]",
                "\"builder\" is not of the form namespace/name"
            ),
            document_problem(
                "bindings[0].serviceAccounts[1]",
                "\"/builder\" is not of the form namespace/name"
            ),
            document_problem(
                "bindings[0].serviceAccounts[2]",
                "\"ci/\" is not of the form namespace/name"
            ),
        ]
    );
}

#[test]
fn service_account_with_two_slashes() {
    let found = document_problems(|d| d.bindings[0].service_accounts = vec!["ci/builder/extra".into()]);
    assert_eq!(
        found,
        [document_problem(
            "bindings[0].serviceAccounts[0]",
            "\"ci/builder/extra\" is not of the form namespace/name"
        )]
    );
}

#[test]
fn binding_without_anyone_in_a_document() {
    let found = document_problems(|d| {
        d.bindings[0] = Binding {
            role: "employee".into(),
            subjects: vec![],
            groups: vec![],
            service_accounts: vec![],
            anonymous: false,
            source: None,
            from: None,
        }
    });
    assert_eq!(found, [document_problem("bindings[0]", EMPTY_BINDING)]);
}

#[test]
fn tool_collection_undefined() {
    let found = document_problems(|d| d.tools[0].collection = "private".into());
    assert_eq!(
        found,
        [document_problem(
            "tools[0].collection",
            "tool \"get_public_info\" serves collection \"private\", which is not defined"
        )]
    );
}

#[test]
fn document_rules_and_roles_are_checked() {
    let found = document_problems(|d| {
        d.rules[0].required_scopes.insert(0, "public:*".into());
        d.roles[0].scopes.insert(0, "pub*:read".into());
        d.collections.push(yaml("{name: Public}"));
    });
    assert_eq!(
        found,
        [
            document_problem(
                "collections[1].name",
                "\"Public\" is not a DNS label (lower-case letters, digits and '-', at most 63)"
            ),
            document_problem("rules[0].requiredScopes[0]", LITERAL_ONLY),
            document_problem("roles[0].scopes[0]", MALFORMED_WILDCARD),
        ]
    );
}

#[test]
fn document_paths_follow_the_document_as_written() {
    let found = document_problems(|d| {
        d.roles
            .push(yaml("{name: auditor, scopes: [public:read, audit*:read]}"));
        d.authentication.issuers.reverse();
        d.authentication.issuers[0].algorithms = vec![JwtAlgorithm::RS256];
    });
    assert_eq!(
        found,
        [
            document_problem(
                "authentication.issuers[0].algorithms",
                "an HMAC issuer accepts only HS256, HS384 or HS512, not RS256"
            ),
            document_problem("roles[1].scopes[1]", MALFORMED_WILDCARD),
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Never a panic, and no effect on the good policy
// ---------------------------------------------------------------------------------------------

type Edit = fn(&mut McpServer, &mut Vec<McpAccessPolicy>);

/// Bad inputs, each of which must be refused with problems (and never panic).
const BAD_INPUTS: &[(&str, Edit)] = &[
    ("empty server spec", |s, _| {
        s.spec.documents.clear();
        s.spec.tools.clear();
        s.spec.auth = Default::default();
    }),
    ("empty strings everywhere", |s, p| {
        s.spec.documents[0].collection = String::new();
        s.spec.tools[0].name = String::new();
        s.spec.tools[0].collection = String::new();
        s.spec.auth.issuers[0].issuer = String::new();
        s.spec.auth.resource = Some(String::new());
        let spec = &mut p[0].spec;
        spec.roles[0].name = String::new();
        spec.roles[0].scopes = vec![String::new()];
        spec.tools[0].match_ = String::new();
        spec.tools[0].required_scopes = vec![String::new()];
        spec.bindings[0].role = String::new();
        spec.bindings[0].subjects = vec![String::new()];
        spec.tests[0].name = String::new();
        spec.tests[0].visible_tools = Some(vec![String::new()]);
    }),
    ("non-ASCII and control characters", |s, p| {
        s.spec.tools[0].name = "gét_ïnfo\u{0}".into();
        s.spec.documents[0].collection = "pübl\u{7f}ic".into();
        p[0].spec.roles[0].scopes = vec!["dócs:\u{1b}read".into(), "\u{200b}".into()];
        p[0].spec.tools[0].match_ = "*\u{feff}*".into();
        p[0].spec.tests[0].identity.scopes = vec!["\t".into()];
    }),
    ("over-long names and scopes", |s, p| {
        s.spec.tools[0].name = "t".repeat(10_000);
        s.spec.documents[0].collection = "c".repeat(10_000);
        p[0].spec.roles[0].scopes = vec!["s".repeat(10_000)];
        p[0].spec.tools[0].match_ = "*".repeat(10_000);
    }),
    ("hostile globs", |_, p| {
        p[0].spec.tools[0].match_ = "*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b".into();
        p[0].spec.tools[1].match_ = "**".into();
        p[0].spec.tools.push(yaml("{match: '*', requiredScopes: [x]}"));
        p[0].spec.tools.push(yaml("{match: '**', requiredScopes: [y]}"));
    }),
    ("everything duplicated", |s, p| {
        s.spec.documents.extend(s.spec.documents.clone());
        s.spec.tools.extend(s.spec.tools.clone());
        s.spec.auth.issuers.extend(s.spec.auth.issuers.clone());
        let spec = &mut p[0].spec;
        spec.roles.extend(spec.roles.clone());
        spec.tools.extend(spec.tools.clone());
        spec.tests.extend(spec.tests.clone());
    }),
    ("no roles but bindings and tests", |_, p| {
        p[0].spec.roles.clear();
        p[0].spec.tests[0].identity.roles = vec!["ghost".into()];
    }),
    ("a second policy contradicting everything", |_, p| {
        let mut other = p[0].clone();
        other.metadata.name = Some("aa-other".into());
        for role in &mut other.spec.roles {
            role.scopes = vec!["admin".into()];
        }
        for rule in &mut other.spec.tools {
            rule.required_scopes = vec!["admin".into()];
        }
        p.push(other);
    }),
    ("issuer with every key source problem", |s, _| {
        let issuer: IssuerSpec = yaml(
            "{issuer: not-a-url, algorithms: [HS256, RS256, EdDSA], jwksUri: 'x', \
              hmacKey: {secretKeyRef: {name: k, key: k}}}",
        );
        s.spec.auth.issuers = vec![issuer.clone(), issuer];
    }),
    ("no credentials at all", |s, _| {
        let issuer: IssuerSpec = yaml("{issuer: corp-idp, algorithms: [HS512]}");
        s.spec.auth.issuers = vec![issuer];
        s.spec.auth.resource = Some("not a url".into());
    }),
];

#[test]
fn nothing_panics_and_every_bad_input_is_refused() {
    for (name, edit) in BAD_INPUTS {
        let (mut server, mut policies) = sample();
        edit(&mut server, &mut policies);
        let outcome = catch_unwind(AssertUnwindSafe(|| try_compile(&server, &policies)));
        let result = outcome.unwrap_or_else(|_| panic!("{name}: compile panicked"));
        let Err(found) = result else {
            panic!("{name}: compiled without problems");
        };
        assert!(!found.is_empty(), "{name}");
        for p in found.iter() {
            assert!(
                p.object.is_some() && !p.path.is_empty() && !p.message.is_empty(),
                "{name}: {p}"
            );
        }
    }
}

#[test]
fn nothing_panics_on_hand_written_documents() {
    let edits: [fn(&mut PolicyDocument); 5] = [
        |d| {
            *d = PolicyDocument::from_yaml(
                "apiVersion: palisade.dev/v1alpha1\nkind: PolicyDocument\nauthentication: {resource: ''}",
            )
            .unwrap()
        },
        |d| {
            d.tools.extend(d.tools.clone());
            d.rules.extend(d.rules.clone());
            d.roles.extend(d.roles.clone());
            d.collections.clear();
        },
        |d| {
            d.rules[0].match_ = "get public".into();
            d.roles[0].scopes = vec!["*:*:**".into()];
            d.bindings[0].role = String::new();
        },
        |d| {
            d.authentication.issuers[0].keys = KeySource::HmacKeyFile(String::new());
            d.authentication.issuers[1].keys = KeySource::OidcDiscovery;
            d.authentication.issuers[1].issuer = String::new();
        },
        |d| {
            d.rules = vec![
                yaml("{match: 'get_*', requiredScopes: [a]}"),
                yaml("{match: '*info', requiredScopes: [b]}"),
            ];
        },
    ];
    for (i, edit) in edits.into_iter().enumerate() {
        let mut document = document();
        edit(&mut document);
        let outcome = catch_unwind(AssertUnwindSafe(|| Policy::new(document)));
        let result = outcome.unwrap_or_else(|_| panic!("edit {i}: Policy::new panicked"));
        assert!(result.is_err(), "edit {i} was accepted");
    }
}

#[test]
fn compile_is_pure_and_the_good_sample_still_compiles_to_the_same_hash() {
    let (server, policies) = sample();
    let before = try_compile(&server, &policies).unwrap_or_else(|e| panic!("{e}"));
    for (_, edit) in BAD_INPUTS {
        let (mut bad_server, mut bad_policies) = sample();
        edit(&mut bad_server, &mut bad_policies);
        let _ = catch_unwind(AssertUnwindSafe(|| try_compile(&bad_server, &bad_policies)));
    }
    let (fresh_server, fresh_policies) = sample();
    let after = try_compile(&fresh_server, &fresh_policies).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(after.policy.hash(), before.policy.hash());
    assert_eq!(after.policy.document(), before.policy.document());
    assert_eq!(after.tests, before.tests);
    assert_eq!(after.failed_tests().count(), 0);
    // The inputs themselves were not changed by compiling them.
    let (original_server, original_policies) = sample();
    assert_eq!(server.spec, original_server.spec);
    assert_eq!(policies[0].spec, original_policies[0].spec);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Arbitrary strings in every field a person types never make compile panic.
    #[test]
    fn arbitrary_strings_never_panic(
        tool in "\\PC{0,12}",
        collection in "\\PC{0,12}",
        role in "\\PC{0,12}",
        scope in "[a-z*: ]{0,10}",
        pattern in "[a-z_*./ ]{0,12}",
        test_tool in "\\PC{0,12}",
    ) {
        let (mut server, mut policies) = sample();
        server.spec.tools[0].name = tool;
        server.spec.documents[0].collection = collection;
        let spec = &mut policies[0].spec;
        spec.roles[0].name = role.clone();
        spec.roles[1].scopes.push(scope.clone());
        spec.tools.push(ToolRuleSpec { match_: pattern, required_scopes: vec![scope], arguments: Default::default() });
        spec.bindings[0].role = role;
        spec.tests[0].allowed.push(test_tool);
        let outcome = catch_unwind(AssertUnwindSafe(|| try_compile(&server, &policies)));
        prop_assert!(outcome.is_ok(), "compile panicked");
    }
}

#[test]
fn an_unqualified_binding_in_a_document_with_two_issuers() {
    let found = document_problems(|d| d.bindings[0].from = None);
    assert_eq!(
        found,
        [document_problem(
            "bindings[0]",
            "the server accepts identities from 2 sources (issuer \"https://idp.example.com\", issuer \"palisade-dev\"), \
             so subjects and groups must say which one they belong to: set from: {issuer: <one of \
             authentication.issuers>}, {apiKeys: true} or {clientCertificates: true}"
        )]
    );
}

#[test]
fn a_binding_from_a_source_the_document_does_not_have() {
    let found = document_problems(|d| d.bindings[0].from = Some(palisade_crds::IdentitySource::ApiKeys));
    assert_eq!(
        found,
        [document_problem(
            "bindings[0].from",
            "the server has no API-key table, so no caller comes from API keys"
        )]
    );
    let found = document_problems(|d| {
        d.bindings[0].from = Some(palisade_crds::IdentitySource::Issuer(
            "https://other.example.com".into(),
        ))
    });
    assert_eq!(
        found,
        [document_problem(
            "bindings[0].from",
            "issuer \"https://other.example.com\" is not an issuer of the server (\"https://idp.example.com\", \"palisade-dev\")"
        )]
    );
}

#[test]
fn a_document_fetches_keys_over_https_unless_marked_for_development() {
    let found = document_problems(|d| {
        d.authentication.issuers[0].keys =
            palisade_crds::document::KeySource::JwksUri("http://idp.example.com/jwks.json".into())
    });
    assert_eq!(
        found,
        [document_problem(
            "authentication.issuers[0].keys.jwksUri",
            palisade_crds::document_check::INSECURE_KEYS_URL
        )]
    );
    let mut marked = document();
    marked.authentication.issuers[0].keys =
        palisade_crds::document::KeySource::JwksUri("http://idp.example.com/jwks.json".into());
    marked.authentication.issuers[0].allow_insecure_http = true;
    Policy::new(marked).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn bad_argument_constraints_are_refused_with_their_field_path() {
    let found = policy_problems(|spec| {
        spec.tools[0].arguments =
            yaml_serde::from_str(r#"{ticket: {regex: "(a"}, home: {glob: ["/home/{user}/**"]}}"#).unwrap();
    });
    let paths: Vec<(&str, bool)> = found
        .iter()
        .map(|p| {
            (
                p.path.as_str(),
                p.message.contains("regex does not compile") || p.message.contains("unknown caller variable {user}"),
            )
        })
        .collect();
    assert_eq!(
        paths,
        [
            ("spec.tools[0].arguments.home.glob[0]", true),
            ("spec.tools[0].arguments.ticket.regex", true)
        ]
    );
}

#[test]
fn argument_constraints_on_a_prompt_rule_are_refused_with_their_field_path() {
    let (server, mut policies) = support::sample("filesystem-proxy.yaml");
    policies[0].spec.prompts = vec![palisade_crds::access_policy::ToolRuleSpec {
        match_: "summarize".into(),
        required_scopes: vec!["files:read".into()],
        arguments: yaml_serde::from_str(r#"{topic: {in: [handbook]}}"#).unwrap(),
    }];
    let refs: Vec<&McpAccessPolicy> = policies.iter().collect();
    let problems = compile(&server, &refs, &CompileOptions::default()).unwrap_err();
    assert_eq!(
        problems.to_string(),
        "McpAccessPolicy default/files-access: spec.prompts[0].arguments: argument constraints are for tool rules (spec.tools)"
    );
}

#[test]
fn a_test_identity_claim_that_no_rule_could_name_is_refused_with_its_path() {
    let found = policy_problems(|spec| {
        spec.tests[0].identity.claims = [("team/name".to_owned(), vec!["ops".to_owned()])].into();
    });
    assert_eq!(
        found
            .iter()
            .map(|p| (p.path.as_str(), p.message.as_str()))
            .collect::<Vec<_>>(),
        [(
            "spec.tests[0].identity.claims",
            "\"team/name\" is not a claim name rules can name: 1 to 128 ASCII letters, digits and _-.:"
        )]
    );
}
