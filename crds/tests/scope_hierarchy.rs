//! Scope hierarchies in the evaluator and the compiler: a broader scope in a token or granted by a
//! role implies the narrower ones, transitively; explanations name the broader scope; the
//! implications of several policies add up, and a cycle they form together is refused.

mod support;

use palisade_crds::evaluator::Grant;
use palisade_crds::{CompileOptions, Effect, Identity, McpAccessPolicy, Policy, PolicyDocument, Reason, compile};

fn document(extra: &str) -> PolicyDocument {
    support::handbook_document(
        false,
        &format!(
            r#"tools:
  - {{name: read_doc, collection: handbook, action: get}}
  - {{name: edit_doc, collection: handbook, action: search}}
  - {{name: purge, collection: handbook, action: list}}
rules:
  - {{match: read_doc, requiredScopes: ["docs:read"]}}
  - {{match: edit_doc, requiredScopes: ["docs:read", "docs:write"]}}
  - {{match: purge, requiredScopes: ["docs:purge"]}}
roles:
  - {{name: admin, scopes: ["*:admin"]}}
  - {{name: writer, scopes: ["docs:write"]}}
bindings:
  - {{role: admin, anonymous: true}}
{extra}"#
        ),
    )
}

const HIERARCHY: &str = r#"
scopeImplications:
  - {scope: docs, implies: ["docs:admin"]}
  - {scope: "docs:admin", implies: ["docs:read", "docs:write"]}
"#;

#[test]
fn a_broader_scope_in_the_token_implies_the_narrower_ones_transitively() {
    let policy = Policy::new(document(HIERARCHY)).unwrap();
    let broad = policy.access(&Identity::with_scopes(["docs"]));
    assert_eq!(broad.check_tool("read_doc").effect, Effect::Allow);
    assert_eq!(broad.check_tool("edit_doc").effect, Effect::Allow, "through docs:admin");
    let purge = broad.check_tool("purge");
    assert_eq!((purge.effect, purge.reason), (Effect::Deny, Reason::MissingScopes));
    assert_eq!(
        broad.explain_tool("edit_doc").granted,
        [
            ("docs:read", Grant::ImpliedByToken("docs")),
            ("docs:write", Grant::ImpliedByToken("docs"))
        ]
    );

    // Implications go one way: a narrow scope implies nothing broader.
    let narrow = policy.access(&Identity::with_scopes(["docs:read"]));
    assert_eq!(narrow.check_tool("edit_doc").effect, Effect::Deny);
    assert_eq!(narrow.missing_scopes("edit_doc"), ["docs:write"]);

    // A token scope held directly is named as such before an implication.
    let both = policy.access(&Identity::with_scopes(["docs", "docs:read"]));
    assert_eq!(
        both.explain_tool("edit_doc").granted,
        [
            ("docs:read", Grant::Token),
            ("docs:write", Grant::ImpliedByToken("docs"))
        ]
    );
}

#[test]
fn a_role_granting_a_broader_scope_grants_what_it_implies() {
    // The anonymous caller holds `admin`, whose `*:admin` covers the broader `docs:admin`.
    let policy = Policy::new(document(HIERARCHY)).unwrap();
    let anonymous = policy.access(&Identity::anonymous());
    assert_eq!(anonymous.check_tool("edit_doc").effect, Effect::Allow);
    assert_eq!(
        anonymous.explain_tool("read_doc").granted,
        [(
            "docs:read",
            Grant::ImpliedByRole {
                role: "admin",
                scope: "docs:admin"
            }
        )]
    );
    // Without the hierarchy, `*:admin` covers no required scope.
    let flat = Policy::new(document("")).unwrap();
    assert_eq!(flat.access(&Identity::anonymous()).visible_tools().count(), 0);
    // The hierarchy is in the document's hash.
    assert_ne!(flat.hash(), policy.hash());
}

#[test]
fn a_cycle_or_a_self_implication_in_a_document_is_refused_with_its_path() {
    let cycle = Policy::new(document(
        r#"
scopeImplications:
  - {scope: "docs:admin", implies: ["docs:*"]}
  - {scope: "docs:owner", implies: ["docs:admin"]}
"#,
    ))
    .unwrap_err();
    assert_eq!(
        cycle.to_string(),
        "scopeImplications[0]: scope implications form a cycle: docs:admin -> docs:owner -> docs:admin; a broader scope must not be implied by a narrower one"
    );
    let broken = Policy::new(document(
        r#"
scopeImplications:
  - {scope: "docs:*", implies: ["docs:read"]}
"#,
    ))
    .unwrap_err();
    assert_eq!(
        broken.to_string(),
        "scopeImplications[0].scope: the broader scope is literal, as an IdP issues it; '*' is only allowed in what it implies"
    );
}

fn policy(name: &str, implications: &str) -> McpAccessPolicy {
    yaml_serde::from_str(&format!(
        r#"
apiVersion: palisade.dev/v1alpha1
kind: McpAccessPolicy
metadata: {{name: {name}, namespace: default}}
spec:
  targetRefs: [{{name: company-info}}]
  scopeImplications: {implications}
  tools:
    - {{match: get_public_info, requiredScopes: ["public:read"]}}
"#
    ))
    .unwrap()
}

#[test]
fn implications_of_several_policies_add_up_and_a_cycle_they_form_is_refused() {
    let (server, _) = support::sample("company-info.yaml");
    let first = policy("first", r#"[{scope: org, implies: ["public:read"]}]"#);
    let second = policy("second", r#"[{scope: org, implies: ["org:read"]}]"#);
    let compiled = compile(&server, &[&second, &first], &CompileOptions::default()).unwrap();
    let implications = &compiled.policy.document().scope_implications;
    assert_eq!(implications.len(), 1);
    assert_eq!(implications[0].implies, ["org:read", "public:read"]);
    assert_eq!(implications[0].sources, ["default/first", "default/second"]);
    let org = compiled.policy.access(&Identity::with_scopes(["org"]));
    assert_eq!(org.check_tool("get_public_info").effect, Effect::Allow);

    // Each policy alone is fine; together they make `a` and `b` equal.
    let a = policy("a", r#"[{scope: "x:a", implies: ["x:b"]}]"#);
    let b = policy("b", r#"[{scope: "x:b", implies: ["x:*"]}]"#);
    assert!(compile(&server, &[&a], &CompileOptions::default()).is_ok());
    let problems = compile(&server, &[&a, &b], &CompileOptions::default()).unwrap_err();
    assert_eq!(
        problems.to_string(),
        "compiled policy of McpServer default/company-info: scopeImplications[0]: scope implications form a cycle: x:a -> x:b -> x:a; a broader scope must not be implied by a narrower one"
    );

    // In one policy, the problem has the policy's field path.
    let one = policy("one", r#"[{scope: "x:a", implies: ["x:a"]}]"#);
    assert_eq!(
        compile(&server, &[&one], &CompileOptions::default())
            .unwrap_err()
            .to_string(),
        "McpAccessPolicy default/one: spec.scopeImplications[0].implies[0]: scope \"x:a\" implies itself"
    );
}
