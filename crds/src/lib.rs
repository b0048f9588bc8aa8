//! The Palisade API: the `McpServer` and `McpAccessPolicy` custom resources, the mounted
//! `PolicyDocument` format, the compiler from the former to the latter, and the one policy
//! evaluator that the operator (to test a policy before rollout) and the server (on every
//! request) both use.
//!
//! It also holds the one validation every part runs before a policy is rolled out or passed:
//! [`manifests`] reads objects strictly ([`strict`]: unknown fields are errors), [`validate`]
//! checks one McpServer with its policies, [`verdicts`] every McpServer of a set of manifests.
//!
//! This crate does no I/O: no Kubernetes client, no HTTP, no files, no clock.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod access_policy;
pub mod arguments;
pub mod bind;
pub mod catalog;
pub mod common;
pub mod compile;
pub mod conditions;
pub mod document;
pub mod document_check;
pub mod evaluator;
pub mod identity_source;
pub mod inventory;
pub mod manifests;
pub mod mcp_server;
pub mod policy_tests;
pub mod problem;
pub mod scope;
pub mod scope_hierarchy;
pub mod secret_files;
pub mod secret_uses;
pub mod strict;
pub mod telemetry;
#[cfg(test)]
mod test_objects;
pub mod tool_match;
pub mod upstream;
pub mod validate;
pub mod verdicts;

pub use access_policy::{McpAccessPolicy, McpAccessPolicySpec, McpAccessPolicyStatus};
pub use bind::{Bound, bound_policies};
pub use catalog::Catalog;
pub use compile::{CompileOptions, Compiled, compile};
pub use document::PolicyDocument;
pub use evaluator::{Access, Decision, Effect, Identity, Policy, Reason};
pub use identity_source::{BindingSource, IdentitySource};
pub use manifests::Manifests;
pub use mcp_server::{McpServer, McpServerSpec, McpServerStatus};
pub use problem::{Problem, Problems};
pub use validate::{ValidateError, ValidatedServer, validate};

/// Re-exported so that every crate uses the same kube and k8s-openapi.
pub use k8s_openapi;
pub use kube;

use kube::CustomResourceExt;

/// File name, under `crds/`, of each generated CustomResourceDefinition.
pub const CRD_FILES: [&str; 2] = ["palisade.dev_mcpservers.yaml", "palisade.dev_mcpaccesspolicies.yaml"];

/// The CustomResourceDefinitions as YAML, in the order of [`CRD_FILES`].
pub fn crd_yamls() -> [String; 2] {
    [to_yaml(&McpServer::crd()), to_yaml(&McpAccessPolicy::crd())]
}

fn to_yaml<T: serde::Serialize>(value: &T) -> String {
    yaml_serde::to_string(value).expect("a CRD always serializes")
}
