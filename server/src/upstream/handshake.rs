//! What Palisade asks an upstream on its own behalf: the MCP handshake, as a 2025-11-25 client
//! that declares no capabilities, and the upstream's whole tool list.
//!
//! Every answer is checked for the shape the proxy relies on; one that does not fit is
//! [`UpstreamError::Invalid`] with what is wrong, never a panic or a silently empty list.

use std::time::Duration;

use serde_json::{Map, Value, json};

use super::{Transport, UpstreamError};

/// The protocol revision Palisade speaks to upstreams.
pub const PROTOCOL_VERSION: &str = "2025-11-25";
/// Most tools taken from one upstream (more is an invalid answer).
pub const MAX_TOOLS: usize = 1_000;
/// Most pages of `tools/list` followed.
pub const MAX_PAGES: usize = 100;

/// What the upstream said at the handshake.
#[derive(Debug, Clone, PartialEq)]
pub struct Handshake {
    /// The revision the upstream chose.
    pub protocol_version: String,
    /// `serverInfo.name`.
    pub server_name: String,
    /// The upstream's capabilities.
    pub capabilities: Map<String, Value>,
    /// The upstream's instructions, if any.
    pub instructions: Option<String>,
}

impl Handshake {
    /// Whether the upstream offers `capability` (`tools`, `resources`, `prompts`, ...).
    pub fn offers(&self, capability: &str) -> bool {
        self.capabilities.get(capability).is_some_and(Value::is_object)
    }
}

fn invalid(what: &str) -> UpstreamError {
    UpstreamError::Invalid(what.to_owned())
}

/// `initialize` and `notifications/initialized`, each within `timeout`.
pub async fn initialize<T: Transport>(connection: &T, timeout: Duration) -> Result<Handshake, UpstreamError> {
    let result = connection
        .request("initialize", Some(initialize_params()), timeout)
        .await?;
    let handshake = handshake(&result)?;
    connection.notify("notifications/initialized", None).await?;
    Ok(handshake)
}

/// The `initialize` request's params: Palisade as a client with no capabilities.
pub(super) fn initialize_params() -> Value {
    json!({
        "protocolVersion": PROTOCOL_VERSION,
        "capabilities": {},
        "clientInfo": {"name": "palisade-server", "version": env!("CARGO_PKG_VERSION")},
    })
}

/// The handshake an `initialize` result describes.
pub(super) fn handshake(result: &Value) -> Result<Handshake, UpstreamError> {
    let protocol_version = result
        .get("protocolVersion")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("the initialize result has no protocolVersion string"))?;
    let capabilities = result
        .get("capabilities")
        .and_then(Value::as_object)
        .ok_or_else(|| invalid("the initialize result has no capabilities object"))?;
    let server_name = result
        .pointer("/serverInfo/name")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("the initialize result has no serverInfo.name"))?;
    Ok(Handshake {
        protocol_version: protocol_version.to_owned(),
        server_name: server_name.to_owned(),
        capabilities: capabilities.clone(),
        instructions: result.get("instructions").and_then(Value::as_str).map(str::to_owned),
    })
}

/// Every tool of the upstream, following `nextCursor`; each request within `timeout`.
pub async fn list_tools<T: Transport>(
    connection: &T,
    timeout: Duration,
) -> Result<Vec<Map<String, Value>>, UpstreamError> {
    let mut tools = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let params = match &cursor {
            Some(cursor) => json!({"cursor": cursor}),
            None => json!({}),
        };
        let page = connection.request("tools/list", Some(params), timeout).await?;
        let listed = page
            .get("tools")
            .and_then(Value::as_array)
            .ok_or_else(|| invalid("a tools/list result without a tools array"))?;
        for tool in listed {
            let tool = tool
                .as_object()
                .filter(|t| t.get("name").is_some_and(Value::is_string))
                .ok_or_else(|| invalid("a tool that is not an object with a string name"))?;
            tools.push(tool.clone());
        }
        if tools.len() > MAX_TOOLS {
            return Err(invalid(&format!("more than {MAX_TOOLS} tools")));
        }
        match page.get("nextCursor") {
            None | Some(Value::Null) => return Ok(tools),
            Some(Value::String(next)) => cursor = Some(next.clone()),
            Some(_) => return Err(invalid("a nextCursor that is not a string")),
        }
    }
    Err(invalid(&format!("tools/list went on for more than {MAX_PAGES} pages")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_handshake_takes_what_the_proxy_needs() {
        let result = json!({
            "protocolVersion": "2025-11-25",
            "capabilities": {"tools": {"listChanged": true}, "logging": {}},
            "serverInfo": {"name": "mcp-servers/everything", "version": "2.0.0"},
            "instructions": "Try the echo tool.",
        });
        let handshake = handshake(&result).unwrap();
        assert_eq!(handshake.server_name, "mcp-servers/everything");
        assert!(handshake.offers("tools") && !handshake.offers("prompts"));
        assert_eq!(handshake.instructions.as_deref(), Some("Try the echo tool."));
    }

    #[test]
    fn a_handshake_without_its_fields_is_invalid() {
        let cases = [
            (json!({}), "the initialize result has no protocolVersion string"),
            (
                json!({"protocolVersion": "2025-11-25"}),
                "the initialize result has no capabilities object",
            ),
            (
                json!({"protocolVersion": "2025-11-25", "capabilities": {}, "serverInfo": {}}),
                "the initialize result has no serverInfo.name",
            ),
        ];
        for (result, why) in cases {
            assert_eq!(handshake(&result).unwrap_err(), invalid(why), "{result}");
        }
    }
}
