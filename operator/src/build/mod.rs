//! The build step (pure): every child object of one McpServer, as a function of the
//! [`ValidatedServer`] and the operator's [`Settings`] only. No builder takes a client or reads
//! anything; the same functions serve the controller and `palisade-operator render`.
//!
//! One module per kind of child. Every child has a name from [`crate::names`], the server's
//! namespace, the four `app.kubernetes.io/*` labels and, when the McpServer came from the API
//! server, a controller owner reference to it (so Kubernetes garbage-collects it).

use palisade_crds::k8s_openapi::api::apps::v1::Deployment;
use palisade_crds::k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use palisade_crds::k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use palisade_crds::k8s_openapi::api::networking::v1::NetworkPolicy;
use palisade_crds::k8s_openapi::api::policy::v1::PodDisruptionBudget;
use palisade_crds::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use palisade_crds::kube::core::ApiResource;
use serde::Serialize;

use crate::settings::Settings;
use crate::validate::ValidatedServer;

pub mod cluster_issuer;
pub mod config_maps;
pub mod deployment;
pub mod external_secret;
pub mod horizontal_pod_autoscaler;
mod meta;
pub mod network_policy;
pub mod pod;
pub mod pod_disruption_budget;
pub mod service;
pub mod service_account;
pub mod upstream_container;
pub mod volumes;

pub use external_secret::ExternalSecret;

/// Every child object of one McpServer.
#[derive(Debug, Clone, PartialEq)]
pub struct Children {
    /// The ServiceAccount the pods run as.
    pub service_account: ServiceAccount,
    /// The NetworkPolicy, when `spec.networkPolicy.enabled`.
    pub network_policy: Option<NetworkPolicy>,
    /// The ConfigMap with the compiled PolicyDocument.
    pub policy_config_map: ConfigMap,
    /// One ConfigMap per inline document collection, in spec order.
    pub document_config_maps: Vec<ConfigMap>,
    /// One ExternalSecret per Secret synced from an external store, sorted by name.
    pub external_secrets: Vec<ExternalSecret>,
    /// The Service.
    pub service: Service,
    /// The Deployment of the server pods.
    pub deployment: Deployment,
    /// The PodDisruptionBudget, when `spec.podDisruptionBudget.enabled`.
    pub pod_disruption_budget: Option<PodDisruptionBudget>,
    /// The HorizontalPodAutoscaler, when `spec.autoscaling.enabled`.
    pub horizontal_pod_autoscaler: Option<HorizontalPodAutoscaler>,
}

/// Builds every child of `input`.
pub fn build_children(input: &ValidatedServer<'_>, settings: &Settings) -> Children {
    Children {
        service_account: service_account::service_account(input),
        network_policy: network_policy::network_policy(input, settings),
        policy_config_map: config_maps::policy_config_map(input),
        document_config_maps: config_maps::document_config_maps(input),
        external_secrets: external_secret::external_secrets(input),
        service: service::service(input),
        deployment: deployment::deployment(input, settings),
        pod_disruption_budget: pod_disruption_budget::pod_disruption_budget(input),
        horizontal_pod_autoscaler: horizontal_pod_autoscaler::horizontal_pod_autoscaler(input),
    }
}

/// The one table of child kinds: every kind of object the operator builds, in the order of
/// [`Children::iter`]. It defines [`Child`] (one built object) and [`ChildKind`] (with
/// [`ChildKind::ALL`]); the apply step applies every [`Child`] and prunes every kind of
/// [`ChildKind::ALL`], so a new kind added here is both applied and pruned (and every `match` on
/// either enum must handle it).
macro_rules! child_kinds {
    ($($kind:ident),+ $(,)?) => {
        /// One child object, borrowed from [`Children`]; serializes as the object itself.
        #[derive(Debug, Clone, Copy, Serialize)]
        #[serde(untagged)]
        #[allow(missing_docs)]
        pub enum Child<'a> {
            $($kind(&'a $kind),)+
        }

        /// A kind of child object.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[allow(missing_docs)]
        pub enum ChildKind {
            $($kind,)+
        }

        impl ChildKind {
            /// Every kind the operator builds, in apply order.
            pub const ALL: &'static [ChildKind] = &[$(ChildKind::$kind,)+];

            /// The `kind`.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$kind => stringify!($kind),)+
                }
            }

            /// Group, version and plural of the kind, for a client.
            pub fn api_resource(self) -> ApiResource {
                match self {
                    $(Self::$kind => ApiResource::erase::<$kind>(&()),)+
                }
            }
        }

        impl<'a> Child<'a> {
            /// The object's kind.
            pub fn child_kind(&self) -> ChildKind {
                match self {
                    $(Self::$kind(_) => ChildKind::$kind,)+
                }
            }

            /// The object's metadata.
            pub fn metadata(&self) -> &'a ObjectMeta {
                match *self {
                    $(Self::$kind(o) => &o.metadata,)+
                }
            }
        }
    };
}

child_kinds!(
    ServiceAccount,
    NetworkPolicy,
    ConfigMap,
    ExternalSecret,
    Service,
    Deployment,
    PodDisruptionBudget,
    HorizontalPodAutoscaler,
);

impl ChildKind {
    /// Whether the kind is built into Kubernetes (rather than a custom resource of another
    /// project, which needs that project's CRD).
    pub fn is_builtin(self) -> bool {
        self != Self::ExternalSecret
    }
}

impl<'a> Child<'a> {
    /// The object's `kind`.
    pub fn kind(&self) -> &'static str {
        self.child_kind().as_str()
    }

    /// The object's name.
    pub fn name(&self) -> &'a str {
        self.metadata().name.as_deref().unwrap_or_default()
    }

    /// Whether the kind is built into Kubernetes (see [`ChildKind::is_builtin`]).
    pub fn is_builtin(&self) -> bool {
        self.child_kind().is_builtin()
    }
}

impl Children {
    /// Every child, in the order to apply them: identity and network isolation first, then
    /// what the pods mount, then the Service and the pods, then what watches the pods.
    pub fn iter(&self) -> impl Iterator<Item = Child<'_>> {
        std::iter::once(Child::ServiceAccount(&self.service_account))
            .chain(self.network_policy.iter().map(Child::NetworkPolicy))
            .chain(std::iter::once(Child::ConfigMap(&self.policy_config_map)))
            .chain(self.document_config_maps.iter().map(Child::ConfigMap))
            .chain(self.external_secrets.iter().map(Child::ExternalSecret))
            .chain([Child::Service(&self.service), Child::Deployment(&self.deployment)])
            .chain(self.pod_disruption_budget.iter().map(Child::PodDisruptionBudget))
            .chain(
                self.horizontal_pod_autoscaler
                    .iter()
                    .map(Child::HorizontalPodAutoscaler),
            )
    }
}

#[cfg(test)]
mod tests {
    use palisade_crds::k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    use super::*;
    use crate::names;
    use crate::test_support::server;
    use crate::validate::validate;

    const ALL_SWITCHES: &str = r#"
metadata: {name: s, namespace: ns, uid: 0a1b2c3d}
spec:
  documents:
    - {collection: faq, inline: [{name: a.md, content: A}]}
    - {collection: ext, configMapRef: {name: ext-docs}}
  auth:
    issuers:
      - issuer: dev
        hmacKey:
          externalSecret: {storeRef: {kind: ClusterSecretStore, name: gcp}, remoteKey: dev-key}
  networkPolicy: {enabled: true}
  podDisruptionBudget: {enabled: true}
  autoscaling: {enabled: true}
"#;

    #[test]
    fn every_child_is_named_namespaced_labelled_and_owned() {
        let server = server(ALL_SWITCHES);
        let validated = validate(&server, &[], &Settings::default()).unwrap();
        let children = build_children(&validated, &Settings::default());
        let kinds: Vec<&str> = children.iter().map(|c| c.kind()).collect();
        assert_eq!(
            kinds,
            [
                "ServiceAccount",
                "NetworkPolicy",
                "ConfigMap",
                "ConfigMap",
                "ExternalSecret",
                "Service",
                "Deployment",
                "PodDisruptionBudget",
                "HorizontalPodAutoscaler",
            ]
        );
        // The table of kinds is every kind `iter` yields, in the same order.
        let mut distinct = kinds.clone();
        distinct.dedup();
        let table: Vec<&str> = ChildKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(distinct, table);
        for child in children.iter() {
            assert_eq!(child.child_kind().api_resource().kind, child.kind());
            let metadata = child.metadata();
            assert!(!child.name().is_empty());
            assert_eq!(metadata.namespace.as_deref(), Some("ns"), "{}", child.kind());
            let labels = metadata.labels.as_ref().unwrap();
            assert_eq!(labels[names::LABEL_INSTANCE], "s");
            assert_eq!(labels[names::LABEL_MANAGED_BY], "palisade-operator");
            let owners = metadata.owner_references.as_ref().unwrap();
            assert_eq!(owners.len(), 1);
            assert_eq!((owners[0].uid.as_str(), owners[0].controller), ("0a1b2c3d", Some(true)));
        }
        assert_eq!(
            children.document_config_maps[0].metadata.name.as_deref(),
            Some("s.docs.faq")
        );
        // The autoscaler owns the replica count.
        assert_eq!(children.deployment.spec.as_ref().unwrap().replicas, None);
    }

    #[test]
    fn optional_children_are_built_only_when_switched_on() {
        let server = server(
            "metadata: {name: s, namespace: ns}\nspec:\n  auth: {allowAnonymous: true}\n  \
             networkPolicy: {enabled: false}\n  podDisruptionBudget: {enabled: false}\n  autoscaling: {enabled: false}\n",
        );
        let validated = validate(&server, &[], &Settings::default()).unwrap();
        let children = build_children(&validated, &Settings::default());
        assert!(children.network_policy.is_none());
        assert!(children.pod_disruption_budget.is_none());
        assert!(children.horizontal_pod_autoscaler.is_none());
        assert!(children.external_secrets.is_empty());
        assert!(children.document_config_maps.is_empty());
        assert_eq!(children.deployment.spec.as_ref().unwrap().replicas, Some(1));
        assert_eq!(children.iter().count(), 4);
    }

    #[test]
    fn network_policy_and_pdb_defaults() {
        let server = server(ALL_SWITCHES);
        let validated = validate(&server, &[], &Settings::default()).unwrap();
        let children = build_children(&validated, &Settings::default());
        let policy = children.network_policy.unwrap().spec.unwrap();
        let ingress = policy.ingress.unwrap();
        // Only the MCP port, from every pod of the namespace; no metrics peers by default.
        assert_eq!(ingress.len(), 1);
        let from = ingress[0].from.as_ref().unwrap();
        assert_eq!(from.len(), 1);
        assert!(from[0].namespace_selector.is_none());
        assert_eq!(from[0].pod_selector, Some(Default::default()));
        assert_eq!(
            ingress[0].ports.as_ref().unwrap()[0].port,
            Some(IntOrString::Int(crate::ports::MCP))
        );
        let budget = children.pod_disruption_budget.unwrap().spec.unwrap();
        assert_eq!(budget.max_unavailable, Some(IntOrString::Int(1)));

        // An operator that knows its own pods lets them reach the MCP port (rollout truth asks
        // each pod's GET /ready), from its namespace only.
        let settings = Settings {
            operator_pods: crate::settings::OperatorPods::from_parts(
                Some("palisade-system"),
                &["app.kubernetes.io/name=palisade-operator".to_owned()],
            )
            .unwrap(),
            ..Settings::default()
        };
        let children = build_children(&validated, &settings);
        let ingress = children.network_policy.unwrap().spec.unwrap().ingress.unwrap();
        assert_eq!(ingress.len(), 2);
        let operator = &ingress[1].from.as_ref().unwrap()[0];
        assert_eq!(
            operator.namespace_selector.as_ref().unwrap().match_labels,
            Some([("kubernetes.io/metadata.name".to_owned(), "palisade-system".to_owned())].into())
        );
        assert_eq!(
            operator.pod_selector.as_ref().unwrap().match_labels,
            Some([("app.kubernetes.io/name".to_owned(), "palisade-operator".to_owned())].into())
        );
        assert_eq!(
            ingress[1].ports.as_ref().unwrap()[0].port,
            Some(IntOrString::Int(crate::ports::MCP))
        );
        assert_eq!(budget.min_available, None);
    }

    #[test]
    fn the_server_image_is_the_spec_s_then_the_operator_s() {
        let server_without = server("metadata: {name: s, namespace: ns}\nspec: {auth: {allowAnonymous: true}}");
        let server_with = server(
            "metadata: {name: s, namespace: ns}\nspec: {image: 'own:1', imagePullPolicy: Never, auth: {allowAnonymous: true}}",
        );
        let settings = Settings {
            server_image: "operator-wide:2".into(),
            image_pull_policy: Some(palisade_crds::mcp_server::ImagePullPolicy::IfNotPresent),
            ..Settings::default()
        };
        let image = |server: &palisade_crds::McpServer, settings: &Settings| {
            let validated = validate(server, &[], &Settings::default()).unwrap();
            let deployment = deployment::deployment(&validated, settings);
            let container = deployment.spec.unwrap().template.spec.unwrap().containers.remove(0);
            (container.image.unwrap(), container.image_pull_policy)
        };
        assert_eq!(
            image(&server_without, &Settings::default()),
            (crate::settings::DEFAULT_SERVER_IMAGE.to_owned(), None)
        );
        assert!(crate::settings::DEFAULT_SERVER_IMAGE.ends_with(concat!(":", env!("CARGO_PKG_VERSION"))));
        assert_eq!(
            image(&server_without, &settings),
            ("operator-wide:2".to_owned(), Some("IfNotPresent".to_owned()))
        );
        assert_eq!(
            image(&server_with, &settings),
            ("own:1".to_owned(), Some("Never".to_owned()))
        );
    }
}
