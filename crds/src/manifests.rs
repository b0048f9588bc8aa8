//! The objects of a set of YAML manifests, read the way every command line of Palisade reads them
//! (`palisade-operator render`, `palisade-server policy check`, `policy compile`, `policy
//! explain`): McpServers, McpAccessPolicies, the ConfigMaps that hold documents, and compiled
//! PolicyDocuments. Every object is decoded strictly ([`crate::strict`]); objects of other kinds
//! are skipped, so a whole GitOps directory can be read.
//!
//! Reading the files is the caller's: this module takes their text.
//!
//! ```
//! use palisade_crds::manifests::Manifests;
//!
//! let mut manifests = Manifests::default();
//! let yaml = "apiVersion: palisade.dev/v1alpha1\nkind: McpAccessPolicy\nmetadata: {name: p}\n\
//!             spec: {tests: [{name: t, identity: {}, deny: [read]}]}\n";
//! let error = manifests.add_yaml(yaml, "policy.yaml", "team-a").unwrap_err();
//! assert_eq!(
//!     error.to_string(),
//!     "policy.yaml (document 1): McpAccessPolicy team-a/p: unknown field(s): spec.tests[0].deny"
//! );
//! ```

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use serde::Deserialize;
use serde_json::Value;

use crate::compile::object_key;
use crate::document::{self, PolicyDocument};
use crate::strict::decode_strict;
use crate::{McpAccessPolicy, McpServer};

/// `apiVersion` of the Palisade kinds (and of the PolicyDocument).
pub const PALISADE_API_VERSION: &str = document::API_VERSION;

/// Why a manifest cannot be read. Every message starts with the file and document number.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The text is not YAML.
    #[error("{origin}: not valid YAML: {source}")]
    ParseYaml {
        /// File and document number.
        origin: String,
        /// The cause.
        source: yaml_serde::Error,
    },
    /// A document is not an object of the shape its kind requires, or has fields it does not.
    #[error("{origin}: {object}: {message}")]
    DecodeObject {
        /// File and document number.
        origin: String,
        /// `Kind namespace/name`, as far as known.
        object: String,
        /// What is wrong.
        message: String,
    },
    /// The same object appears twice.
    #[error("{origin}: {object} is already defined in {first}")]
    DuplicateObject {
        /// Where the second copy is.
        origin: String,
        /// `Kind namespace/name`.
        object: String,
        /// Where the first copy is.
        first: String,
    },
}

/// The objects read from some manifests.
#[derive(Debug, Default)]
pub struct Manifests {
    /// McpServers.
    pub servers: Vec<McpServer>,
    /// McpAccessPolicies.
    pub policies: Vec<McpAccessPolicy>,
    /// ConfigMaps (the document collections that `configMapRef` names).
    pub config_maps: Vec<ConfigMap>,
    /// Compiled PolicyDocuments, each with where it was read (file and document number).
    pub policy_documents: Vec<(String, PolicyDocument)>,
    /// `Kind namespace/name` → where it was read, to refuse duplicates.
    origins: BTreeMap<String, String>,
}

impl Manifests {
    /// Adds the objects of one (multi-document) YAML text; `origin` names it in messages (a file
    /// name). Objects without a namespace get `namespace`, like `kubectl apply -n`.
    pub fn add_yaml(&mut self, text: &str, origin: &str, namespace: &str) -> Result<(), ManifestError> {
        for (index, document) in yaml_serde::Deserializer::from_str(text).enumerate() {
            let origin = format!("{origin} (document {})", index + 1);
            let value = yaml_serde::Value::deserialize(document).map_err(|source| ManifestError::ParseYaml {
                origin: origin.clone(),
                source,
            })?;
            if value.is_null() {
                continue;
            }
            let value: Value = serde_json::to_value(&value).map_err(|e| ManifestError::DecodeObject {
                origin: origin.clone(),
                object: "document".into(),
                message: e.to_string(),
            })?;
            self.add_object(value, &origin, namespace)?;
        }
        Ok(())
    }

    /// Whether nothing Palisade reads was found.
    pub fn is_empty(&self) -> bool {
        self.servers.is_empty() && self.policies.is_empty() && self.policy_documents.is_empty()
    }

    fn add_object(&mut self, mut value: Value, origin: &str, namespace: &str) -> Result<(), ManifestError> {
        let field = |name: &str| value.get(name).and_then(Value::as_str).unwrap_or_default().to_owned();
        let (api_version, kind) = (field("apiVersion"), field("kind"));
        let group = api_version.split_once('/').map_or("", |(group, _)| group);
        match (group, kind.as_str()) {
            ("palisade.dev", "McpServer" | "McpAccessPolicy" | "PolicyDocument")
                if api_version != PALISADE_API_VERSION =>
            {
                return Err(ManifestError::DecodeObject {
                    origin: origin.into(),
                    object: kind,
                    message: format!("apiVersion {api_version} is not one Palisade reads ({PALISADE_API_VERSION})"),
                });
            }
            ("palisade.dev", "PolicyDocument") => {
                let document = serde_json::from_value(value).map_err(|e| ManifestError::DecodeObject {
                    origin: origin.into(),
                    object: kind,
                    message: e.to_string(),
                })?;
                self.policy_documents.push((origin.into(), document));
                return Ok(());
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
        let object = format!(
            "{kind} {}/{}",
            value
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or(namespace),
            value
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("<no name>")
        );
        let decode_error = |e: crate::strict::DecodeError| ManifestError::DecodeObject {
            origin: origin.into(),
            object: object.clone(),
            message: e.to_string(),
        };
        match kind.as_str() {
            "McpServer" => {
                let server: McpServer = decode_strict(&value).map_err(decode_error)?;
                self.remember(&kind, object_key(&server), origin)?;
                self.servers.push(server);
            }
            "McpAccessPolicy" => {
                let policy: McpAccessPolicy = decode_strict(&value).map_err(decode_error)?;
                self.remember(&kind, object_key(&policy), origin)?;
                self.policies.push(policy);
            }
            _ => {
                let config_map: ConfigMap = decode_strict(&value).map_err(decode_error)?;
                self.remember(&kind, object_key(&config_map), origin)?;
                self.config_maps.push(config_map);
            }
        }
        Ok(())
    }

    fn remember(&mut self, kind: &str, key: String, origin: &str) -> Result<(), ManifestError> {
        let object = format!("{kind} {key}");
        if let Some(first) = self.origins.get(&object) {
            return Err(ManifestError::DuplicateObject {
                origin: origin.into(),
                object,
                first: first.clone(),
            });
        }
        self.origins.insert(object, origin.into());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use kube::ResourceExt;

    use super::*;

    fn read(yaml: &str) -> Result<Manifests, ManifestError> {
        let mut manifests = Manifests::default();
        manifests.add_yaml(yaml, "test.yaml", "default")?;
        Ok(manifests)
    }

    #[test]
    fn misspelt_fields_are_refused_with_their_path() {
        let error = read(
            "apiVersion: palisade.dev/v1alpha1\nkind: McpServer\nmetadata: {name: s}\n\
             spec: {auth: {allowAnonymous: true}, networkPolicy: {enable: true}, scheduling: {nodeSelector: {}}}",
        )
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "test.yaml (document 1): McpServer default/s: unknown field(s): spec.networkPolicy.enable"
        );
    }

    #[test]
    fn other_kinds_are_ignored_and_namespaces_defaulted() {
        let manifests = read(
            "apiVersion: v1\nkind: Secret\nmetadata: {name: x}\n---\n---\n\
             apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {a.md: x}\n---\n\
             apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: other}\n",
        )
        .unwrap();
        assert_eq!(manifests.config_maps.len(), 2);
        assert_eq!(manifests.config_maps[0].namespace().as_deref(), Some("default"));
        assert_eq!(manifests.config_maps[1].namespace().as_deref(), Some("other"));
        assert!(manifests.is_empty());
    }

    #[test]
    fn duplicates_and_other_versions_are_refused() {
        let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n";
        let error = read(&format!("{cm}---\n{cm}")).unwrap_err();
        assert_eq!(
            error.to_string(),
            "test.yaml (document 2): ConfigMap default/c is already defined in test.yaml (document 1)"
        );
        let error = read("apiVersion: palisade.dev/v1\nkind: McpServer\nmetadata: {name: s}\n").unwrap_err();
        assert_eq!(
            error.to_string(),
            "test.yaml (document 1): McpServer: apiVersion palisade.dev/v1 is not one Palisade reads \
             (palisade.dev/v1alpha1)"
        );
    }

    #[test]
    fn policy_documents_are_read_strictly() {
        let error = read("apiVersion: palisade.dev/v1alpha1\nkind: PolicyDocument\nmetadata: {}\nrole: []\n")
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("test.yaml (document 1): PolicyDocument: unknown field `role`"),
            "{error}"
        );
    }

    #[test]
    fn yaml_errors_name_the_document() {
        let error = read("a: 1\n---\n[unclosed\n").unwrap_err().to_string();
        assert!(error.starts_with("test.yaml (document 2): not valid YAML: "), "{error}");
    }
}
