//! API keys: a table of SHA-256 hashes of keys, each with an identity, roles, scopes and an
//! enabled flag. The table file never holds a key itself, only its hash, and a presented key is
//! compared with every entry in constant time (no early exit), so neither the table nor the
//! timing of a lookup tells anything about valid keys.
//!
//! File format (YAML or JSON), mounted from a Secret:
//! ```yaml
//! apiVersion: palisade.dev/v1alpha1
//! kind: ApiKeyTable
//! keys:
//!   - id: ci-bot                 # not secret: appears in audit events
//!     sha256: 5e884898da28...    # hex SHA-256 of the key
//!     subject: ci-bot
//!     roles: [checklist-reader]
//!     scopes: [process.search]
//!     groups: []
//!     enabled: true
//! ```

use std::sync::Arc;

use palisade_crds::{Identity, IdentitySource};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::{AuthError, Reason};
use super::{AuthMethod, Principal};

/// The parsed table.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApiKeyFile {
    /// `palisade.dev/v1alpha1`.
    pub api_version: String,
    /// `ApiKeyTable`.
    pub kind: String,
    /// The keys.
    #[serde(default)]
    pub keys: Vec<ApiKeyEntry>,
}

/// One key.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApiKeyEntry {
    /// Non-secret identifier.
    pub id: String,
    /// Hex SHA-256 of the key.
    pub sha256: String,
    /// Subject of the caller; defaults to the id.
    #[serde(default)]
    pub subject: Option<String>,
    /// Roles the key holds.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Scopes the key carries.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Groups the key belongs to.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Disabled keys are refused with `INVALID_TOKEN` (reason `disabled_api_key`).
    #[serde(default = "enabled")]
    pub enabled: bool,
}

fn enabled() -> bool {
    true
}

struct Entry {
    digest: [u8; 32],
    /// The caller a request with this key is: built once, shared by every request.
    principal: Arc<Principal>,
    enabled: bool,
}

impl Entry {
    fn id(&self) -> &str {
        self.principal.issuer.as_deref().unwrap_or_default()
    }
}

/// A loaded table, ready for lookups.
pub struct ApiKeyTable {
    entries: Vec<Entry>,
}

impl std::fmt::Debug for ApiKeyTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // NB: never print hashes; the ids are enough to tell tables apart.
        let ids: Vec<&str> = self.entries.iter().map(Entry::id).collect();
        f.debug_struct("ApiKeyTable").field("ids", &ids).finish()
    }
}

/// A problem with the table file.
#[derive(Debug, thiserror::Error)]
pub enum ApiKeyTableError {
    /// Not the expected YAML.
    #[error("API-key table is not valid: {0}")]
    Parse(#[from] yaml_serde::Error),
    /// Wrong apiVersion/kind, bad hash, duplicate id.
    #[error("API-key table: {0}")]
    Invalid(String),
}

impl ApiKeyTable {
    /// Parses and checks a table.
    pub fn parse(text: &str) -> Result<Self, ApiKeyTableError> {
        let file: ApiKeyFile = yaml_serde::from_str(text)?;
        if file.api_version != palisade_crds::document::API_VERSION || file.kind != "ApiKeyTable" {
            return Err(ApiKeyTableError::Invalid(format!(
                "expected apiVersion {} and kind ApiKeyTable",
                palisade_crds::document::API_VERSION
            )));
        }
        let mut entries: Vec<Entry> = Vec::with_capacity(file.keys.len());
        for (i, key) in file.keys.into_iter().enumerate() {
            let digest: [u8; 32] = hex::decode(&key.sha256)
                .ok()
                .and_then(|bytes| bytes.try_into().ok())
                .ok_or_else(|| ApiKeyTableError::Invalid(format!("keys[{i}].sha256 is not 64 hexadecimal digits")))?;
            if entries.iter().any(|e| e.id() == key.id) {
                return Err(ApiKeyTableError::Invalid(format!(
                    "keys[{i}].id {:?} is used twice",
                    key.id
                )));
            }
            entries.push(Entry {
                digest,
                principal: Arc::new(Principal {
                    identity: Identity {
                        source: Some(IdentitySource::ApiKeys),
                        subject: Some(key.subject.unwrap_or_else(|| key.id.clone())),
                        scopes: key.scopes,
                        roles: key.roles,
                        groups: key.groups,
                        service_account: None,
                        claims: Vec::new(),
                        anonymous: false,
                    },
                    method: AuthMethod::ApiKey,
                    issuer: Some(key.id),
                    expires_at: None,
                }),
                enabled: key.enabled,
            });
        }
        Ok(Self { entries })
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the table has no keys.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The caller presenting `key` (its `issuer` is the key's id). Compares against every entry,
    /// in constant time each.
    pub fn authenticate(&self, key: &str) -> Result<&Arc<Principal>, AuthError> {
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        let mut found: Option<&Entry> = None;
        for entry in &self.entries {
            if bool::from(entry.digest.ct_eq(&digest)) {
                found = Some(entry);
            }
        }
        match found {
            Some(entry) if entry.enabled => Ok(&entry.principal),
            Some(_) => Err(AuthError::InvalidToken(Reason::DisabledApiKey)),
            None => Err(AuthError::InvalidToken(Reason::UnknownApiKey)),
        }
    }
}

/// Hex SHA-256 of a key, as the table stores it.
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> ApiKeyTable {
        ApiKeyTable::parse(&format!(
            "apiVersion: palisade.dev/v1alpha1\nkind: ApiKeyTable\nkeys:\n\
             - {{id: ci, sha256: {}, roles: [reader], scopes: [process.search]}}\n\
             - {{id: old, sha256: {}, enabled: false}}\n",
            hash_key("pk_live_ci"),
            hash_key("pk_live_old")
        ))
        .unwrap()
    }

    #[test]
    fn a_known_key_yields_its_identity() {
        let table = table();
        let principal = table.authenticate("pk_live_ci").unwrap();
        assert_eq!(principal.issuer.as_deref(), Some("ci"));
        assert_eq!(principal.method, AuthMethod::ApiKey);
        let identity = &principal.identity;
        assert_eq!(identity.subject.as_deref(), Some("ci"));
        assert_eq!(identity.roles, ["reader"]);
        assert_eq!(identity.scopes, ["process.search"]);
    }

    #[test]
    fn wrong_and_disabled_keys_are_refused() {
        let table = table();
        assert_eq!(
            table.authenticate("pk_live_cj").unwrap_err(),
            AuthError::InvalidToken(Reason::UnknownApiKey)
        );
        assert_eq!(
            table.authenticate("pk_live_old").unwrap_err(),
            AuthError::InvalidToken(Reason::DisabledApiKey)
        );
    }

    #[test]
    fn bad_tables_are_refused_with_the_entry() {
        let bad = "apiVersion: palisade.dev/v1alpha1\nkind: ApiKeyTable\nkeys:\n- {id: a, sha256: nothex}\n";
        assert_eq!(
            ApiKeyTable::parse(bad).unwrap_err().to_string(),
            "API-key table: keys[0].sha256 is not 64 hexadecimal digits"
        );
        let unknown =
            "apiVersion: palisade.dev/v1alpha1\nkind: ApiKeyTable\nkeys:\n- {id: a, sha256: x, key: secret}\n";
        assert!(
            ApiKeyTable::parse(unknown)
                .unwrap_err()
                .to_string()
                .contains("unknown field `key`")
        );
    }

    #[test]
    fn debug_output_never_shows_hashes() {
        let debug = format!("{:?}", table());
        assert!(!debug.contains(&hash_key("pk_live_ci")), "{debug}");
    }
}
