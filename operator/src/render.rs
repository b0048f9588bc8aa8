//! `palisade-operator render`: the whole pipeline on files, with no cluster. Reads McpServer,
//! McpAccessPolicy and ConfigMap objects from YAML, binds each server to its policies
//! ([`crate::bind`]), validates ([`mod@crate::validate`]) and builds ([`crate::build`]) exactly as the
//! controller does, and prints every child as multi-document YAML.
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

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::io::Read as _;
use std::path::{Path, PathBuf};

use palisade_crds::compile::object_key;
use palisade_crds::k8s_openapi::api::core::v1::ConfigMap;
use palisade_crds::kube::ResourceExt;
use palisade_crds::{McpAccessPolicy, McpServer};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::bind::bound_policies;
use crate::build::build_children;
use crate::settings::Settings;
use crate::validate::{ValidateError, validate};

/// `apiVersion` of the Palisade kinds this operator reads.
const PALISADE_API_VERSION: &str = "palisade.dev/v1alpha1";

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
    /// A file is not YAML.
    #[error("{origin}: not valid YAML: {source}")]
    ParseYaml {
        /// File (and document number).
        origin: String,
        /// The cause.
        source: yaml_serde::Error,
    },
    /// A document is not a Kubernetes object of the shape its kind requires.
    #[error("{origin}: {object}: {message}")]
    DecodeObject {
        /// File and document number.
        origin: String,
        /// `Kind namespace/name`, as far as known.
        object: String,
        /// What is wrong.
        message: String,
    },
    /// The same object appears twice in the inputs.
    #[error("{origin}: {object} is already defined in {first}")]
    DuplicateObject {
        /// Where the second copy is.
        origin: String,
        /// `Kind namespace/name`.
        object: String,
        /// Where the first copy is.
        first: String,
    },
    /// At least one McpServer cannot be rolled out; nothing is printed.
    #[error("{}", InvalidServers(.0))]
    ValidateServers(Vec<(String, ValidateError)>),
}

struct InvalidServers<'a>(&'a [(String, ValidateError)]);

impl fmt::Display for InvalidServers<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (server, error)) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            let why = match error {
                ValidateError::InvalidSpec(_) => "is invalid",
                ValidateError::FailedPolicyTests(_) => "fails its policy tests",
            };
            write!(f, "McpServer {server} {why}:")?;
            for problem in error.problems().iter() {
                write!(f, "\n  {problem}")?;
            }
        }
        Ok(())
    }
}

/// The objects `render` works on.
#[derive(Debug, Default)]
pub struct Inputs {
    /// McpServers.
    pub servers: Vec<McpServer>,
    /// McpAccessPolicies.
    pub policies: Vec<McpAccessPolicy>,
    /// ConfigMaps (the document collections that `configMapRef` names).
    pub config_maps: Vec<ConfigMap>,
    /// `Kind namespace/name` → where it was read, to refuse duplicates.
    origins: BTreeMap<String, String>,
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
        for (index, document) in yaml_serde::Deserializer::from_str(text).enumerate() {
            let origin = format!("{origin} (document {})", index + 1);
            let value = yaml_serde::Value::deserialize(document).map_err(|source| RenderError::ParseYaml {
                origin: origin.clone(),
                source,
            })?;
            if value.is_null() {
                continue;
            }
            let value: Value = serde_json::to_value(&value).map_err(|e| RenderError::DecodeObject {
                origin: origin.clone(),
                object: "document".into(),
                message: e.to_string(),
            })?;
            self.add_object(value, &origin, namespace)?;
        }
        Ok(())
    }

    fn add_object(&mut self, mut value: Value, origin: &str, namespace: &str) -> Result<(), RenderError> {
        let field = |name: &str| value.get(name).and_then(Value::as_str).unwrap_or_default().to_owned();
        let (api_version, kind) = (field("apiVersion"), field("kind"));
        let group = api_version.split_once('/').map_or("", |(group, _)| group);
        match (group, kind.as_str()) {
            ("palisade.dev", "McpServer" | "McpAccessPolicy") if api_version != PALISADE_API_VERSION => {
                return Err(RenderError::DecodeObject {
                    origin: origin.into(),
                    object: kind,
                    message: format!(
                        "apiVersion {api_version} is not one this operator reads ({PALISADE_API_VERSION})"
                    ),
                });
            }
            ("palisade.dev", "McpServer" | "McpAccessPolicy") => {}
            ("", "ConfigMap") if api_version == "v1" => {}
            _ => return Ok(()),
        }
        if let Some(metadata) = value.get_mut("metadata").and_then(Value::as_object_mut) {
            metadata
                .entry("namespace")
                .or_insert_with(|| Value::String(namespace.into()));
        }
        match kind.as_str() {
            "McpServer" => {
                let server: McpServer = decode(&value, origin, &kind)?;
                self.remember(&kind, object_key(&server), origin)?;
                self.servers.push(server);
            }
            "McpAccessPolicy" => {
                let policy: McpAccessPolicy = decode(&value, origin, &kind)?;
                self.remember(&kind, object_key(&policy), origin)?;
                self.policies.push(policy);
            }
            _ => {
                let config_map: ConfigMap = decode(&value, origin, &kind)?;
                self.remember(&kind, object_key(&config_map), origin)?;
                self.config_maps.push(config_map);
            }
        }
        Ok(())
    }

    fn remember(&mut self, kind: &str, key: String, origin: &str) -> Result<(), RenderError> {
        let object = format!("{kind} {key}");
        if let Some(first) = self.origins.get(&object) {
            return Err(RenderError::DuplicateObject {
                origin: origin.into(),
                object,
                first: first.clone(),
            });
        }
        self.origins.insert(object, origin.into());
        Ok(())
    }
}

/// Decodes an object, refusing fields the type does not know (as the API server's strict field
/// validation would): a misspelt switch must not silently render nothing.
fn decode<T: DeserializeOwned + serde::Serialize>(value: &Value, origin: &str, kind: &str) -> Result<T, RenderError> {
    let key = format!(
        "{}/{}",
        value
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or_default(),
        value
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("<no name>")
    );
    let error = |message: String| RenderError::DecodeObject {
        origin: origin.into(),
        object: format!("{kind} {key}"),
        message,
    };
    if value
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return Err(error("metadata.name is missing".into()));
    }
    let object: T = serde_json::from_value(value.clone()).map_err(|e| error(e.to_string()))?;
    let round_trip = serde_json::to_value(&object).map_err(|e| error(e.to_string()))?;
    let mut unknown = Vec::new();
    for field in ["spec", "data"] {
        if let (Some(input), Some(output)) = (value.get(field), round_trip.get(field)) {
            unknown_fields(input, output, field, &mut unknown);
        } else if value.get(field).is_some_and(|v| !is_empty(v)) && round_trip.get(field).is_none() {
            unknown.push(field.to_owned());
        }
    }
    if unknown.is_empty() {
        Ok(object)
    } else {
        Err(error(format!("unknown field(s): {}", unknown.join(", "))))
    }
}

/// Paths of `input` that did not survive a round trip through the typed object. Empty values
/// (`null`, `{}`, `[]`) may be dropped by serialization, so they do not count.
fn unknown_fields(input: &Value, output: &Value, path: &str, unknown: &mut Vec<String>) {
    match (input, output) {
        (Value::Object(input), Value::Object(output)) => {
            for (key, value) in input {
                let child = format!("{path}.{key}");
                match output.get(key) {
                    Some(out) => unknown_fields(value, out, &child, unknown),
                    None if is_empty(value) => {}
                    None => unknown.push(child),
                }
            }
        }
        (Value::Array(input), Value::Array(output)) => {
            for (i, (value, out)) in input.iter().zip(output).enumerate() {
                unknown_fields(value, out, &format!("{path}[{i}]"), unknown);
            }
        }
        _ => {}
    }
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Object(map) => map.is_empty(),
        Value::Array(items) => items.is_empty(),
        _ => false,
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
    let mut servers: Vec<&McpServer> = inputs.servers.iter().collect();
    servers.sort_by_key(|s| object_key(*s));
    let mut yaml = String::from(
        "# Rendered by `palisade-operator render`: every child object of each McpServer, in apply order.\n\
         # ownerReferences are omitted (an McpServer read from a file has no uid); the operator sets them.\n",
    );
    let mut warnings = Vec::new();
    let mut failures = Vec::new();
    let mut bound_anywhere = std::collections::BTreeSet::new();
    for server in servers {
        let key = object_key(server);
        let bound = bound_policies(server, &inputs.policies);
        warnings.extend(bound.refused.iter().map(ToString::to_string));
        bound_anywhere.extend(bound.policies.iter().map(|p| object_key(*p)));
        let validated = match validate(server, &bound.policies, settings) {
            Ok(validated) => validated,
            Err(error) => {
                failures.push((key, error));
                continue;
            }
        };
        warnings.extend(validated.warnings().iter().map(ToString::to_string));
        for (i, collection) in server.spec.documents.iter().enumerate() {
            let Some(reference) = &collection.config_map_ref else {
                continue;
            };
            let found = inputs
                .config_maps
                .iter()
                .any(|c| c.name_any() == reference.name && c.namespace() == server.namespace());
            if !found {
                warnings.push(format!(
                    "McpServer {key}: spec.documents[{i}].configMapRef: ConfigMap {:?} is not among the inputs; \
                     the pods start once it exists",
                    reference.name
                ));
            }
        }
        let policies = if validated.bound_policies().is_empty() {
            "none: every call is denied".to_owned()
        } else {
            validated.bound_policies().join(", ")
        };
        let _ = writeln!(
            yaml,
            "# McpServer {key}: policy {}; bound policies: {policies}",
            validated.policy_hash()
        );
        for child in build_children(&validated, settings).iter() {
            yaml.push_str("---\n");
            yaml.push_str(&yaml_serde::to_string(&child).expect("a Kubernetes object always serializes"));
        }
    }
    for policy in &inputs.policies {
        let key = object_key(policy);
        if !bound_anywhere.contains(&key) {
            warnings.push(format!("McpAccessPolicy {key} binds no McpServer among the inputs"));
        }
    }
    if inputs.servers.is_empty() {
        warnings.push("no McpServer among the inputs: nothing to render".into());
    }
    if failures.is_empty() {
        Ok(Rendered { yaml, warnings })
    } else {
        Err(RenderError::ValidateServers(failures))
    }
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
    fn misspelt_fields_are_refused_with_their_path() {
        let error = inputs(
            "apiVersion: palisade.dev/v1alpha1\nkind: McpServer\nmetadata: {name: s}\n\
             spec: {auth: {allowAnonymous: true}, networkPolicy: {enable: true}, scheduling: {nodeSelector: {}}}",
        )
        .unwrap_err();
        let message = error.to_string();
        assert!(message.contains("McpServer default/s"), "{message}");
        assert!(
            message.contains("unknown field(s): spec.networkPolicy.enable"),
            "{message}"
        );
        assert!(!message.contains("nodeSelector"), "{message}");
    }

    #[test]
    fn other_kinds_are_ignored_and_namespaces_defaulted() {
        let inputs = inputs(
            "apiVersion: v1\nkind: Secret\nmetadata: {name: x}\n---\n---\n\
             apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {a.md: x}\n---\n\
             apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: other}\n",
        )
        .unwrap();
        assert_eq!(inputs.config_maps.len(), 2);
        assert_eq!(inputs.config_maps[0].namespace().as_deref(), Some("default"));
        assert_eq!(inputs.config_maps[1].namespace().as_deref(), Some("other"));
    }

    #[test]
    fn duplicates_and_other_versions_are_refused() {
        let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n";
        let error = inputs(&format!("{cm}---\n{cm}")).unwrap_err();
        assert!(matches!(error, RenderError::DuplicateObject { .. }), "{error}");
        let error = inputs("apiVersion: palisade.dev/v1\nkind: McpServer\nmetadata: {name: s}\n").unwrap_err();
        assert!(
            error.to_string().contains("apiVersion palisade.dev/v1 is not one"),
            "{error}"
        );
    }
}
