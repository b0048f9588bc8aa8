//! `palisade-operator`: the Palisade Kubernetes operator.
//!
//! Subcommands available in this build:
//! - `crds`: print the CustomResourceDefinitions (`kubectl apply -f -` ready), or write them into a
//!   directory, one file per CRD.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crds { out_dir } => crds(out_dir),
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
