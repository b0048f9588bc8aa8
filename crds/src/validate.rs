//! The one validation of an McpServer with the policies that bind it: what the operator runs before
//! it builds anything (on every reconcile and in `palisade-operator render`) and what
//! `palisade-server policy check`, `policy compile` and `policy explain` run on manifests, so the
//! same objects get the same verdict and the same messages everywhere.
//!
//! What this adds to [`mod@crate::compile`]: the checks that only matter because the server runs
//! on Kubernetes (object names, ConfigMap sizes, ports, the Secrets External Secrets Operator
//! writes), and refusing a policy whose own test cases fail. It reads nothing: the caller finds
//! the objects first (the controller in its caches, the command lines in files).
//!
//! ```
//! use palisade_crds::validate::{ValidateError, validate};
//! use palisade_crds::{CompileOptions, McpServer};
//!
//! let server: McpServer = yaml_serde::from_str(
//!     "apiVersion: palisade.dev/v1alpha1\nkind: McpServer\n\
//!      metadata: {name: docs, namespace: team-a}\n\
//!      spec: {auth: {allowAnonymous: true}, service: {port: 9090}}",
//! )
//! .unwrap();
//! let error = validate(&server, &[], &CompileOptions::default()).unwrap_err();
//! assert_eq!(error.reason(), "PolicyInvalid");
//! assert_eq!(
//!     error.to_string(),
//!     "invalid: McpServer team-a/docs: spec.service.port: port 9090 is the Service's metrics port; choose another"
//! );
//! ```

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::{Resource, ResourceExt};

use crate::compile::{CompileOptions, Compiled, compile, object_key};
use crate::conditions::reason;
use crate::document::PolicyDocument;
use crate::problem::{Problem, Problems};
use crate::secret_uses;
use crate::{McpAccessPolicy, McpServer};

/// Most bytes of data a ConfigMap holds (the API server's limit is 1 MiB for the whole object;
/// this leaves room for its metadata). The compiled policy and each collection of inline
/// documents are mounted from one ConfigMap each.
pub const MAX_CONFIG_MAP_DATA_BYTES: usize = 1_000_000;

/// The server pods' metrics port, which the server's Service exposes beside the MCP port, so
/// `spec.service.port` must be another one.
pub const METRICS_PORT: i32 = 9090;

/// Why an McpServer cannot be rolled out. The last good policy stays in force.
#[derive(Debug, thiserror::Error)]
pub enum ValidateError {
    /// The McpServer, or a policy that binds it, is invalid (the `PolicyValid` condition's
    /// reason [`reason::POLICY_INVALID`], `PolicyInvalid`). Every problem carries its object and
    /// field path.
    #[error("invalid: {0}")]
    InvalidSpec(Problems),
    /// The policies compile, but some of their own test cases fail (reason
    /// [`reason::POLICY_TEST_FAILED`], `PolicyTestFailed`).
    #[error("policy tests failed: {0}")]
    FailedPolicyTests(Problems),
}

impl ValidateError {
    /// The problems, whatever the kind of failure.
    pub fn problems(&self) -> &Problems {
        match self {
            Self::InvalidSpec(problems) | Self::FailedPolicyTests(problems) => problems,
        }
    }

    /// The reason of the `PolicyValid` condition (and of the `Accepted` condition of the
    /// policies that target the server): [`reason::POLICY_INVALID`] or
    /// [`reason::POLICY_TEST_FAILED`].
    pub fn reason(&self) -> &'static str {
        match self {
            Self::InvalidSpec(_) => reason::POLICY_INVALID,
            Self::FailedPolicyTests(_) => reason::POLICY_TEST_FAILED,
        }
    }

    /// How a person is told, after the server's name: `is invalid` or `fails its policy tests`.
    pub fn verdict(&self) -> &'static str {
        match self {
            Self::InvalidSpec(_) => "is invalid",
            Self::FailedPolicyTests(_) => "fails its policy tests",
        }
    }
}

/// An McpServer that passed validation, with its compiled policy: the only input the operator's
/// builders accept.
#[derive(Debug)]
pub struct ValidatedServer<'a> {
    server: &'a McpServer,
    name: String,
    namespace: String,
    compiled: Compiled,
    bound_policies: Vec<String>,
    warnings: Vec<Problem>,
}

impl<'a> ValidatedServer<'a> {
    /// The McpServer as read.
    pub fn server(&self) -> &'a McpServer {
        self.server
    }

    /// Its name: a DNS-1035 label of at most 63 characters.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// The compiled policy and its test outcomes.
    pub fn compiled(&self) -> &Compiled {
        &self.compiled
    }

    /// The PolicyDocument the pods mount.
    pub fn document(&self) -> &PolicyDocument {
        self.compiled.policy.document()
    }

    /// `sha256:<hex>` of the PolicyDocument.
    pub fn policy_hash(&self) -> &str {
        self.compiled.policy.hash()
    }

    /// Names of the McpAccessPolicies compiled in (all in the server's namespace), sorted.
    pub fn bound_policies(&self) -> &[String] {
        &self.bound_policies
    }

    /// Not wrong, but worth a look (the compiler's warnings and these checks' own).
    pub fn warnings(&self) -> &[Problem] {
        &self.warnings
    }

    /// The controller owner reference every child carries, or `None` when the McpServer has no
    /// `uid` (read from a file rather than the API server): `render` then omits
    /// `ownerReferences`, and the controller never applies such an object.
    pub fn owner_reference(&self) -> Option<OwnerReference> {
        self.server.controller_owner_ref(&())
    }
}

/// Validates `server` with the policies that bind it (see [`crate::bind`]), for the cluster
/// `options` describe (its DNS domain names the default audience, `auth.resource`).
pub fn validate<'a>(
    server: &'a McpServer,
    policies: &[&McpAccessPolicy],
    options: &CompileOptions<'_>,
) -> Result<ValidatedServer<'a>, ValidateError> {
    let object = format!("McpServer {}", object_key(server));
    let mut problems = Problems::default();
    check_server(server, &object, &mut problems);
    let compiled = match compile(server, policies, options) {
        Ok(compiled) => compiled,
        Err(compile_problems) => {
            problems.0.extend(compile_problems.0);
            return Err(ValidateError::InvalidSpec(problems));
        }
    };
    let policy_bytes = compiled.policy.document().to_yaml().len();
    if policy_bytes > MAX_CONFIG_MAP_DATA_BYTES {
        problems.push(
            Some(&format!("compiled policy of {object}")),
            "",
            format!("the compiled policy has {policy_bytes} bytes, more than a ConfigMap holds ({MAX_CONFIG_MAP_DATA_BYTES})"),
        );
    }
    problems.into_result().map_err(ValidateError::InvalidSpec)?;

    let mut failed = Problems::default();
    for outcome in compiled.failed_tests() {
        let index = policies
            .iter()
            .find(|p| object_key(**p) == outcome.policy)
            .and_then(|p| p.spec.tests.iter().position(|t| t.name == outcome.name))
            .map_or_else(|| "spec.tests".to_owned(), |i| format!("spec.tests[{i}]"));
        failed.push(
            Some(&format!("McpAccessPolicy {}", outcome.policy)),
            index,
            format!("test {:?} failed: {}", outcome.name, outcome.failures.join("; ")),
        );
    }
    failed.into_result().map_err(ValidateError::FailedPolicyTests)?;

    let mut warnings = compiled.warnings.clone();
    warnings.extend(server_warnings(server, &object));
    let mut bound_policies: Vec<String> = policies.iter().map(|p| p.name_any()).collect();
    bound_policies.sort();
    bound_policies.dedup();
    Ok(ValidatedServer {
        server,
        name: server.name_any(),
        namespace: server.namespace().unwrap_or_default(),
        compiled,
        bound_policies,
        warnings,
    })
}

/// What Kubernetes needs of an McpServer beyond what the compiler checks.
fn check_server(server: &McpServer, object: &str, problems: &mut Problems) {
    let name = server.name_any();
    if !is_dns_1035_label(&name) {
        problems.push(
            Some(object),
            "metadata.name",
            format!(
                "{name:?} must be a DNS-1035 label (lower-case letters, digits and '-', starting with a letter, \
                 at most 63 characters): it names the server's Service"
            ),
        );
    }
    if server.namespace().is_none_or(|ns| ns.is_empty()) {
        problems.push(Some(object), "metadata.namespace", "the McpServer has no namespace");
    }
    if let Some(port) = server.spec.service.as_ref().and_then(|s| s.port)
        && port == METRICS_PORT
    {
        problems.push(
            Some(object),
            "spec.service.port",
            format!("port {port} is the Service's metrics port; choose another"),
        );
    }
    for (i, collection) in server.spec.documents.iter().enumerate() {
        let bytes: usize = collection
            .inline
            .iter()
            .flatten()
            .map(|d| d.name.len() + d.content.len())
            .sum();
        if bytes > MAX_CONFIG_MAP_DATA_BYTES {
            problems.push(
                Some(object),
                format!("spec.documents[{i}].inline"),
                format!(
                    "{bytes} bytes of inline documents do not fit into one ConfigMap ({MAX_CONFIG_MAP_DATA_BYTES}); \
                     split the collection or use configMapRef"
                ),
            );
        }
    }
    if let Some(problem) = server.spec.telemetry.as_ref().and_then(|t| t.problem()) {
        problems.push(Some(object), "spec.telemetry", problem);
    }
    secret_uses::check(object, &secret_uses::secret_uses(server), problems);
}

fn server_warnings(server: &McpServer, object: &str) -> Vec<Problem> {
    let spec = &server.spec;
    let mut warnings = Vec::new();
    let autoscaling = spec.autoscaling.as_ref().is_some_and(|a| a.enabled);
    if autoscaling && spec.replicas.is_some() {
        warnings.push(Problem::new(
            Some(object),
            "spec.replicas",
            "ignored while autoscaling is enabled: the HorizontalPodAutoscaler sets the replicas",
        ));
    }
    let cpu_request = spec
        .resources
        .as_ref()
        .map(|r| r.requests.as_ref().is_some_and(|q| q.contains_key("cpu")))
        .unwrap_or(true);
    if autoscaling && !cpu_request {
        warnings.push(Problem::new(
            Some(object),
            "spec.resources.requests.cpu",
            "autoscaling targets CPU utilisation of the request, but spec.resources requests no CPU",
        ));
    }
    warnings
}

/// A DNS-1035 label: what a Service name must be.
///
/// ```
/// use palisade_crds::validate::is_dns_1035_label;
///
/// assert!(is_dns_1035_label("company-info"));
/// assert!(!is_dns_1035_label("9lives"));
/// assert!(!is_dns_1035_label("Company"));
/// ```
pub fn is_dns_1035_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && !s.ends_with('-')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_objects::{policy, server};

    const SERVER: &str = r#"
metadata: {name: s, namespace: ns}
spec:
  documents: [{collection: c, configMapRef: {name: c}}]
  tools: [{name: read, collection: c, action: readAll}]
  auth: {allowAnonymous: true}
"#;

    fn options() -> CompileOptions<'static> {
        CompileOptions::default()
    }

    #[test]
    fn service_names_must_be_dns_1035_labels() {
        for good in ["a", "company-info", &"a".repeat(63)] {
            assert!(is_dns_1035_label(good), "{good}");
        }
        for bad in ["", "1abc", "a.b", "A", "a-", &"a".repeat(64)] {
            assert!(!is_dns_1035_label(bad), "{bad}");
        }
        let server = server(&SERVER.replace("name: s,", "name: 9lives,"));
        let error = validate(&server, &[], &options()).unwrap_err();
        assert!(matches!(error, ValidateError::InvalidSpec(_)));
        assert_eq!(error.problems().0[0].path, "metadata.name");
    }

    #[test]
    fn the_metrics_port_is_not_the_mcp_port() {
        let server = server(&format!("{SERVER}  service: {{port: 9090}}"));
        let error = validate(&server, &[], &options()).unwrap_err();
        assert_eq!(error.problems().0[0].path, "spec.service.port");
    }

    #[test]
    fn a_resource_attribute_name_the_variable_would_misread_is_refused_with_its_field() {
        let bad = server(&format!(
            "{SERVER}  telemetry: {{resourceAttributes: {{\"team,x\": a}}}}"
        ));
        let error = validate(&bad, &[], &options()).unwrap_err();
        assert_eq!(error.reason(), "PolicyInvalid");
        assert_eq!(error.problems().0[0].path, "spec.telemetry");
        assert_eq!(
            error.problems().0[0].message,
            "resourceAttributes \"team,x\": a name is at most 128 letters, digits and '.', '_', '-', '/'"
        );
        let good = server(&format!("{SERVER}  telemetry: {{resourceAttributes: {{team: a}}}}"));
        assert!(validate(&good, &[], &options()).is_ok());
    }

    #[test]
    fn inline_documents_must_fit_into_a_config_map() {
        let big = "x".repeat(MAX_CONFIG_MAP_DATA_BYTES);
        let server = server(&format!(
            "metadata: {{name: s, namespace: ns}}\nspec:\n  documents: [{{collection: c, inline: [{{name: a.md, content: {big}}}]}}]\n  auth: {{allowAnonymous: true}}\n"
        ));
        let error = validate(&server, &[], &options()).unwrap_err();
        assert_eq!(
            error.problems().to_string(),
            "McpServer ns/s: spec.documents[0].inline: 1000004 bytes of inline documents do not fit into one \
             ConfigMap (1000000); split the collection or use configMapRef"
        );
    }

    #[test]
    fn failing_policy_tests_are_refused_with_their_field_path() {
        let server = server(SERVER);
        let policy = policy(
            r#"
metadata: {name: p, namespace: ns}
spec:
  targetRefs: [{name: s}]
  roles: [{name: reader, scopes: [c:read]}]
  tools: [{match: read, requiredScopes: [c:read]}]
  tests:
    - {name: passes, identity: {scopes: [c:read]}, allowed: [read]}
    - {name: fails, identity: {}, allowed: [read]}
"#,
        );
        let error = validate(&server, &[&policy], &options()).unwrap_err();
        let ValidateError::FailedPolicyTests(problems) = &error else {
            panic!("{error}");
        };
        assert_eq!(error.verdict(), "fails its policy tests");
        assert_eq!(problems.0.len(), 1);
        assert_eq!(problems.0[0].object.as_deref(), Some("McpAccessPolicy ns/p"));
        assert_eq!(problems.0[0].path, "spec.tests[1]");
        assert!(problems.0[0].message.contains("\"fails\""), "{error}");
    }

    #[test]
    fn a_valid_server_lists_its_policies_and_has_no_owner_offline() {
        let server = server(SERVER);
        let policy = policy("metadata: {name: p, namespace: ns}\nspec: {targetRefs: [{name: s}]}");
        let validated = validate(&server, &[&policy, &policy], &options()).unwrap();
        assert_eq!(validated.bound_policies(), ["p"]);
        assert_eq!(validated.namespace(), "ns");
        assert_eq!(validated.key(), "ns/s");
        assert!(validated.policy_hash().starts_with("sha256:"));
        assert_eq!(validated.owner_reference(), None);
    }

    #[test]
    fn a_server_read_from_the_cluster_owns_its_children() {
        let mut server = server(SERVER);
        server.metadata.uid = Some("1234".into());
        let validated = validate(&server, &[], &options()).unwrap();
        let owner = validated.owner_reference().unwrap();
        assert_eq!(owner.kind, "McpServer");
        assert_eq!(owner.api_version, "palisade.dev/v1alpha1");
        assert_eq!(owner.uid, "1234");
        assert_eq!(owner.controller, Some(true));
    }

    #[test]
    fn autoscaling_warns_about_ignored_replicas_and_missing_cpu_requests() {
        let server = server(&format!(
            "{SERVER}  replicas: 3\n  autoscaling: {{enabled: true}}\n  resources: {{requests: {{memory: 64Mi}}}}"
        ));
        let validated = validate(&server, &[], &options()).unwrap();
        let paths: Vec<&str> = validated.warnings().iter().map(|w| w.path.as_str()).collect();
        assert!(paths.contains(&"spec.replicas"), "{paths:?}");
        assert!(paths.contains(&"spec.resources.requests.cpu"), "{paths:?}");
    }

    #[test]
    fn a_cluster_domain_that_is_no_dns_subdomain_is_refused() {
        let server = server(SERVER);
        let error = validate(
            &server,
            &[],
            &CompileOptions {
                cluster_domain: "corp internal",
            },
        )
        .unwrap_err();
        assert_eq!(error.reason(), "PolicyInvalid");
        assert_eq!(
            error.to_string(),
            "invalid: the cluster domain \"corp internal\" is not a DNS subdomain (e.g. cluster.local)"
        );
    }
}
