//! Types shared by both custom resources.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A key of a Secret, either one that already exists in the namespace or one that the operator
/// has External Secrets Operator sync from an external store. Set exactly one of the two.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.secretKeyRef) != has(self.externalSecret)")
    .message("set exactly one of secretKeyRef or externalSecret"))]
pub struct SecretKeySource {
    /// A key of an existing Secret in the McpServer's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<SecretKeyRef>,
    /// Sync the value from an external secret store (Google Secret Manager, Vault, AWS, ...) with
    /// an `external-secrets.io/v1` ExternalSecret that the operator creates and owns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_secret: Option<ExternalSecretSource>,
}

/// A key of a Secret in the same namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"))]
    pub name: String,
    /// Key inside the Secret's data.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: String,
}

/// Where External Secrets Operator reads a secret value from.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ExternalSecretSource {
    /// The SecretStore (same namespace) or ClusterSecretStore that connects to the external store.
    pub store_ref: SecretStoreRef,
    /// Key of the secret in the external store (for Google Secret Manager: the secret's name).
    #[schemars(length(min = 1, max = 512))]
    pub remote_key: String,
    /// Property inside a structured (JSON) secret value; omit to use the whole value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub property: Option<String>,
    /// Version of the secret in the external store; omit for the latest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub version: Option<String>,
    /// How often External Secrets Operator re-reads the value, as a Go duration (`1h`, `15m`).
    /// Defaults to `1h`. The server picks up a changed value without a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), regex(pattern = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"))]
    pub refresh_interval: Option<String>,
    /// Name of the Secret that External Secrets Operator writes. Defaults to a name derived from
    /// the McpServer's name and the purpose of the secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"))]
    pub target_secret_name: Option<String>,
}

/// A reference to an External Secrets Operator store.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SecretStoreRef {
    /// Kind of the store: `SecretStore` (namespaced) or `ClusterSecretStore`.
    #[serde(default)]
    pub kind: SecretStoreKind,
    /// Name of the store.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Kind of an External Secrets Operator store.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SecretStoreKind {
    /// A namespaced `SecretStore` in the McpServer's namespace.
    #[default]
    SecretStore,
    /// A cluster-wide `ClusterSecretStore`.
    ClusterSecretStore,
}

/// `Enforce` denies what the policy does not allow; `Audit` decides the same way and writes the
/// same audit events, but lets denied requests through (their audit `decision` is `would_deny`),
/// for a safe rollout.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PolicyMode {
    /// Deny what the policy does not allow.
    #[default]
    Enforce,
    /// Log what would be denied, and allow it.
    Audit,
}
