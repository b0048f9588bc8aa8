//! The apply step: server-side apply of every child, in the order of [`Children::iter`], as
//! [`FIELD_MANAGER`] with `force` (the operator owns every field it sets; a person's `kubectl
//! edit` of such a field is drift and is corrected), then deletion of the children a change
//! of the spec no longer wants: optional kinds switched off, ConfigMaps of removed inline
//! collections, unused ExternalSecrets. Those are found by the children's labels and deleted
//! only when the McpServer owns them.
//!
//! Deleting the McpServer itself needs nothing here: every child has a controller owner
//! reference, and Kubernetes' garbage collector removes them (no finalizer).

use std::collections::BTreeSet;
use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::error::ApplyError;
use super::status::ExternalSecrets;
use crate::FIELD_MANAGER;
use crate::build::external_secret::SyncState;
use crate::build::{Child, Children, ExternalSecret};
use crate::names::{self, Component};

/// What the apply step did.
#[derive(Debug, Clone)]
pub struct Applied {
    /// The Deployment as the API server returned it (with its status).
    pub deployment: Deployment,
    /// What happened to the ExternalSecrets.
    pub external_secrets: ExternalSecrets,
    /// The sync state of each applied ExternalSecret, from the object the API server returned.
    pub synced: Vec<SyncState>,
    /// `Kind name` of every child deleted because the spec no longer wants it.
    pub deleted: Vec<String>,
}

/// The McpServer the children belong to.
#[derive(Debug, Clone, Copy)]
pub struct Owner<'a> {
    /// Name.
    pub name: &'a str,
    /// Namespace.
    pub namespace: &'a str,
    /// `metadata.uid`.
    pub uid: &'a str,
}

/// The patch parameters of every apply: field manager [`FIELD_MANAGER`], forced.
pub fn apply_params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

/// Applies `children` of `owner`, then deletes the children it no longer wants.
pub async fn apply(client: &Client, owner: Owner<'_>, children: &Children) -> Result<Applied, ApplyError> {
    let mut deployment = None;
    let mut synced_states = Vec::new();
    let mut external_secrets = if children.external_secrets.is_empty() {
        ExternalSecrets::NotNeeded
    } else {
        ExternalSecrets::Applied
    };
    for child in children.iter() {
        let result = match child {
            Child::ServiceAccount(o) => apply_one(client, owner.namespace, o).await.map(drop),
            Child::NetworkPolicy(o) => apply_one(client, owner.namespace, o).await.map(drop),
            Child::ConfigMap(o) => apply_one(client, owner.namespace, o).await.map(drop),
            Child::ExternalSecret(o) => {
                if external_secrets == ExternalSecrets::NotInstalled {
                    continue;
                }
                match apply_one(client, owner.namespace, o).await {
                    // NB: a 404 on the apply of a custom resource means that its CRD is not
                    // installed (the namespace exists: the McpServer is in it). Everything else
                    // is still applied, and the status says what to install.
                    Err(kube::Error::Api(status)) if status.is_not_found() => {
                        external_secrets = ExternalSecrets::NotInstalled;
                        Ok(())
                    }
                    other => other.map(|applied| synced_states.push(SyncState::of(&applied))),
                }
            }
            Child::Service(o) => apply_one(client, owner.namespace, o).await.map(drop),
            Child::Deployment(o) => apply_one(client, owner.namespace, o)
                .await
                .map(|d| deployment = Some(d)),
            Child::PodDisruptionBudget(o) => apply_one(client, owner.namespace, o).await.map(drop),
            Child::HorizontalPodAutoscaler(o) => apply_one(client, owner.namespace, o).await.map(drop),
        };
        result.map_err(|source| ApplyError::ApplyChild {
            kind: child.kind(),
            namespace: owner.namespace.to_owned(),
            name: child.name().to_owned(),
            source,
        })?;
    }
    let deployment = deployment.expect("Children::iter always yields the Deployment");

    let mut deleted = Vec::new();
    let documents: BTreeSet<&str> = children
        .document_config_maps
        .iter()
        .filter_map(|c| c.metadata.name.as_deref())
        .collect();
    prune::<ConfigMap>(
        "ConfigMap",
        client,
        owner,
        Component::Documents,
        &documents,
        &mut deleted,
    )
    .await?;
    let synced: BTreeSet<&str> = children
        .external_secrets
        .iter()
        .filter_map(|c| c.metadata.name.as_deref())
        .collect();
    if external_secrets != ExternalSecrets::NotInstalled {
        prune::<ExternalSecret>(
            "ExternalSecret",
            client,
            owner,
            Component::Secrets,
            &synced,
            &mut deleted,
        )
        .await?;
    }
    let none = BTreeSet::new();
    if children.network_policy.is_none() {
        prune::<NetworkPolicy>("NetworkPolicy", client, owner, Component::Server, &none, &mut deleted).await?;
    }
    if children.pod_disruption_budget.is_none() {
        prune::<PodDisruptionBudget>(
            "PodDisruptionBudget",
            client,
            owner,
            Component::Server,
            &none,
            &mut deleted,
        )
        .await?;
    }
    if children.horizontal_pod_autoscaler.is_none() {
        prune::<HorizontalPodAutoscaler>(
            "HorizontalPodAutoscaler",
            client,
            owner,
            Component::Server,
            &none,
            &mut deleted,
        )
        .await?;
    }
    Ok(Applied {
        deployment,
        external_secrets,
        synced: synced_states,
        deleted,
    })
}

async fn apply_one<K>(client: &Client, namespace: &str, object: &K) -> Result<K, kube::Error>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope> + Clone + Debug + Serialize + DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let name = object.meta().name.as_deref().unwrap_or_default();
    api.patch(name, &apply_params(), &Patch::Apply(object)).await
}

/// The label selector of `owner`'s children of `component`.
pub fn children_selector(server: &str, component: Component) -> String {
    format!(
        "{}={server},{}={},{}={}",
        names::LABEL_INSTANCE,
        names::LABEL_MANAGED_BY,
        names::MANAGED_BY,
        names::LABEL_COMPONENT,
        component.as_str()
    )
}

/// Deletes every `K` with the labels of `owner`'s children of `component`, owned by `owner`,
/// whose name is not in `wanted`.
async fn prune<K>(
    kind: &'static str,
    client: &Client,
    owner: Owner<'_>,
    component: Component,
    wanted: &BTreeSet<&str>,
    deleted: &mut Vec<String>,
) -> Result<(), ApplyError>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope> + Clone + Debug + DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(client.clone(), owner.namespace);
    let params = ListParams::default().labels(&children_selector(owner.name, component));
    let list = match api.list_metadata(&params).await {
        Ok(list) => list,
        // The ExternalSecret CRD is not installed: there is nothing to delete.
        Err(kube::Error::Api(status)) if status.is_not_found() => return Ok(()),
        Err(source) => {
            return Err(ApplyError::ListChildren {
                kind,
                namespace: owner.namespace.to_owned(),
                server: owner.name.to_owned(),
                source,
            });
        }
    };
    for object in list.items {
        let Some(name) = object.metadata.name.as_deref() else {
            continue;
        };
        let owned = object
            .metadata
            .owner_references
            .iter()
            .flatten()
            .any(|r| r.uid == owner.uid && r.controller == Some(true));
        if wanted.contains(name) || !owned {
            continue;
        }
        match api.delete(name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.is_not_found() => {}
            Err(source) => {
                return Err(ApplyError::DeleteChild {
                    kind,
                    namespace: owner.namespace.to_owned(),
                    name: name.to_owned(),
                    source,
                });
            }
        }
        deleted.push(format!("{kind} {name}"));
    }
    Ok(())
}
