//! JSON-RPC 2.0 messages as MCP uses them over Streamable HTTP: one message per POST (batches
//! were removed in MCP 2025-06-18), requests with a string or integer id, notifications without.

use serde::Serialize;
use serde_json::{Map, Value, json};

/// Standard and MCP error codes.
pub mod code {
    /// Invalid JSON.
    pub const PARSE_ERROR: i64 = -32700;
    /// Not a valid request object.
    pub const INVALID_REQUEST: i64 = -32600;
    /// Unknown method.
    pub const METHOD_NOT_FOUND: i64 = -32601;
    /// Invalid parameters (including an unknown tool).
    pub const INVALID_PARAMS: i64 = -32602;
    /// Internal error.
    pub const INTERNAL_ERROR: i64 = -32603;
    /// Resource not found (MCP).
    pub const RESOURCE_NOT_FOUND: i64 = -32002;
    /// Authentication or authorization failure; the HTTP status carries the detail.
    pub const UNAUTHORIZED: i64 = -32001;
}

/// A request id: string or integer. `Null` only in error responses to unparseable requests.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Id {
    /// Integer id.
    Number(i64),
    /// String id.
    String(String),
    /// No usable id.
    Null,
}

/// One incoming message.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// A request expecting a response.
    Request {
        /// The id to echo.
        id: Id,
        /// The method.
        method: String,
        /// The params object (empty when absent).
        params: Map<String, Value>,
    },
    /// A notification (no response).
    Notification {
        /// The method.
        method: String,
    },
    /// A response or error from the client (to a request the server never sends): accepted and
    /// ignored.
    Response,
}

/// Why a body is not one acceptable JSON-RPC message.
#[derive(Debug, Clone, PartialEq)]
pub struct Invalid {
    /// The id, when one could be read.
    pub id: Id,
    /// JSON-RPC error code.
    pub code: i64,
    /// Message for the client.
    pub message: String,
}

fn invalid(id: Id, code: i64, message: impl Into<String>) -> Invalid {
    Invalid {
        id,
        code,
        message: message.into(),
    }
}

/// Parses one message from a request body.
pub fn parse(body: &[u8]) -> Result<Incoming, Invalid> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| invalid(Id::Null, code::PARSE_ERROR, format!("Parse error: {e}")))?;
    let Value::Object(mut object) = value else {
        let message = if value.is_array() {
            "Invalid Request: JSON-RPC batches are not supported (removed in MCP 2025-06-18); send one message per request"
        } else {
            "Invalid Request: expected a JSON-RPC message object"
        };
        return Err(invalid(Id::Null, code::INVALID_REQUEST, message));
    };
    let id = match object.remove("id") {
        None => None,
        Some(Value::String(s)) => Some(Id::String(s)),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(n) => Some(Id::Number(n)),
            None => {
                return Err(invalid(
                    Id::Null,
                    code::INVALID_REQUEST,
                    "Invalid Request: id must be an integer or a string",
                ));
            }
        },
        Some(_) => {
            return Err(invalid(
                Id::Null,
                code::INVALID_REQUEST,
                "Invalid Request: id must be an integer or a string",
            ));
        }
    };
    let err_id = id.clone().unwrap_or(Id::Null);
    if object.get("jsonrpc") != Some(&Value::String("2.0".into())) {
        return Err(invalid(
            err_id,
            code::INVALID_REQUEST,
            "Invalid Request: jsonrpc must be \"2.0\"",
        ));
    }
    let method = match object.remove("method") {
        Some(Value::String(method)) if method.is_empty() => {
            return Err(invalid(
                err_id,
                code::INVALID_REQUEST,
                "Invalid Request: method must not be empty",
            ));
        }
        Some(Value::String(method)) => method,
        Some(_) => {
            return Err(invalid(
                err_id,
                code::INVALID_REQUEST,
                "Invalid Request: method must be a string",
            ));
        }
        None if id.is_some() && (object.contains_key("result") || object.contains_key("error")) => {
            return Ok(Incoming::Response);
        }
        None => {
            return Err(invalid(
                err_id,
                code::INVALID_REQUEST,
                "Invalid Request: method is missing",
            ));
        }
    };
    let params = match object.remove("params") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(params)) => params,
        Some(_) => {
            return Err(invalid(
                err_id,
                code::INVALID_PARAMS,
                "Invalid params: params must be an object",
            ));
        }
    };
    Ok(match id {
        Some(id) => Incoming::Request { id, method, params },
        None => Incoming::Notification { method },
    })
}

/// A success response body.
pub fn result(id: &Id, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

/// [`result`] around a result serialized already: the same text `result` would serialize to.
pub fn result_text(id: &Id, result: &str) -> String {
    let id = serde_json::to_string(id).expect("ids serialize");
    let mut text = String::with_capacity(result.len() + id.len() + 32);
    text.push_str("{\"id\":");
    text.push_str(&id);
    text.push_str(",\"jsonrpc\":\"2.0\",\"result\":");
    text.push_str(result);
    text.push('}');
    text
}

/// An error response body.
pub fn error(id: &Id, code: i64, message: &str, data: Option<Value>) -> Value {
    let mut error = json!({"code": code, "message": message});
    if let Some(data) = data {
        error["data"] = data;
    }
    json!({"jsonrpc": "2.0", "id": id, "error": error})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_notifications_and_responses() {
        assert_eq!(
            parse(br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#),
            Ok(Incoming::Request {
                id: Id::Number(1),
                method: "tools/list".into(),
                params: Map::new()
            })
        );
        assert_eq!(
            parse(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#),
            Ok(Incoming::Notification {
                method: "notifications/initialized".into()
            })
        );
        assert_eq!(
            parse(br#"{"jsonrpc":"2.0","id":"a","result":{}}"#),
            Ok(Incoming::Response)
        );
    }

    #[test]
    fn malformed_messages_get_the_right_code() {
        let code_of = |body: &[u8]| parse(body).unwrap_err().code;
        assert_eq!(code_of(b"{not json"), code::PARSE_ERROR);
        assert_eq!(
            code_of(br#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#),
            code::INVALID_REQUEST
        );
        assert_eq!(
            code_of(br#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#),
            code::INVALID_REQUEST
        );
        assert_eq!(
            code_of(br#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#),
            code::INVALID_REQUEST
        );
        assert_eq!(
            code_of(br#"{"jsonrpc":"2.0","id":1.5,"method":"ping"}"#),
            code::INVALID_REQUEST
        );
        assert_eq!(
            code_of(br#"{"jsonrpc":"2.0","id":1,"method":7}"#),
            code::INVALID_REQUEST
        );
        assert_eq!(
            code_of(br#"{"jsonrpc":"2.0","id":1,"method":"x","params":[1]}"#),
            code::INVALID_PARAMS
        );
        assert_eq!(
            parse(br#"{"jsonrpc":"2.0","id":7,"method":7}"#).unwrap_err().id,
            Id::Number(7)
        );
        // Found by the jsonrpc_message fuzz target (fuzz/regressions/jsonrpc_message/).
        let empty = parse(br#"{"jsonrpc":"2.0","id":3,"method":""}"#).unwrap_err();
        assert_eq!(
            (empty.code, empty.message.as_str(), empty.id),
            (
                code::INVALID_REQUEST,
                "Invalid Request: method must not be empty",
                Id::Number(3)
            )
        );
        assert!(
            parse(br#"{"jsonrpc":"2.0","method":""}"#).is_err(),
            "nor an empty notification"
        );
    }
}
