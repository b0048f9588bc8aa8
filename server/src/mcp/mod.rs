//! The MCP protocol: JSON-RPC messages, protocol revisions, and the methods served.

pub mod jsonrpc;
pub mod methods;
pub mod protocol;
pub mod proxy;
