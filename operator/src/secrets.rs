//! Where `spec.auth` reads secrets from: every Secret key the pod mounts and every Secret that
//! External Secrets Operator writes for the server.
//!
//! The file paths come from [`palisade_crds::secret_files::secret_file`], the function the policy
//! compiler uses too, so the paths the compiled policy names are exactly the files the pod has.
//! This module only collects and cross-checks; it builds no object.

use std::collections::{BTreeMap, BTreeSet};

use palisade_crds::McpServer;
use palisade_crds::common::{ExternalSecretSource, SecretKeySource};
use palisade_crds::kube::ResourceExt;
use palisade_crds::problem::Problems;
use palisade_crds::secret_files::{SecretFile, SecretPurpose, secret_file};

/// One field of `spec.auth` that reads a Secret key.
#[derive(Debug, Clone)]
pub struct SecretUse<'a> {
    /// Field path of the source, e.g. `spec.auth.issuers[1].hmacKey`.
    pub field_path: String,
    /// The source as written.
    pub source: &'a SecretKeySource,
    /// The Secret, key and pod path it ends up at.
    pub file: SecretFile,
}

impl SecretUse<'_> {
    /// The External Secrets Operator source, if the Secret is synced from an external store.
    pub fn external(&self) -> Option<&ExternalSecretSource> {
        self.source.external_secret.as_ref()
    }
}

/// Every secret source of `server`, in spec order (issuers, then the API-key table).
pub fn secret_uses(server: &McpServer) -> Vec<SecretUse<'_>> {
    let name = server.name_any();
    let auth = &server.spec.auth;
    let issuers = auth.issuers.iter().enumerate().filter_map(|(i, issuer)| {
        issuer.hmac_key.as_ref().map(|source| SecretUse {
            field_path: format!("spec.auth.issuers[{i}].hmacKey"),
            source,
            file: secret_file(&name, source, SecretPurpose::HmacKey { issuer: &issuer.issuer }),
        })
    });
    let api_keys = auth.api_keys.as_ref().map(|source| SecretUse {
        field_path: "spec.auth.apiKeys".into(),
        source,
        file: secret_file(&name, source, SecretPurpose::ApiKeys),
    });
    issuers.chain(api_keys).collect()
}

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

/// Secret sources that cannot all hold: a Secret written by External Secrets Operator that a
/// `secretKeyRef` also names (the operator's ExternalSecret owns the whole Secret, so the other
/// key would never appear), or two external sources for one Secret that disagree on the store,
/// the refresh interval, or the remote value of one key.
pub fn check(object: &str, uses: &[SecretUse<'_>], problems: &mut Problems) {
    let object = Some(object);
    let mut first_external: BTreeMap<&str, &SecretUse<'_>> = BTreeMap::new();
    for secret_use in uses.iter().filter(|u| u.external().is_some()) {
        first_external.entry(&secret_use.file.secret_name).or_insert(secret_use);
    }
    let mut keys: BTreeMap<(&str, &str), &SecretUse<'_>> = BTreeMap::new();
    for secret_use in uses {
        let secret = secret_use.file.secret_name.as_str();
        let Some(first) = first_external.get(secret) else {
            continue;
        };
        let Some(external) = secret_use.external() else {
            problems.push(
                object,
                format!("{}.secretKeyRef.name", secret_use.field_path),
                format!(
                    "Secret {secret:?} is written by External Secrets Operator for {}; it holds only the keys \
                     the operator syncs, so reference another Secret or sync this key too",
                    first.field_path
                ),
            );
            continue;
        };
        let first_source = first.external().expect("only external uses are recorded");
        if external.store_ref != first_source.store_ref || external.refresh_interval != first_source.refresh_interval {
            problems.push(
                object,
                format!("{}.externalSecret", secret_use.field_path),
                format!(
                    "writes Secret {secret:?} like {}, but with another storeRef or refreshInterval; \
                     one Secret is synced by one ExternalSecret",
                    first.field_path
                ),
            );
        }
        match keys.get(&(secret, secret_use.file.key.as_str())) {
            Some(other) if !same_remote(other.external().expect("external"), external) => problems.push(
                object,
                format!("{}.externalSecret", secret_use.field_path),
                format!(
                    "writes key {:?} of Secret {secret:?} from another remote value than {}",
                    secret_use.file.key, other.field_path
                ),
            ),
            Some(_) => {}
            None => {
                keys.insert((secret, secret_use.file.key.as_str()), secret_use);
            }
        }
    }
}

fn same_remote(a: &ExternalSecretSource, b: &ExternalSecretSource) -> bool {
    (&a.remote_key, &a.property, &a.version) == (&b.remote_key, &b.property, &b.version)
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn a_synced_secret_is_not_also_referenced() {
        let server = server(
            r#"
metadata: {name: s, namespace: ns}
spec:
  auth:
    issuers:
      - issuer: a
        hmacKey:
          externalSecret: {storeRef: {name: vault}, remoteKey: a, targetSecretName: shared}
    apiKeys: {secretKeyRef: {name: shared, key: api-keys.yaml}}
"#,
        );
        let mut problems = Problems::default();
        check("McpServer ns/s", &secret_uses(&server), &mut problems);
        assert_eq!(problems.0.len(), 1, "{problems}");
        assert_eq!(problems.0[0].path, "spec.auth.apiKeys.secretKeyRef.name");
    }

    #[test]
    fn sources_of_one_synced_secret_must_agree() {
        let server = server(
            r#"
metadata: {name: s, namespace: ns}
spec:
  auth:
    issuers:
      - issuer: a
        hmacKey:
          externalSecret: {storeRef: {name: vault}, remoteKey: a, targetSecretName: shared}
      - issuer: b
        hmacKey:
          externalSecret: {storeRef: {name: vault}, remoteKey: b, targetSecretName: shared}
      - issuer: c
        hmacKey:
          externalSecret: {storeRef: {name: vault}, remoteKey: a, targetSecretName: shared}
    apiKeys:
      externalSecret: {storeRef: {name: other}, remoteKey: k, targetSecretName: shared}
"#,
        );
        let mut problems = Problems::default();
        check("McpServer ns/s", &secret_uses(&server), &mut problems);
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        // b: same key, other remote value; c agrees with a; apiKeys: another store.
        assert_eq!(
            paths,
            [
                "spec.auth.issuers[1].hmacKey.externalSecret",
                "spec.auth.apiKeys.externalSecret"
            ],
            "{problems}"
        );
    }
}
