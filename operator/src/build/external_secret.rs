//! ExternalSecrets (`external-secrets.io/v1`): one per Secret that `spec.auth` wants synced from
//! an external store (the HMAC key of an issuer, the API-key table).
//!
//! The ExternalSecret has the name of the Secret it writes (`target.name`), owns it
//! (`creationPolicy: Owner`, so deleting the McpServer deletes the ExternalSecret and then the
//! Secret), and fills the key the policy's file path names ([`crate::secrets`]). Only the fields
//! Palisade sets are modelled here; the schema is External Secrets Operator's CRD, against which
//! the tests validate the output.

use palisade_crds::common::{ExternalSecretSource, SecretStoreKind};
use palisade_crds::kube::CustomResource;
use serde::{Deserialize, Serialize};

use super::meta::object_meta;
use crate::names::Component;
use crate::secrets::{secret_uses, synced_secrets};
use crate::validate::ValidatedServer;

/// How often External Secrets Operator re-reads a value when the source does not say.
pub const DEFAULT_REFRESH_INTERVAL: &str = "1h";

/// The part of an ExternalSecret's spec that Palisade writes.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[kube(
    group = "external-secrets.io",
    version = "v1",
    kind = "ExternalSecret",
    plural = "externalsecrets",
    namespaced,
    schema = "disabled",
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase")]
pub struct ExternalSecretSpec {
    /// The SecretStore or ClusterSecretStore to read from.
    pub secret_store_ref: StoreRef,
    /// How often the values are re-read, as a Go duration.
    pub refresh_interval: String,
    /// The Secret to write.
    pub target: Target,
    /// Secret key ← remote value.
    pub data: Vec<Data>,
}

/// `spec.secretStoreRef`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct StoreRef {
    /// `SecretStore` or `ClusterSecretStore`.
    pub kind: String,
    /// Name of the store.
    pub name: String,
}

/// `spec.target`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    /// Name of the Secret.
    pub name: String,
    /// Always `Owner`: the ExternalSecret owns the Secret.
    pub creation_policy: String,
}

/// One entry of `spec.data`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Data {
    /// Key in the Secret.
    pub secret_key: String,
    /// Where the value comes from.
    pub remote_ref: RemoteRef,
}

/// `spec.data[].remoteRef`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct RemoteRef {
    /// Key of the secret in the external store.
    pub key: String,
    /// Property of a structured value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub property: Option<String>,
    /// Version of the value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// Builds the ExternalSecrets, sorted by name.
pub fn external_secrets(input: &ValidatedServer<'_>) -> Vec<ExternalSecret> {
    let uses = secret_uses(input.server());
    synced_secrets(&uses)
        .into_iter()
        .map(|synced| {
            let source = synced.source;
            ExternalSecret {
                metadata: object_meta(input, synced.secret_name.clone(), Component::Secrets),
                spec: ExternalSecretSpec {
                    secret_store_ref: StoreRef {
                        kind: match source.store_ref.kind {
                            SecretStoreKind::SecretStore => "SecretStore",
                            SecretStoreKind::ClusterSecretStore => "ClusterSecretStore",
                        }
                        .into(),
                        name: source.store_ref.name.clone(),
                    },
                    refresh_interval: source
                        .refresh_interval
                        .clone()
                        .unwrap_or_else(|| DEFAULT_REFRESH_INTERVAL.into()),
                    target: Target {
                        name: synced.secret_name.clone(),
                        creation_policy: "Owner".into(),
                    },
                    data: synced
                        .keys
                        .iter()
                        .map(|(key, source)| Data {
                            secret_key: key.clone(),
                            remote_ref: remote_ref(source),
                        })
                        .collect(),
                },
            }
        })
        .collect()
}

fn remote_ref(source: &ExternalSecretSource) -> RemoteRef {
    RemoteRef {
        key: source.remote_key.clone(),
        property: source.property.clone(),
        version: source.version.clone(),
    }
}
