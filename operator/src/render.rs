//! `palisade-operator render`: the whole pipeline on files, with no cluster. Reads McpServer,
//! McpAccessPolicy and ConfigMap objects from YAML ([`palisade_crds::manifests`]: strictly, as
//! `palisade-server policy check` does), binds each server to its policies ([`crate::bind`]),
//! validates ([`palisade_crds::verdicts`], the controller's and `policy check`'s validation) and
//! builds ([`crate::build`]) exactly as the controller does, and prints every child as
//! multi-document YAML.
//!
//! It is the preview for GitOps reviews and the basis of the golden tests, so the output is
//! byte-stable: servers sorted by namespace and name, children in apply order, maps sorted.
//!
//! Differences from the controller, by necessity:
//! - `ownerReferences` are omitted: an McpServer read from a file has no `uid`, and an owner
//!   reference without one is invalid. The operator sets them when it applies.
//! - ConfigMaps and Secrets that are not among the inputs are assumed to exist (with a warning for
//!   ConfigMaps); the controller reports them in the `DocumentsReady` / `SecretsReady` conditions.
//!
//! Objects of other kinds in the inputs are ignored, so a whole GitOps directory can be rendered.

use std::fmt::Write as _;
use std::io::Read as _;
use std::ops::Deref;
use std::path::{Path, PathBuf};

use palisade_crds::manifests::{ManifestError, Manifests};
use palisade_crds::verdicts::{InvalidServers, validate_all};

use crate::build::build_children;
use crate::settings::Settings;
use crate::validate::compile_options;

/// Why `render` produced nothing.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// A file or directory could not be read.
    #[error("cannot read {}: {source}", path.display())]
    ReadInput {
        /// The path (`-` for standard input).
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A document is not YAML, not an object of the shape its kind requires, or a duplicate.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// At least one McpServer cannot be rolled out; nothing is printed.
    #[error(transparent)]
    ValidateServers(InvalidServers),
}

/// The objects `render` works on: [`Manifests`] read from files, directories or standard input.
#[derive(Debug, Default)]
pub struct Inputs(Manifests);

impl Deref for Inputs {
    type Target = Manifests;

    fn deref(&self) -> &Manifests {
        &self.0
    }
}

impl Inputs {
    /// Reads files and directories (recursively, `*.yaml` and `*.yml`, in path order); `-` is
    /// standard input. Objects without a namespace get `namespace`, like `kubectl apply -n`.
    pub fn read(paths: &[PathBuf], namespace: &str) -> Result<Self, RenderError> {
        let mut inputs = Self::default();
        for path in paths {
            if path.as_os_str() == "-" {
                let mut text = String::new();
                std::io::stdin()
                    .read_to_string(&mut text)
                    .map_err(|source| RenderError::ReadInput {
                        path: path.clone(),
                        source,
                    })?;
                inputs.add_yaml(&text, "<stdin>", namespace)?;
                continue;
            }
            for file in yaml_files(path)? {
                let text = std::fs::read_to_string(&file).map_err(|source| RenderError::ReadInput {
                    path: file.clone(),
                    source,
                })?;
                inputs.add_yaml(&text, &file.display().to_string(), namespace)?;
            }
        }
        Ok(inputs)
    }

    /// Adds the objects of one (multi-document) YAML text; `origin` names it in messages.
    pub fn add_yaml(&mut self, text: &str, origin: &str, namespace: &str) -> Result<(), RenderError> {
        Ok(self.0.add_yaml(text, origin, namespace)?)
    }
}

/// The YAML files under `path`: itself if it is a file, else every `*.yaml` / `*.yml` below it,
/// sorted.
fn yaml_files(path: &Path) -> Result<Vec<PathBuf>, RenderError> {
    let read_error = |source| RenderError::ReadInput {
        path: path.to_owned(),
        source,
    };
    if !path.metadata().map_err(read_error)?.is_dir() {
        return Ok(vec![path.to_owned()]);
    }
    let mut files = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(read_error)?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(read_error)?;
    entries.sort();
    for entry in entries {
        if entry.is_dir() {
            files.extend(yaml_files(&entry)?);
        } else if entry.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            files.push(entry);
        }
    }
    Ok(files)
}

/// What `render` prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// Every child of every McpServer, as multi-document YAML.
    pub yaml: String,
    /// Not wrong, but worth a look; for standard error.
    pub warnings: Vec<String>,
}

/// Renders every McpServer among `inputs`. Fails, printing nothing, if any server is invalid or
/// fails its policies' tests.
pub fn render(inputs: &Inputs, settings: &Settings) -> Result<Rendered, RenderError> {
    let verdicts = validate_all(inputs, &compile_options(settings));
    if !verdicts.invalid.is_empty() {
        return Err(RenderError::ValidateServers(verdicts.invalid));
    }
    let mut yaml = String::from(
        "# Rendered by `palisade-operator render`: every child object of each McpServer, in apply order.\n\
         # ownerReferences are omitted (an McpServer read from a file has no uid); the operator sets them.\n",
    );
    for validated in &verdicts.valid {
        let policies = if validated.bound_policies().is_empty() {
            "none: every call is denied".to_owned()
        } else {
            validated.bound_policies().join(", ")
        };
        let _ = writeln!(
            yaml,
            "# McpServer {}: policy {}; bound policies: {policies}",
            validated.key(),
            validated.policy_hash()
        );
        for child in build_children(validated, settings).iter() {
            yaml.push_str("---\n");
            yaml.push_str(&yaml_serde::to_string(&child).expect("a Kubernetes object always serializes"));
        }
    }
    Ok(Rendered {
        yaml,
        warnings: verdicts.warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(yaml: &str) -> Result<Inputs, RenderError> {
        let mut inputs = Inputs::default();
        inputs.add_yaml(yaml, "test.yaml", "default")?;
        Ok(inputs)
    }

    #[test]
    fn duplicates_and_other_versions_are_refused() {
        let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n";
        let error = inputs(&format!("{cm}---\n{cm}")).unwrap_err();
        assert!(
            matches!(error, RenderError::Manifest(ManifestError::DuplicateObject { .. })),
            "{error}"
        );
        let error = inputs("apiVersion: palisade.dev/v1\nkind: McpServer\nmetadata: {name: s}\n").unwrap_err();
        assert!(
            error
                .to_string()
                .contains("apiVersion palisade.dev/v1 is not one Palisade reads"),
            "{error}"
        );
    }
}
