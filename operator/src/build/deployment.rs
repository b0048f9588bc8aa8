//! The Deployment of the server pods.
//!
//! Replicas: `spec.replicas` (default 1); omitted entirely while autoscaling is on, so that the
//! operator's server-side apply never owns the field the HorizontalPodAutoscaler writes (Kubernetes
//! docs, "Migrating Deployments and StatefulSets to horizontal autoscaling"). Rollouts surge one
//! pod and never take a ready pod away first.
//!
//! Switching autoscaling on needs a handover: an apply that drops a field its manager owned
//! removes the field when no other manager owns it, and `spec.replicas` would fall back to 1
//! until the autoscaler acts. So when the live Deployment shows the operator still owning the
//! field, [`replicas_handover`] gives the patch that a second field manager,
//! [`REPLICAS_HANDOVER_MANAGER`], applies first with the live count (the "transferring ownership"
//! pattern of the server-side apply documentation): the field keeps an owner and its value, and
//! the autoscaler's next change of the count takes it over. Switching autoscaling off applies
//! `spec.replicas` again (forced), which takes the field back.

use palisade_crds::McpServer;
use palisade_crds::k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use palisade_crds::k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use palisade_crds::k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
use palisade_crds::k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{Value, json};

use super::meta::object_meta;
use super::pod::pod_template;
use crate::FIELD_MANAGER;
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

/// Field manager that holds `spec.replicas` at its live value while the operator's own apply
/// stops setting it (autoscaling switched on), until the HorizontalPodAutoscaler changes it.
pub const REPLICAS_HANDOVER_MANAGER: &str = "palisade-operator-replicas-handover";

/// The server-side apply patch (`apiVersion`, `kind`, name, namespace and `spec.replicas` only)
/// that [`REPLICAS_HANDOVER_MANAGER`] applies before `built`, or `None` when no handover is
/// needed: `built` sets `spec.replicas` itself, or the `live` Deployment has no count or no longer
/// has it owned by the operator's apply ([`FIELD_MANAGER`]).
pub fn replicas_handover(built: &Deployment, live: &Deployment) -> Option<Value> {
    if built.spec.as_ref()?.replicas.is_some() {
        return None;
    }
    let replicas = live.spec.as_ref()?.replicas?;
    let owned = live
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .any(|entry| applied_replicas(entry, FIELD_MANAGER));
    owned.then(|| {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": built.metadata.name, "namespace": built.metadata.namespace},
            "spec": {"replicas": replicas},
        })
    })
}

/// Whether `entry` is an apply by `manager` of the main resource that sets `spec.replicas`.
fn applied_replicas(entry: &ManagedFieldsEntry, manager: &str) -> bool {
    entry.manager.as_deref() == Some(manager)
        && entry.operation.as_deref() == Some("Apply")
        && entry.subresource.as_deref().unwrap_or_default().is_empty()
        && entry
            .fields_v1
            .as_ref()
            .is_some_and(|fields| fields.0.pointer("/f:spec/f:replicas").is_some())
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

    /// A live Deployment with `replicas` and the given managed-fields entries
    /// `(manager, operation, subresource, owns spec.replicas)`.
    fn live(replicas: i32, entries: &[(&str, &str, &str, bool)]) -> Deployment {
        use palisade_crds::k8s_openapi::apimachinery::pkg::apis::meta::v1::FieldsV1;
        let managed_fields = entries
            .iter()
            .map(|(manager, operation, subresource, owns)| {
                let spec = if *owns {
                    json!({"f:replicas": {}, "f:template": {}})
                } else {
                    json!({"f:template": {}})
                };
                ManagedFieldsEntry {
                    manager: Some((*manager).into()),
                    operation: Some((*operation).into()),
                    subresource: (!subresource.is_empty()).then(|| (*subresource).into()),
                    fields_v1: Some(FieldsV1(json!({"f:spec": spec}))),
                    ..ManagedFieldsEntry::default()
                }
            })
            .collect();
        Deployment {
            metadata: palisade_crds::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                managed_fields: Some(managed_fields),
                ..Default::default()
            },
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                ..DeploymentSpec::default()
            }),
            status: None,
        }
    }

    fn built(autoscaling: bool) -> Deployment {
        let yaml = format!(
            "metadata: {{name: s, namespace: ns}}\nspec:\n  auth: {{allowAnonymous: true}}\n  replicas: 3\n  \
             autoscaling: {{enabled: {autoscaling}}}\n"
        );
        let server = server(&yaml);
        let validated = crate::validate::validate(&server, &[], &Settings::default()).unwrap();
        deployment(&validated, &Settings::default())
    }

    #[test]
    fn switching_autoscaling_on_hands_the_live_replica_count_over() {
        // The operator's last apply set replicas (autoscaling was off): hand the live count over.
        let ours = live(4, &[(FIELD_MANAGER, "Apply", "", true)]);
        assert_eq!(
            replicas_handover(&built(true), &ours),
            Some(json!({"apiVersion": "apps/v1", "kind": "Deployment",
                        "metadata": {"name": "s", "namespace": "ns"}, "spec": {"replicas": 4}}))
        );
        // Autoscaling off: the operator sets replicas itself.
        assert_eq!(replicas_handover(&built(false), &ours), None);
        // Already handed over (or never owned): the autoscaler or the handover manager owns it.
        let theirs = live(
            5,
            &[
                (FIELD_MANAGER, "Apply", "", false),
                ("kube-controller-manager", "Update", "scale", true),
            ],
        );
        assert_eq!(replicas_handover(&built(true), &theirs), None);
        // Only the operator's own apply of the main resource counts.
        let other = live(
            5,
            &[
                ("kubectl", "Apply", "", true),
                (FIELD_MANAGER, "Update", "", true),
                (FIELD_MANAGER, "Apply", "status", true),
            ],
        );
        assert_eq!(replicas_handover(&built(true), &other), None);
    }
}
