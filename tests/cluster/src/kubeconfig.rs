//! Kubeconfig files for the local control plane: the admin's (client certificate), the
//! controller manager's, and one per service account (a bound token from the TokenRequest API).

use std::path::Path;

use serde_json::json;

use crate::Error;
use crate::pki::Pair;

/// How a kubeconfig's user authenticates.
#[derive(Debug, Clone)]
pub enum Credentials<'a> {
    /// A client certificate.
    Certificate(&'a Pair),
    /// A bearer token (a service account's).
    Token(&'a str),
}

/// Writes a kubeconfig (JSON, which every YAML reader takes) for `server` trusted by `ca_cert`.
pub fn write_kubeconfig(path: &Path, server: &str, ca_cert: &Path, credentials: Credentials<'_>) -> Result<(), Error> {
    let user = match credentials {
        Credentials::Certificate(pair) => json!({
            "client-certificate": pair.cert,
            "client-key": pair.key,
        }),
        Credentials::Token(token) => json!({ "token": token }),
    };
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{ "name": "palisade", "cluster": { "server": server, "certificate-authority": ca_cert } }],
        "users": [{ "name": "palisade", "user": user }],
        "contexts": [{ "name": "palisade", "context": { "cluster": "palisade", "user": "palisade" } }],
        "current-context": "palisade",
    });
    let text = serde_json::to_string_pretty(&config).expect("kubeconfig serializes");
    std::fs::write(path, text).map_err(|e| Error::io(path, e))
}
