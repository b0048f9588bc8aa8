//! `policy compile`: the PolicyDocument a server pod mounts, from the manifests a cluster gets,
//! and the pod's document directories.

use std::path::{Path, PathBuf};

use palisade_crds::document::{KeySource, SECRETS_DIR};
use palisade_crds::kube::ResourceExt;
use palisade_crds::manifests::Manifests;
use palisade_crds::validate::ValidatedServer;

use super::{ManifestArgs, Outcome, PolicyCliError, read_manifests, validated_server, write_file};

/// [`compile_for_cluster_domain`] for a cluster with the default DNS domain, `cluster.local`,
/// and objects without a namespace in `default`.
pub fn compile(
    files: &[PathBuf],
    secrets_dir: Option<&Path>,
    documents_dir: Option<&Path>,
) -> Result<String, PolicyCliError> {
    compile_manifests(
        files,
        secrets_dir,
        documents_dir,
        &ManifestArgs::defaults(),
        &mut Vec::new(),
    )
}

/// Compiles the one McpServer in `files` with the policies that bind it, for a cluster whose DNS
/// domain is `cluster_domain`; see [`super::PolicyCommand::Compile`].
pub fn compile_for_cluster_domain(
    files: &[PathBuf],
    secrets_dir: Option<&Path>,
    documents_dir: Option<&Path>,
    cluster_domain: &str,
) -> Result<String, PolicyCliError> {
    let args = ManifestArgs {
        cluster_domain: cluster_domain.into(),
        ..ManifestArgs::defaults()
    };
    compile_manifests(files, secrets_dir, documents_dir, &args, &mut Vec::new())
}

/// `policy compile`: the PolicyDocument as output, with the validation's warnings.
pub(super) fn run(
    files: &[PathBuf],
    secrets_dir: Option<&Path>,
    documents_dir: Option<&Path>,
    args: &ManifestArgs,
) -> Outcome {
    let mut warnings = Vec::new();
    let result = compile_manifests(files, secrets_dir, documents_dir, args, &mut warnings);
    let mut outcome = match result {
        Ok(output) => Outcome {
            output,
            ..Outcome::default()
        },
        Err(error) => Outcome::failed(error),
    };
    outcome.warnings = warnings;
    outcome
}

fn compile_manifests(
    files: &[PathBuf],
    secrets_dir: Option<&Path>,
    documents_dir: Option<&Path>,
    args: &ManifestArgs,
    warnings: &mut Vec<String>,
) -> Result<String, PolicyCliError> {
    let manifests = read_manifests(files, &args.namespace)?;
    let validated = validated_server(&manifests, args, warnings)?;
    let mut document = validated.document().clone();
    if let Some(dir) = secrets_dir {
        let relocate = |path: &mut String| {
            if let Some(rest) = path.strip_prefix(SECRETS_DIR) {
                *path = format!("{}{rest}", dir.display());
            }
        };
        for issuer in &mut document.authentication.issuers {
            if let KeySource::HmacKeyFile(path) = &mut issuer.keys {
                relocate(path);
            }
        }
        if let Some(path) = &mut document.authentication.api_keys_file {
            relocate(path);
        }
    }
    if let Some(dir) = documents_dir {
        lay_out_documents(&manifests, &validated, dir)?;
    }
    Ok(document.to_yaml())
}

/// Writes each collection's documents to `dir/<collection>/<name>`, as the pod mounts them.
fn lay_out_documents(manifests: &Manifests, validated: &ValidatedServer<'_>, dir: &Path) -> Result<(), PolicyCliError> {
    for collection in &validated.server().spec.documents {
        let target = dir.join(&collection.collection);
        std::fs::create_dir_all(&target).map_err(|source| PolicyCliError::Write {
            path: target.clone(),
            source,
        })?;
        let files: Vec<(String, String)> = match (&collection.config_map_ref, &collection.inline) {
            (_, Some(inline)) => inline.iter().map(|d| (d.name.clone(), d.content.clone())).collect(),
            (Some(reference), None) => {
                let found = manifests
                    .config_maps
                    .iter()
                    .find(|c| c.name_any() == reference.name && c.namespace().as_deref() == Some(validated.namespace()))
                    .ok_or_else(|| PolicyCliError::MissingConfigMap {
                        name: reference.name.clone(),
                        collection: collection.collection.clone(),
                    })?;
                found.data.clone().unwrap_or_default().into_iter().collect()
            }
            (None, None) => Vec::new(),
        };
        for (name, content) in files {
            if !crate::documents::is_valid_document_name(&name) {
                return Err(PolicyCliError::DocumentName {
                    collection: collection.collection.clone(),
                    name,
                });
            }
            write_file(&target.join(&name), &content)?;
        }
    }
    Ok(())
}
