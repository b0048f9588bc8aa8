//! The client side of proxy mode: Palisade talking to the MCP server it stands in front of.
//!
//! - [`connection`]: JSON-RPC over a byte stream, one message per line (the MCP stdio framing):
//!   Palisade's own request ids, answers matched to callers, timeouts that cancel upstream,
//!   bounded messages, and server-to-client requests refused (Palisade declares no client
//!   capabilities).
//! - [`stdio`]: an upstream run as a child process, speaking on its stdin and stdout; its
//!   stderr is its log.
//! - [`http`]: an upstream at a Streamable HTTP endpoint, with a session of Palisade's own.
//! - [`handshake`]: the MCP handshake as a client with no capabilities, and the tool list.
//! - [`supervisor`]: one stdio upstream kept running, restarted with back-off.
//! - [`endpoint`]: the upstream a proxying server fronts, stdio or HTTP, behind one type.
//! - [`pin`]: the hash a tool's definition is pinned by, against rug pulls.
//!
//! Nothing here decides access: the upstream's answers are data, and the policy is applied by
//! the caller of these types before any request leaves.

pub mod connection;
pub mod credentials;
pub mod endpoint;
pub mod handshake;
pub mod http;
pub mod oauth;
pub mod pin;
pub mod sse;
pub mod stdio;
pub mod supervisor;

use std::future::Future;
use std::time::Duration;

use serde_json::{Map, Value};

/// A way to send JSON-RPC messages to an upstream.
pub trait Transport: Send + Sync {
    /// Sends request `method` and waits at most `timeout` for its answer.
    fn request(
        &self,
        method: &str,
        params: Option<Value>,
        timeout: Duration,
    ) -> impl Future<Output = Result<Value, UpstreamError>> + Send;

    /// Sends notification `method`.
    fn notify(&self, method: &str, params: Option<Value>) -> impl Future<Output = Result<(), UpstreamError>> + Send;
}

impl Transport for connection::Connection {
    async fn request(&self, method: &str, params: Option<Value>, timeout: Duration) -> Result<Value, UpstreamError> {
        connection::Connection::request(self, method, params, timeout).await
    }

    async fn notify(&self, method: &str, params: Option<Value>) -> Result<(), UpstreamError> {
        connection::Connection::notify(self, method, params).await
    }
}

/// The outcome an answer message carries: its `result`, or its `error` as
/// [`UpstreamError::Rpc`]. `Err` with what is wrong when the message has both or neither, or a
/// malformed error (a protocol violation, whichever transport carried it).
fn outcome(message: &Map<String, Value>) -> Result<Result<Value, UpstreamError>, String> {
    match (message.get("result"), message.get("error")) {
        (Some(result), None) => Ok(Ok(result.clone())),
        (None, Some(error)) => {
            let code = error.get("code").and_then(Value::as_i64);
            let text = error.get("message").and_then(Value::as_str);
            match (code, text) {
                (Some(code), Some(text)) => Ok(Err(UpstreamError::Rpc {
                    code,
                    message: text.to_owned(),
                    data: error.get("data").cloned(),
                })),
                _ => Err("an error without an integer code and a string message".into()),
            }
        }
        _ => Err("an answer with both or neither of result and error".into()),
    }
}

/// Why a request to the upstream did not get a result.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum UpstreamError {
    /// The upstream is not running, exited, or closed its stream; the text says why.
    #[error("the upstream is unavailable: {0}")]
    Unavailable(String),
    /// No answer within the request's time.
    #[error("the upstream did not answer within {} s", .0.as_secs_f64())]
    Timeout(Duration),
    /// The upstream broke the protocol (a line that is not a JSON-RPC message, one too large,
    /// a malformed error); the connection is closed.
    #[error("the upstream broke the protocol: {0}")]
    Invalid(String),
    /// The upstream answered with a JSON-RPC error: passed on to the caller as it is.
    #[error("the upstream answered error {code}: {message}")]
    Rpc {
        /// The JSON-RPC error code.
        code: i64,
        /// The error message.
        message: String,
        /// The error data, if any.
        data: Option<Value>,
    },
}

impl UpstreamError {
    /// The HTTP status a caller gets: 503 unavailable, 504 timeout, 502 invalid; an upstream
    /// JSON-RPC error is an answer (200).
    pub fn http_status(&self) -> u16 {
        match self {
            Self::Unavailable(_) => 503,
            Self::Timeout(_) => 504,
            Self::Invalid(_) => 502,
            Self::Rpc { .. } => 200,
        }
    }

    /// What a caller is told: the kind of failure and what to do, never the detail (a command
    /// line, an address, the upstream's output), which goes to the operational log.
    pub fn caller_message(&self) -> String {
        match self {
            Self::Unavailable(_) => {
                "The upstream MCP server is unavailable.\n\nAction: retry after the time in Retry-After.".into()
            }
            Self::Timeout(after) => format!(
                "The upstream MCP server did not answer within {} s.\n\nAction: retry later, or ask the server's owner to raise its upstream timeout.",
                after.as_secs_f64()
            ),
            Self::Invalid(_) => {
                "The upstream MCP server gave an answer that breaks the MCP protocol.\n\nAction: report it to the server's owner.".into()
            }
            Self::Rpc { message, .. } => message.clone(),
        }
    }

    /// The `error.data.code` a caller gets (none for an upstream's own error).
    pub fn data_code(&self) -> Option<&'static str> {
        match self {
            Self::Unavailable(_) => Some("UPSTREAM_UNAVAILABLE"),
            Self::Timeout(_) => Some("UPSTREAM_TIMEOUT"),
            Self::Invalid(_) => Some("UPSTREAM_INVALID"),
            Self::Rpc { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_failure_has_its_status_and_code() {
        let cases = [
            (
                UpstreamError::Unavailable("exited".into()),
                503,
                Some("UPSTREAM_UNAVAILABLE"),
            ),
            (
                UpstreamError::Timeout(Duration::from_millis(2500)),
                504,
                Some("UPSTREAM_TIMEOUT"),
            ),
            (UpstreamError::Invalid("not JSON".into()), 502, Some("UPSTREAM_INVALID")),
            (
                UpstreamError::Rpc {
                    code: -32602,
                    message: "Unknown tool".into(),
                    data: None,
                },
                200,
                None,
            ),
        ];
        for (error, status, code) in cases {
            assert_eq!((error.http_status(), error.data_code()), (status, code), "{error}");
        }
        assert_eq!(
            UpstreamError::Timeout(Duration::from_millis(2500)).to_string(),
            "the upstream did not answer within 2.5 s"
        );
    }
}
