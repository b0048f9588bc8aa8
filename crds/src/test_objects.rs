//! Custom resources from YAML for the unit tests of this crate.

use crate::{McpAccessPolicy, McpServer};

/// An McpServer from the YAML of its `metadata` and `spec`.
pub fn server(yaml: &str) -> McpServer {
    let text = format!("apiVersion: palisade.dev/v1alpha1\nkind: McpServer\n{yaml}");
    yaml_serde::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// An McpAccessPolicy from the YAML of its `metadata` and `spec`.
pub fn policy(yaml: &str) -> McpAccessPolicy {
    let text = format!("apiVersion: palisade.dev/v1alpha1\nkind: McpAccessPolicy\n{yaml}");
    yaml_serde::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}
