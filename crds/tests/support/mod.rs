//! Helpers shared by the integration tests: the sample objects from `config/samples/`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use palisade_crds::{CompileOptions, McpAccessPolicy, McpServer, compile};
use serde::Deserialize;

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Every YAML document of a file, as JSON values.
pub fn yaml_documents(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    yaml_serde::Deserializer::from_str(&text)
        .map(|document| serde_json::Value::deserialize(document).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

/// Every sample file with its documents.
pub fn samples() -> Vec<(PathBuf, Vec<serde_json::Value>)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo_root().join("config/samples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files.into_iter().map(|p| (p.clone(), yaml_documents(&p))).collect()
}

/// The McpServer and McpAccessPolicies of one sample file, in namespace `default`.
pub fn sample(file: &str) -> (McpServer, Vec<McpAccessPolicy>) {
    let documents = yaml_documents(&repo_root().join("config/samples").join(file));
    let mut server = None;
    let mut policies = Vec::new();
    for mut document in documents {
        document["metadata"]["namespace"] = "default".into();
        match document["kind"].as_str() {
            Some("McpServer") => server = Some(serde_json::from_value(document).unwrap()),
            Some("McpAccessPolicy") => policies.push(serde_json::from_value(document).unwrap()),
            _ => {}
        }
    }
    (server.expect("sample has an McpServer"), policies)
}

/// The compiled policy of a sample.
pub fn compiled_sample(file: &str) -> palisade_crds::Compiled {
    let (server, policies) = sample(file);
    let refs: Vec<&McpAccessPolicy> = policies.iter().collect();
    compile(&server, &refs, &CompileOptions::default()).unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// A hand-written PolicyDocument of one collection, `handbook`, that admits anonymous callers
/// (and API keys with `api_keys`); `body` holds its `tools`, `rules`, `roles` and the rest.
pub fn handbook_document(api_keys: bool, body: &str) -> palisade_crds::PolicyDocument {
    let api_keys = if api_keys { ", apiKeysFile: /k" } else { "" };
    palisade_crds::PolicyDocument::from_yaml(&format!(
        r#"
apiVersion: palisade.dev/v1alpha1
kind: PolicyDocument
metadata: {{}}
authentication: {{resource: "http://docs.team-a.svc.cluster.local/mcp", allowAnonymous: true{api_keys}}}
collections: [{{name: handbook}}]
{body}
"#
    ))
    .unwrap()
}
