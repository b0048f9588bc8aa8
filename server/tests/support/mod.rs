//! Fixture of the router-level attack tests: a server state built from a sample's compiled policy,
//! its documents and a fresh HMAC key in a private temporary directory, the router over it, an
//! in-memory audit sink, and helpers to send requests with `oneshot` (no socket) and read the
//! answer, the audit events and the metrics.
//!
//! Nothing here reaches the network: the HTTP client the server uses for JWKS and OIDC discovery
//! sends everything through a proxy on a closed loopback port, so a fetch that should never happen
//! fails locally (and shows up in `palisade_jwks_fetches_total`) instead of going to the internet.

// Each test binary uses a different subset of the helpers.
#![allow(dead_code)]

pub mod process;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use http::{HeaderMap, HeaderName, HeaderValue, Request};
use http_body_util::BodyExt;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use palisade_crds::PolicyDocument;
use palisade_crds::document::KeySource;
use palisade_server::audit::{AuditSink, MemoryAudit};
use palisade_server::config::ServeArgs;
use palisade_server::mcp::proxy::Proxy;
use palisade_server::metrics::Metrics;
use palisade_server::state::AppState;
use palisade_server::upstream::endpoint::Upstream;
use palisade_server::upstream::supervisor::{Backoff, StdioConfig, StdioSource, Supervisor};
use serde_json::{Value, json};
use tower::ServiceExt;

/// The address every request comes from (TEST-NET-3), as audit events must record it.
pub const CLIENT: &str = "203.0.113.7";
/// The development issuer of the samples.
pub const DEV_ISSUER: &str = "palisade-dev";
/// The Google issuer of the company-info sample.
pub const GOOGLE: &str = "https://accounts.google.com";
/// Points the sample's Google issuer at the JWKS `url` (plain HTTP allowed) instead of OIDC
/// discovery on the internet.
pub fn google_keys_at(policy: &mut PolicyDocument, url: &str) {
    let google = policy
        .authentication
        .issuers
        .iter_mut()
        .find(|i| i.issuer == GOOGLE)
        .expect("the Google issuer");
    google.keys = KeySource::JwksUri(url.to_owned());
    google.allow_insecure_http = true;
}

/// The modern protocol revision.
pub const MODERN: &str = "2026-07-28";
/// `_meta` key of the protocol version.
pub const META_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
/// `_meta` key of the client capabilities.
pub const META_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
/// The JSON-RPC code of authentication and authorization failures.
pub const UNAUTHORIZED: i64 = -32001;

/// An RSA public key, as an attacker would download it from an issuer's JWKS (public, not a
/// secret): the "HMAC key" of the algorithm-confusion attack.
pub const RSA_PUBLIC_KEY_PEM: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAvEDJabNWqrc9nZm0iQWz
ZJ4cjcITyFD3Zf/G/BhehMzzLHwHCxWm+JAhfB/IqbvLVzsUv1aFKNvWIOkxLIBR
uExjl2QfM/79pM2pq+dyvtNYravJhoxHE+IwnSVA+/YxaDfiX/yZ+1FpZo6/4q1x
JAy6gHajtE52NwKRjzeBSJobNQCQU/aK6lFZhV8jhDx4XIDpDqOnPbK4sN7RX4JI
HB2y5b2UgTcCOzpGpEp2kJh0M2PIIhXYCjN5ZBQD5tM++fY+xsFz/2mfXm5CGSf8
25OtqC1HwGtoJn7UcoN92Uq5Q7MBD2ozy5xck8zzj4vUiYheQtmB6HfngkqRlwFF
PwIDAQAB
-----END PUBLIC KEY-----
";

/// Every kind of `mcp_security_violations_total`.
pub const VIOLATIONS: [&str; 8] = [
    "invalid_signature",
    "alg_not_allowed",
    "foreign_origin",
    "path_traversal",
    "oversize",
    "rate_limited",
    "token_in_query",
    "duplicate_authorization",
];

/// A sample of `config/samples`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sample {
    /// Seed 001: public and confidential `readAll` tools, HMAC and Google issuers.
    CompanyInfo,
    /// Seed 002: checklists and processes with `get`, `list` and `search` tools. Its only issuer
    /// is Entra ID (OIDC discovery), so the fixture adds the development HMAC issuer.
    SsoDocs,
}

impl Sample {
    fn file(self) -> &'static str {
        match self {
            Self::CompanyInfo => "company-info.yaml",
            Self::SsoDocs => "sso-docs.yaml",
        }
    }

    fn secret_name(self) -> &'static str {
        match self {
            Self::CompanyInfo => "company-info-jwt",
            Self::SsoDocs => "sso-docs-jwt",
        }
    }
}

/// Unix time in seconds.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// A temporary directory removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let path = std::env::temp_dir().join(format!(
            "palisade-attacks-{}-{}",
            std::process::id(),
            hex::encode(rand::random::<[u8; 8]>())
        ));
        std::fs::create_dir_all(&path).expect("create temporary directory");
        Self(path)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A loaded server and what the tests observe it through.
pub struct Fixture {
    /// The temporary directory (policy, documents, secrets).
    pub dir: TempDir,
    /// The documents directory the server reads.
    pub documents_dir: PathBuf,
    /// The server state.
    pub state: Arc<AppState>,
    /// The router under test.
    pub router: Router,
    /// The audit lines.
    pub audit: MemoryAudit,
    /// The policy the server loaded.
    pub policy: PolicyDocument,
    /// The HMAC key file's text (64 hex digits); the key is its bytes.
    pub key_text: String,
    /// How many audit lines earlier calls of [`Fixture::take_events`] returned.
    seen: Mutex<usize>,
}

/// Serve settings with their defaults (as `palisade-server serve` would have them), pointing at
/// `policy_file` and `documents_dir`.
pub fn serve_args(policy_file: &Path, documents_dir: &Path) -> ServeArgs {
    #[derive(clap::Parser)]
    struct Parser {
        #[command(flatten)]
        serve: ServeArgs,
    }
    use clap::Parser as _;
    let parsed = Parser::try_parse_from([
        "palisade-server".as_ref(),
        "--policy-file".as_ref(),
        policy_file.as_os_str(),
        "--documents-dir".as_ref(),
        documents_dir.as_os_str(),
    ])
    .expect("serve arguments parse");
    parsed.serve
}

impl Fixture {
    /// The company-info sample as compiled.
    pub fn company_info() -> Self {
        Self::build(Sample::CompanyInfo, |_, _| {})
    }

    /// The sso-docs sample plus the development HMAC issuer.
    pub fn sso_docs() -> Self {
        Self::build(Sample::SsoDocs, |_, _| {})
    }

    /// Compiles `sample`, lets `edit` change the PolicyDocument (it gets the temporary directory
    /// for any extra files), writes an HMAC key for every HMAC issuer, and loads it all.
    pub fn build(sample: Sample, edit: impl FnOnce(&mut PolicyDocument, &Path)) -> Self {
        Self::build_with(sample, edit, None)
    }

    /// The company-info sample in proxy mode: the same authentication, roles, bindings and rules,
    /// no tools or collections, in front of [`fake_upstream`] (which lists the sample's two tool
    /// names and records every line it receives into `upstream.log` of the fixture's directory).
    /// Must be built inside a Tokio runtime; [`Fixture::upstream_ready`] waits for its handshake.
    pub fn company_info_proxy() -> Self {
        Self::build_with(Sample::CompanyInfo, |_, _| {}, Some(fake_upstream))
    }

    fn build_with(
        sample: Sample,
        edit: impl FnOnce(&mut PolicyDocument, &Path),
        upstream: Option<fn(&Path) -> Vec<String>>,
    ) -> Self {
        // reqwest is built without a default crypto provider (as in main.rs).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = TempDir::new();
        let secrets_dir = dir.path().join("secrets");
        let documents_dir = dir.path().join("documents");
        let sample_path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../config/samples")
            .join(sample.file());
        let yaml = palisade_server::policy_cli::compile(&[sample_path], Some(&secrets_dir), Some(&documents_dir))
            .expect("the sample compiles");
        let mut policy = PolicyDocument::from_yaml(&yaml).expect("the compiled policy parses");
        if sample == Sample::SsoDocs {
            let mut issuer = policy.authentication.issuers[0].clone();
            issuer.issuer = DEV_ISSUER.into();
            issuer.audiences = vec![policy.authentication.resource.clone()];
            issuer.algorithms = vec![palisade_crds::mcp_server::JwtAlgorithm::HS256];
            issuer.keys = KeySource::HmacKeyFile(
                secrets_dir
                    .join(sample.secret_name())
                    .join("hmac-key")
                    .display()
                    .to_string(),
            );
            issuer.claims = Default::default();
            policy.authentication.issuers.push(issuer);
            policy.authentication.issuers.sort_by(|a, b| a.issuer.cmp(&b.issuer));
        }
        edit(&mut policy, dir.path());
        if upstream.is_some() {
            policy.tools.clear();
            policy.collections.clear();
        }

        // `openssl rand -hex 32`, as the sample's instructions create it (with echo's newline).
        let key_text = hex::encode(rand::random::<[u8; 32]>());
        for issuer in &policy.authentication.issuers {
            if let KeySource::HmacKeyFile(path) = &issuer.keys {
                let path = Path::new(path);
                std::fs::create_dir_all(path.parent().expect("key file has a directory")).expect("secrets dir");
                std::fs::write(path, format!("{key_text}\n")).expect("write the HMAC key");
            }
        }
        let policy_file = dir.path().join("policy.yaml");
        std::fs::write(&policy_file, policy.to_yaml()).expect("write the policy");

        let http = reqwest::Client::builder()
            .proxy(reqwest::Proxy::all("http://127.0.0.1:9").expect("proxy URL"))
            .timeout(std::time::Duration::from_secs(2))
            .build()
            .expect("HTTP client");
        let (sink, audit) = AuditSink::memory();
        let metrics = Arc::new(Metrics::new());
        let mut state = AppState::new(serve_args(&policy_file, &documents_dir), metrics.clone(), sink, http);
        state.proxy = upstream.map(|argv| {
            let config = StdioConfig {
                source: StdioSource::Command {
                    argv: argv(dir.path()),
                    env: Vec::new(),
                },
                max_message_bytes: 1 << 20,
                start_timeout: std::time::Duration::from_secs(10),
                backoff: Backoff::default(),
            };
            Proxy::new(
                Upstream::Stdio(Supervisor::start(config)),
                palisade_server::trace::UpstreamPeer::child_process(),
                std::time::Duration::from_secs(5),
                metrics,
            )
        });
        let state = Arc::new(state);
        let installed = state.reload().unwrap_or_else(|e| panic!("the policy loads: {e}"));
        assert!(installed, "the first reload installs a snapshot");
        let router = palisade_server::http::app(state.clone());
        Self {
            dir,
            documents_dir,
            state,
            router,
            audit,
            policy,
            key_text,
            seen: Mutex::new(0),
        }
    }

    /// Waits until the proxy's upstream has answered its handshake and listed its tools.
    pub async fn upstream_ready(&self) {
        let proxy = self.state.proxy.as_ref().expect("a proxy fixture");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while proxy.upstream().tools().is_none() {
            assert!(std::time::Instant::now() < deadline, "the fake upstream did not start");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// The lines the fake upstream of a proxy fixture received, parsed, after its handshake.
    pub fn upstream_received(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.path().join("upstream.log"))
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).expect("the upstream received JSON"))
            .collect()
    }

    /// The server's resource URI (the required audience).
    pub fn resource(&self) -> &str {
        &self.policy.authentication.resource
    }

    /// The host of the resource URI (an accepted Host header).
    pub fn host(&self) -> String {
        let rest = self.resource().split_once("://").expect("resource is a URL").1;
        rest.split('/').next().expect("resource has a host").to_owned()
    }

    /// The RFC 9728 metadata URL challenges point at.
    pub fn resource_metadata(&self) -> String {
        format!("https://{}/.well-known/oauth-protected-resource/mcp", self.host())
    }

    /// The hash of the policy in force.
    pub fn policy_hash(&self) -> String {
        self.state
            .snapshot
            .load_full()
            .expect("a snapshot")
            .policy
            .hash()
            .to_owned()
    }

    // ---------------------------------------------------------------------------------------------
    // Tokens

    /// The HMAC key bytes the server uses (the key file's text without its newline).
    pub fn key(&self) -> Vec<u8> {
        self.key_text.as_bytes().to_vec()
    }

    /// Claims of a valid development token for `subject` with `scopes`.
    pub fn claims(&self, subject: &str, scopes: &[&str]) -> Value {
        let now = now();
        json!({
            "iss": DEV_ISSUER,
            "aud": self.resource(),
            "sub": subject,
            "scope": scopes.join(" "),
            "iat": now,
            "exp": now + 3600,
        })
    }

    /// `claims` signed with HS256 and the server's key.
    pub fn sign(&self, claims: &Value) -> String {
        sign_hs256(claims, &self.key())
    }

    /// A valid development token with `scopes`.
    pub fn token(&self, scopes: &[&str]) -> String {
        self.sign(&self.claims("alice", scopes))
    }

    /// The forms in which the HMAC key could leak: its text, and hex and base64 of its bytes.
    pub fn key_forms(&self) -> Vec<String> {
        let key = self.key();
        let raw = hex::decode(&self.key_text).expect("hex key");
        vec![
            self.key_text.clone(),
            self.key_text.to_ascii_uppercase(),
            hex::encode(&key),
            STANDARD.encode(&key),
            URL_SAFE_NO_PAD.encode(&key),
            STANDARD.encode(&raw),
            URL_SAFE_NO_PAD.encode(&raw),
        ]
    }

    // ---------------------------------------------------------------------------------------------
    // Requests

    /// `POST /mcp` with an accepted Host, `Content-Type: application/json` and the Accept header
    /// MCP clients send.
    pub fn post(&self) -> Call {
        Call::new("POST", "/mcp")
            .set("host", &self.host())
            .set("content-type", "application/json")
            .set("accept", "application/json, text/event-stream")
    }

    /// `POST /mcp` of a JSON-RPC request with a bearer token.
    pub fn rpc(&self, token: &str, method: &str, params: Value) -> Call {
        self.post().bearer(token).json(&request(method, params))
    }

    /// A modern (2026-07-28) request: `_meta` in the params and the routing headers.
    pub fn modern(&self, token: &str, method: &str, params: Value, name: Option<&str>) -> Call {
        let mut params = params;
        params["_meta"] = json!({META_VERSION: MODERN, META_CAPABILITIES: {}});
        let mut call = self
            .post()
            .bearer(token)
            .set("mcp-protocol-version", MODERN)
            .set("mcp-method", method)
            .json(&request(method, params));
        if let Some(name) = name {
            // Values that cannot travel as a header as they are go base64-encoded (MCP 2026-07-28).
            let plain = name.bytes().all(|b| (0x20..0x7f).contains(&b)) && name.trim() == name;
            let value = if plain {
                name.to_owned()
            } else {
                format!("=?base64?{}?=", STANDARD.encode(name))
            };
            call = call.set("mcp-name", &value);
        }
        call
    }

    /// `GET path` with an accepted Host.
    pub fn get(&self, path: &str) -> Call {
        Call::new("GET", path).set("host", &self.host())
    }

    /// Sends `call` through the router, from [`CLIENT`].
    pub async fn send(&self, call: Call) -> Answer {
        let mut builder = Request::builder().method(call.method.as_str()).uri(call.uri.as_str());
        for (name, value) in &call.headers {
            builder = builder.header(name, value);
        }
        let mut request = builder.body(Body::from(call.body)).expect("request builds");
        let client: SocketAddr = format!("{CLIENT}:54321").parse().expect("address");
        request.extensions_mut().insert(ConnectInfo(client));
        let response = self.router.clone().oneshot(request).await.expect("infallible");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.expect("body").to_bytes();
        Answer { status, headers, body }
    }

    // ---------------------------------------------------------------------------------------------
    // Audit and metrics

    /// Every audit line so far.
    pub fn audit_lines(&self) -> Vec<String> {
        self.audit.lines()
    }

    /// The audit events written since the last call.
    pub fn take_events(&self) -> Vec<Value> {
        let lines = self.audit.lines();
        let mut seen = self.seen.lock().expect("seen lock");
        let new = lines[*seen..]
            .iter()
            .map(|line| serde_json::from_str(line).expect("audit line is JSON"))
            .collect();
        *seen = lines.len();
        new
    }

    /// Panics if any audit line contains the HMAC key (in any encoding) or one of `secrets`.
    pub fn assert_audit_free_of(&self, secrets: &[&str]) {
        let mut needles: Vec<String> = self.key_forms();
        for secret in secrets {
            needles.push((*secret).to_owned());
            // Each segment of a token on its own (the signature above all).
            needles.extend(secret.split('.').filter(|s| s.len() >= 16).map(str::to_owned));
        }
        for line in self.audit_lines() {
            for needle in &needles {
                assert!(
                    !line.contains(needle.as_str()),
                    "audit line leaks a secret ({needle}): {line}"
                );
            }
        }
    }

    /// The metrics text.
    pub fn metrics(&self) -> String {
        self.state.metrics.encode()
    }

    /// The value of one series (e.g. `mcp_security_violations_total{type="oversize"}`); 0 when absent.
    pub fn metric(&self, series: &str) -> f64 {
        let text = self.metrics();
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .map_or(0.0, |value| value.trim().parse().expect("metric value"))
    }

    /// `mcp_security_violations_total{type=kind}`.
    pub fn violations(&self, kind: &str) -> f64 {
        self.metric(&format!("mcp_security_violations_total{{type=\"{kind}\"}}"))
    }

    /// Panics unless exactly the `expected` violations were counted (once each) and no other.
    pub fn assert_violations(&self, expected: &[&str]) {
        for kind in VIOLATIONS {
            let want = if expected.contains(&kind) { 1.0 } else { 0.0 };
            assert_eq!(
                self.violations(kind),
                want,
                "mcp_security_violations_total{{type=\"{kind}\"}}\n{}",
                self.metrics()
            );
        }
    }

    /// `mcp_authentication_attempts_total{method, result, reason}`.
    pub fn auth_attempts(&self, method: &str, result: &str, reason: &str) -> f64 {
        self.metric(&format!(
            "mcp_authentication_attempts_total{{method=\"{method}\",result=\"{result}\",reason=\"{reason}\"}}"
        ))
    }

    /// `mcp_authorization_checks_total{kind, decision}`.
    pub fn authz_checks(&self, kind: &str, decision: &str) -> f64 {
        self.metric(&format!(
            "mcp_authorization_checks_total{{kind=\"{kind}\",decision=\"{decision}\"}}"
        ))
    }
}

/// A JSON-RPC request with id 1.
pub fn request(method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
}

/// `claims` signed with HS256 and `key`.
pub fn sign_hs256(claims: &Value, key: &[u8]) -> String {
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(key)).expect("token signs")
}

/// A JWT from a raw header, raw claims and a raw signature, each base64url-encoded.
pub fn raw_jwt(header: &Value, claims: &Value, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(header).expect("JSON")),
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).expect("JSON")),
        URL_SAFE_NO_PAD.encode(signature)
    )
}

/// A request to send.
#[derive(Debug, Clone)]
pub struct Call {
    method: String,
    uri: String,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Vec<u8>,
}

impl Call {
    /// `method uri` without headers or body.
    pub fn new(method: &str, uri: &str) -> Self {
        Self {
            method: method.into(),
            uri: uri.into(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Replaces every `name` header with one `value`.
    pub fn set(self, name: &str, value: &str) -> Self {
        self.remove(name).add(name, value)
    }

    /// Adds a `name` header (keeping the others).
    pub fn add(mut self, name: &str, value: &str) -> Self {
        let name = HeaderName::from_bytes(name.as_bytes()).expect("header name");
        self.headers
            .push((name, HeaderValue::from_str(value).expect("header value")));
        self
    }

    /// Adds a header with arbitrary bytes.
    pub fn add_bytes(mut self, name: &str, value: &[u8]) -> Self {
        let name = HeaderName::from_bytes(name.as_bytes()).expect("header name");
        self.headers
            .push((name, HeaderValue::from_bytes(value).expect("header value")));
        self
    }

    /// Removes every `name` header.
    pub fn remove(mut self, name: &str) -> Self {
        self.headers.retain(|(n, _)| !n.as_str().eq_ignore_ascii_case(name));
        self
    }

    /// `Authorization: Bearer <token>`.
    pub fn bearer(self, token: &str) -> Self {
        self.set("authorization", &format!("Bearer {token}"))
    }

    /// The body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// A JSON body.
    pub fn json(self, body: &Value) -> Self {
        self.body(serde_json::to_vec(body).expect("JSON"))
    }

    /// Replaces the URI.
    pub fn uri(mut self, uri: &str) -> Self {
        self.uri = uri.into();
        self
    }
}

/// A response.
#[derive(Debug)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
}

impl Answer {
    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("ASCII header").to_owned())
    }

    /// `error.code` of a JSON-RPC error.
    pub fn rpc_code(&self) -> i64 {
        self.json()["error"]["code"]
            .as_i64()
            .unwrap_or_else(|| panic!("not a JSON-RPC error: {}", self.text()))
    }

    /// `error.message` of a JSON-RPC error.
    pub fn rpc_message(&self) -> String {
        self.json()["error"]["message"].as_str().unwrap_or_default().to_owned()
    }

    /// `error.data.code` of a JSON-RPC error.
    pub fn data_code(&self) -> String {
        self.json()["error"]["data"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// `result` of a JSON-RPC response.
    pub fn result(&self) -> Value {
        let json = self.json();
        assert!(json.get("error").is_none(), "a JSON-RPC error: {json}");
        json["result"].clone()
    }

    /// The names in a `tools/list` result.
    pub fn tool_names(&self) -> Vec<String> {
        self.result()["tools"]
            .as_array()
            .expect("tools")
            .iter()
            .map(|t| t["name"].as_str().expect("tool name").to_owned())
            .collect()
    }
}

/// A minimal stdio MCP server in sh for proxy fixtures: it answers Palisade's handshake (ids 1
/// and 2: `initialize`, then `tools/list` with the company-info sample's two tool names), then
/// answers every request with a text result and appends every line it receives to
/// `<dir>/upstream.log`. Palisade's own messages start with `{"id":` (its JSON keys are sorted),
/// which is how the script finds the id to answer.
pub fn fake_upstream(dir: &Path) -> Vec<String> {
    let record = dir.join("upstream.log");
    let script = format!(
        r#"read init
echo '{{"jsonrpc":"2.0","id":1,"result":{{"protocolVersion":"2025-11-25","capabilities":{{"tools":{{}}}},"serverInfo":{{"name":"fake","version":"1"}}}}}}'
read initialized
read list
echo '{{"jsonrpc":"2.0","id":2,"result":{{"tools":[{{"name":"get_public_info","inputSchema":{{"type":"object"}}}},{{"name":"get_confidential_info","inputSchema":{{"type":"object"}}}}]}}}}'
while read -r line; do
  printf '%s\n' "$line" >> '{record}'
  id=$(printf '%s' "$line" | sed -n 's/^{{"id":\([0-9]*\),.*/\1/p')
  if [ -n "$id" ]; then
    echo '{{"jsonrpc":"2.0","id":'"$id"',"result":{{"content":[{{"type":"text","text":"from the upstream"}}]}}}}'
  fi
done"#,
        record = record.display()
    );
    vec!["/bin/sh".into(), "-c".into(), script]
}
