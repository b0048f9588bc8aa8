//! `palisade-server`: the MCP server every Palisade pod runs.
//!
//! It reads the compiled policy, the documents and the secret files mounted into the pod
//! (docs/server.md, "What it reads"), authenticates every request ([`auth`]), authorizes it with
//! the shared evaluator of `palisade-crds`, serves documents as tools and resources ([`mcp`],
//! [`documents`]), writes an audit event for every decision ([`audit`]) and exposes metrics
//! ([`metrics`]). Files are reloaded without a restart ([`state`]). TLS, with optional client
//! certificates, is terminated by [`tls`] when configured.

#![forbid(unsafe_code)]

pub mod audit;
pub mod auth;
pub mod config;
pub mod documents;
pub mod edge;
pub mod http;
pub mod mcp;
pub mod metrics;
pub mod policy_cli;
pub mod rate_limit;
pub mod state;
pub mod tls;
pub mod token;
pub mod trace;
pub mod upstream;
