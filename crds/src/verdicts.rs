//! [`validate`] for every McpServer of a set of manifests, with the policies that bind it
//! ([`crate::bind`]): the verdicts `palisade-operator render` and `palisade-server policy check`,
//! `policy compile` and `policy explain` give, with the same warnings and the same messages.
//!
//! ```
//! use palisade_crds::CompileOptions;
//! use palisade_crds::manifests::Manifests;
//! use palisade_crds::verdicts::validate_all;
//!
//! let mut manifests = Manifests::default();
//! manifests
//!     .add_yaml(
//!         "apiVersion: palisade.dev/v1alpha1\nkind: McpServer\nmetadata: {name: Docs}\n\
//!          spec: {auth: {allowAnonymous: true}}\n",
//!         "docs.yaml",
//!         "team-a",
//!     )
//!     .unwrap();
//! let verdicts = validate_all(&manifests, &CompileOptions::default());
//! assert!(verdicts.valid.is_empty());
//! assert_eq!(
//!     verdicts.invalid.to_string(),
//!     "McpServer team-a/Docs is invalid:\n  McpServer team-a/Docs: metadata.name: \"Docs\" must be a DNS-1035 \
//!      label (lower-case letters, digits and '-', starting with a letter, at most 63 characters): it names the \
//!      server's Service"
//! );
//! ```

use std::collections::BTreeSet;
use std::fmt;

use kube::ResourceExt;

use crate::McpServer;
use crate::bind::bound_policies;
use crate::compile::{CompileOptions, object_key};
use crate::manifests::Manifests;
use crate::validate::{ValidateError, ValidatedServer, validate};

/// The verdict on every McpServer of some manifests.
#[derive(Debug)]
pub struct Verdicts<'a> {
    /// The servers that can be rolled out, sorted by namespace and name.
    pub valid: Vec<ValidatedServer<'a>>,
    /// The servers that cannot, with why.
    pub invalid: InvalidServers,
    /// Not wrong, but worth a look: refused references, the validation's warnings, document
    /// ConfigMaps that are not among the manifests, policies that bind no server, no server at
    /// all.
    pub warnings: Vec<String>,
}

/// McpServers that cannot be rolled out, each `namespace/name` with why; sorted.
#[derive(Debug, Default)]
pub struct InvalidServers(pub Vec<(String, ValidateError)>);

impl InvalidServers {
    /// Whether every server passed.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for InvalidServers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (server, error)) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "McpServer {server} {}:", error.verdict())?;
            for problem in error.problems().iter() {
                write!(f, "\n  {problem}")?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for InvalidServers {}

/// Validates every McpServer of `manifests` with the policies that bind it, for the cluster
/// `options` describe.
pub fn validate_all<'a>(manifests: &'a Manifests, options: &CompileOptions<'_>) -> Verdicts<'a> {
    let mut servers: Vec<&McpServer> = manifests.servers.iter().collect();
    servers.sort_by_key(|s| object_key(*s));
    let mut verdicts = Verdicts {
        valid: Vec::new(),
        invalid: InvalidServers::default(),
        warnings: Vec::new(),
    };
    let mut bound_anywhere = BTreeSet::new();
    for server in servers {
        let key = object_key(server);
        let bound = bound_policies(server, &manifests.policies);
        verdicts.warnings.extend(bound.refused.iter().map(ToString::to_string));
        bound_anywhere.extend(bound.policies.iter().map(|p| object_key(*p)));
        let validated = match validate(server, &bound.policies, options) {
            Ok(validated) => validated,
            Err(error) => {
                verdicts.invalid.0.push((key, error));
                continue;
            }
        };
        verdicts
            .warnings
            .extend(validated.warnings().iter().map(ToString::to_string));
        for (i, collection) in server.spec.documents.iter().enumerate() {
            let Some(reference) = &collection.config_map_ref else {
                continue;
            };
            let found = manifests
                .config_maps
                .iter()
                .any(|c| c.name_any() == reference.name && c.namespace() == server.namespace());
            if !found {
                verdicts.warnings.push(format!(
                    "McpServer {key}: spec.documents[{i}].configMapRef: ConfigMap {:?} is not among the inputs; \
                     the pods start once it exists",
                    reference.name
                ));
            }
        }
        verdicts.valid.push(validated);
    }
    for policy in &manifests.policies {
        let key = object_key(policy);
        if !bound_anywhere.contains(&key) {
            verdicts.warnings.push(format!(
                "McpAccessPolicy {key} binds no McpServer among the inputs; its tests did not run"
            ));
        }
    }
    if manifests.servers.is_empty() {
        verdicts.warnings.push("no McpServer among the inputs".into());
    }
    verdicts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifests(yaml: &str) -> Manifests {
        let mut manifests = Manifests::default();
        manifests.add_yaml(yaml, "test.yaml", "default").unwrap();
        manifests
    }

    const SERVER: &str = "apiVersion: palisade.dev/v1alpha1\nkind: McpServer\nmetadata: {name: s}\nspec:\n  \
                          documents: [{collection: c, configMapRef: {name: c}}]\n  \
                          tools: [{name: read, collection: c, action: readAll}]\n  auth: {allowAnonymous: true}\n";

    #[test]
    fn warnings_name_missing_config_maps_and_unbound_policies() {
        let manifests = manifests(&format!(
            "{SERVER}---\napiVersion: palisade.dev/v1alpha1\nkind: McpAccessPolicy\nmetadata: {{name: p}}\n\
             spec: {{targetRefs: [{{name: other}}]}}\n"
        ));
        let verdicts = validate_all(&manifests, &CompileOptions::default());
        assert_eq!(verdicts.valid.len(), 1);
        assert!(verdicts.invalid.is_empty());
        assert_eq!(
            verdicts.warnings,
            [
                "McpServer default/s: spec.tools[0]: no role can reach tool \"read\": it is visible only to tokens \
                 that carry its scopes themselves",
                "McpServer default/s: spec.documents[0].configMapRef: ConfigMap \"c\" is not among the inputs; the \
                 pods start once it exists",
                "McpAccessPolicy default/p binds no McpServer among the inputs; its tests did not run",
            ]
        );
    }

    #[test]
    fn failures_are_listed_per_server() {
        let manifests = manifests(&format!(
            "{SERVER}---\n{}",
            SERVER.replace("name: s}", "name: t}").replace(
                "{allowAnonymous: true}",
                "{allowAnonymous: true}\n  service: {port: 9090}"
            )
        ));
        let verdicts = validate_all(&manifests, &CompileOptions::default());
        assert_eq!(verdicts.valid.len(), 1);
        assert_eq!(
            verdicts.invalid.to_string(),
            "McpServer default/t is invalid:\n  McpServer default/t: spec.service.port: port 9090 is the Service's \
             metrics port; choose another"
        );
    }

    #[test]
    fn no_server_is_worth_a_warning() {
        let manifests = Manifests::default();
        let verdicts = validate_all(&manifests, &CompileOptions::default());
        assert_eq!(verdicts.warnings, ["no McpServer among the inputs"]);
    }
}
