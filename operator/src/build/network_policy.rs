//! The NetworkPolicy, when `spec.networkPolicy.enabled`: ingress to the server pods only on the
//! MCP port from `ingressFrom` (default: every pod in the server's namespace) and from the
//! operator's own pods (whose rollout truth asks each pod's `GET /ready` which policy it serves,
//! and, for a server in front of an upstream, one pod's `GET /inventory` on the metrics port;
//! present when the operator knows its pods: [`crate::settings::OperatorPods`]), and on the
//! metrics port from `metricsFrom` (default: nobody). On by default (unless `spec.networkPolicy`
//! is set) for a StreamableHttp container upstream, which also listens on the pod's IP. Egress stays open: the server fetches JWKS
//! and OIDC discovery documents from issuers anywhere.
//!
//! Numeric ports rather than the container port names: every network plugin supports them.
//! Kubelet probes come from the node and are not subject to the policy on common plugins.

use palisade_crds::k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec,
};
use palisade_crds::k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use palisade_crds::k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use palisade_crds::mcp_server::NetworkPolicySpec as Switch;
use palisade_crds::upstream::UpstreamTransport;

use super::meta::object_meta;
use crate::names::{self, Component};
use crate::ports;
use crate::settings::Settings;
use crate::validate::ValidatedServer;

/// Builds the NetworkPolicy, or `None` when it is not switched on.
pub fn network_policy(input: &ValidatedServer<'_>, settings: &Settings) -> Option<NetworkPolicy> {
    let server = &input.server().spec;
    // A StreamableHttp container upstream listens on the pod's IP too: unless the spec says
    // otherwise, only Palisade's ports are let in, so that nothing reaches it around Palisade.
    let exposes_upstream = server
        .upstream
        .as_ref()
        .and_then(|u| u.container.as_ref())
        .is_some_and(|c| c.transport == UpstreamTransport::StreamableHttp);
    let default = Switch {
        enabled: true,
        ..Switch::default()
    };
    let spec = match &server.network_policy {
        None if exposes_upstream => &default,
        configured => configured.as_ref().filter(|n| n.enabled)?,
    };
    let ingress_from = if spec.ingress_from.is_empty() {
        // A pod selector without a namespace selector: every pod of this namespace.
        vec![NetworkPolicyPeer {
            pod_selector: Some(LabelSelector::default()),
            ..NetworkPolicyPeer::default()
        }]
    } else {
        spec.ingress_from.clone()
    };
    let mut ingress = vec![rule(ingress_from, &[ports::MCP])];
    // The operator asks every ready pod's `GET /ready` (MCP port) and, for a proxy, one pod's
    // `GET /inventory` (metrics port).
    let operator_ports: &[i32] = if input.server().spec.upstream.is_some() {
        &[ports::MCP, ports::METRICS]
    } else {
        &[ports::MCP]
    };
    if let Some(operator) = &settings.operator_pods {
        ingress.push(rule(
            vec![NetworkPolicyPeer {
                namespace_selector: Some(LabelSelector {
                    match_labels: Some([(NAMESPACE_NAME_LABEL.to_owned(), operator.namespace.clone())].into()),
                    match_expressions: None,
                }),
                pod_selector: Some(LabelSelector {
                    match_labels: Some(operator.labels.clone()),
                    match_expressions: None,
                }),
                ip_block: None,
            }],
            operator_ports,
        ));
    }
    if !spec.metrics_from.is_empty() {
        ingress.push(rule(spec.metrics_from.clone(), &[ports::METRICS]));
    }
    Some(NetworkPolicy {
        metadata: object_meta(input, names::network_policy(input.name()), Component::Server),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(names::selector_labels(input.name())),
                match_expressions: None,
            }),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(ingress),
            egress: None,
        }),
    })
}

/// The label Kubernetes puts on every namespace, with its name (immutable, since 1.22).
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

fn rule(from: Vec<NetworkPolicyPeer>, ports: &[i32]) -> NetworkPolicyIngressRule {
    NetworkPolicyIngressRule {
        from: Some(from),
        ports: Some(
            ports
                .iter()
                .map(|&port| NetworkPolicyPort {
                    port: Some(IntOrString::Int(port)),
                    protocol: Some("TCP".into()),
                    end_port: None,
                })
                .collect(),
        ),
    }
}
