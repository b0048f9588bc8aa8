//! `McpServer.spec.upstream`: an MCP server that Palisade stands in front of (proxy mode), and
//! the checks of its URL and headers that the CRD's schema, the compiler and `palisade-server`'s
//! flags all share.
//!
//! A proxying server lists the upstream's tools filtered by the McpAccessPolicies that target it
//! and checks every call before it is forwarded; the upstream never sees a caller's token (MCP
//! authorization 2025-11-25, "Access Token Privilege Restriction": a server "MUST NOT pass
//! through the token it received from the MCP client"). What the upstream is sent instead are
//! the headers named here, with values from Secrets.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use k8s_openapi::api::core::v1::{EnvVar, ResourceRequirements};
use schemars::JsonSchema;

use crate::common::SecretKeySource;
use crate::document::{PinningMode, UnpinnedTools};
use crate::mcp_server::ImagePullPolicy;

/// Default of `timeoutSeconds`: the time an upstream has to answer one forwarded request.
pub const DEFAULT_TIMEOUT_SECONDS: i32 = 25;
/// Largest `timeoutSeconds`.
pub const MAX_TIMEOUT_SECONDS: i32 = 300;
/// What the server's own `--request-timeout` exceeds the upstream's by, so that a slow upstream is
/// answered 504 `UPSTREAM_TIMEOUT` (and told the request is cancelled) before the server's own
/// deadline cuts the exchange.
pub const REQUEST_TIMEOUT_MARGIN_SECONDS: i32 = 5;

/// Headers an upstream header must not be: the ones Palisade sets itself on every message to the
/// upstream, the hop-by-hop headers of RFC 9110 section 7.6.1, and everything starting with
/// `mcp-` (the protocol's own headers: session, revision, method and parameters).
pub const RESERVED_HEADERS: [&str; 12] = [
    "accept",
    "connection",
    "content-length",
    "content-type",
    "expect",
    "host",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// The MCP server this server stands in front of.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.oauth) || !has(self.headers) || !self.headers.exists(h, h.name.lowerAscii() == 'authorization')")
    .message("oauth sets the upstream's Authorization header: remove the Authorization entry of headers").field_path(".oauth"))]
#[x_kube(validation = Rule::new("has(self.url) != has(self.container)")
    .message("set exactly one of url (an upstream reached over the network) and container (an upstream run in the server's pods)"))]
#[x_kube(validation = Rule::new("has(self.url) || (!has(self.headers) && !has(self.oauth))")
    .message("headers and oauth are the credentials of an upstream at a url: a container upstream takes its own from env").field_path(".headers"))]
pub struct UpstreamSpec {
    /// The upstream's Streamable HTTP endpoint: an `http://` or `https://` URL with a host, no
    /// `user:password@` and no fragment, e.g.
    /// `http://files-mcp.team-a.svc.cluster.local:3001/mcp`. Redirects are not followed. Not
    /// with `container`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = Rule::new("self.matches('^https?://[^/?#@\\\\s]+([/?][^#\\\\s]*)?$')")
        .message("an http:// or https:// URL with a host, without user:password@ and without a fragment"))]
    pub url: Option<String>,

    /// An MCP server image run in each of the server's pods, in a container of its own (it
    /// holds none of Palisade's keys or policy), reached over stdio (through
    /// `palisade-stdio-shim` and a Unix socket) or over Streamable HTTP on a loopback port. Not
    /// with `url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<UpstreamContainer>,

    /// Seconds the upstream has to answer one forwarded request; then the caller gets 504
    /// `UPSTREAM_TIMEOUT` and the upstream is told the request is cancelled. Defaults to 25.
    /// The server's own request timeout is set 5 seconds longer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 300))]
    pub timeout_seconds: Option<i32>,

    /// Headers sent with every request to the upstream, their values read from Secrets: the
    /// credentials the upstream expects (`Authorization: Bearer ...`, `X-API-Key`). The callers'
    /// own headers (their tokens included) never reach the upstream. A changed Secret is picked up
    /// within seconds, without a restart. Keyed by `name`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub headers: Vec<UpstreamHeader>,

    /// Get an access token for the upstream with OAuth 2.0 client credentials and send it as
    /// `Authorization: Bearer`: Palisade's own token, never a caller's. It is kept until shortly
    /// before it expires and renewed when the upstream refuses it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth: Option<UpstreamOAuth>,

    /// The upstream's tools as reviewed: the definition each is pinned to, and the title and
    /// description callers see instead of the upstream's. `status.upstream.tools` lists what the
    /// upstream offers with each tool's `sha256`, ready to copy here. A changed pin is in force
    /// within seconds, without a restart. Keyed by `name`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub tools: Vec<UpstreamTool>,

    /// What happens to a tool whose definition is not the one it is pinned to (a "rug pull": an
    /// upstream that changes what a reviewed tool says or takes), and to a tool with no pin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinning: Option<Pinning>,
}

/// One reviewed tool of the upstream.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct UpstreamTool {
    /// The upstream's tool name.
    #[schemars(length(min = 1, max = 128), regex(pattern = r"^[A-Za-z0-9_.-]+$"))]
    pub name: String,

    /// The accepted definition: `sha256:` and the hex SHA-256 of the tool's name, title,
    /// description, input schema and annotations as canonical JSON (as `status.upstream.tools`
    /// shows it). Unset leaves the tool unpinned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^sha256:[0-9a-f]{64}$"))]
    pub sha256: Option<String>,

    /// Shown to callers instead of the upstream's title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub title: Option<String>,

    /// Shown to callers instead of the upstream's description: the upstream's text never reaches
    /// them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    pub description: Option<String>,
}

/// What happens to tools that do not match their pin.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Pinning {
    /// A tool whose definition differs from its `sha256`: `Enforce` (default) withholds it (not
    /// listed, calls refused with `TOOL_WITHHELD`) until the pin is updated; `Report` serves it
    /// and reports it (condition `ToolsPinned`, metric, log).
    #[serde(default)]
    pub mode: PinningMode,

    /// A tool with no `sha256`: `Allow` (default) serves it and reports it as `Unpinned`;
    /// `Withhold` serves only tools whose pin matches.
    #[serde(default)]
    pub unpinned: UnpinnedTools,
}

/// An MCP server run in the server's pods.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.transport != 'Stdio' || (has(self.command) && size(self.command) > 0)")
    .message("a stdio upstream needs its command: the operator cannot read the image's entrypoint").field_path(".command"))]
#[x_kube(validation = Rule::new("self.transport == 'StreamableHttp' || (!has(self.port) && !has(self.path))")
    .message("port and path are for transport StreamableHttp").field_path(".port"))]
#[x_kube(validation = Rule::new("self.transport != 'StreamableHttp' || has(self.port)")
    .message("a StreamableHttp upstream needs the port it listens on").field_path(".port"))]
pub struct UpstreamContainer {
    /// The upstream's image, e.g. `docker.io/mcp/filesystem:1.0.2` (pin a tag or a digest).
    #[schemars(length(min = 1, max = 512))]
    pub image: String,

    /// When the image is pulled. Defaults to the cluster's default for its tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<ImagePullPolicy>,

    /// How Palisade speaks to it: `Stdio` (default: its stdin and stdout, as most servers of the
    /// MCP registry) or `StreamableHttp` (on `port` and `path`, on the pod's loopback).
    #[serde(default)]
    pub transport: UpstreamTransport,

    /// The program and its first arguments (the container's entrypoint). Required for `Stdio`,
    /// e.g. `["npx", "-y", "@modelcontextprotocol/server-filesystem@2026.8.31", "/data"]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 4096)))]
    pub command: Vec<String>,

    /// More arguments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 4096)))]
    pub args: Vec<String>,

    /// Environment of the upstream (values, or `valueFrom` a Secret or ConfigMap key): its
    /// own credentials. Palisade's settings never reach it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub env: Vec<EnvVar>,

    /// Compute resources of the upstream's container. Defaults to a small request and a 512Mi
    /// memory limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// The user the upstream runs as. Defaults to 65532 (non-root), as the restricted Pod
    /// Security Standard asks. `0` runs it as root, for an image that cannot run otherwise: the
    /// pod then violates that standard (condition `PodSecurityRestricted=False`, reason
    /// `UpstreamRunsAsRoot`) and is refused in namespaces that enforce it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 2147483647))]
    pub run_as_user: Option<i64>,

    /// Whether the upstream's root filesystem is read-only. Defaults to `true` (`/tmp` is
    /// writable either way); `false` stays within the restricted Pod Security Standard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only_root_filesystem: Option<bool>,

    /// `StreamableHttp`: the port it listens on (not 8080 or 9090, Palisade's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    #[x_kube(validation = Rule::new("self != 8080 && self != 9090").message("8080 and 9090 are Palisade's own ports"))]
    pub port: Option<i32>,

    /// `StreamableHttp`: its MCP endpoint's path. Defaults to `/mcp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256), regex(pattern = r"^/[^\s?#]*$"))]
    pub path: Option<String>,
}

/// How Palisade speaks to a container upstream.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UpstreamTransport {
    /// Its stdin and stdout, through `palisade-stdio-shim` and a Unix socket in a volume both
    /// containers mount.
    #[default]
    Stdio,
    /// Streamable HTTP on the pod's loopback, at `port` and `path`.
    StreamableHttp,
}

/// OAuth 2.0 client credentials (RFC 6749 section 4.4) at the upstream's authorization server.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct UpstreamOAuth {
    /// The token endpoint: an `https://` URL, e.g. `https://idp.example.com/oauth2/token`.
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = Rule::new("self.matches('^https://[^/?#@\\\\s]+([/?][^#\\\\s]*)?$')")
        .message("tokenUrl must be an https:// URL with a host, without user:password@ and without a fragment: the client secret is sent to it"))]
    pub token_url: String,

    /// Palisade's client id at the authorization server.
    #[schemars(length(min = 1, max = 256))]
    pub client_id: String,

    /// Where Palisade's client secret is read (sent with `client_secret_basic`).
    pub client_secret: SecretKeySource,

    /// Scopes asked for; none asks for the authorization server's default.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub scopes: Vec<String>,

    /// RFC 8707 `resource` of the token request: the audience the upstream expects. Defaults to
    /// `url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    pub resource: Option<String>,
}

/// One header sent to the upstream.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct UpstreamHeader {
    /// Header name: letters, digits, `-` and `_`, starting with a letter or digit. Not one that
    /// Palisade sets itself or that is hop-by-hop (`Host`, `Accept`, `Content-Type`,
    /// `Content-Length`, `Connection`, `Transfer-Encoding`, ...), nor any `Mcp-*` header.
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[A-Za-z0-9][-_A-Za-z0-9]*$"))]
    #[x_kube(validation = Rule::new("!self.lowerAscii().startsWith('mcp-') && !(self.lowerAscii() in ['accept', 'connection', 'content-length', 'content-type', 'expect', 'host', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade'])")
        .message("Palisade sets this header itself (or it is hop-by-hop): choose another name"))]
    pub name: String,

    /// Where the header's value is read: one Secret key, whose whole content (one trailing
    /// newline removed) is the value, e.g. `Bearer eyJ...`.
    pub value_from: SecretKeySource,
}

impl UpstreamSpec {
    /// `timeoutSeconds`, or its default.
    pub fn timeout_seconds(&self) -> i32 {
        self.timeout_seconds.unwrap_or(DEFAULT_TIMEOUT_SECONDS)
    }
}

/// Where a stdio container upstream's socket is, in both containers.
pub const UPSTREAM_SOCKET_DIR: &str = "/run/palisade/upstream";
/// The socket's file name.
pub const UPSTREAM_SOCKET_FILE: &str = "stdio.sock";
/// Default `path` of a StreamableHttp container upstream.
pub const DEFAULT_CONTAINER_PATH: &str = "/mcp";

impl UpstreamContainer {
    /// The URL palisade-server reaches a StreamableHttp container at (loopback); `None` for stdio.
    pub fn loopback_url(&self) -> Option<String> {
        let port = self
            .port
            .filter(|_| self.transport == UpstreamTransport::StreamableHttp)?;
        Some(format!(
            "http://127.0.0.1:{port}{}",
            self.path.as_deref().unwrap_or(DEFAULT_CONTAINER_PATH)
        ))
    }
}

/// What is wrong with `url` as an upstream endpoint, if anything.
pub fn url_problem(url: &str) -> Option<&'static str> {
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"));
    let Some(rest) = rest else {
        return Some("must be an http:// or https:// URL");
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some("must not contain white space or control characters")
    } else if authority.contains('@') {
        Some("must not carry credentials (user:password@): they would be logged with the URL; use headers")
    } else if authority.is_empty() || authority.starts_with(':') {
        Some("must name a host")
    } else if url.contains('#') {
        Some("must not have a fragment")
    } else if url.len() > 2048 {
        Some("must be at most 2048 characters")
    } else {
        None
    }
}

/// What is wrong with `name` as the name of a header sent to the upstream, if anything.
pub fn header_name_problem(name: &str) -> Option<String> {
    let mut chars = name.chars();
    let well_formed = (1..=64).contains(&name.len())
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'));
    let lower = name.to_ascii_lowercase();
    if !well_formed {
        Some(format!(
            "{name:?} is not a header name: 1 to 64 letters, digits, '-' or '_', starting with a letter or digit"
        ))
    } else if lower.starts_with("mcp-") || RESERVED_HEADERS.contains(&lower.as_str()) {
        Some(format!(
            "{name:?} is set by Palisade itself (or is hop-by-hop): choose another header name"
        ))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_urls_are_http_with_a_host_and_no_credentials_or_fragment() {
        for good in [
            "http://files-mcp.team-a.svc.cluster.local:3001/mcp",
            "https://mcp.example.com",
            "http://127.0.0.1:9/mcp?tenant=a",
            "http://[::1]:9/mcp",
        ] {
            assert_eq!(url_problem(good), None, "{good}");
        }
        for (bad, why) in [
            ("ftp://example.com/mcp", "http://"),
            ("http:///mcp", "host"),
            ("http://:80/mcp", "host"),
            ("https://user:secret@example.com/mcp", "credentials"),
            ("https://example.com/mcp#x", "fragment"),
            ("https://example.com/m cp", "white space"),
        ] {
            assert!(url_problem(bad).unwrap().contains(why), "{bad}");
        }
    }

    #[test]
    fn header_names_palisade_sets_or_that_are_hop_by_hop_are_refused() {
        for good in ["Authorization", "X-API-Key", "x_tenant", "Cookie"] {
            assert_eq!(header_name_problem(good), None, "{good}");
        }
        for bad in [
            "Host",
            "content-TYPE",
            "Mcp-Session-Id",
            "MCP-Protocol-Version",
            "mcp-param-x",
            "TE",
        ] {
            assert!(header_name_problem(bad).unwrap().contains("set by Palisade"), "{bad}");
        }
        for bad in ["", "-x", "X Key", "X:Key", &"a".repeat(65)] {
            assert!(
                header_name_problem(bad).unwrap().contains("not a header name"),
                "{bad:?}"
            );
        }
    }
}
