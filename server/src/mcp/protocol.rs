//! Protocol revisions and how a request selects one.
//!
//! One endpoint serves both eras (MCP 2026-07-28, "Versioning": a server MAY serve both
//! concurrently):
//! - **modern** (2026-07-28): stateless; every request carries its protocol version and client
//!   capabilities in `params._meta`, mirrored in the `MCP-Protocol-Version`, `Mcp-Method` and
//!   `Mcp-Name` headers; `initialize` and `ping` are gone, `server/discover` replaces them;
//! - **legacy** (2025-06-18, 2025-11-25): `initialize` negotiates a version, later requests name it
//!   in `MCP-Protocol-Version` (absent: assume 2025-03-26, served like 2025-06-18).
//!
//! A request is modern when its `MCP-Protocol-Version` header names the modern version or its
//! `_meta` carries a protocol version; a modern `initialize` is answered like any method the
//! modern revision removed (404, `-32601`).

use serde_json::{Map, Value};

use super::jsonrpc::code;

/// The modern revision.
pub const MODERN: &str = "2026-07-28";
/// Legacy revisions, newest first.
pub const LEGACY: [&str; 2] = ["2025-11-25", "2025-06-18"];
/// What a legacy request without `MCP-Protocol-Version` is assumed to speak.
pub const LEGACY_DEFAULT: &str = "2025-03-26";
/// Every revision served, newest first (the `supported` list of version errors).
pub const SUPPORTED: [&str; 3] = [MODERN, LEGACY[0], LEGACY[1]];

/// `_meta` key of the protocol version (modern).
pub const META_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
/// `_meta` key of the client capabilities (modern).
pub const META_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
/// `_meta` key of the server info in results (modern).
pub const META_SERVER_INFO: &str = "io.modelcontextprotocol/serverInfo";

/// Header mismatch (modern).
pub const HEADER_MISMATCH: i64 = -32020;
/// Unsupported protocol version (modern).
pub const UNSUPPORTED_VERSION: i64 = -32022;

/// The revision a request is served under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revision {
    /// 2026-07-28.
    Modern,
    /// 2025-11-25 (or the version `initialize` is negotiating).
    Legacy20251125,
    /// 2025-06-18, or 2025-03-26 assumed for a request without a version header.
    Legacy20250618,
}

impl Revision {
    /// Whether this is the stateless revision.
    pub fn is_modern(self) -> bool {
        self == Self::Modern
    }
}

/// The routing headers of a request.
#[derive(Debug, Clone, Copy, Default)]
pub struct RoutingHeaders<'a> {
    /// `MCP-Protocol-Version`.
    pub protocol_version: Option<&'a str>,
    /// `Mcp-Method`.
    pub method: Option<&'a str>,
    /// `Mcp-Name`.
    pub name: Option<&'a str>,
}

/// A protocol-level rejection: HTTP status, JSON-RPC code, message and data.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    /// HTTP status.
    pub status: u16,
    /// JSON-RPC error code.
    pub code: i64,
    /// Message.
    pub message: String,
    /// Error data.
    pub data: Option<Value>,
}

fn reject(status: u16, code: i64, message: impl Into<String>, data: Option<Value>) -> Rejection {
    Rejection {
        status,
        code,
        message: message.into(),
        data,
    }
}

fn unsupported(requested: &str) -> Rejection {
    reject(
        400,
        UNSUPPORTED_VERSION,
        "Unsupported protocol version",
        Some(serde_json::json!({"supported": SUPPORTED, "requested": requested})),
    )
}

/// A header value: trimmed, and decoded from the `=?base64?...?=` form.
fn header_value(raw: &str) -> Option<String> {
    use base64::Engine;
    let raw = raw.trim();
    match raw.strip_prefix("=?base64?").and_then(|r| r.strip_suffix("?=")) {
        Some(encoded) => base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok()),
        None => Some(raw.to_owned()),
    }
}

/// The value `Mcp-Name` must carry for a request, if its method requires one.
fn expected_name<'p>(method: &str, params: &'p Map<String, Value>) -> Option<Option<&'p str>> {
    let field = match method {
        "tools/call" | "prompts/get" => "name",
        "resources/read" => "uri",
        _ => return None,
    };
    Some(params.get(field).and_then(Value::as_str))
}

/// The tool a 2026-07-28 `tools/call` names in its routing headers (`MCP-Protocol-Version:
/// 2026-07-28`, `Mcp-Method: tools/call`, `Mcp-Name`), read before the body; [`select`] checks
/// later that the body agrees.
pub fn routed_tool(headers: RoutingHeaders<'_>) -> Option<String> {
    if headers.protocol_version.map(str::trim) != Some(MODERN) {
        return None;
    }
    if headers.method.and_then(header_value).as_deref() != Some("tools/call") {
        return None;
    }
    headers.name.and_then(header_value)
}

/// Selects the revision of a request and checks its version, `_meta` and routing headers.
pub fn select(method: &str, params: &Map<String, Value>, headers: RoutingHeaders<'_>) -> Result<Revision, Rejection> {
    let meta_version = params
        .get("_meta")
        .and_then(|m| m.get(META_VERSION))
        .and_then(Value::as_str);
    let header_version = headers.protocol_version.map(str::trim);
    let modern = header_version == Some(MODERN) || meta_version.is_some();
    if !modern {
        return match header_version {
            None => Ok(Revision::Legacy20250618),
            Some(v) if v == LEGACY[0] => Ok(Revision::Legacy20251125),
            Some(v) if v == LEGACY[1] || v == LEGACY_DEFAULT => Ok(Revision::Legacy20250618),
            Some(v) => Err(reject(
                400,
                code::INVALID_REQUEST,
                format!(
                    "Bad Request: unsupported MCP-Protocol-Version {v:?}; supported: {}",
                    SUPPORTED.join(", ")
                ),
                None,
            )),
        };
    }
    // Modern: headers must mirror the body (checked before version support, as the conformance
    // suite expects), then `_meta` must be complete, then the version supported.
    let mismatch = |what: &str| reject(400, HEADER_MISMATCH, format!("Header mismatch: {what}"), None);
    match headers.method.map(header_value) {
        None => return Err(mismatch("the Mcp-Method header is required")),
        Some(Some(value)) if value == method => {}
        Some(_) => return Err(mismatch("Mcp-Method does not match the request method")),
    }
    if let Some(expected) = expected_name(method, params) {
        match (headers.name.map(header_value), expected) {
            (None, _) => return Err(mismatch("the Mcp-Name header is required for this method")),
            (Some(Some(value)), Some(expected)) if value == expected => {}
            _ => return Err(mismatch("Mcp-Name does not match the request")),
        }
    }
    match (header_version, meta_version) {
        (Some(h), Some(m)) if h != m => return Err(mismatch("MCP-Protocol-Version does not match _meta")),
        (None, _) => return Err(mismatch("the MCP-Protocol-Version header is required")),
        _ => {}
    }
    let meta = params.get("_meta").and_then(Value::as_object);
    let capabilities = meta.and_then(|m| m.get(META_CAPABILITIES));
    let Some(version) = meta_version else {
        return Err(reject(
            400,
            code::INVALID_PARAMS,
            format!("Invalid params: _meta.{META_VERSION} is required"),
            None,
        ));
    };
    if !capabilities.is_some_and(Value::is_object) {
        return Err(reject(
            400,
            code::INVALID_PARAMS,
            format!("Invalid params: _meta.{META_CAPABILITIES} must be an object"),
            None,
        ));
    }
    if version != MODERN {
        return Err(unsupported(version));
    }
    Ok(Revision::Modern)
}

/// The version `initialize` answers with: the requested one when served, else the newest legacy.
pub fn negotiate(requested: Option<&str>) -> &'static str {
    LEGACY
        .iter()
        .find(|v| Some(**v) == requested)
        .copied()
        .unwrap_or(LEGACY[0])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn params(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    fn modern_meta() -> Value {
        json!({META_VERSION: MODERN, META_CAPABILITIES: {}})
    }

    #[test]
    fn legacy_requests_follow_the_version_header() {
        let none = Map::new();
        let h = |v| RoutingHeaders {
            protocol_version: v,
            ..Default::default()
        };
        assert_eq!(select("tools/list", &none, h(None)), Ok(Revision::Legacy20250618));
        assert_eq!(
            select("tools/list", &none, h(Some("2025-11-25"))),
            Ok(Revision::Legacy20251125)
        );
        assert_eq!(
            select("tools/list", &none, h(Some("2025-06-18"))),
            Ok(Revision::Legacy20250618)
        );
        assert_eq!(
            select("tools/list", &none, h(Some("1999-01-01"))).unwrap_err().status,
            400
        );
        assert_eq!(
            select("initialize", &params(json!({"protocolVersion": MODERN})), h(None)),
            Ok(Revision::Legacy20250618),
            "initialize without modern _meta is legacy, whatever version it asks for"
        );
    }

    #[test]
    fn modern_requests_must_mirror_the_body_in_headers() {
        let p = params(json!({"name": "get_public_info", "_meta": modern_meta()}));
        let ok = RoutingHeaders {
            protocol_version: Some(MODERN),
            method: Some("tools/call"),
            name: Some(" get_public_info "),
        };
        assert_eq!(select("tools/call", &p, ok), Ok(Revision::Modern));
        let encoded = RoutingHeaders {
            name: Some("=?base64?Z2V0X3B1YmxpY19pbmZv?="),
            ..ok
        };
        assert_eq!(select("tools/call", &p, encoded), Ok(Revision::Modern));
        for bad in [
            RoutingHeaders { method: None, ..ok },
            RoutingHeaders {
                method: Some("tools/list"),
                ..ok
            },
            RoutingHeaders { name: None, ..ok },
            RoutingHeaders {
                name: Some("get_confidential_info"),
                ..ok
            },
        ] {
            assert_eq!(select("tools/call", &p, bad).unwrap_err().code, HEADER_MISMATCH);
        }
    }

    #[test]
    fn modern_version_errors() {
        let headers = |v| RoutingHeaders {
            protocol_version: Some(v),
            method: Some("tools/list"),
            name: None,
        };
        let with_version = |v: &str| params(json!({"_meta": {META_VERSION: v, META_CAPABILITIES: {}}}));
        let err = select("tools/list", &with_version("9999-01-01"), headers(MODERN)).unwrap_err();
        assert_eq!((err.status, err.code), (400, HEADER_MISMATCH));
        let err = select("tools/list", &with_version("9999-01-01"), headers("9999-01-01")).unwrap_err();
        assert_eq!((err.status, err.code), (400, UNSUPPORTED_VERSION));
        assert_eq!(err.data.unwrap()["requested"], "9999-01-01");
        let err = select(
            "tools/list",
            &params(json!({"_meta": {META_VERSION: MODERN}})),
            headers(MODERN),
        )
        .unwrap_err();
        assert_eq!((err.status, err.code), (400, code::INVALID_PARAMS));
    }

    #[test]
    fn initialize_negotiates_a_legacy_version() {
        assert_eq!(negotiate(Some("2025-06-18")), "2025-06-18");
        assert_eq!(negotiate(Some("2025-11-25")), "2025-11-25");
        assert_eq!(negotiate(Some("2024-11-05")), "2025-11-25");
        assert_eq!(negotiate(Some(MODERN)), "2025-11-25");
        assert_eq!(negotiate(None), "2025-11-25");
    }
}
