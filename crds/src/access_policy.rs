//! The `McpAccessPolicy` custom resource: "these identities get these roles; these roles carry
//! these scopes; these tools need these scopes", plus test cases that must pass before the policy
//! is rolled out.
//!
//! The static checks that CEL can express live on the types (they reject bad objects at admission
//! time); every check is repeated with field paths by [`crate::compile`], which is what the
//! operator and `palisade-server policy check` run.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use std::collections::BTreeMap;

use crate::arguments::ArgumentConstraint;
use crate::common::PolicyMode;
use crate::identity_source::BindingSource;

/// Message of the CEL rule (and the compile check) that refuses `issuer` with `source`.
pub const ISSUER_XOR_SOURCE: &str = "issuer and source are mutually exclusive: set issuer for a JWT issuer's identities, or source: ApiKeys or ClientCertificates";

/// CEL regular expression for a granted scope: RFC 6749 scope-token characters, `:`-separated
/// segments, `*` only as a whole segment. Kept equal to [`crate::scope::ScopeGrant::parse`] by a test.
/// One non-empty segment, or several (possibly empty) `:`-separated segments.
pub const GRANTED_SCOPE_REGEX: &str = r"^((\*|[!#-)+-9;-\[\]-~]+)|(\*|[!#-)+-9;-\[\]-~]*)(:(\*|[!#-)+-9;-\[\]-~]*))+)$";
/// CEL regular expression for a literal scope (no `*`).
pub const LITERAL_SCOPE_REGEX: &str = r"^[!#-)+-\[\]-~]+$";

/// Desired access rules for one or more MCP servers in the same namespace.
// NB: clippy reads the repeated `type_ = "string"` of several `printcolumn(...)` entries as a
// duplicated attribute; they are separate columns.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "palisade.dev",
    version = "v1alpha1",
    kind = "McpAccessPolicy",
    plural = "mcpaccesspolicies",
    shortname = "mcpap",
    category = "palisade",
    namespaced,
    status = "McpAccessPolicyStatus",
    cel,
    doc = "Access rules for the McpServers it targets: roles and their scopes, the scopes each tool requires, who holds which role, and test cases that must pass before the policy is rolled out.",
    printcolumn(name = "Servers", type_ = "string", json_path = ".status.boundServers"),
    printcolumn(name = "Mode", type_ = "string", json_path = ".spec.mode"),
    printcolumn(name = "Tests", type_ = "string", json_path = ".status.testSummary"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("size(self.targetRefs) > 0 || has(self.targetSelector)")
        .message("a policy must target servers: set targetRefs or targetSelector"),
    validation = Rule::new("self.bindings.all(b, self.roles.exists(r, r.name == b.role))")
        .message("every binding must name a role defined in spec.roles").field_path(".bindings"),
)]
// NB: roles, tool rules and tests are list-maps (`x-kubernetes-list-type: map`) on their required
// `name` or `match`: the API server refuses duplicates itself, and server-side apply merges them
// item by item. Bindings have no key (several may grant one role) and stay atomic.
pub struct McpAccessPolicySpec {
    /// McpServers in this policy's namespace that the policy applies to, by name.
    #[serde(default)]
    #[schemars(length(max = 64))]
    pub target_refs: Vec<TargetRef>,

    /// McpServers in this policy's namespace that the policy applies to, by label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_selector: Option<LabelSelector>,

    /// Roles: a name and the scopes it grants. A scope may use `*` for one whole `:`-separated
    /// segment (`docs:*`). Keyed by `name`: the API server refuses two roles with one name.
    #[serde(default)]
    #[schemars(length(max = 128))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub roles: Vec<RoleSpec>,

    /// Scope hierarchies: a broader scope and the narrower scopes it implies
    /// (`{scope: files, implies: ["files:*"]}`). A caller holding the broader scope, in its token
    /// or through a role, holds the implied ones too, transitively (`files` → `files:admin` →
    /// `files:read`). Implications of one scope stated by several policies of a server add up; a
    /// cycle (`a` implies `b` implies `a`) is refused. Keyed by `scope`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["scope".into()]))]
    pub scope_implications: Vec<ScopeImplicationSpec>,

    /// The scopes each tool requires, and the arguments its calls may carry. A caller sees and
    /// may call a tool only when it holds all of a rule's scopes; a tool no rule matches is
    /// invisible and uncallable. The most specific match decides: an exact name beats a glob, a
    /// glob with more literal characters beats a shorter one. Several rules with one `match`
    /// (in one policy or several) are alternatives: any one whose scopes the caller holds and
    /// whose argument constraints the call satisfies allows it. An atomic list (several rules
    /// may share a `match`).
    #[serde(default)]
    #[schemars(length(max = 128))]
    pub tools: Vec<ToolRuleSpec>,

    /// Proxy mode (McpServers with `spec.upstream`): the scopes each of the upstream's prompts
    /// requires, matched by prompt name like `tools`; `prompts/list` shows exactly the prompts
    /// `prompts/get` allows. A prompt no rule matches is denied. Keyed by `match`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 128))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["match".into()]))]
    pub prompts: Vec<ToolRuleSpec>,

    /// Proxy mode (McpServers with `spec.upstream`): the scopes each of the upstream's resources
    /// requires, matched by URI (`file:///data/public/*`, `demo://resource/static/*`); a resource
    /// template is matched by its URI template text. `resources/list` and
    /// `resources/templates/list` show exactly what `resources/read` allows. A resource no rule
    /// matches is denied. Keyed by `match`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 128))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["match".into()]))]
    pub resources: Vec<ResourceRuleSpec>,

    /// Who holds which role.
    #[serde(default)]
    #[schemars(length(max = 128))]
    pub bindings: Vec<BindingSpec>,

    /// `Enforce` (the default) or `Audit`: decide and log, but allow.
    #[serde(default)]
    pub mode: PolicyMode,

    /// Cases the operator evaluates before rolling the policy out; one failing case keeps the last
    /// good policy in force. Keyed by `name`: the API server refuses two cases with one name.
    #[serde(default)]
    #[schemars(length(max = 128))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub tests: Vec<PolicyTestSpec>,
}

/// An McpServer in the policy's own namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TargetRef {
    /// Name of the McpServer.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Namespace of the McpServer. A policy binds only servers in its own namespace; any other
    /// value is refused with the condition `Accepted=False`, reason `CrossNamespaceRef`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub namespace: Option<String>,
}

/// A role and the scopes it grants.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RoleSpec {
    /// Name of the role, as bindings and token role claims name it.
    #[schemars(length(min = 1, max = 128), regex(pattern = r"^[A-Za-z0-9][-A-Za-z0-9_.:]*$"))]
    pub name: String,
    /// What the role is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub description: Option<String>,
    /// Scopes the role grants; `*` may stand for one whole segment (`docs:*`). At most 64
    /// scopes of at most 128 characters each (the bound keeps the API server's CEL cost
    /// estimate of the rule below within its budget).
    #[schemars(length(max = 64), inner(length(min = 1, max = 128)))]
    #[x_kube(validation = Rule::new(format!("self.all(s, s.matches('{}'))", cel_quote(GRANTED_SCOPE_REGEX)))
        .message("scopes are RFC 6749 scope tokens; '*' may only stand for a whole ':'-separated segment, e.g. 'docs:*'"))]
    pub scopes: Vec<String>,
}

/// A broader scope and the narrower scopes it implies.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!self.implies.exists(s, s == self.scope)")
    .message("a scope does not imply itself; list the narrower scopes it implies"))]
pub struct ScopeImplicationSpec {
    /// The broader scope, literal, as an IdP issues it or a role grants it (`files`,
    /// `files:admin`).
    #[schemars(length(min = 1, max = 256))]
    #[x_kube(validation = Rule::new(format!("self.matches('{}')", cel_quote(LITERAL_SCOPE_REGEX)))
        .message("the broader scope is a literal RFC 6749 scope token"))]
    pub scope: String,
    /// The narrower scopes it implies, written like the scopes a role grants: literal, or with
    /// `*` for one whole `:`-separated segment (`files:*`). At least one, at most 32.
    #[schemars(length(min = 1, max = 32), inner(length(min = 1, max = 128)))]
    #[x_kube(validation = Rule::new(format!("self.all(s, s.matches('{}'))", cel_quote(GRANTED_SCOPE_REGEX)))
        .message("scopes are RFC 6749 scope tokens; '*' may only stand for a whole ':'-separated segment, e.g. 'docs:*'"))]
    pub implies: Vec<String>,
}

/// A rule stating the scopes that matching tools require.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ToolRuleSpec {
    /// A tool name, or a glob where `*` matches any run of characters (`get_*`, `*`).
    #[serde(rename = "match")]
    #[schemars(length(min = 1, max = 128), regex(pattern = r"^[A-Za-z0-9_.*-]+$"))]
    pub match_: String,
    /// Scopes a caller must hold, all of them. Literal scopes only. An empty list makes the tool
    /// available to every caller the server admits.
    #[serde(default)]
    #[schemars(length(max = 32), inner(length(min = 1, max = 256)))]
    #[x_kube(validation = Rule::new(format!("self.all(s, s.matches('{}'))", cel_quote(LITERAL_SCOPE_REGEX)))
        .message("required scopes are literal RFC 6749 scope tokens; '*' is only allowed in the scopes a role grants"))]
    pub required_scopes: Vec<String>,
    /// Constraints on the arguments of the calls this rule allows, by argument name
    /// (`path: {glob: ["/data/public/**"]}`). Each named argument must be present (unless
    /// `required: false`) and satisfy every constraint given for it; arguments not named are
    /// not constrained. A call that fails them is denied with reason `argument_denied` unless
    /// another rule for the tool allows it. A tool is listed when some arguments would be
    /// allowed (its input schema is listed as the server defines it).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 16))]
    pub arguments: BTreeMap<String, ArgumentConstraint>,
}

/// A rule stating the scopes that matching resources of an upstream require.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ResourceRuleSpec {
    /// A resource URI (or URI template, as the upstream lists it), or a glob where `*` matches any
    /// run of characters, `/` included (`file:///data/public/*`, `*`). Visible ASCII only:
    /// percent-encode the rest, as the URIs themselves are.
    #[serde(rename = "match")]
    #[schemars(length(min = 1, max = 2048), regex(pattern = r"^[!-~]+$"))]
    pub match_: String,
    /// Scopes a caller must hold, all of them. Literal scopes only. An empty list makes the
    /// resources available to every caller the server admits.
    #[serde(default)]
    #[schemars(length(max = 32), inner(length(min = 1, max = 256)))]
    #[x_kube(validation = Rule::new(format!("self.all(s, s.matches('{}'))", cel_quote(LITERAL_SCOPE_REGEX)))
        .message("required scopes are literal RFC 6749 scope tokens; '*' is only allowed in the scopes a role grants"))]
    pub required_scopes: Vec<String>,
}

/// Grants a role to subjects, groups, Kubernetes service accounts or anonymous callers.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("size(self.subjects) > 0 || size(self.groups) > 0 || size(self.serviceAccounts) > 0 || self.anonymous")
        .message("a binding must name at least one subject, group or service account, or set anonymous: true"),
    validation = Rule::new("!self.subjects.exists(s, s == '*' || s == 'system:anonymous') && !self.groups.exists(g, g == '*' || g == 'system:unauthenticated')")
        .message("bind unauthenticated callers with anonymous: true, never with a wildcard or system:anonymous/system:unauthenticated"),
    validation = Rule::new("!has(self.issuer) || !has(self.source)")
        .message(ISSUER_XOR_SOURCE),
    validation = Rule::new("(!has(self.issuer) && !has(self.source)) || size(self.subjects) > 0 || size(self.groups) > 0")
        .message("issuer and source qualify subjects and groups: a binding that sets one must name a subject or group"),
)]
pub struct BindingSpec {
    /// The role granted; it must be defined in this policy's `roles`.
    #[schemars(length(min = 1, max = 128))]
    pub role: String,
    /// The JWT issuer (one of the server's `auth.issuers[].issuer`) whose subjects and groups
    /// this binding means. Identities from different sources never match one another's bindings:
    /// `alice` of one issuer is not `alice` of another issuer or of an API key. Required (this or
    /// `source`) when the server accepts more than one issuer or API keys besides an issuer;
    /// without it the binding means the server's only source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub issuer: Option<String>,
    /// The non-JWT source of this binding's subjects and groups: `ApiKeys` (the subjects and groups
    /// of the server's API-key table) or `ClientCertificates` (the subject of a client
    /// certificate verified by a server run with `--tls-client-ca`). Not with `issuer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<BindingSource>,
    /// Subjects (the token's subject claim, an API key's subject, or a client certificate's
    /// subject, of the binding's source) that hold the role.
    #[serde(default)]
    #[schemars(length(max = 256), inner(length(min = 1, max = 512)))]
    pub subjects: Vec<String>,
    /// Groups (values of the token's groups claim, or an API key's groups, of the binding's
    /// source) whose members hold the role.
    #[serde(default)]
    #[schemars(length(max = 256), inner(length(min = 1, max = 512)))]
    pub groups: Vec<String>,
    /// Kubernetes service accounts (projected service-account tokens) that hold the role.
    #[serde(default)]
    #[schemars(length(max = 256))]
    pub service_accounts: Vec<ServiceAccountRef>,
    /// Grant the role to callers without credentials (only where the McpServer sets
    /// `auth.allowAnonymous: true`).
    #[serde(default)]
    pub anonymous: bool,
}

/// A call of a policy test: a tool and the arguments it is called with.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TestCall {
    /// The tool called.
    #[schemars(length(min = 1, max = 128))]
    pub tool: String,
    /// The call's arguments, as a client would send them (`{path: /data/public/a.txt}`).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    #[schemars(schema_with = "any_object")]
    pub arguments: serde_json::Map<String, serde_json::Value>,
}

/// An object of any fields (kept as written by the API server).
fn any_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})
}

/// A Kubernetes service account.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAccountRef {
    /// Namespace of the service account. Defaults to the policy's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub namespace: Option<String>,
    /// Name of the service account.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"))]
    pub name: String,
}

/// A test case: an identity and what it must and must not be able to do.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.visibleTools) || size(self.allowed) > 0 || size(self.denied) > 0 || (has(self.allowedPrompts) && size(self.allowedPrompts) > 0) || (has(self.deniedPrompts) && size(self.deniedPrompts) > 0) || (has(self.allowedResources) && size(self.allowedResources) > 0) || (has(self.deniedResources) && size(self.deniedResources) > 0) || (has(self.allowedCalls) && size(self.allowedCalls) > 0) || (has(self.deniedCalls) && size(self.deniedCalls) > 0)")
        .message("a test must assert something: set visibleTools, allowed or denied (or allowedPrompts, deniedPrompts, allowedResources, deniedResources, allowedCalls, deniedCalls)"),
    validation = Rule::new("!self.allowed.exists(t, t in self.denied)")
        .message("a tool cannot be both allowed and denied in one test"),
)]
pub struct PolicyTestSpec {
    /// Name of the case, reported with its result.
    #[schemars(length(min = 1, max = 256))]
    pub name: String,
    /// Who calls.
    #[serde(default)]
    pub identity: TestIdentity,
    /// Exactly the tools the identity must see in `tools/list`, in any order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256), inner(length(min = 1, max = 128)))]
    pub visible_tools: Option<Vec<String>>,
    /// Tools the identity must be allowed to call.
    #[serde(default)]
    #[schemars(length(max = 256), inner(length(min = 1, max = 128)))]
    pub allowed: Vec<String>,
    /// Tools the identity must be denied.
    #[serde(default)]
    #[schemars(length(max = 256), inner(length(min = 1, max = 128)))]
    pub denied: Vec<String>,
    /// Calls with arguments the identity must be allowed to make (argument constraints).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub allowed_calls: Vec<TestCall>,
    /// Calls with arguments the identity must be denied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub denied_calls: Vec<TestCall>,
    /// Proxy mode: prompts of the upstream the identity must be allowed to get.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(min = 1, max = 128)))]
    pub allowed_prompts: Vec<String>,
    /// Proxy mode: prompts the identity must be denied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(min = 1, max = 128)))]
    pub denied_prompts: Vec<String>,
    /// Proxy mode: resource URIs (or URI templates) the identity must be allowed to read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 2048)))]
    pub allowed_resources: Vec<String>,
    /// Proxy mode: resource URIs (or URI templates) the identity must be denied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 2048)))]
    pub denied_resources: Vec<String>,
}

/// The caller of a test case.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!self.anonymous || (!has(self.subject) && size(self.scopes) == 0 && size(self.roles) == 0 && size(self.groups) == 0 && !has(self.serviceAccount))")
        .message("an anonymous identity has no subject, scopes, roles, groups or service account"),
    validation = Rule::new("!has(self.issuer) || !has(self.source)")
        .message(ISSUER_XOR_SOURCE),
)]
pub struct TestIdentity {
    /// The JWT issuer of the caller's token, as in `bindings[].issuer`. Required (this or
    /// `source`) for a caller with a subject or groups when the server accepts identities from more
    /// than one source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub issuer: Option<String>,
    /// The caller authenticated with an API key (`ApiKeys`) or a client certificate
    /// (`ClientCertificates`), as in `bindings[].source`. Not with `issuer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<BindingSource>,
    /// Subject of the caller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub subject: Option<String>,
    /// Scopes in the caller's token (literal).
    #[serde(default)]
    #[schemars(length(max = 128), inner(length(min = 1, max = 256)))]
    pub scopes: Vec<String>,
    /// Roles in the caller's token role claim.
    #[serde(default)]
    #[schemars(length(max = 128), inner(length(min = 1, max = 128)))]
    pub roles: Vec<String>,
    /// Groups in the caller's token.
    #[serde(default)]
    #[schemars(length(max = 128), inner(length(min = 1, max = 512)))]
    pub groups: Vec<String>,
    /// The caller is this Kubernetes service account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<ServiceAccountRef>,
    /// Further claims of the caller's token that argument rules name (`{claims.team}`), each a
    /// list of strings (a string claim is a list of one). At most 16 claims of 16 values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend(
        "maxProperties" = 16,
        "additionalProperties" = {"type": "array", "maxItems": 16, "items": {"type": "string", "maxLength": 253}}
    ))]
    pub claims: BTreeMap<String, Vec<String>>,
    /// The caller sent no credentials.
    #[serde(default)]
    pub anonymous: bool,
}

/// Observed state of an access policy.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct McpAccessPolicyStatus {
    /// `Accepted` (the policy is valid, its tests pass, and it is in force on its servers).
    /// Keyed by `type`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// McpServers this policy is compiled into.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bound_servers: Vec<String>,
    /// `<passed>/<total>` of the policy's test cases, over every bound server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_summary: Option<String>,
    /// The result of each test case on each bound server. Keyed by `name` and `server`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into(), "server".into()]))]
    pub test_results: Vec<TestResultStatus>,
}

/// The result of one test case on one server.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TestResultStatus {
    /// Name of the case.
    pub name: String,
    /// The McpServer it ran against.
    pub server: String,
    /// Whether every assertion held.
    pub passed: bool,
    /// What did not hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Quotes a string for a single-quoted CEL string literal.
fn cel_quote(s: &str) -> String {
    s.replace('\\', r"\\").replace('\'', r"\'")
}
