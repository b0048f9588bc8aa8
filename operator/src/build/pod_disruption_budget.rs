//! The PodDisruptionBudget, when `spec.podDisruptionBudget.enabled`: `minAvailable` or
//! `maxUnavailable` as given, otherwise `maxUnavailable: 1` (a drain moves one pod at a time and
//! never blocks, even with one replica). Pods that are not ready may always be evicted
//! (`unhealthyPodEvictionPolicy: AlwaysAllow`), so a broken rollout cannot block node drains.

use palisade_crds::k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use palisade_crds::k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use palisade_crds::k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::meta::object_meta;
use crate::names::{self, Component};
use crate::validate::ValidatedServer;

/// Builds the PodDisruptionBudget, or `None` when it is not switched on.
pub fn pod_disruption_budget(input: &ValidatedServer<'_>) -> Option<PodDisruptionBudget> {
    let spec = input
        .server()
        .spec
        .pod_disruption_budget
        .as_ref()
        .filter(|p| p.enabled)?;
    let (min_available, max_unavailable) = match (&spec.min_available, &spec.max_unavailable) {
        (None, None) => (None, Some(IntOrString::Int(1))),
        (min, max) => (min.clone(), max.clone()),
    };
    Some(PodDisruptionBudget {
        metadata: object_meta(input, names::pod_disruption_budget(input.name()), Component::Server),
        spec: Some(PodDisruptionBudgetSpec {
            selector: Some(LabelSelector {
                match_labels: Some(names::selector_labels(input.name())),
                match_expressions: None,
            }),
            min_available,
            max_unavailable,
            unhealthy_pod_eviction_policy: Some("AlwaysAllow".into()),
        }),
        status: None,
    })
}
