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
    status = "ExternalSecretStatus",
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

/// The part of an ExternalSecret's status that Palisade reads: External Secrets Operator's
/// conditions (`Ready` with reason `SecretSynced`, `SecretSyncedError`, ...). Read from the
/// object the API server returns on apply; never written.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct ExternalSecretStatus {
    /// The conditions, as External Secrets Operator writes them.
    #[serde(default)]
    pub conditions: Vec<SyncCondition>,
}

/// One condition of an ExternalSecret's status.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncCondition {
    /// `Ready` (or `Deleted`).
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// External Secrets Operator's reason, e.g. `SecretSyncedError`.
    #[serde(default)]
    pub reason: Option<String>,
    /// External Secrets Operator's message, e.g. the store's error.
    #[serde(default)]
    pub message: Option<String>,
}

/// Whether External Secrets Operator has synced an ExternalSecret, by its `Ready` condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sync {
    /// No `Ready` condition yet (External Secrets Operator has not looked at it, or is not
    /// running).
    Pending,
    /// `Ready=True`: the target Secret holds the store's current value.
    Synced,
    /// `Ready=False` or `Unknown`, with External Secrets Operator's reason and message.
    Failed {
        /// The reason (e.g. `SecretSyncedError`), or `Unknown` when none was given.
        reason: String,
        /// The message (e.g. the store's error), possibly empty.
        message: String,
    },
}

/// The sync state of one ExternalSecret the server needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncState {
    /// Name of the ExternalSecret (= the Secret it writes).
    pub name: String,
    /// Its `Ready` condition.
    pub sync: Sync,
}

impl SyncState {
    /// The sync state of `external_secret` as the API server returned it.
    pub fn of(external_secret: &ExternalSecret) -> Self {
        let ready = external_secret
            .status
            .iter()
            .flat_map(|s| s.conditions.iter())
            .find(|c| c.type_ == "Ready");
        let sync = match ready {
            None => Sync::Pending,
            Some(c) if c.status == "True" => Sync::Synced,
            Some(c) => Sync::Failed {
                reason: c
                    .reason
                    .clone()
                    .filter(|r| !r.is_empty())
                    .unwrap_or_else(|| "Unknown".into()),
                message: c.message.clone().unwrap_or_default(),
            },
        };
        Self {
            name: external_secret.metadata.name.clone().unwrap_or_default(),
            sync,
        }
    }
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
                status: None,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn returned(status: serde_json::Value) -> ExternalSecret {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "external-secrets.io/v1",
            "kind": "ExternalSecret",
            "metadata": {"name": "company-info-jwt", "namespace": "team-a"},
            "spec": {
                "secretStoreRef": {"kind": "ClusterSecretStore", "name": "gcp"},
                "refreshInterval": "1h",
                "target": {"name": "company-info-jwt", "creationPolicy": "Owner"},
                "data": [{"secretKey": "hmac-key", "remoteRef": {"key": "mcp-jwt-secret"}}],
            },
            "status": status,
        }))
        .expect("an ExternalSecret as External Secrets Operator writes it")
    }

    #[test]
    fn the_ready_condition_decides_the_sync_state() {
        assert_eq!(returned(serde_json::json!({})).status.unwrap().conditions, []);
        assert_eq!(SyncState::of(&returned(serde_json::json!({}))).sync, Sync::Pending);
        let synced = returned(serde_json::json!({
            "refreshTime": "2026-11-22T04:00:00Z",
            "syncedResourceVersion": "1-abc",
            "conditions": [{"type": "Ready", "status": "True", "reason": "SecretSynced",
                            "message": "secret synced", "lastTransitionTime": "2026-11-22T04:00:00Z"}],
        }));
        assert_eq!(
            SyncState::of(&synced),
            SyncState {
                name: "company-info-jwt".into(),
                sync: Sync::Synced
            }
        );
        let failed = returned(serde_json::json!({
            "conditions": [
                {"type": "Deleted", "status": "False"},
                {"type": "Ready", "status": "False", "reason": "SecretSyncedError",
                 "message": "could not get secret data from provider"},
            ],
        }));
        assert_eq!(
            SyncState::of(&failed).sync,
            Sync::Failed {
                reason: "SecretSyncedError".into(),
                message: "could not get secret data from provider".into()
            }
        );
        let unknown = returned(serde_json::json!({"conditions": [{"type": "Ready", "status": "Unknown"}]}));
        assert_eq!(
            SyncState::of(&unknown).sync,
            Sync::Failed {
                reason: "Unknown".into(),
                message: String::new()
            }
        );
    }

    #[test]
    fn a_built_external_secret_carries_no_status() {
        let mut object = returned(serde_json::json!({"conditions": []}));
        object.status = None;
        let yaml = serde_json::to_value(&object).unwrap();
        assert!(yaml.get("status").is_none(), "{yaml}");
    }
}
