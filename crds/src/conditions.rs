//! Condition types and reasons of both custom resources, in one place (Kubernetes API
//! conventions, "Typical status properties"): types are adjectives that are `True` when all is
//! well; reasons are CamelCase and stable, for tools to match on.

/// McpServer: everything below is true and the pods are available.
pub const READY: &str = "Ready";
/// McpServer: the bound policies compiled and their tests passed; the compiled policy is in force.
pub const POLICY_VALID: &str = "PolicyValid";
/// McpServer: every document collection's source exists.
pub const DOCUMENTS_READY: &str = "DocumentsReady";
/// McpServer: every referenced Secret exists, and every ExternalSecret the operator applied for
/// the server is `Ready` (External Secrets Operator's own condition).
pub const SECRETS_READY: &str = "SecretsReady";
/// McpServer: every ready pod reports (on its `GET /ready`) the hash of the policy the operator
/// compiled last; `status.policyRollout` counts the pods on each hash.
pub const POLICY_ROLLED_OUT: &str = "PolicyRolledOut";
/// McpServer in front of an upstream: every tool the upstream offers matches its pin in
/// `spec.upstream.tools` (`status.upstream.tools` has each one's state).
pub const TOOLS_PINNED: &str = "ToolsPinned";
/// McpServer with `spec.upstream.container`: every container of its pods runs as the
/// restricted Pod Security Standard asks.
pub const POD_SECURITY_RESTRICTED: &str = "PodSecurityRestricted";
/// McpAccessPolicy: in force on every server it binds, that is every such server passes the
/// validation that precedes a rollout (its spec, all of its policies, and their tests).
pub const ACCEPTED: &str = "Accepted";

/// Reasons, shared by both kinds.
pub mod reason {
    /// The condition holds.
    pub const AS_EXPECTED: &str = "AsExpected";
    /// A policy did not compile, or the McpServer's spec is invalid; the message names the
    /// object and the field path. On an McpAccessPolicy: a server it binds refuses its policies
    /// for that reason (the fault may be in this policy, another policy or the server; the
    /// message says which).
    pub const POLICY_INVALID: &str = "PolicyInvalid";
    /// A policy's own test case failed; the message names the case. On an McpAccessPolicy: a
    /// server it binds refuses its policies because a case (of this or another policy) failed.
    pub const POLICY_TEST_FAILED: &str = "PolicyTestFailed";
    /// No McpAccessPolicy targets the server: every call is denied.
    pub const NO_POLICY: &str = "NoPolicy";
    /// A document ConfigMap does not exist.
    pub const CONFIG_MAP_NOT_FOUND: &str = "ConfigMapNotFound";
    /// A Secret does not exist.
    pub const SECRET_NOT_FOUND: &str = "SecretNotFound";
    /// An ExternalSecret has not been synced yet (no `Ready` condition), or its Secret is
    /// missing although it is `Ready`: External Secrets Operator has yet to act.
    pub const EXTERNAL_SECRET_NOT_READY: &str = "ExternalSecretNotReady";
    /// External Secrets Operator reports an ExternalSecret `Ready=False` (or `Unknown`): the
    /// store refused or failed; the message carries its reason and message.
    pub const EXTERNAL_SECRET_SYNC_FAILED: &str = "ExternalSecretSyncFailed";
    /// The ExternalSecret CRD is not installed in the cluster.
    pub const EXTERNAL_SECRETS_NOT_INSTALLED: &str = "ExternalSecretsNotInstalled";
    /// Some ready pods still serve another policy, or did not answer `GET /ready`; the message
    /// counts the pods on each hash. The operator looks again every few seconds.
    pub const ROLLING_OUT: &str = "RollingOut";
    /// No pod of the server is ready, so no pod enforces any policy yet.
    pub const NO_READY_PODS: &str = "NoReadyPods";
    /// The Deployment's pods are not all available yet.
    pub const PODS_NOT_READY: &str = "PodsNotReady";
    /// The API server refused to apply a child (an admission webhook, a quota, a policy engine,
    /// a conflict with another field manager); the message carries the API server's own. The
    /// operator retries with back-off; the children applied before it stay as they are.
    pub const APPLY_FAILED: &str = "ApplyFailed";
    /// An upstream tool's definition differs from its pin: withheld (or, with `pinning.mode:
    /// Report`, served); the message names each tool with its new `sha256`.
    pub const TOOLS_CHANGED: &str = "ToolsChanged";
    /// Upstream tools have no pin; the message names each with its `sha256`, ready to copy into
    /// `spec.upstream.tools`.
    pub const TOOLS_UNPINNED: &str = "ToolsUnpinned";
    /// No ready pod has reported the upstream's tools yet.
    pub const NO_INVENTORY: &str = "NoInventory";
    /// `spec.upstream.container.runAsUser` is 0: the upstream runs as root, outside the
    /// restricted Pod Security Standard.
    pub const UPSTREAM_RUNS_AS_ROOT: &str = "UpstreamRunsAsRoot";
    /// A policy names a server in another namespace.
    pub const CROSS_NAMESPACE_REF: &str = "CrossNamespaceRef";
    /// A policy targets no existing server.
    pub const NO_TARGETS: &str = "NoTargets";
}
