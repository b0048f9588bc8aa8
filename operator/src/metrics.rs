//! The operator's Prometheus metrics: reconciles, errors and reconcile duration, by controller;
//! and the requests it sends to the API server, by verb and resource.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Label of every metric: which controller.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    /// `mcpserver` or `mcpaccesspolicy`.
    pub controller: String,
}

/// Labels of the error counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// `mcpserver` or `mcpaccesspolicy`.
    pub controller: String,
    /// The step that failed (see [`crate::controller::Error::metric_label`]).
    pub error: String,
}

/// Labels of the API request counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiRequestLabels {
    /// The Kubernetes verb: `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`,
    /// `deletecollection`; `discovery` for the group/version documents.
    pub verb: &'static str,
    /// The resource, with its subresource (`mcpservers/status`); empty for discovery.
    pub resource: String,
}

/// The metrics, registered in one [`Registry`].
#[derive(Debug)]
pub struct Metrics {
    reconciles: Family<ControllerLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    duration: Family<ControllerLabels, Histogram, fn() -> Histogram>,
    api_requests: Family<ApiRequestLabels, Counter>,
}

fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

impl Metrics {
    /// The metrics, registered in `registry` under the prefix `palisade_operator`.
    pub fn new(registry: &mut Registry) -> Self {
        let metrics = Self {
            reconciles: Family::default(),
            errors: Family::default(),
            duration: Family::new_with_constructor(duration_histogram as fn() -> Histogram),
            api_requests: Family::default(),
        };
        let registry = registry.sub_registry_with_prefix("palisade_operator");
        registry.register("reconciles", "Reconciles started", metrics.reconciles.clone());
        registry.register(
            "reconcile_errors",
            "Reconciles that failed, by step",
            metrics.errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Duration of one reconcile",
            metrics.duration.clone(),
        );
        registry.register(
            "kubernetes_requests",
            "Requests sent to the Kubernetes API server, by verb and resource (a watch counts once, when it starts)",
            metrics.api_requests.clone(),
        );
        metrics
    }

    /// Counts a request to the API server.
    pub fn api_request(&self, method: &http::Method, uri: &http::Uri) {
        let (verb, resource) = api_request_labels(method, uri);
        self.api_requests
            .get_or_create(&ApiRequestLabels { verb, resource })
            .inc();
    }

    /// Counts a reconcile of `controller` that took `elapsed`.
    pub fn reconciled(&self, controller: &str, elapsed: Duration) {
        let labels = ControllerLabels {
            controller: controller.into(),
        };
        self.reconciles.get_or_create(&labels).inc();
        self.duration.get_or_create(&labels).observe(elapsed.as_secs_f64());
    }

    /// Counts a failed reconcile.
    pub fn failed(&self, controller: &str, error: &str) {
        self.errors
            .get_or_create(&ErrorLabels {
                controller: controller.into(),
                error: error.into(),
            })
            .inc();
    }
}

/// The verb and resource of a request to the API server, from its method and path (the path
/// conventions of the Kubernetes API: `/api/v1/…` and `/apis/<group>/<version>/…`, then
/// optionally `namespaces/<namespace>/`, the resource, a name and a subresource). Object names and
/// namespaces are never labels, so the label set stays bounded by the kinds the operator uses.
pub fn api_request_labels(method: &http::Method, uri: &http::Uri) -> (&'static str, String) {
    let segments: Vec<&str> = uri.path().split('/').filter(|s| !s.is_empty()).collect();
    let prefix = match segments.first() {
        Some(&"api") => 2,
        Some(&"apis") => 3,
        _ => return ("other", String::new()),
    };
    let mut rest = segments.get(prefix..).unwrap_or_default();
    if rest.is_empty() {
        return ("discovery", String::new());
    }
    if rest[0] == "namespaces" && rest.len() >= 3 {
        rest = &rest[2..];
    }
    let resource = match rest.get(2) {
        Some(sub) => format!("{}/{sub}", rest[0]),
        None => rest[0].to_owned(),
    };
    let named = rest.len() >= 2;
    let watching = uri
        .query()
        .is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"));
    let verb = match *method {
        http::Method::GET if watching => "watch",
        http::Method::GET if named => "get",
        http::Method::GET => "list",
        http::Method::POST => "create",
        http::Method::PUT => "update",
        http::Method::PATCH => "patch",
        http::Method::DELETE if named => "delete",
        http::Method::DELETE => "deletecollection",
        _ => "other",
    };
    (verb, resource)
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new(&mut Registry::default())
    }
}

#[cfg(test)]
mod tests {
    use super::api_request_labels;

    #[test]
    fn requests_are_labelled_by_verb_and_resource_never_by_name() {
        let cases = [
            (
                "GET",
                "/api/v1/namespaces/team-a/configmaps/company-info-policy",
                ("get", "configmaps"),
            ),
            (
                "GET",
                "/api/v1/namespaces/team-a/pods?labelSelector=a%3Db",
                ("list", "pods"),
            ),
            ("GET", "/api/v1/pods?watch=true&resourceVersion=5", ("watch", "pods")),
            (
                "PATCH",
                "/apis/palisade.dev/v1alpha1/namespaces/team-a/mcpservers/company-info/status?fieldManager=x",
                ("patch", "mcpservers/status"),
            ),
            (
                "GET",
                "/apis/palisade.dev/v1alpha1/mcpservers?watch=1",
                ("watch", "mcpservers"),
            ),
            (
                "POST",
                "/apis/events.k8s.io/v1/namespaces/team-a/events",
                ("create", "events"),
            ),
            (
                "PUT",
                "/apis/coordination.k8s.io/v1/namespaces/palisade-system/leases/palisade-operator",
                ("update", "leases"),
            ),
            (
                "DELETE",
                "/apis/apps/v1/namespaces/team-a/deployments/x",
                ("delete", "deployments"),
            ),
            (
                "DELETE",
                "/apis/apps/v1/namespaces/team-a/deployments",
                ("deletecollection", "deployments"),
            ),
            ("GET", "/api/v1/namespaces/team-a", ("get", "namespaces")),
            ("GET", "/apis/external-secrets.io/v1", ("discovery", "")),
            ("GET", "/version", ("other", "")),
        ];
        for (method, uri, (verb, resource)) in cases {
            let method: http::Method = method.parse().unwrap();
            let uri: http::Uri = uri.parse().unwrap();
            assert_eq!(
                api_request_labels(&method, &uri),
                (verb, resource.to_owned()),
                "{method} {uri}"
            );
        }
    }
}
