//! `palisade-server policy check` and `policy explain`: the evaluator on the command line, for
//! policy authors and for CI of policy repositories.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use palisade_crds::compile::DEFAULT_CLUSTER_DOMAIN;
use palisade_crds::evaluator::{Effect, Grant};
use palisade_crds::{CompileOptions, Identity, McpAccessPolicy, McpServer, Policy, PolicyDocument, bound_policies};
use serde::Deserialize;
use serde_json::{Map, Value};

/// `policy` subcommands.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Check a PolicyDocument, or McpServer and McpAccessPolicy manifests (compiled per server,
    /// with every policy test run). Exit status 1 when anything is wrong.
    Check {
        /// YAML files (several documents per file allowed).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The cluster's DNS domain, as the operator's --cluster-domain: it names the default
        /// audience `http://<name>.<namespace>.svc.<domain>/mcp`.
        #[arg(long, env = "PALISADE_CLUSTER_DOMAIN", default_value = DEFAULT_CLUSTER_DOMAIN)]
        cluster_domain: String,
    },
    /// Compile McpServer and McpAccessPolicy manifests into the PolicyDocument a server pod mounts,
    /// and optionally lay out the documents of the server's ConfigMaps as the pod sees them: the
    /// way to run a server locally on the same manifests a cluster gets.
    Compile {
        /// YAML files with one McpServer, the McpAccessPolicies that target it, and the ConfigMaps
        /// of its documents.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Replace the in-pod secrets directory (/etc/palisade/secrets) in the key-file paths.
        #[arg(long)]
        secrets_dir: Option<PathBuf>,
        /// Write each collection's documents to DIR/<collection>/<name>.
        #[arg(long, value_name = "DIR")]
        documents_dir: Option<PathBuf>,
        /// The cluster's DNS domain, as the operator's --cluster-domain: it names the default
        /// audience `http://<name>.<namespace>.svc.<domain>/mcp`.
        #[arg(long, env = "PALISADE_CLUSTER_DOMAIN", default_value = DEFAULT_CLUSTER_DOMAIN)]
        cluster_domain: String,
    },
    /// Explain whether a caller may call a tool, and why.
    Explain {
        /// The PolicyDocument.
        #[arg(long, env = "PALISADE_POLICY_FILE", default_value = palisade_crds::document::DEFAULT_POLICY_PATH)]
        policy_file: PathBuf,
        /// The tool.
        #[arg(long)]
        tool: String,
        /// A JWT whose claims describe the caller (its signature is NOT verified here).
        #[arg(long, conflicts_with_all = ["scopes", "roles", "groups", "subject", "anonymous"])]
        token: Option<String>,
        /// Subject.
        #[arg(long)]
        subject: Option<String>,
        /// Token scopes.
        #[arg(long = "scope", num_args = 0..)]
        scopes: Vec<String>,
        /// Token roles.
        #[arg(long = "role", num_args = 0..)]
        roles: Vec<String>,
        /// Groups.
        #[arg(long = "group", num_args = 0..)]
        groups: Vec<String>,
        /// An anonymous caller.
        #[arg(long)]
        anonymous: bool,
    },
}

/// Runs a `policy` subcommand.
pub fn run(command: PolicyCommand) -> ExitCode {
    let outcome = match command {
        PolicyCommand::Check { files, cluster_domain } => check(&files, &cluster_domain),
        PolicyCommand::Compile {
            files,
            secrets_dir,
            documents_dir,
            cluster_domain,
        } => compile_for_cluster_domain(
            &files,
            secrets_dir.as_deref(),
            documents_dir.as_deref(),
            &cluster_domain,
        ),
        PolicyCommand::Explain {
            policy_file,
            tool,
            token,
            subject,
            scopes,
            roles,
            groups,
            anonymous,
        } => explain(
            &policy_file,
            &tool,
            token.as_deref(),
            Identity {
                subject,
                scopes,
                roles,
                groups,
                service_account: None,
                anonymous,
            },
        ),
    };
    match outcome {
        Ok(report) => {
            print!("{report}");
            ExitCode::SUCCESS
        }
        Err(report) => {
            print!("{report}");
            ExitCode::FAILURE
        }
    }
}

fn documents(files: &[PathBuf]) -> Result<Vec<(String, Value)>, String> {
    let mut out = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}\n", file.display()))?;
        for (i, document) in yaml_serde::Deserializer::from_str(&text).enumerate() {
            let value =
                Value::deserialize(document).map_err(|e| format!("{} document {}: {e}\n", file.display(), i + 1))?;
            if !value.is_null() {
                out.push((format!("{} document {}", file.display(), i + 1), value));
            }
        }
    }
    Ok(out)
}

/// Checks PolicyDocuments and CR manifests; returns the report, `Err` when anything failed.
///
/// Policies bind servers exactly as in the cluster ([`palisade_crds::bind`]): by `targetRefs` or
/// `targetSelector`, in their own namespace only. Refused references (another namespace, a
/// selector that cannot be evaluated) and policies that bind no server among the files are
/// reported as warnings, as `palisade-operator render` does.
pub fn check(files: &[PathBuf], cluster_domain: &str) -> Result<String, String> {
    let options = CompileOptions { cluster_domain };
    let mut report = String::new();
    let mut failed = false;
    let mut servers: Vec<McpServer> = Vec::new();
    let mut policies: Vec<McpAccessPolicy> = Vec::new();
    for (name, mut value) in documents(files)? {
        let kind = value["kind"].as_str().unwrap_or_default().to_owned();
        match kind.as_str() {
            "PolicyDocument" => {
                let text = serde_json::to_string(&value).expect("JSON value serializes");
                match PolicyDocument::from_yaml(&text)
                    .map_err(|e| e.to_string())
                    .and_then(|d| Policy::new(d).map_err(|p| p.to_string()))
                {
                    Ok(policy) => report.push_str(&format!(
                        "ok      {name}: PolicyDocument {} ({} tools)\n",
                        policy.hash(),
                        policy.tools().len()
                    )),
                    Err(e) => {
                        failed = true;
                        report.push_str(&format!("invalid {name}: {e}\n"));
                    }
                }
            }
            "McpServer" | "McpAccessPolicy" => {
                if value["metadata"]["namespace"].is_null() {
                    value["metadata"]["namespace"] = "default".into();
                }
                let parsed = if kind == "McpServer" {
                    serde_json::from_value(value).map(|s| servers.push(s))
                } else {
                    serde_json::from_value(value).map(|p| policies.push(p))
                };
                if let Err(e) = parsed {
                    failed = true;
                    report.push_str(&format!("invalid {name}: {kind}: {e}\n"));
                }
            }
            _ => {}
        }
    }
    let mut bound_anywhere = std::collections::BTreeSet::new();
    for server in &servers {
        let binding = bound_policies(server, &policies);
        for refused in &binding.refused {
            report.push_str(&format!("warning {refused}\n"));
        }
        let bound = binding.policies;
        bound_anywhere.extend(bound.iter().map(|p| palisade_crds::compile::object_key(*p)));
        let key = palisade_crds::compile::object_key(server);
        match palisade_crds::compile(server, &bound, &options) {
            Err(problems) => {
                failed = true;
                for problem in problems.iter() {
                    report.push_str(&format!("invalid {problem}\n"));
                }
            }
            Ok(compiled) => {
                report.push_str(&format!(
                    "ok      McpServer {key}: {} policies, {}\n",
                    bound.len(),
                    compiled.policy.hash()
                ));
                for warning in &compiled.warnings {
                    report.push_str(&format!("warning {warning}\n"));
                }
                for test in &compiled.tests {
                    if test.passed() {
                        report.push_str(&format!("pass    {}: {}\n", test.policy, test.name));
                    } else {
                        failed = true;
                        report.push_str(&format!(
                            "FAIL    {}: {}: {}\n",
                            test.policy,
                            test.name,
                            test.failures.join("; ")
                        ));
                    }
                }
            }
        }
    }
    for policy in &policies {
        let key = palisade_crds::compile::object_key(policy);
        if !bound_anywhere.contains(&key) {
            report.push_str(&format!(
                "warning McpAccessPolicy {key}: binds no McpServer among the files; its tests did not run\n"
            ));
        }
    }
    if failed { Err(report) } else { Ok(report) }
}

/// [`compile_for_cluster_domain`] for a cluster with the default DNS domain, `cluster.local`.
pub fn compile(
    files: &[PathBuf],
    secrets_dir: Option<&std::path::Path>,
    documents_dir: Option<&std::path::Path>,
) -> Result<String, String> {
    compile_for_cluster_domain(files, secrets_dir, documents_dir, DEFAULT_CLUSTER_DOMAIN)
}

/// Compiles the one McpServer in `files` with the policies that bind it (as in the cluster:
/// [`palisade_crds::bind`]), for a cluster whose DNS domain is `cluster_domain`; see
/// [`PolicyCommand::Compile`].
pub fn compile_for_cluster_domain(
    files: &[PathBuf],
    secrets_dir: Option<&std::path::Path>,
    documents_dir: Option<&std::path::Path>,
    cluster_domain: &str,
) -> Result<String, String> {
    let mut servers: Vec<McpServer> = Vec::new();
    let mut policies: Vec<McpAccessPolicy> = Vec::new();
    let mut config_maps: Vec<palisade_crds::k8s_openapi::api::core::v1::ConfigMap> = Vec::new();
    for (name, mut value) in documents(files)? {
        if value["metadata"]["namespace"].is_null() {
            value["metadata"]["namespace"] = "default".into();
        }
        let kind = value["kind"].as_str().unwrap_or_default().to_owned();
        let parsed = match kind.as_str() {
            "McpServer" => serde_json::from_value(value).map(|s| servers.push(s)),
            "McpAccessPolicy" => serde_json::from_value(value).map(|p| policies.push(p)),
            "ConfigMap" => serde_json::from_value(value).map(|c| config_maps.push(c)),
            _ => Ok(()),
        };
        parsed.map_err(|e| format!("{name}: {kind}: {e}\n"))?;
    }
    let [server] = servers.as_slice() else {
        return Err(format!("expected exactly one McpServer, found {}\n", servers.len()));
    };
    let bound = bound_policies(server, &policies).policies;
    let compiled =
        palisade_crds::compile(server, &bound, &CompileOptions { cluster_domain }).map_err(|p| format!("{p}\n"))?;
    if let Some(failed) = compiled.failed_tests().next() {
        return Err(format!(
            "policy test failed: {}: {}: {}\n",
            failed.policy,
            failed.name,
            failed.failures.join("; ")
        ));
    }
    let mut document = compiled.policy.document().clone();
    if let Some(dir) = secrets_dir {
        let relocate = |path: &mut String| {
            if let Some(rest) = path.strip_prefix(palisade_crds::document::SECRETS_DIR) {
                *path = format!("{}{rest}", dir.display());
            }
        };
        for issuer in &mut document.authentication.issuers {
            if let palisade_crds::document::KeySource::HmacKeyFile(path) = &mut issuer.keys {
                relocate(path);
            }
        }
        if let Some(path) = &mut document.authentication.api_keys_file {
            relocate(path);
        }
    }
    if let Some(dir) = documents_dir {
        for collection in &server.spec.documents {
            let target = dir.join(&collection.collection);
            std::fs::create_dir_all(&target).map_err(|e| format!("{}: {e}\n", target.display()))?;
            let files: Vec<(String, String)> = match (&collection.config_map_ref, &collection.inline) {
                (_, Some(inline)) => inline.iter().map(|d| (d.name.clone(), d.content.clone())).collect(),
                (Some(reference), None) => config_maps
                    .iter()
                    .find(|c| c.metadata.name.as_deref() == Some(reference.name.as_str()))
                    .ok_or_else(|| {
                        format!(
                            "ConfigMap {} (collection {}) is not in the files\n",
                            reference.name, collection.collection
                        )
                    })?
                    .data
                    .clone()
                    .unwrap_or_default()
                    .into_iter()
                    .collect(),
                (None, None) => Vec::new(),
            };
            for (file, content) in files {
                if !crate::documents::is_valid_document_name(&file) {
                    return Err(format!("ConfigMap key {file:?} is not a valid document name\n"));
                }
                let path = target.join(&file);
                std::fs::write(&path, content).map_err(|e| format!("{}: {e}\n", path.display()))?;
            }
        }
    }
    Ok(document.to_yaml())
}

/// The identity a JWT's (unverified) claims describe, with the claim names of its issuer.
fn identity_from_token(policy: &Policy, token: &str) -> Result<Identity, String> {
    let claims: Map<String, Value> = jsonwebtoken::dangerous::insecure_decode_claims(token)
        .map_err(|e| format!("cannot read the token's claims: {e}"))?;
    let issuer = claims.get("iss").and_then(Value::as_str).unwrap_or_default();
    let names = policy
        .document()
        .authentication
        .issuers
        .iter()
        .find(|i| i.issuer == issuer)
        .map(|i| i.claims.clone())
        .unwrap_or_default();
    crate::auth::claims::identity(&claims, &names).map_err(|e| e.to_string())
}

/// Explains the decision about `tool` for a caller.
pub fn explain(policy_file: &PathBuf, tool: &str, token: Option<&str>, identity: Identity) -> Result<String, String> {
    let text = std::fs::read_to_string(policy_file).map_err(|e| format!("{}: {e}\n", policy_file.display()))?;
    let document = PolicyDocument::from_yaml(&text).map_err(|e| format!("{e}\n"))?;
    let policy = Policy::new(document).map_err(|p| format!("{p}\n"))?;
    let identity = match token {
        Some(token) => identity_from_token(&policy, token)?,
        None => identity,
    };
    let access = policy.access(&identity);
    let explanation = access.explain_tool(tool);
    let decision = explanation.decision;
    let mut report = format!("{}: {} ({})\n", tool, decision.effect.as_str(), decision.reason.code());
    if token.is_some() {
        report.push_str("note: the token's signature was not verified\n");
    }
    let roles: Vec<&str> = access.roles().collect();
    report.push_str(&format!(
        "roles held: {}\n",
        if roles.is_empty() {
            "none".into()
        } else {
            roles.join(", ")
        }
    ));
    if let Some(rule) = decision.rule {
        report.push_str(&format!(
            "rule: {:?} requires [{}] ({})\n",
            rule.match_,
            rule.required_scopes.join(", "),
            rule.sources.join(", ")
        ));
    }
    for (scope, grant) in &explanation.granted {
        match grant {
            Grant::Token => report.push_str(&format!("granted: {scope} (from the token)\n")),
            Grant::Role(role) => report.push_str(&format!("granted: {scope} (from role {role})\n")),
        }
    }
    if !explanation.missing.is_empty() {
        report.push_str(&format!("missing: {}\n", explanation.missing.join(", ")));
    }
    if decision.effect == Effect::Allow {
        Ok(report)
    } else {
        Err(report)
    }
}
