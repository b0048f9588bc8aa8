//! One watch and one reflector store per Palisade kind, shared by both controllers.
//!
//! Each kind's watch feeds its store first and only then triggers anything, so a reconcile
//! triggered by an object always finds that object (or a newer one) in the store it reads. The
//! McpServer controller reads the McpAccessPolicy store that its policy triggers come from, and
//! the McpAccessPolicy status controller reads the McpServer store that its server triggers come
//! from: a changed policy is never compiled from a stale copy.
//!
//! An McpServer triggers its own controller only when its `metadata.generation` changed (a change
//! of `spec`) or it is being deleted: its status, written by the operator itself, does not
//! reconcile it again. Its status does trigger the policies bound to it, whose status is drawn
//! from it.

use std::collections::HashMap;
use std::future::Future;

use futures::channel::mpsc;
use futures::{SinkExt, Stream, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::core::DeserializeGuard;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use palisade_crds::{McpAccessPolicy, McpServer};

use super::scope::WatchScope;
use super::{policies_of_server, rollout, servers_of_policy};

type ServerObject = DeserializeGuard<McpServer>;
type PolicyObject = DeserializeGuard<McpAccessPolicy>;

/// The servers' pods: a store for rollout truth, and the servers to reconcile because a pod's
/// readiness or address changed.
pub struct Pods {
    /// Palisade's pods (those labelled as managed by the operator), without their spec or
    /// managed fields: rollout truth reads labels, `status.podIP` and the `Ready` condition.
    pub store: Store<Pod>,
    /// McpServers one of whose pods became ready, stopped being ready, changed address or went
    /// away. Any other change of a pod (its other status fields, a restart count) triggers nothing.
    pub servers_by_pod: mpsc::Receiver<ObjectRef<ServerObject>>,
    /// Drives the pod watch.
    pub watch: std::pin::Pin<Box<dyn Future<Output = ()> + Send>>,
}

/// One watch of the pods in `scope` with `config` (the caller selects Palisade's pods by label).
pub fn pods(client: &Client, scope: &WatchScope, config: &watcher::Config) -> Pods {
    let (store, writer) = reflector::store();
    let (tx, servers_by_pod) = mpsc::channel(TRIGGER_BUFFER);
    let events = reflector::reflector(
        writer,
        scope.events::<Pod>(client, config).modify(|pod: &mut Pod| {
            pod.spec = None;
            pod.metadata.managed_fields = None;
        }),
    );
    let watch = drive(
        events,
        PodRouting {
            servers: tx,
            seen: HashMap::new(),
        },
    );
    Pods {
        store,
        servers_by_pod,
        watch: Box::pin(watch),
    }
}

/// How many triggers may wait for a controller before the watch waits for it.
const TRIGGER_BUFFER: usize = 1024;

/// The stores, the trigger streams of both controllers, and the futures that drive both watches
/// (they must be polled for anything to happen).
pub struct Shared {
    /// Every McpServer.
    pub servers: Store<ServerObject>,
    /// Every McpAccessPolicy.
    pub policies: Store<PolicyObject>,
    /// McpServers whose spec changed: the server controller's own trigger.
    pub server_changes: mpsc::Receiver<Result<ServerObject, watcher::Error>>,
    /// McpServers to reconcile because a policy that targets them (or did) changed or went away.
    pub servers_by_policy: mpsc::Receiver<ObjectRef<ServerObject>>,
    /// McpAccessPolicies that changed: the policy controller's own trigger.
    pub policy_changes: mpsc::Receiver<Result<PolicyObject, watcher::Error>>,
    /// McpAccessPolicies whose status depends on an McpServer that changed or went away.
    pub policies_by_server: mpsc::Receiver<ObjectRef<PolicyObject>>,
    /// Drives the McpServer watch.
    pub server_watch: std::pin::Pin<Box<dyn Future<Output = ()> + Send>>,
    /// Drives the McpAccessPolicy watch.
    pub policy_watch: std::pin::Pin<Box<dyn Future<Output = ()> + Send>>,
}

/// One watch per kind (per namespace of `scope`) of McpServers and McpAccessPolicies, with `config`.
pub fn shared(client: &Client, scope: &WatchScope, config: &watcher::Config) -> Shared {
    let (server_store, server_writer) = reflector::store();
    let (policy_store, policy_writer) = reflector::store();
    let (server_tx, server_changes) = mpsc::channel(TRIGGER_BUFFER);
    let (servers_by_policy_tx, servers_by_policy) = mpsc::channel(TRIGGER_BUFFER);
    let (policy_tx, policy_changes) = mpsc::channel(TRIGGER_BUFFER);
    let (policies_by_server_tx, policies_by_server) = mpsc::channel(TRIGGER_BUFFER);

    let server_events = reflector::reflector(server_writer, scope.events::<ServerObject>(client, config));
    let server_watch = {
        let policy_store = policy_store.clone();
        drive(
            server_events,
            ServerRouting {
                own: server_tx,
                others: policies_by_server_tx,
                policies: policy_store,
                generations: HashMap::new(),
            },
        )
    };
    let policy_events = reflector::reflector(policy_writer, scope.events::<PolicyObject>(client, config));
    let policy_watch = {
        let server_store = server_store.clone();
        drive(
            policy_events,
            PolicyRouting {
                own: policy_tx,
                others: servers_by_policy_tx,
                servers: server_store,
            },
        )
    };
    Shared {
        servers: server_store,
        policies: policy_store,
        server_changes,
        servers_by_policy,
        policy_changes,
        policies_by_server,
        server_watch: Box::pin(server_watch),
        policy_watch: Box::pin(policy_watch),
    }
}

/// Where the events of one kind go once its store has them.
trait Routing<K> {
    /// An object was created or changed (`initial`: listed at the start or after a resync).
    fn applied(&mut self, object: K, initial: bool) -> impl Future<Output = ()> + Send;
    /// An object was deleted.
    fn deleted(&mut self, object: K) -> impl Future<Output = ()> + Send;
}

async fn drive<K, R>(events: impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send, mut routing: R)
where
    K: Send,
    R: Routing<K> + Send,
{
    let mut events = std::pin::pin!(events);
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Apply(object)) => routing.applied(object, false).await,
            Ok(watcher::Event::InitApply(object)) => routing.applied(object, true).await,
            Ok(watcher::Event::Delete(object)) => routing.deleted(object).await,
            Ok(watcher::Event::Init | watcher::Event::InitDone) => {}
            // The watcher retries with back-off; the store keeps what it had meanwhile.
            Err(error) => tracing::warn!(%error, "watch failed; retrying"),
        }
    }
}

struct ServerRouting {
    own: mpsc::Sender<Result<ServerObject, watcher::Error>>,
    others: mpsc::Sender<ObjectRef<PolicyObject>>,
    policies: Store<PolicyObject>,
    /// The last generation seen per server, to tell spec changes from status-only ones.
    generations: HashMap<ObjectRef<ServerObject>, Option<i64>>,
}

impl Routing<ServerObject> for ServerRouting {
    async fn applied(&mut self, server: ServerObject, initial: bool) {
        for policy in policies_of_server(&self.policies, &server) {
            let _ = self.others.send(policy).await;
        }
        let key = ObjectRef::from_obj(&server);
        let generation = server.meta().generation;
        let deleting = server.meta().deletion_timestamp.is_some();
        let previous = self.generations.insert(key, generation);
        if initial || deleting || previous != Some(generation) {
            tracing::debug!(server = %super::key_of(&server), initial, "the McpServer changed: reconcile it");
            let _ = self.own.send(Ok(server)).await;
        }
    }

    async fn deleted(&mut self, server: ServerObject) {
        self.generations.remove(&ObjectRef::from_obj(&server));
        for policy in policies_of_server(&self.policies, &server) {
            let _ = self.others.send(policy).await;
        }
    }
}

struct PodRouting {
    servers: mpsc::Sender<ObjectRef<ServerObject>>,
    /// Readiness and address of every pod seen, to tell the changes rollout truth needs.
    seen: HashMap<ObjectRef<Pod>, (bool, Option<String>)>,
}

impl PodRouting {
    async fn trigger_owner(&mut self, pod: &Pod) {
        let server = pod.labels().get(crate::names::LABEL_INSTANCE).cloned();
        if let (Some(server), Some(namespace)) = (server, pod.namespace()) {
            tracing::debug!(pod = pod.name_any(), %namespace, %server, "a pod's readiness changed: reconcile its server");
            let _ = self.servers.send(ObjectRef::new(&server).within(&namespace)).await;
        }
    }
}

impl Routing<Pod> for PodRouting {
    async fn applied(&mut self, pod: Pod, initial: bool) {
        let key = rollout::readiness_key(&pod);
        let previous = self.seen.insert(ObjectRef::from_obj(&pod), key.clone());
        // At start every server is reconciled through its own initial listing.
        if !initial && previous != Some(key) {
            self.trigger_owner(&pod).await;
        }
    }

    async fn deleted(&mut self, pod: Pod) {
        if self
            .seen
            .remove(&ObjectRef::from_obj(&pod))
            .is_some_and(|(ready, _)| ready)
        {
            self.trigger_owner(&pod).await;
        }
    }
}

struct PolicyRouting {
    own: mpsc::Sender<Result<PolicyObject, watcher::Error>>,
    others: mpsc::Sender<ObjectRef<ServerObject>>,
    servers: Store<ServerObject>,
}

impl Routing<PolicyObject> for PolicyRouting {
    async fn applied(&mut self, policy: PolicyObject, initial: bool) {
        // At start every server is reconciled through its own initial listing.
        if !initial {
            for server in servers_of_policy(&self.servers, &policy) {
                let _ = self.others.send(server).await;
            }
        }
        let _ = self.own.send(Ok(policy)).await;
    }

    async fn deleted(&mut self, policy: PolicyObject) {
        for server in servers_of_policy(&self.servers, &policy) {
            let _ = self.others.send(server).await;
        }
    }
}

/// Waits until `store` has listed its kind once.
///
/// NB: kube's `Store::wait_until_ready` wakes only the last of several tasks waiting at once (its
/// `DelayedInit` keeps one waker, that of a `oneshot::Receiver`). Found in the cluster suite: an
/// operator started with four McpServers in the cluster reconciled one, and the other three
/// waited forever. A fresh wait every 100 ms does not depend on being woken.
pub async fn until_ready<K>(store: &Store<K>) -> Result<(), reflector::store::WriterDropped>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    loop {
        if let Ok(result) = tokio::time::timeout(UNTIL_READY_POLL, store.wait_until_ready()).await {
            return result;
        }
    }
}

/// How often [`until_ready`] looks again.
const UNTIL_READY_POLL: std::time::Duration = std::time::Duration::from_millis(100);

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::runtime::reflector;
    use kube::runtime::watcher::Event;

    use super::until_ready;

    #[tokio::test]
    async fn every_task_waiting_for_a_store_wakes_when_it_is_ready() {
        let (store, mut writer) = reflector::store::<ConfigMap>();
        let waiting: Vec<_> = (0..4)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move { until_ready(&store).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        writer.apply_watcher_event(&Event::Init);
        writer.apply_watcher_event(&Event::InitDone);
        for task in waiting {
            tokio::time::timeout(Duration::from_secs(2), task)
                .await
                .expect("woken")
                .expect("joined")
                .expect("ready");
        }
    }
}
