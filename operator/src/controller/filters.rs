//! Which changes of a child trigger a reconcile of its McpServer.
//!
//! A reconcile applies every child again (nine applies, lists and gets for a server with
//! everything switched on), so a change that cannot alter its outcome must not cost one. The
//! outcome depends on a child's spec (drift to put back: its `metadata.generation`, or, for kinds
//! without a generation, every change), on its existence (a deleted child is recreated), and for
//! the Deployment on the pod counts the `Ready` condition reports. A status-only change of a
//! Deployment's conditions or timestamps, of a PodDisruptionBudget's `disruptionsAllowed`, or of
//! a HorizontalPodAutoscaler's metrics (every 15 s while it scales) triggers nothing.
//!
//! [`changes_that_matter`] filters a watch's events with a [`Relevance`] of the kind; it is pure
//! over the stream, and [`Relevance`]s are pure functions of one object.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use kube::Resource;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;

/// What a reconcile depends on in one object, hashed; `None`: every change matters.
pub type Relevance<K> = fn(&K) -> Option<u64>;

fn hash(value: impl Hash) -> u64 {
    let mut hasher = DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

/// The spec of a kind with a generation (the API server bumps it on every spec change, never on
/// a status change); `None` (every change matters) for kinds without one.
pub fn spec<K: Resource>(object: &K) -> Option<u64> {
    let meta = object.meta();
    meta.generation.map(|g| hash((g, &meta.uid)))
}

/// A Deployment's spec and the pod counts of its status that `Ready` reports.
pub fn deployment(object: &Deployment) -> Option<u64> {
    let meta = &object.metadata;
    let status = object.status.clone().unwrap_or_default();
    Some(hash((
        meta.generation,
        &meta.uid,
        status.observed_generation,
        status.replicas,
        status.ready_replicas,
        status.available_replicas,
        status.updated_replicas,
    )))
}

/// The objects of `events` whose change matters (by `relevance`), for `Controller::owns_stream`:
/// every deletion, every object seen for the first time, and every change of what `relevance`
/// hashes. Watch errors pass through (the controller logs them; the watcher retries).
pub fn changes_that_matter<K>(
    events: impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
    relevance: Relevance<K>,
) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    K: Resource<DynamicType = ()> + Clone + Send + 'static,
{
    let mut seen: HashMap<ObjectRef<K>, Option<u64>> = HashMap::new();
    events.flat_map(move |event| {
        let out: Vec<Result<K, watcher::Error>> = match event {
            Ok(watcher::Event::Apply(object) | watcher::Event::InitApply(object)) => {
                let key = relevance(&object);
                let previous = seen.insert(ObjectRef::from_obj(&object), key);
                match (previous, key) {
                    // Seen before, and what matters is unchanged.
                    (Some(Some(before)), Some(now)) if before == now => Vec::new(),
                    _ => vec![Ok(object)],
                }
            }
            Ok(watcher::Event::Delete(object)) => {
                seen.remove(&ObjectRef::from_obj(&object));
                vec![Ok(object)]
            }
            Ok(watcher::Event::Init | watcher::Event::InitDone) => Vec::new(),
            Err(error) => vec![Err(error)],
        };
        futures::stream::iter(out)
    })
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::DeploymentStatus;
    use k8s_openapi::api::autoscaling::v2::{HorizontalPodAutoscaler, HorizontalPodAutoscalerStatus};
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ObjectMeta;

    use super::*;

    fn meta(generation: Option<i64>) -> ObjectMeta {
        ObjectMeta {
            name: Some("docs".into()),
            namespace: Some("team-a".into()),
            uid: Some("u1".into()),
            generation,
            ..ObjectMeta::default()
        }
    }

    fn deployment_with(generation: i64, ready: i32, message: &str) -> Deployment {
        Deployment {
            metadata: meta(Some(generation)),
            status: Some(DeploymentStatus {
                ready_replicas: Some(ready),
                conditions: Some(vec![k8s_openapi::api::apps::v1::DeploymentCondition {
                    type_: "Progressing".into(),
                    status: "True".into(),
                    message: Some(message.into()),
                    ..Default::default()
                }]),
                ..DeploymentStatus::default()
            }),
            ..Deployment::default()
        }
    }

    async fn passed<K>(events: Vec<watcher::Event<K>>, relevance: Relevance<K>) -> usize
    where
        K: Resource<DynamicType = ()> + Clone + Send + 'static,
    {
        changes_that_matter(futures::stream::iter(events.into_iter().map(Ok)), relevance)
            .count()
            .await
    }

    #[tokio::test]
    async fn a_status_only_change_of_a_deployment_passes_only_when_its_pod_counts_change() {
        use watcher::Event::{Apply, Delete, InitApply};
        let events = vec![
            InitApply(deployment_with(1, 0, "a")),
            // Status only: a condition's message and timestamps.
            Apply(deployment_with(1, 0, "b")),
            Apply(deployment_with(1, 0, "c")),
            // A pod became ready: Ready depends on it.
            Apply(deployment_with(1, 1, "c")),
            // A spec change (drift to put back).
            Apply(deployment_with(2, 1, "c")),
            Delete(deployment_with(2, 1, "c")),
        ];
        assert_eq!(passed(events, deployment).await, 4);
    }

    #[tokio::test]
    async fn an_autoscaler_s_status_updates_trigger_nothing_a_deletion_does() {
        use watcher::Event::{Apply, Delete, InitApply};
        let hpa = |generation: i64, current: i32| HorizontalPodAutoscaler {
            metadata: meta(Some(generation)),
            status: Some(HorizontalPodAutoscalerStatus {
                current_replicas: Some(current),
                desired_replicas: current,
                ..HorizontalPodAutoscalerStatus::default()
            }),
            ..HorizontalPodAutoscaler::default()
        };
        let events = vec![
            InitApply(hpa(1, 2)),
            Apply(hpa(1, 3)),
            Apply(hpa(1, 4)),
            Apply(hpa(1, 2)),
            Delete(hpa(1, 2)),
        ];
        assert_eq!(passed(events, spec::<HorizontalPodAutoscaler>).await, 2);
    }

    #[tokio::test]
    async fn every_change_of_a_kind_without_generation_passes() {
        use watcher::Event::{Apply, InitApply};
        let map = ConfigMap {
            metadata: meta(None),
            ..ConfigMap::default()
        };
        let events = vec![InitApply(map.clone()), Apply(map.clone()), Apply(map)];
        assert_eq!(passed(events, spec::<ConfigMap>).await, 3);
    }
}
