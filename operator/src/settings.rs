//! Operator-wide settings that the builders need besides the McpServer itself.

use palisade_crds::mcp_server::ImagePullPolicy;

/// Image of the bundled server when neither the McpServer nor the operator names one: the
/// `palisade-server` of the operator's own version, so that an operator upgrade rolls the servers
/// onto the matching server.
pub const DEFAULT_SERVER_IMAGE: &str = concat!("ghcr.io/palisade-dev/palisade-server:", env!("CARGO_PKG_VERSION"));

/// The cluster's DNS domain when not told otherwise (the compiler's default too).
pub const DEFAULT_CLUSTER_DOMAIN: &str = palisade_crds::compile::DEFAULT_CLUSTER_DOMAIN;

/// Operator-wide settings (flags of `palisade-operator run` and `render`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Server image for McpServers that do not set `spec.image`.
    pub server_image: String,
    /// Image pull policy for McpServers that do not set `spec.imagePullPolicy`; `None` leaves it
    /// to Kubernetes (`Always` for `:latest`, otherwise `IfNotPresent`).
    pub image_pull_policy: Option<ImagePullPolicy>,
    /// The cluster's DNS domain: for the server's accepted Host names (`<svc>.<ns>.svc.<domain>`),
    /// its `status.endpoint` and the default audience the policy compiles to (both
    /// `http://<name>.<ns>.svc.<domain>/mcp`).
    pub cluster_domain: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            server_image: DEFAULT_SERVER_IMAGE.into(),
            image_pull_policy: None,
            cluster_domain: DEFAULT_CLUSTER_DOMAIN.into(),
        }
    }
}
