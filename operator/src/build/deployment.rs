//! The Deployment of the server pods.
//!
//! Replicas: `spec.replicas` (default 1); omitted entirely while autoscaling is on, so that the
//! operator's server-side apply never owns the field the HorizontalPodAutoscaler writes (Kubernetes
//! docs, "Migrating Deployments and StatefulSets to horizontal autoscaling"). Rollouts surge one
//! pod and never take a ready pod away first.

use palisade_crds::McpServer;
use palisade_crds::k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use palisade_crds::k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use palisade_crds::k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::meta::object_meta;
use super::pod::pod_template;
use crate::names::{self, Component};
use crate::settings::Settings;
use crate::validate::ValidatedServer;

/// Builds the Deployment.
pub fn deployment(input: &ValidatedServer<'_>, settings: &Settings) -> Deployment {
    Deployment {
        metadata: object_meta(input, names::deployment(input.name()), Component::Server),
        spec: Some(DeploymentSpec {
            replicas: replicas(input.server()),
            selector: LabelSelector {
                match_labels: Some(names::selector_labels(input.name())),
                match_expressions: None,
            },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(1)),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            revision_history_limit: Some(5),
            template: pod_template(input, settings),
            ..DeploymentSpec::default()
        }),
        status: None,
    }
}

/// The Deployment's `spec.replicas`: `None` while the HorizontalPodAutoscaler owns the count.
pub fn replicas(server: &McpServer) -> Option<i32> {
    let autoscaling = server.spec.autoscaling.as_ref().is_some_and(|a| a.enabled);
    (!autoscaling).then(|| server.spec.replicas.unwrap_or(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::server;

    #[test]
    fn replicas_are_left_to_the_autoscaler_when_it_is_on() {
        let base = "metadata: {name: s, namespace: ns}\nspec:\n  auth: {allowAnonymous: true}\n";
        assert_eq!(replicas(&server(base)), Some(1));
        assert_eq!(replicas(&server(&format!("{base}  replicas: 3\n"))), Some(3));
        assert_eq!(replicas(&server(&format!("{base}  replicas: 0\n"))), Some(0));
        assert_eq!(
            replicas(&server(&format!(
                "{base}  replicas: 3\n  autoscaling: {{enabled: false}}\n"
            ))),
            Some(3)
        );
        assert_eq!(
            replicas(&server(&format!(
                "{base}  replicas: 3\n  autoscaling: {{enabled: true}}\n"
            ))),
            None
        );
    }
}
