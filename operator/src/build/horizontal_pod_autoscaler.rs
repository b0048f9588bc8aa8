//! The HorizontalPodAutoscaler (`autoscaling/v2`), when `spec.autoscaling.enabled`: scales the
//! Deployment between `minReplicas` (default 2) and `maxReplicas` (default 10) on average CPU
//! utilisation (default 70 % of the request). The Deployment then carries no replica count
//! ([`super::deployment::replicas`]).

use palisade_crds::k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec, MetricTarget,
    ResourceMetricSource,
};
use palisade_crds::mcp_server::AutoscalingSpec;

use super::meta::object_meta;
use crate::names::{self, Component};
use crate::validate::ValidatedServer;

/// Fewest pods when `minReplicas` is not set (at most `maxReplicas`).
pub const DEFAULT_MIN_REPLICAS: i32 = 2;
/// Most pods when `maxReplicas` is not set (at least `minReplicas`).
pub const DEFAULT_MAX_REPLICAS: i32 = 10;
/// Target average CPU utilisation, percent of the request.
pub const DEFAULT_CPU_UTILIZATION: i32 = 70;

/// Builds the HorizontalPodAutoscaler, or `None` when it is not switched on.
pub fn horizontal_pod_autoscaler(input: &ValidatedServer<'_>) -> Option<HorizontalPodAutoscaler> {
    let spec = input.server().spec.autoscaling.as_ref().filter(|a| a.enabled)?;
    let (min_replicas, max_replicas) = replica_range(spec);
    Some(HorizontalPodAutoscaler {
        metadata: object_meta(input, names::horizontal_pod_autoscaler(input.name()), Component::Server),
        spec: Some(HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".into()),
                kind: "Deployment".into(),
                name: names::deployment(input.name()),
            },
            min_replicas: Some(min_replicas),
            max_replicas,
            metrics: Some(vec![MetricSpec {
                type_: "Resource".into(),
                resource: Some(ResourceMetricSource {
                    name: "cpu".into(),
                    target: MetricTarget {
                        type_: "Utilization".into(),
                        average_utilization: Some(
                            spec.target_cpu_utilization_percentage
                                .unwrap_or(DEFAULT_CPU_UTILIZATION),
                        ),
                        ..MetricTarget::default()
                    },
                }),
                ..MetricSpec::default()
            }]),
            behavior: None,
        }),
        status: None,
    })
}

/// `(minReplicas, maxReplicas)`: as given, with a default that never crosses the other bound
/// (`maxReplicas: 1` alone gives 1..1, `minReplicas: 20` alone gives 20..20).
pub fn replica_range(spec: &AutoscalingSpec) -> (i32, i32) {
    match (spec.min_replicas, spec.max_replicas) {
        (Some(min), Some(max)) => (min, max),
        (Some(min), None) => (min, DEFAULT_MAX_REPLICAS.max(min)),
        (None, Some(max)) => (DEFAULT_MIN_REPLICAS.min(max), max),
        (None, None) => (DEFAULT_MIN_REPLICAS, DEFAULT_MAX_REPLICAS),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_never_cross_the_bound_that_is_given() {
        let range = |min, max| {
            replica_range(&AutoscalingSpec {
                enabled: true,
                min_replicas: min,
                max_replicas: max,
                target_cpu_utilization_percentage: None,
            })
        };
        assert_eq!(range(None, None), (2, 10));
        assert_eq!(range(Some(3), None), (3, 10));
        assert_eq!(range(Some(20), None), (20, 20));
        assert_eq!(range(None, Some(1)), (1, 1));
        assert_eq!(range(None, Some(5)), (2, 5));
        assert_eq!(range(Some(4), Some(6)), (4, 6));
    }
}
