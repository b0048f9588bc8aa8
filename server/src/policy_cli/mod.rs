//! `palisade-server policy check`, `policy compile` and `policy explain`: the compiler and the
//! evaluator on the command line, for policy authors and for CI of policy repositories.
//!
//! Manifests are read and validated by the code the operator runs ([`palisade_crds::manifests`],
//! [`palisade_crds::verdicts`]): unknown fields are errors, and a manifest gets the same verdict
//! and the same messages as from `palisade-operator render` and the controller.
//!
//! Streams: what a command produces (the report, the PolicyDocument, the explanation) goes to
//! standard output; warnings (`warning: …`) and errors (`error: …`) go to standard error, so
//! `policy compile x.yaml > policy.yaml` never writes an error into the file. Exit status 1 when
//! anything is wrong (for `explain`: when the call is denied).

mod check;
mod compile;
mod error;
mod explain;

use palisade_crds::document::RuleKind;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;
use palisade_crds::compile::DEFAULT_CLUSTER_DOMAIN;
use palisade_crds::manifests::Manifests;
use palisade_crds::validate::ValidatedServer;
use palisade_crds::verdicts::validate_all;
use palisade_crds::{CompileOptions, Identity, IdentitySource};

pub use check::check;
pub use compile::{compile, compile_for_cluster_domain};
pub use error::PolicyCliError;
pub use explain::{PolicySource, explain};

/// `policy` subcommands.
// NB: parsed once per process from the command line; boxing `Explain` would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Check PolicyDocuments, or McpServer and McpAccessPolicy manifests: validated as the
    /// operator validates them (unknown fields are errors), compiled per server, every policy
    /// test run. Exit status 1 when anything is wrong.
    Check {
        /// YAML files (several documents per file allowed).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[command(flatten)]
        manifests: ManifestArgs,
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
        #[arg(long, value_name = "DIR")]
        secrets_dir: Option<PathBuf>,
        /// Write each collection's documents to DIR/<collection>/<name>.
        #[arg(long, value_name = "DIR")]
        documents_dir: Option<PathBuf>,
        #[command(flatten)]
        manifests: ManifestArgs,
    },
    /// Explain whether a caller may call a tool, and why. Reads McpServer and McpAccessPolicy
    /// manifests (compiled as `policy compile` does), or without FILEs the compiled
    /// PolicyDocument of --policy-file. Exit status 1 when the call is denied.
    Explain {
        /// YAML files with one McpServer and the McpAccessPolicies that target it.
        files: Vec<PathBuf>,
        /// The compiled PolicyDocument, read when no FILE is given; without this flag,
        /// $PALISADE_POLICY_FILE, else /etc/palisade/policy/policy.yaml.
        // NB: no clap `env` here: a PALISADE_POLICY_FILE in the environment must not conflict
        // with FILEs given on the command line; only the flag does.
        #[arg(long, conflicts_with = "files")]
        policy_file: Option<PathBuf>,
        #[command(flatten)]
        manifests: ManifestArgs,
        /// The tool.
        #[arg(long, required_unless_present_any = ["prompt", "resource"], conflicts_with_all = ["prompt", "resource"])]
        tool: Option<String>,
        /// The call's arguments, a JSON object (`'{"path": "/data/public/a.txt"}'`): the tool is
        /// decided as `tools/call` decides it, argument constraints included. Without it, as
        /// `tools/list` shows it (allowed when some arguments would be).
        #[arg(long = "args", value_name = "JSON", conflicts_with_all = ["prompt", "resource"])]
        arguments: Option<String>,
        /// Proxy mode: a prompt of the upstream, decided by the prompt rules.
        #[arg(long, conflicts_with = "resource")]
        prompt: Option<String>,
        /// Proxy mode: a resource URI (or URI template) of the upstream, decided by the resource
        /// rules.
        #[arg(long)]
        resource: Option<String>,
        /// A JWT whose claims describe the caller (its signature is NOT verified here).
        #[arg(long, conflicts_with_all = ["scopes", "roles", "groups", "subject", "anonymous", "issuer", "source", "claims"])]
        token: Option<String>,
        /// The JWT issuer the caller's subject and groups come from. Needed with --subject or
        /// --group when the server accepts identities from more than one source.
        #[arg(long, conflicts_with = "source")]
        issuer: Option<String>,
        /// The caller authenticated with an API key (`api-keys`) or a client certificate
        /// (`client-certificates`) instead of a JWT.
        #[arg(long, value_enum)]
        source: Option<CallerSourceArg>,
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
        /// A token claim argument rules name (`{claims.team}`), as NAME=VALUE; repeat a NAME for
        /// a claim with several values.
        #[arg(long = "claim", value_name = "NAME=VALUE", num_args = 0..)]
        claims: Vec<String>,
        /// An anonymous caller.
        #[arg(long)]
        anonymous: bool,
    },
}

/// `policy explain --source`: a caller that is not from a JWT issuer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CallerSourceArg {
    /// An API key of the server's table.
    ApiKeys,
    /// A client certificate verified by the server's TLS layer.
    ClientCertificates,
}

/// How manifests are read: as `palisade-operator render` reads them.
#[derive(Debug, Clone, clap::Args)]
pub struct ManifestArgs {
    /// Namespace of objects that name none (as `kubectl apply -n`).
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    /// The cluster's DNS domain, as the operator's --cluster-domain: it names the default
    /// audience `http://<name>.<namespace>.svc.<domain>/mcp`.
    #[arg(long, env = "PALISADE_CLUSTER_DOMAIN", default_value = DEFAULT_CLUSTER_DOMAIN)]
    pub cluster_domain: String,
}

impl ManifestArgs {
    /// The defaults: namespace `default`, cluster domain `cluster.local`.
    pub fn defaults() -> Self {
        Self {
            namespace: "default".into(),
            cluster_domain: DEFAULT_CLUSTER_DOMAIN.into(),
        }
    }

    fn compile_options(&self) -> CompileOptions<'_> {
        CompileOptions {
            cluster_domain: &self.cluster_domain,
        }
    }
}

/// What a `policy` command produced.
#[derive(Debug, Default)]
pub struct Outcome {
    /// For standard output: the report, the PolicyDocument or the explanation.
    pub output: String,
    /// For standard error, each as `warning: …`.
    pub warnings: Vec<String>,
    /// For standard error, each as `error: …`; any makes the exit status 1.
    pub errors: Vec<PolicyCliError>,
    /// Exit status 1 without an error: `explain` of a denied call.
    pub denied: bool,
}

impl Outcome {
    fn failed(error: PolicyCliError) -> Self {
        Self {
            errors: vec![error],
            ..Self::default()
        }
    }

    /// Whether the command succeeded.
    pub fn success(&self) -> bool {
        self.errors.is_empty() && !self.denied
    }
}

/// `explain --claim NAME=VALUE...`: each claim with its values, sorted by name.
fn parse_claims(claims: &[String]) -> Result<Vec<(String, Vec<String>)>, PolicyCliError> {
    let mut by_name: std::collections::BTreeMap<String, Vec<String>> = std::collections::BTreeMap::new();
    for claim in claims {
        let Some((name, value)) = claim.split_once('=') else {
            return Err(PolicyCliError::Claim(claim.clone()));
        };
        if !palisade_crds::arguments::is_claim_name(name) {
            return Err(PolicyCliError::Claim(claim.clone()));
        }
        by_name.entry(name.to_owned()).or_default().push(value.to_owned());
    }
    Ok(by_name.into_iter().collect())
}

/// `explain --args`: a JSON object.
fn parse_arguments(text: &str) -> Result<serde_json::Map<String, serde_json::Value>, PolicyCliError> {
    match serde_json::from_str(text) {
        Ok(serde_json::Value::Object(arguments)) => Ok(arguments),
        Ok(other) => Err(PolicyCliError::Arguments(format!("found {}", json_kind(&other)))),
        Err(e) => Err(PolicyCliError::Arguments(e.to_string())),
    }
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Runs a `policy` subcommand, printing its outcome.
pub fn run(command: PolicyCommand) -> ExitCode {
    let outcome = match command {
        PolicyCommand::Check { files, manifests } => check(&files, &manifests),
        PolicyCommand::Compile {
            files,
            secrets_dir,
            documents_dir,
            manifests,
        } => compile::run(&files, secrets_dir.as_deref(), documents_dir.as_deref(), &manifests),
        PolicyCommand::Explain {
            files,
            policy_file,
            manifests,
            tool,
            arguments,
            prompt,
            resource,
            token,
            issuer,
            source: caller_source,
            subject,
            scopes,
            roles,
            groups,
            claims,
            anonymous,
        } => {
            let source = if files.is_empty() {
                PolicySource::PolicyFile(
                    policy_file
                        .or_else(|| std::env::var_os("PALISADE_POLICY_FILE").map(PathBuf::from))
                        .unwrap_or_else(|| palisade_crds::document::DEFAULT_POLICY_PATH.into()),
                )
            } else {
                PolicySource::Manifests(files, manifests)
            };
            let identity = Identity {
                source: match (issuer, caller_source) {
                    (Some(issuer), _) => Some(IdentitySource::Issuer(issuer)),
                    (None, Some(CallerSourceArg::ApiKeys)) => Some(IdentitySource::ApiKeys),
                    (None, Some(CallerSourceArg::ClientCertificates)) => Some(IdentitySource::ClientCertificates),
                    (None, None) => None,
                },
                subject,
                scopes,
                roles,
                groups,
                service_account: None,
                claims: match parse_claims(&claims) {
                    Ok(claims) => claims,
                    Err(error) => {
                        let outcome = Outcome::failed(error);
                        print_outcome(&outcome);
                        return ExitCode::FAILURE;
                    }
                },
                anonymous,
            };
            let target = match (tool, prompt, resource) {
                (Some(tool), _, _) => (RuleKind::Tool, tool),
                (None, Some(prompt), _) => (RuleKind::Prompt, prompt),
                (None, None, resource) => (RuleKind::Resource, resource.expect("clap requires one")),
            };
            match arguments.as_deref().map(parse_arguments).transpose() {
                Ok(arguments) => explain(
                    &source,
                    (target.0, &target.1),
                    arguments.as_ref(),
                    token.as_deref(),
                    identity,
                ),
                Err(error) => Outcome::failed(error),
            }
        }
    };
    print_outcome(&outcome);
    if outcome.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn print_outcome(outcome: &Outcome) {
    let mut stdout = std::io::stdout().lock();
    // NB: a closed pipe (`| head`) is not worth a panic; the exit status still tells.
    let _ = stdout.write_all(outcome.output.as_bytes());
    let _ = stdout.flush();
    let mut stderr = std::io::stderr().lock();
    for warning in &outcome.warnings {
        let _ = writeln!(stderr, "warning: {warning}");
    }
    for error in &outcome.errors {
        let _ = writeln!(stderr, "error: {error}");
    }
}

/// Reads manifests from files as `palisade-operator render` does: every object strictly, in
/// file order; the first problem stops the reading.
pub fn read_manifests(files: &[PathBuf], namespace: &str) -> Result<Manifests, PolicyCliError> {
    let mut manifests = Manifests::default();
    for file in files {
        let text = std::fs::read_to_string(file).map_err(|source| PolicyCliError::Read {
            path: file.clone(),
            source,
        })?;
        manifests.add_yaml(&text, &file.display().to_string(), namespace)?;
    }
    Ok(manifests)
}

/// The one McpServer of `manifests`, validated with the policies that bind it; the validation's
/// warnings are added to `warnings`.
fn validated_server<'a>(
    manifests: &'a Manifests,
    args: &ManifestArgs,
    warnings: &mut Vec<String>,
) -> Result<ValidatedServer<'a>, PolicyCliError> {
    if manifests.servers.len() != 1 {
        return Err(PolicyCliError::ServerCount(manifests.servers.len()));
    }
    let verdicts = validate_all(manifests, &args.compile_options());
    warnings.extend(verdicts.warnings);
    if !verdicts.invalid.is_empty() {
        return Err(verdicts.invalid.into());
    }
    Ok(verdicts
        .valid
        .into_iter()
        .next()
        .expect("one McpServer, and it is valid"))
}

/// Writes a file, creating its directory.
fn write_file(path: &Path, content: &str) -> Result<(), PolicyCliError> {
    let write_error = |source| PolicyCliError::Write {
        path: path.to_owned(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(write_error)?;
    }
    std::fs::write(path, content).map_err(write_error)
}
