//! The apply step: server-side apply of every child, in the order of [`Children::iter`], as
//! [`FIELD_MANAGER`] with `force` (the operator owns every field it sets; a person's `kubectl
//! edit` of such a field is drift and is corrected), then deletion of every child the operator
//! made for this server that it did not just apply: optional kinds switched off, ConfigMaps of
//! removed collections, unused ExternalSecrets, and children under names an older operator
//! version used.
//!
//! Pruning is generic: for every kind of [`ChildKind::ALL`] (the table the builders' [`Child`]
//! comes from), the objects labelled `app.kubernetes.io/managed-by=palisade-operator` and
//! `app.kubernetes.io/instance=<server>` whose controller owner reference is this McpServer's
//! uid are deleted unless their (kind, name) was applied. An object with the labels but another
//! owner (or none) is never touched.
//!
//! While the HorizontalPodAutoscaler is on, the Deployment is applied without `spec.replicas`.
//! If the operator's last apply still owns that field (autoscaling was just switched on), a
//! second field manager first applies the live replica count ([`replicas_handover`]), so that
//! dropping the field does not reset the Deployment to one pod before the autoscaler acts.
//!
//! The lists of pruning cost one request per kind (eight), more than the applies. They are
//! skipped when the same set of children was applied and pruned for this McpServer (its uid)
//! before, less than [`PRUNE_AT_LEAST_EVERY`] ago, by this process ([`PruneMemory`]): the set
//! changes with every spec change that could leave a child behind (a kind switched off, a
//! collection removed, a rename), a new process (an upgrade, another leader) remembers nothing
//! and prunes on its first reconcile of each server, and a failed prune is not remembered.
//!
//! Deleting the McpServer itself needs nothing here: every child has a controller owner
//! reference, and Kubernetes' garbage collector removes them (no finalizer).

use std::collections::BTreeSet;
use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::{Api, Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::error::ApplyError;
use super::status::ExternalSecrets;
use crate::FIELD_MANAGER;
use crate::build::deployment::{REPLICAS_HANDOVER_MANAGER, replicas_handover};
use crate::build::external_secret::SyncState;
use crate::build::{Child, ChildKind, Children};
use crate::names;

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

/// How long a prune of the same set of children is remembered: a full prune at least this often.
pub const PRUNE_AT_LEAST_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// Which set of children was last pruned for each McpServer (by uid), and when.
#[derive(Debug, Default)]
pub struct PruneMemory {
    last: std::sync::Mutex<std::collections::HashMap<String, (u64, std::time::Instant)>>,
}

impl PruneMemory {
    /// Whether `uid`'s children, applied as `fingerprint`, must be listed for pruning at `now`.
    pub fn needed(&self, uid: &str, fingerprint: u64, now: std::time::Instant) -> bool {
        let last = self.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        !last
            .get(uid)
            .is_some_and(|(f, at)| *f == fingerprint && now.saturating_duration_since(*at) < PRUNE_AT_LEAST_EVERY)
    }

    /// Remembers that `uid`'s children, applied as `fingerprint`, were pruned at `now`.
    pub fn pruned(&self, uid: &str, fingerprint: u64, now: std::time::Instant) {
        self.last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(uid.to_owned(), (fingerprint, now));
    }
}

/// The set of applied children (and whether the ExternalSecret kind is served), hashed.
fn fingerprint(applied: &BTreeSet<(ChildKind, &str)>, external_secrets: ExternalSecrets) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    applied.hash(&mut hasher);
    (external_secrets == ExternalSecrets::NotInstalled).hash(&mut hasher);
    hasher.finish()
}

/// Applies `children` of `owner`, then deletes the children it no longer wants (unless `memory`
/// says the same set was pruned recently).
pub async fn apply(
    client: &Client,
    owner: Owner<'_>,
    children: &Children,
    memory: &PruneMemory,
) -> Result<Applied, ApplyError> {
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
                    Err(error) if is_not_found(&error) => {
                        external_secrets = ExternalSecrets::NotInstalled;
                        Ok(())
                    }
                    other => other.map(|applied| synced_states.push(SyncState::of(&applied))),
                }
            }
            Child::Service(o) => apply_one(client, owner.namespace, o).await.map(drop),
            Child::Deployment(o) => match hand_over_replicas(client, owner.namespace, o).await {
                Ok(()) => apply_one(client, owner.namespace, o)
                    .await
                    .map(|d| deployment = Some(d)),
                Err(error) => Err(error),
            },
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

    let applied: BTreeSet<(ChildKind, &str)> = children.iter().map(|c| (c.child_kind(), c.name())).collect();
    let mut deleted = Vec::new();
    let fingerprint = fingerprint(&applied, external_secrets);
    if memory.needed(owner.uid, fingerprint, std::time::Instant::now()) {
        for &kind in ChildKind::ALL {
            if kind == ChildKind::ExternalSecret && external_secrets == ExternalSecrets::NotInstalled {
                continue;
            }
            let existing = list_children(client, owner, kind).await?;
            for name in stale(&existing, kind, &applied, owner.uid) {
                delete_child(client, owner, kind, &name).await?;
                deleted.push(format!("{} {name}", kind.as_str()));
            }
        }
        memory.pruned(owner.uid, fingerprint, std::time::Instant::now());
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

/// Before a Deployment without `spec.replicas` is applied: when the operator's field manager
/// still owns the field on the live Deployment, [`REPLICAS_HANDOVER_MANAGER`] applies the live
/// count first (not forced), so the field keeps an owner and its value. A conflict means another
/// manager (the autoscaler) changed the count meanwhile and owns it: nothing to hand over.
async fn hand_over_replicas(client: &Client, namespace: &str, built: &Deployment) -> Result<(), kube::Error> {
    if built.spec.as_ref().is_some_and(|s| s.replicas.is_some()) {
        return Ok(());
    }
    let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let name = built.metadata.name.as_deref().unwrap_or_default();
    // NB: a list by name, not a get: the operator's RBAC grants list (and watch) on its
    // children, and the object comes back whole, with its managed fields.
    let params = ListParams::default().fields(&format!("metadata.name={name}"));
    let Some(live) = api.list(&params).await?.items.into_iter().next() else {
        return Ok(());
    };
    let Some(patch) = replicas_handover(built, &live) else {
        return Ok(());
    };
    match api
        .patch(
            name,
            &PatchParams::apply(REPLICAS_HANDOVER_MANAGER),
            &Patch::Apply(&patch),
        )
        .await
    {
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        other => other.map(drop),
    }
}

/// Whether the API server answered 404: the object, or the whole kind, does not exist.
///
/// NB: by the code, not by `Status::is_not_found`. For a kind it does not serve (the
/// ExternalSecret CRD is not installed) the API server answers `404 page not found` in plain
/// text; kube then makes a `Status` with the code 404 and the reason "Failed to parse error data",
/// which `is_not_found` (kube 5) does not count.
pub fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 404)
}

/// The label selector of every child of McpServer `server`.
pub fn children_selector(server: &str) -> String {
    format!(
        "{}={server},{}={}",
        names::LABEL_INSTANCE,
        names::LABEL_MANAGED_BY,
        names::MANAGED_BY,
    )
}

/// An object with the labels of a child: its name and the uid of its controller owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Labelled {
    /// Name.
    pub name: String,
    /// The uid of its controller owner reference, if it has one.
    pub controller: Option<String>,
}

/// The objects of `kind` labelled as children of `owner` (metadata only). A kind whose API
/// answers 404 (the ExternalSecret CRD is not installed) has none.
async fn list_children(client: &Client, owner: Owner<'_>, kind: ChildKind) -> Result<Vec<Labelled>, ApplyError> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), owner.namespace, &kind.api_resource());
    let params = ListParams::default().labels(&children_selector(owner.name));
    match api.list_metadata(&params).await {
        Ok(list) => Ok(list
            .items
            .into_iter()
            .filter_map(|object| {
                let controller = object
                    .metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .find(|r| r.controller == Some(true))
                    .map(|r| r.uid.clone());
                Some(Labelled {
                    name: object.metadata.name?,
                    controller,
                })
            })
            .collect()),
        Err(error) if is_not_found(&error) => Ok(Vec::new()),
        Err(source) => Err(ApplyError::ListChildren {
            kind: kind.as_str(),
            namespace: owner.namespace.to_owned(),
            server: owner.name.to_owned(),
            source,
        }),
    }
}

/// The names of the `existing` objects of `kind` to delete: those `owner_uid` controls that
/// were not `applied`.
pub fn stale(
    existing: &[Labelled],
    kind: ChildKind,
    applied: &BTreeSet<(ChildKind, &str)>,
    owner_uid: &str,
) -> Vec<String> {
    existing
        .iter()
        .filter(|o| o.controller.as_deref() == Some(owner_uid))
        .filter(|o| !applied.contains(&(kind, o.name.as_str())))
        .map(|o| o.name.clone())
        .collect()
}

async fn delete_child(client: &Client, owner: Owner<'_>, kind: ChildKind, name: &str) -> Result<(), ApplyError> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), owner.namespace, &kind.api_resource());
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(error) if is_not_found(&error) => Ok(()),
        Err(source) => Err(ApplyError::DeleteChild {
            kind: kind.as_str(),
            namespace: owner.namespace.to_owned(),
            name: name.to_owned(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labelled(name: &str, controller: Option<&str>) -> Labelled {
        Labelled {
            name: name.into(),
            controller: controller.map(String::from),
        }
    }

    #[test]
    fn only_owned_children_that_were_not_applied_are_stale() {
        let applied = BTreeSet::from([(ChildKind::ConfigMap, "s-policy"), (ChildKind::ConfigMap, "s.docs.faq")]);
        let existing = [
            labelled("s-policy", Some("uid-s")),
            labelled("s.docs.faq", Some("uid-s")),
            // The name an older operator gave the same collection.
            labelled("s-docs-faq", Some("uid-s")),
            // Labelled like a child, but another object's (or nobody's).
            labelled("s-docs-other", Some("uid-other")),
            labelled("s-docs-orphan", None),
        ];
        assert_eq!(
            stale(&existing, ChildKind::ConfigMap, &applied, "uid-s"),
            ["s-docs-faq"]
        );
        // The same name of another kind is not what was applied.
        assert_eq!(
            stale(
                &[labelled("s-policy", Some("uid-s"))],
                ChildKind::Service,
                &applied,
                "uid-s"
            ),
            ["s-policy"]
        );
    }

    #[test]
    fn a_prune_is_remembered_for_the_same_children_and_at_most_an_hour() {
        let memory = PruneMemory::default();
        let start = std::time::Instant::now();
        assert!(memory.needed("uid-s", 1, start), "nothing remembered: prune");
        memory.pruned("uid-s", 1, start);
        assert!(!memory.needed("uid-s", 1, start + std::time::Duration::from_secs(60)));
        assert!(memory.needed("uid-s", 2, start), "another set of children");
        assert!(memory.needed("uid-other", 1, start), "another server");
        assert!(
            memory.needed("uid-s", 1, start + PRUNE_AT_LEAST_EVERY),
            "at least hourly"
        );
    }

    #[test]
    fn the_selector_finds_every_child_of_the_server_whatever_its_component() {
        assert_eq!(
            children_selector("company-info"),
            "app.kubernetes.io/instance=company-info,app.kubernetes.io/managed-by=palisade-operator"
        );
    }
}
