//! Every third-party upstream of the proxy suite, stopped and killed under a running proxy:
//! `@modelcontextprotocol/server-everything` over stdio and over Streamable HTTP,
//! `@modelcontextprotocol/server-filesystem` over stdio and the Python `mcp-server-time` over
//! stdio. For each:
//!
//! - **timeout**: the upstream process is stopped (SIGSTOP); an allowed call is answered 504,
//!   `-32603` `UPSTREAM_TIMEOUT` within `--upstream-timeout 1s`; once it continues (SIGCONT),
//!   calls are served again.
//! - **crash**: the upstream process is killed (SIGKILL); calls are answered 503
//!   `UPSTREAM_UNAVAILABLE` with `Retry-After` until the proxy has it back — a stdio upstream
//!   started again with back-off, an HTTP upstream (restarted on its port) with a new session —
//!   then served again; `palisade_upstream_restarts_total` counts it.

use std::time::{Duration, Instant};

use palisade_e2e::reference_servers::{HttpEverything, everything};
use palisade_e2e::{Fixture, Server, TempDir, free_port, proxy_fixture, python};
use serde_json::{Value, json};

fn post(server: &Server, token: &str, body: &Value) -> (u16, Option<String>, Value) {
    palisade_e2e::mcp_post(server, token, &body.to_string())
}

fn signal(signal: &str, pid: u32) {
    let sent = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("kill");
    assert!(sent.success(), "kill {signal} {pid}");
}

/// The pid of the stdio upstream the server started last (its log names each start).
fn stdio_pid(server: &Server) -> u32 {
    server
        .logs()
        .iter()
        .rev()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["message"] == "upstream process started")
        .find_map(|l| l["pid"].as_u64())
        .and_then(|pid| u32::try_from(pid).ok())
        .expect("the log names the upstream's pid")
}

/// One upstream under test: how to call one allowed tool and what its answer holds.
struct Case<'a> {
    name: &'a str,
    server: &'a Server,
    token: String,
    call: Value,
    answered: &'a str,
}

impl Case<'_> {
    fn call(&self) -> (u16, Option<String>, Value) {
        post(self.server, &self.token, &self.call)
    }

    fn served(&self, answer: &Value) -> bool {
        answer["result"]["content"].to_string().contains(self.answered)
    }

    /// Waits until a call is served, after seeing `first` (a status) when it is given.
    fn served_again(&self, first: Option<u16>) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut seen_first = first.is_none();
        loop {
            let (status, retry_after, answer) = self.call();
            if Some(status) == first {
                assert_eq!(
                    answer["error"]["data"]["code"], "UPSTREAM_UNAVAILABLE",
                    "{}: {answer}",
                    self.name
                );
                assert_eq!(retry_after.as_deref(), Some("1"), "{}", self.name);
                seen_first = true;
            } else if status == 200 && self.served(&answer) && seen_first {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{}: not served again: {status} {answer}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn times_out_while_stopped(&self, pid: u32) {
        let (status, _, answer) = self.call();
        assert!(
            status == 200 && self.served(&answer),
            "{}: {status} {answer}",
            self.name
        );
        signal("-STOP", pid);
        let (status, _, answer) = self.call();
        signal("-CONT", pid);
        assert_eq!(status, 504, "{}: {answer}", self.name);
        assert_eq!(answer["error"]["code"], -32603, "{}", self.name);
        assert_eq!(answer["error"]["data"]["code"], "UPSTREAM_TIMEOUT", "{}", self.name);
        self.served_again(None);
    }
}

const FLAGS: [&str; 2] = ["--upstream-timeout", "1s"];

fn stdio_server(fixture: &Fixture, command: &[String]) -> Server {
    let mut extra: Vec<&str> = FLAGS.to_vec();
    extra.push("--");
    extra.extend(command.iter().map(String::as_str));
    Server::start(fixture, &extra)
}

/// A stdio upstream: stopped (504, then served), killed (503, restarted, served).
fn stdio_upstream_survives(name: &str, rules: &str, scope: &str, command: &[String], call: Value, answered: &str) {
    let fixture = proxy_fixture(rules);
    let server = stdio_server(&fixture, command);
    let case = Case {
        name,
        server: &server,
        token: fixture.token("alice", &[scope]),
        call,
        answered,
    };
    case.times_out_while_stopped(stdio_pid(&server));
    let before = stdio_pid(&server);
    signal("-KILL", before);
    case.served_again(Some(503));
    assert_ne!(stdio_pid(&server), before, "{name}: a new process");
    assert_eq!(server.metric("palisade_upstream_restarts_total", &[]), 1.0, "{name}");
}

fn tool_call(name: &str, arguments: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": name, "arguments": arguments}})
}

#[test]
fn server_everything_over_stdio_survives_a_stop_and_a_kill() {
    stdio_upstream_survives(
        "everything (stdio)",
        "- {match: echo, requiredScopes: [everything:echo]}",
        "everything:echo",
        &everything(),
        tool_call("echo", json!({"message": "still there"})),
        "Echo: still there",
    );
}

#[test]
fn server_filesystem_over_stdio_survives_a_stop_and_a_kill() {
    let data = TempDir::new("failing-files");
    std::fs::write(data.path().join("hello.txt"), "hello from the fixture").unwrap();
    let data_dir = data.path().canonicalize().unwrap().display().to_string();
    let script = palisade_e2e::node_modules().join("@modelcontextprotocol/server-filesystem/dist/index.js");
    let command = [
        palisade_e2e::node22().display().to_string(),
        script.display().to_string(),
        data_dir.clone(),
    ];
    stdio_upstream_survives(
        "filesystem (stdio)",
        "- {match: 'read_*', requiredScopes: [files:read]}",
        "files:read",
        &command,
        tool_call("read_text_file", json!({"path": format!("{data_dir}/hello.txt")})),
        "hello from the fixture",
    );
}

#[test]
fn mcp_server_time_over_stdio_survives_a_stop_and_a_kill() {
    let program = python().with_file_name("mcp-server-time");
    let command = [program.display().to_string(), "--local-timezone".into(), "UTC".into()];
    stdio_upstream_survives(
        "time (stdio)",
        "- {match: get_current_time, requiredScopes: [time:read]}",
        "time:read",
        &command,
        tool_call("get_current_time", json!({"timezone": "UTC"})),
        "UTC",
    );
}

#[test]
fn server_everything_over_streamable_http_survives_a_stop_and_a_restart() {
    let port = free_port();
    let upstream = HttpEverything::start(port);
    let fixture = proxy_fixture("- {match: echo, requiredScopes: [everything:echo]}");
    let url = format!("http://127.0.0.1:{port}/mcp");
    let mut extra: Vec<&str> = FLAGS.to_vec();
    extra.extend(["--upstream-url", &url]);
    let server = Server::start(&fixture, &extra);
    let case = Case {
        name: "everything (Streamable HTTP)",
        server: &server,
        token: fixture.token("alice", &["everything:echo"]),
        call: tool_call("echo", json!({"message": "still there"})),
        answered: "Echo: still there",
    };
    case.times_out_while_stopped(upstream.pid());
    // Killed: calls fail (503) until it is back on its port; then a new session serves them.
    drop(upstream);
    let (status, _, answer) = case.call();
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["error"]["data"]["code"], "UPSTREAM_UNAVAILABLE");
    let _upstream = HttpEverything::start(port);
    case.served_again(None);
}
