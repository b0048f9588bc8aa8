//! The API as the API server serves it: the generated CRDs install and are Established, the
//! samples are admitted, and `kubectl` shows short names, printer columns and field docs.

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;

use crate::support::{Cluster, repo_file, wait_for};

#[path = "../../../../crds/tests/cel_table/cases.rs"]
mod cel_table;

/// The CRDs of External Secrets Operator, vendored for the samples that use them.
const ESO_CRDS: &[&str] = &[
    "tests/schemas/upstream/external-secrets.io_clustersecretstores.yaml",
    "tests/schemas/upstream/external-secrets.io_secretstores.yaml",
    "tests/schemas/upstream/external-secrets.io_externalsecrets.yaml",
];

async fn established(cluster: &Cluster, name: &str) {
    let crds: Api<CustomResourceDefinition> = Api::all(cluster.client.clone());
    wait_for(&format!("CRD {name} Established"), Duration::from_secs(60), || {
        let crds = crds.clone();
        async move {
            let crd = crds.get(name).await.ok()?;
            crd.status?
                .conditions?
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
                .then_some(())
        }
    })
    .await;
}

/// The CRDs in `crds/` (what `make crds` generates and the chart ships) install with
/// `kubectl apply --server-side` and become Established: the API server accepts their
/// structural schemas and compiles every CEL rule within its cost budget.
pub async fn crds_install_and_are_established(cluster: &mut Cluster) {
    let kubectl = cluster.kubectl();
    let root = palisade_cluster::repo_root();
    let output = kubectl.run(
        &[
            "apply",
            "--server-side",
            "-f",
            &root.join("crds/palisade.dev_mcpservers.yaml").display().to_string(),
            "-f",
            &root
                .join("crds/palisade.dev_mcpaccesspolicies.yaml")
                .display()
                .to_string(),
        ],
        None,
    );
    let (out, warnings) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(output.status.success(), "{warnings}");
    assert!(
        warnings.trim().is_empty(),
        "the API server has no warning about the CRDs: {warnings}"
    );
    assert!(out.contains("mcpservers.palisade.dev serverside-applied"), "{out}");
    established(cluster, "mcpservers.palisade.dev").await;
    established(cluster, "mcpaccesspolicies.palisade.dev").await;
    for path in ESO_CRDS {
        kubectl.ok_with(&["apply", "--server-side", "-f", "-"], Some(&repo_file(path)));
    }
    for name in [
        "clustersecretstores.external-secrets.io",
        "secretstores.external-secrets.io",
        "externalsecrets.external-secrets.io",
    ] {
        established(cluster, name).await;
    }
}

/// Every sample in `config/samples/` is admitted by the API server (schema, defaults, CEL).
pub async fn samples_are_accepted(cluster: &mut Cluster) {
    cluster.namespace("samples").await;
    let kubectl = cluster.kubectl();
    let root = palisade_cluster::repo_root();
    let mut samples = Vec::new();
    for dir in ["config/samples", "config/samples/external-secrets"] {
        for entry in std::fs::read_dir(root.join(dir)).expect("samples") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "yaml") {
                samples.push(path);
            }
        }
    }
    samples.sort();
    assert!(samples.len() >= 5, "samples: {samples:?}");
    for sample in &samples {
        let out = kubectl.apply("samples", &std::fs::read_to_string(sample).expect("sample"));
        eprintln!("    {}: {}", sample.display(), out.trim().replace('\n', ", "));
    }
    let servers = kubectl.ok(&["get", "mcps", "-n", "samples", "-o", "name"]);
    for name in ["company-info", "sso-docs", "vendor-handbook"] {
        assert!(servers.contains(&format!("mcpserver.palisade.dev/{name}")), "{servers}");
    }
}

/// `kubectl get` by short name with the printer columns, and `kubectl explain` from the CRD's
/// descriptions (the doc comments of the Rust types).
pub async fn kubectl_get_explain_and_printer_columns(cluster: &mut Cluster) {
    let kubectl = cluster.kubectl();
    let table = kubectl.ok(&["get", "mcps", "-n", "samples"]);
    let header: Vec<&str> = table.lines().next().expect("header").split_whitespace().collect();
    assert_eq!(header, ["NAME", "READY", "REPLICAS", "ENDPOINT", "AGE"], "{table}");
    assert!(table.contains("company-info"), "{table}");
    let table = kubectl.ok(&["get", "mcpap", "-n", "samples"]);
    let header: Vec<&str> = table.lines().next().expect("header").split_whitespace().collect();
    assert_eq!(header, ["NAME", "SERVERS", "MODE", "TESTS", "AGE"], "{table}");
    assert!(table.contains("company-info-access"), "{table}");

    let explain = kubectl.ok(&["explain", "mcpserver.spec.tools"]);
    assert!(explain.contains("KIND:       McpServer"), "{explain}");
    assert!(explain.contains("FIELD: tools <[]Object>"), "{explain}");
    let crd: serde_json::Value = yaml_serde::from_str(&repo_file("crds/palisade.dev_mcpservers.yaml")).expect("CRD");
    let description = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
        ["tools"]["description"]
        .as_str()
        .expect("spec.tools has a description");
    let first_words: String = description.split_whitespace().take(6).collect::<Vec<_>>().join(" ");
    let explained: String = explain.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        explained.contains(&first_words),
        "kubectl explain shows the field's doc comment ({first_words:?}):\n{explain}"
    );
}

/// Every CEL rule's bad-input case of `crds/tests/cel_table/cases.rs` is rejected by the API
/// server itself with the same message as kube's offline `validate_cel` gives (the same table
/// runs in `crds/tests/cel_table.rs`).
pub async fn every_cel_rule_rejects_its_bad_input_in_the_api_server(cluster: &mut Cluster) {
    cluster.namespace("cel").await;
    let kubectl = cluster.kubectl();
    let sample = repo_file("config/samples/company-info.yaml");
    let objects: Vec<serde_json::Value> = sample
        .split("\n---\n")
        .map(|d| yaml_serde::from_str(d).expect("sample YAML"))
        .collect();
    for case in cel_table::CASES {
        let mut object = objects
            .iter()
            .find(|o| o["kind"] == case.kind)
            .expect("the sample has the kind")
            .clone();
        cel_table::merge_patch(&mut object, &(case.patch)());
        let output = kubectl.run(
            &["apply", "--dry-run=server", "--server-side", "-n", "cel", "-f", "-"],
            Some(&object.to_string()),
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success() && stderr.contains(case.message),
            "{}: the API server should refuse it with {:?}, said: {stderr}",
            case.name,
            case.message
        );
    }
    eprintln!(
        "    {} cases refused by the API server with their rule's message",
        cel_table::CASES.len()
    );
}
