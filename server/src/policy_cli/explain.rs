//! `policy explain`: whether a caller may call a tool, the rule that decides, what granted each
//! required scope and what is missing, from the evaluator every request goes through.

use std::fmt::Write as _;
use std::path::PathBuf;

use palisade_crds::document::RuleKind;
use palisade_crds::evaluator::Effect;
use palisade_crds::identity_source::{check_known, configured_sources, resolve};
use palisade_crds::{Identity, IdentitySource, Policy, PolicyDocument};
use serde_json::{Map, Value};

use super::{ManifestArgs, Outcome, PolicyCliError, read_manifests, validated_server};

/// Where `explain` finds the policy.
#[derive(Debug, Clone)]
pub enum PolicySource {
    /// A compiled PolicyDocument (`--policy-file`).
    PolicyFile(PathBuf),
    /// McpServer and McpAccessPolicy manifests, validated and compiled as `policy compile` does.
    Manifests(Vec<PathBuf>, ManifestArgs),
}

/// Explains the decision about `target` (a tool, or in proxy mode a prompt or resource) for a
/// caller: `identity`, or the (unverified) claims of `token`; with `arguments`, about a call of
/// the tool with them. The explanation is the output; a denied call makes the exit status 1.
pub fn explain(
    source: &PolicySource,
    target: (RuleKind, &str),
    arguments: Option<&Map<String, Value>>,
    token: Option<&str>,
    identity: Identity,
) -> Outcome {
    let mut outcome = Outcome::default();
    let explained = match source {
        PolicySource::PolicyFile(path) => {
            policy_file(path).and_then(|policy| explain_with(&policy, target, arguments, token, identity))
        }
        PolicySource::Manifests(files, args) => read_manifests(files, &args.namespace).and_then(|manifests| {
            let validated = validated_server(&manifests, args, &mut outcome.warnings)?;
            explain_with(&validated.compiled().policy, target, arguments, token, identity)
        }),
    };
    match explained {
        Ok((report, allowed)) => {
            outcome.output = report;
            outcome.denied = !allowed;
        }
        Err(error) => outcome.errors.push(error),
    }
    outcome
}

fn policy_file(path: &PathBuf) -> Result<Policy, PolicyCliError> {
    let text = std::fs::read_to_string(path).map_err(|source| PolicyCliError::Read {
        path: path.clone(),
        source,
    })?;
    let document = PolicyDocument::from_yaml(&text).map_err(|source| PolicyCliError::PolicyFile {
        path: path.clone(),
        source,
    })?;
    Policy::new(document).map_err(|problems| PolicyCliError::InvalidPolicyFile {
        path: path.clone(),
        problems,
    })
}

/// The identity a JWT's (unverified) claims describe, with the claim names of its issuer.
fn identity_from_token(policy: &Policy, token: &str) -> Result<Identity, PolicyCliError> {
    let claims: Map<String, Value> =
        jsonwebtoken::dangerous::insecure_decode_claims(token).map_err(|e| PolicyCliError::Token(e.to_string()))?;
    let issuer = claims.get("iss").and_then(Value::as_str).unwrap_or_default();
    let names = policy
        .document()
        .authentication
        .issuers
        .iter()
        .find(|i| i.issuer == issuer)
        .map(|i| i.claims.clone())
        .unwrap_or_default();
    crate::auth::claims::identity(
        &claims,
        &names,
        IdentitySource::Issuer(issuer.to_owned()),
        policy.claim_names(),
    )
    .map_err(|e| PolicyCliError::Token(e.to_string()))
}

/// `identity` with its source checked against the policy's, or (for a caller with a subject or
/// groups that names none) the policy's only source, as for an unqualified test case.
fn with_source(policy: &Policy, mut identity: Identity) -> Result<Identity, PolicyCliError> {
    let auth = &policy.document().authentication;
    match &identity.source {
        Some(source) => check_known(source, auth).map_err(PolicyCliError::CallerSource)?,
        None if identity.subject.is_some() || !identity.groups.is_empty() => {
            let source = resolve(
                &configured_sources(auth),
                "set --issuer <one of the server's issuers>, or --source api-keys (or client-certificates)",
            )
            .map_err(PolicyCliError::CallerSource)?;
            identity.source = Some(source);
        }
        None => {}
    }
    Ok(identity)
}

/// The explanation, and whether the call is allowed.
fn explain_with(
    policy: &Policy,
    (kind, name): (RuleKind, &str),
    arguments: Option<&Map<String, Value>>,
    token: Option<&str>,
    identity: Identity,
) -> Result<(String, bool), PolicyCliError> {
    let identity = match token {
        Some(token) => identity_from_token(policy, token)?,
        None => with_source(policy, identity)?,
    };
    let access = policy.access(&identity);
    // A policy that defines no tools of its own is a proxy's: its rules decide on the upstream's
    // tool names, which the policy does not know; `tool` is decided as one of them.
    let proxied = policy.tools().is_empty() && policy.document().collections.is_empty();
    if !proxied && !kind.is_tool() {
        return Err(PolicyCliError::NotAProxy);
    }
    let explanation = match (proxied, arguments) {
        (true, None) => access.explain_in(&policy.catalog_of(kind, [name]), name),
        (true, Some(arguments)) => access.explain_call_in(&policy.catalog_of(kind, [name]), name, Some(arguments)),
        (false, None) => access.explain_tool(name),
        (false, Some(arguments)) => access.explain_call(name, Some(arguments)),
    };
    let decision = explanation.decision;
    let label = match kind {
        RuleKind::Tool => name.to_owned(),
        other => format!("{} {name}", other.as_str()),
    };
    let mut report = format!("{label}: {} ({})\n", decision.effect.as_str(), decision.reason.code());
    if proxied {
        let _ = writeln!(
            report,
            "note: decided as a {} of the upstream (the policy defines no tools of its own)",
            kind.as_str()
        );
    }
    if token.is_some() {
        report.push_str("note: the token's signature was not verified\n");
    }
    let roles: Vec<&str> = access.roles().collect();
    let roles = if roles.is_empty() {
        "none".to_owned()
    } else {
        roles.join(", ")
    };
    if let Some(source) = &identity.source {
        let _ = writeln!(report, "identity source: {source}");
    }
    let _ = writeln!(report, "roles held: {roles}");
    if let Some(rule) = decision.rule {
        // The McpAccessPolicies the rule came from (none in a hand-written document).
        let sources = match rule.sources.as_slice() {
            [] => String::new(),
            sources => format!(" ({})", sources.join(", ")),
        };
        let _ = writeln!(
            report,
            "rule: {:?} requires [{}]{sources}",
            rule.match_,
            rule.required_scopes.join(", "),
        );
    }
    for (scope, grant) in &explanation.granted {
        let _ = writeln!(report, "granted: {scope} (from {grant})");
    }
    if !explanation.missing.is_empty() {
        let _ = writeln!(report, "missing: {}", explanation.missing.join(", "));
    }
    match (arguments, decision.argument) {
        (Some(_), Some(failure)) => {
            let _ = writeln!(
                report,
                "arguments: {failure} (constraint {})",
                failure.violation.constraint()
            );
        }
        (Some(_), None) if decision.effect == Effect::Allow => {
            let _ = writeln!(report, "arguments: accepted by the rule");
        }
        _ => {}
    }
    if let Some(rule) = decision.step_up {
        let _ = writeln!(
            report,
            "step-up: rule {:?} would allow these arguments with [{}]",
            rule.match_,
            rule.required_scopes.join(", ")
        );
    }
    Ok((report, decision.effect == Effect::Allow))
}
