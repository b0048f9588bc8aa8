//! The dereference step: everything an McpServer refers to, read before the pure steps run.
//!
//! Policies come from the controller's reflector store (no API call); the ConfigMaps of
//! `spec.documents` and the Secrets of `spec.auth` are read by name, metadata only (the operator
//! never needs a Secret's data, and the server mounts the ConfigMaps itself). A missing ConfigMap
//! or Secret is not an error: it is reported in the status and the server is retried, while the
//! rest is still applied. This module decides nothing about validity; that is [`crate::validate`].

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::core::DeserializeGuard;
use kube::runtime::reflector::Store;
use kube::{Api, Client, ResourceExt};
use palisade_crds::problem::Problem;
use palisade_crds::{McpAccessPolicy, McpServer};

use super::error::DereferenceError;
use crate::bind::bound_policies;
use crate::secrets::secret_uses;

/// An object the McpServer names that does not exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    /// Its name (in the server's namespace).
    pub name: String,
    /// The field of the McpServer that names it.
    pub field_path: String,
    /// For a Secret: whether the operator's ExternalSecret writes it.
    pub external: bool,
}

/// What an McpServer refers to.
#[derive(Debug, Default)]
pub struct Dereferenced {
    /// The policies that bind the server, sorted by name.
    pub policies: Vec<McpAccessPolicy>,
    /// Refused references (cross-namespace `targetRefs`, selectors that cannot be evaluated).
    pub refused: Vec<Problem>,
    /// ConfigMaps of `spec.documents` that do not exist.
    pub missing_config_maps: Vec<Missing>,
    /// Secrets of `spec.auth` that do not exist (yet).
    pub missing_secrets: Vec<Missing>,
}

/// Reads what `server` refers to.
pub async fn dereference(
    client: &Client,
    policies: &Store<DeserializeGuard<McpAccessPolicy>>,
    server: &McpServer,
    namespace: &str,
) -> Result<Dereferenced, DereferenceError> {
    let mut out = policies_of(policies, server);

    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let mut seen = BTreeSet::new();
    for (i, collection) in server.spec.documents.iter().enumerate() {
        let Some(reference) = &collection.config_map_ref else {
            continue;
        };
        if !seen.insert(reference.name.clone()) {
            continue;
        }
        let found =
            config_maps
                .get_metadata_opt(&reference.name)
                .await
                .map_err(|source| DereferenceError::GetConfigMap {
                    namespace: namespace.to_owned(),
                    name: reference.name.clone(),
                    source,
                })?;
        if found.is_none() {
            out.missing_config_maps.push(Missing {
                name: reference.name.clone(),
                field_path: format!("spec.documents[{i}].configMapRef.name"),
                external: false,
            });
        }
    }

    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    // The server's own Secrets, then a container upstream's own credentials: those are not
    // mounted by the operator, but a missing one keeps the pod from starting (kubelet:
    // CreateContainerConfigError), so SecretsReady says so too.
    let referenced = secret_uses(server)
        .into_iter()
        .map(|u| {
            let external = u.external().is_some();
            (u.file.secret_name, u.field_path, external)
        })
        .chain(
            upstream_env_secrets(server)
                .into_iter()
                .map(|(name, field_path)| (name, field_path, false)),
        );
    let mut seen = BTreeSet::new();
    for (name, field_path, external) in referenced {
        if !seen.insert(name.clone()) {
            continue;
        }
        let found = secrets
            .get_metadata_opt(&name)
            .await
            .map_err(|source| DereferenceError::GetSecret {
                namespace: namespace.to_owned(),
                name: name.clone(),
                source,
            })?;
        if found.is_none() {
            out.missing_secrets.push(Missing {
                name,
                field_path,
                external,
            });
        }
    }
    Ok(out)
}

/// The Secrets a container upstream's `env` reads (`valueFrom.secretKeyRef`, unless optional),
/// with the field path of each (pure).
pub fn upstream_env_secrets(server: &McpServer) -> Vec<(String, String)> {
    let Some(container) = server.spec.upstream.as_ref().and_then(|u| u.container.as_ref()) else {
        return Vec::new();
    };
    container
        .env
        .iter()
        .enumerate()
        .filter_map(|(i, var)| {
            let reference = var.value_from.as_ref()?.secret_key_ref.as_ref()?;
            (reference.optional != Some(true)).then(|| {
                (
                    reference.name.clone(),
                    format!("spec.upstream.container.env[{i}].valueFrom.secretKeyRef.name"),
                )
            })
        })
        .collect()
}

/// The policies in `store` that bind `server`, and the refused references to it. Malformed
/// policies (which the store keeps as errors) are skipped: their own status says why.
pub fn policies_of(store: &Store<DeserializeGuard<McpAccessPolicy>>, server: &McpServer) -> Dereferenced {
    let all = store.state();
    let readable = all.iter().filter_map(|guard| guard.0.as_ref().ok());
    let bound = bound_policies(server, readable);
    let mut policies: Vec<McpAccessPolicy> = bound.policies.into_iter().cloned().collect();
    policies.sort_by_key(|p| p.name_any());
    Dereferenced {
        policies,
        refused: bound.refused,
        ..Dereferenced::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_container_upstream_s_required_env_secrets_are_checked_and_optional_ones_are_not() {
        let server: McpServer = yaml_serde::from_str(
            r#"
apiVersion: palisade.dev/v1alpha1
kind: McpServer
metadata: {name: notes, namespace: team-a}
spec:
  upstream:
    container:
      image: mcp/notes:1
      command: [notes-mcp]
      env:
        - {name: PLAIN, value: "1"}
        - name: TOKEN
          valueFrom: {secretKeyRef: {name: notes-token, key: token}}
        - name: EXTRA
          valueFrom: {secretKeyRef: {name: notes-extra, key: k, optional: true}}
  auth: {allowAnonymous: true}
"#,
        )
        .unwrap();
        assert_eq!(
            upstream_env_secrets(&server),
            [(
                "notes-token".to_owned(),
                "spec.upstream.container.env[1].valueFrom.secretKeyRef.name".to_owned()
            )]
        );
    }
}
