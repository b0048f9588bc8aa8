//! The Service `<server>`: the MCP endpoint on `spec.service.port` (default 80) → the pods' `mcp`
//! port (8080), and `metrics` 9090 → `metrics`, for Prometheus.

use std::collections::BTreeMap;

use palisade_crds::k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use palisade_crds::k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use palisade_crds::mcp_server::ServiceType;

use super::meta::object_meta;
use crate::names::{self, Component};
use crate::ports;
use crate::validate::ValidatedServer;

/// Builds the Service.
pub fn service(input: &ValidatedServer<'_>) -> Service {
    let spec = input.server().spec.service.clone().unwrap_or_default();
    let mut metadata = object_meta(input, names::service(input.name()), Component::Server);
    metadata.annotations = Some(spec.annotations).filter(|a: &BTreeMap<_, _>| !a.is_empty());
    Service {
        metadata,
        spec: Some(ServiceSpec {
            type_: Some(
                match spec.type_.unwrap_or(ServiceType::ClusterIP) {
                    ServiceType::ClusterIP => "ClusterIP",
                    ServiceType::NodePort => "NodePort",
                    ServiceType::LoadBalancer => "LoadBalancer",
                }
                .into(),
            ),
            selector: Some(names::selector_labels(input.name())),
            ports: Some(vec![
                port(names::MCP_PORT_NAME, spec.port.unwrap_or(ports::DEFAULT_SERVICE)),
                port(names::METRICS_PORT_NAME, ports::METRICS),
            ]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

fn port(name: &str, port: i32) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        port,
        target_port: Some(IntOrString::String(name.into())),
        protocol: Some("TCP".into()),
        app_protocol: Some("http".into()),
        ..ServicePort::default()
    }
}
