//! Every child object the operator builds is valid against the real schemas:
//! - built-in kinds against the upstream Kubernetes OpenAPI schemas with the pinned
//!   `kubernetes-validate` (`--strict`: unknown fields fail), for the Kubernetes version the
//!   operator's types are built for and the newest one the validator ships;
//! - ExternalSecrets against External Secrets Operator's CRD (`external-secrets.io/v1`), with the
//!   same strictness, by `support/validate_custom_resources.py` and the pinned `jsonschema`.
//!
//! Needs `make e2e-deps` (the test virtualenv); the upstream CRDs are vendored in
//! `tests/schemas/upstream/`.
//! Each validator is also shown a broken object, so a validator that accepts everything fails.

mod support;

use std::path::{Path, PathBuf};

use support::{CASES, children, kubernetes_validate, repo_root, upstream_crd, validate_custom_resources};

/// Kubernetes versions to validate against: 1.34 (k8s-openapi's `v1_34`, the API the operator is
/// built for) and 1.37 (the newest `kubernetes-validate` 1.37.0 ships, the current release).
const KUBERNETES_VERSIONS: [&str; 2] = ["1.34.0", "1.37.0"];

fn external_secret_crd() -> PathBuf {
    upstream_crd("external-secrets.io_externalsecrets.yaml")
}

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("schemas");
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir.join(name)
}

fn write_documents(name: &str, documents: &[&String]) -> PathBuf {
    let path = scratch(name);
    let text: String = documents.iter().map(|d| format!("---\n{d}")).collect();
    std::fs::write(&path, text).expect("write objects");
    path
}

/// ExternalSecrets against External Secrets Operator's CRD.
fn validate_external_secrets(file: &Path) -> Result<String, String> {
    validate_custom_resources(&external_secret_crd(), file)
}

#[test]
fn built_in_children_validate_against_the_kubernetes_schemas() {
    for case in &CASES {
        let children = children(case);
        let builtin: Vec<&String> = children.iter().filter(|(b, _)| *b).map(|(_, y)| y).collect();
        assert!(builtin.len() >= 4, "{}: too few objects", case.name);
        let file = write_documents(&format!("{}-builtin.yaml", case.name), &builtin);
        for version in KUBERNETES_VERSIONS {
            if let Err(output) = kubernetes_validate(&file, version, builtin.len()) {
                panic!("{} against Kubernetes {version}:\n{output}", case.name);
            }
        }
    }
}

#[test]
fn kubernetes_validate_rejects_an_unknown_field() {
    let (_, deployment) = children(&CASES[0])
        .into_iter()
        .find(|(_, y)| y.contains("kind: Deployment"))
        .expect("a Deployment");
    let broken = deployment.replace("  revisionHistoryLimit:", "  bogusField: 1\n  revisionHistoryLimit:");
    assert_ne!(broken, deployment);
    let file = write_documents("broken-deployment.yaml", &[&broken]);
    let output = kubernetes_validate(&file, KUBERNETES_VERSIONS[1], 1).expect_err("an unknown field must fail");
    assert!(output.contains("bogusField"), "{output}");
}

#[test]
fn external_secrets_validate_against_the_external_secrets_crd() {
    let mut total = 0;
    for case in &CASES {
        let children = children(case);
        let external: Vec<&String> = children.iter().filter(|(b, _)| !*b).map(|(_, y)| y).collect();
        if external.is_empty() {
            continue;
        }
        total += external.len();
        let file = write_documents(&format!("{}-external-secrets.yaml", case.name), &external);
        if let Err(output) = validate_external_secrets(&file) {
            panic!("{}:\n{output}", case.name);
        }
    }
    // The every-switch case syncs an HMAC key (ClusterSecretStore) and an API-key table (SecretStore),
    // the external-secrets sample two (both from ClusterSecretStores: GCP and Vault).
    assert!(total >= 4, "expected ExternalSecrets to validate, found {total}");
}

/// The sample stores (GCP Secret Manager with Workload Identity, Vault with Kubernetes auth) are
/// valid ClusterSecretStores, and the stores the sample McpServer names are those.
#[test]
fn the_sample_secret_stores_validate_against_the_external_secrets_crd() {
    let crd = upstream_crd("external-secrets.io_clustersecretstores.yaml");
    let dir = repo_root().join("config/samples/external-secrets");
    for store in ["gcp-secret-manager", "vault"] {
        let file = dir.join(format!("{store}.yaml"));
        let output = validate_custom_resources(&crd, &file).unwrap_or_else(|output| panic!("{store}:\n{output}"));
        assert!(output.contains(&format!("ClusterSecretStore {store}")), "{output}");
        let server = std::fs::read_to_string(dir.join("vendor-handbook.yaml")).expect("sample");
        assert!(
            server.contains(&format!("storeRef: {{kind: ClusterSecretStore, name: {store}}}")),
            "vendor-handbook.yaml does not use the {store} store"
        );
    }
    let broken = std::fs::read_to_string(dir.join("vault.yaml"))
        .expect("vault.yaml")
        .replace("version: v2", "version: v3");
    let file = scratch("broken-store.yaml");
    std::fs::write(&file, broken).expect("write");
    let output = validate_custom_resources(&crd, &file).expect_err("an invalid store must fail");
    assert!(output.contains("'v3' is not one of"), "{output}");
}

#[test]
fn the_external_secrets_check_rejects_an_invalid_object() {
    let everything = CASES.iter().find(|c| c.name == "everything").expect("case");
    let (_, external) = children(everything)
        .into_iter()
        .find(|(builtin, _)| !builtin)
        .expect("an ExternalSecret");
    let broken = external.replace("creationPolicy: Owner", "creationPolicy: Owned\n    bogusField: 1");
    assert_ne!(broken, external);
    let file = write_documents("broken-external-secret.yaml", &[&broken]);
    let output = validate_external_secrets(&file).expect_err("an invalid ExternalSecret must fail");
    assert!(
        output.contains("bogusField") && output.contains("'Owned' is not one of"),
        "{output}"
    );
}
