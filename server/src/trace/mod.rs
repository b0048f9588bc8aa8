//! Traces of requests, exported over OTLP when the standard `OTEL_*` variables ask for it (see
//! `palisade-telemetry`).
//!
//! A request's spans:
//!
//! ```text
//! tools/call read_file            SERVER  the request (POST /mcp until the message is parsed)
//! ├── authenticate                INTERNAL
//! │   └── jwks.fetch              CLIENT   a key fetch this request waited for
//! ├── authorize                   INTERNAL decision, rule, reason
//! └── execute_tool read_file      INTERNAL a document tool (or read_resource)
//!     — or, in proxy mode —
//! └── tools/call read_file        CLIENT   the upstream call (network.transport, server.address,
//!                                          server.port); its context goes upstream
//! ```

mod peer;
mod propagation;
mod request;
#[cfg(test)]
pub(crate) mod testing;

pub use peer::UpstreamPeer;
pub use propagation::{from_headers, from_meta, inject_headers, inject_meta};
pub use request::{Decision, Message, RequestTrace, TraceIds, UpstreamCall};
