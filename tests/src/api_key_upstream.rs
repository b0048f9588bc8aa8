//! An upstream that checks credentials: a document-mode `palisade-server` that admits only one
//! API key. Proxy tests send it the key with `--upstream-header X-API-Key=FILE` (or
//! `spec.upstream.headers`) and read in its audit log whom it served.

use crate::{Fixture, Server, TempDir};

/// The subject the upstream's audit names for the key.
pub const SUBJECT: &str = "palisade-proxy";
/// The one tool it offers (`readAll` of collection `notes`).
pub const TOOL: &str = "read_notes";
/// The text of its one document.
pub const CONTENT: &str = "Welcome through the proxy.";

/// A document-mode `palisade-server` that admits only API key `key` (as subject
/// `palisade-proxy`, with scope `notes:read`): the upstream of the credentials test.
pub fn start(key: &str) -> (Fixture, Server) {
    start_with_env(key, &[])
}

/// Like [`start`], with environment variables for the upstream (its `OTEL_*` settings).
pub fn start_with_env(key: &str, env: &[(&str, &str)]) -> (Fixture, Server) {
    let dir = TempDir::new("api-key-upstream");
    let table = dir.path().join("api-keys.yaml");
    let hash = palisade_crds::document::content_hash(key.as_bytes());
    std::fs::write(
        &table,
        format!(
            "apiVersion: palisade.dev/v1alpha1\nkind: ApiKeyTable\nkeys:\n  - {{id: proxy, sha256: {}, subject: palisade-proxy, scopes: [notes:read], enabled: true}}\n",
            &hash["sha256:".len()..]
        ),
    )
    .unwrap();
    let documents_dir = dir.path().join("documents");
    std::fs::create_dir_all(documents_dir.join("notes")).unwrap();
    std::fs::write(documents_dir.join("notes/welcome.md"), CONTENT).unwrap();
    let policy_file = dir.path().join("policy.yaml");
    std::fs::write(
        &policy_file,
        format!(
            r#"apiVersion: palisade.dev/v1alpha1
kind: PolicyDocument
metadata:
  server: e2e/notes
mode: Enforce
authentication:
  resource: http://127.0.0.1/mcp
  apiKeysFile: {}
collections: [{{name: notes}}]
tools: [{{name: read_notes, collection: notes, action: readAll}}]
rules: [{{match: read_notes, requiredScopes: [notes:read]}}]
"#,
            table.display()
        ),
    )
    .unwrap();
    let fixture = Fixture {
        dir,
        policy_file,
        documents_dir,
        hmac_key: Vec::new(),
        resource: "http://127.0.0.1/mcp".into(),
    };
    let server = Server::start_with_env(&fixture, &[], env);
    (fixture, server)
}
