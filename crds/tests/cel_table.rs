//! The CEL table (`cel_table/cases.rs`) offline: each case is rejected by kube's `validate_cel`
//! with exactly its rule's message, and the table has one case for every rule of both CRDs. The
//! cluster suite runs the same table against a real kube-apiserver.

mod support;

#[path = "cel_table/cases.rs"]
mod cases;

use std::collections::BTreeSet;

use palisade_crds::kube::CustomResourceExt;
use palisade_crds::{McpAccessPolicy, McpServer};
use serde_json::Value;

use cases::{CASES, merge_patch};

fn sample_object(kind: &str) -> Value {
    support::yaml_documents(&support::repo_root().join("config/samples/company-info.yaml"))
        .into_iter()
        .find(|d| d["kind"] == kind)
        .expect("the sample has the kind")
}

fn messages_of(schema: &Value, out: &mut BTreeSet<String>) {
    match schema {
        Value::Object(fields) => {
            if let Some(Value::Array(rules)) = fields.get("x-kubernetes-validations") {
                out.extend(rules.iter().filter_map(|r| r["message"].as_str().map(str::to_owned)));
            }
            fields.values().for_each(|v| messages_of(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| messages_of(v, out)),
        _ => {}
    }
}

#[test]
fn every_case_is_rejected_with_its_rule_s_message() {
    for case in CASES {
        let mut object = sample_object(case.kind);
        merge_patch(&mut object, &(case.patch)());
        let result = match case.kind {
            "McpServer" => serde_json::from_value::<McpServer>(object).unwrap().validate_cel(),
            _ => serde_json::from_value::<McpAccessPolicy>(object)
                .unwrap()
                .validate_cel(),
        };
        let errors = result.expect_err(case.name);
        let messages: BTreeSet<&str> = errors.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(messages, BTreeSet::from([case.message]), "{}", case.name);
    }
}

#[test]
fn the_table_covers_every_rule_of_both_crds() {
    let mut in_crds = BTreeSet::new();
    for crd in [McpServer::crd(), McpAccessPolicy::crd()] {
        messages_of(&serde_json::to_value(crd).unwrap(), &mut in_crds);
    }
    let in_table: BTreeSet<String> = CASES.iter().map(|c| c.message.to_owned()).collect();
    assert_eq!(in_table, in_crds);
}
