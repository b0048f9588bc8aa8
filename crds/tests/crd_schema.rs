//! The generated CRDs: committed YAML matches the types, and every sample validates against its
//! CRD's schema with a real JSON-schema validator, in the strict form `kubectl apply
//! --validate=strict` uses (unknown fields are errors, not silently pruned).

mod support;

use palisade_crds::{CRD_FILES, crd_yamls};
use serde_json::Value;

#[test]
fn committed_crds_match_the_types() {
    for (file, generated) in CRD_FILES.iter().zip(crd_yamls()) {
        let path = support::repo_root().join("crds").join(file);
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == generated,
            "{} is out of date with the CRD types: run `make crds` and commit the result",
            path.display()
        );
    }
}

/// The served schema of a CRD with `additionalProperties: false` on every object that lists its
/// properties and does not preserve unknown fields.
fn strict_schema(crd_yaml: &str) -> (String, Value) {
    let crd: Value = yaml_serde::from_str(crd_yaml).unwrap();
    let kind = crd["spec"]["names"]["kind"].as_str().unwrap().to_owned();
    let mut schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone();
    fn tighten(node: &mut Value) {
        match node {
            Value::Object(map) => {
                let preserves = map.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
                if map.contains_key("properties") && !preserves && !map.contains_key("additionalProperties") {
                    map.insert("additionalProperties".into(), Value::Bool(false));
                }
                map.values_mut().for_each(tighten);
            }
            Value::Array(items) => items.iter_mut().for_each(tighten),
            _ => {}
        }
    }
    tighten(&mut schema);
    // `apiVersion`, `kind` and `metadata` are validated by the API server itself, not by the CRD
    // schema.
    for field in ["apiVersion", "kind", "metadata"] {
        let kind = if field == "metadata" { "object" } else { "string" };
        schema["properties"][field] = serde_json::json!({ "type": kind });
    }
    (kind, schema)
}

fn validators() -> Vec<(String, jsonschema::Validator)> {
    crd_yamls()
        .iter()
        .map(|yaml| {
            let (kind, schema) = strict_schema(yaml);
            (
                kind,
                jsonschema::validator_for(&schema).expect("CRD schema is a valid JSON schema"),
            )
        })
        .collect()
}

fn errors(validators: &[(String, jsonschema::Validator)], object: &Value) -> Vec<String> {
    let kind = object["kind"].as_str().unwrap();
    let (_, validator) = validators.iter().find(|(k, _)| k == kind).unwrap();
    validator
        .iter_errors(object)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

#[test]
fn every_sample_validates_against_its_crd_schema() {
    let validators = validators();
    let mut checked = 0;
    for (file, documents) in support::samples() {
        for document in documents {
            if document["apiVersion"]
                .as_str()
                .is_some_and(|v| v.starts_with("palisade.dev/"))
            {
                let errors = errors(&validators, &document);
                assert!(errors.is_empty(), "{}: {errors:#?}", file.display());
                checked += 1;
            }
        }
    }
    assert!(
        checked >= 4,
        "both samples have an McpServer and an McpAccessPolicy ({checked} checked)"
    );
}

#[test]
fn the_strict_schema_rejects_typos_and_bad_values() {
    let validators = validators();
    let (server, policies) = support::sample("company-info.yaml");
    let server = serde_json::to_value(&server).unwrap();
    let policy = serde_json::to_value(&policies[0]).unwrap();

    let mut typo = server.clone();
    typo["spec"]["tools"][0]["acton"] = "readAll".into();
    assert_eq!(
        errors(&validators, &typo),
        [r#"/spec/tools/0: Additional properties are not allowed ('acton' was unexpected)"#]
    );

    let mut bad_action = server.clone();
    bad_action["spec"]["tools"][0]["action"] = "delete".into();
    assert_eq!(
        errors(&validators, &bad_action),
        [r#"/spec/tools/0/action: "delete" is not one of "list", "get" or 2 other candidates"#]
    );

    let mut bad_tool_name = server.clone();
    bad_tool_name["spec"]["tools"][0]["name"] = "get info".into();
    assert_eq!(
        errors(&validators, &bad_tool_name),
        [r#"/spec/tools/0/name: "get info" does not match "^[A-Za-z0-9_.-]+$""#]
    );

    let mut bad_mode = policy.clone();
    bad_mode["spec"]["mode"] = "Permissive".into();
    assert_eq!(
        errors(&validators, &bad_mode),
        [r#"/spec/mode: "Permissive" is not one of "Enforce" or "Audit""#]
    );

    let mut bad_algorithm = server.clone();
    bad_algorithm["spec"]["auth"]["issuers"][0]["algorithms"] = serde_json::json!(["none"]);
    let found = errors(&validators, &bad_algorithm);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with(r#"/spec/auth/issuers/0/algorithms/0: "none" is not one of"#),
        "{found:?}"
    );
}
