//! Criterion benchmarks of the policy evaluator at the size the foundation issue names:
//! 100 roles × 500 tools. Figures go to docs/benchmarks.md (`make bench`).

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use palisade_crds::common::PolicyMode;
use palisade_crds::document::{
    API_VERSION, Authentication, Binding, Collection, KIND, PolicyDocument, Role, ToolDefinition, ToolRule,
};
use palisade_crds::mcp_server::ToolAction;
use palisade_crds::{Identity, IdentitySource, Policy};

/// 500 tools over 10 collections, each requiring two of 200 scopes (`svcN:read|write|list|admin`);
/// 100 roles of five grants each, a fifth of them wildcards; 100 group bindings.
fn large_policy() -> Policy {
    let scope = |i: usize| format!("svc{}:{}", i % 50, ["read", "write", "list", "admin"][i % 4]);
    let tools = (0..500)
        .map(|i| ToolDefinition {
            name: format!("tool_{i:03}"),
            title: None,
            description: Some(format!("Tool number {i}")),
            collection: format!("c{}", i % 10),
            action: ToolAction::Get,
        })
        .chain(std::iter::once(ToolDefinition {
            name: "files_read".into(),
            title: None,
            description: None,
            collection: "c0".into(),
            action: ToolAction::Get,
        }))
        .collect();
    let mut rules: Vec<ToolRule> = (0..500)
        .map(|i| ToolRule {
            kind: Default::default(),
            match_: format!("tool_{i:03}"),
            required_scopes: vec![scope(i), scope(i * 7 + 3)],
            mode: PolicyMode::Enforce,
            arguments: Default::default(),
            sources: vec![],
        })
        .collect();
    // One tool with two alternatives: an administrator's rule, and a rule the caller's token
    // holds that constrains five arguments.
    rules.push(ToolRule {
        kind: Default::default(),
        match_: "files_read".into(),
        required_scopes: vec!["svc1:read".into()],
        mode: PolicyMode::Enforce,
        arguments: yaml_serde::from_str(
            r#"
path: {glob: ["/data/public/**", "/data/shared/*/docs/**"]}
namespace: {in: [default, team-a, team-b]}
ticket: {regex: "[A-Z]{2,8}-[0-9]{1,6}"}
limit: {min: 1, max: 1000}
url: {prefix: ["https://docs.example.com/"]}
"#,
        )
        .expect("constraints parse"),
        sources: vec![],
    });
    rules.push(ToolRule {
        kind: Default::default(),
        match_: "files_read".into(),
        required_scopes: vec!["files:admin".into()],
        mode: PolicyMode::Enforce,
        arguments: Default::default(),
        sources: vec![],
    });
    let roles = (0..100)
        .map(|r| Role {
            name: format!("role{r}"),
            scopes: (0..5)
                .map(|k| {
                    if k == 4 {
                        format!("svc{}:*", (r * 3) % 50)
                    } else {
                        scope(r * 5 + k)
                    }
                })
                .collect(),
            sources: vec![],
        })
        .collect();
    let bindings = (0..100)
        .map(|r| Binding {
            role: format!("role{r}"),
            subjects: vec![],
            groups: vec![format!("group{}", r % 20)],
            service_accounts: vec![],
            anonymous: false,
            source: None,
            from: Some(IdentitySource::ApiKeys),
        })
        .collect();
    let document = PolicyDocument {
        api_version: API_VERSION.into(),
        kind: KIND.into(),
        metadata: Default::default(),
        mode: PolicyMode::Enforce,
        authentication: Authentication {
            resource: "https://bench.example/mcp".into(),
            allow_anonymous: true,
            leeway_seconds: 60,
            issuers: vec![],
            api_keys_file: Some("/etc/palisade/secrets/keys/keys.yaml".into()),
        },
        collections: (0..10)
            .map(|c| Collection {
                name: format!("c{c}"),
                description: None,
            })
            .collect(),
        tools,
        rules,
        roles,
        bindings,
        scope_implications: Vec::new(),
        upstream: None,
    };
    Policy::new(document).expect("benchmark policy is valid")
}

fn caller() -> Identity {
    Identity {
        source: Some(IdentitySource::ApiKeys),
        subject: Some("alice".into()),
        scopes: vec!["svc1:read".into(), "svc2:write".into(), "svc3:list".into()],
        roles: vec!["role7".into(), "role42".into()],
        groups: vec!["group3".into(), "group11".into()],
        service_account: None,
        claims: Vec::new(),
        anonymous: false,
    }
}

fn evaluator(c: &mut Criterion) {
    let policy = large_policy();
    let identity = caller();
    let access = policy.access(&identity);
    let visible = access.visible_tools().count();
    assert!(
        visible > 0 && visible < 500,
        "a realistic mix of visible and hidden tools: {visible}"
    );

    c.bench_function(
        "decision: resolve identity + check one tool (100 roles x 500 tools)",
        |b| {
            b.iter(|| {
                let access = policy.access(black_box(&identity));
                black_box(access.check_tool(black_box("tool_317")).effect)
            })
        },
    );
    c.bench_function("decision: check one tool, identity resolved", |b| {
        b.iter(|| black_box(access.check_tool(black_box("tool_317")).effect))
    });
    let arguments = serde_json::json!({
        "path": "/data/shared/x/docs/a/b/c.txt",
        "namespace": "team-b",
        "ticket": "OPS-4711",
        "limit": 50,
        "url": "https://docs.example.com/guide"
    });
    let arguments = arguments.as_object().expect("an object");
    assert!(access.check_call("files_read", Some(arguments)).effect.permits());
    c.bench_function(
        "decision: check a call with five argument constraints, identity resolved",
        |b| {
            b.iter(|| {
                black_box(
                    access
                        .check_call(black_box("files_read"), black_box(Some(arguments)))
                        .effect,
                )
            })
        },
    );
    c.bench_function("list: resolve identity + filter 500 tools", |b| {
        b.iter(|| {
            let access = policy.access(black_box(&identity));
            black_box(access.visible_tools().count())
        })
    });
    c.bench_function("prepare: validate and prepare the 100 x 500 policy", |b| {
        b.iter(|| black_box(large_policy().tools().len()))
    });
}

criterion_group!(benches, evaluator);
criterion_main!(benches);
