//! Strict decoding of Kubernetes objects read from files: a field the type does not know is an
//! error, as with the API server's strict field validation (`kubectl apply`'s default), because a
//! misspelt field would otherwise silently do nothing (a policy test case with `deny:` instead of
//! `denied:` would check nothing and pass).
//!
//! ```
//! use palisade_crds::McpAccessPolicy;
//! use palisade_crds::strict::{DecodeError, decode_strict};
//!
//! let policy = serde_json::json!({
//!     "apiVersion": "palisade.dev/v1alpha1",
//!     "kind": "McpAccessPolicy",
//!     "metadata": {"name": "p", "namespace": "team-a"},
//!     "spec": {"tests": [{"name": "t", "identity": {}, "deny": ["read"]}]},
//! });
//! let error = decode_strict::<McpAccessPolicy>(&policy).unwrap_err();
//! assert!(matches!(error, DecodeError::UnknownFields(_)));
//! assert_eq!(error.to_string(), "unknown field(s): spec.tests[0].deny");
//! ```

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// The top-level fields compared with the typed object: what a person writes. `metadata` is read
/// by Kubernetes' own `ObjectMeta` and `status` is written by controllers.
const CHECKED_FIELDS: [&str; 2] = ["spec", "data"];

/// Why an object does not decode.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The object has no `metadata.name`.
    #[error("metadata.name is missing")]
    MissingName,
    /// The object does not have the shape of its kind (a wrong type, a missing required field).
    #[error("{0}")]
    Shape(#[from] serde_json::Error),
    /// Fields the kind does not have, as field paths (`spec.tests[2].deny`).
    #[error("unknown field(s): {}", .0.join(", "))]
    UnknownFields(Vec<String>),
}

/// Decodes `value` into `T`, refusing a missing name and any field of `spec` or `data` that `T`
/// does not know.
pub fn decode_strict<T: DeserializeOwned + Serialize>(value: &Value) -> Result<T, DecodeError> {
    if value
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return Err(DecodeError::MissingName);
    }
    let object: T = serde_json::from_value(value.clone())?;
    let round_trip = serde_json::to_value(&object)?;
    let mut unknown = Vec::new();
    for field in CHECKED_FIELDS {
        match (value.get(field), round_trip.get(field)) {
            (Some(input), Some(output)) => unknown_fields(input, output, field, &mut unknown),
            (Some(input), None) if !is_empty(input) => unknown.push(field.to_owned()),
            _ => {}
        }
    }
    if unknown.is_empty() {
        Ok(object)
    } else {
        Err(DecodeError::UnknownFields(unknown))
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::McpServer;

    fn server(spec: Value) -> Value {
        json!({"apiVersion": "palisade.dev/v1alpha1", "kind": "McpServer", "metadata": {"name": "s"}, "spec": spec})
    }

    #[test]
    fn every_unknown_field_is_named_with_its_path() {
        let value = server(json!({
            "auth": {"allowAnonymous": true, "issuer": []},
            "networkPolicy": {"enable": true},
            "tools": [{"name": "t", "collection": "c", "action": "readAll", "acton": "get"}],
        }));
        let error = decode_strict::<McpServer>(&value).unwrap_err();
        assert_eq!(
            error.to_string(),
            "unknown field(s): spec.networkPolicy.enable, spec.tools[0].acton"
        );
    }

    #[test]
    fn empty_values_and_known_fields_pass() {
        let value = server(json!({"auth": {"allowAnonymous": true}, "scheduling": {"nodeSelector": {}}}));
        let server: McpServer = decode_strict(&value).unwrap();
        assert!(server.spec.auth.allow_anonymous);
    }

    #[test]
    fn a_name_is_required_and_a_wrong_shape_is_reported() {
        let nameless = json!({"apiVersion": "palisade.dev/v1alpha1", "kind": "McpServer", "metadata": {}});
        assert_eq!(
            decode_strict::<McpServer>(&nameless).unwrap_err().to_string(),
            "metadata.name is missing"
        );
        let wrong = server(json!({"replicas": "two"}));
        assert!(matches!(
            decode_strict::<McpServer>(&wrong).unwrap_err(),
            DecodeError::Shape(_)
        ));
    }
}
