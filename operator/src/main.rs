//! `palisade-operator`: the Palisade Kubernetes operator.
//!
//! Subcommands available in this build:
//! - `crds`: print the CustomResourceDefinitions (`kubectl apply -f -` ready), or write them into a
//!   directory, one file per CRD.
//! - `render`: offline, no cluster: every child object of the McpServers in some YAML files, as
//!   the operator would apply them (see [`palisade_operator::render`]).

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use palisade_crds::mcp_server::ImagePullPolicy;
use palisade_operator::render::{Inputs, render};
use palisade_operator::settings::{DEFAULT_CLUSTER_DOMAIN, DEFAULT_SERVER_IMAGE, Settings};

#[derive(Parser)]
#[command(name = "palisade-operator", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the CustomResourceDefinitions as multi-document YAML.
    Crds {
        /// Write one file per CRD into this directory instead of printing them.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
    /// Print every child object of the McpServers in FILEs and DIRs as multi-document YAML,
    /// offline (the preview of what the operator applies). Exits 1, printing nothing, when a
    /// server or a policy is invalid or a policy's tests fail.
    Render(RenderArgs),
}

#[derive(clap::Args)]
struct RenderArgs {
    /// YAML file, directory (every *.yaml / *.yml below it) or `-` for standard input. Repeatable.
    #[arg(short = 'f', long = "filename", value_name = "FILE|DIR", required = true, num_args = 1..)]
    filenames: Vec<PathBuf>,
    /// Namespace of objects that name none.
    #[arg(short = 'n', long, default_value = "default")]
    namespace: String,
    #[command(flatten)]
    settings: SettingsArgs,
}

/// Operator-wide settings, shared with `run`.
#[derive(clap::Args)]
struct SettingsArgs {
    /// Server image for McpServers that do not set spec.image.
    #[arg(long, env = "PALISADE_SERVER_IMAGE", default_value = DEFAULT_SERVER_IMAGE)]
    server_image: String,
    /// Image pull policy for McpServers that do not set spec.imagePullPolicy.
    #[arg(long, env = "PALISADE_SERVER_IMAGE_PULL_POLICY", value_enum)]
    server_image_pull_policy: Option<PullPolicy>,
    /// The cluster's DNS domain.
    #[arg(long, env = "PALISADE_CLUSTER_DOMAIN", default_value = DEFAULT_CLUSTER_DOMAIN)]
    cluster_domain: String,
}

#[derive(Clone, Copy, ValueEnum)]
#[value(rename_all = "PascalCase")]
enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl From<SettingsArgs> for Settings {
    fn from(args: SettingsArgs) -> Self {
        Self {
            server_image: args.server_image,
            image_pull_policy: args.server_image_pull_policy.map(|p| match p {
                PullPolicy::Always => ImagePullPolicy::Always,
                PullPolicy::IfNotPresent => ImagePullPolicy::IfNotPresent,
                PullPolicy::Never => ImagePullPolicy::Never,
            }),
            cluster_domain: args.cluster_domain,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crds { out_dir } => crds(out_dir),
        Command::Render(args) => render_command(args),
    }
}

fn render_command(args: RenderArgs) -> ExitCode {
    let settings = Settings::from(args.settings);
    let rendered = Inputs::read(&args.filenames, &args.namespace).and_then(|inputs| render(&inputs, &settings));
    match rendered {
        Ok(rendered) => {
            for warning in &rendered.warnings {
                eprintln!("warning: {warning}");
            }
            print!("{}", rendered.yaml);
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

fn crds(out_dir: Option<PathBuf>) -> ExitCode {
    let yamls = palisade_crds::crd_yamls();
    match out_dir {
        None => {
            let documents: Vec<&str> = yamls.iter().map(String::as_str).collect();
            print!("---\n{}", documents.join("---\n"));
            ExitCode::SUCCESS
        }
        Some(dir) => {
            for (file, yaml) in palisade_crds::CRD_FILES.iter().zip(&yamls) {
                let path = dir.join(file);
                if let Err(error) = std::fs::write(&path, yaml) {
                    eprintln!("error: cannot write {}: {error}", path.display());
                    return ExitCode::FAILURE;
                }
            }
            ExitCode::SUCCESS
        }
    }
}
