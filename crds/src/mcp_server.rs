//! The `McpServer` custom resource: "run an MCP server that serves these document collections as
//! these tools (or stand in front of this upstream MCP server), and accepts callers
//! authenticated like this".
//!
//! Who may see and call which tool is not decided here but by the `McpAccessPolicy` objects that
//! target the server (see [`crate::access_policy`]); a server no policy targets denies every call.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, ResourceRequirements, Toleration, TopologySpreadConstraint};
use k8s_openapi::api::networking::v1::NetworkPolicyPeer;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::SecretKeySource;
pub use crate::upstream::{UpstreamHeader, UpstreamOAuth, UpstreamSpec};

/// Desired state of an MCP server.
// NB: clippy reads the repeated `type_ = "string"` of several `printcolumn(...)` entries as a
// duplicated attribute; they are separate columns.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "palisade.dev",
    version = "v1alpha1",
    kind = "McpServer",
    plural = "mcpservers",
    shortname = "mcps",
    category = "palisade",
    namespaced,
    status = "McpServerStatus",
    cel,
    validation = Rule::new("self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$') && size(self.metadata.name) <= 63")
        .message("the name must be a DNS-1035 label of at most 63 characters: it names the server's Service"),
    doc = "An MCP server that serves document collections as tools and resources, or stands in front of an upstream MCP server, authenticates every request and enforces the McpAccessPolicies that target it.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].status"#
    ),
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".status.readyReplicas"),
    printcolumn(name = "Endpoint", type_ = "string", json_path = ".status.endpoint"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
// NB: lists whose items have a natural key are list-maps (`x-kubernetes-list-type: map`): the API
// server refuses a duplicate key itself (no O(n^2) CEL rule), and server-side apply merges the
// items one by one, so two GitOps sources can each own some. Every key is a required field.
#[x_kube(
    validation = Rule::new("self.tools.all(t, self.documents.exists(d, d.collection == t.collection))")
        .message("every tool must serve a collection listed in spec.documents").field_path(".tools"),
    validation = Rule::new("!has(self.upstream) || ((!has(self.documents) || size(self.documents) == 0) && (!has(self.tools) || size(self.tools) == 0))")
        .message("a server with an upstream serves the upstream's tools: leave documents and tools empty").field_path(".upstream"),
)]
pub struct McpServerSpec {
    /// Number of server pods. Defaults to 1. Ignored while `autoscaling.enabled` is true: the
    /// HorizontalPodAutoscaler owns the count (switching it on keeps the current count until it
    /// acts). Switching autoscaling off scales to this number: set it in the same change to keep
    /// the capacity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub replicas: Option<i32>,

    /// Server image. Defaults to the `palisade-server` image of the operator's own version (or the
    /// operator-wide override).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,

    /// Image pull policy of the server container. Defaults to Kubernetes' own default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<ImagePullPolicy>,

    /// Document collections the server reads. Each becomes a directory of documents in the pod.
    /// Keyed by `collection`: the API server refuses two collections with one name.
    #[serde(default)]
    #[schemars(length(max = 64))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["collection".into()]))]
    pub documents: Vec<DocumentCollection>,

    /// Tools the server offers. Each serves one collection with one action. Which callers see and
    /// may call a tool is decided by the McpAccessPolicies that target this server. Keyed by
    /// `name`: the API server refuses two tools with one name.
    #[serde(default)]
    #[schemars(length(max = 128))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub tools: Vec<ToolSpec>,

    /// Proxy mode: stand in front of an existing MCP server instead of serving documents. The
    /// server lists the upstream's tools filtered by the McpAccessPolicies that target it and
    /// checks every call before it is forwarded; callers authenticate, are rate limited and
    /// audited exactly as on a document server. Leave `documents` and `tools` empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<UpstreamSpec>,

    /// How callers authenticate.
    pub auth: AuthSpec,

    /// The Service in front of the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceSpec>,

    /// Compute resources of the server container. Defaults to a small request and a memory limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Where the pods may run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduling: Option<SchedulingSpec>,

    /// Extra labels and annotations on the server pods (service-mesh injection, a Vault agent,
    /// cost allocation). Changing them rolls the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_template: Option<PodTemplateMetadata>,

    /// The ServiceAccount the pods run as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<ServiceAccountSpec>,

    /// Restrict which pods may reach the server with a NetworkPolicy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_policy: Option<NetworkPolicySpec>,

    /// Keep pods available during voluntary disruptions with a PodDisruptionBudget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_disruption_budget: Option<PodDisruptionBudgetSpec>,

    /// Scale the pods on CPU with a HorizontalPodAutoscaler.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingSpec>,

    /// Trace export of the pods (OpenTelemetry over OTLP). Unset fields take the operator's
    /// defaults; with no endpoint from either, the pods export nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telemetry: Option<crate::telemetry::TelemetrySpec>,
}

/// Image pull policy: `Always` pull, pull only when the image is not on the node
/// (`IfNotPresent`), or `Never` pull.
// NB: no doc comments on the variants. With them, schemars describes the enum as a `oneOf` of
// documented constants, and kube's rewrite of `Option<enum>` then replaces the description of the
// field (`spec.imagePullPolicy`) with the enum's own; without them the field keeps its doc.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum ImagePullPolicy {
    Always,
    IfNotPresent,
    Never,
}

/// A named collection of documents.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.configMapRef) != has(self.inline)")
    .message("set exactly one of configMapRef or inline"))]
pub struct DocumentCollection {
    /// Name of the collection: a DNS label, also the directory name in the pod and the first path
    /// segment of its resources' URIs.
    #[schemars(length(min = 1, max = 50), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub collection: String,
    /// What the collection holds, shown to clients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub description: Option<String>,
    /// A ConfigMap in the same namespace whose keys are document names and values their content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_ref: Option<ConfigMapRef>,
    /// Documents written in place; the operator puts them into a ConfigMap it owns. Keyed by
    /// `name`: the API server refuses two documents with one name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub inline: Option<Vec<InlineDocument>>,
}

/// A ConfigMap in the McpServer's namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapRef {
    /// Name of the ConfigMap.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"))]
    pub name: String,
}

/// One document written in the McpServer.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct InlineDocument {
    /// File name of the document, e.g. `public.md`; its extension sets the MIME type.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[A-Za-z0-9_][-._A-Za-z0-9]*$"))]
    pub name: String,
    /// Content of the document (UTF-8 text).
    #[schemars(length(max = 262144))]
    pub content: String,
}

/// A tool the server offers.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ToolSpec {
    /// Tool name as MCP clients see it: 1 to 128 characters from `A-Z a-z 0-9 _ - .`.
    #[schemars(length(min = 1, max = 128), regex(pattern = r"^[A-Za-z0-9_.-]+$"))]
    pub name: String,
    /// Human-readable title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub title: Option<String>,
    /// What the tool does, shown to the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub description: Option<String>,
    /// The document collection the tool serves.
    #[schemars(length(min = 1, max = 50))]
    pub collection: String,
    /// What the tool does with the collection.
    pub action: ToolAction,
}

/// What a tool does with its collection.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub enum ToolAction {
    /// List the names (and titles) of the collection's documents.
    List,
    /// Return one document by name (argument `name`).
    Get,
    /// Case-insensitive full-text search (argument `query`), returning bounded snippets.
    Search,
    /// Return every document of the collection.
    ReadAll,
}

impl ToolAction {
    /// Whether the action returns whole documents, so that a caller allowed to use it may also
    /// read the collection's documents as MCP resources.
    pub fn reveals_content(self) -> bool {
        matches!(self, Self::Get | Self::ReadAll)
    }
}

/// How callers authenticate. Palisade never serves unauthenticated callers unless
/// `allowAnonymous` says so.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("size(self.issuers) > 0 || has(self.apiKeys) || self.allowAnonymous")
        .message("configure at least one issuer or an apiKeys table, or set allowAnonymous: true explicitly"),
)]
pub struct AuthSpec {
    /// Canonical URI of this server (RFC 8707 resource indicator). Tokens must carry it in `aud`
    /// (unless an issuer lists other audiences), and it is published in the Protected Resource
    /// Metadata (RFC 9728). Defaults to the in-cluster URL
    /// `http://<name>.<namespace>.svc.<cluster domain>/mcp` (with `:<port>` unless the Service port
    /// is 80), where the cluster domain is the operator's `--cluster-domain`, `cluster.local` by
    /// default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = Rule::new("isURL(self) && (self.startsWith('https://') || self.startsWith('http://')) && url(self).getHost() != '' && !self.contains('#')")
        .message("resource must be an absolute http(s) URI without a fragment (RFC 8707 section 2)"))]
    pub resource: Option<String>,

    /// Token issuers whose JWTs the server accepts. Keyed by `issuer`: the API server refuses two
    /// entries for one issuer.
    #[serde(default)]
    #[schemars(length(max = 16))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["issuer".into()]))]
    pub issuers: Vec<IssuerSpec>,

    /// A table of API keys (stored as SHA-256 hashes) with the identity, roles and scopes of each.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_keys: Option<SecretKeySource>,

    /// Accept requests without credentials. Anonymous callers get only the roles that bindings
    /// grant with `anonymous: true`. Defaults to false.
    #[serde(default)]
    pub allow_anonymous: bool,

    /// Clock skew tolerated for `exp`, `nbf` and `iat`, in seconds. Defaults to 60.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    // NB: `int32`, a format the API server knows (schemars writes `uint32` for a u32, which
    // `kubectl apply` of the CRD warns about).
    #[schemars(range(min = 0, max = 300), extend("format" = "int32"))]
    pub leeway_seconds: Option<u32>,
}

/// An issuer of JWT access or identity tokens.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!(has(self.jwksUri) && has(self.hmacKey))")
        .message("jwksUri and hmacKey are mutually exclusive: an issuer signs either with an HMAC key or with keys from a JWKS"),
    validation = Rule::new("!has(self.hmacKey) || self.algorithms.all(a, a.startsWith('HS'))")
        .message("an hmacKey issuer accepts only HS256, HS384 or HS512").field_path(".algorithms"),
    validation = Rule::new("has(self.hmacKey) || self.algorithms.all(a, !a.startsWith('HS'))")
        .message("a JWKS or OIDC issuer never accepts HS256/HS384/HS512 (its public keys would become HMAC secrets)").field_path(".algorithms"),
    validation = Rule::new("has(self.hmacKey) || has(self.jwksUri) || self.issuer.startsWith('https://') || self.issuer.startsWith('http://')")
        .message("without jwksUri or hmacKey, keys come from OIDC discovery, which needs the issuer to be an http(s) URL").field_path(".issuer"),
    validation = Rule::new("has(self.hmacKey) || (has(self.allowInsecureHttp) && self.allowInsecureHttp) || (has(self.jwksUri) ? self.jwksUri.startsWith('https://') : !self.issuer.startsWith('http://'))")
        .message("signing keys are fetched over HTTPS only: use an https:// issuer or jwksUri, or set allowInsecureHttp: true on a development issuer"),
    validation = Rule::new("!has(self.hmacKey) || !has(self.allowInsecureHttp) || !self.allowInsecureHttp")
        .message("allowInsecureHttp applies to keys fetched by JWKS or OIDC discovery; an hmacKey issuer fetches none").field_path(".allowInsecureHttp"),
    validation = Rule::new("!has(self.hmacKey) || !has(self.kubernetesServiceAccounts) || !self.kubernetesServiceAccounts")
        .message("an hmacKey issuer cannot be the cluster's service-account issuer: Kubernetes signs service-account tokens with its own keys, published by JWKS or OIDC discovery").field_path(".kubernetesServiceAccounts"),
)]
pub struct IssuerSpec {
    /// The exact `iss` claim value, e.g. `https://accounts.google.com`. Without `jwksUri` or
    /// `hmacKey`, keys are found by OIDC discovery at `<issuer>/.well-known/openid-configuration`.
    #[schemars(length(min = 1, max = 512))]
    pub issuer: String,

    /// Accepted `aud` values; a token must carry at least one. Defaults to `auth.resource`.
    #[serde(default)]
    #[schemars(length(max = 16), inner(length(min = 1, max = 512)))]
    pub audiences: Vec<String>,

    /// Accepted signature algorithms. The token's `alg` header is never trusted beyond this list.
    /// Defaults to `[HS256]` with an `hmacKey`, otherwise `[RS256, ES256]`.
    #[serde(default)]
    #[schemars(length(max = 12))]
    pub algorithms: Vec<JwtAlgorithm>,

    /// URL of the issuer's JSON Web Key Set, instead of OIDC discovery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = Rule::new("isURL(self) && (self.startsWith('https://') || self.startsWith('http://')) && url(self).getHost() != ''")
        .message("jwksUri must be an absolute http(s) URL"))]
    pub jwks_uri: Option<String>,

    /// The shared secret for HS256/384/512 tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hmac_key: Option<SecretKeySource>,

    /// Names of the claims that carry the caller's identity, scopes, roles and groups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claims: Option<ClaimNames>,

    /// This issuer is the cluster's Kubernetes service-account issuer (`kubectl get --raw
    /// /.well-known/openid-configuration`): the `kubernetes.io` claim of its tokens (`namespace`,
    /// `serviceaccount.name`) makes the caller that service account, which McpAccessPolicy
    /// `bindings[].serviceAccounts` grant roles to. The `kubernetes.io` claim of a token from any
    /// other issuer is ignored, since such an issuer could put any service account there. Not
    /// with `hmacKey`. Defaults to false.
    #[serde(default)]
    pub kubernetes_service_accounts: bool,

    /// Development only: fetch this issuer's discovery document and JWKS over plain `http://`
    /// (a local IdP, a test). Without it, keys come over HTTPS only, since anyone on the path of
    /// a plain-HTTP fetch could inject signing keys. The McpServer's `PolicyValid` condition names
    /// every issuer that sets it. Not with `hmacKey`. Defaults to false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_insecure_http: bool,
}

/// JWS signature algorithms (RFC 7518, RFC 8037).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[allow(missing_docs)]
pub enum JwtAlgorithm {
    HS256,
    HS384,
    HS512,
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
}

impl JwtAlgorithm {
    /// Whether the algorithm is an HMAC (shared-secret) one.
    pub fn is_hmac(self) -> bool {
        matches!(self, Self::HS256 | Self::HS384 | Self::HS512)
    }
}

/// Claim names. Each defaults to the usual name.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ClaimNames {
    /// Claim with the caller's identity. Defaults to `sub`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub subject: Option<String>,
    /// Claim with the granted scopes, a space-separated string or an array. Defaults to `scope`
    /// (`scp` is read too when `scope` is absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub scopes: Option<String>,
    /// Claim with role names. Defaults to `roles`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub roles: Option<String>,
    /// Claim with group names. Defaults to `groups`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub groups: Option<String>,
}

/// The Service in front of the pods.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    /// Service type. Defaults to `ClusterIP`.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "type")]
    pub type_: Option<ServiceType>,
    /// Port the Service exposes the MCP endpoint on. Defaults to 80.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,
    /// Annotations on the Service (e.g. for a cloud load balancer).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// Kubernetes Service type.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum ServiceType {
    ClusterIP,
    NodePort,
    LoadBalancer,
}

/// Where the pods may run.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SchedulingSpec {
    /// Node labels the pods require.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations of the pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Affinity of the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Topology spread constraints. Defaults to spreading the pods across nodes and zones
    /// (`ScheduleAnyway`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology_spread_constraints: Option<Vec<TopologySpreadConstraint>>,
    /// Priority class of the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub priority_class_name: Option<String>,
}

/// Labels the operator puts on every server pod; they select the pods (Deployment, Service,
/// NetworkPolicy, PodDisruptionBudget), so `podTemplate.labels` may not set them.
pub const OPERATOR_POD_LABELS: [&str; 4] = [
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/component",
];

/// Annotations the operator puts on every server pod, which `podTemplate.annotations` may not
/// set.
pub const OPERATOR_POD_ANNOTATIONS: [&str; 4] = [
    "kubectl.kubernetes.io/default-container",
    "prometheus.io/scrape",
    "prometheus.io/port",
    "prometheus.io/path",
];

/// A CEL rule on a map: none of `keys` is set.
pub(crate) fn none_of(keys: &[&str]) -> String {
    let list: Vec<String> = keys.iter().map(|k| format!("'{k}'")).collect();
    format!("![{}].exists(k, k in self)", list.join(", "))
}

/// Labels and annotations added to the pod template of the server Deployment.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PodTemplateMetadata {
    /// Labels on the pods, besides the operator's own `app.kubernetes.io/name`, `instance`,
    /// `managed-by` and `component`, which select the pods and cannot be set here.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[x_kube(validation = Rule::new(none_of(&OPERATOR_POD_LABELS))
        .message("podTemplate.labels cannot set app.kubernetes.io/name, instance, managed-by or component: the operator sets them, and they select the server's pods"))]
    pub labels: BTreeMap<String, String>,
    /// Annotations on the pods (e.g. `sidecar.istio.io/inject`, `vault.hashicorp.com/agent-inject`),
    /// besides the operator's own `kubectl.kubernetes.io/default-container` and
    /// `prometheus.io/scrape`, `port` and `path`, which cannot be set here.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[x_kube(validation = Rule::new(none_of(&OPERATOR_POD_ANNOTATIONS))
        .message("podTemplate.annotations cannot set kubectl.kubernetes.io/default-container or prometheus.io/scrape, port or path: the operator sets them"))]
    pub annotations: BTreeMap<String, String>,
}

/// The ServiceAccount the pods run as.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAccountSpec {
    /// Annotations on the ServiceAccount, e.g. `iam.gke.io/gcp-service-account` for GKE Workload
    /// Identity or `eks.amazonaws.com/role-arn` for EKS.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// NetworkPolicy switch.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicySpec {
    /// Create a NetworkPolicy for the pods.
    #[serde(default)]
    pub enabled: bool,
    /// Peers allowed to reach the MCP port. Defaults to every pod in the McpServer's namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress_from: Vec<NetworkPolicyPeer>,
    /// Peers allowed to reach the metrics port (e.g. the Prometheus namespace). Defaults to none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics_from: Vec<NetworkPolicyPeer>,
}

/// PodDisruptionBudget switch.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.minAvailable) && has(self.maxUnavailable))")
    .message("minAvailable and maxUnavailable are mutually exclusive"))]
pub struct PodDisruptionBudgetSpec {
    /// Create a PodDisruptionBudget for the pods.
    #[serde(default)]
    pub enabled: bool,
    /// Pods that must stay available (a number or a percentage).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_available: Option<IntOrString>,
    /// Pods that may be unavailable (a number or a percentage). Defaults to 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<IntOrString>,
}

/// HorizontalPodAutoscaler switch.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.minReplicas) || !has(self.maxReplicas) || self.minReplicas <= self.maxReplicas")
    .message("minReplicas must not exceed maxReplicas"))]
pub struct AutoscalingSpec {
    /// Create a HorizontalPodAutoscaler; `replicas` is then ignored.
    #[serde(default)]
    pub enabled: bool,
    /// Fewest pods. Defaults to 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub min_replicas: Option<i32>,
    /// Most pods. Defaults to 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub max_replicas: Option<i32>,
    /// Target average CPU utilisation in percent of the request. Defaults to 70.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub target_cpu_utilization_percentage: Option<i32>,
}

/// Observed state of an MCP server.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct McpServerStatus {
    /// `Ready`, `PolicyValid`, `DocumentsReady` and `SecretsReady`, each with a reason and a
    /// message a person can act on. Keyed by `type`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Pods of the server's Deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Pods that pass their readiness probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    /// In-cluster URL of the MCP endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Hash (`sha256:<hex>`) of the compiled policy in force: every ready pod reported it on its
    /// `GET /ready` (condition `PolicyRolledOut`). A newer policy that the pods do not all serve
    /// yet is not shown here but in `policyRollout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_hash: Option<String>,
    /// How many ready pods serve each policy, as the pods themselves report it on `GET /ready`
    /// (pods that did not answer are counted under the hash `unknown`). Keyed by `hash`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["hash".into()]))]
    pub policy_rollout: Vec<PolicyRollout>,
    /// The McpAccessPolicies compiled into the policy in force.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bound_policies: Vec<String>,
    /// Tools that at least one role, binding or anonymous caller can reach. Not set for a server in
    /// front of an upstream: its tools are the upstream's, listed by the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reachable_tools: Option<i32>,
    /// Names of tools no role can reach: they are invisible to every caller.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unreachable_tools: Vec<String>,
    /// A server in front of an upstream: the tools the upstream offers, as a ready pod lists
    /// them, with each definition's `sha256` and whether it matches its pin and is served
    /// (condition `ToolsPinned`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<crate::inventory::UpstreamInventory>,
}

/// The ready pods that serve one policy.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRollout {
    /// `sha256:<hex>` of the compiled policy a pod reported, or `unknown` for ready pods that did
    /// not answer `GET /ready` with a policy hash.
    pub hash: String,
    /// How many ready pods reported it.
    pub pods: i32,
}
