//! Where `spec.auth` and `spec.upstream` read secrets from, and the checks those sources must pass: every field
//! that names a Secret key, with the Secret, key and pod path it ends up at
//! ([`crate::secret_files::secret_file`], the function the compiler uses too).
//!
//! The operator mounts and syncs exactly these Secrets; [`check`] is part of
//! [`crate::validate`], so `palisade-server policy check` refuses what the operator refuses.

use std::collections::BTreeMap;

use kube::ResourceExt;

use crate::McpServer;
use crate::common::{ExternalSecretSource, SecretKeySource};
use crate::problem::Problems;
use crate::secret_files::{SecretFile, SecretPurpose, secret_file};

/// One field of `spec.auth` or `spec.upstream` that reads a Secret key.
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

/// Every secret source of `server`, in spec order (issuers, the API-key table, the upstream's
/// headers, then its OAuth client secret).
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
    let server_name = name.as_str();
    let headers = server.spec.upstream.iter().flat_map(move |upstream| {
        upstream.headers.iter().enumerate().map(move |(i, header)| SecretUse {
            field_path: format!("spec.upstream.headers[{i}].valueFrom"),
            source: &header.value_from,
            file: secret_file(
                server_name,
                &header.value_from,
                SecretPurpose::UpstreamHeader { name: &header.name },
            ),
        })
    });
    let oauth = server
        .spec
        .upstream
        .iter()
        .filter_map(|upstream| upstream.oauth.as_ref())
        .map(move |oauth| SecretUse {
            field_path: "spec.upstream.oauth.clientSecret".into(),
            source: &oauth.client_secret,
            file: secret_file(server_name, &oauth.client_secret, SecretPurpose::UpstreamClientSecret),
        });
    issuers.chain(api_keys).chain(headers).chain(oauth).collect()
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
    use crate::test_objects::server;
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
