//! The files a server pod sees (DESIGN.md, "What a server pod sees"), as volumes and mounts:
//!
//! | mount | volume |
//! |---|---|
//! | `/etc/palisade/policy/` (`policy.yaml`) | ConfigMap `<server>-policy` |
//! | `/var/lib/palisade/documents/<collection>/` | the collection's ConfigMap, all keys |
//! | `/etc/palisade/secrets/<secret>/` | each Secret `spec.auth` reads, only the keys it uses |
//! | `/var/run/secrets/palisade/kubernetes/` | a service-account token and the cluster CA, only for an issuer declared `kubernetesServiceAccounts: true` ([`super::cluster_issuer`]) |
//! | `/tmp` | an `emptyDir` (the root filesystem is read-only) |
//!
//! The paths come from the constants and functions of `palisade-crds` that the policy compiler
//! and the server use, so the three cannot drift apart.
//!
//! NB: never a `subPath` mount: the kubelet does not update those, and the server relies on
//! ConfigMap and Secret updates arriving in place for hot reload.

use std::path::Path;

use palisade_crds::document::{DEFAULT_DOCUMENTS_DIR, DEFAULT_POLICY_PATH, SECRETS_DIR};
use palisade_crds::k8s_openapi::api::core::v1::{
    ConfigMapVolumeSource, EmptyDirVolumeSource, KeyToPath, SecretVolumeSource, Volume, VolumeMount,
};
use palisade_crds::k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::cluster_issuer;
use crate::names;
use crate::secrets::{mounted_secrets, secret_uses};
use crate::validate::ValidatedServer;

/// Mode of mounted files: readable by the owner and the pod's `fsGroup`, nobody else.
const FILE_MODE: i32 = 0o440;

/// Directory of the policy file in the pod.
pub fn policy_dir() -> &'static str {
    Path::new(DEFAULT_POLICY_PATH)
        .parent()
        .and_then(Path::to_str)
        .expect("DEFAULT_POLICY_PATH is an absolute path")
}

/// File name of the policy file, also its key in the policy ConfigMap.
pub fn policy_file_name() -> &'static str {
    Path::new(DEFAULT_POLICY_PATH)
        .file_name()
        .and_then(|f| f.to_str())
        .expect("DEFAULT_POLICY_PATH names a file")
}

/// Every volume of the pod with its mount in the server container, in a stable order: policy,
/// document collections (spec order), Secrets (by name), the service-account issuer's token and
/// CA (when needed), `/tmp`.
pub fn volumes(input: &ValidatedServer<'_>) -> Vec<(Volume, VolumeMount)> {
    let mut volumes = vec![(
        Volume {
            name: names::POLICY_VOLUME.into(),
            config_map: Some(ConfigMapVolumeSource {
                name: names::policy_config_map(input.name()),
                default_mode: Some(FILE_MODE),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        read_only(names::POLICY_VOLUME, policy_dir()),
    )];
    for collection in &input.server().spec.documents {
        let config_map = match &collection.config_map_ref {
            Some(reference) => reference.name.clone(),
            None => names::documents_config_map(input.name(), &collection.collection),
        };
        let volume = names::documents_volume(&collection.collection);
        volumes.push((
            Volume {
                name: volume.clone(),
                config_map: Some(ConfigMapVolumeSource {
                    name: config_map,
                    default_mode: Some(FILE_MODE),
                    ..ConfigMapVolumeSource::default()
                }),
                ..Volume::default()
            },
            read_only(&volume, &format!("{DEFAULT_DOCUMENTS_DIR}/{}", collection.collection)),
        ));
    }
    for (secret, keys) in mounted_secrets(&secret_uses(input.server())) {
        let volume = names::secret_volume(&secret);
        volumes.push((
            Volume {
                name: volume.clone(),
                secret: Some(SecretVolumeSource {
                    secret_name: Some(secret.clone()),
                    items: Some(
                        keys.into_iter()
                            .map(|key| KeyToPath {
                                path: key.clone(),
                                key,
                                mode: None,
                            })
                            .collect(),
                    ),
                    default_mode: Some(FILE_MODE),
                    optional: None,
                }),
                ..Volume::default()
            },
            read_only(&volume, &format!("{SECRETS_DIR}/{secret}")),
        ));
    }
    if cluster_issuer::needed(input.server()) {
        volumes.push(cluster_issuer::volume(FILE_MODE));
    }
    volumes.push((
        Volume {
            name: names::TMP_VOLUME.into(),
            empty_dir: Some(EmptyDirVolumeSource {
                medium: None,
                size_limit: Some(Quantity("64Mi".into())),
            }),
            ..Volume::default()
        },
        VolumeMount {
            name: names::TMP_VOLUME.into(),
            mount_path: "/tmp".into(),
            ..VolumeMount::default()
        },
    ));
    volumes
}

fn read_only(volume: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: volume.into(),
        mount_path: path.into(),
        read_only: Some(true),
        ..VolumeMount::default()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use palisade_crds::document::KeySource;

    use super::*;
    use crate::settings::Settings;
    use crate::test_support::server;
    use crate::validate::validate;

    #[test]
    fn the_policy_path_is_split_into_a_mounted_directory_and_a_key() {
        assert_eq!(policy_dir(), "/etc/palisade/policy");
        assert_eq!(policy_file_name(), "policy.yaml");
    }

    /// Every file the compiled policy names is a file the pod has: mount path + item path.
    #[test]
    fn secret_mounts_are_the_paths_in_the_compiled_policy() {
        let server = server(
            r#"
metadata: {name: s, namespace: ns}
spec:
  auth:
    issuers:
      - issuer: palisade-dev
        hmacKey: {secretKeyRef: {name: jwt.keys, key: dev}}
      - issuer: ci
        hmacKey:
          externalSecret: {storeRef: {kind: ClusterSecretStore, name: gcp}, remoteKey: ci-key}
      - issuer: https://accounts.google.com
    apiKeys:
      externalSecret: {storeRef: {name: vault}, remoteKey: keys}
"#,
        );
        let validated = validate(&server, &[], &Settings::default()).unwrap();
        let authentication = &validated.document().authentication;
        let mut policy_files: BTreeSet<String> = authentication
            .issuers
            .iter()
            .filter_map(|i| match &i.keys {
                KeySource::HmacKeyFile(path) => Some(path.clone()),
                _ => None,
            })
            .collect();
        policy_files.extend(authentication.api_keys_file.clone());
        assert_eq!(policy_files.len(), 3);

        let mut pod_files = BTreeSet::new();
        for (volume, mount) in volumes(&validated) {
            assert_eq!(volume.name, mount.name);
            if let Some(secret) = volume.secret {
                assert!(mount.sub_path.is_none());
                for item in secret.items.unwrap() {
                    pod_files.insert(format!("{}/{}", mount.mount_path, item.path));
                }
            }
        }
        assert_eq!(pod_files, policy_files);
    }

    #[test]
    fn collections_are_mounted_where_the_server_reads_them() {
        let server = server(
            r##"
metadata: {name: s, namespace: ns}
spec:
  documents:
    - {collection: public, configMapRef: {name: public-docs}}
    - {collection: faq, inline: [{name: a.md, content: "# A"}]}
  auth: {allowAnonymous: true}
"##,
        );
        let validated = validate(&server, &[], &Settings::default()).unwrap();
        let mounts: Vec<(String, String, String)> = volumes(&validated)
            .into_iter()
            .filter_map(|(volume, mount)| {
                let config_map = volume.config_map?.name;
                Some((volume.name, config_map, mount.mount_path))
            })
            .collect();
        assert_eq!(
            mounts,
            [
                ("policy".into(), "s-policy".into(), "/etc/palisade/policy".into()),
                (
                    "docs-public".into(),
                    "public-docs".into(),
                    "/var/lib/palisade/documents/public".into()
                ),
                (
                    "docs-faq".into(),
                    "s.docs.faq".into(),
                    "/var/lib/palisade/documents/faq".into()
                ),
            ]
        );
    }
}
