//! Where a secret source ends up: which Secret and key hold it, and at which path the server pod
//! reads it. The operator's volume builder and the policy compiler both use these functions, so
//! the file the policy names is always the file the pod has.

use crate::common::SecretKeySource;
use crate::document::{SECRETS_DIR, content_hash};

/// Data key of the HMAC key in a Secret written by External Secrets Operator.
pub const HMAC_KEY_KEY: &str = "hmac-key";
/// Data key of the API-key table in a Secret written by External Secrets Operator.
pub const API_KEYS_KEY: &str = "api-keys.yaml";

/// Data key of an upstream header's value in a Secret written by External Secrets Operator.
pub const UPSTREAM_HEADER_KEY: &str = "header-value";

/// Data key of the upstream's OAuth client secret in a Secret written by External Secrets
/// Operator.
pub const UPSTREAM_CLIENT_SECRET_KEY: &str = "client-secret";

/// What a secret source is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretPurpose<'a> {
    /// The HMAC key of the issuer with this `iss`.
    HmacKey {
        /// The issuer.
        issuer: &'a str,
    },
    /// The API-key table.
    ApiKeys,
    /// The value of a header sent to the upstream (proxy mode).
    UpstreamHeader {
        /// The header's name, as written.
        name: &'a str,
    },
    /// The client secret of the upstream's OAuth client credentials.
    UpstreamClientSecret,
}

/// A Secret key mounted into the server pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretFile {
    /// Name of the Secret.
    pub secret_name: String,
    /// Key inside the Secret.
    pub key: String,
    /// Path of the file in the pod.
    pub path: String,
}

/// Where `source` of McpServer `server` is found.
pub fn secret_file(server: &str, source: &SecretKeySource, purpose: SecretPurpose<'_>) -> SecretFile {
    let (secret_name, key) = match (&source.secret_key_ref, &source.external_secret) {
        (Some(reference), _) => (reference.name.clone(), reference.key.clone()),
        (None, Some(external)) => (
            external
                .target_secret_name
                .clone()
                .unwrap_or_else(|| default_target_secret_name(server, purpose)),
            purpose_key(purpose).to_owned(),
        ),
        // Rejected by CEL at admission; kept total so that a malformed object in the cluster
        // yields a file that does not exist (SecretsReady=False), never a panic.
        (None, None) => (
            default_target_secret_name(server, purpose),
            purpose_key(purpose).to_owned(),
        ),
    };
    let path = format!("{SECRETS_DIR}/{secret_name}/{key}");
    SecretFile { secret_name, key, path }
}

fn purpose_key(purpose: SecretPurpose<'_>) -> &'static str {
    match purpose {
        SecretPurpose::HmacKey { .. } => HMAC_KEY_KEY,
        SecretPurpose::ApiKeys => API_KEYS_KEY,
        SecretPurpose::UpstreamHeader { .. } => UPSTREAM_HEADER_KEY,
        SecretPurpose::UpstreamClientSecret => UPSTREAM_CLIENT_SECRET_KEY,
    }
}

/// Name of the Secret External Secrets Operator writes when the spec does not name one:
/// `<server>-api-keys`, `<server>-hmac-<first 8 hex digits of sha256(issuer)>`, or
/// `<server>-upstream-<first 8 hex digits of sha256(lower-case header name)>`, or
/// `<server>-upstream-oauth`: stable when issuers or headers are reordered.
pub fn default_target_secret_name(server: &str, purpose: SecretPurpose<'_>) -> String {
    match purpose {
        SecretPurpose::ApiKeys => format!("{server}-api-keys"),
        SecretPurpose::HmacKey { issuer } => {
            let digest = content_hash(issuer.as_bytes());
            format!("{server}-hmac-{}", &digest["sha256:".len().."sha256:".len() + 8])
        }
        SecretPurpose::UpstreamClientSecret => format!("{server}-upstream-oauth"),
        SecretPurpose::UpstreamHeader { name } => {
            let digest = content_hash(name.to_ascii_lowercase().as_bytes());
            format!("{server}-upstream-{}", &digest["sha256:".len().."sha256:".len() + 8])
        }
    }
}
