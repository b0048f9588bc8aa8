//! The pinned third-party MCP clients, driven by the scripts in `tests/clients/`: each connects
//! with a static bearer header, lists and calls tools, lists and reads resources, and prints one
//! JSON report of what it saw, including every HTTP exchange. [`Run`] asserts on that report.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{Server, node_modules, node22, python, repo_root};

/// How long one client run may take before it is killed.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// A real client, as the scripts in `tests/clients/` drive it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sdk {
    /// Python SDK, `Client(mode="auto")`: `server/discover` at 2026-07-28, then stateless requests.
    PythonAuto,
    /// Python SDK, `Client(mode="legacy")`: the `initialize` handshake.
    PythonLegacy,
    /// TypeScript SDK, `Client.connect` over `StreamableHTTPClientTransport`.
    TypeScript,
}

impl Sdk {
    pub fn is_python(self) -> bool {
        matches!(self, Self::PythonAuto | Self::PythonLegacy)
    }

    /// The protocol revision the client should end up speaking with this server.
    pub fn expected_protocol(self) -> &'static str {
        match self {
            Self::PythonAuto => "2026-07-28",
            Self::PythonLegacy | Self::TypeScript => "2025-11-25",
        }
    }

    pub fn command(self) -> Command {
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
pub fn node() -> PathBuf {
    let on_path = Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if on_path { PathBuf::from("node") } else { node22() }
}

/// One finished client run.
pub struct Run {
    /// The client.
    pub sdk: Sdk,
    /// What the run was about.
    pub case: String,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
    /// The JSON report it printed.
    pub report: Value,
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
    pub fn check(&self, ok: bool, what: &str) {
        assert!(ok, "{what}\n{self}");
    }

    pub fn get(&self, pointer: &str) -> &Value {
        self.report.pointer(pointer).unwrap_or(&Value::Null)
    }

    pub fn connected(&self) {
        self.check(self.get("/fatal").is_null(), "the client script failed");
        self.check(self.get("/connected") == true, "the client did not connect");
        self.check(
            self.get("/protocolVersion") == self.sdk.expected_protocol(),
            &format!("expected protocol {}", self.sdk.expected_protocol()),
        );
        self.check(self.get("/serverInfo") == "palisade-server", "serverInfo.name");
    }

    pub fn sorted_strings(&self, pointer: &str) -> Vec<String> {
        let Some(items) = self.get(pointer).as_array() else {
            panic!("{pointer} is not a list\n{self}");
        };
        let mut items: Vec<String> = items.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect();
        items.sort();
        items
    }

    pub fn tools(&self, expected: &[&str]) {
        let mut expected: Vec<&str> = expected.to_vec();
        expected.sort_unstable();
        self.check(
            self.sorted_strings("/tools") == expected,
            &format!("visible tools should be {expected:?}"),
        );
    }

    pub fn resources(&self, expected: &[&str]) {
        let mut expected: Vec<&str> = expected.to_vec();
        expected.sort_unstable();
        self.check(
            self.sorted_strings("/resources") == expected,
            &format!("listed resources should be {expected:?}"),
        );
    }

    /// A tool call (`/calls/<tool>`) or read (`/reads/<uri>`) that succeeded with this text.
    pub fn allowed(&self, outcome: &Value, what: &str, text: &str) {
        self.check(outcome["ok"] == true, &format!("{what} should succeed"));
        let seen = outcome["text"].as_str().unwrap_or_default();
        self.check(
            seen.contains(text),
            &format!("{what} should return text containing {text:?}"),
        );
    }

    /// A call or read the server refused with 403 `insufficient_scope`, as the SDK surfaced it.
    pub fn refused(&self, outcome: &Value, what: &str, scope: &str) {
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
    pub fn rpc_error(&self, outcome: &Value) -> Value {
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
    pub fn only_mcp_endpoint(&self, mcp_url: &str) {
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
pub fn run(sdk: Sdk, server: &Server, token: &str, case: &str) -> Run {
    run_with(sdk, server, token, case, &[])
}

/// [`run`] with more environment for the script (`MCP_TOOLS`, `MCP_ARGUMENTS`, `MCP_URIS`).
pub fn run_with(sdk: Sdk, server: &Server, token: &str, case: &str, env: &[(&str, &str)]) -> Run {
    let mut child = sdk
        .command()
        .env("MCP_URL", server.mcp_url())
        .env("MCP_TOKEN", token)
        .envs(env.iter().copied())
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
