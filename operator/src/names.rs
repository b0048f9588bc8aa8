//! Names of every child object, volume and label the operator builds, derived from the McpServer.
//!
//! One place, so the builders, the controller (which deletes children that a switch turned off)
//! and the documentation agree:
//!
//! | object | name |
//! |---|---|
//! | ServiceAccount, Deployment, Service, NetworkPolicy, PodDisruptionBudget, HorizontalPodAutoscaler | `<server>` |
//! | ConfigMap with the compiled PolicyDocument | `<server>-policy` |
//! | ConfigMap of an inline document collection | `<server>.docs.<collection>` |
//! | ExternalSecret | the Secret it writes ([`palisade_crds::secret_files::secret_file`]): `externalSecret.targetSecretName`, else `<server>-api-keys` or `<server>-hmac-<8 hex digits of sha256(issuer)>` |
//!
//! **No two servers, and no two children of one server, share a (kind, name)**, whatever the
//! servers and collections are called (`tests/child_names.rs` tries adversarial names):
//! - a server's name is a DNS-1035 label (CEL on the CRD, and [`mod@crate::validate`]): no dot,
//!   at most 63 characters. So the first `.` of a document ConfigMap's name ends the server's
//!   name, and a name without a dot is never a document ConfigMap: `<server>-policy` and
//!   `<server>.docs.<collection>` cannot meet, and each gives its server back (strip `-policy`;
//!   cut at the first dot). Before, `foo`'s collection `policy` and server `foo-docs`'s policy
//!   were both `foo-docs-policy`.
//! - the default Secret names end in `-api-keys` or in `-hmac-` and 8 hex digits (`api-keys` is
//!   not hex), so the suffix gives the server back too. A `targetSecretName` the user writes is
//!   taken as written.
//! - every other child kind exists once per server and is named after it.
//!
//! Every name fits its limit without truncation: at most 63 + 6 + 50 = 119 characters (collection
//! names are DNS labels of at most 50), under the 253 of an object name; labels and Service names
//! are the server's name (at most 63).
//!
//! The operator deletes children it owns under any other name ([`crate::controller::apply`]), so a
//! change of this scheme is an upgrade: the children under the old names are pruned.

use std::collections::BTreeMap;

use palisade_crds::document::content_hash;

/// `app.kubernetes.io/name`: what runs, the same for every McpServer.
pub const LABEL_NAME: &str = "app.kubernetes.io/name";
/// `app.kubernetes.io/instance`: which McpServer, its name.
pub const LABEL_INSTANCE: &str = "app.kubernetes.io/instance";
/// `app.kubernetes.io/managed-by`: always [`MANAGED_BY`].
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// `app.kubernetes.io/component`: the part of the server a child is, see [`Component`].
pub const LABEL_COMPONENT: &str = "app.kubernetes.io/component";

/// Value of [`LABEL_NAME`].
pub const APP_NAME: &str = "palisade-server";
/// Value of [`LABEL_MANAGED_BY`]; also the server-side-apply field manager.
pub const MANAGED_BY: &str = "palisade-operator";

/// Annotation with the `sha256:<hex>` of the compiled PolicyDocument, on the policy ConfigMap.
pub const POLICY_HASH_ANNOTATION: &str = "palisade.dev/policy-hash";

/// Name of the server container.
pub const CONTAINER: &str = "server";
/// Name of the container port (and Service target port) of the MCP endpoint.
pub const MCP_PORT_NAME: &str = "mcp";
/// Name of the container port (and Service port) of the Prometheus endpoint.
pub const METRICS_PORT_NAME: &str = "metrics";

/// Value of [`LABEL_COMPONENT`]: what part of an MCP server a child object is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    /// The running server: ServiceAccount, Deployment and its pods, Service, NetworkPolicy,
    /// PodDisruptionBudget, HorizontalPodAutoscaler.
    Server,
    /// The ConfigMap with the compiled policy.
    Policy,
    /// ConfigMaps of inline document collections.
    Documents,
    /// ExternalSecrets (and, through External Secrets Operator, the Secrets they write).
    Secrets,
}

impl Component {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Server => "server",
            Self::Policy => "policy",
            Self::Documents => "documents",
            Self::Secrets => "secrets",
        }
    }
}

/// The four `app.kubernetes.io/*` labels of a child of McpServer `server`.
pub fn labels(server: &str, component: Component) -> BTreeMap<String, String> {
    let mut labels = selector_labels(server);
    labels.insert(LABEL_MANAGED_BY.into(), MANAGED_BY.into());
    labels.insert(LABEL_COMPONENT.into(), component.as_str().into());
    labels
}

/// The labels that select the pods of McpServer `server` (Deployment, Service, NetworkPolicy,
/// PodDisruptionBudget, topology spread). A Deployment's selector is immutable, so this set never
/// grows.
pub fn selector_labels(server: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_NAME.into(), APP_NAME.into()),
        (LABEL_INSTANCE.into(), server.into()),
    ])
}

/// Name of the ServiceAccount the pods run as.
pub fn service_account(server: &str) -> String {
    server.to_owned()
}

/// Name of the Deployment.
pub fn deployment(server: &str) -> String {
    server.to_owned()
}

/// Name of the Service (also the first of the server's in-cluster host names).
pub fn service(server: &str) -> String {
    server.to_owned()
}

/// Name of the NetworkPolicy.
pub fn network_policy(server: &str) -> String {
    server.to_owned()
}

/// Name of the PodDisruptionBudget.
pub fn pod_disruption_budget(server: &str) -> String {
    server.to_owned()
}

/// Name of the HorizontalPodAutoscaler.
pub fn horizontal_pod_autoscaler(server: &str) -> String {
    server.to_owned()
}

/// Name of the ConfigMap with the compiled PolicyDocument.
pub fn policy_config_map(server: &str) -> String {
    format!("{server}-policy")
}

/// Name of the ConfigMap the operator builds from an inline document collection:
/// `<server>.docs.<collection>`. The dots are what keeps it apart from every other server's
/// children (a server's name never has one; see the module documentation).
pub fn documents_config_map(server: &str, collection: &str) -> String {
    format!("{server}.docs.{collection}")
}

/// Name of the pod volume with the policy ConfigMap.
pub const POLICY_VOLUME: &str = "policy";
/// Name of the pod volume mounted at `/tmp`.
pub const TMP_VOLUME: &str = "tmp";

/// Name of the pod volume of a document collection (a DNS label of at most 50 characters, so
/// the result is at most 55).
pub fn documents_volume(collection: &str) -> String {
    format!("docs-{collection}")
}

/// Name of the pod volume of a Secret: `secret-<secret>` when that is a DNS label (volume names
/// are), otherwise `secret-<first 8 hex digits of sha256(secret)>` (Secret names may be 253
/// characters long and contain dots).
pub fn secret_volume(secret: &str) -> String {
    let readable = format!("secret-{secret}");
    if readable.len() <= 63 && !secret.contains('.') {
        readable
    } else {
        let digest = content_hash(secret.as_bytes());
        format!("secret-{}", &digest["sha256:".len().."sha256:".len() + 8])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_are_named_after_the_server() {
        assert_eq!(service_account("company-info"), "company-info");
        assert_eq!(deployment("company-info"), "company-info");
        assert_eq!(service("company-info"), "company-info");
        assert_eq!(policy_config_map("company-info"), "company-info-policy");
        assert_eq!(documents_config_map("company-info", "faq"), "company-info.docs.faq");
    }

    /// The collision of issue 12: McpServer `foo` with an inline collection `policy`, and
    /// McpServer `foo-docs`, both wrote ConfigMap `foo-docs-policy`.
    #[test]
    fn a_collection_never_takes_another_server_s_policy_name() {
        assert_ne!(documents_config_map("foo", "policy"), policy_config_map("foo-docs"));
        assert_ne!(
            documents_config_map("a", "b-docs-c"),
            documents_config_map("a-docs-b", "c")
        );
        assert!(!policy_config_map("foo-docs").contains('.'));
    }

    #[test]
    fn every_child_carries_the_four_recommended_labels() {
        let labels = labels("company-info", Component::Policy);
        assert_eq!(labels.len(), 4);
        assert_eq!(labels[LABEL_NAME], "palisade-server");
        assert_eq!(labels[LABEL_INSTANCE], "company-info");
        assert_eq!(labels[LABEL_MANAGED_BY], "palisade-operator");
        assert_eq!(labels[LABEL_COMPONENT], "policy");
        // The selector is a subset that never includes the component.
        assert!(selector_labels("company-info").iter().all(|(k, v)| labels[k] == *v));
    }

    #[test]
    fn secret_volume_names_are_dns_labels() {
        assert_eq!(secret_volume("company-info-jwt"), "secret-company-info-jwt");
        for secret in ["jwt.example.com", &"s".repeat(57), &"s".repeat(253)] {
            let volume = secret_volume(secret);
            assert!(
                volume.len() <= 63 && palisade_crds::document_check::is_dns_label(&volume),
                "{volume}"
            );
            assert_eq!(volume.len(), "secret-".len() + 8);
        }
        assert_ne!(secret_volume("a.b"), secret_volume("a.c"));
    }
}
