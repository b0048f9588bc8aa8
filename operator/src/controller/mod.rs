//! `palisade-operator run`: the controllers.
//!
//! The McpServer controller reconciles one server in the steps of DESIGN.md: [`dereference`]
//! → [`crate::validate`] (pure) → [`crate::build`] (pure) → [`apply`] → [`status`] and
//! [`events`]. It is triggered by the McpServer, by every child it owns, by the
//! McpAccessPolicies that target it, and by the ConfigMaps and Secrets it names. The
//! McpAccessPolicy controller ([`policy_status`]) only writes the policies' status.
//!
//! Both controllers watch their own kind through [`DeserializeGuard`], so an object that does not
//! match the Rust types (an older CRD version, a hand-edited object) is logged and skipped and
//! never stops a watch. Neither adds a finalizer: children carry owner references, and deleting
//! an McpServer leaves nothing behind.

pub mod apply;
pub mod dereference;
pub mod error;
pub mod events;
pub mod filters;
pub mod inventory;
pub mod policy_status;
pub mod rollout;
pub mod scope;
pub mod shared;
pub mod status;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{PartialObjectMeta, Patch};
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{Controller, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use palisade_crds::compile::in_cluster_endpoint;
use palisade_crds::{McpAccessPolicy, McpServer};
use serde_json::json;
use tracing::Instrument as _;

pub use error::Error;

use self::apply::{Owner, apply_params};
use self::inventory::Inventory;
use self::status::{Observation, PolicyOutcome};
use crate::build::{ExternalSecret, build_children};
use crate::metrics::Metrics;
use crate::names;
use crate::secrets::secret_uses;
use crate::settings::Settings;
use crate::validate::validate;

/// Name of the McpServer controller in metrics, logs and events.
pub const SERVER_CONTROLLER: &str = "mcpserver";
/// Name of the McpAccessPolicy controller in metrics and logs.
pub const POLICY_CONTROLLER: &str = "mcpaccesspolicy";

/// How often a healthy server is reconciled anyway (drift the watches missed).
pub const RESYNC: Duration = Duration::from_secs(300);
/// How soon a server waiting for a ConfigMap, a Secret or its pods is looked at again (the
/// watches usually trigger it earlier).
pub const WAITING: Duration = Duration::from_secs(30);
/// How often a proxy is looked at again: its upstream's tools change without any Kubernetes
/// event (an upgraded or rug-pulling upstream), and `status.upstream` and `ToolsPinned` follow
/// within this time.
pub const INVENTORY_POLL: Duration = Duration::from_secs(30);
/// How soon a server whose ready pods do not all serve the desired policy yet is looked at again
/// (kubelet projects a ConfigMap change within about a minute; a pod's readiness change triggers
/// a reconcile at once).
pub const ROLLOUT_POLL: Duration = Duration::from_secs(5);
/// First delay after a transient error; doubled per consecutive failure up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_secs(5);
/// Longest delay after transient errors.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// What every reconcile shares.
pub struct Context {
    /// The API client.
    pub client: Client,
    /// Operator-wide settings for the builders.
    pub settings: Settings,
    /// The one event recorder.
    pub events: events::Events,
    /// Every McpAccessPolicy (the policy controller's reflector store).
    pub policies: Store<DeserializeGuard<McpAccessPolicy>>,
    /// Every McpServer (the server controller's reflector store).
    pub servers: Store<DeserializeGuard<McpServer>>,
    /// The metrics.
    pub metrics: Arc<Metrics>,
    /// The servers' pods (the shared pod store; metadata and status).
    pub pods: Store<Pod>,
    /// Asks a pod which policy it serves.
    pub probe: Arc<dyn rollout::ReadyProbe>,
    /// Which children were pruned for each server, so that an unchanged set is not listed again.
    pub pruned: apply::PruneMemory,
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    /// A context; `policies` and `servers` are the controllers' stores (tests fill them through
    /// a `reflector::store::Writer`).
    pub fn new(
        client: Client,
        settings: Settings,
        policies: Store<DeserializeGuard<McpAccessPolicy>>,
        servers: Store<DeserializeGuard<McpServer>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let reporter = Reporter {
            controller: names::MANAGED_BY.into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Self {
            events: events::Events::new(Recorder::new(client.clone(), reporter)),
            client,
            settings,
            policies,
            servers,
            metrics,
            pods: kube::runtime::reflector::store().0,
            probe: Arc::new(rollout::HttpReadyProbe),
            pruned: apply::PruneMemory::default(),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// The same context reading the servers' pods from `pods` and asking them through `probe`
    /// (without it no pod is known, and no policy counts as rolled out).
    #[must_use]
    pub fn with_pods(mut self, pods: Store<Pod>, probe: Arc<dyn rollout::ReadyProbe>) -> Self {
        self.pods = pods;
        self.probe = probe;
        self
    }

    /// The delay before retrying `key` after one more transient failure.
    fn next_backoff(&self, key: &str) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let count = failures.entry(key.to_owned()).or_insert(0);
        let delay = FIRST_BACKOFF
            .saturating_mul(2u32.saturating_pow(*count))
            .min(MAX_BACKOFF);
        *count = count.saturating_add(1);
        delay
    }

    fn succeeded(&self, key: &str) {
        self.failures.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
    }
}

fn now() -> Time {
    Time(Timestamp::now())
}

fn key_of<K: Resource<DynamicType = ()>>(object: &K) -> String {
    format!(
        "{}/{}/{}",
        K::kind(&()),
        object.meta().namespace.as_deref().unwrap_or_default(),
        object.meta().name.as_deref().unwrap_or_default()
    )
}

/// Reconciles one McpServer.
pub async fn reconcile(object: Arc<DeserializeGuard<McpServer>>, ctx: Arc<Context>) -> Result<Action, Error> {
    measured(&object, &ctx, SERVER_CONTROLLER, |server| {
        reconcile_server(server, &ctx)
    })
    .await
}

/// Runs `work` on the object of one reconcile, timed and counted for `controller`, and forgets
/// the object's failures (its back-off) when it succeeds. A malformed object (kept by the store
/// as its parse error) is skipped until it changes: its own problem, logged, never a crash.
async fn measured<'a, K, Fut>(
    object: &'a DeserializeGuard<K>,
    ctx: &Context,
    controller: &'static str,
    work: impl FnOnce(&'a K) -> Fut,
) -> Result<Action, Error>
where
    K: Resource<DynamicType = ()>,
    Fut: Future<Output = Result<Action, Error>>,
{
    let resource = match &object.0 {
        Ok(resource) => resource,
        Err(invalid) => {
            tracing::warn!(error = %invalid, name = object.name_any(), namespace = object.namespace(), kind = %K::kind(&()), "skipping a malformed object");
            return Ok(Action::await_change());
        }
    };
    let started = Instant::now();
    let result = work(resource).await;
    ctx.metrics.reconciled(controller, started.elapsed());
    if result.is_ok() {
        ctx.succeeded(&key_of(object));
    }
    result
}

/// One reconcile of `server`, as a span (`reconcile McpServer`) whose children are its steps
/// (`dereference`, `validate`, `build`, `apply`, `status`) and the API requests they make; a
/// failed reconcile marks it as an error, with the failed step as `error.type`.
#[tracing::instrument(
    name = "reconcile McpServer",
    skip_all,
    fields(
        namespace = server.namespace(),
        name = server.name_any(),
        otel.status_code = tracing::field::Empty,
        error.type = tracing::field::Empty,
    )
)]
async fn reconcile_server(server: &McpServer, ctx: &Context) -> Result<Action, Error> {
    let result = reconcile_server_steps(server, ctx).await;
    if let Err(error) = &result {
        record_failure(error);
    }
    result
}

/// Marks the current reconcile span as failed.
fn record_failure(error: &Error) {
    let span = tracing::Span::current();
    span.record("otel.status_code", "ERROR");
    span.record("error.type", error.metric_label());
}

async fn reconcile_server_steps(server: &McpServer, ctx: &Context) -> Result<Action, Error> {
    if server.metadata.deletion_timestamp.is_some() {
        // Kubernetes' garbage collector deletes the children; applying now would race it.
        tracing::debug!("deletion in progress; nothing to apply");
        return Ok(Action::await_change());
    }
    let namespace = server.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    let name = server.metadata.name.clone().ok_or(Error::MissingMetadata("name"))?;
    let uid = server.metadata.uid.clone().ok_or(Error::MissingMetadata("uid"))?;
    // NB: until the policy cache has listed every McpAccessPolicy once, a server would seem to
    // have no policy and get the deny-all one; after an operator restart that would break
    // running servers. Wait for the first full list.
    shared::until_ready(&ctx.policies)
        .await
        .map_err(|_| Error::CacheUnavailable("McpAccessPolicies"))?;

    let found = dereference::dereference(&ctx.client, &ctx.policies, server, &namespace)
        .instrument(tracing::info_span!("dereference"))
        .await?;
    for refused in &found.refused {
        tracing::info!(%refused, "refused reference");
    }
    let policies: Vec<&McpAccessPolicy> = found.policies.iter().collect();
    // NB: the same domain reaches `compile` through `validate`, so the endpoint shown here is the
    // default audience of the compiled policy and one of the Host names the pods accept.
    let endpoint = in_cluster_endpoint(server, &ctx.settings.cluster_domain);
    let mut observation = Observation {
        generation: server.metadata.generation,
        namespace: &namespace,
        endpoint,
        policy: PolicyOutcome::Valid {
            hash: String::new(),
            bound: Vec::new(),
            reachable: None,
            unreachable: Vec::new(),
            insecure_issuers: Vec::new(),
        },
        missing_config_maps: &found.missing_config_maps,
        missing_secrets: &found.missing_secrets,
        external_secrets: status::ExternalSecrets::NotNeeded,
        synced: &[],
        deployment: None,
        apply_error: None,
        rollout: None,
        inventory: None,
        pod_security: crate::build::upstream_container::pod_security(server),
    };

    let owner = Owner {
        name: &name,
        namespace: &namespace,
        uid: &uid,
    };
    let validated = tracing::info_span!("validate").in_scope(|| validate(server, &policies, &ctx.settings));
    let (children, invalid) = match validated {
        Ok(validated) => {
            for warning in validated.warnings() {
                tracing::debug!(%warning, "warning");
            }
            let (reachable, unreachable) = validated.compiled().policy.reachability();
            observation.policy = PolicyOutcome::Valid {
                hash: validated.policy_hash().to_owned(),
                bound: validated.bound_policies().to_vec(),
                // A proxy's tools are its upstream's: the policy alone does not know them.
                reachable: server
                    .spec
                    .upstream
                    .is_none()
                    .then(|| i32::try_from(reachable.len()).unwrap_or(i32::MAX)),
                unreachable: unreachable.iter().map(|t| (*t).to_owned()).collect(),
                insecure_issuers: validated
                    .compiled()
                    .policy
                    .document()
                    .authentication
                    .issuers
                    .iter()
                    .filter(|i| i.allow_insecure_http)
                    .map(|i| i.issuer.clone())
                    .collect(),
            };
            let children = tracing::info_span!("build").in_scope(|| build_children(&validated, &ctx.settings));
            (children, None)
        }
        Err(invalid) => {
            observation.policy = PolicyOutcome::Invalid {
                reason: invalid.reason(),
                message: invalid.problems().to_string(),
            };
            let kept = children_keeping_the_policy_in_force(ctx, server, owner)
                .instrument(tracing::info_span!("build"))
                .await?;
            match kept {
                // A broken policy holds back only the policy: the other children follow the
                // server's spec (image, security settings, replicas).
                Some(children) => (children, Some(invalid)),
                // The server's own spec is invalid, or no policy was ever rolled out: nothing
                // is applied.
                None => {
                    write_status(ctx, server, &observation).await?;
                    return Err(Error::Validate(invalid));
                }
            }
        }
    };
    // The policy the pods should serve: the one just compiled, or the one kept in force.
    let desired = children
        .policy_config_map
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(names::POLICY_HASH_ANNOTATION).cloned());
    let applied = match apply::apply(&ctx.client, owner, &children, &ctx.pruned)
        .instrument(tracing::info_span!("apply"))
        .await
    {
        Ok(applied) => applied,
        Err(error) => {
            observation.rollout = observed_rollout(ctx, &namespace, &name, desired.as_deref()).await;
            observation.inventory = observed_inventory(ctx, server, &namespace, &name).await;
            // The refusal reaches the status (Ready=False, ApplyFailed) and a Warning event;
            // the reconcile is retried with back-off.
            observation.apply_error = Some(error.to_string());
            if let Err(status_error) = write_status(ctx, server, &observation).await {
                tracing::warn!(error = %status_error, "cannot write the status of a failed apply");
            }
            return Err(error.into());
        }
    };
    for deleted in &applied.deleted {
        tracing::info!(%deleted, "deleted a child the spec no longer wants");
    }
    observation.external_secrets = applied.external_secrets;
    observation.synced = &applied.synced;
    observation.deployment = Some(&applied.deployment);
    observation.rollout = observed_rollout(ctx, &namespace, &name, desired.as_deref()).await;
    observation.inventory = observed_inventory(ctx, server, &namespace, &name).await;
    let written = write_status(ctx, server, &observation).await?;
    if let Some(invalid) = invalid {
        return Err(Error::Validate(invalid));
    }
    if observation
        .rollout
        .as_ref()
        .is_some_and(|r| r.ready > 0 && !r.complete())
    {
        // Pods are ready but not all on the desired policy: kubelet has yet to project it, or a
        // pod has yet to reload. Bounded polling; pod readiness changes trigger sooner.
        return Ok(Action::requeue(ROLLOUT_POLL));
    }

    let waiting = !found.missing_config_maps.is_empty()
        || !found.missing_secrets.is_empty()
        || applied.external_secrets == status::ExternalSecrets::NotInstalled
        || !written
            .conditions
            .iter()
            .any(|c| c.type_ == palisade_crds::conditions::READY && c.status == "True");
    Ok(Action::requeue(if observation.inventory.is_some() {
        INVENTORY_POLL
    } else if waiting {
        WAITING
    } else {
        RESYNC
    }))
}

/// What the ready pods of server `name` report, against `desired` (`None` when no policy
/// ConfigMap carries a hash: nothing to compare with).
async fn observed_rollout(
    ctx: &Context,
    namespace: &str,
    name: &str,
    desired: Option<&str>,
) -> Option<rollout::Rollout> {
    let desired = desired?;
    Some(rollout::observe(&ctx.pods, ctx.probe.as_ref(), namespace, name, desired).await)
}

/// A proxy's upstream inventory, from its ready pods; `None` for a document server.
async fn observed_inventory(ctx: &Context, server: &McpServer, namespace: &str, name: &str) -> Option<Inventory> {
    server.spec.upstream.as_ref()?;
    Some(inventory::observe(&ctx.pods, ctx.probe.as_ref(), namespace, name).await)
}

/// When the McpAccessPolicies bound to `server` are invalid but its own spec is valid and a
/// policy was rolled out before: every child built from the server's spec, with the policy
/// ConfigMap as it is in the cluster (the last good policy stays in force, byte for byte).
/// `None` when the server's own spec is invalid or no policy ConfigMap exists yet.
async fn children_keeping_the_policy_in_force(
    ctx: &Context,
    server: &McpServer,
    owner: Owner<'_>,
) -> Result<Option<crate::build::Children>, Error> {
    let Ok(alone) = validate(server, &[], &ctx.settings) else {
        return Ok(None);
    };
    let policy_map = names::policy_config_map(owner.name);
    let in_force = Api::<ConfigMap>::namespaced(ctx.client.clone(), owner.namespace)
        .get_opt(&policy_map)
        .await
        .map_err(|source| error::ApplyError::ReadChild {
            kind: "ConfigMap",
            namespace: owner.namespace.to_owned(),
            name: policy_map.clone(),
            source,
        })?;
    let Some(in_force) = in_force else {
        return Ok(None);
    };
    let mut children = build_children(&alone, &ctx.settings);
    let kept = &mut children.policy_config_map;
    kept.data = in_force.data;
    kept.binary_data = in_force.binary_data;
    let hash = in_force
        .metadata
        .annotations
        .and_then(|a| a.get(names::POLICY_HASH_ANNOTATION).cloned());
    let annotations = kept.metadata.annotations.get_or_insert_with(Default::default);
    match hash {
        Some(hash) => annotations.insert(names::POLICY_HASH_ANNOTATION.to_owned(), hash),
        None => annotations.remove(names::POLICY_HASH_ANNOTATION),
    };
    Ok(Some(children))
}

/// Computes the status, writes it when it changed, and publishes the events of the change.
#[tracing::instrument(name = "status", skip_all)]
async fn write_status(
    ctx: &Context,
    server: &McpServer,
    observation: &Observation<'_>,
) -> Result<palisade_crds::McpServerStatus, error::StatusError> {
    let previous = server.status.as_ref();
    let next = status::server_status(previous, observation, &now());
    if previous == Some(&next) {
        return Ok(next);
    }
    apply_status::<McpServer>(ctx, "McpServer", observation.namespace, &server.name_any(), &next).await?;
    let changes = events::changes(previous, &next);
    ctx.events.publish(&server.object_ref(&()), &changes).await;
    Ok(next)
}

/// What to do after a failed reconcile: an invalid spec waits for a change of the McpServer or
/// of what it refers to (the watches trigger that); a transient error is retried with
/// exponential back-off.
pub fn error_policy<K: Resource<DynamicType = ()>>(object: Arc<K>, error: &Error, ctx: Arc<Context>) -> Action {
    let controller = if K::kind(&()) == "McpServer" {
        SERVER_CONTROLLER
    } else {
        POLICY_CONTROLLER
    };
    ctx.metrics.failed(controller, error.metric_label());
    if error.is_transient() {
        let delay = ctx.next_backoff(&key_of(&*object));
        tracing::warn!(%error, retry_in = ?delay, "reconcile failed; retrying");
        Action::requeue(delay)
    } else {
        tracing::info!(%error, "invalid spec; waiting for a change");
        Action::await_change()
    }
}

/// Server-side applies `status` to the status subresource of the `K` named `name`, as the
/// operator's field manager.
async fn apply_status<K>(
    ctx: &Context,
    kind: &'static str,
    namespace: &str,
    name: &str,
    status: &impl serde::Serialize,
) -> Result<(), error::StatusError>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), namespace);
    let patch = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(name, &apply_params(), &Patch::Apply(&patch))
        .await
        .map_err(|source| error::StatusError::PatchStatus {
            kind,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            source,
        })?;
    Ok(())
}

/// Reconciles the status of one McpAccessPolicy.
pub async fn reconcile_policy(
    object: Arc<DeserializeGuard<McpAccessPolicy>>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    measured(&object, &ctx, POLICY_CONTROLLER, |policy| {
        reconcile_policy_status(policy, &ctx)
    })
    .await
}

/// One reconcile of `policy`'s status, as a span (`reconcile McpAccessPolicy`).
#[tracing::instrument(
    name = "reconcile McpAccessPolicy",
    skip_all,
    fields(
        namespace = policy.namespace(),
        name = policy.name_any(),
        otel.status_code = tracing::field::Empty,
        error.type = tracing::field::Empty,
    )
)]
async fn reconcile_policy_status(policy: &McpAccessPolicy, ctx: &Context) -> Result<Action, Error> {
    let result = reconcile_policy_steps(policy, ctx).await;
    if let Err(error) = &result {
        record_failure(error);
    }
    result
}

async fn reconcile_policy_steps(policy: &McpAccessPolicy, ctx: &Context) -> Result<Action, Error> {
    if policy.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let namespace = policy.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    let name = policy.metadata.name.clone().ok_or(Error::MissingMetadata("name"))?;
    // Before the server cache is complete, a policy would seem to target nothing.
    shared::until_ready(&ctx.servers)
        .await
        .map_err(|_| Error::CacheUnavailable("McpServers"))?;
    shared::until_ready(&ctx.policies)
        .await
        .map_err(|_| Error::CacheUnavailable("McpAccessPolicies"))?;
    let previous = policy.status.as_ref();
    let next = policy_status::policy_status(
        policy,
        &ctx.servers.state(),
        &ctx.policies.state(),
        &ctx.settings,
        previous,
        &now(),
    );
    if previous != Some(&next) {
        apply_status::<McpAccessPolicy>(ctx, "McpAccessPolicy", &namespace, &name, &next).await?;
    }
    Ok(Action::requeue(RESYNC))
}

/// McpServers in `servers` that `policy` targets or had compiled in (so that a policy that stops
/// targeting a server triggers that server too).
pub fn servers_of_policy(
    servers: &Store<DeserializeGuard<McpServer>>,
    policy: &DeserializeGuard<McpAccessPolicy>,
) -> Vec<ObjectRef<DeserializeGuard<McpServer>>> {
    let namespace = policy.namespace().unwrap_or_default();
    let name = policy.name_any();
    servers
        .state()
        .iter()
        .filter_map(|guard| guard.0.as_ref().ok())
        .filter(|server| server.namespace().as_deref() == Some(namespace.as_str()))
        .filter(|server| {
            let was_bound = server.status.as_ref().is_some_and(|s| s.bound_policies.contains(&name));
            let binds = policy
                .0
                .as_ref()
                .is_ok_and(|p| !crate::bind::bound_policies(server, [p]).policies.is_empty());
            was_bound || binds
        })
        .map(|server| ObjectRef::new(&server.name_any()).within(&namespace))
        .collect()
}

/// McpServers in `servers` that name the ConfigMap or Secret `object` (of kind `kind`).
pub fn servers_naming<K: Resource<DynamicType = ()>>(
    servers: &Store<DeserializeGuard<McpServer>>,
    object: &PartialObjectMeta<K>,
) -> Vec<ObjectRef<DeserializeGuard<McpServer>>> {
    let namespace = object.namespace().unwrap_or_default();
    let name = object.name_any();
    let config_map = K::kind(&()) == "ConfigMap";
    servers
        .state()
        .iter()
        .filter_map(|guard| guard.0.as_ref().ok())
        .filter(|server| server.namespace().as_deref() == Some(namespace.as_str()))
        .filter(|server| {
            if config_map {
                server
                    .spec
                    .documents
                    .iter()
                    .any(|d| d.config_map_ref.as_ref().is_some_and(|r| r.name == name))
            } else {
                secret_uses(server).iter().any(|u| u.file.secret_name == name)
            }
        })
        .map(|server| ObjectRef::new(&server.name_any()).within(&namespace))
        .collect()
}

/// McpAccessPolicies in `policies` that target `server` or that it had compiled in.
pub fn policies_of_server(
    policies: &Store<DeserializeGuard<McpAccessPolicy>>,
    server: &DeserializeGuard<McpServer>,
) -> Vec<ObjectRef<DeserializeGuard<McpAccessPolicy>>> {
    let namespace = server.namespace().unwrap_or_default();
    let Ok(server) = &server.0 else {
        return Vec::new();
    };
    let had: Vec<String> = server
        .status
        .as_ref()
        .map(|s| s.bound_policies.clone())
        .unwrap_or_default();
    let all = policies.state();
    let bound = crate::bind::bound_policies(server, all.iter().filter_map(|p| p.0.as_ref().ok()));
    let mut names: Vec<String> = bound.policies.iter().map(|p| p.name_any()).chain(had).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .map(|name| ObjectRef::new(&name).within(&namespace))
        .collect()
}

/// Options of [`run`].
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The namespaces to watch.
    pub scope: scope::WatchScope,
}

/// Whether the ExternalSecret CRD (`external-secrets.io/v1`) is served.
pub async fn external_secrets_installed(client: &Client) -> bool {
    client
        .list_api_group_resources("external-secrets.io/v1")
        .await
        .is_ok_and(|list| list.resources.iter().any(|r| r.name == "externalsecrets"))
}

/// How long one API call (a get, list, apply, delete or Lease renewal) may take before it fails:
/// a half-open connection never hangs a reconcile or a Lease renewal.
pub const API_CALL_TIMEOUT: Duration = Duration::from_secs(20);

/// The operator's two API clients.
#[derive(Clone)]
pub struct Clients {
    /// For calls: every response must start within [`API_CALL_TIMEOUT`].
    pub calls: Client,
    /// For watches, which stay open for minutes: kube's watcher bounds them with its own idle
    /// timeout (the server-side watch timeout plus a margin) instead of a read timeout.
    pub watches: Client,
}

impl Clients {
    /// Both clients from the in-cluster configuration or `KUBECONFIG`, counting their requests
    /// in `metrics`.
    pub async fn infer(metrics: Option<Arc<Metrics>>) -> Result<Self, kube::Error> {
        let config = kube::Config::infer().await.map_err(kube::Error::InferConfig)?;
        Self::from_config(config, metrics)
    }

    /// Both clients from one configuration, counting their requests in `metrics`.
    pub fn from_config(config: kube::Config, metrics: Option<Arc<Metrics>>) -> Result<Self, kube::Error> {
        let mut calls = config.clone();
        calls.read_timeout = Some(API_CALL_TIMEOUT);
        // The timeout counts from the request, not from when a pooled connection went idle.
        calls.reset_reader_on_write = true;
        Ok(Self {
            calls: counted(calls, metrics.clone())?,
            watches: counted(config, metrics)?,
        })
    }
}

/// A client from `config` whose every request is counted in `metrics`
/// (`palisade_operator_kubernetes_requests_total`).
fn counted(config: kube::Config, metrics: Option<Arc<Metrics>>) -> Result<Client, kube::Error> {
    let builder = kube::client::ClientBuilder::try_from(config)?;
    Ok(match metrics {
        None => builder.build(),
        Some(metrics) => builder
            .with_layer(&tower::util::MapRequestLayer::new(
                move |request: http::Request<kube::client::Body>| {
                    metrics.api_request(request.method(), request.uri());
                    request
                },
            ))
            .build(),
    })
}

/// Runs both controllers until `shutdown` resolves.
pub async fn run(
    clients: Clients,
    settings: Settings,
    options: RunOptions,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + Clone + 'static,
) {
    let client = clients.watches;
    let calls = clients.calls;
    let scope = &options.scope;
    match scope {
        scope::WatchScope::Cluster => tracing::info!("watching every namespace"),
        scope::WatchScope::Namespaces(namespaces) => {
            tracing::info!(namespaces = ?namespaces, "watching these namespaces only");
        }
    }
    let all = watcher::Config::default().any_semantic();
    let children =
        watcher::Config::default()
            .any_semantic()
            .labels(&format!("{}={}", names::LABEL_MANAGED_BY, names::MANAGED_BY));

    let shared::Shared {
        servers: server_store,
        policies: policy_store,
        server_changes,
        servers_by_policy,
        policy_changes,
        policies_by_server,
        server_watch,
        policy_watch,
    } = shared::shared(&client, scope, &all);
    // Rollout truth: the servers' pods, selected by the label every child carries.
    let shared::Pods {
        store: pod_store,
        servers_by_pod,
        watch: pod_watch,
    } = shared::pods(&client, scope, &children);
    let ctx = Arc::new(
        Context::new(
            calls.clone(),
            settings,
            policy_store.clone(),
            server_store.clone(),
            metrics,
        )
        .with_pods(pod_store, Arc::new(rollout::HttpReadyProbe)),
    );

    let mut servers = Controller::for_stream(server_changes, server_store.clone())
        .reconcile_on(servers_by_policy)
        .reconcile_on(servers_by_pod)
        .owns_stream(scope.touched::<ServiceAccount>(&client, &children))
        .owns_stream(scope.touched::<NetworkPolicy>(&client, &children))
        .owns_stream(scope.touched::<ConfigMap>(&client, &children))
        .owns_stream(scope.touched::<Service>(&client, &children))
        // Status-only changes of these three trigger nothing (filters.rs), except the
        // Deployment's pod counts, which `Ready` reports.
        .owns_stream(filters::changes_that_matter(
            scope.raw_events::<Deployment>(&client, &children),
            filters::deployment,
        ))
        .owns_stream(filters::changes_that_matter(
            scope.raw_events::<PodDisruptionBudget>(&client, &children),
            filters::spec::<PodDisruptionBudget>,
        ))
        .owns_stream(filters::changes_that_matter(
            scope.raw_events::<HorizontalPodAutoscaler>(&client, &children),
            filters::spec::<HorizontalPodAutoscaler>,
        ));
    if external_secrets_installed(&calls).await {
        // Metadata only: a status change of External Secrets Operator bumps the resourceVersion,
        // which is enough to reconcile; the status itself is read from the apply's answer.
        servers = servers.owns_stream(scope.touched::<PartialObjectMeta<ExternalSecret>>(&client, &children));
    } else {
        tracing::info!("the ExternalSecret CRD is not installed; McpServers that need one report SecretsReady=False");
    }
    let by_config_map = server_store.clone();
    let by_secret = server_store;
    // ConfigMaps and Secrets an McpServer names, by metadata only: in every watched namespace
    // (with --watch-namespaces, only there).
    let servers = servers
        .watches_stream(
            scope.touched::<PartialObjectMeta<ConfigMap>>(&client, &all),
            move |cm| servers_naming(&by_config_map, &cm),
        )
        .watches_stream(
            scope.touched::<PartialObjectMeta<Secret>>(&client, &all),
            move |secret| servers_naming(&by_secret, &secret),
        )
        .graceful_shutdown_on(shutdown.clone())
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(%object, "reconciled"),
                Err(error) => tracing::debug!(%error, "reconcile did not complete"),
            }
        });

    let policies = Controller::for_stream(policy_changes, policy_store)
        .reconcile_on(policies_by_server)
        .graceful_shutdown_on(shutdown.clone())
        .run(reconcile_policy, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "policy reconcile did not complete");
            }
        });
    // The watches end with the controllers (their trigger channels close).
    let watches = async move {
        tokio::select! {
            () = futures::future::join3(server_watch, policy_watch, pod_watch).map(|_| ()) => {}
            () = shutdown => {}
        }
    };
    futures::future::join3(servers, policies, watches).await;
}
