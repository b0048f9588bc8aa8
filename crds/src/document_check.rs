//! Structural checks of a [`PolicyDocument`], reported with document paths (`roles[2].scopes[0]`).
//! [`crate::evaluator::Policy::new`] runs them before preparing a document, so a hand-written
//! document gets the same scrutiny as a compiled one.

use std::collections::{HashMap, HashSet};

use crate::document::{API_VERSION, Binding, KIND, KeySource, PolicyDocument};
use crate::identity_source::{check_known, configured_sources, resolve};
use crate::problem::Problems;
use crate::scope::{ScopeGrant, check_literal_scope};
use crate::tool_match::{ToolPattern, check_tool_name};

/// Records every structural problem of `document` in `problems`.
pub fn check(document: &PolicyDocument, problems: &mut Problems) {
    if document.api_version != API_VERSION {
        problems.push(
            None,
            "apiVersion",
            format!("expected {API_VERSION:?}, found {:?}", document.api_version),
        );
    }
    if document.kind != KIND {
        problems.push(None, "kind", format!("expected {KIND:?}, found {:?}", document.kind));
    }
    check_authentication(document, problems);

    let mut collections = HashSet::new();
    for (i, collection) in document.collections.iter().enumerate() {
        if !is_dns_label(&collection.name) {
            problems.push(
                None,
                format!("collections[{i}].name"),
                format!(
                    "{:?} is not a DNS label (lower-case letters, digits and '-', at most 63)",
                    collection.name
                ),
            );
        }
        if !collections.insert(collection.name.as_str()) {
            problems.push(
                None,
                format!("collections[{i}].name"),
                format!("duplicate collection {:?}", collection.name),
            );
        }
    }

    if let Some(upstream) = &document.upstream {
        if !document.tools.is_empty() || !document.collections.is_empty() {
            problems.push(
                None,
                "upstream",
                "a document with upstream governs an upstream's tools: it defines no tools or collections",
            );
        }
        let pins = upstream.tools.iter().map(|p| (p.name.as_str(), p.sha256.as_deref()));
        for (i, field, message) in pin_problems(pins) {
            problems.push(None, format!("upstream.tools[{i}].{field}"), message);
        }
    }

    let mut tools = HashSet::new();
    for (i, tool) in document.tools.iter().enumerate() {
        if let Err(e) = check_tool_name(&tool.name) {
            problems.push(None, format!("tools[{i}].name"), e.to_string());
        }
        if !tools.insert(tool.name.as_str()) {
            problems.push(
                None,
                format!("tools[{i}].name"),
                format!("duplicate tool {:?}", tool.name),
            );
        }
        if !collections.contains(tool.collection.as_str()) {
            problems.push(
                None,
                format!("tools[{i}].collection"),
                format!(
                    "tool {:?} serves collection {:?}, which is not defined",
                    tool.name, tool.collection
                ),
            );
        }
    }

    let mut matches = HashSet::new();
    for (i, rule) in document.rules.iter().enumerate() {
        if let Err(e) = ToolPattern::parse_for(rule.kind, &rule.match_) {
            problems.push(None, format!("rules[{i}].match"), e);
        }
        if !rule.kind.is_tool() && !document.tools.is_empty() {
            problems.push(
                None,
                format!("rules[{i}].kind"),
                format!(
                    "{} rules are for a server in front of an upstream; a document server's resources follow its collections",
                    rule.kind.as_str()
                ),
            );
        }
        if !matches.insert((rule.kind, rule.match_.as_str(), rule.content_key())) {
            problems.push(
                None,
                format!("rules[{i}].match"),
                format!("duplicate rule for {:?}", rule.match_),
            );
        }
        if !rule.arguments.is_empty() && !rule.kind.is_tool() {
            problems.push(
                None,
                format!("rules[{i}].arguments"),
                "argument constraints are for tool rules",
            );
        }
        for (path, message) in crate::arguments::check(&rule.arguments, &format!("rules[{i}].arguments")) {
            problems.push(None, path, message);
        }
        for (j, scope) in rule.required_scopes.iter().enumerate() {
            if let Err(e) = check_literal_scope(scope) {
                problems.push(None, format!("rules[{i}].requiredScopes[{j}]"), e.to_string());
            }
        }
    }

    let mut roles = HashMap::new();
    for (i, role) in document.roles.iter().enumerate() {
        if let Some(message) = role_name_problem(&role.name) {
            problems.push(None, format!("roles[{i}].name"), message);
        }
        if roles.insert(role.name.as_str(), i).is_some() {
            problems.push(
                None,
                format!("roles[{i}].name"),
                format!("duplicate role {:?}", role.name),
            );
        }
        for (j, scope) in role.scopes.iter().enumerate() {
            if let Err(e) = ScopeGrant::parse(scope) {
                problems.push(None, format!("roles[{i}].scopes[{j}]"), e.to_string());
            }
        }
    }

    for (path, message) in crate::scope_hierarchy::check(&document.scope_implications, "scopeImplications") {
        problems.push(None, path, message);
    }

    for (i, binding) in document.bindings.iter().enumerate() {
        if !roles.contains_key(binding.role.as_str()) {
            problems.push(
                None,
                format!("bindings[{i}].role"),
                format!("role {:?} is not defined in roles", binding.role),
            );
        }
        if binding.subjects.is_empty()
            && binding.groups.is_empty()
            && binding.service_accounts.is_empty()
            && !binding.anonymous
        {
            problems.push(
                None,
                format!("bindings[{i}]"),
                "a binding must name at least one subject, group or service account, or set anonymous: true",
            );
        }
        check_binding_source(document, i, binding, problems);
        for (j, account) in binding.service_accounts.iter().enumerate() {
            let well_formed = account
                .split_once('/')
                .is_some_and(|(namespace, name)| is_dns_label(namespace) && is_dns_subdomain(name));
            if !well_formed {
                problems.push(
                    None,
                    format!("bindings[{i}].serviceAccounts[{j}]"),
                    format!("{account:?} is not of the form namespace/name"),
                );
            }
        }
    }
}

/// How to qualify a binding of a PolicyDocument.
pub const QUALIFY_DOCUMENT_BINDING: &str =
    "set from: {issuer: <one of authentication.issuers>}, {apiKeys: true} or {clientCertificates: true}";

fn check_binding_source(document: &PolicyDocument, i: usize, binding: &Binding, problems: &mut Problems) {
    let auth = &document.authentication;
    let names_identities = !binding.subjects.is_empty() || !binding.groups.is_empty();
    match &binding.from {
        Some(_) if !names_identities => problems.push(
            None,
            format!("bindings[{i}].from"),
            "from qualifies subjects and groups, and this binding has none (service accounts and anonymous \
             callers need no source)",
        ),
        Some(source) => {
            if let Err(message) = check_known(source, auth) {
                problems.push(None, format!("bindings[{i}].from"), message);
            }
        }
        None if names_identities => {
            if let Err(message) = resolve(&configured_sources(auth), QUALIFY_DOCUMENT_BINDING) {
                problems.push(None, format!("bindings[{i}]"), message);
            }
        }
        None => {}
    }
}

fn check_authentication(document: &PolicyDocument, problems: &mut Problems) {
    let auth = &document.authentication;
    if !(auth.resource.starts_with("https://") || auth.resource.starts_with("http://")) || auth.resource.contains('#') {
        problems.push(
            None,
            "authentication.resource",
            "resource must be an absolute http(s) URI without a fragment (RFC 8707 section 2)",
        );
    }
    if auth.issuers.is_empty() && auth.api_keys_file.is_none() && !auth.allow_anonymous {
        problems.push(
            None,
            "authentication",
            "configure at least one issuer or an API-key table, or set allowAnonymous: true explicitly",
        );
    }
    let mut seen = HashSet::new();
    for (i, issuer) in auth.issuers.iter().enumerate() {
        let path = format!("authentication.issuers[{i}]");
        if issuer.issuer.is_empty() {
            problems.push(None, format!("{path}.issuer"), "issuer must not be empty");
        }
        if !seen.insert(issuer.issuer.as_str()) {
            problems.push(
                None,
                format!("{path}.issuer"),
                format!("duplicate issuer {:?}", issuer.issuer),
            );
        }
        if issuer.audiences.is_empty() {
            problems.push(None, format!("{path}.audiences"), "at least one audience is required");
        }
        if issuer.algorithms.is_empty() {
            problems.push(None, format!("{path}.algorithms"), "at least one algorithm is required");
        }
        let hmac = matches!(issuer.keys, KeySource::HmacKeyFile(_));
        if let Some(bad) = issuer.algorithms.iter().find(|a| a.is_hmac() != hmac) {
            let message = if hmac {
                format!("an HMAC issuer accepts only HS256, HS384 or HS512, not {bad:?}")
            } else {
                format!("a JWKS or OIDC issuer never accepts {bad:?} (its public keys would become HMAC secrets)")
            };
            problems.push(None, format!("{path}.algorithms"), message);
        }
        if let KeySource::JwksUri(uri) = &issuer.keys
            && !is_http_url(uri)
        {
            problems.push(
                None,
                format!("{path}.keys.jwksUri"),
                "jwksUri must be an absolute http(s) URL",
            );
        }
        if !issuer.allow_insecure_http {
            let url = match &issuer.keys {
                KeySource::JwksUri(uri) => Some(("keys.jwksUri", uri)),
                KeySource::OidcDiscovery => Some(("issuer", &issuer.issuer)),
                KeySource::HmacKeyFile(_) => None,
            };
            if let Some((field, url)) = url
                && url.starts_with("http://")
            {
                problems.push(None, format!("{path}.{field}"), INSECURE_KEYS_URL);
            }
        }
        if issuer.allow_insecure_http && matches!(issuer.keys, KeySource::HmacKeyFile(_)) {
            problems.push(
                None,
                format!("{path}.allowInsecureHttp"),
                "allowInsecureHttp applies to keys fetched by JWKS or OIDC discovery; an HMAC issuer fetches none",
            );
        }
        if matches!(issuer.keys, KeySource::OidcDiscovery) && !is_http_url(&issuer.issuer) {
            problems.push(
                None,
                format!("{path}.issuer"),
                "OIDC discovery needs the issuer to be an http(s) URL; set jwksUri or an HMAC key file instead",
            );
        }
        if hmac && issuer.claims.kubernetes_service_account {
            problems.push(
                None,
                format!("{path}.claims.kubernetesServiceAccount"),
                HMAC_SERVICE_ACCOUNTS,
            );
        }
    }
}

/// Why a plain-HTTP key URL is refused.
pub const INSECURE_KEYS_URL: &str = "signing keys are fetched over HTTPS only (anyone on the path could \
     inject keys over plain HTTP); use an https:// URL, or set allowInsecureHttp: true on a development issuer";

/// Why an HMAC issuer never asserts Kubernetes service accounts.
pub const HMAC_SERVICE_ACCOUNTS: &str = "an hmacKey issuer cannot be the cluster's service-account issuer: \
     Kubernetes signs service-account tokens with its own keys, published by JWKS or OIDC discovery";

/// Whether `s` is an RFC 1123 DNS label.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Whether `s` is an RFC 1123 DNS subdomain (Kubernetes object names).
pub fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// Whether `s` is an absolute `http://` or `https://` URL with a host and no white space.
pub fn is_http_url(s: &str) -> bool {
    let rest = s.strip_prefix("https://").or_else(|| s.strip_prefix("http://"));
    rest.is_some_and(|rest| {
        let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
        !host.is_empty() && !s.chars().any(|c| c.is_whitespace() || c.is_control())
    })
}

/// What is wrong with a role name, if anything: 1 to 128 characters, starting with a letter or
/// digit, then letters, digits, `-`, `_`, `.` or `:`.
pub fn role_name_problem(name: &str) -> Option<String> {
    let mut chars = name.chars();
    let well_formed = name.len() <= 128
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'));
    (!well_formed).then(|| {
        format!("{name:?} is not a role name: 1 to 128 letters, digits, '-', '_', '.' or ':', starting with a letter or digit")
    })
}

/// What is wrong with a list of tool pins (`(name, sha256)`, as `spec.upstream.tools` and the
/// document's `upstream.tools` hold them): `(index, field, message)` for a name no rule can
/// govern or listed twice, and a `sha256` that is not a pin. The compiler and the document check
/// report them at their own paths.
pub fn pin_problems<'a>(pins: impl Iterator<Item = (&'a str, Option<&'a str>)>) -> Vec<(usize, &'static str, String)> {
    let mut problems = Vec::new();
    let mut pinned = HashSet::new();
    for (i, (name, sha256)) in pins.enumerate() {
        if let Err(e) = check_tool_name(name) {
            problems.push((i, "name", e.to_string()));
        } else if !pinned.insert(name) {
            problems.push((i, "name", format!("tool {name:?} is listed twice")));
        }
        if let Some(sha256) = sha256.filter(|s| !crate::document::is_pin(s)) {
            problems.push((
                i,
                "sha256",
                format!("{sha256:?} is not sha256: followed by 64 lowercase hexadecimal digits"),
            ));
        }
    }
    problems
}
