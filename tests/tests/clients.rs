//! Seed 001's access matrix through real MCP clients: the official Python SDK (`mcp==2.3.0`, in
//! both its default `auto` mode, which speaks the stateless 2026-07-28 revision after a
//! `server/discover` probe, and its `legacy` mode, the `initialize` handshake) and the official
//! TypeScript SDK (`@modelcontextprotocol/sdk@1.32.2`, `initialize` at 2025-11-25).
//!
//! Each client is a small script (`tests/clients/`) that connects with a static bearer header (no
//! OAuth provider), lists and calls the tools, lists and reads the resources, and prints one JSON
//! report of what it saw, including every HTTP exchange. The tests assert on those reports:
//!
//! | token scopes                          | tools visible | calls                         | resources        |
//! |---------------------------------------|---------------|-------------------------------|------------------|
//! | `public:read`                         | public        | public ok, confidential 403   | public.md        |
//! | `public:read confidential:read`       | both          | both ok (confidential text)   | both             |
//! | none                                  | none          | both 403                      | none             |
//! | `public:read`, expired an hour ago    | -             | refused at connect with 401   | -                |
//!
//! A refusal is HTTP 403 with `WWW-Authenticate: Bearer error="insufficient_scope",
//! scope="<missing>"`; the Python SDK raises `MCPError` with the JSON-RPC error of the body, the
//! TypeScript SDK `StreamableHTTPError` whose `code` is the HTTP status.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use palisade_e2e::{Fixture, Server, node_modules, node22, python, repo_root};
use serde_json::Value;

/// How long one client run may take before it is killed.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

const PUBLIC_TOOL: &str = "get_public_info";
const CONFIDENTIAL_TOOL: &str = "get_confidential_info";
const PUBLIC_URI: &str = "palisade://public/public.md";
const CONFIDENTIAL_URI: &str = "palisade://confidential/confidential.md";
const PUBLIC_TEXT: &str = "# Acme Corp: public company information";
const CONFIDENTIAL_TEXT: &str = "# Acme Corp: strategy 2027 (CONFIDENTIAL)";

/// A real client, as the scripts in `tests/clients/` drive it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sdk {
    /// Python SDK, `Client(mode="auto")`: `server/discover` at 2026-07-28, then stateless requests.
    PythonAuto,
    /// Python SDK, `Client(mode="legacy")`: the `initialize` handshake.
    PythonLegacy,
    /// TypeScript SDK, `Client.connect` over `StreamableHTTPClientTransport`.
    TypeScript,
}

impl Sdk {
    fn is_python(self) -> bool {
        matches!(self, Self::PythonAuto | Self::PythonLegacy)
    }

    /// The protocol revision the client should end up speaking with this server.
    fn expected_protocol(self) -> &'static str {
        match self {
            Self::PythonAuto => "2026-07-28",
            Self::PythonLegacy | Self::TypeScript => "2025-11-25",
        }
    }

    fn command(self) -> Command {
        let scripts = repo_root().join("tests/clients");
        match self {
            Self::PythonAuto | Self::PythonLegacy => {
                let mut command = Command::new(python());
                command
                    .arg(scripts.join("python_client.py"))
                    .env("MCP_MODE", if self == Self::PythonAuto { "auto" } else { "legacy" })
                    .env("PYTHONDONTWRITEBYTECODE", "1")
                    .env("PYTHONUNBUFFERED", "1");
                command
            }
            Self::TypeScript => {
                let mut command = Command::new(node());
                command
                    .arg(scripts.join("ts_client.mjs"))
                    .env("NODE_MODULES", node_modules());
                command
            }
        }
    }
}

/// The `node` on PATH (Node 20 runs the TypeScript SDK), else the pinned Node 22.
fn node() -> PathBuf {
    let on_path = Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if on_path { PathBuf::from("node") } else { node22() }
}

/// One finished client run.
struct Run {
    sdk: Sdk,
    case: String,
    stdout: String,
    stderr: String,
    report: Value,
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let report = serde_json::to_string_pretty(&self.report).unwrap_or_default();
        let stderr = tail(&self.stderr, 4000);
        write!(
            f,
            "client {:?}, case {}\n--- report ---\n{report}\n--- stderr (tail) ---\n{stderr}",
            self.sdk, self.case
        )
    }
}

fn tail(text: &str, max: usize) -> &str {
    let start = text.len().saturating_sub(max);
    let start = (start..=text.len()).find(|&i| text.is_char_boundary(i)).unwrap_or(0);
    &text[start..]
}

impl Run {
    fn check(&self, ok: bool, what: &str) {
        assert!(ok, "{what}\n{self}");
    }

    fn get(&self, pointer: &str) -> &Value {
        self.report.pointer(pointer).unwrap_or(&Value::Null)
    }

    fn connected(&self) {
        self.check(self.get("/fatal").is_null(), "the client script failed");
        self.check(self.get("/connected") == true, "the client did not connect");
        self.check(
            self.get("/protocolVersion") == self.sdk.expected_protocol(),
            &format!("expected protocol {}", self.sdk.expected_protocol()),
        );
        self.check(self.get("/serverInfo") == "palisade-server", "serverInfo.name");
    }

    fn sorted_strings(&self, pointer: &str) -> Vec<String> {
        let Some(items) = self.get(pointer).as_array() else {
            panic!("{pointer} is not a list\n{self}");
        };
        let mut items: Vec<String> = items.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect();
        items.sort();
        items
    }

    fn tools(&self, expected: &[&str]) {
        let mut expected: Vec<&str> = expected.to_vec();
        expected.sort_unstable();
        self.check(
            self.sorted_strings("/tools") == expected,
            &format!("visible tools should be {expected:?}"),
        );
    }

    fn resources(&self, expected: &[&str]) {
        let mut expected: Vec<&str> = expected.to_vec();
        expected.sort_unstable();
        self.check(
            self.sorted_strings("/resources") == expected,
            &format!("listed resources should be {expected:?}"),
        );
    }

    /// A tool call (`/calls/<tool>`) or read (`/reads/<uri>`) that succeeded with this text.
    fn allowed(&self, outcome: &Value, what: &str, text: &str) {
        self.check(outcome["ok"] == true, &format!("{what} should succeed"));
        let seen = outcome["text"].as_str().unwrap_or_default();
        self.check(
            seen.contains(text),
            &format!("{what} should return text containing {text:?}"),
        );
    }

    /// A call or read the server refused with 403 `insufficient_scope`, as the SDK surfaced it.
    fn refused(&self, outcome: &Value, what: &str, scope: &str) {
        self.check(outcome["ok"] == false, &format!("{what} should be refused"));
        self.check(
            outcome["httpStatus"] == 403,
            &format!("{what}: the server should answer 403"),
        );
        let challenge = outcome["wwwAuthenticate"].as_str().unwrap_or_default();
        self.check(
            challenge.starts_with("Bearer ")
                && challenge.contains(r#"error="insufficient_scope""#)
                && challenge.contains(&format!(r#"scope="{scope}""#)),
            &format!("{what}: WWW-Authenticate should name insufficient_scope and scope {scope}"),
        );
        let error = self.rpc_error(outcome);
        self.check(
            error["code"] == -32001
                && error["data"]["code"] == "INSUFFICIENT_SCOPE"
                && error["data"]["requiredScopes"] == serde_json::json!([scope]),
            &format!("{what}: the JSON-RPC error should be -32001 INSUFFICIENT_SCOPE requiring {scope}"),
        );
    }

    /// The JSON-RPC error behind an SDK exception, and checks on how the SDK surfaced it.
    fn rpc_error(&self, outcome: &Value) -> Value {
        let class = outcome["errorClass"].as_str().unwrap_or_default();
        if self.sdk.is_python() {
            // The transport turns a non-2xx JSON-RPC error body into the request's error.
            self.check(
                class == "mcp.shared.exceptions.MCPError",
                "the Python SDK should raise MCPError",
            );
            serde_json::json!({"code": outcome["code"], "message": outcome["message"], "data": outcome["data"]})
        } else {
            // The transport throws on any non-2xx answer; `code` is the HTTP status.
            self.check(
                class == "StreamableHTTPError" && outcome["code"] == outcome["httpStatus"],
                "the TypeScript SDK should throw StreamableHTTPError with the HTTP status as its code",
            );
            outcome["body"]["error"].clone()
        }
    }

    /// Every HTTP exchange went to the MCP endpoint: no OAuth discovery, no token request.
    fn only_mcp_endpoint(&self, mcp_url: &str) {
        let Some(exchanges) = self.get("/exchanges").as_array() else {
            panic!("no exchanges recorded\n{self}");
        };
        self.check(!exchanges.is_empty(), "no exchanges recorded");
        for exchange in exchanges {
            self.check(
                exchange["url"] == mcp_url,
                &format!("the client requested {} (an OAuth flow?)", exchange["url"]),
            );
        }
    }
}

/// Runs one client against the server with this token, bounded by [`CLIENT_TIMEOUT`].
fn run(sdk: Sdk, server: &Server, token: &str, case: &str) -> Run {
    let mut child = sdk
        .command()
        .env("MCP_URL", server.mcp_url())
        .env("MCP_TOKEN", token)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start the {sdk:?} client: {e}"));
    let mut stdout_pipe = child.stdout.take().expect("stdout");
    let mut stderr_pipe = child.stderr.take().expect("stderr");
    let stdout = std::thread::spawn(move || {
        let mut out = String::new();
        let _ = stdout_pipe.read_to_string(&mut out);
        out
    });
    let stderr = std::thread::spawn(move || {
        let mut out = String::new();
        let _ = stderr_pipe.read_to_string(&mut out);
        out
    });
    let deadline = Instant::now() + CLIENT_TIMEOUT;
    let (status, timed_out) = loop {
        if let Some(status) = child.try_wait().expect("wait for the client") {
            break (Some(status), false);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            break (child.wait().ok(), true);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    let report = stdout
        .lines()
        .rev()
        .find_map(|line| serde_json::from_str::<Value>(line.trim()).ok().filter(Value::is_object));
    let run = Run {
        sdk,
        case: case.to_owned(),
        report: report.clone().unwrap_or(Value::Null),
        stdout,
        stderr,
    };
    assert!(
        !timed_out,
        "the {sdk:?} client did not finish within {CLIENT_TIMEOUT:?} and was killed\n--- stdout ---\n{}\n{run}",
        run.stdout
    );
    assert!(
        report.is_some() && status.is_some_and(|s| s.success()),
        "the {sdk:?} client exited with {status:?} without a JSON report\n--- stdout ---\n{}\n{run}",
        run.stdout
    );
    if std::env::var_os("PALISADE_E2E_LOGS").is_some() {
        eprintln!("{run}");
    }
    run
}

fn seed_001() -> (Fixture, Server) {
    let fixture = Fixture::sample("company-info.yaml");
    let server = Server::start(&fixture, &[]);
    (fixture, server)
}

/// Seed 001's access matrix through one client.
fn access_matrix(sdk: Sdk) {
    let (fixture, server) = seed_001();
    let mcp_url = server.mcp_url();

    // public:read: the public tool and document only.
    let token = fixture.token("alice", &["public:read"]);
    let seen = run(sdk, &server, &token, "scopes [public:read]");
    seen.connected();
    seen.only_mcp_endpoint(&mcp_url);
    seen.tools(&[PUBLIC_TOOL]);
    seen.allowed(seen.get(&format!("/calls/{PUBLIC_TOOL}")), PUBLIC_TOOL, PUBLIC_TEXT);
    seen.refused(
        seen.get(&format!("/calls/{CONFIDENTIAL_TOOL}")),
        CONFIDENTIAL_TOOL,
        "confidential:read",
    );
    seen.resources(&[PUBLIC_URI]);
    seen.allowed(&seen.report["reads"][PUBLIC_URI], PUBLIC_URI, PUBLIC_TEXT);
    seen.refused(
        &seen.report["reads"][CONFIDENTIAL_URI],
        CONFIDENTIAL_URI,
        "confidential:read",
    );

    // Both scopes: everything, including the confidential text.
    let token = fixture.token("bob", &["public:read", "confidential:read"]);
    let seen = run(sdk, &server, &token, "scopes [public:read, confidential:read]");
    seen.connected();
    seen.only_mcp_endpoint(&mcp_url);
    seen.tools(&[PUBLIC_TOOL, CONFIDENTIAL_TOOL]);
    seen.allowed(seen.get(&format!("/calls/{PUBLIC_TOOL}")), PUBLIC_TOOL, PUBLIC_TEXT);
    seen.allowed(
        seen.get(&format!("/calls/{CONFIDENTIAL_TOOL}")),
        CONFIDENTIAL_TOOL,
        CONFIDENTIAL_TEXT,
    );
    seen.resources(&[PUBLIC_URI, CONFIDENTIAL_URI]);
    seen.allowed(&seen.report["reads"][PUBLIC_URI], PUBLIC_URI, PUBLIC_TEXT);
    seen.allowed(
        &seen.report["reads"][CONFIDENTIAL_URI],
        CONFIDENTIAL_URI,
        CONFIDENTIAL_TEXT,
    );

    // No scopes: connected, but nothing visible and everything refused.
    let token = fixture.token("charlie", &[]);
    let seen = run(sdk, &server, &token, "scopes []");
    seen.connected();
    seen.only_mcp_endpoint(&mcp_url);
    seen.tools(&[]);
    seen.refused(seen.get(&format!("/calls/{PUBLIC_TOOL}")), PUBLIC_TOOL, "public:read");
    seen.refused(
        seen.get(&format!("/calls/{CONFIDENTIAL_TOOL}")),
        CONFIDENTIAL_TOOL,
        "confidential:read",
    );
    seen.resources(&[]);
    seen.refused(&seen.report["reads"][PUBLIC_URI], PUBLIC_URI, "public:read");
    seen.refused(
        &seen.report["reads"][CONFIDENTIAL_URI],
        CONFIDENTIAL_URI,
        "confidential:read",
    );

    // Expired: refused at connect with 401 invalid_token, and no OAuth flow.
    let token = fixture.sign(&fixture.claims("charlie", &["public:read"], -3600));
    let seen = run(sdk, &server, &token, "expired token");
    expired(&seen, &mcp_url);
}

fn expired(run: &Run, mcp_url: &str) {
    run.check(run.get("/fatal").is_null(), "the client script failed");
    run.check(run.get("/connected") == false, "an expired token must not connect");
    run.only_mcp_endpoint(mcp_url);
    let exchanges = run.get("/exchanges").as_array().cloned().unwrap_or_default();
    run.check(
        exchanges.iter().all(|e| e["status"] == 401),
        "every exchange with an expired token should be answered 401",
    );
    let connect_methods: Vec<&str> = exchanges.iter().filter_map(|e| e["rpc"].as_str()).collect();
    let expected: &[&str] = match run.sdk {
        // `auto` probes `server/discover`; any JSON-RPC error falls back to `initialize`.
        Sdk::PythonAuto => &["server/discover", "initialize"],
        Sdk::PythonLegacy | Sdk::TypeScript => &["initialize"],
    };
    run.check(
        connect_methods == expected,
        &format!("the client should try {expected:?} and stop"),
    );
    let error = &run.report["connectError"];
    run.check(error["httpStatus"] == 401, "the connect error should come from a 401");
    let challenge = error["wwwAuthenticate"].as_str().unwrap_or_default();
    run.check(
        challenge.starts_with("Bearer resource_metadata=") && challenge.contains(r#"error="invalid_token""#),
        "WWW-Authenticate should carry resource_metadata and error=\"invalid_token\"",
    );
    let rpc = run.rpc_error(error);
    run.check(
        rpc["code"] == -32001 && rpc["data"]["code"] == "TOKEN_EXPIRED",
        "the JSON-RPC error should be -32001 TOKEN_EXPIRED",
    );
    run.check(
        rpc["message"].as_str().unwrap_or_default().contains("expired"),
        "the message should say the token expired",
    );
}

#[test]
fn python_sdk_auto_mode_sees_seed_001_access_matrix() {
    access_matrix(Sdk::PythonAuto);
}

#[test]
fn python_sdk_legacy_mode_sees_seed_001_access_matrix() {
    access_matrix(Sdk::PythonLegacy);
}

#[test]
fn typescript_sdk_sees_seed_001_access_matrix() {
    access_matrix(Sdk::TypeScript);
}
