//! Operator-wide settings that the builders need besides the McpServer itself.

use std::collections::BTreeMap;

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
    /// Where the operator's own pods run, when it runs in the cluster: the NetworkPolicy of every
    /// McpServer then lets them reach the server pods' MCP port, whose `GET /ready` says which
    /// policy each pod serves (rollout truth). `None` (outside a cluster, or `render` without
    /// the flags): no such rule.
    pub operator_pods: Option<OperatorPods>,
    /// Trace export of the server pods where an McpServer's `spec.telemetry` leaves a field
    /// unset (the Helm chart's `mcpServers.telemetry`).
    pub server_telemetry: palisade_crds::telemetry::TelemetrySpec,
}

/// The operator's own pods, as a NetworkPolicy peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorPods {
    /// Their namespace (the downward API's `metadata.namespace`).
    pub namespace: String,
    /// Labels that select them (their Deployment's selector).
    pub labels: BTreeMap<String, String>,
}

impl OperatorPods {
    /// From a namespace and `key=value` items; `None` when either is missing. An item without
    /// `=` is an error that names it.
    pub fn from_parts(namespace: Option<&str>, selector: &[String]) -> Result<Option<Self>, String> {
        let mut labels = BTreeMap::new();
        for item in selector.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
            let (key, value) = item
                .split_once('=')
                .ok_or_else(|| format!("--operator-pod-selector: {item:?} is not key=value"))?;
            labels.insert(key.trim().to_owned(), value.trim().to_owned());
        }
        Ok(match namespace.map(str::trim).filter(|n| !n.is_empty()) {
            Some(namespace) if !labels.is_empty() => Some(Self {
                namespace: namespace.to_owned(),
                labels,
            }),
            _ => None,
        })
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            server_image: DEFAULT_SERVER_IMAGE.into(),
            image_pull_policy: None,
            cluster_domain: DEFAULT_CLUSTER_DOMAIN.into(),
            operator_pods: None,
            server_telemetry: Default::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::OperatorPods;

    #[test]
    fn the_operator_pods_need_a_namespace_and_labels() {
        let labels = ["a=b".to_owned(), " c = d ".to_owned(), String::new()];
        let pods = OperatorPods::from_parts(Some("ops"), &labels).unwrap().unwrap();
        assert_eq!(pods.namespace, "ops");
        assert_eq!(pods.labels, [("a".into(), "b".into()), ("c".into(), "d".into())].into());
        assert_eq!(OperatorPods::from_parts(None, &labels), Ok(None));
        assert_eq!(OperatorPods::from_parts(Some(""), &labels), Ok(None));
        assert_eq!(OperatorPods::from_parts(Some("ops"), &[]), Ok(None));
        assert_eq!(
            OperatorPods::from_parts(Some("ops"), &["a".to_owned()]),
            Err("--operator-pod-selector: \"a\" is not key=value".to_owned())
        );
    }
}
