//! The input schema a list advertises, narrowed to a caller's argument rules: over random rules,
//! callers and calls, every call the narrowed schema admits is allowed (a client that follows the
//! schema is never denied for its arguments), and every allowed call whose paths are in normal
//! form is admitted (the schema is exact there). Checked with a small JSON Schema validator of
//! the keywords the narrowing writes, independent of the evaluator.

use palisade_crds::arguments::NARROWED_META_KEY;
use palisade_crds::{Effect, Identity, IdentitySource, Policy, PolicyDocument};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

mod support;

fn document(rules: &str) -> PolicyDocument {
    support::handbook_document(
        true,
        &format!(
            "tools:
  - {{name: get_doc, collection: handbook, action: get}}
rules:
{rules}"
        ),
    )
}

/// The server's own schema of the tool's arguments.
fn defined_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "path": {"type": "string", "description": "A path"},
            "paths": {"type": "array", "items": {"type": "string"}},
            "mode": {"type": "string"},
            "limit": {"type": "number"},
        }
    })
}

/// The keywords the narrowing writes, validated as JSON Schema 2020-12 says.
fn valid(schema: &Value, value: &Value) -> bool {
    let Some(schema) = schema.as_object() else {
        return true;
    };
    let text = value.as_str();
    let checks = [
        schema.get("type").and_then(Value::as_str).is_none_or(|t| match t {
            "string" => value.is_string(),
            "number" => value.is_number(),
            "object" => value.is_object(),
            "array" => value.is_array(),
            _ => true,
        }),
        schema
            .get("enum")
            .and_then(Value::as_array)
            .is_none_or(|e| e.contains(value)),
        schema
            .get("minimum")
            .and_then(Value::as_f64)
            .is_none_or(|m| value.as_f64().is_none_or(|v| v >= m)),
        schema
            .get("maximum")
            .and_then(Value::as_f64)
            .is_none_or(|m| value.as_f64().is_none_or(|v| v <= m)),
        schema
            .get("maxLength")
            .and_then(Value::as_u64)
            .is_none_or(|m| text.is_none_or(|t| t.chars().count() as u64 <= m)),
        schema
            .get("pattern")
            .and_then(Value::as_str)
            .is_none_or(|p| text.is_none_or(|t| regex::Regex::new(p).unwrap().is_match(t))),
        schema.get("not").is_none_or(|n| !valid(n, value)),
        schema.get("required").and_then(Value::as_array).is_none_or(|r| {
            value
                .as_object()
                .is_none_or(|o| r.iter().all(|k| o.contains_key(k.as_str().unwrap())))
        }),
        schema.get("properties").and_then(Value::as_object).is_none_or(|p| {
            value
                .as_object()
                .is_none_or(|o| o.iter().all(|(k, v)| p.get(k).is_none_or(|s| valid(s, v))))
        }),
        schema
            .get("minItems")
            .and_then(Value::as_u64)
            .is_none_or(|m| value.as_array().is_none_or(|a| a.len() as u64 >= m)),
        schema
            .get("items")
            .is_none_or(|s| value.as_array().is_none_or(|a| a.iter().all(|v| valid(s, v)))),
        schema
            .get("allOf")
            .and_then(Value::as_array)
            .is_none_or(|all| all.iter().all(|s| valid(s, value))),
        schema
            .get("anyOf")
            .and_then(Value::as_array)
            .is_none_or(|any| any.iter().any(|s| valid(s, value))),
    ];
    checks.into_iter().all(|c| c)
}

const GLOBS: [&str; 5] = [
    "/data/public/**",
    "/data/*/team/*.md",
    "/home/{subject}/**",
    "public-*",
    "/data/x.*",
];
const PATHS: [&str; 14] = [
    "/data/public/a",
    "/data/public",
    "/data/public/../secret",
    "/data/public/%2e%2e/x",
    "/data//public/a",
    "/data/public/./a",
    "/data/shared/team/notes.md",
    "/data/shared/team/notes.txt",
    "/home/alice/a",
    "/home/bob/a",
    "public-faq",
    "public-a/b",
    "/data/x.y",
    "/data/public/",
];
const MODES: [&str; 3] = ["r", "w", "{subject}"];
const MODE_VALUES: [&str; 4] = ["r", "w", "alice", "x"];
const LIMITS: [f64; 6] = [-1.0, 0.0, 2.5, 5.0, 100.0, 1000.0];

/// One rule: globs on `path`, globs on `paths`, values of `mode`, bounds on `limit`, each with
/// whether it is required; or no constraint at all.
#[derive(Debug, Clone)]
struct Rule {
    scope: bool,
    path: Option<(Vec<usize>, bool)>,
    paths: Option<Vec<usize>>,
    mode: Option<(Vec<usize>, bool)>,
    limit: Option<(Option<usize>, Option<usize>, bool)>,
}

fn rule() -> impl Strategy<Value = Rule> {
    (
        prop::bool::weighted(0.2),
        prop::option::of((prop::collection::vec(0usize..GLOBS.len(), 1..3), any::<bool>())),
        prop::option::weighted(0.3, prop::collection::vec(0usize..GLOBS.len(), 1..2)),
        prop::option::of((prop::collection::vec(0usize..MODES.len(), 1..3), any::<bool>())),
        prop::option::of((
            prop::option::of(0usize..LIMITS.len()),
            prop::option::of(0usize..LIMITS.len()),
            any::<bool>(),
        )),
    )
        .prop_map(|(scope, path, paths, mode, limit)| Rule {
            scope,
            path,
            paths,
            mode,
            // min <= max, and at least one of them.
            limit: limit.and_then(|(lo, hi, required)| match (lo, hi) {
                (None, None) => None,
                (Some(a), Some(b)) => Some((Some(a.min(b)), Some(a.max(b)), required)),
                (lo, hi) => Some((lo, hi, required)),
            }),
        })
}

fn quoted(list: &[usize], from: &[&str]) -> String {
    list.iter()
        .map(|&i| format!("{:?}", from[i]))
        .collect::<Vec<_>>()
        .join(", ")
}

fn rules_yaml(rules: &[Rule]) -> String {
    let mut out = String::new();
    for rule in rules {
        let mut arguments = Vec::new();
        if let Some((globs, required)) = &rule.path {
            arguments.push(format!(
                "path: {{glob: [{}], required: {required}}}",
                quoted(globs, &GLOBS)
            ));
        }
        if let Some(globs) = &rule.paths {
            arguments.push(format!("paths: {{glob: [{}]}}", quoted(globs, &GLOBS)));
        }
        if let Some((modes, required)) = &rule.mode {
            arguments.push(format!(
                "mode: {{in: [{}], required: {required}}}",
                quoted(modes, &MODES)
            ));
        }
        if let Some((lo, hi, required)) = &rule.limit {
            let mut bounds = Vec::new();
            if let Some(lo) = lo {
                bounds.push(format!("min: {}", LIMITS[*lo]));
            }
            if let Some(hi) = hi {
                bounds.push(format!("max: {}", LIMITS[*hi]));
            }
            arguments.push(format!("limit: {{{}, required: {required}}}", bounds.join(", ")));
        }
        let scopes = if rule.scope { "[\"s:x\"]" } else { "[]" };
        let line = format!(
            "  - {{match: get_doc, requiredScopes: {scopes}, arguments: {{{}}}}}\n",
            arguments.join(", ")
        )
        .replace(", arguments: {}", "");
        // A rule stated twice is refused in a hand-written document.
        if !out.contains(&line) {
            out.push_str(&line);
        }
    }
    out
}

#[derive(Debug, Clone)]
struct Call {
    path: Option<usize>,
    paths: Option<Vec<usize>>,
    mode: Option<usize>,
    limit: Option<usize>,
}

fn call() -> impl Strategy<Value = Call> {
    (
        prop::option::weighted(0.8, 0usize..PATHS.len()),
        prop::option::weighted(0.3, prop::collection::vec(0usize..PATHS.len(), 0..3)),
        prop::option::weighted(0.7, 0usize..MODE_VALUES.len()),
        prop::option::weighted(0.7, 0usize..LIMITS.len()),
    )
        .prop_map(|(path, paths, mode, limit)| Call {
            path,
            paths,
            mode,
            limit,
        })
}

fn arguments(call: &Call) -> Map<String, Value> {
    let mut out = Map::new();
    if let Some(p) = call.path {
        out.insert("path".into(), PATHS[p].into());
    }
    if let Some(paths) = &call.paths {
        out.insert(
            "paths".into(),
            paths.iter().map(|&p| PATHS[p]).collect::<Vec<_>>().into(),
        );
    }
    if let Some(m) = call.mode {
        out.insert("mode".into(), MODE_VALUES[m].into());
    }
    if let Some(l) = call.limit {
        out.insert("limit".into(), json!(LIMITS[l]));
    }
    out
}

/// A path in the normal form the narrowed patterns state.
fn normal(path: &str) -> bool {
    !path.contains(['%', '\\'])
        && !path.ends_with('/')
        && !path.contains("//")
        && !path.split('/').any(|s| s == "." || s == "..")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn a_narrowed_schema_admits_exactly_what_the_rules_allow(
        rules in prop::collection::vec(rule(), 1..4),
        calls in prop::collection::vec(call(), 8),
        subject in prop::option::of(prop::sample::select(vec!["alice", "bob"])),
        holds_scope in any::<bool>(),
    ) {
        let policy = Policy::new(document(&rules_yaml(&rules))).unwrap();
        let identity = Identity {
            source: Some(IdentitySource::ApiKeys),
            subject: subject.map(str::to_owned),
            scopes: if holds_scope { vec!["s:x".into()] } else { vec![] },
            ..Identity::default()
        };
        let access = policy.access(&identity);
        let listed = access.check_tool("get_doc").effect == Effect::Allow;
        let narrowed = access.narrow_input_schema("get_doc", &defined_schema());
        prop_assert_eq!(access.input_schema_narrowing("get_doc").is_some(), narrowed.is_some());
        if let Some((_, mark)) = &narrowed {
            prop_assert!(listed, "a narrowed schema is for a listed tool");
            prop_assert_eq!(&mark["narrowed"], &json!(true));
        }
        for call in &calls {
            let arguments = arguments(call);
            let allowed = access.check_call("get_doc", Some(&arguments)).effect == Effect::Allow;
            let value = Value::Object(arguments.clone());
            match &narrowed {
                // Nothing narrows it: a listed tool takes any arguments.
                None if listed => prop_assert!(allowed, "{:?} denied though no rule narrows", value),
                None => prop_assert!(!allowed),
                Some((schema, _)) => {
                    let admitted = valid(schema, &value);
                    if admitted {
                        prop_assert!(allowed, "admitted by {} but denied: {}", schema, value);
                    }
                    let paths_normal = call.path.is_none_or(|p| normal(PATHS[p]))
                        && call.paths.as_ref().is_none_or(|ps| ps.iter().all(|&p| normal(PATHS[p])));
                    if allowed && paths_normal {
                        prop_assert!(admitted, "allowed but not admitted by {}: {}", schema, value);
                    }
                }
            }
        }
    }
}

#[test]
fn one_rule_narrows_the_properties_and_several_become_any_of() {
    let one = Policy::new(document(
        r#"  - {match: get_doc, requiredScopes: [], arguments: {path: {glob: ["/data/public/**"]}, mode: {in: [r], required: false}, limit: {min: 1, max: 50}}}"#,
    ))
    .unwrap();
    let (schema, mark) = one
        .access(&Identity::anonymous())
        .narrow_input_schema("get_doc", &defined_schema())
        .unwrap();
    let any = r"(?:[^./%\\\x00-\x1F\x7F-\x9F][^/%\\\x00-\x1F\x7F-\x9F]*|\.[^./%\\\x00-\x1F\x7F-\x9F][^/%\\\x00-\x1F\x7F-\x9F]*|\.\.[^/%\\\x00-\x1F\x7F-\x9F]+)";
    assert_eq!(
        schema,
        json!({
            "type": "object",
            "properties": {
                "path": {"allOf": [
                    {"type": "string", "description": "A path"},
                    {"type": "string", "pattern": format!(r"^(?:/data/public(?:/{any})*)$")}
                ]},
                "paths": {"type": "array", "items": {"type": "string"}},
                "mode": {"allOf": [{"type": "string"}, {"type": "string", "enum": ["r"]}]},
                "limit": {"allOf": [{"type": "number"}, {"type": "number", "minimum": 1.0, "maximum": 50.0}]},
            },
            "required": ["limit", "path"],
        })
    );
    assert_eq!(mark, json!({"narrowed": true, "unstated": []}));
    assert_eq!(NARROWED_META_KEY, "palisade.dev/argumentRules");

    let several = Policy::new(document(
        r#"  - {match: get_doc, requiredScopes: [], arguments: {mode: {in: [r]}}}
  - {match: get_doc, requiredScopes: [], arguments: {path: {regex: "[a-z/]+"}}}"#,
    ))
    .unwrap();
    let (schema, mark) = several
        .access(&Identity::anonymous())
        .narrow_input_schema("get_doc", &json!({"type": "object"}))
        .unwrap();
    assert_eq!(
        schema["anyOf"],
        json!([
            {"properties": {"mode": {"type": "string", "enum": ["r"]}}, "required": ["mode"]},
            {"properties": {"path": {"type": "string"}}, "required": ["path"]},
        ])
    );
    assert_eq!(mark, json!({"narrowed": true, "unstated": ["regex"]}));
}
