//! The one policy evaluator: given a [`PolicyDocument`] and a caller's [`Identity`], which tools
//! and document collections the caller may see, and whether a call is allowed, with the reason.
//!
//! Pure and synchronous: no I/O, no clock, no async. The operator runs it on a policy's test
//! cases before rollout and the server runs it on every request, so a policy can never mean one
//! thing to one and another thing to the other.
//!
//! Model (default deny):
//! - a caller's effective scopes = the scopes in its token ∪ the scopes of every role it holds
//!   (roles named in its token, and roles bound to its subject, groups or service account;
//!   anonymous callers hold only the roles bound with `anonymous: true`), each with the narrower
//!   scopes it implies (`scopeImplications`, [`crate::scope_hierarchy`]);
//! - a tool is visible in `tools/list` **iff** a call to it would be allowed: both answers come from
//!   [`Access::check_tool`], so list filtering and call checking never disagree;
//! - a tool is governed by the most specific rule matching its name; with no rule it is denied;
//! - a document collection may be read as resources iff a tool that returns its documents whole
//!   (`get`, `readAll`) may be called.
//!
//! [`Policy::new`] does all the work that does not depend on the caller: it resolves each tool's
//! rule and interns every required scope, and precomputes which required scopes each role
//! covers. A decision is then a few word-sized AND operations. Names the document does not define
//! (an upstream server's tools) are prepared the same way in a [`crate::catalog::Catalog`].

use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::arguments::{ArgumentFailure, ArgumentRules, Caller};
use crate::common::PolicyMode;
use crate::document::{PolicyDocument, RuleKind, ToolDefinition, ToolRule};
use crate::identity_source::IdentitySource;
use crate::problem::Problems;
use crate::scope::ScopeGrant;
use crate::scope_hierarchy::ScopeHierarchy;
use crate::tool_match::{Specificity, ToolPattern};

/// Who is calling, as authentication established it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// Where the subject and groups come from; bindings match them only within this source.
    /// `None` (no credential, or a test identity without subject and groups) matches no binding by
    /// subject or group.
    pub source: Option<IdentitySource>,
    /// Subject (token `sub`, or an API key's identity).
    pub subject: Option<String>,
    /// Scopes carried by the credential itself (literal).
    pub scopes: Vec<String>,
    /// Role names carried by the credential.
    pub roles: Vec<String>,
    /// Groups carried by the credential.
    pub groups: Vec<String>,
    /// Kubernetes service account as `namespace/name`.
    pub service_account: Option<String>,
    /// Further token claims, by name, with their string values (a string claim has one): those
    /// argument rules name (`{claims.NAME}`, [`Policy::claim_names`]), read by the server from a
    /// verified token; sorted by name.
    pub claims: Vec<(String, Vec<String>)>,
    /// The caller presented no credentials.
    pub anonymous: bool,
}

impl Identity {
    /// An authenticated caller with these token scopes and nothing else.
    pub fn with_scopes<S: Into<String>>(scopes: impl IntoIterator<Item = S>) -> Self {
        Self {
            scopes: scopes.into_iter().map(Into::into).collect(),
            ..Self::default()
        }
    }

    /// A caller without credentials.
    pub fn anonymous() -> Self {
        Self {
            anonymous: true,
            ..Self::default()
        }
    }
}

/// What the policy does with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Effect {
    /// Allowed.
    Allow,
    /// Denied.
    Deny,
    /// The policy would deny, but the deciding rule is in `Audit` mode: allowed, and reported.
    AuditDeny,
}

impl Effect {
    /// Whether the request goes through (`Allow` or `AuditDeny`).
    pub fn permits(self) -> bool {
        !matches!(self, Self::Deny)
    }

    /// Stable lower-case name for audit events and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
            Self::AuditDeny => "would_deny",
        }
    }
}

/// Why the policy decided as it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Every required scope is covered.
    Granted,
    /// Some required scope is not covered.
    MissingScopes,
    /// No rule matches the tool (default deny).
    NoMatchingRule,
    /// The server has no such tool.
    UnknownTool,
    /// The server has no such collection.
    UnknownCollection,
    /// Rules of equal specificity that disagree match the name (a name the policy document does
    /// not define, from a [`crate::catalog::Catalog`]): denied, since neither rule is the one
    /// that governs it.
    AmbiguousRules,
    /// A rule the caller holds the scopes of governs the tool, but the call's arguments satisfy
    /// none of them (for a list: the caller has none of the values a caller-dependent
    /// constraint needs).
    ArgumentDenied,
}

impl Reason {
    /// Stable snake-case code for audit events and metrics.
    pub fn code(self) -> &'static str {
        match self {
            Self::Granted => "granted",
            Self::MissingScopes => "missing_scopes",
            Self::NoMatchingRule => "no_matching_rule",
            Self::UnknownTool => "unknown_tool",
            Self::UnknownCollection => "unknown_collection",
            Self::AmbiguousRules => "ambiguous_rules",
            Self::ArgumentDenied => "argument_denied",
        }
    }
}

/// A decision about one tool (or collection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision<'p> {
    /// Allow, deny, or would-deny.
    pub effect: Effect,
    /// Why.
    pub reason: Reason,
    /// The tool decided on (for a collection: the tool that grants or would grant it); none for
    /// a name of a [`crate::catalog::Catalog`].
    pub tool: Option<&'p ToolDefinition>,
    /// The rule that decided: the one that allows, else the one that would allow with more
    /// scopes, else the first rule governing the tool.
    pub rule: Option<&'p ToolRule>,
    /// For [`Reason::ArgumentDenied`] on a call: the first argument (of the first rule the caller
    /// holds) that failed, and the constraint it failed.
    pub argument: Option<ArgumentFailure<'p>>,
    /// For [`Reason::ArgumentDenied`]: a rule for the same tool that the caller does not hold
    /// the scopes of, and that would allow these arguments (step-up authorization).
    pub step_up: Option<&'p ToolRule>,
}

impl<'p> Decision<'p> {
    /// A denial (or would-deny in `mode`) for `reason`, without a rule.
    pub(crate) fn refused(reason: Reason, mode: PolicyMode) -> Self {
        Self {
            effect: effect(false, mode),
            reason,
            tool: None,
            rule: None,
            argument: None,
            step_up: None,
        }
    }
}

/// Where a covered scope came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant<'p> {
    /// The credential carries the scope.
    Token,
    /// A role the caller holds grants it.
    Role(&'p str),
    /// A broader scope the credential carries implies it (`scopeImplications`).
    ImpliedByToken(&'p str),
    /// A broader scope that a role the caller holds grants implies it.
    ImpliedByRole {
        /// The role.
        role: &'p str,
        /// The broader scope it grants.
        scope: &'p str,
    },
}

impl std::fmt::Display for Grant<'_> {
    /// Where the scope came from, as explanations print it: `the token`, `role reader`,
    /// `files:admin in the token`, `files:admin of role editor`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Token => f.write_str("the token"),
            Self::Role(role) => write!(f, "role {role}"),
            Self::ImpliedByToken(scope) => write!(f, "{scope} in the token"),
            Self::ImpliedByRole { role, scope } => write!(f, "{scope} of role {role}"),
        }
    }
}

/// The detail behind a decision: what granted each required scope, and what is missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation<'p> {
    /// The decision.
    pub decision: Decision<'p>,
    /// Each covered required scope with what granted it.
    pub granted: Vec<(&'p str, Grant<'p>)>,
    /// Required scopes the caller lacks.
    pub missing: Vec<&'p str>,
}

/// A fixed-width set of interned required scopes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ScopeSet(Box<[u64]>);

impl ScopeSet {
    fn empty(words: usize) -> Self {
        Self(vec![0; words].into_boxed_slice())
    }
    fn insert(&mut self, id: usize) {
        self.0[id / 64] |= 1 << (id % 64);
    }
    fn contains(&self, id: usize) -> bool {
        self.0[id / 64] & (1 << (id % 64)) != 0
    }
    fn union_with(&mut self, other: &Self) {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a |= b;
        }
    }
    fn is_subset_of(&self, other: &Self) -> bool {
        self.0.iter().zip(other.0.iter()).all(|(a, b)| a & !b == 0)
    }
}

/// One rule a name may be called under, its required scopes interned.
#[derive(Debug)]
struct Alternative {
    rule: usize,
    required: ScopeSet,
    required_ids: Box<[u32]>,
}

/// A tool (or any name) with the rules that govern it: alternatives, any of which allows.
#[derive(Debug)]
pub(crate) struct PreparedTool {
    alternatives: Box<[Alternative]>,
    /// Denials are would-denials only when every governing rule is in `Audit` mode.
    mode: PolicyMode,
}

/// Which rules govern a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Resolution {
    /// The rules of the most specific matching `match` (alternatives; rules of another `match`
    /// at that specificity state the same alternatives).
    Rules(Vec<usize>),
    /// No rule matches.
    NoRule,
    /// Two rules at the top specificity, of different `match`es, state different alternatives.
    Ambiguous(usize, usize),
}

/// The rules of the most specific `match` matching `name`: alternatives. Other `match`es at that
/// specificity must state the same alternatives; a less specific disagreement is irrelevant,
/// since the more specific rules decide. `rules` are normalized (sorted by kind, match, content).
fn resolve(rules: &[ToolRule], patterns: &[ToolPattern], kind: RuleKind, name: &str) -> Resolution {
    let matching: Vec<(Specificity, usize)> = patterns
        .iter()
        .enumerate()
        .filter(|&(r, pattern)| rules[r].kind == kind && pattern.matches(name))
        .map(|(r, pattern)| (pattern.specificity(), r))
        .collect();
    let Some(top) = matching.iter().map(|&(s, _)| s).max() else {
        return Resolution::NoRule;
    };
    let at_top: Vec<usize> = matching.iter().filter(|&&(s, _)| s == top).map(|&(_, r)| r).collect();
    let first = at_top[0];
    let of_match = |m: &str| -> Vec<usize> { at_top.iter().copied().filter(|&r| rules[r].match_ == m).collect() };
    let alternatives = of_match(&rules[first].match_);
    let content = |rs: &[usize]| -> Vec<_> {
        rs.iter()
            .map(|&r| (&rules[r].required_scopes, rules[r].mode, &rules[r].arguments))
            .collect()
    };
    for &other in &at_top {
        if rules[other].match_ != rules[first].match_
            && content(&of_match(&rules[other].match_)) != content(&alternatives)
        {
            return Resolution::Ambiguous(first, other);
        }
    }
    Resolution::Rules(alternatives)
}

/// `rules` (alternatives; none: no rule) prepared over the interned scopes.
fn prepare(
    document: &PolicyDocument,
    scope_index: &HashMap<String, u32>,
    words: usize,
    rules: &[usize],
) -> PreparedTool {
    let alternatives: Box<[Alternative]> = rules
        .iter()
        .map(|&r| {
            let mut required = ScopeSet::empty(words);
            let mut required_ids = Vec::new();
            for scope in &document.rules[r].required_scopes {
                let id = scope_index[scope];
                required.insert(id as usize);
                required_ids.push(id);
            }
            Alternative {
                rule: r,
                required,
                required_ids: required_ids.into_boxed_slice(),
            }
        })
        .collect();
    let mode = if alternatives.is_empty() {
        document.mode
    } else if rules.iter().all(|&r| document.rules[r].mode == PolicyMode::Audit) {
        PolicyMode::Audit
    } else {
        PolicyMode::Enforce
    };
    PreparedTool { alternatives, mode }
}

/// The roles bound to the subjects and groups of one identity source.
#[derive(Debug, Default)]
struct SourceBindings {
    by_subject: HashMap<String, Vec<u32>>,
    by_group: HashMap<String, Vec<u32>>,
}

#[derive(Debug)]
struct PreparedRole {
    /// Required scopes its grants cover, implied ones included.
    covers: ScopeSet,
    /// Required scopes its grants cover as written.
    direct: ScopeSet,
    /// The broader scopes (positions in the hierarchy) its grants cover.
    broader: Vec<u32>,
}

/// A validated, prepared policy: build once per document, share across requests.
#[derive(Debug)]
pub struct Policy {
    document: PolicyDocument,
    hash: String,
    tools: Vec<PreparedTool>,
    tool_index: HashMap<String, usize>,
    patterns: Vec<ToolPattern>,
    scopes: Vec<String>,
    scope_index: HashMap<String, u32>,
    roles: Vec<PreparedRole>,
    role_index: HashMap<String, u32>,
    by_source: HashMap<IdentitySource, SourceBindings>,
    by_service_account: HashMap<String, Vec<u32>>,
    anonymous_roles: Vec<u32>,
    collection_index: HashMap<String, Vec<usize>>,
    /// Each rule's compiled argument constraints (none: it constrains no argument).
    arguments: Vec<Option<ArgumentRules>>,
    /// Whether some rule constrains arguments (then a caller's subject, groups, service account
    /// and claims are kept for caller-dependent constraints, and lists may narrow schemas).
    constrains_arguments: bool,
    /// The token claims argument rules name, sorted, each once.
    claim_names: Vec<String>,
    /// Which scopes imply which.
    hierarchy: ScopeHierarchy,
    /// For each broader scope of `hierarchy`: the required scopes it implies.
    implied: Vec<ScopeSet>,
    words: usize,
}

impl Policy {
    /// Validates and prepares a document. The document is normalized first (so its hash does not
    /// depend on the order it was written in). Every problem is reported with the document path
    /// it is at.
    pub fn new(document: PolicyDocument) -> Result<Self, Problems> {
        // Check the document as written, so that paths point at what its author wrote.
        let mut problems = Problems::default();
        crate::document_check::check(&document, &mut problems);
        if !problems.is_empty() {
            return Err(problems);
        }
        let written_position: HashMap<String, usize> = document
            .tools
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        let document = document.normalized();

        // Intern every scope a rule requires.
        let mut scope_index: HashMap<String, u32> = HashMap::new();
        let mut scopes = Vec::new();
        for rule in &document.rules {
            for scope in &rule.required_scopes {
                if !scope_index.contains_key(scope) {
                    scope_index.insert(scope.clone(), scopes.len() as u32);
                    scopes.push(scope.clone());
                }
            }
        }
        let words = scopes.len().div_ceil(64).max(1);

        // Resolve each tool's rule: the most specific match, which must not be ambiguous.
        let patterns: Vec<ToolPattern> = document
            .rules
            .iter()
            .map(|r| ToolPattern::parse_for(r.kind, &r.match_).expect("checked"))
            .collect();
        let mut tools = Vec::with_capacity(document.tools.len());
        let mut tool_index = HashMap::with_capacity(document.tools.len());
        for (t, tool) in document.tools.iter().enumerate() {
            let rules = match resolve(&document.rules, &patterns, RuleKind::Tool, &tool.name) {
                Resolution::Rules(rules) => rules,
                Resolution::NoRule => Vec::new(),
                Resolution::Ambiguous(x, y) => {
                    problems.push(
                        None,
                        format!("tools[{}]", written_position[&tool.name]),
                        format!(
                            "tool {:?} is matched equally specifically by rules {:?} and {:?}, which require different scopes, modes or arguments; add a rule for the exact name",
                            tool.name, document.rules[x].match_, document.rules[y].match_
                        ),
                    );
                    Vec::new()
                }
            };
            tools.push(prepare(&document, &scope_index, words, &rules));
            tool_index.insert(tool.name.clone(), t);
        }
        problems.into_result()?;

        // What each broader scope implies, over the interned required scopes.
        let hierarchy = ScopeHierarchy::new(&document.scope_implications);
        let implied: Vec<ScopeSet> = (0..document.scope_implications.len())
            .map(|b| {
                let mut set = ScopeSet::empty(words);
                for (id, scope) in scopes.iter().enumerate() {
                    if hierarchy.implies(b, scope) {
                        set.insert(id);
                    }
                }
                set
            })
            .collect();

        // What each role covers, over the interned required scopes: what its grants cover, and
        // what the broader scopes they cover imply.
        let mut roles = Vec::with_capacity(document.roles.len());
        let mut role_index = HashMap::with_capacity(document.roles.len());
        for (i, role) in document.roles.iter().enumerate() {
            let grants: Vec<ScopeGrant> = role
                .scopes
                .iter()
                .map(|s| ScopeGrant::parse(s).expect("checked"))
                .collect();
            let mut direct = ScopeSet::empty(words);
            for (id, scope) in scopes.iter().enumerate() {
                if grants.iter().any(|g| g.covers(scope)) {
                    direct.insert(id);
                }
            }
            let broader: Vec<u32> = hierarchy
                .broader_scopes()
                .enumerate()
                .filter(|(_, scope)| grants.iter().any(|g| g.covers(scope)))
                .map(|(b, _)| b as u32)
                .collect();
            let mut covers = direct.clone();
            for &b in &broader {
                covers.union_with(&implied[b as usize]);
            }
            roles.push(PreparedRole {
                covers,
                direct,
                broader,
            });
            role_index.insert(role.name.clone(), i as u32);
        }

        let mut by_source: HashMap<IdentitySource, SourceBindings> = HashMap::new();
        let mut by_service_account: HashMap<String, Vec<u32>> = HashMap::new();
        let mut anonymous_roles = Vec::new();
        for binding in &document.bindings {
            let role = role_index[&binding.role];
            if let Some(source) = &binding.from {
                let bound = by_source.entry(source.clone()).or_default();
                for subject in &binding.subjects {
                    bound.by_subject.entry(subject.clone()).or_default().push(role);
                }
                for group in &binding.groups {
                    bound.by_group.entry(group.clone()).or_default().push(role);
                }
            }
            for account in &binding.service_accounts {
                by_service_account.entry(account.clone()).or_default().push(role);
            }
            if binding.anonymous {
                anonymous_roles.push(role);
            }
        }
        for list in by_source
            .values_mut()
            .flat_map(|b| b.by_subject.values_mut().chain(b.by_group.values_mut()))
            .chain(by_service_account.values_mut())
            .chain(std::iter::once(&mut anonymous_roles))
        {
            list.sort_unstable();
            list.dedup();
        }

        let mut collection_index: HashMap<String, Vec<usize>> = document
            .collections
            .iter()
            .map(|c| (c.name.clone(), Vec::new()))
            .collect();
        for (t, tool) in document.tools.iter().enumerate() {
            if tool.action.reveals_content() {
                collection_index.get_mut(&tool.collection).expect("checked").push(t);
            }
        }

        let arguments: Vec<Option<ArgumentRules>> = document
            .rules
            .iter()
            .map(|rule| (!rule.arguments.is_empty()).then(|| ArgumentRules::compile(&rule.arguments).expect("checked")))
            .collect();
        let mut claim_names: Vec<String> = arguments
            .iter()
            .flatten()
            .flat_map(ArgumentRules::claim_names)
            .map(str::to_owned)
            .collect();
        claim_names.sort();
        claim_names.dedup();

        let hash = document.hash();
        Ok(Self {
            document,
            hash,
            tools,
            tool_index,
            patterns,
            scopes,
            scope_index,
            roles,
            role_index,
            by_source,
            by_service_account,
            anonymous_roles,
            collection_index,
            constrains_arguments: arguments.iter().any(Option::is_some),
            arguments,
            claim_names,
            hierarchy,
            implied,
            words,
        })
    }

    /// Which rule governs `name`, whether or not the document defines a tool of that name.
    pub(crate) fn resolve(&self, kind: RuleKind, name: &str) -> Resolution {
        resolve(&self.document.rules, &self.patterns, kind, name)
    }

    /// `rules` (alternatives; none: no rule) prepared over this policy's interned scopes.
    pub(crate) fn prepare(&self, rules: &[usize]) -> PreparedTool {
        prepare(&self.document, &self.scope_index, self.words, rules)
    }

    /// The token claims argument rules name (`{claims.NAME}`), sorted: what a server reads from a
    /// verified token into [`Identity::claims`].
    pub fn claim_names(&self) -> &[String] {
        &self.claim_names
    }

    /// The normalized document.
    pub fn document(&self) -> &PolicyDocument {
        &self.document
    }

    /// `sha256:<hex>` of the normalized document.
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// Every tool of the server, sorted by name.
    pub fn tools(&self) -> &[ToolDefinition] {
        &self.document.tools
    }

    /// Resolves what a caller holds. Do this once per request, then ask the [`Access`].
    ///
    /// ```
    /// use palisade_crds::{Effect, Identity, IdentitySource, Policy, PolicyDocument, Reason};
    ///
    /// let document = PolicyDocument::from_yaml(
    ///     r#"
    /// apiVersion: palisade.dev/v1alpha1
    /// kind: PolicyDocument
    /// metadata: {}
    /// authentication:
    ///   resource: "http://docs.team-a.svc.cluster.local/mcp"
    ///   allowAnonymous: true
    ///   apiKeysFile: /etc/palisade/secrets/keys/keys.yaml
    ///   issuers:
    ///     - {issuer: "https://idp.example.com", audiences: [docs], algorithms: [RS256], keys: {oidcDiscovery: true}}
    /// collections: [{name: handbook}]
    /// tools: [{name: read_handbook, collection: handbook, action: readAll}]
    /// rules: [{match: read_handbook, requiredScopes: ["handbook:read"]}]
    /// roles: [{name: reader, scopes: ["handbook:*"]}]
    /// bindings: [{role: reader, groups: [staff], from: {issuer: "https://idp.example.com"}}]
    /// "#,
    /// )
    /// .unwrap();
    /// let policy = Policy::new(document).unwrap();
    ///
    /// let idp = IdentitySource::Issuer("https://idp.example.com".into());
    /// let staff = Identity { source: Some(idp), groups: vec!["staff".into()], ..Identity::default() };
    /// let access = policy.access(&staff);
    /// assert_eq!(access.check_tool("read_handbook").effect, Effect::Allow);
    /// assert_eq!(access.visible_tools().count(), 1);
    ///
    /// // The same group from another source (here an API key) is another group.
    /// let key = Identity { source: Some(IdentitySource::ApiKeys), ..staff.clone() };
    /// assert_eq!(policy.access(&key).check_tool("read_handbook").effect, Effect::Deny);
    ///
    /// // Listing and calling agree: what a caller may not call, it does not see.
    /// let access = policy.access(&Identity::anonymous());
    /// let decision = access.check_tool("read_handbook");
    /// assert_eq!(decision.effect, Effect::Deny);
    /// assert_eq!(decision.reason, Reason::MissingScopes);
    /// assert_eq!(access.missing_scopes("read_handbook"), ["handbook:read"]);
    /// assert_eq!(access.visible_tools().count(), 0);
    /// ```
    pub fn access(&self, identity: &Identity) -> Access<'_> {
        let mut covered = ScopeSet::empty(self.words);
        let mut token_broader: Vec<u32> = Vec::new();
        let mut roles: Vec<u32> = Vec::new();
        if identity.anonymous {
            roles.extend_from_slice(&self.anonymous_roles);
        } else {
            for scope in &identity.scopes {
                if let Some(&id) = self.scope_index.get(scope) {
                    covered.insert(id as usize);
                }
            }
            if !self.hierarchy.is_empty() {
                token_broader.extend(
                    identity
                        .scopes
                        .iter()
                        .filter_map(|s| self.hierarchy.position(s))
                        .map(|b| b as u32),
                );
            }
            roles.extend(identity.roles.iter().filter_map(|r| self.role_index.get(r).copied()));
            // Subjects and groups match only the bindings of the caller's own source.
            if let Some(bound) = identity.source.as_ref().and_then(|s| self.by_source.get(s)) {
                if let Some(subject) = &identity.subject {
                    roles.extend(bound.by_subject.get(subject).into_iter().flatten());
                }
                for group in &identity.groups {
                    roles.extend(bound.by_group.get(group).into_iter().flatten());
                }
            }
            if let Some(account) = &identity.service_account {
                roles.extend(self.by_service_account.get(account).into_iter().flatten());
            }
            roles.sort_unstable();
            roles.dedup();
        }
        let token = covered.clone();
        for &b in &token_broader {
            covered.union_with(&self.implied[b as usize]);
        }
        for &role in &roles {
            covered.union_with(&self.roles[role as usize].covers);
        }
        let caller = if self.constrains_arguments && !identity.anonymous {
            CallerValues {
                subject: identity.subject.clone(),
                groups: identity.groups.clone(),
                service_account: identity.service_account.clone(),
                claims: identity
                    .claims
                    .iter()
                    .filter(|(name, _)| self.claim_names.binary_search(name).is_ok())
                    .cloned()
                    .collect(),
            }
        } else {
            CallerValues::default()
        };
        Access {
            policy: self,
            covered,
            token,
            token_broader,
            roles,
            caller,
        }
    }

    /// Tools that at least one role (or no scope at all) can reach, and those none can.
    pub fn reachability(&self) -> (Vec<&str>, Vec<&str>) {
        let mut all_roles = ScopeSet::empty(self.words);
        for role in &self.roles {
            all_roles.union_with(&role.covers);
        }
        let (mut reachable, mut unreachable) = (Vec::new(), Vec::new());
        for (definition, tool) in self.document.tools.iter().zip(&self.tools) {
            if self.reachable(tool) {
                reachable.push(definition.name.as_str());
            } else {
                unreachable.push(definition.name.as_str());
            }
        }
        (reachable, unreachable)
    }

    /// A tool is reachable when one of its rules needs no scope at all or one role alone covers
    /// it.
    pub(crate) fn reachable(&self, tool: &PreparedTool) -> bool {
        tool.alternatives
            .iter()
            .any(|alt| alt.required_ids.is_empty() || self.roles.iter().any(|r| alt.required.is_subset_of(&r.covers)))
    }
}

/// Allowed, or what a refusal means in `mode`.
pub(crate) fn effect(granted: bool, mode: PolicyMode) -> Effect {
    match (granted, mode) {
        (true, _) => Effect::Allow,
        (false, PolicyMode::Enforce) => Effect::Deny,
        (false, PolicyMode::Audit) => Effect::AuditDeny,
    }
}

/// How one tool's advertised input schema is narrowed for one caller (see
/// [`crate::arguments::narrow`]).
#[derive(Debug)]
pub struct InputSchemaNarrowing<'a> {
    rules: Vec<&'a ArgumentRules>,
    caller: Caller<'a>,
}

impl InputSchemaNarrowing<'_> {
    /// `schema` (the tool's input schema as defined) narrowed, and the mark for the tool's
    /// `_meta` ([`crate::arguments::NARROWED_META_KEY`]).
    pub fn apply(&self, schema: &Value) -> (Value, Value) {
        crate::arguments::narrow(schema, &self.rules, &self.caller)
    }
}

/// The caller's values that caller-dependent argument constraints may name.
#[derive(Debug, Clone, Default)]
struct CallerValues {
    subject: Option<String>,
    groups: Vec<String>,
    service_account: Option<String>,
    claims: Vec<(String, Vec<String>)>,
}

/// What one caller holds under one policy.
#[derive(Debug, Clone)]
pub struct Access<'p> {
    policy: &'p Policy,
    covered: ScopeSet,
    /// Required scopes the credential carries as such.
    token: ScopeSet,
    /// Broader scopes (positions in the hierarchy) the credential carries.
    token_broader: Vec<u32>,
    roles: Vec<u32>,
    caller: CallerValues,
}

impl<'p> Access<'p> {
    /// Names of the roles the caller holds, sorted.
    pub fn roles(&self) -> impl Iterator<Item = &'p str> + '_ {
        self.roles
            .iter()
            .map(|&r| self.policy.document.roles[r as usize].name.as_str())
    }

    fn decide(&self, t: usize, call: Option<Option<&Map<String, Value>>>) -> Decision<'p> {
        Decision {
            tool: Some(&self.policy.document.tools[t]),
            ..self.decide_prepared(&self.policy.tools[t], call)
        }
    }

    pub(crate) fn caller(&self) -> Caller<'_> {
        Caller {
            subject: self.caller.subject.as_deref(),
            groups: &self.caller.groups,
            service_account: self.caller.service_account.as_deref(),
            claims: &self.caller.claims,
        }
    }

    /// Whether alternative `alt` accepts a call with `call`'s arguments (a list: `None`, whether
    /// some arguments would do for this caller).
    fn accepts(
        &self,
        alt: &Alternative,
        call: Option<Option<&Map<String, Value>>>,
    ) -> Result<(), Option<ArgumentFailure<'p>>> {
        let Some(rules) = &self.policy.arguments[alt.rule] else {
            return Ok(());
        };
        let caller = self.caller();
        match call {
            None if rules.satisfiable(&caller) => Ok(()),
            None => Err(None),
            Some(arguments) => rules.check(arguments, &caller).map_err(Some),
        }
    }

    /// The decision on a prepared tool (without its definition): the one function every tool,
    /// listed or called, defined by the document or not, is decided by. `call` holds a call's
    /// arguments; `None` decides a list (allowed iff some arguments would be).
    ///
    /// Allowed iff some alternative's scopes are covered and it accepts the arguments. Refused
    /// with [`Reason::ArgumentDenied`] when a held alternative refuses them (naming the first
    /// failing argument), else with [`Reason::MissingScopes`]; either way `rule` is, when there is
    /// one, the alternative that would accept them with the fewest scopes more.
    pub(crate) fn decide_prepared(
        &self,
        tool: &PreparedTool,
        call: Option<Option<&Map<String, Value>>>,
    ) -> Decision<'p> {
        let rules = &self.policy.document.rules;
        // The common case, one rule that constrains no argument: its scopes decide.
        if let [only] = &*tool.alternatives
            && self.policy.arguments[only.rule].is_none()
        {
            let rule = Some(&rules[only.rule]);
            return if only.required.is_subset_of(&self.covered) {
                Decision {
                    effect: Effect::Allow,
                    rule,
                    ..Decision::refused(Reason::Granted, tool.mode)
                }
            } else {
                Decision {
                    rule,
                    ..Decision::refused(Reason::MissingScopes, tool.mode)
                }
            };
        }
        let Some(first) = tool.alternatives.first() else {
            return Decision::refused(Reason::NoMatchingRule, tool.mode);
        };
        let mut refused: Option<Option<ArgumentFailure<'p>>> = None;
        for alt in tool
            .alternatives
            .iter()
            .filter(|alt| alt.required.is_subset_of(&self.covered))
        {
            match self.accepts(alt, call) {
                Ok(()) => {
                    return Decision {
                        effect: Effect::Allow,
                        reason: Reason::Granted,
                        rule: Some(&rules[alt.rule]),
                        ..Decision::refused(Reason::Granted, tool.mode)
                    };
                }
                Err(failure) => {
                    refused.get_or_insert(failure);
                }
            }
        }
        let step_up = tool
            .alternatives
            .iter()
            .filter(|alt| !alt.required.is_subset_of(&self.covered) && self.accepts(alt, call).is_ok())
            .min_by_key(|alt| {
                alt.required_ids
                    .iter()
                    .filter(|&&id| !self.covered.contains(id as usize))
                    .count()
            });
        let rule = Some(&rules[step_up.unwrap_or(first).rule]);
        match refused {
            Some(argument) => Decision {
                rule,
                argument,
                step_up: step_up.map(|alt| &rules[alt.rule]),
                ..Decision::refused(Reason::ArgumentDenied, tool.mode)
            },
            None => Decision {
                rule,
                ..Decision::refused(Reason::MissingScopes, tool.mode)
            },
        }
    }

    /// How a list narrows `tool`'s input schema for this caller: by the argument rules of the
    /// alternatives whose scopes it holds and whose constraints it can satisfy. None when the
    /// schema stays as defined: no such alternative, one that constrains nothing, or a tool in
    /// `Audit` mode (whose calls are allowed whatever their arguments).
    pub(crate) fn narrowing_prepared(&self, tool: &PreparedTool) -> Option<InputSchemaNarrowing<'_>> {
        if tool.mode == PolicyMode::Audit || !self.policy.constrains_arguments {
            return None;
        }
        let caller = self.caller();
        let mut narrowing = Vec::new();
        for alt in tool
            .alternatives
            .iter()
            .filter(|alt| alt.required.is_subset_of(&self.covered))
        {
            match &self.policy.arguments[alt.rule] {
                None => return None,
                Some(rules) if rules.satisfiable(&caller) => narrowing.push(rules),
                Some(_) => {}
            }
        }
        (!narrowing.is_empty()).then_some(InputSchemaNarrowing {
            rules: narrowing,
            caller,
        })
    }

    /// How a list narrows the input schema of tool `name` for this caller; None when the schema
    /// stays as defined. Asked before the schema is built or parsed.
    pub fn input_schema_narrowing(&self, name: &str) -> Option<InputSchemaNarrowing<'_>> {
        self.narrowing_prepared(&self.policy.tools[*self.policy.tool_index.get(name)?])
    }

    /// `schema`, the input schema of tool `name` (as the document defines it), narrowed to the
    /// arguments this caller's rules accept, with the mark for the tool's `_meta`; None when
    /// nothing narrows it.
    pub fn narrow_input_schema(&self, name: &str, schema: &Value) -> Option<(Value, Value)> {
        self.input_schema_narrowing(name)
            .map(|narrowing| narrowing.apply(schema))
    }

    /// Whether a list shows prepared `tool`: `decide_prepared(tool, None).effect.permits()`,
    /// without building the decision (a list decides every tool).
    pub(crate) fn lists(&self, tool: &PreparedTool) -> bool {
        tool.mode == PolicyMode::Audit
            || tool
                .alternatives
                .iter()
                .any(|alt| alt.required.is_subset_of(&self.covered) && self.accepts(alt, None).is_ok())
    }

    /// The policy the caller's access is under.
    pub(crate) fn policy(&self) -> &'p Policy {
        self.policy
    }

    /// May the caller call tool `name` with some arguments (the decision of a list)? Unknown
    /// tools are denied. A call is decided with its arguments by [`Access::check_call`].
    pub fn check_tool(&self, name: &str) -> Decision<'p> {
        match self.policy.tool_index.get(name) {
            Some(&t) => self.decide(t, None),
            None => Decision::refused(Reason::UnknownTool, PolicyMode::Enforce),
        }
    }

    /// May the caller call tool `name` with `arguments` (none: no arguments)? Allowed only when
    /// [`Access::check_tool`] allows and a rule the caller holds accepts the arguments.
    pub fn check_call(&self, name: &str, arguments: Option<&Map<String, Value>>) -> Decision<'p> {
        match self.policy.tool_index.get(name) {
            Some(&t) => self.decide(t, Some(arguments)),
            None => Decision::refused(Reason::UnknownTool, PolicyMode::Enforce),
        }
    }

    /// The tools the caller sees: exactly those [`Access::check_tool`] permits, in name order.
    pub fn visible_tools(&self) -> impl Iterator<Item = &'p ToolDefinition> + '_ {
        self.policy
            .tools
            .iter()
            .zip(&self.policy.document.tools)
            .filter(|(tool, _)| self.lists(tool))
            .map(|(_, definition)| definition)
    }

    /// May the caller read the documents of collection `name` as resources? Decided by the tools
    /// that return the collection's documents whole: the first that allows, else one that would
    /// allow in audit mode, else the denial of the first.
    pub fn check_collection(&self, name: &str) -> Decision<'p> {
        self.collection_decision(name, None)
    }

    /// May the caller read document `document` of collection `name` as a resource? As
    /// [`Access::check_collection`], with each tool decided as a call for that document: a
    /// `get` tool with the argument `name` set to the document, a `readAll` tool without
    /// arguments; so argument constraints on `get` govern `resources/read` too.
    pub fn check_document(&self, name: &str, document: &str) -> Decision<'p> {
        self.collection_decision(name, Some(document))
    }

    fn collection_decision(&self, name: &str, document: Option<&str>) -> Decision<'p> {
        let Some(tools) = self.policy.collection_index.get(name) else {
            return Decision::refused(Reason::UnknownCollection, PolicyMode::Enforce);
        };
        let get_arguments = document.map(|d| Map::from_iter([("name".to_owned(), Value::String(d.to_owned()))]));
        let decisions = tools.iter().map(|&t| {
            let call = document.map(|_| match self.policy.document.tools[t].action {
                crate::mcp_server::ToolAction::Get => get_arguments.as_ref(),
                _ => None,
            });
            self.decide(t, call)
        });
        let mut fallback: Option<Decision<'p>> = None;
        for decision in decisions {
            match decision.effect {
                Effect::Allow => return decision,
                Effect::AuditDeny => {
                    if fallback.is_none_or(|f| f.effect == Effect::Deny) {
                        fallback = Some(decision);
                    }
                }
                Effect::Deny => {
                    fallback.get_or_insert(decision);
                }
            }
        }
        fallback.unwrap_or(Decision::refused(Reason::NoMatchingRule, self.policy.document.mode))
    }

    /// Collections whose documents the caller may read as resources.
    pub fn visible_collections(&self) -> impl Iterator<Item = &'p str> + '_ {
        self.policy
            .document
            .collections
            .iter()
            .filter(|c| self.check_collection(&c.name).effect.permits())
            .map(|c| c.name.as_str())
    }

    /// The scopes tool `name` requires that the caller lacks (for `WWW-Authenticate: ... scope=`):
    /// those of the rule [`Access::check_tool`] names.
    pub fn missing_scopes(&self, name: &str) -> Vec<&'p str> {
        self.explain_tool(name).missing
    }

    /// A decision about tool `name` (as listed) with what granted each required scope and what
    /// is missing.
    pub fn explain_tool(&self, name: &str) -> Explanation<'p> {
        let tool = self.policy.tool_index.get(name).map(|&t| &self.policy.tools[t]);
        self.explain_prepared(self.check_tool(name), tool)
    }

    /// A decision about a call of tool `name` with `arguments`, with what granted each scope of
    /// the deciding rule and what is missing.
    pub fn explain_call(&self, name: &str, arguments: Option<&Map<String, Value>>) -> Explanation<'p> {
        let tool = self.policy.tool_index.get(name).map(|&t| &self.policy.tools[t]);
        self.explain_prepared(self.check_call(name, arguments), tool)
    }

    /// What grants required scope `id`: the token, a role, or a broader scope either holds (in
    /// that order of preference).
    fn grant_of(&self, id: usize) -> Option<Grant<'p>> {
        let policy = self.policy;
        let broader = |b: u32| policy.hierarchy.scope(b as usize);
        let role_name = |r: u32| policy.document.roles[r as usize].name.as_str();
        if self.token.contains(id) {
            return Some(Grant::Token);
        }
        if let Some(&r) = self
            .roles
            .iter()
            .find(|&&r| policy.roles[r as usize].direct.contains(id))
        {
            return Some(Grant::Role(role_name(r)));
        }
        if let Some(&b) = self
            .token_broader
            .iter()
            .find(|&&b| policy.implied[b as usize].contains(id))
        {
            return Some(Grant::ImpliedByToken(broader(b)));
        }
        self.roles.iter().find_map(|&r| {
            policy.roles[r as usize]
                .broader
                .iter()
                .find(|&&b| policy.implied[b as usize].contains(id))
                .map(|&b| Grant::ImpliedByRole {
                    role: role_name(r),
                    scope: broader(b),
                })
        })
    }

    /// `decision` with what granted each scope its rule requires, and what is missing.
    pub(crate) fn explain_prepared(&self, decision: Decision<'p>, tool: Option<&PreparedTool>) -> Explanation<'p> {
        let mut granted = Vec::new();
        let mut missing = Vec::new();
        let rules = &self.policy.document.rules;
        let alternative = tool.and_then(|tool| {
            tool.alternatives
                .iter()
                .find(|alt| decision.rule.is_some_and(|rule| std::ptr::eq(rule, &rules[alt.rule])))
                .or(tool.alternatives.first())
        });
        for &id in alternative.map_or(&[][..], |alt| &alt.required_ids[..]) {
            let scope = self.policy.scopes[id as usize].as_str();
            let id = id as usize;
            match self.grant_of(id) {
                Some(grant) => granted.push((scope, grant)),
                None => missing.push(scope),
            }
        }
        Explanation {
            decision,
            granted,
            missing,
        }
    }
}

impl PolicyDocument {
    /// The canonical form: every list sorted and deduplicated where order carries no meaning.
    pub fn normalized(mut self) -> Self {
        fn sort_dedup(list: &mut Vec<String>) {
            list.sort();
            list.dedup();
        }
        self.metadata.policies.sort();
        self.metadata.policies.dedup();
        let auth = &mut self.authentication;
        auth.issuers.sort_by(|a, b| a.issuer.cmp(&b.issuer));
        for issuer in &mut auth.issuers {
            sort_dedup(&mut issuer.audiences);
            issuer.algorithms.sort();
            issuer.algorithms.dedup();
        }
        self.collections.sort_by(|a, b| a.name.cmp(&b.name));
        self.tools.sort_by(|a, b| a.name.cmp(&b.name));
        for rule in &mut self.rules {
            sort_dedup(&mut rule.required_scopes);
            sort_dedup(&mut rule.sources);
        }
        // Rules of one `match` are alternatives, ordered by what they state (the check refuses a
        // rule stated twice; the compiler merges their sources).
        self.rules
            .sort_by_cached_key(|r| (r.kind, r.match_.clone(), r.content_key()));
        for role in &mut self.roles {
            sort_dedup(&mut role.scopes);
            sort_dedup(&mut role.sources);
        }
        self.roles.sort_by(|a, b| a.name.cmp(&b.name));
        // Each scope once (the check refuses a scope stated twice; the compiler merges them).
        self.scope_implications.sort_by(|a, b| a.scope.cmp(&b.scope));
        for implication in &mut self.scope_implications {
            sort_dedup(&mut implication.implies);
            sort_dedup(&mut implication.sources);
        }
        // An unqualified binding means the one source of the document (checked before).
        let sources = crate::identity_source::configured_sources(&self.authentication);
        for binding in &mut self.bindings {
            if binding.from.is_none()
                && (!binding.subjects.is_empty() || !binding.groups.is_empty())
                && let [only] = sources.as_slice()
            {
                binding.from = Some(only.clone());
            }
            sort_dedup(&mut binding.subjects);
            sort_dedup(&mut binding.groups);
            sort_dedup(&mut binding.service_accounts);
        }
        self.bindings.sort();
        self.bindings.dedup();
        self
    }
}
