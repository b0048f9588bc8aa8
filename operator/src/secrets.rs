//! Where `spec.auth` reads secrets from: every Secret key the pod mounts and every Secret that
//! External Secrets Operator writes for the server.
//!
//! The sources and their checks are [`palisade_crds::secret_uses`] (shared with
//! `palisade-server policy check`, through the one validation of [`palisade_crds::validate`]); the
//! file paths come from [`palisade_crds::secret_files::secret_file`], the function the policy
//! compiler uses too, so the paths the compiled policy names are exactly the files the pod has.
//! This module only groups the sources per Secret; it builds no object.

use std::collections::{BTreeMap, BTreeSet};

use palisade_crds::common::ExternalSecretSource;

pub use palisade_crds::secret_uses::{SecretUse, check, secret_uses};

/// The Secrets the pod mounts, each with the keys it uses (and no others), sorted.
pub fn mounted_secrets(uses: &[SecretUse<'_>]) -> BTreeMap<String, BTreeSet<String>> {
    let mut secrets: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for secret_use in uses {
        secrets
            .entry(secret_use.file.secret_name.clone())
            .or_default()
            .insert(secret_use.file.key.clone());
    }
    secrets
}

/// A Secret that External Secrets Operator writes for the server: one ExternalSecret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncedSecret<'a> {
    /// Name of the Secret (and of the ExternalSecret).
    pub secret_name: String,
    /// Store, refresh interval and so on, from the first source that targets this Secret
    /// ([`check`] makes sure the others agree).
    pub source: &'a ExternalSecretSource,
    /// Secret key → the source that fills it, sorted by key.
    pub keys: BTreeMap<String, &'a ExternalSecretSource>,
}

/// The Secrets External Secrets Operator writes for the server, sorted by name.
pub fn synced_secrets<'a>(uses: &[SecretUse<'a>]) -> Vec<SyncedSecret<'a>> {
    let mut synced: BTreeMap<String, SyncedSecret<'a>> = BTreeMap::new();
    for secret_use in uses {
        let Some(external) = secret_use.source.external_secret.as_ref() else {
            continue;
        };
        synced
            .entry(secret_use.file.secret_name.clone())
            .or_insert_with(|| SyncedSecret {
                secret_name: secret_use.file.secret_name.clone(),
                source: external,
                keys: BTreeMap::new(),
            })
            .keys
            .entry(secret_use.file.key.clone())
            .or_insert(external);
    }
    synced.into_values().collect()
}

#[cfg(test)]
mod tests {
    use palisade_crds::problem::Problems;
    use palisade_crds::secret_files::SecretPurpose;

    use super::*;
    use crate::test_support::server;

    const TWO_ISSUERS: &str = r#"
metadata: {name: s, namespace: ns}
spec:
  auth:
    issuers:
      - issuer: a
        hmacKey: {secretKeyRef: {name: shared, key: a-key}}
      - issuer: b
        hmacKey: {secretKeyRef: {name: shared, key: b-key}}
      - issuer: c
        hmacKey:
          externalSecret: {storeRef: {kind: ClusterSecretStore, name: gcp}, remoteKey: c}
    apiKeys:
      externalSecret: {storeRef: {name: vault}, remoteKey: keys, targetSecretName: api}
"#;

    #[test]
    fn one_volume_per_secret_with_only_the_used_keys() {
        let server = server(TWO_ISSUERS);
        let mounted = mounted_secrets(&secret_uses(&server));
        let hmac_c =
            palisade_crds::secret_files::default_target_secret_name("s", SecretPurpose::HmacKey { issuer: "c" });
        assert_eq!(
            mounted,
            BTreeMap::from([
                ("api".to_owned(), BTreeSet::from(["api-keys.yaml".to_owned()])),
                (hmac_c, BTreeSet::from(["hmac-key".to_owned()])),
                (
                    "shared".to_owned(),
                    BTreeSet::from(["a-key".to_owned(), "b-key".to_owned()])
                ),
            ])
        );
    }

    #[test]
    fn only_external_sources_are_synced() {
        let server = server(TWO_ISSUERS);
        let uses = secret_uses(&server);
        let synced = synced_secrets(&uses);
        assert_eq!(synced.len(), 2);
        assert_eq!(synced[0].secret_name, "api");
        assert_eq!(synced[0].keys.keys().collect::<Vec<_>>(), ["api-keys.yaml"]);
        let mut problems = Problems::default();
        check("McpServer ns/s", &uses, &mut problems);
        assert!(problems.is_empty(), "{problems}");
    }
}
