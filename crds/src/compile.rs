//! Compile an McpServer and the McpAccessPolicies bound to it into one [`PolicyDocument`].
//!
//! Deterministic: the same server and policies, in any order, give a byte-identical document and
//! hash. Every problem is reported with the object and the field path it is at.
//!
//! Merge rules when several policies bind one server:
//! - **roles** are shared by name across the server's policies; two policies may define the same
//!   role only with the same scopes (otherwise: a conflict naming both);
//! - **tool rules** are alternatives: every rule of every policy is one, and a rule stated twice
//!   (same `match`, scopes, mode and arguments) is one rule with both sources. Between different
//!   patterns the most specific wins ([`crate::tool_match`]), whatever policy it comes from;
//! - **bindings** add up;
//! - **scope implications** of one scope add up (a cycle the union forms is refused);
//! - **mode**: each rule keeps its own policy's mode (a rule from an `Audit` policy never denies,
//!   it only reports); tools that no rule matches are denied unless every bound policy is in
//!   `Audit` mode;
//! - a policy's **tests** run against the merged result, since that is what callers will meet.
//!
//! What this does not do: find the policies ([`crate::bind`] does that, and refuses
//! cross-namespace references) or read any Secret or ConfigMap.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use kube::ResourceExt;

use crate::access_policy::{ISSUER_XOR_SOURCE, McpAccessPolicy, McpAccessPolicySpec, ServiceAccountRef, TestIdentity};
use crate::catalog::Catalog;
use crate::common::PolicyMode;
use crate::document::{
    self, Authentication, Binding, Claims, Collection, DEFAULT_JWKS_CACHE_TTL_SECONDS, DEFAULT_LEEWAY_SECONDS,
    DocumentMetadata, Issuer, KeySource, PolicyDocument, Role, RuleKind, ScopeImplication, ToolDefinition, ToolPin,
    ToolRule, UnpinnedTools, UpstreamTools,
};
use crate::document_check::{
    HMAC_SERVICE_ACCOUNTS, INSECURE_KEYS_URL, is_dns_label, is_dns_subdomain, is_http_url, role_name_problem,
};
use crate::evaluator::Policy;
use crate::identity_source::{BindingSource, IdentitySource, check_known, configured_sources, resolve};
use crate::mcp_server::{JwtAlgorithm, McpServer, McpServerSpec};
use crate::policy_tests::{TestOutcome, run_policy_tests};
use crate::problem::{Problem, Problems};
use crate::scope::{ScopeGrant, check_literal_scope};
use crate::secret_files::{SecretPurpose, secret_file};
use crate::tool_match::{ToolPattern, check_tool_name};
use crate::upstream::{MAX_TIMEOUT_SECONDS, UpstreamContainer, UpstreamSpec, UpstreamTransport, header_name_problem};

/// A compiled, validated policy for one server.
#[derive(Debug)]
pub struct Compiled {
    /// The prepared policy; `policy.document()` is what the server mounts.
    pub policy: Policy,
    /// Not wrong, but worth a look: rules that match no tool, tools no role reaches.
    pub warnings: Vec<Problem>,
    /// The outcome of every bound policy's test cases, in policy and case order.
    pub tests: Vec<TestOutcome>,
}

impl Compiled {
    /// The test cases that failed.
    pub fn failed_tests(&self) -> impl Iterator<Item = &TestOutcome> {
        self.tests.iter().filter(|t| !t.passed())
    }
}

/// `namespace/name` of an object.
pub fn object_key<K: ResourceExt>(object: &K) -> String {
    format!("{}/{}", object.namespace().unwrap_or_default(), object.name_any())
}

/// The DNS domain of a Kubernetes cluster unless its kubelets are configured otherwise.
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";

/// What a compile depends on besides the objects: facts about the cluster the server runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompileOptions<'a> {
    /// The cluster's DNS domain (the kubelets' `--cluster-domain`). It names the server's
    /// in-cluster endpoint `http://<name>.<namespace>.svc.<domain>/mcp`, which is the default
    /// `auth.resource` (so the audience tokens must carry) and the McpServer's `status.endpoint`.
    /// Defaults to [`DEFAULT_CLUSTER_DOMAIN`].
    pub cluster_domain: &'a str,
}

impl Default for CompileOptions<'_> {
    fn default() -> Self {
        Self {
            cluster_domain: DEFAULT_CLUSTER_DOMAIN,
        }
    }
}

/// The in-cluster URL of a server's MCP endpoint in a cluster with DNS domain `cluster_domain`:
/// `http://<name>.<namespace>.svc.<domain>[:<port>]/mcp`.
pub fn in_cluster_endpoint(server: &McpServer, cluster_domain: &str) -> String {
    let port = server.spec.service.as_ref().and_then(|s| s.port).unwrap_or(80);
    let port = if port == 80 { String::new() } else { format!(":{port}") };
    format!(
        "http://{}.{}.svc.{cluster_domain}{port}/mcp",
        server.name_any(),
        server.namespace().unwrap_or_else(|| "default".into())
    )
}

/// Compiles `server` with the policies bound to it (in any order), for a cluster described by
/// `options`.
///
/// ```
/// use palisade_crds::{CompileOptions, McpAccessPolicy, McpServer, compile};
///
/// let server: McpServer = yaml_serde::from_str(
///     r#"
/// apiVersion: palisade.dev/v1alpha1
/// kind: McpServer
/// metadata: {name: docs, namespace: team-a}
/// spec:
///   documents: [{collection: handbook, inline: [{name: a.md, content: A}]}]
///   tools: [{name: read_handbook, collection: handbook, action: readAll}]
///   auth: {issuers: [{issuer: "https://accounts.google.com"}]}
/// "#,
/// )
/// .unwrap();
/// let policy: McpAccessPolicy = yaml_serde::from_str(
///     r#"
/// apiVersion: palisade.dev/v1alpha1
/// kind: McpAccessPolicy
/// metadata: {name: readers, namespace: team-a}
/// spec:
///   targetRefs: [{name: docs}]
///   roles: [{name: reader, scopes: ["handbook:read"]}]
///   tools: [{match: read_handbook, requiredScopes: ["handbook:read"]}]
///   bindings: [{role: reader, groups: [staff]}]
///   tests:
///     - {name: staff read the handbook, identity: {groups: [staff]}, allowed: [read_handbook]}
///     - {name: others do not, identity: {groups: [guests]}, denied: [read_handbook]}
/// "#,
/// )
/// .unwrap();
/// let compiled = compile(&server, &[&policy], &CompileOptions::default()).unwrap();
/// // The default audience is the in-cluster endpoint.
/// assert_eq!(
///     compiled.policy.document().authentication.resource,
///     "http://docs.team-a.svc.cluster.local/mcp"
/// );
/// assert_eq!(compiled.tests.len(), 2);
/// assert_eq!(compiled.failed_tests().count(), 0);
///
/// // A rule for a scope no role grants is still valid; a malformed wildcard is not.
/// let mut broken = policy.clone();
/// broken.spec.roles[0].scopes = vec!["hand*:read".into()];
/// let problems = compile(&server, &[&broken], &CompileOptions::default()).unwrap_err();
/// assert_eq!(problems.0[0].path, "spec.roles[0].scopes[0]");
/// ```
pub fn compile(
    server: &McpServer,
    policies: &[&McpAccessPolicy],
    options: &CompileOptions<'_>,
) -> Result<Compiled, Problems> {
    let server_object = format!("McpServer {}", object_key(server));
    let mut problems = Problems::default();
    if !is_dns_subdomain(options.cluster_domain) {
        problems.push(
            None,
            "",
            format!(
                "the cluster domain {:?} is not a DNS subdomain (e.g. {DEFAULT_CLUSTER_DOMAIN})",
                options.cluster_domain
            ),
        );
    }
    check_server(&server.spec, &server_object, &mut problems);

    let mut policies: Vec<&McpAccessPolicy> = policies.to_vec();
    policies.sort_by_key(|p| object_key(*p));
    policies.dedup_by_key(|p| object_key(*p));

    let auth = authentication(server, options.cluster_domain);
    let sources = configured_sources(&auth);
    // A proxy's tools are its upstream's, known only when the server runs: rules and tests may
    // name any tool, and names are checked for their form only.
    let tool_names: Option<HashSet<&str>> = server
        .spec
        .upstream
        .is_none()
        .then(|| server.spec.tools.iter().map(|t| t.name.as_str()).collect());
    let mut roles: BTreeMap<String, (BTreeSet<String>, Vec<String>, String)> = BTreeMap::new();
    let mut rules: BTreeMap<(RuleKind, String, String), ToolRule> = BTreeMap::new();
    let mut bindings = Vec::new();
    let mut implications: Vec<ScopeImplication> = Vec::new();

    for policy in &policies {
        let key = object_key(*policy);
        let object = format!("McpAccessPolicy {key}");
        let namespace = policy.namespace().unwrap_or_default();
        let spec = &policy.spec;
        check_policy(spec, &object, tool_names.as_ref(), &server_object, &mut problems);

        // A name repeated inside one policy is reported by `check_policy`; merge its first use only.
        let mut merged = HashSet::new();
        for (i, role) in spec.roles.iter().enumerate() {
            if !merged.insert(role.name.as_str()) {
                continue;
            }
            let scopes: BTreeSet<String> = role.scopes.iter().cloned().collect();
            let path = format!("spec.roles[{i}]");
            match roles.get_mut(&role.name) {
                Some((existing, sources, first)) if *existing != scopes => problems.push(
                    Some(&object),
                    path,
                    format!(
                        "role {:?} is also defined by {first} with other scopes; a role must mean one thing on a server",
                        role.name
                    ),
                ),
                Some((_, sources, _)) => sources.push(key.clone()),
                None => {
                    roles.insert(role.name.clone(), (scopes, vec![key.clone()], format!("{object} {path}")));
                }
            }
        }
        // One scope's implications add up across policies (the document's normal form merges them).
        implications.extend(implications_of(spec, &key));
        // Rules are alternatives: every rule of every policy is one, and a rule stated twice
        // (with the same scopes, mode and arguments) is one rule with both sources.
        for (kind, _, i, match_, required_scopes) in rule_specs(spec) {
            let rule = ToolRule {
                kind,
                match_: match_.to_owned(),
                required_scopes: required_scopes
                    .iter()
                    .cloned()
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect(),
                mode: spec.mode,
                arguments: if kind.is_tool() {
                    spec.tools[i].arguments.clone()
                } else {
                    BTreeMap::new()
                },
                sources: vec![key.clone()],
            };
            match rules.get_mut(&(kind, match_.to_owned(), rule.content_key())) {
                Some(existing) => {
                    if !existing.sources.contains(&key) {
                        existing.sources.push(key.clone());
                    }
                }
                None => {
                    rules.insert((kind, match_.to_owned(), rule.content_key()), rule);
                }
            }
        }
        for (i, binding) in spec.bindings.iter().enumerate() {
            let path = format!("spec.bindings[{i}]");
            let names_identities = !binding.subjects.is_empty() || !binding.groups.is_empty();
            let from = qualifier(binding.issuer.as_deref(), binding.source)
                .filter(|_| names_identities)
                .map_or_else(
                    || {
                        names_identities
                            .then(|| resolve(&sources, QUALIFY_POLICY_BINDING))
                            .transpose()
                    },
                    |source| check_known(&source, &auth).map(|()| Some(source)),
                )
                .unwrap_or_else(|message| {
                    problems.push(Some(&object), path.clone(), message);
                    None
                });
            bindings.push(Binding {
                role: binding.role.clone(),
                subjects: binding.subjects.clone(),
                groups: binding.groups.clone(),
                service_accounts: binding
                    .service_accounts
                    .iter()
                    .map(|sa| service_account_key(sa, &namespace))
                    .collect(),
                anonymous: binding.anonymous,
                source: Some(key.clone()),
                from,
            });
        }
    }
    problems.clone().into_result()?;

    let mode = if !policies.is_empty() && policies.iter().all(|p| p.spec.mode == PolicyMode::Audit) {
        PolicyMode::Audit
    } else {
        PolicyMode::Enforce
    };
    let document = PolicyDocument {
        api_version: document::API_VERSION.into(),
        kind: document::KIND.into(),
        metadata: DocumentMetadata {
            server: Some(object_key(server)),
            policies: policies.iter().map(|p| object_key(*p)).collect(),
        },
        mode,
        authentication: auth,
        collections: server
            .spec
            .documents
            .iter()
            .map(|d| Collection {
                name: d.collection.clone(),
                description: d.description.clone(),
            })
            .collect(),
        tools: server
            .spec
            .tools
            .iter()
            .map(|t| ToolDefinition {
                name: t.name.clone(),
                title: t.title.clone(),
                description: t.description.clone(),
                collection: t.collection.clone(),
                action: t.action,
            })
            .collect(),
        rules: rules.into_values().collect(),
        roles: roles
            .into_iter()
            .map(|(name, (scopes, sources, _))| Role {
                name,
                scopes: scopes.into_iter().collect(),
                sources,
            })
            .collect(),
        bindings,
        scope_implications: merge_implications(implications),
        upstream: server.spec.upstream.as_ref().map(upstream_tools),
    };

    let policy = Policy::new(document).map_err(|doc_problems| {
        Problems(
            doc_problems
                .0
                .into_iter()
                .map(|p| Problem {
                    object: Some(format!("compiled policy of {server_object}")),
                    ..p
                })
                .collect(),
        )
    })?;

    let mut test_problems = Problems::default();
    for p in &policies {
        let object = format!("McpAccessPolicy {}", object_key(*p));
        for (i, test) in p.spec.tests.iter().enumerate() {
            if let Err(message) = test_source(&test.identity, &policy.document().authentication) {
                test_problems.push(Some(&object), format!("spec.tests[{i}].identity"), message);
            }
        }
    }
    test_problems.into_result()?;
    // A proxy's tests are decided on a catalog of the tool names they and the rules mention, by
    // the same function that decides on the upstream's tools when the server runs.
    let catalog = server.spec.upstream.is_some().then(|| {
        let tested = policies.iter().flat_map(|p| &p.spec.tests).flat_map(|test| {
            let visible = test.visible_tools.iter().flatten();
            visible
                .chain(&test.allowed)
                .chain(&test.denied)
                .map(String::as_str)
                .chain(
                    test.allowed_calls
                        .iter()
                        .chain(&test.denied_calls)
                        .map(|c| c.tool.as_str()),
                )
        });
        let named = policy.document().rules.iter().map(|r| r.match_.as_str());
        let exact = named.filter(|m| ToolPattern::parse(m).is_ok_and(|p| p.is_exact()));
        policy.catalog(tested.chain(exact))
    });
    let mut tests = Vec::new();
    for p in &policies {
        tests.extend(run_policy_tests(
            &policy,
            catalog.as_ref(),
            &object_key(*p),
            &p.namespace().unwrap_or_default(),
            &p.spec.tests,
        ));
    }

    let mut warnings = Vec::new();
    for p in &policies {
        let object = format!("McpAccessPolicy {}", object_key(*p));
        for (i, rule) in p.spec.tools.iter().enumerate() {
            let pattern = ToolPattern::parse(&rule.match_).expect("checked");
            if tool_names.is_some() && !server.spec.tools.iter().any(|t| pattern.matches(&t.name)) {
                warnings.push(Problem::new(
                    Some(&object),
                    format!("spec.tools[{i}].match"),
                    format!("{:?} matches no tool of {server_object}", rule.match_),
                ));
            }
        }
    }
    if !server.spec.auth.issuers.iter().any(|i| i.kubernetes_service_accounts) {
        for p in &policies {
            let object = format!("McpAccessPolicy {}", object_key(*p));
            for (i, binding) in p.spec.bindings.iter().enumerate() {
                if !binding.service_accounts.is_empty() {
                    warnings.push(Problem::new(
                        Some(&object),
                        format!("spec.bindings[{i}].serviceAccounts"),
                        format!(
                            "no issuer of {server_object} sets kubernetesServiceAccounts: true, so no caller is \
                             ever a service account and this binding matches none"
                        ),
                    ));
                }
            }
        }
    }
    for p in &policies {
        let object = format!("McpAccessPolicy {}", object_key(*p));
        for (i, binding) in p.spec.bindings.iter().enumerate() {
            if binding.source == Some(BindingSource::ClientCertificates) {
                warnings.push(Problem::new(
                    Some(&object),
                    format!("spec.bindings[{i}].source"),
                    format!(
                        "the operator runs {server_object} without client certificates, so this binding matches \
                         only on a palisade-server run by hand with --tls-client-ca"
                    ),
                ));
            }
        }
    }
    if let Some(upstream) = &server.spec.upstream
        && upstream
            .pinning
            .as_ref()
            .is_some_and(|p| p.unpinned == UnpinnedTools::Withhold)
        && !upstream.tools.iter().any(|t| t.sha256.is_some())
    {
        warnings.push(Problem::new(
            Some(&server_object),
            "spec.upstream.pinning.unpinned",
            "Withhold serves only pinned tools and no tool has a sha256: every upstream tool is withheld \
             (copy the pins from status.upstream.tools into spec.upstream.tools)",
        ));
    }
    for tool in catalog.iter().flat_map(Catalog::ambiguous) {
        warnings.push(Problem::new(
            Some(&server_object),
            "spec.upstream",
            format!(
                "rules of equal specificity disagree about tool {tool:?}, which a test names: the server denies it \
                 (state the rule for {tool:?} itself)"
            ),
        ));
    }
    let (_, unreachable) = policy.reachability();
    for tool in unreachable {
        let index = server
            .spec
            .tools
            .iter()
            .position(|t| t.name == tool)
            .unwrap_or_default();
        warnings.push(Problem::new(
            Some(&server_object),
            format!("spec.tools[{index}]"),
            format!("no role can reach tool {tool:?}: it is visible only to tokens that carry its scopes themselves"),
        ));
    }
    Ok(Compiled {
        policy,
        warnings,
        tests,
    })
}

/// The pins and reviewed text of a proxy's tools, as the document carries them (sorted by name).
fn upstream_tools(upstream: &UpstreamSpec) -> UpstreamTools {
    let pinning = upstream.pinning.clone().unwrap_or_default();
    let mut tools: Vec<ToolPin> = upstream
        .tools
        .iter()
        .map(|t| ToolPin {
            name: t.name.clone(),
            sha256: t.sha256.clone(),
            title: t.title.clone(),
            description: t.description.clone(),
        })
        .collect();
    tools.sort_by(|a, b| a.name.cmp(&b.name));
    UpstreamTools {
        pinning: pinning.mode,
        unpinned: pinning.unpinned,
        tools,
    }
}

/// Every rule of a policy with its kind, field, index, `match` and required scopes: `tools`,
/// then `prompts`, then `resources`.
fn rule_specs(spec: &McpAccessPolicySpec) -> impl Iterator<Item = (RuleKind, &'static str, usize, &str, &[String])> {
    let tools = spec.tools.iter().enumerate().map(|(i, r)| {
        (
            RuleKind::Tool,
            "tools",
            i,
            r.match_.as_str(),
            r.required_scopes.as_slice(),
        )
    });
    let prompts = spec.prompts.iter().enumerate().map(|(i, r)| {
        (
            RuleKind::Prompt,
            "prompts",
            i,
            r.match_.as_str(),
            r.required_scopes.as_slice(),
        )
    });
    let resources = spec.resources.iter().enumerate().map(|(i, r)| {
        (
            RuleKind::Resource,
            "resources",
            i,
            r.match_.as_str(),
            r.required_scopes.as_slice(),
        )
    });
    tools.chain(prompts).chain(resources)
}

/// How to qualify a binding of an McpAccessPolicy.
pub const QUALIFY_POLICY_BINDING: &str =
    "set issuer: <one of the server's auth.issuers[].issuer>, or source: ApiKeys (or ClientCertificates)";

/// How to qualify the identity of an McpAccessPolicy test case.
pub const QUALIFY_TEST_IDENTITY: &str = "set identity.issuer: <one of the server's auth.issuers[].issuer>, or identity.source: ApiKeys (or ClientCertificates)";

/// The source an McpAccessPolicy binding or test identity names, if any.
fn qualifier(issuer: Option<&str>, source: Option<BindingSource>) -> Option<IdentitySource> {
    match (issuer, source) {
        (Some(issuer), _) => Some(IdentitySource::Issuer(issuer.to_owned())),
        (None, Some(source)) => Some(source.into()),
        (None, None) => None,
    }
}

/// The source of a test case's caller on a server with `auth`: the one it names, else the
/// server's only source; `None` for a caller without subject and groups that names none.
pub fn test_source(identity: &TestIdentity, auth: &Authentication) -> Result<Option<IdentitySource>, String> {
    match qualifier(identity.issuer.as_deref(), identity.source) {
        Some(source) => check_known(&source, auth).map(|()| Some(source)),
        None if identity.subject.is_some() || !identity.groups.is_empty() => {
            resolve(&configured_sources(auth), QUALIFY_TEST_IDENTITY).map(Some)
        }
        None => Ok(None),
    }
}

fn service_account_key(account: &ServiceAccountRef, default_namespace: &str) -> String {
    format!(
        "{}/{}",
        account.namespace.as_deref().unwrap_or(default_namespace),
        account.name
    )
}

fn authentication(server: &McpServer, cluster_domain: &str) -> Authentication {
    let auth = &server.spec.auth;
    let resource = auth
        .resource
        .clone()
        .unwrap_or_else(|| in_cluster_endpoint(server, cluster_domain));
    let name = server.name_any();
    Authentication {
        resource: resource.clone(),
        allow_anonymous: auth.allow_anonymous,
        leeway_seconds: auth.leeway_seconds.unwrap_or(DEFAULT_LEEWAY_SECONDS),
        issuers: auth
            .issuers
            .iter()
            .map(|issuer| {
                let keys = match (&issuer.hmac_key, &issuer.jwks_uri) {
                    (Some(source), _) => KeySource::HmacKeyFile(
                        secret_file(&name, source, SecretPurpose::HmacKey { issuer: &issuer.issuer }).path,
                    ),
                    (None, Some(uri)) => KeySource::JwksUri(uri.clone()),
                    (None, None) => KeySource::OidcDiscovery,
                };
                let algorithms = if !issuer.algorithms.is_empty() {
                    issuer.algorithms.clone()
                } else if issuer.hmac_key.is_some() {
                    vec![JwtAlgorithm::HS256]
                } else {
                    vec![JwtAlgorithm::RS256, JwtAlgorithm::ES256]
                };
                let audiences = if issuer.audiences.is_empty() {
                    vec![resource.clone()]
                } else {
                    issuer.audiences.clone()
                };
                let names = issuer.claims.clone().unwrap_or_default();
                let defaults = Claims::default();
                Issuer {
                    issuer: issuer.issuer.clone(),
                    audiences,
                    algorithms,
                    keys,
                    claims: Claims {
                        subject: names.subject.unwrap_or(defaults.subject),
                        scopes: names.scopes.unwrap_or(defaults.scopes),
                        roles: names.roles.unwrap_or(defaults.roles),
                        groups: names.groups.unwrap_or(defaults.groups),
                        kubernetes_service_account: issuer.kubernetes_service_accounts,
                    },
                    jwks_cache_ttl_seconds: DEFAULT_JWKS_CACHE_TTL_SECONDS,
                    allow_insecure_http: issuer.allow_insecure_http,
                }
            })
            .collect(),
        api_keys_file: auth
            .api_keys
            .as_ref()
            .map(|source| secret_file(&name, source, SecretPurpose::ApiKeys).path),
    }
}

/// The checks of an McpServer spec that need the spec's own field paths. (The rest are checked on
/// the compiled document by [`Policy::new`].)
fn check_server(spec: &McpServerSpec, object: &str, problems: &mut Problems) {
    let object = Some(object);
    let mut collections = HashSet::new();
    for (i, collection) in spec.documents.iter().enumerate() {
        let path = format!("spec.documents[{i}]");
        if !is_dns_label(&collection.collection) || collection.collection.len() > 50 {
            problems.push(
                object,
                format!("{path}.collection"),
                format!(
                    "{:?} is not a DNS label of at most 50 characters",
                    collection.collection
                ),
            );
        }
        if !collections.insert(collection.collection.as_str()) {
            problems.push(
                object,
                format!("{path}.collection"),
                format!("duplicate collection {:?}", collection.collection),
            );
        }
        if collection.config_map_ref.is_some() == collection.inline.is_some() {
            problems.push(object, path.clone(), "set exactly one of configMapRef or inline");
        }
        let mut names = HashSet::new();
        for (j, document) in collection.inline.iter().flatten().enumerate() {
            if !names.insert(document.name.as_str()) {
                problems.push(
                    object,
                    format!("{path}.inline[{j}].name"),
                    format!("duplicate document {:?}", document.name),
                );
            }
        }
    }
    let mut tools = HashSet::new();
    for (i, tool) in spec.tools.iter().enumerate() {
        if let Err(e) = check_tool_name(&tool.name) {
            problems.push(object, format!("spec.tools[{i}].name"), e.to_string());
        }
        if !tools.insert(tool.name.as_str()) {
            problems.push(
                object,
                format!("spec.tools[{i}].name"),
                format!("duplicate tool {:?}", tool.name),
            );
        }
        if !collections.contains(tool.collection.as_str()) {
            problems.push(
                object,
                format!("spec.tools[{i}].collection"),
                format!("collection {:?} is not listed in spec.documents", tool.collection),
            );
        }
    }
    if let Some(upstream) = &spec.upstream {
        check_upstream(spec, upstream, object, problems);
    }
    let auth = &spec.auth;
    if let Some(resource) = &auth.resource
        && (!is_http_url(resource) || resource.contains('#'))
    {
        problems.push(
            object,
            "spec.auth.resource",
            "resource must be an absolute http(s) URI without a fragment (RFC 8707 section 2)",
        );
    }
    if auth.issuers.is_empty() && auth.api_keys.is_none() && !auth.allow_anonymous {
        problems.push(
            object,
            "spec.auth",
            "configure at least one issuer or an apiKeys table, or set allowAnonymous: true explicitly",
        );
    }
    let mut issuers = HashSet::new();
    for (i, issuer) in auth.issuers.iter().enumerate() {
        let path = format!("spec.auth.issuers[{i}]");
        let hmac = issuer.hmac_key.is_some();
        if let Some(bad) = issuer.algorithms.iter().find(|a| a.is_hmac() != hmac) {
            let message = if hmac {
                format!("an hmacKey issuer accepts only HS256, HS384 or HS512, not {bad:?}")
            } else {
                format!("a JWKS or OIDC issuer never accepts {bad:?} (its public keys would become HMAC secrets)")
            };
            problems.push(object, format!("{path}.algorithms"), message);
        }
        if let Some(uri) = &issuer.jwks_uri
            && !is_http_url(uri)
        {
            problems.push(
                object,
                format!("{path}.jwksUri"),
                "jwksUri must be an absolute http(s) URL",
            );
        }
        if !hmac && !issuer.allow_insecure_http {
            match &issuer.jwks_uri {
                Some(uri) if uri.starts_with("http://") => {
                    problems.push(object, format!("{path}.jwksUri"), INSECURE_KEYS_URL);
                }
                None if issuer.issuer.starts_with("http://") => {
                    problems.push(object, format!("{path}.issuer"), INSECURE_KEYS_URL);
                }
                _ => {}
            }
        }
        if hmac && issuer.allow_insecure_http {
            problems.push(
                object,
                format!("{path}.allowInsecureHttp"),
                "allowInsecureHttp applies to keys fetched by JWKS or OIDC discovery; an hmacKey issuer fetches none",
            );
        }
        if !hmac && issuer.jwks_uri.is_none() && !is_http_url(&issuer.issuer) {
            problems.push(
                object,
                format!("{path}.issuer"),
                "without jwksUri or hmacKey, keys come from OIDC discovery, which needs the issuer to be an http(s) URL",
            );
        }
        if !issuers.insert(issuer.issuer.as_str()) {
            problems.push(
                object,
                format!("spec.auth.issuers[{i}].issuer"),
                format!("duplicate issuer {:?}", issuer.issuer),
            );
        }
        if issuer.hmac_key.is_some() && issuer.jwks_uri.is_some() {
            problems.push(
                object,
                format!("spec.auth.issuers[{i}]"),
                "jwksUri and hmacKey are mutually exclusive",
            );
        }
        if hmac && issuer.kubernetes_service_accounts {
            problems.push(
                object,
                format!("{path}.kubernetesServiceAccounts"),
                HMAC_SERVICE_ACCOUNTS,
            );
        }
    }
}

/// The checks of `spec.upstream.container` (the CRD's schema has them too).
fn check_upstream_container(container: &UpstreamContainer, object: Option<&str>, problems: &mut Problems) {
    let path = "spec.upstream.container";
    if container.image.trim().is_empty() {
        problems.push(object, format!("{path}.image"), "image must not be empty");
    }
    match container.transport {
        UpstreamTransport::Stdio => {
            if container.command.is_empty() {
                problems.push(
                    object,
                    format!("{path}.command"),
                    "a stdio upstream needs its command: the operator cannot read the image's entrypoint",
                );
            }
            if container.port.is_some() || container.path.is_some() {
                problems.push(
                    object,
                    format!("{path}.port"),
                    "port and path are for transport StreamableHttp",
                );
            }
        }
        UpstreamTransport::StreamableHttp => match container.port {
            None => problems.push(
                object,
                format!("{path}.port"),
                "a StreamableHttp upstream needs the port it listens on",
            ),
            Some(port) if !(1..=65535).contains(&port) || port == 8080 || port == 9090 => problems.push(
                object,
                format!("{path}.port"),
                "port must be between 1 and 65535, and not 8080 or 9090 (Palisade's own ports)",
            ),
            Some(_) => {}
        },
    }
    if let Some(p) = &container.path
        && (!p.starts_with('/') || p.contains(['?', '#']) || p.chars().any(char::is_whitespace))
    {
        problems.push(
            object,
            format!("{path}.path"),
            "path must start with / and hold no ?, # or space",
        );
    }
}

/// The checks of `spec.upstream` (the CRD's schema has them too; `render` and `policy check` read
/// objects that never passed it).
fn check_upstream(spec: &McpServerSpec, upstream: &UpstreamSpec, object: Option<&str>, problems: &mut Problems) {
    if !spec.documents.is_empty() || !spec.tools.is_empty() {
        problems.push(
            object,
            "spec.upstream",
            "a server with an upstream serves the upstream's tools: leave documents and tools empty",
        );
    }
    match (&upstream.url, &upstream.container) {
        (Some(_), Some(_)) | (None, None) => problems.push(
            object,
            "spec.upstream",
            "set exactly one of url (an upstream reached over the network) and container (an upstream run in the server's pods)",
        ),
        (Some(url), None) => {
            if let Some(problem) = crate::upstream::url_problem(url) {
                problems.push(object, "spec.upstream.url", format!("the upstream URL {problem}"));
            }
        }
        (None, Some(container)) => check_upstream_container(container, object, problems),
    }
    if upstream.url.is_none() && (!upstream.headers.is_empty() || upstream.oauth.is_some()) {
        problems.push(
            object,
            "spec.upstream.headers",
            "headers and oauth are the credentials of an upstream at a url: a container upstream takes its own from env",
        );
    }
    if !(1..=MAX_TIMEOUT_SECONDS).contains(&upstream.timeout_seconds()) {
        problems.push(
            object,
            "spec.upstream.timeoutSeconds",
            format!("must be between 1 and {MAX_TIMEOUT_SECONDS}"),
        );
    }
    if let Some(oauth) = &upstream.oauth {
        if !oauth.token_url.starts_with("https://") {
            problems.push(
                object,
                "spec.upstream.oauth.tokenUrl",
                "tokenUrl must be an https:// URL: the client secret is sent to it",
            );
        } else if let Some(problem) = crate::upstream::url_problem(&oauth.token_url) {
            problems.push(object, "spec.upstream.oauth.tokenUrl", format!("tokenUrl {problem}"));
        }
        if oauth.client_id.is_empty() {
            problems.push(object, "spec.upstream.oauth.clientId", "clientId must not be empty");
        }
        for (i, scope) in oauth.scopes.iter().enumerate() {
            if let Err(e) = check_literal_scope(scope) {
                problems.push(object, format!("spec.upstream.oauth.scopes[{i}]"), e.to_string());
            }
        }
        if upstream
            .headers
            .iter()
            .any(|h| h.name.eq_ignore_ascii_case("authorization"))
        {
            problems.push(
                object,
                "spec.upstream.oauth",
                "oauth sets the upstream's Authorization header: remove the Authorization entry of headers",
            );
        }
    }
    let mut names = HashSet::new();
    let pins = upstream.tools.iter().map(|t| (t.name.as_str(), t.sha256.as_deref()));
    for (i, field, message) in crate::document_check::pin_problems(pins) {
        problems.push(object, format!("spec.upstream.tools[{i}].{field}"), message);
    }
    for (i, header) in upstream.headers.iter().enumerate() {
        let path = format!("spec.upstream.headers[{i}].name");
        if let Some(problem) = header_name_problem(&header.name) {
            problems.push(object, path, problem);
        } else if !names.insert(header.name.to_ascii_lowercase()) {
            problems.push(
                object,
                path,
                format!("duplicate header {:?} (header names are case-insensitive)", header.name),
            );
        }
    }
}

/// Checks one policy against the server it is compiled for.
/// Implications of one scope, from any number of policies, as one: what they imply and where
/// they come from, each sorted and once.
fn merge_implications(implications: Vec<ScopeImplication>) -> Vec<ScopeImplication> {
    let mut merged: BTreeMap<String, (BTreeSet<String>, BTreeSet<String>)> = BTreeMap::new();
    for implication in implications {
        let (implies, sources) = merged.entry(implication.scope).or_default();
        implies.extend(implication.implies);
        sources.extend(implication.sources);
    }
    merged
        .into_iter()
        .map(|(scope, (implies, sources))| ScopeImplication {
            scope,
            implies: implies.into_iter().collect(),
            sources: sources.into_iter().collect(),
        })
        .collect()
}

/// A policy's scope implications in the document's form, with `source`.
fn implications_of(spec: &McpAccessPolicySpec, source: &str) -> Vec<ScopeImplication> {
    spec.scope_implications
        .iter()
        .map(|imp| ScopeImplication {
            scope: imp.scope.clone(),
            implies: imp.implies.clone(),
            sources: vec![source.to_owned()],
        })
        .collect()
}

fn check_policy(
    spec: &McpAccessPolicySpec,
    object: &str,
    tools: Option<&HashSet<&str>>,
    server_object: &str,
    problems: &mut Problems,
) {
    let object = Some(object);
    for (path, message) in crate::scope_hierarchy::check(&implications_of(spec, ""), "spec.scopeImplications") {
        problems.push(object, path, message);
    }
    let mut roles = HashSet::new();
    for (i, role) in spec.roles.iter().enumerate() {
        if let Some(message) = role_name_problem(&role.name) {
            problems.push(object, format!("spec.roles[{i}].name"), message);
        }
        if !roles.insert(role.name.as_str()) {
            problems.push(
                object,
                format!("spec.roles[{i}].name"),
                format!("duplicate role {:?}", role.name),
            );
        }
        for (j, scope) in role.scopes.iter().enumerate() {
            if let Err(e) = ScopeGrant::parse(scope) {
                problems.push(object, format!("spec.roles[{i}].scopes[{j}]"), e.to_string());
            }
        }
    }
    let mut matches = HashSet::new();
    for (i, rule) in spec.tools.iter().enumerate() {
        match ToolPattern::parse(&rule.match_) {
            Err(e) => problems.push(object, format!("spec.tools[{i}].match"), e.to_string()),
            Ok(pattern) if pattern.is_exact() && tools.is_some_and(|t| !t.contains(rule.match_.as_str())) => problems
                .push(
                    object,
                    format!("spec.tools[{i}].match"),
                    format!("{server_object} has no tool {:?}", rule.match_),
                ),
            Ok(_) => {}
        }
        let scopes: Vec<String> = rule
            .required_scopes
            .iter()
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let content = document::content_key(&scopes, spec.mode, &rule.arguments);
        if !matches.insert((rule.match_.as_str(), content)) {
            problems.push(
                object,
                format!("spec.tools[{i}].match"),
                format!(
                    "duplicate rule for {:?}: another rule states the same scopes and arguments",
                    rule.match_
                ),
            );
        }
        for (path, message) in crate::arguments::check(&rule.arguments, &format!("spec.tools[{i}].arguments")) {
            problems.push(object, path, message);
        }
        for (j, scope) in rule.required_scopes.iter().enumerate() {
            if let Err(e) = check_literal_scope(scope) {
                problems.push(object, format!("spec.tools[{i}].requiredScopes[{j}]"), e.to_string());
            }
        }
    }
    for (i, rule) in spec.prompts.iter().enumerate() {
        if !rule.arguments.is_empty() {
            problems.push(
                object,
                format!("spec.prompts[{i}].arguments"),
                "argument constraints are for tool rules (spec.tools)",
            );
        }
    }
    let mut named = HashSet::new();
    for (kind, field, i, match_, required_scopes) in rule_specs(spec).filter(|r| !r.0.is_tool()) {
        let path = format!("spec.{field}[{i}]");
        if tools.is_some() {
            problems.push(
                object,
                path.clone(),
                format!(
                    "{field} rules are for a server with spec.upstream: {server_object} serves documents, whose resources follow its collections"
                ),
            );
        }
        if let Err(e) = ToolPattern::parse_for(kind, match_) {
            problems.push(object, format!("{path}.match"), e);
        }
        if !named.insert((kind, match_)) {
            problems.push(
                object,
                format!("{path}.match"),
                format!("duplicate rule for {match_:?}"),
            );
        }
        for (j, scope) in required_scopes.iter().enumerate() {
            if let Err(e) = check_literal_scope(scope) {
                problems.push(object, format!("{path}.requiredScopes[{j}]"), e.to_string());
            }
        }
    }
    for (i, binding) in spec.bindings.iter().enumerate() {
        if !roles.contains(binding.role.as_str()) {
            problems.push(
                object,
                format!("spec.bindings[{i}].role"),
                format!("role {:?} is not defined in spec.roles", binding.role),
            );
        }
        if binding.subjects.is_empty()
            && binding.groups.is_empty()
            && binding.service_accounts.is_empty()
            && !binding.anonymous
        {
            problems.push(
                object,
                format!("spec.bindings[{i}]"),
                "a binding must name at least one subject, group or service account, or set anonymous: true",
            );
        }
        if binding.issuer.is_some() && binding.source.is_some() {
            problems.push(object, format!("spec.bindings[{i}]"), ISSUER_XOR_SOURCE);
        }
        if (binding.issuer.is_some() || binding.source.is_some())
            && binding.subjects.is_empty()
            && binding.groups.is_empty()
        {
            problems.push(
                object,
                format!("spec.bindings[{i}]"),
                "issuer and source qualify subjects and groups: a binding that sets one must name a subject or group",
            );
        }
        for (j, subject) in binding.subjects.iter().enumerate() {
            if subject == "*" || subject == "system:anonymous" {
                problems.push(
                    object,
                    format!("spec.bindings[{i}].subjects[{j}]"),
                    "bind unauthenticated callers with anonymous: true, never with a wildcard or system:anonymous",
                );
            }
        }
        for (j, account) in binding.service_accounts.iter().enumerate() {
            if let Some(message) = service_account_problem(account) {
                problems.push(object, format!("spec.bindings[{i}].serviceAccounts[{j}]"), message);
            }
        }
        for (j, group) in binding.groups.iter().enumerate() {
            if group == "*" || group == "system:unauthenticated" {
                problems.push(
                    object,
                    format!("spec.bindings[{i}].groups[{j}]"),
                    "bind unauthenticated callers with anonymous: true, never with a wildcard or system:unauthenticated",
                );
            }
        }
    }
    let mut names = HashSet::new();
    for (i, test) in spec.tests.iter().enumerate() {
        let path = format!("spec.tests[{i}]");
        if !names.insert(test.name.as_str()) {
            problems.push(
                object,
                format!("{path}.name"),
                format!("duplicate test {:?}", test.name),
            );
        }
        let lists = [
            ("visibleTools", test.visible_tools.as_deref().unwrap_or_default()),
            ("allowed", test.allowed.as_slice()),
            ("denied", test.denied.as_slice()),
        ];
        for (field, list) in lists {
            for (j, tool) in list.iter().enumerate() {
                let path = format!("{path}.{field}[{j}]");
                match tools {
                    Some(tools) if !tools.contains(tool.as_str()) => {
                        problems.push(object, path, format!("{server_object} has no tool {tool:?}"));
                    }
                    Some(_) => {}
                    None => {
                        if let Err(e) = check_tool_name(tool) {
                            problems.push(object, path, e.to_string());
                        }
                    }
                }
            }
        }
        for (j, tool) in test.allowed.iter().enumerate() {
            if test.denied.contains(tool) {
                problems.push(
                    object,
                    format!("{path}.allowed[{j}]"),
                    format!("tool {tool:?} is listed as both allowed and denied"),
                );
            }
        }
        let identity = &test.identity;
        if identity.anonymous
            && (identity.subject.is_some()
                || !identity.scopes.is_empty()
                || !identity.roles.is_empty()
                || !identity.groups.is_empty()
                || identity.service_account.is_some())
        {
            problems.push(
                object,
                format!("{path}.identity"),
                "an anonymous identity has no subject, scopes, roles, groups or service account",
            );
        }
        if identity.anonymous && !identity.claims.is_empty() {
            problems.push(
                object,
                format!("{path}.identity.claims"),
                "an anonymous identity has no claims",
            );
        }
        for name in identity.claims.keys() {
            if !crate::arguments::is_claim_name(name) {
                problems.push(
                    object,
                    format!("{path}.identity.claims"),
                    format!("{name:?} is not a claim name rules can name: 1 to 128 ASCII letters, digits and _-.:"),
                );
            }
        }
        if identity.issuer.is_some() && identity.source.is_some() {
            problems.push(object, format!("{path}.identity"), ISSUER_XOR_SOURCE);
        }
        if let Some(message) = identity.service_account.as_ref().and_then(service_account_problem) {
            problems.push(object, format!("{path}.identity.serviceAccount"), message);
        }
        for (j, scope) in test.identity.scopes.iter().enumerate() {
            if let Err(e) = check_literal_scope(scope) {
                problems.push(object, format!("{path}.identity.scopes[{j}]"), e.to_string());
            }
        }
        let prompt_and_resource_lists = [
            ("allowedPrompts", RuleKind::Prompt, &test.allowed_prompts),
            ("deniedPrompts", RuleKind::Prompt, &test.denied_prompts),
            ("allowedResources", RuleKind::Resource, &test.allowed_resources),
            ("deniedResources", RuleKind::Resource, &test.denied_resources),
        ];
        for (field, kind, list) in prompt_and_resource_lists {
            for (j, name) in list.iter().enumerate() {
                let at = format!("{path}.{field}[{j}]");
                if tools.is_some() {
                    problems.push(
                        object,
                        at,
                        format!("{field} is for a server with spec.upstream: {server_object} serves documents"),
                    );
                } else if let Err(e) = ToolPattern::parse_for(kind, name) {
                    problems.push(object, at, e);
                } else if name.contains('*') {
                    problems.push(
                        object,
                        at,
                        format!("{name:?} is a pattern: a test names one prompt or resource"),
                    );
                }
            }
        }
        let asserts_items = prompt_and_resource_lists.iter().any(|(_, _, list)| !list.is_empty());
        if test.visible_tools.is_none()
            && test.allowed.is_empty()
            && test.denied.is_empty()
            && test.allowed_calls.is_empty()
            && test.denied_calls.is_empty()
            && !asserts_items
        {
            problems.push(
                object,
                path.clone(),
                "a test must assert something: set visibleTools, allowed or denied (or allowedPrompts, deniedPrompts, allowedResources, deniedResources, allowedCalls, deniedCalls)",
            );
        }
    }
}

fn service_account_problem(account: &ServiceAccountRef) -> Option<String> {
    if account.namespace.as_deref().is_some_and(|ns| !is_dns_label(ns)) {
        return Some(format!(
            "namespace {:?} is not a DNS label",
            account.namespace.as_deref().unwrap_or_default()
        ));
    }
    (!is_dns_subdomain(&account.name)).then(|| format!("{:?} is not a service account name", account.name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_objects::{policy, server};

    const SERVER: &str = r#"
metadata: {name: docs, namespace: team-a}
spec:
  documents: [{collection: c, configMapRef: {name: c}}]
  tools: [{name: read, collection: c, action: readAll}]
  auth:
    issuers:
      - issuer: https://kubernetes.default.svc.corp.internal
"#;

    #[test]
    fn the_default_resource_is_the_endpoint_in_the_clusters_domain() {
        let server = server(SERVER);
        let corp = CompileOptions {
            cluster_domain: "corp.internal",
        };
        let compiled = compile(&server, &[], &corp).unwrap();
        let auth = &compiled.policy.document().authentication;
        assert_eq!(auth.resource, "http://docs.team-a.svc.corp.internal/mcp");
        assert_eq!(auth.issuers[0].audiences, ["http://docs.team-a.svc.corp.internal/mcp"]);
        assert_eq!(in_cluster_endpoint(&server, "corp.internal"), auth.resource);

        let default = compile(&server, &[], &CompileOptions::default()).unwrap();
        assert_eq!(
            default.policy.document().authentication.resource,
            "http://docs.team-a.svc.cluster.local/mcp"
        );

        let mut on_port = server.clone();
        on_port.spec.service = Some(crate::mcp_server::ServiceSpec {
            port: Some(8000),
            ..Default::default()
        });
        assert_eq!(
            in_cluster_endpoint(&on_port, "corp.internal"),
            "http://docs.team-a.svc.corp.internal:8000/mcp"
        );
    }

    #[test]
    fn a_cluster_domain_that_is_no_dns_name_is_refused() {
        let bad = CompileOptions {
            cluster_domain: "Corp_Internal.",
        };
        let problems = compile(&server(SERVER), &[], &bad).unwrap_err();
        assert_eq!(
            problems.to_string(),
            "the cluster domain \"Corp_Internal.\" is not a DNS subdomain (e.g. cluster.local)"
        );
    }

    #[test]
    fn only_issuers_declared_as_the_service_account_issuer_assert_service_accounts() {
        let plain = server(SERVER);
        let compiled = compile(&plain, &[], &CompileOptions::default()).unwrap();
        assert!(
            !compiled.policy.document().authentication.issuers[0]
                .claims
                .kubernetes_service_account
        );
        assert!(
            !compiled
                .policy
                .document()
                .to_yaml()
                .contains("kubernetesServiceAccount")
        );

        let declared = server(&format!("{SERVER}        kubernetesServiceAccounts: true\n"));
        let compiled = compile(&declared, &[], &CompileOptions::default()).unwrap();
        assert!(
            compiled.policy.document().authentication.issuers[0]
                .claims
                .kubernetes_service_account
        );
        assert!(
            compiled
                .policy
                .document()
                .to_yaml()
                .contains("kubernetesServiceAccount: true")
        );

        let hmac = server(&SERVER.replace(
            "      - issuer: https://kubernetes.default.svc.corp.internal\n",
            "      - issuer: ci\n        hmacKey: {secretKeyRef: {name: k, key: k}}\n        kubernetesServiceAccounts: true\n",
        ));
        let problems = compile(&hmac, &[], &CompileOptions::default()).unwrap_err();
        assert_eq!(
            problems.to_string(),
            "McpServer team-a/docs: spec.auth.issuers[0].kubernetesServiceAccounts: an hmacKey issuer cannot be the \
             cluster's service-account issuer: Kubernetes signs service-account tokens with its own keys, published \
             by JWKS or OIDC discovery"
        );
    }

    #[test]
    fn service_account_bindings_without_a_service_account_issuer_are_warned_about() {
        let binding = policy(
            r#"
metadata: {name: agents, namespace: team-a}
spec:
  targetRefs: [{name: docs}]
  roles: [{name: reader, scopes: [c:read]}]
  tools: [{match: read, requiredScopes: [c:read]}]
  bindings: [{role: reader, serviceAccounts: [{name: agent}]}]
"#,
        );
        let compiled = compile(&server(SERVER), &[&binding], &CompileOptions::default()).unwrap();
        let warnings: Vec<String> = compiled.warnings.iter().map(ToString::to_string).collect();
        assert_eq!(
            warnings,
            [
                "McpAccessPolicy team-a/agents: spec.bindings[0].serviceAccounts: no issuer of McpServer team-a/docs \
              sets kubernetesServiceAccounts: true, so no caller is ever a service account and this binding \
              matches none"
            ]
        );

        let declared = server(&format!("{SERVER}        kubernetesServiceAccounts: true\n"));
        let compiled = compile(&declared, &[&binding], &CompileOptions::default()).unwrap();
        assert!(compiled.warnings.is_empty(), "{:?}", compiled.warnings);
    }

    #[test]
    fn a_hand_written_hmac_issuer_cannot_assert_service_accounts_either() {
        let compiled = compile(&server(SERVER), &[], &CompileOptions::default()).unwrap();
        let mut document = compiled.policy.document().clone();
        let issuer = &mut document.authentication.issuers[0];
        issuer.keys = KeySource::HmacKeyFile("/k".into());
        issuer.algorithms = vec![JwtAlgorithm::HS256];
        issuer.claims.kubernetes_service_account = true;
        let problems = Policy::new(document).unwrap_err();
        assert_eq!(
            problems.to_string(),
            format!("authentication.issuers[0].claims.kubernetesServiceAccount: {HMAC_SERVICE_ACCOUNTS}")
        );
    }

    const TWO_ISSUERS: &str = r#"
metadata: {name: docs, namespace: team-a}
spec:
  documents: [{collection: c, configMapRef: {name: c}}]
  tools:
    - {name: read, collection: c, action: readAll}
    - {name: admin, collection: c, action: list}
  auth:
    issuers:
      - issuer: https://idp-a.example.com
      - issuer: dev-b
        hmacKey: {secretKeyRef: {name: k, key: k}}
"#;

    fn alice_policy(binding: &str) -> McpAccessPolicy {
        policy(&format!(
            r#"
metadata: {{name: p, namespace: team-a}}
spec:
  targetRefs: [{{name: docs}}]
  roles: [{{name: admin, scopes: [c:admin]}}, {{name: reader, scopes: [c:read]}}]
  tools: [{{match: read, requiredScopes: [c:read]}}, {{match: admin, requiredScopes: [c:admin]}}]
  bindings: [{binding}]
"#
        ))
    }

    #[test]
    fn alice_of_one_issuer_is_not_alice_of_another() {
        let server = server(TWO_ISSUERS);
        let policy = alice_policy("{role: admin, issuer: https://idp-a.example.com, subjects: [alice]}");
        let compiled = compile(&server, &[&policy], &CompileOptions::default()).unwrap();
        let binding = &compiled.policy.document().bindings[0];
        assert_eq!(
            binding.from,
            Some(IdentitySource::Issuer("https://idp-a.example.com".into()))
        );

        let alice = |issuer: &str, scopes: &[&str]| crate::Identity {
            source: Some(IdentitySource::Issuer(issuer.into())),
            subject: Some("alice".into()),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            ..crate::Identity::default()
        };
        let of_a = compiled.policy.access(&alice("https://idp-a.example.com", &[]));
        assert!(of_a.check_tool("admin").effect.permits());
        assert_eq!(of_a.roles().collect::<Vec<_>>(), ["admin"]);

        // alice of issuer B gets what her own token grants (c:read), and not the binding of A's alice.
        let of_b = compiled.policy.access(&alice("dev-b", &["c:read"]));
        assert_eq!(of_b.roles().count(), 0);
        assert!(of_b.check_tool("read").effect.permits());
        assert_eq!(of_b.check_tool("admin").effect, crate::Effect::Deny);
        // Nor does an API key or a client certificate named alice.
        for source in [IdentitySource::ApiKeys, IdentitySource::ClientCertificates] {
            let other = crate::Identity {
                source: Some(source),
                ..alice("x", &[])
            };
            assert_eq!(
                compiled.policy.access(&other).check_tool("admin").effect,
                crate::Effect::Deny
            );
        }
    }

    #[test]
    fn an_unqualified_binding_on_a_server_with_two_sources_is_refused_with_how_to_qualify() {
        let server = server(TWO_ISSUERS);
        let policy = alice_policy("{role: admin, subjects: [alice]}");
        let problems = compile(&server, &[&policy], &CompileOptions::default()).unwrap_err();
        assert_eq!(
            problems.to_string(),
            "McpAccessPolicy team-a/p: spec.bindings[0]: the server accepts identities from 2 sources (issuer \
             \"https://idp-a.example.com\", issuer \"dev-b\"), so subjects and groups must say which one they \
             belong to: set issuer: <one of the server's auth.issuers[].issuer>, or source: ApiKeys (or \
             ClientCertificates)"
        );
        // Naming an issuer the server does not have, or API keys it does not accept, is refused too.
        let policy = alice_policy("{role: admin, issuer: https://other, subjects: [alice]}");
        let problems = compile(&server, &[&policy], &CompileOptions::default()).unwrap_err();
        assert_eq!(
            problems.to_string(),
            "McpAccessPolicy team-a/p: spec.bindings[0]: issuer \"https://other\" is not an issuer of the server \
             (\"https://idp-a.example.com\", \"dev-b\")"
        );
        let policy = alice_policy("{role: admin, source: ApiKeys, subjects: [alice]}");
        let problems = compile(&server, &[&policy], &CompileOptions::default()).unwrap_err();
        assert_eq!(
            problems.to_string(),
            "McpAccessPolicy team-a/p: spec.bindings[0]: the server has no API-key table, so no caller comes from API keys"
        );
        let policy = alice_policy("{role: admin, source: ApiKeys, issuer: dev-b, subjects: [alice]}");
        let problems = compile(&server, &[&policy], &CompileOptions::default()).unwrap_err();
        assert_eq!(problems.0[0].message, ISSUER_XOR_SOURCE);
    }

    #[test]
    fn an_unqualified_binding_on_a_server_with_one_source_means_that_source() {
        let server = server(SERVER);
        let policy = policy(
            r#"
metadata: {name: p, namespace: team-a}
spec:
  targetRefs: [{name: docs}]
  roles: [{name: reader, scopes: [c:read]}]
  tools: [{match: read, requiredScopes: [c:read]}]
  bindings: [{role: reader, groups: [staff]}]
  tests: [{name: staff read, identity: {groups: [staff]}, allowed: [read]}]
"#,
        );
        let compiled = compile(&server, &[&policy], &CompileOptions::default()).unwrap();
        assert_eq!(
            compiled.policy.document().bindings[0].from,
            Some(IdentitySource::Issuer(
                "https://kubernetes.default.svc.corp.internal".into()
            ))
        );
        assert_eq!(compiled.failed_tests().count(), 0);
    }

    #[test]
    fn an_unqualified_test_identity_on_a_server_with_two_sources_is_refused() {
        let server = server(TWO_ISSUERS);
        let mut policy = alice_policy("{role: admin, issuer: dev-b, subjects: [alice]}");
        policy.spec.tests =
            vec![yaml_serde::from_str("{name: t, identity: {subject: alice}, allowed: [admin]}").unwrap()];
        let problems = compile(&server, &[&policy], &CompileOptions::default()).unwrap_err();
        assert_eq!(problems.0[0].path, "spec.tests[0].identity");
        assert!(problems.0[0].message.ends_with(QUALIFY_TEST_IDENTITY), "{problems}");

        policy.spec.tests[0].identity.issuer = Some("dev-b".into());
        let compiled = compile(&server, &[&policy], &CompileOptions::default()).unwrap();
        assert_eq!(compiled.failed_tests().count(), 0);
        policy.spec.tests[0].identity.issuer = Some("https://idp-a.example.com".into());
        let compiled = compile(&server, &[&policy], &CompileOptions::default()).unwrap();
        assert_eq!(compiled.failed_tests().count(), 1);
    }

    const PROXY: &str = r#"
metadata: {name: files, namespace: team-a}
spec:
  upstream:
    url: http://files-mcp.team-a.svc.cluster.local:3001/mcp
    headers: [{name: Authorization, valueFrom: {secretKeyRef: {name: files-upstream, key: token}}}]
  auth:
    apiKeys: {secretKeyRef: {name: keys, key: keys.yaml}}
"#;

    const PROXY_POLICY: &str = r#"
metadata: {name: files, namespace: team-a}
spec:
  targetRefs: [{name: files}]
  roles: [{name: reader, scopes: ["files:read"]}]
  bindings: [{role: reader, groups: [readers]}]
  tools:
    - {match: "read_*", requiredScopes: ["files:read"]}
    - {match: "*", requiredScopes: ["files:admin"]}
  tests:
    - name: readers read and write nothing
      identity: {groups: [readers]}
      visibleTools: [read_text_file, read_media_file]
      allowed: [read_text_file]
      denied: [write_file, move_file]
"#;

    #[test]
    fn a_proxy_s_rules_and_tests_name_the_upstream_s_tools_and_are_decided_on_them() {
        let server = server(PROXY);
        let compiled = compile(&server, &[&policy(PROXY_POLICY)], &CompileOptions::default()).unwrap();
        assert_eq!(compiled.failed_tests().count(), 0, "{:?}", compiled.tests);
        assert!(compiled.warnings.is_empty(), "{:?}", compiled.warnings);
        assert!(compiled.policy.tools().is_empty());
        // A test that expects too much fails with the reason, as on a document server.
        let wrong = PROXY_POLICY
            .replace(
                "denied: [write_file, move_file]",
                "denied: [move_file]\n      visibleTools: [read_text_file, write_file]",
            )
            .replace("      visibleTools: [read_text_file, read_media_file]\n", "");
        let wrong = compile(&server, &[&policy(&wrong)], &CompileOptions::default()).unwrap();
        let failures: Vec<_> = wrong.failed_tests().flat_map(|t| &t.failures).collect();
        assert_eq!(failures, ["does not see write_file (missing scopes: files:admin)"]);
    }

    #[test]
    fn a_proxy_s_tests_still_need_well_formed_tool_names() {
        let bad = PROXY_POLICY.replace("allowed: [read_text_file]", "allowed: [\"read text\"]");
        let problems = compile(&server(PROXY), &[&policy(&bad)], &CompileOptions::default()).unwrap_err();
        assert_eq!(problems.0.len(), 1, "{problems:?}");
        assert_eq!(problems.0[0].path, "spec.tests[0].allowed[0]");
    }

    #[test]
    fn a_proxy_s_pins_reach_the_document_sorted_and_bad_ones_are_refused_with_the_field() {
        let pin = |c: char| format!("sha256:{}", c.to_string().repeat(64));
        let pinned = PROXY.replace(
            "    headers:",
            &format!(
                "    pinning: {{mode: Report}}\n    tools: [{{name: write_file, sha256: \"{}\"}}, {{name: read_text_file, description: Reviewed}}]\n    headers:",
                pin('b')
            ),
        );
        let compiled = compile(&server(&pinned), &[&policy(PROXY_POLICY)], &CompileOptions::default()).unwrap();
        let upstream = compiled
            .policy
            .document()
            .upstream
            .as_ref()
            .expect("pins in the document");
        assert_eq!(upstream.pinning, crate::document::PinningMode::Report);
        assert_eq!(upstream.unpinned, UnpinnedTools::Allow);
        let names: Vec<&str> = upstream.tools.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["read_text_file", "write_file"]);
        assert_eq!(upstream.tools[0].description.as_deref(), Some("Reviewed"));
        assert_eq!(upstream.tools[1].sha256, Some(pin('b')));
        // Every proxy's document says how its tools are pinned; a document server's does not.
        let plain = compile(&server(PROXY), &[&policy(PROXY_POLICY)], &CompileOptions::default()).unwrap();
        assert_eq!(plain.policy.document().upstream, Some(UpstreamTools::default()));

        let cases = [
            (
                pinned.replace(&pin('b'), "sha256:ABC"),
                "spec.upstream.tools[0].sha256",
                "is not sha256: followed by 64 lowercase hexadecimal digits",
            ),
            (
                pinned.replace("name: read_text_file", "name: write_file"),
                "spec.upstream.tools[1].name",
                "tool \"write_file\" is listed twice",
            ),
            (
                pinned.replace("name: read_text_file", "name: \"read text\""),
                "spec.upstream.tools[1].name",
                "tool name contains ' '",
            ),
        ];
        for (yaml, path, message) in cases {
            let problems = compile(&server(&yaml), &[&policy(PROXY_POLICY)], &CompileOptions::default()).unwrap_err();
            assert_eq!(problems.0[0].path, path, "{problems:?}");
            assert!(problems.0[0].message.contains(message), "{problems:?}");
        }

        let withhold_all = PROXY.replace("    headers:", "    pinning: {unpinned: Withhold}\n    headers:");
        let compiled = compile(
            &server(&withhold_all),
            &[&policy(PROXY_POLICY)],
            &CompileOptions::default(),
        )
        .unwrap();
        assert!(
            compiled
                .warnings
                .iter()
                .any(|w| w.path == "spec.upstream.pinning.unpinned"
                    && w.message.contains("every upstream tool is withheld")),
            "{:?}",
            compiled.warnings
        );
    }

    #[test]
    fn a_container_upstream_is_refused_with_the_field_where_the_crd_s_rules_would_refuse_it() {
        let container = |spec: &str| {
            PROXY
                .replace("    url: http://files-mcp.team-a.svc.cluster.local:3001/mcp\n", &format!("    container: {spec}\n"))
                .replace(
                    "    headers: [{name: Authorization, valueFrom: {secretKeyRef: {name: files-upstream, key: token}}}]\n",
                    "",
                )
        };
        let valid = container("{image: mcp/everything:1, command: [node, dist/index.js, stdio]}");
        compile(&server(&valid), &[&policy(PROXY_POLICY)], &CompileOptions::default()).unwrap();
        let cases = [
            (
                container("{image: i}"),
                "spec.upstream.container.command",
                "a stdio upstream needs its command: the operator cannot read the image's entrypoint",
            ),
            (
                container("{image: i, command: [x], port: 3001}"),
                "spec.upstream.container.port",
                "port and path are for transport StreamableHttp",
            ),
            (
                container("{image: i, transport: StreamableHttp}"),
                "spec.upstream.container.port",
                "a StreamableHttp upstream needs the port it listens on",
            ),
            (
                container("{image: i, transport: StreamableHttp, port: 9090}"),
                "spec.upstream.container.port",
                "port must be between 1 and 65535, and not 8080 or 9090 (Palisade's own ports)",
            ),
            (
                container("{image: i, transport: StreamableHttp, port: 3001, path: mcp}"),
                "spec.upstream.container.path",
                "path must start with / and hold no ?, # or space",
            ),
            (
                container("{image: ' ', command: [x]}"),
                "spec.upstream.container.image",
                "image must not be empty",
            ),
            (
                PROXY.replace(
                    "    url: http://files-mcp.team-a.svc.cluster.local:3001/mcp\n",
                    "    url: http://files-mcp.team-a.svc.cluster.local:3001/mcp\n    container: {image: i, command: [x]}\n",
                ),
                "spec.upstream",
                "set exactly one of url (an upstream reached over the network) and container (an upstream run in the server's pods)",
            ),
            (
                container("{image: i, command: [x]}\n    headers: [{name: X-Key, valueFrom: {secretKeyRef: {name: s, key: k}}}]"),
                "spec.upstream.headers",
                "headers and oauth are the credentials of an upstream at a url: a container upstream takes its own from env",
            ),
        ];
        for (yaml, path, message) in cases {
            let problems = compile(&server(&yaml), &[&policy(PROXY_POLICY)], &CompileOptions::default()).unwrap_err();
            assert_eq!(
                (problems.0[0].path.as_str(), problems.0[0].message.as_str()),
                (path, message),
                "{problems:?}"
            );
        }
    }

    #[test]
    fn a_proxy_with_documents_or_a_bad_url_or_header_is_refused_with_the_field() {
        let both = PROXY.replace(
            "  upstream:",
            "  documents: [{collection: c, configMapRef: {name: c}}]\n  upstream:",
        );
        let cases = [
            (both, "spec.upstream", "leave documents and tools empty"),
            (
                PROXY.replace("http://files-mcp", "http://user:pw@files-mcp"),
                "spec.upstream.url",
                "the upstream URL must not carry credentials",
            ),
            (
                PROXY.replace("name: Authorization", "name: Mcp-Session-Id"),
                "spec.upstream.headers[0].name",
                "set by Palisade itself",
            ),
            (
                PROXY.replace("    headers:", "    timeoutSeconds: 301\n    headers:"),
                "spec.upstream.timeoutSeconds",
                "between 1 and 300",
            ),
            (
                PROXY.replace(
                    "    headers:",
                    "    oauth: {tokenUrl: https://idp/token, clientId: p, clientSecret: {secretKeyRef: {name: o, key: s}}}\n    headers:",
                ),
                "spec.upstream.oauth",
                "oauth sets the upstream's Authorization header",
            ),
            (
                PROXY.replace(
                    "    headers:",
                    "    oauth: {tokenUrl: http://idp/token, clientId: p, clientSecret: {secretKeyRef: {name: o, key: s}}}\n    headers:",
                ),
                "spec.upstream.oauth.tokenUrl",
                "tokenUrl must be an https:// URL",
            ),
        ];
        for (yaml, path, message) in cases {
            let problems = compile(&server(&yaml), &[&policy(PROXY_POLICY)], &CompileOptions::default()).unwrap_err();
            assert_eq!(problems.0[0].path, path, "{problems:?}");
            assert!(problems.0[0].message.contains(message), "{problems:?}");
        }
    }

    #[test]
    fn a_proxy_s_header_value_is_a_mounted_secret_key() {
        let server = server(PROXY);
        let uses = crate::secret_uses::secret_uses(&server);
        let header = uses
            .iter()
            .find(|u| u.field_path == "spec.upstream.headers[0].valueFrom")
            .unwrap();
        assert_eq!(header.file.path, "/etc/palisade/secrets/files-upstream/token");
    }

    #[test]
    fn a_proxy_s_prompt_and_resource_rules_are_compiled_and_refused_on_a_document_server() {
        let with_rules = PROXY_POLICY.replace(
            "  tests:",
            "  prompts: [{match: \"simple_*\", requiredScopes: [\"files:read\"]}]\n  resources: [{match: \"file:///data/public/*\", requiredScopes: [\"files:read\"]}]\n  tests:",
        );
        let compiled = compile(&server(PROXY), &[&policy(&with_rules)], &CompileOptions::default()).unwrap();
        let kinds: Vec<(&str, &str)> = compiled
            .policy
            .document()
            .rules
            .iter()
            .map(|r| (r.kind.as_str(), r.match_.as_str()))
            .collect();
        assert_eq!(
            kinds,
            [
                ("tool", "*"),
                ("tool", "read_*"),
                ("prompt", "simple_*"),
                ("resource", "file:///data/public/*")
            ]
        );
        let on_documents = with_rules.replace("targetRefs: [{name: files}]", "targetRefs: [{name: docs}]");
        let problems = compile(&server(SERVER), &[&policy(&on_documents)], &CompileOptions::default()).unwrap_err();
        let paths: Vec<&str> = problems.0.iter().map(|p| p.path.as_str()).collect();
        assert!(
            paths.contains(&"spec.prompts[0]") && paths.contains(&"spec.resources[0]"),
            "{problems:?}"
        );
        let bad_uri = with_rules.replace("file:///data/public/*", "file:///data/my files/*");
        let problems = compile(&server(PROXY), &[&policy(&bad_uri)], &CompileOptions::default()).unwrap_err();
        assert_eq!(problems.0[0].path, "spec.resources[0].match", "{problems:?}");
    }

    #[test]
    fn a_proxy_s_tests_assert_on_prompts_and_resources_by_the_rules_of_their_kind() {
        let with_tests = PROXY_POLICY.replace(
            "  tests:\n",
            "  prompts: [{match: \"simple_*\", requiredScopes: [\"files:read\"]}]\n  resources: [{match: \"file:///data/public/*\", requiredScopes: [\"files:read\"]}]\n  tests:\n    - name: readers get simple prompts and read public files\n      identity: {groups: [readers]}\n      allowedPrompts: [simple_summary]\n      deniedPrompts: [admin_report]\n      allowedResources: [\"file:///data/public/a.txt\"]\n      deniedResources: [\"file:///data/secret/b.txt\"]\n",
        );
        let compiled = compile(&server(PROXY), &[&policy(&with_tests)], &CompileOptions::default()).unwrap();
        assert_eq!(compiled.failed_tests().count(), 0, "{:?}", compiled.tests);
        let wrong = with_tests.replace(
            "deniedResources: [\"file:///data/secret/b.txt\"]",
            "deniedResources: [\"file:///data/public/c.txt\"]",
        );
        let wrong = compile(&server(PROXY), &[&policy(&wrong)], &CompileOptions::default()).unwrap();
        let failures: Vec<_> = wrong.failed_tests().flat_map(|t| &t.failures).collect();
        assert_eq!(
            failures,
            ["read of resource file:///data/public/c.txt is allowed (rule \"file:///data/public/*\")"]
        );
        let pattern = with_tests.replace("allowedPrompts: [simple_summary]", "allowedPrompts: [\"simple_*\"]");
        let problems = compile(&server(PROXY), &[&policy(&pattern)], &CompileOptions::default()).unwrap_err();
        assert_eq!(problems.0[0].path, "spec.tests[0].allowedPrompts[0]", "{problems:?}");
    }
}
