//! `PolicyDocument`: the one self-contained file the server enforces (mounted at
//! [`DEFAULT_POLICY_PATH`]).
//!
//! The operator writes it with [`crate::compile::compile`]; a person may also write one by hand for
//! a local run. Both are checked by the same [`crate::evaluator::Policy::new`], so a document
//! means the same thing wherever it is read. The serialized form is canonical (every list sorted,
//! defaults spelled out), so equal policies have byte-identical documents and equal hashes.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::arguments::ArgumentConstraint;
use crate::common::PolicyMode;
use crate::identity_source::IdentitySource;
use crate::mcp_server::{JwtAlgorithm, ToolAction};

/// `apiVersion` of a PolicyDocument.
pub const API_VERSION: &str = "palisade.dev/v1alpha1";
/// `kind` of a PolicyDocument.
pub const KIND: &str = "PolicyDocument";
/// Where server pods find the document.
pub const DEFAULT_POLICY_PATH: &str = "/etc/palisade/policy/policy.yaml";
/// Where server pods find document collections, one directory each.
pub const DEFAULT_DOCUMENTS_DIR: &str = "/var/lib/palisade/documents";
/// Where server pods find secret files, one directory per Secret.
pub const SECRETS_DIR: &str = "/etc/palisade/secrets";
/// Default clock-skew leeway in seconds.
pub const DEFAULT_LEEWAY_SECONDS: u32 = 60;
/// Default JWKS cache lifetime in seconds.
pub const DEFAULT_JWKS_CACHE_TTL_SECONDS: u32 = 3600;

/// The compiled policy of one server.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyDocument {
    /// Always [`API_VERSION`].
    pub api_version: String,
    /// Always [`KIND`].
    pub kind: String,
    /// Where the document came from.
    #[serde(default)]
    pub metadata: DocumentMetadata,
    /// `Audit` only when every bound policy is in `Audit` mode; decides tools no rule matches.
    #[serde(default)]
    pub mode: PolicyMode,
    /// How callers authenticate.
    pub authentication: Authentication,
    /// Document collections, one directory each under the documents directory.
    #[serde(default)]
    pub collections: Vec<Collection>,
    /// Tools the server offers.
    #[serde(default)]
    pub tools: Vec<ToolDefinition>,
    /// Scope requirements of tools, by exact name or glob.
    #[serde(default)]
    pub rules: Vec<ToolRule>,
    /// Roles and the scopes they grant.
    #[serde(default)]
    pub roles: Vec<Role>,
    /// Who holds which role.
    #[serde(default)]
    pub bindings: Vec<Binding>,
    /// Scope hierarchies: a caller holding a scope (in its token or through a role) holds the
    /// scopes it implies, transitively. Sorted by scope, each scope once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scope_implications: Vec<ScopeImplication>,
    /// How the tools of an upstream are pinned and presented (proxy mode); left out for a
    /// document server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<UpstreamTools>,
}

/// The pins of an upstream's tools and what happens to a tool that does not match its pin.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpstreamTools {
    /// What a tool whose definition differs from its pin gets.
    #[serde(default)]
    pub pinning: PinningMode,
    /// What a tool without a pin gets.
    #[serde(default)]
    pub unpinned: UnpinnedTools,
    /// The reviewed tools, sorted by name, each name once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<ToolPin>,
}

/// One reviewed tool of an upstream.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ToolPin {
    /// The upstream's tool name.
    pub name: String,
    /// `sha256:<hex>` of the definition accepted for the tool; none leaves it unpinned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Replaces the upstream's `title` in the lists callers get.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Replaces the upstream's `description` in the lists callers get.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// What a tool whose definition differs from its pin gets.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum PinningMode {
    /// Withheld: not listed, calls refused (`TOOL_WITHHELD`), until the pin is updated.
    #[default]
    Enforce,
    /// Served as the upstream defines it now; reported in status, metrics and the log.
    Report,
}

/// What a tool without a pin gets.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum UnpinnedTools {
    /// Served (trust on first use); reported in status as `Unpinned`.
    #[default]
    Allow,
    /// Withheld: only tools with a matching pin are served.
    Withhold,
}

/// `sha256:` followed by 64 lowercase hexadecimal digits: the form of a tool pin.
pub fn is_pin(text: &str) -> bool {
    text.strip_prefix("sha256:")
        .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}

/// Provenance of a document.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DocumentMetadata {
    /// `namespace/name` of the McpServer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// `namespace/name` of every McpAccessPolicy compiled in, sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<String>,
}

/// Authentication settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Authentication {
    /// Canonical URI of the server (RFC 8707 resource, RFC 9728 `resource`).
    pub resource: String,
    /// Whether callers without credentials are admitted (with anonymous bindings only).
    #[serde(default)]
    pub allow_anonymous: bool,
    /// Clock-skew leeway for `exp`, `nbf`, `iat`, in seconds.
    #[serde(default = "default_leeway")]
    pub leeway_seconds: u32,
    /// Accepted issuers, sorted by `issuer`.
    #[serde(default)]
    pub issuers: Vec<Issuer>,
    /// File with the API-key table, if API keys are accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_keys_file: Option<String>,
}

fn default_leeway() -> u32 {
    DEFAULT_LEEWAY_SECONDS
}

fn default_jwks_ttl() -> u32 {
    DEFAULT_JWKS_CACHE_TTL_SECONDS
}

/// One accepted token issuer.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Issuer {
    /// Exact `iss` value.
    pub issuer: String,
    /// Accepted `aud` values (sorted); a token must carry one.
    pub audiences: Vec<String>,
    /// Accepted algorithms (sorted).
    pub algorithms: Vec<JwtAlgorithm>,
    /// Where verification keys come from.
    pub keys: KeySource,
    /// Claim names.
    #[serde(default)]
    pub claims: Claims,
    /// How long fetched keys are trusted before a refetch, in seconds.
    #[serde(default = "default_jwks_ttl")]
    pub jwks_cache_ttl_seconds: u32,
    /// Development only: fetch the discovery document and JWKS over plain `http://`. Without
    /// it, a JWKS or discovery issuer must use `https://` URLs.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_insecure_http: bool,
}

/// Where an issuer's verification keys come from. Written as a map with exactly one key:
/// `{hmacKeyFile: PATH}`, `{jwksUri: URL}` or `{oidcDiscovery: true}`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(try_from = "KeySourceFields", into = "KeySourceFields")]
pub enum KeySource {
    /// A file holding the shared HMAC secret (raw bytes; a trailing newline is ignored).
    HmacKeyFile(String),
    /// A JWKS URL.
    JwksUri(String),
    /// OIDC discovery at `<issuer>/.well-known/openid-configuration`.
    OidcDiscovery,
}

/// The YAML form of [`KeySource`]: plain fields, so that any YAML tool reads and writes it.
#[derive(Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct KeySourceFields {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hmac_key_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    jwks_uri: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    oidc_discovery: bool,
}

impl TryFrom<KeySourceFields> for KeySource {
    type Error = String;

    fn try_from(fields: KeySourceFields) -> Result<Self, String> {
        match (fields.hmac_key_file, fields.jwks_uri, fields.oidc_discovery) {
            (Some(path), None, false) => Ok(Self::HmacKeyFile(path)),
            (None, Some(uri), false) => Ok(Self::JwksUri(uri)),
            (None, None, true) => Ok(Self::OidcDiscovery),
            _ => Err("keys must set exactly one of hmacKeyFile, jwksUri or oidcDiscovery: true".into()),
        }
    }
}

impl From<KeySource> for KeySourceFields {
    fn from(source: KeySource) -> Self {
        match source {
            KeySource::HmacKeyFile(path) => Self {
                hmac_key_file: Some(path),
                ..Self::default()
            },
            KeySource::JwksUri(uri) => Self {
                jwks_uri: Some(uri),
                ..Self::default()
            },
            KeySource::OidcDiscovery => Self {
                oidc_discovery: true,
                ..Self::default()
            },
        }
    }
}

/// Claim names.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Claims {
    /// Subject claim.
    pub subject: String,
    /// Scope claim (space-separated string or array).
    pub scopes: String,
    /// Role claim.
    pub roles: String,
    /// Group claim.
    pub groups: String,
    /// Whether the issuer is the cluster's Kubernetes service-account issuer, whose
    /// `kubernetes.io` claim (`namespace`, `serviceaccount.name`) makes the caller the service
    /// account `namespace/name` for `bindings[].serviceAccounts`. False (the default): the claim
    /// is ignored, so that no other issuer can assert a service account. Not for HMAC issuers.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub kubernetes_service_account: bool,
}

impl Default for Claims {
    fn default() -> Self {
        Self {
            subject: "sub".into(),
            scopes: "scope".into(),
            roles: "roles".into(),
            groups: "groups".into(),
            kubernetes_service_account: false,
        }
    }
}

/// A document collection.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Collection {
    /// Name, also the directory name.
    pub name: String,
    /// What it holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// A tool the server offers.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ToolDefinition {
    /// Tool name.
    pub name: String,
    /// Title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Collection served.
    pub collection: String,
    /// Action.
    pub action: ToolAction,
}

/// What a rule's `match` names.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "camelCase")]
pub enum RuleKind {
    /// Tools, by name (the default, left out of the document).
    #[default]
    Tool,
    /// Prompts of an upstream (proxy mode), by name.
    Prompt,
    /// Resources and resource templates of an upstream (proxy mode), by URI or URI template.
    Resource,
}

impl RuleKind {
    /// Whether this is [`RuleKind::Tool`] (not written, so that tool-only documents keep their
    /// form and hash).
    pub fn is_tool(&self) -> bool {
        *self == Self::Tool
    }

    /// `tool`, `prompt` or `resource`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tool => "tool",
            Self::Prompt => "prompt",
            Self::Resource => "resource",
        }
    }
}

/// A scope requirement for the tools (prompts, resources) a pattern matches.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ToolRule {
    /// What `match` names: tools unless said otherwise.
    #[serde(default, skip_serializing_if = "RuleKind::is_tool")]
    pub kind: RuleKind,
    /// Tool or prompt name or `*` glob; for resources a URI (template) or `*` glob over URIs.
    #[serde(rename = "match")]
    pub match_: String,
    /// Scopes required, all of them (sorted).
    #[serde(default)]
    pub required_scopes: Vec<String>,
    /// `Audit` when the rule comes from an Audit-mode policy: it never denies, only reports.
    #[serde(default)]
    pub mode: PolicyMode,
    /// Constraints on the arguments of the calls the rule allows, by argument name (tool rules
    /// only; see [`crate::arguments`]). Several rules of one `match` are alternatives.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub arguments: BTreeMap<String, ArgumentConstraint>,
    /// `namespace/name` of the policies that state the rule.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<String>,
}

impl ToolRule {
    /// What the rule states apart from its `match` and sources, as canonical text: rules of one
    /// `match` are ordered by it, and two rules with equal keys are one rule.
    pub fn content_key(&self) -> String {
        content_key(&self.required_scopes, self.mode, &self.arguments)
    }
}

/// [`ToolRule::content_key`] of a rule with these sorted, deduplicated `required_scopes`, `mode`
/// and `arguments` (also for a rule as an McpAccessPolicy writes it).
pub fn content_key(
    required_scopes: &[String],
    mode: PolicyMode,
    arguments: &BTreeMap<String, ArgumentConstraint>,
) -> String {
    serde_json::to_string(&(required_scopes, mode, arguments)).expect("a rule serializes")
}

/// A role.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Role {
    /// Name.
    pub name: String,
    /// Scopes granted (sorted); `*` per segment.
    pub scopes: Vec<String>,
    /// `namespace/name` of the policies that define the role.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<String>,
}

/// A broader scope and the narrower scopes it implies.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScopeImplication {
    /// The broader scope (literal).
    pub scope: String,
    /// What it implies (sorted): literal scopes, or patterns with `*` for one whole segment
    /// (`files:*`), read like the scopes a role grants.
    pub implies: Vec<String>,
    /// `namespace/name` of the policies that state the implication.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<String>,
}

/// A role binding.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Binding {
    /// Role granted.
    pub role: String,
    /// Subjects (sorted).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subjects: Vec<String>,
    /// Groups (sorted).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// Service accounts as `namespace/name` (sorted).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_accounts: Vec<String>,
    /// Granted to anonymous callers.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub anonymous: bool,
    /// Where the subjects and groups come from: `{issuer: <iss>}`, `{apiKeys: true}` or
    /// `{clientCertificates: true}`. May be left out only when the document has exactly one
    /// issuer or API-key table (normalization then writes it); a compiled document always has it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<IdentitySource>,
    /// `namespace/name` of the policy that states the binding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// Errors reading a PolicyDocument.
#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    /// Not YAML of the expected shape.
    #[error("policy document is not valid: {0}")]
    Parse(#[from] yaml_serde::Error),
    /// Wrong `apiVersion` or `kind`.
    #[error("expected apiVersion {API_VERSION} and kind {KIND}, found {api_version} {kind}")]
    WrongType {
        /// Found apiVersion.
        api_version: String,
        /// Found kind.
        kind: String,
    },
}

impl PolicyDocument {
    /// Parses a document from YAML (or JSON) text.
    pub fn from_yaml(text: &str) -> Result<Self, DocumentError> {
        let document: Self = yaml_serde::from_str(text)?;
        if document.api_version != API_VERSION || document.kind != KIND {
            return Err(DocumentError::WrongType {
                api_version: document.api_version,
                kind: document.kind,
            });
        }
        Ok(document)
    }

    /// The canonical YAML form.
    pub fn to_yaml(&self) -> String {
        yaml_serde::to_string(self).expect("a PolicyDocument always serializes")
    }

    /// `sha256:<hex>` of the canonical YAML form.
    pub fn hash(&self) -> String {
        content_hash(self.to_yaml().as_bytes())
    }
}

/// `sha256:<hex>` of some bytes.
pub fn content_hash(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256:");
    for byte in digest {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Wrapper {
        keys: KeySource,
    }

    #[test]
    fn key_sources_are_plain_yaml_maps() {
        for (source, yaml) in [
            (KeySource::HmacKeyFile("/k".into()), "keys:\n  hmacKeyFile: /k\n"),
            (
                KeySource::JwksUri("https://idp/jwks".into()),
                "keys:\n  jwksUri: https://idp/jwks\n",
            ),
            (KeySource::OidcDiscovery, "keys:\n  oidcDiscovery: true\n"),
        ] {
            let wrapper = Wrapper { keys: source };
            assert_eq!(yaml_serde::to_string(&wrapper).unwrap(), yaml);
            assert_eq!(yaml_serde::from_str::<Wrapper>(yaml).unwrap(), wrapper);
        }
    }

    #[test]
    fn a_key_source_names_exactly_one_source() {
        for bad in [
            "keys: {}",
            "keys: {hmacKeyFile: /k, jwksUri: https://x}",
            "keys: {oidcDiscovery: false}",
        ] {
            let error = yaml_serde::from_str::<Wrapper>(bad).unwrap_err().to_string();
            assert!(
                error.contains("exactly one of hmacKeyFile, jwksUri or oidcDiscovery"),
                "{bad}: {error}"
            );
        }
    }
}
