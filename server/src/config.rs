//! `palisade-server serve` settings: every flag has a `PALISADE_*` environment twin; a flag wins
//! over its variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use palisade_crds::document::{DEFAULT_DOCUMENTS_DIR, DEFAULT_POLICY_PATH};

/// Default of `--max-concurrency`.
pub const DEFAULT_MAX_CONCURRENCY: usize = 32;
/// Default of `--max-connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Default of `--max-unauthenticated-connections-per-client`.
pub const DEFAULT_MAX_UNAUTHENTICATED_PER_CLIENT: usize = 64;

/// Where audit events go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditTarget {
    /// Standard output (operational logs go to standard error).
    Stdout,
    /// Standard error.
    Stderr,
    /// Appended to a file.
    File(PathBuf),
}

fn audit_target(text: &str) -> Result<AuditTarget, String> {
    Ok(match text {
        "stdout" | "-" => AuditTarget::Stdout,
        "stderr" => AuditTarget::Stderr,
        "" => return Err("empty audit target".into()),
        path => AuditTarget::File(PathBuf::from(path)),
    })
}

fn upstream_url(text: &str) -> Result<String, String> {
    let url = reqwest::Url::parse(text).map_err(|error| format!("not a URL ({error})"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err("must be an http:// or https:// URL with a host".into());
    }
    // The same checks as McpServer.spec.upstream.url.
    if let Some(problem) = palisade_crds::upstream::url_problem(text) {
        return Err(problem.into());
    }
    Ok(text.to_owned())
}

fn duration(text: &str) -> Result<Duration, String> {
    let seconds = crate::token::parse_lifetime(text)?;
    u64::try_from(seconds)
        .map(Duration::from_secs)
        .map_err(|_| format!("{text:?} must not be negative"))
}

/// Whether a TLS client must present a certificate (`--tls-client-auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ClientAuth {
    /// A client certificate is verified when presented; a client without one can still
    /// authenticate with a bearer token or an API key.
    #[default]
    Optional,
    /// Every client must present a certificate signed by the client CA (refused at handshake).
    Required,
}

/// Arguments of `palisade-server serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address of the MCP endpoint, health, readiness and well-known documents.
    #[arg(long, env = "PALISADE_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// Address of the Prometheus metrics endpoint.
    #[arg(long, env = "PALISADE_METRICS_LISTEN", default_value = "0.0.0.0:9090")]
    pub metrics_listen: SocketAddr,
    /// The compiled PolicyDocument.
    #[arg(long, env = "PALISADE_POLICY_FILE", default_value = DEFAULT_POLICY_PATH)]
    pub policy_file: PathBuf,
    /// Directory with one subdirectory per document collection.
    #[arg(long, env = "PALISADE_DOCUMENTS_DIR", default_value = DEFAULT_DOCUMENTS_DIR)]
    pub documents_dir: PathBuf,
    /// Host names (optionally with port) accepted in the Host header, comma-separated; `*` accepts
    /// any. Defaults to the host of the policy's resource URI and localhost (DNS-rebinding
    /// protection).
    #[arg(long, env = "PALISADE_ALLOWED_HOSTS", value_delimiter = ',')]
    pub allowed_hosts: Vec<String>,
    /// Origins accepted in the Origin header (browser clients), comma-separated. Requests with
    /// any other Origin are refused with 403. Requests without Origin are not affected.
    #[arg(long, env = "PALISADE_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,
    /// Where audit events go: `stdout`, `stderr`, or a file path.
    #[arg(long, env = "PALISADE_AUDIT_LOG", default_value = "stdout", value_parser = audit_target)]
    pub audit_log: AuditTarget,
    /// Operational log filter (tracing `EnvFilter` syntax). Logs go to standard error.
    #[arg(long, env = "PALISADE_LOG", default_value = "info")]
    pub log: String,
    /// Operational log format: `json` or `text`.
    #[arg(long, env = "PALISADE_LOG_FORMAT", default_value = "json")]
    pub log_format: String,
    /// How often the policy, documents and secret files are checked for changes.
    #[arg(long, env = "PALISADE_RELOAD_INTERVAL", default_value = "2s", value_parser = duration)]
    pub reload_interval: Duration,
    /// Largest request body accepted, in bytes.
    #[arg(long, env = "PALISADE_MAX_BODY_BYTES", default_value_t = 1 << 20)]
    pub max_body_bytes: usize,
    /// Largest request head (request line and headers) accepted, in bytes.
    #[arg(long, env = "PALISADE_MAX_HEADER_BYTES", default_value_t = 16 << 10)]
    pub max_header_bytes: usize,
    /// Largest bearer token or API key accepted, in bytes.
    #[arg(long, env = "PALISADE_MAX_TOKEN_BYTES", default_value_t = 8 << 10)]
    pub max_token_bytes: usize,
    /// Time limit of one request, from its headers to its answer (body read included). A request
    /// cut by it is answered 503 with `Retry-After` and audited (`request_timeout`).
    #[arg(long, env = "PALISADE_REQUEST_TIMEOUT", default_value = "30s", value_parser = duration)]
    pub request_timeout: Duration,
    /// Most requests served at once. A request that finds no place within 250 ms is shed with
    /// 503 and `Retry-After` (audited, `overloaded`): no unbounded queue.
    #[arg(long, env = "PALISADE_MAX_CONCURRENCY", default_value_t = DEFAULT_MAX_CONCURRENCY)]
    pub max_concurrency: usize,
    /// Most open connections on the MCP listener. A connection over it is closed as soon as it
    /// is accepted (counted in `palisade_connections_refused_total{reason="connection_limit"}`).
    #[arg(long, env = "PALISADE_MAX_CONNECTIONS", default_value_t = DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Most connections one client address may hold open before one of its requests has
    /// authenticated. Over it, the connection is closed as soon as it is accepted
    /// (`palisade_connections_refused_total{reason="unauthenticated_per_client"}`).
    #[arg(
        long,
        env = "PALISADE_MAX_UNAUTHENTICATED_CONNECTIONS_PER_CLIENT",
        default_value_t = DEFAULT_MAX_UNAUTHENTICATED_PER_CLIENT
    )]
    pub max_unauthenticated_connections_per_client: usize,
    /// Longest time a client may take to send a request's headers (the request line included;
    /// also the wait for the next request of a kept-alive HTTP/1.1 connection). Over it, the
    /// connection is closed.
    #[arg(long, env = "PALISADE_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub header_read_timeout: Duration,
    /// Longest time a client may take to send a request's body. Over it, 408 (audited,
    /// `body_timeout`).
    #[arg(long, env = "PALISADE_BODY_READ_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub body_read_timeout: Duration,
    /// A connection with no request in flight for this long is closed (HTTP/1.1 and HTTP/2).
    #[arg(long, env = "PALISADE_IDLE_TIMEOUT", default_value = "60s", value_parser = duration)]
    pub idle_timeout: Duration,
    /// Refuse requests with 503 when audit lines cannot be written (fail closed): an answer is
    /// sent only once the request's audit lines are written.
    #[arg(long, env = "PALISADE_AUDIT_REQUIRED", default_value_t = false)]
    pub audit_required: bool,
    /// Requests per second allowed per caller (subject or API key), 0 for no limit. Over it, 429
    /// with Retry-After.
    #[arg(long, env = "PALISADE_RATE_LIMIT", default_value_t = 0)]
    pub rate_limit: u32,
    /// Burst allowed above the per-caller rate.
    #[arg(long, env = "PALISADE_RATE_LIMIT_BURST", default_value_t = 20)]
    pub rate_limit_burst: u32,
    /// Least time between two refetches of an issuer's JWKS caused by unknown key ids.
    #[arg(long, env = "PALISADE_JWKS_REFETCH_INTERVAL", default_value = "10s", value_parser = duration)]
    pub jwks_refetch_interval: Duration,
    /// CA bundle (PEM) trusted, besides the system roots, for the discovery and JWKS of the
    /// cluster's service-account issuer (`claims.kubernetesServiceAccount: true`); read at each
    /// fetch. The operator mounts the cluster CA here when an issuer needs it.
    #[arg(long, env = "PALISADE_SERVICE_ACCOUNT_ISSUER_CA_FILE")]
    pub service_account_issuer_ca_file: Option<PathBuf>,
    /// Bearer token sent to the discovery and JWKS of the cluster's service-account issuer when
    /// they answer 401 or 403 (the API server serves them to service accounts only); read at each
    /// fetch, as the kubelet rotates it. The operator mounts a projected token here.
    #[arg(long, env = "PALISADE_SERVICE_ACCOUNT_ISSUER_TOKEN_FILE")]
    pub service_account_issuer_token_file: Option<PathBuf>,
    /// Serve TLS on `--listen` with this certificate chain (PEM, leaf first); needs `--tls-key`.
    /// Reloaded when the file changes. Metrics stay plain HTTP.
    #[arg(long, env = "PALISADE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of `--tls-cert` (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "PALISADE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// CA certificates (PEM bundle) that sign client certificates: when set, a client certificate
    /// is verified and its subject becomes the caller's identity (mTLS).
    #[arg(long, env = "PALISADE_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// Proxy mode: the Streamable HTTP endpoint (`http://` or `https://`) of the MCP server this
    /// server stands in front of. Its tools are listed filtered by the policy and called only
    /// when the policy allows; no redirect is followed.
    #[arg(long, env = "PALISADE_UPSTREAM_URL", conflicts_with = "upstream_command", value_parser = upstream_url)]
    pub upstream_url: Option<String>,
    /// Proxy mode, with `--upstream-url`: a header sent with every request to the upstream, as
    /// `NAME=FILE`; the value is the file's content (one trailing newline removed), read again
    /// within seconds when the file changes. Repeat the flag (or separate with commas in the
    /// variable) for several headers. For the upstream's own credentials: the callers' headers
    /// never reach it.
    #[arg(
        long = "upstream-header",
        env = "PALISADE_UPSTREAM_HEADERS",
        value_name = "NAME=FILE",
        value_delimiter = ',',
        value_parser = crate::upstream::credentials::parse_header_file
    )]
    pub upstream_headers: Vec<crate::upstream::credentials::HeaderFile>,
    /// Proxy mode, with `--upstream-url`: get Palisade's own access token for the upstream with
    /// OAuth 2.0 client credentials from this token endpoint (`https://`, or `http://` on a
    /// loopback host) and send it as `Authorization: Bearer`. Needs
    /// `--upstream-oauth-client-id` and `--upstream-oauth-client-secret-file`.
    #[arg(long, env = "PALISADE_UPSTREAM_OAUTH_TOKEN_URL", value_name = "URL")]
    pub upstream_oauth_token_url: Option<String>,
    /// Palisade's client id at `--upstream-oauth-token-url`.
    #[arg(long, env = "PALISADE_UPSTREAM_OAUTH_CLIENT_ID", value_name = "ID")]
    pub upstream_oauth_client_id: Option<String>,
    /// The file holding Palisade's client secret (read for every token request).
    #[arg(long, env = "PALISADE_UPSTREAM_OAUTH_CLIENT_SECRET_FILE", value_name = "FILE")]
    pub upstream_oauth_client_secret_file: Option<PathBuf>,
    /// Scopes asked for, repeatable (in the variable: separated by spaces).
    #[arg(
        long = "upstream-oauth-scope",
        env = "PALISADE_UPSTREAM_OAUTH_SCOPES",
        value_name = "SCOPE",
        value_delimiter = ' '
    )]
    pub upstream_oauth_scopes: Vec<String>,
    /// RFC 8707 `resource` of the token request. Default: `--upstream-url`.
    #[arg(long, env = "PALISADE_UPSTREAM_OAUTH_RESOURCE", value_name = "URI")]
    pub upstream_oauth_resource: Option<String>,
    /// Proxy mode: the command of a stdio MCP server, after `--`
    /// (`serve ... -- npx -y @modelcontextprotocol/server-everything`). The server runs it (in
    /// its own process group, without the `PALISADE_*` variables), restarts it with back-off
    /// when it exits, and stands in front of it.
    #[arg(last = true, value_name = "UPSTREAM_COMMAND")]
    pub upstream_command: Vec<String>,
    /// Proxy mode: a Unix socket on which `palisade-stdio-shim run --socket PATH -- COMMAND`
    /// serves a stdio MCP server run in a container of its own (a new process for each
    /// connection; connected again with back-off when it ends).
    #[arg(
        long,
        env = "PALISADE_UPSTREAM_SOCKET",
        value_name = "PATH",
        conflicts_with_all = ["upstream_url", "upstream_command"]
    )]
    pub upstream_socket: Option<PathBuf>,
    /// Proxy mode: time the upstream has to answer a forwarded request (then 504
    /// `UPSTREAM_TIMEOUT`, and the upstream is told the request is cancelled). Must be shorter
    /// than `--request-timeout`.
    #[arg(long, env = "PALISADE_UPSTREAM_TIMEOUT", default_value = "25s", value_parser = duration)]
    pub upstream_timeout: Duration,
    /// With `--tls-client-ca`: `optional` (a client without a certificate may still use a token)
    /// or `required` (refused at handshake). Default: `optional`.
    #[arg(long, env = "PALISADE_TLS_CLIENT_AUTH", value_enum, requires = "tls_client_ca")]
    pub tls_client_auth: Option<ClientAuth>,
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn parse(args: &[&str]) -> Result<ServeArgs, String> {
        Cli::try_parse_from(std::iter::once("serve").chain(args.iter().copied()))
            .map(|cli| cli.serve)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn an_upstream_command_is_everything_after_the_double_dash() {
        let args = parse(&["--upstream-timeout", "5s", "--", "npx", "-y", "server", "--port", "1"]).unwrap();
        assert_eq!(args.upstream_command, ["npx", "-y", "server", "--port", "1"]);
        assert_eq!(args.upstream_timeout, Duration::from_secs(5));
        assert_eq!(args.upstream_url, None);
    }

    #[test]
    fn an_upstream_socket_is_one_upstream_alone() {
        let socket = parse(&["--upstream-socket", "/run/palisade/upstream/stdio.sock"])
            .unwrap()
            .upstream_socket;
        assert_eq!(
            socket.as_deref(),
            Some(std::path::Path::new("/run/palisade/upstream/stdio.sock"))
        );
        for other in [
            &["--upstream-url", "http://127.0.0.1:3001/mcp"][..],
            &["--", "npx", "server"],
        ] {
            let mut args = vec!["--upstream-socket", "/s.sock"];
            args.extend(other);
            let error = parse(&args).unwrap_err();
            assert!(error.contains("cannot be used with"), "{other:?}: {error}");
        }
    }

    #[test]
    fn an_upstream_url_is_http_with_a_host_and_no_credentials() {
        let url = parse(&["--upstream-url", "https://mcp.example.com/mcp"])
            .unwrap()
            .upstream_url;
        assert_eq!(url.as_deref(), Some("https://mcp.example.com/mcp"));
        for (url, why) in [
            ("file:///etc/passwd", "must be an http:// or https:// URL with a host"),
            ("mcp.example.com/mcp", "not a URL (relative URL without a base)"),
            ("https://user:pw@mcp.example.com/mcp", "must not carry credentials"),
        ] {
            let error = parse(&["--upstream-url", url]).unwrap_err();
            assert!(error.contains(why), "{url}: {error}");
        }
        let both = parse(&["--upstream-url", "http://127.0.0.1:1/mcp", "--", "server"]).unwrap_err();
        assert!(both.contains("cannot be used with"), "{both}");
    }

    #[test]
    fn upstream_headers_are_repeated_name_file_pairs_for_an_http_upstream() {
        let args = parse(&[
            "--upstream-url",
            "http://127.0.0.1:1/mcp",
            "--upstream-header",
            "Authorization=/s/token",
            "--upstream-header",
            "X-Tenant=/s/tenant,X-API-Key=/s/key",
        ])
        .unwrap();
        let names: Vec<_> = args.upstream_headers.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["authorization", "x-tenant", "x-api-key"]);
        for without_url in [
            &["--upstream-header", "A=/s/a", "--", "server"][..],
            &["--upstream-header", "A=/s/a"],
        ] {
            let args = parse(without_url).unwrap();
            let error = crate::upstream::endpoint::Upstream::from_args(&args).err().unwrap();
            assert_eq!(
                error,
                "--upstream-header is for an --upstream-url: a stdio upstream is a child process, and a document server has no upstream"
            );
        }
        let reserved = parse(&["--upstream-url", "http://h/mcp", "--upstream-header", "Host=/s/h"]).unwrap_err();
        assert!(reserved.contains("set by Palisade itself"), "{reserved}");
    }

    #[test]
    fn upstream_oauth_needs_an_http_upstream_a_safe_token_url_and_all_its_parts() {
        let secret = std::env::temp_dir().join(format!("palisade-config-oauth-{}", std::process::id()));
        std::fs::write(&secret, "s").unwrap();
        let secret = secret.display().to_string();
        let url = "http://127.0.0.1:1/mcp";
        let cases: [(&[&str], &str); 5] = [
            (
                &["--upstream-oauth-token-url", "https://idp/token", "--", "server"],
                "--upstream-oauth-token-url is for an --upstream-url",
            ),
            (
                &[
                    "--upstream-url",
                    url,
                    "--upstream-oauth-token-url",
                    "http://idp.example.com/token",
                ],
                "must be an https:// URL (http:// only on a loopback host)",
            ),
            (
                &["--upstream-url", url, "--upstream-oauth-token-url", "https://idp/token"],
                "needs --upstream-oauth-client-id and --upstream-oauth-client-secret-file",
            ),
            (
                &["--upstream-url", url, "--upstream-oauth-client-id", "palisade"],
                "need --upstream-oauth-token-url",
            ),
            (
                &[
                    "--upstream-url",
                    url,
                    "--upstream-oauth-token-url",
                    "https://idp/token",
                    "--upstream-oauth-client-id",
                    "palisade",
                    "--upstream-oauth-client-secret-file",
                    &secret,
                    "--upstream-header",
                    "Authorization=/s/token",
                ],
                "both set the upstream's Authorization header",
            ),
        ];
        for (flags, why) in cases {
            let args = parse(flags).unwrap();
            let error = crate::upstream::endpoint::Upstream::from_args(&args).err().unwrap();
            assert!(error.contains(why), "{flags:?}: {error}");
        }
    }

    #[test]
    fn an_upstream_timeout_must_be_shorter_than_the_request_timeout() {
        let args = parse(&["--upstream-timeout", "30s", "--", "server"]).unwrap();
        let error = crate::upstream::endpoint::Upstream::from_args(&args).err().unwrap();
        assert_eq!(
            error,
            "--upstream-timeout (30 s) must be shorter than --request-timeout (30 s), so that a slow upstream is answered 504 and cancelled"
        );
    }
}
