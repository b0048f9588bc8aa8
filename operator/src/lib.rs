//! `palisade-operator`: turns McpServers and McpAccessPolicies into the Kubernetes objects that
//! run a secure MCP server.
//!
//! One McpServer is reconciled in small steps (DESIGN.md, "The flow of one McpServer"):
//! dereference → [`mod@validate`] (pure) → [`build`] (pure) → apply → status. This crate holds the
//! pure steps, the offline [`render`] command that runs them on files, and the [`controller`]s
//! of `palisade-operator run` with their [`leader`] election, [`http`] endpoints and [`metrics`].

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod bind;
pub mod build;
pub mod controller;
pub mod crd_reference;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod names;
pub mod rbac;
pub mod render;
pub mod secrets;
pub mod settings;
pub mod telemetry;
pub mod validate;

pub use build::{Child, Children, build_children};
pub use settings::Settings;
pub use validate::{ValidateError, ValidatedServer, validate};

/// Field manager of every server-side apply, and the value of `app.kubernetes.io/managed-by`.
pub const FIELD_MANAGER: &str = names::MANAGED_BY;

/// Ports of the server pods (DESIGN.md, "Ports").
pub mod ports {
    /// The MCP endpoint, health, readiness and the well-known documents.
    pub const MCP: i32 = 8080;
    /// Prometheus metrics.
    pub const METRICS: i32 = 9090;
    /// The Service's MCP port unless `spec.service.port` says otherwise.
    pub const DEFAULT_SERVICE: i32 = 80;
}

#[cfg(test)]
pub(crate) mod test_support {
    //! Objects from YAML snippets, for unit tests.

    use palisade_crds::{McpAccessPolicy, McpServer};

    /// An McpServer from YAML without `apiVersion` and `kind`.
    pub fn server(yaml: &str) -> McpServer {
        let text = format!("apiVersion: palisade.dev/v1alpha1\nkind: McpServer\n{yaml}");
        yaml_serde::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    /// An McpAccessPolicy from YAML without `apiVersion` and `kind`.
    pub fn policy(yaml: &str) -> McpAccessPolicy {
        let text = format!("apiVersion: palisade.dev/v1alpha1\nkind: McpAccessPolicy\n{yaml}");
        yaml_serde::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }
}
