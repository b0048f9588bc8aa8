//! Proxy mode end to end: `palisade-server serve ... -- <command>` and `--upstream-url` in front
//! of pinned third-party servers — `@modelcontextprotocol/server-everything` (stdio and
//! Streamable HTTP), `@modelcontextprotocol/server-filesystem` (stdio) and the Python
//! `mcp-server-time` (stdio) — through the real Python (auto and legacy) and TypeScript clients,
//! with real HS256 tokens.
//!
//! | token scopes                        | tools listed        | echo   | get-sum            |
//! |-------------------------------------|---------------------|--------|--------------------|
//! | `everything:echo`                   | echo                | ok     | 403, everything:admin |
//! | `everything:echo everything:admin`  | echo and get-*      | ok     | ok (5)             |
//!
//! Beside the clients: what reaches the upstream (a recording stdio server: no token, no header,
//! no `_meta`, nothing denied), an upstream killed (503 `UPSTREAM_UNAVAILABLE` with Retry-After,
//! then served again), a slow one (504 `UPSTREAM_TIMEOUT`), a policy changed under a running
//! upstream, and a policy that defines tools refused on reload while the last good one serves.
//! The same upstream in a "container of its own": behind `palisade-stdio-shim` on a Unix socket,
//! with `serve --upstream-socket` (a killed upstream process is started again on reconnect).
//! And the upstream's own credentials (`--upstream-header NAME=FILE`): a document-mode
//! `palisade-server` that admits only an API key is reached with the key from a file, sees the
//! proxy's identity (never the caller's), and a rotated key file is used without a restart.

use std::path::Path;
use std::time::{Duration, Instant};

use palisade_e2e::clients::{Run, Sdk, run_with};
use palisade_e2e::reference_servers::{HttpEverything, everything};
use palisade_e2e::{Fixture, Server, TempDir, free_port, http_client, python, repo_root};
use serde_json::{Value, json};

const ECHO: &str = "everything:echo";
const ADMIN: &str = "everything:admin";

use palisade_e2e::proxy_fixture as fixture;

const RULES: &str = "- {match: echo, requiredScopes: [everything:echo]}
- {match: get-*, requiredScopes: [everything:admin]}
- {match: '*_file', requiredScopes: [files:read]}
- {match: dup, requiredScopes: [files:read]}
- {kind: prompt, match: simple-prompt, requiredScopes: [everything:echo]}
- {kind: prompt, match: '*', requiredScopes: [everything:admin]}
- {kind: resource, match: 'demo://resource/static/document/*', requiredScopes: [everything:echo]}
- {kind: resource, match: '*', requiredScopes: [everything:admin]}";

/// A static document of server-everything (echo may read it) and a dynamic resource (admin only).
const STATIC_DOCUMENT: &str = "demo://resource/static/document/architecture.md";
const DYNAMIC_RESOURCE: &str = "demo://resource/dynamic/text/1";

fn key_file(fixture: &Fixture) -> std::path::PathBuf {
    fixture.dir.path().join("secrets/hmac-key")
}

/// `serve` in front of server-everything over stdio, with `flags` before the command.
fn proxy_everything(fixture: &Fixture, flags: &[&str]) -> Server {
    let command = everything();
    let mut extra: Vec<&str> = flags.to_vec();
    extra.push("--");
    extra.extend(command.iter().map(String::as_str));
    Server::start(fixture, &extra)
}

/// One JSON-RPC request at 2025-11-25: status, `Retry-After`, body.
fn post(server: &Server, token: &str, body: &Value) -> (u16, Option<String>, Value) {
    post_raw(server, token, &body.to_string())
}

/// [`post`] of a body as written (so that duplicate keys reach the server).
fn post_raw(server: &Server, token: &str, body: &str) -> (u16, Option<String>, Value) {
    palisade_e2e::mcp_post(server, token, body)
}

fn call(name: &str, arguments: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": name, "arguments": arguments}})
}

const CALLS: &str = r#"{"echo": {"message": "through the proxy"}, "get-sum": {"a": 2, "b": 3}}"#;

/// `text` as one JSON-pointer segment (`~` and `/` escaped).
fn pointer(text: &str) -> String {
    text.replace('~', "~0").replace('/', "~1")
}

fn through(sdk: Sdk, server: &Server, fixture: &Fixture) {
    let uris = format!("{STATIC_DOCUMENT} {DYNAMIC_RESOURCE}");
    let env = [
        ("MCP_TOOLS", "echo get-sum"),
        ("MCP_ARGUMENTS", CALLS),
        ("MCP_URIS", uris.as_str()),
        ("MCP_PROMPTS", "simple-prompt args-prompt"),
    ];
    let token = fixture.token("alice", &[ECHO]);
    let seen: Run = run_with(sdk, server, &token, "scopes [everything:echo]", &env);
    seen.connected();
    seen.only_mcp_endpoint(&server.mcp_url());
    seen.tools(&["echo"]);
    seen.allowed(seen.get("/calls/echo"), "echo", "Echo: through the proxy");
    seen.refused(seen.get("/calls/get-sum"), "get-sum", ADMIN);
    // Prompts and resources, by their own rules: the lists show what get/read allow.
    seen.check(
        seen.sorted_strings("/prompts") == ["simple-prompt"],
        "only simple-prompt should be listed",
    );
    seen.check(
        seen.get("/gets/simple-prompt")["ok"] == true,
        "simple-prompt should be got",
    );
    seen.refused(seen.get("/gets/args-prompt"), "args-prompt", ADMIN);
    let resources = seen.sorted_strings("/resources");
    seen.check(
        !resources.is_empty()
            && resources
                .iter()
                .all(|r| r.starts_with("demo://resource/static/document/")),
        "only the static documents should be listed",
    );
    seen.allowed(
        seen.get(&format!("/reads/{}", pointer(STATIC_DOCUMENT))),
        STATIC_DOCUMENT,
        "",
    );
    seen.refused(
        seen.get(&format!("/reads/{}", pointer(DYNAMIC_RESOURCE))),
        DYNAMIC_RESOURCE,
        ADMIN,
    );

    let token = fixture.token("root", &[ECHO, ADMIN]);
    let seen = run_with(sdk, server, &token, "scopes [everything:echo everything:admin]", &env);
    seen.connected();
    let tools = seen.sorted_strings("/tools");
    seen.check(
        tools.contains(&"echo".to_owned()) && tools.contains(&"get-sum".to_owned()),
        "echo and get-sum should be listed",
    );
    seen.check(
        tools.iter().all(|t| t == "echo" || t.starts_with("get-")),
        "only echo and get-* should be listed",
    );
    seen.allowed(seen.get("/calls/get-sum"), "get-sum", "5");
}

#[test]
fn python_sdk_auto_mode_through_the_proxy_over_stdio() {
    let fixture = fixture(RULES);
    let server = proxy_everything(&fixture, &[]);
    through(Sdk::PythonAuto, &server, &fixture);
}

#[test]
fn python_sdk_legacy_mode_through_the_proxy_over_stdio() {
    let fixture = fixture(RULES);
    let server = proxy_everything(&fixture, &[]);
    through(Sdk::PythonLegacy, &server, &fixture);
}

#[test]
fn typescript_sdk_through_the_proxy_over_stdio() {
    let fixture = fixture(RULES);
    let server = proxy_everything(&fixture, &[]);
    through(Sdk::TypeScript, &server, &fixture);
}

/// server-everything behind `palisade-stdio-shim` on a Unix socket (as in a pod, the upstream in
/// a container of its own), and `serve --upstream-socket` in front of it.
#[test]
fn typescript_sdk_through_the_stdio_shim_s_socket_and_a_killed_upstream_is_started_again() {
    let fixture = fixture(RULES);
    let socket = fixture.dir.path().join("upstream.sock");
    let mut shim = std::process::Command::new(palisade_e2e::shim_binary())
        .args(["run", "--socket"])
        .arg(&socket)
        .arg("--")
        .args(everything())
        .stderr(std::fs::File::create(fixture.dir.path().join("shim.log")).unwrap())
        .spawn()
        .expect("start the shim");
    let socket_arg = socket.display().to_string();
    let server = Server::start(&fixture, &["--upstream-socket", &socket_arg]);
    let mode = std::fs::metadata(&socket).unwrap().permissions();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o660);
    through(Sdk::TypeScript, &server, &fixture);

    // The upstream process (the shim's child) killed: 503, then a new connection, a new process.
    let token = fixture.token("alice", &[ECHO]);
    let children = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", shim.id())).unwrap();
    let child = children
        .split_whitespace()
        .next()
        .expect("the shim runs the upstream")
        .to_owned();
    assert!(
        std::process::Command::new("kill")
            .args(["-9", &child])
            .status()
            .unwrap()
            .success()
    );
    let echo = call("echo", json!({"message": "again"}));
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut saw_unavailable = false;
    loop {
        let (status, _, answer) = post(&server, &token, &echo);
        if status == 503 {
            assert_eq!(answer["error"]["data"]["code"], "UPSTREAM_UNAVAILABLE");
            saw_unavailable = true;
        } else if status == 200 && saw_unavailable {
            assert_eq!(answer["result"]["content"][0]["text"], "Echo: again");
            break;
        }
        assert!(Instant::now() < deadline, "not served again: {status} {answer}");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(server.metric("palisade_upstream_restarts_total", &[]), 1.0);
    let again = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", shim.id())).unwrap();
    assert_ne!(again.split_whitespace().next(), Some(child.as_str()), "a new process");

    // SIGTERM: the shim stops its process group and exits 0.
    drop(server);
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &shim.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let status = shim.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

#[test]
fn python_and_typescript_sdks_through_the_proxy_over_streamable_http() {
    let port = free_port();
    let _upstream = HttpEverything::start(port);
    let fixture = fixture(RULES);
    let url = format!("http://127.0.0.1:{port}/mcp");
    let server = Server::start(&fixture, &["--upstream-url", &url]);
    through(Sdk::PythonLegacy, &server, &fixture);
    through(Sdk::TypeScript, &server, &fixture);
    assert!(server.metric("palisade_upstream_requests_total", &[("outcome", "ok")]) >= 4.0);
}

/// `serve` in front of tests/clients/recording_upstream.py, and the file it records into.
fn recording_proxy(fixture: &Fixture) -> (Server, std::path::PathBuf) {
    let record = fixture.dir.path().join("received.jsonl");
    let script = repo_root().join("tests/clients/recording_upstream.py");
    let argv = [python(), script, record.clone()].map(|p| p.display().to_string());
    let mut extra = vec!["--"];
    extra.extend(argv.iter().map(String::as_str));
    (Server::start(fixture, &extra), record)
}

/// The lines the recording upstream received, parsed.
fn recorded(file: &Path) -> Vec<Value> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON lines"))
        .collect()
}

#[test]
fn only_allowed_calls_reach_the_upstream_and_nothing_of_the_caller_with_them() {
    let fixture = fixture(RULES);
    let (server, record) = recording_proxy(&fixture);
    let token = fixture.token("alice", &["files:read"]);
    let secret_marker = "caller-secret-marker";

    // Listed: the governable tools the token reaches; `bad name` and both `dup`s are withheld.
    let (status, _, listed) = post(
        &server,
        &token,
        &json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}),
    );
    assert_eq!(status, 200, "{listed}");
    let names: Vec<&str> = listed["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["read_file", "write_file"]);
    assert_eq!(server.metric("palisade_upstream_tools", &[("state", "withheld")]), 3.0);

    // Allowed: forwarded with its name and arguments only.
    let mut allowed = call("read_file", json!({"path": "/data/a.txt"}));
    allowed["params"]["_meta"] = json!({"progressToken": secret_marker});
    let (status, _, answer) = post(&server, &token, &allowed);
    assert_eq!(status, 200, "{answer}");
    let text = answer["result"]["content"][0]["text"].as_str().unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(text).unwrap(),
        json!({"called": "read_file", "arguments": {"path": "/data/a.txt"}})
    );

    // Refused locally: denied, unknown, withheld, and methods a proxy does not forward.
    let other = fixture.token("bob", &["other:scope"]);
    let (status, _, denied) = post(&server, &other, &call("read_file", json!({"path": secret_marker})));
    assert_eq!((status, &denied["error"]["code"]), (403, &json!(-32001)), "{denied}");
    let (status, _, unknown) = post(&server, &token, &call("rm_rf", json!({})));
    assert_eq!((status, &unknown["error"]["code"]), (200, &json!(-32602)), "{unknown}");
    let (_, _, withheld) = post(&server, &token, &call("dup", json!({})));
    assert_eq!(withheld["error"]["message"], "Unknown tool: dup");
    for method in [
        "resources/list",
        "prompts/list",
        "completion/complete",
        "logging/setLevel",
    ] {
        let (status, _, refused) = post(
            &server,
            &token,
            &json!({"jsonrpc": "2.0", "id": 3, "method": method, "params": {}}),
        );
        assert_eq!(
            (status, &refused["error"]["code"]),
            (200, &json!(-32601)),
            "{method}: {refused}"
        );
    }

    let received = recorded(&record);
    let methods: Vec<&str> = received.iter().filter_map(|m| m["method"].as_str()).collect();
    assert_eq!(
        methods,
        ["initialize", "notifications/initialized", "tools/list", "tools/call"],
        "{received:?}"
    );
    let forwarded = &received[3];
    assert_eq!(
        forwarded["params"],
        json!({"name": "read_file", "arguments": {"path": "/data/a.txt"}})
    );
    let everything_received = std::fs::read_to_string(&record).unwrap();
    assert!(!everything_received.contains(&token) && !everything_received.contains(secret_marker));

    // Each decision is audited; the forwarded call with how the upstream answered.
    let events = server.audit_events();
    let forwarded_event = events
        .iter()
        .find(|e| e["tool"] == "read_file" && e["decision"] == "allow")
        .expect("audit of the allowed call");
    assert_eq!(forwarded_event["upstream"], "ok");
    assert!(forwarded_event["upstream_us"].as_u64().is_some());
    let denied_event = events
        .iter()
        .find(|e| e["tool"] == "read_file" && e["decision"] == "deny")
        .expect("audit of the denied call");
    assert_eq!(denied_event["missing_scopes"], json!(["files:read"]));
    assert!(denied_event.get("upstream").is_none());
}

#[test]
fn a_killed_upstream_is_answered_503_then_served_again() {
    let fixture = fixture(RULES);
    let server = proxy_everything(&fixture, &[]);
    let token = fixture.token("alice", &[ECHO]);
    let echo = call("echo", json!({"message": "before"}));
    assert_eq!(post(&server, &token, &echo).0, 200);

    let child = server
        .logs()
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find_map(|l| l["pid"].as_u64())
        .expect("the log names the upstream's pid");
    let killed = std::process::Command::new("kill")
        .args(["-9", &child.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());

    let deadline = Instant::now() + Duration::from_secs(20);
    let mut saw_unavailable = false;
    loop {
        let (status, retry_after, answer) = post(&server, &token, &echo);
        if status == 503 {
            assert_eq!(answer["error"]["code"], -32603, "{answer}");
            assert_eq!(answer["error"]["data"]["code"], "UPSTREAM_UNAVAILABLE");
            assert_eq!(retry_after.as_deref(), Some("1"));
            saw_unavailable = true;
        } else if status == 200 && saw_unavailable {
            assert_eq!(answer["result"]["content"][0]["text"], "Echo: before");
            break;
        }
        assert!(Instant::now() < deadline, "not served again: {status} {answer}");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Still ready while it restarted (no endpoint flapping), and counted.
    assert_eq!(server.metric("palisade_upstream_restarts_total", &[]), 1.0);
    assert_eq!(server.metric("palisade_upstream_ready", &[]), 1.0);
    let ready: Value = http_client()
        .get(format!("{}/ready", server.base_url))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(ready["upstream"], "ready");
}

#[test]
fn a_slow_upstream_is_answered_504() {
    let fixture = fixture("- {match: '*', requiredScopes: [everything:echo]}");
    let server = proxy_everything(&fixture, &["--upstream-timeout", "1s"]);
    let token = fixture.token("alice", &[ECHO]);
    let slow = call("trigger-long-running-operation", json!({"duration": 5, "steps": 5}));
    let started = Instant::now();
    let (status, _, answer) = post(&server, &token, &slow);
    assert_eq!(status, 504, "{answer}");
    assert!(started.elapsed() < Duration::from_secs(4));
    assert_eq!(answer["error"]["data"]["code"], "UPSTREAM_TIMEOUT");
    assert_eq!(
        answer["error"]["message"],
        "The upstream MCP server did not answer within 1 s.\n\nAction: retry later, or ask the server's owner to raise its upstream timeout."
    );
    // The upstream carries on for the next caller.
    let (status, _, _) = post(&server, &token, &call("echo", json!({"message": "next"})));
    assert_eq!(status, 200);
    assert_eq!(
        server.metric("palisade_upstream_requests_total", &[("outcome", "timeout")]),
        1.0
    );
}

#[test]
fn a_policy_change_applies_to_the_running_upstream_and_one_that_defines_tools_is_refused() {
    let fixture = fixture(RULES);
    let server = proxy_everything(&fixture, &[]);
    let token = fixture.token("alice", &[ECHO]);
    let echo = call("echo", json!({"message": "hello"}));
    assert_eq!(post(&server, &token, &echo).0, 200);

    // echo now needs admin: refused without restarting the upstream.
    let stricter = RULES.replace(
        "{match: echo, requiredScopes: [everything:echo]}",
        "{match: echo, requiredScopes: [everything:admin]}",
    );
    std::fs::write(
        &fixture.policy_file,
        palisade_e2e::proxy_policy(&key_file(&fixture), &stricter),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while post(&server, &token, &echo).0 != 403 {
        assert!(Instant::now() < deadline, "the stricter policy did not apply");
        std::thread::sleep(Duration::from_millis(100));
    }

    // A policy with tools of its own is refused; the stricter one stays in force.
    let with_tools = format!(
        "{}collections: [{{name: docs}}]\ntools: [{{name: get_doc, collection: docs, action: get}}]\n",
        palisade_e2e::proxy_policy(&key_file(&fixture), RULES)
    );
    std::fs::write(&fixture.policy_file, with_tools).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server
        .logs()
        .iter()
        .any(|l| l.contains("must define no tools or collections"))
    {
        assert!(Instant::now() < deadline, "the reload was not refused");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(post(&server, &token, &echo).0, 403);
    assert_eq!(server.metric("palisade_upstream_restarts_total", &[]), 0.0);
}

/// `fixture` with `rules`, served in front of `command`.
fn proxy_command(rules: &str, command: &[String]) -> (Fixture, Server) {
    let fixture = fixture(rules);
    let mut extra = vec!["--"];
    extra.extend(command.iter().map(String::as_str));
    let server = Server::start(&fixture, &extra);
    (fixture, server)
}

#[test]
fn server_filesystem_through_the_proxy_reads_but_does_not_write_with_a_read_scope() {
    let data = TempDir::new("proxied-files");
    std::fs::write(data.path().join("hello.txt"), "hello from the fixture").unwrap();
    let data_dir = data.path().canonicalize().unwrap().display().to_string();
    let script = palisade_e2e::node_modules().join("@modelcontextprotocol/server-filesystem/dist/index.js");
    let command = [palisade_e2e::node22(), script].map(|p| p.display().to_string());
    let command = [command[0].clone(), command[1].clone(), data_dir.clone()];
    let rules = "- {match: 'read_*', requiredScopes: [files:read]}
- {match: 'list_*', requiredScopes: [files:read]}
- {match: 'write_file', requiredScopes: [files:write]}
- {match: 'edit_file', requiredScopes: [files:write]}";
    let (fixture, server) = proxy_command(rules, &command);
    let arguments = json!({
        "read_text_file": {"path": format!("{data_dir}/hello.txt")},
        "write_file": {"path": format!("{data_dir}/new.txt"), "content": "written"},
    })
    .to_string();
    let env = [
        ("MCP_TOOLS", "read_text_file write_file"),
        ("MCP_ARGUMENTS", arguments.as_str()),
        ("MCP_URIS", ""),
    ];
    let token = fixture.token("alice", &["files:read"]);
    for sdk in [Sdk::PythonAuto, Sdk::TypeScript] {
        let seen = run_with(sdk, &server, &token, "scopes [files:read]", &env);
        seen.connected();
        let tools = seen.sorted_strings("/tools");
        seen.check(
            tools.contains(&"read_text_file".to_owned()) && tools.contains(&"list_directory".to_owned()),
            "the read tools should be listed",
        );
        seen.check(
            tools.iter().all(|t| t.starts_with("read_") || t.starts_with("list_")),
            "only read_* and list_* should be listed (no write, edit, move or unruled tool)",
        );
        seen.allowed(
            seen.get("/calls/read_text_file"),
            "read_text_file",
            "hello from the fixture",
        );
        seen.refused(seen.get("/calls/write_file"), "write_file", "files:write");
    }
    assert!(
        !data.path().join("new.txt").exists(),
        "a denied write reached the upstream"
    );
}

#[test]
fn mcp_server_time_python_through_the_proxy() {
    let program = python().with_file_name("mcp-server-time");
    let command = [program.display().to_string(), "--local-timezone".into(), "UTC".into()];
    let rules = "- {match: get_current_time, requiredScopes: [time:read]}
- {match: convert_time, requiredScopes: [time:convert]}";
    let (fixture, server) = proxy_command(rules, &command);
    let arguments = json!({
        "get_current_time": {"timezone": "UTC"},
        "convert_time": {"source_timezone": "UTC", "time": "12:00", "target_timezone": "Europe/Paris"},
    })
    .to_string();
    let env = [
        ("MCP_TOOLS", "get_current_time convert_time"),
        ("MCP_ARGUMENTS", arguments.as_str()),
        ("MCP_URIS", ""),
    ];
    let token = fixture.token("alice", &["time:read"]);
    let seen = run_with(Sdk::PythonLegacy, &server, &token, "scopes [time:read]", &env);
    seen.connected();
    seen.tools(&["get_current_time"]);
    seen.allowed(seen.get("/calls/get_current_time"), "get_current_time", "UTC");
    seen.refused(seen.get("/calls/convert_time"), "convert_time", "time:convert");
}

#[test]
fn an_http_upstream_that_is_not_up_yet_is_tried_again_until_it_answers() {
    let port = free_port();
    let fixture = fixture(RULES);
    palisade_e2e::server_binary(); // built now, so that the server starts at once below
    // The upstream comes up two seconds after the server: the server keeps trying with back-off
    // (0.5 s, 1 s, 2 s, ...) and is ready once it has the upstream's tools.
    let upstream = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(2));
        HttpEverything::start(port)
    });
    let url = format!("http://127.0.0.1:{port}/mcp");
    let server = Server::start(&fixture, &["--upstream-url", &url]);
    let _upstream = upstream.join().unwrap();
    assert!(server.metric("palisade_upstream_restarts_total", &[]) >= 1.0);
    assert!(
        server
            .logs()
            .iter()
            .any(|l| l.contains("upstream not reachable; trying again")),
        "{:?}",
        server.logs()
    );
    let token = fixture.token("alice", &[ECHO]);
    let (status, _, answer) = post(&server, &token, &call("echo", json!({"message": "late"})));
    assert_eq!(
        (status, &answer["result"]["content"][0]["text"]),
        (200, &json!("Echo: late"))
    );
}

#[test]
fn names_that_only_look_allowed_and_parser_tricks_never_reach_the_upstream_undecided() {
    let rules = "- {match: read_file, requiredScopes: [files:read]}
- {match: write_file, requiredScopes: [files:write]}";
    let fixture = fixture(rules);
    let (server, record) = recording_proxy(&fixture);
    let token = fixture.token("alice", &["files:read"]);

    // Exact names only: a case, space, control, invisible or encoded variant, a path or a
    // pattern is not the tool, whatever an upstream might make of it.
    for name in [
        "READ_FILE",
        "read_file ",
        " read_file",
        "read_file\u{0}",
        "read_file\u{200b}",
        "read%5ffile",
        "read_file/../write_file",
        "read_*",
        "*",
        "",
    ] {
        let (status, _, answer) = post(&server, &token, &call(name, json!({})));
        assert_eq!(
            (status, &answer["error"]["code"], &answer["error"]["message"]),
            (200, &json!(-32602), &json!(format!("Unknown tool: {name}"))),
            "{name:?}: {answer}"
        );
    }
    for (params, message) in [
        (json!({"name": 7}), "Invalid params: name must be a string"),
        (json!({"name": ["read_file"]}), "Invalid params: name must be a string"),
        (
            json!({"name": "read_file", "arguments": "path=/etc"}),
            "Invalid params: arguments must be an object",
        ),
    ] {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params});
        let (status, _, answer) = post(&server, &token, &body);
        assert_eq!(
            (status, &answer["error"]["message"]),
            (200, &json!(message)),
            "{answer}"
        );
    }
    // A batch is refused before anything is decided.
    let (status, _, answer) = post_raw(&server, &token, &format!("[{}]", call("read_file", json!({}))));
    assert_eq!((status, &answer["error"]["code"]), (400, &json!(-32600)), "{answer}");
    // Duplicate keys: the server decides on one reading (the last name) and forwards exactly what
    // it decided on, re-serialized, so no parser of the upstream can read another name.
    let duplicate_name = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_file","name":"write_file","arguments":{}}}"#;
    let (status, _, answer) = post_raw(&server, &token, duplicate_name);
    assert_eq!((status, &answer["error"]["code"]), (403, &json!(-32001)), "{answer}");
    let reversed = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"write_file","name":"read_file","arguments":{"path":"/a","path":"/b"}}}"#;
    let (status, _, answer) = post_raw(&server, &token, reversed);
    assert_eq!(status, 200, "{answer}");

    let received = recorded(&record);
    let calls: Vec<&Value> = received.iter().filter(|m| m["method"] == "tools/call").collect();
    assert_eq!(calls.len(), 1, "{received:?}");
    assert_eq!(
        calls[0]["params"],
        json!({"name": "read_file", "arguments": {"path": "/b"}})
    );
    let raw = std::fs::read_to_string(&record).unwrap();
    assert!(!raw.contains("write_file\""), "{raw}");
}

#[test]
fn the_upstream_gets_its_own_credentials_from_a_file_never_the_caller_s_and_a_rotated_key_without_a_restart() {
    let (_upstream_fixture, upstream) = palisade_e2e::api_key_upstream::start("the-proxy-s-key");
    let fixture = fixture("- {match: read_notes, requiredScopes: [notes:read]}");
    let key_file = fixture.dir.path().join("secrets/upstream-key");
    std::fs::write(&key_file, "the-proxy-s-key\n").unwrap();
    let header = format!("X-API-Key={}", key_file.display());
    let server = Server::start(
        &fixture,
        &["--upstream-url", &upstream.mcp_url(), "--upstream-header", &header],
    );
    let token = fixture.token("alice", &["notes:read"]);
    let read = call("read_notes", json!({}));

    let (status, _, answer) = post(&server, &token, &read);
    assert_eq!(status, 200, "{answer}");
    assert!(
        answer["result"]["content"]
            .to_string()
            .contains("Welcome through the proxy."),
        "{answer}"
    );
    // The upstream decided on the proxy's key: its audit names the proxy, never alice, and no
    // event there was refused for a token it was never meant to see.
    let calls: Vec<Value> = upstream
        .audit_events_until("of the tools/call", |events| {
            events.iter().any(|e| e["mcp_method"] == "tools/call")
        })
        .into_iter()
        .filter(|e| e["mcp_method"] == "tools/call")
        .collect();
    assert!(calls.iter().all(|e| e["subject"] == "palisade-proxy"), "{calls:?}");
    assert!(upstream.audit_events().iter().all(|e| e["subject"] != "alice"));

    // A rotated key is used within the reload interval, without a restart: a wrong one is
    // refused by the upstream (503 UPSTREAM_UNAVAILABLE to the caller, the reason in the log,
    // never the key), and the right one serves again.
    std::fs::write(&key_file, "a-revoked-key").unwrap();
    std::thread::sleep(Duration::from_millis(2_100));
    let (status, retry_after, answer) = post(&server, &token, &read);
    assert_eq!((status, retry_after.as_deref()), (503, Some("1")), "{answer}");
    assert_eq!(answer["error"]["data"]["code"], "UPSTREAM_UNAVAILABLE");
    std::fs::write(&key_file, "the-proxy-s-key").unwrap();
    std::thread::sleep(Duration::from_millis(2_100));
    let (status, _, answer) = post(&server, &token, &read);
    assert_eq!(status, 200, "{answer}");
    let logs = server.logs().join("\n");
    assert!(
        logs.contains("refused Palisade's credentials (401 Unauthorized)"),
        "{logs}"
    );
    assert!(
        !logs.contains("the-proxy-s-key") && !logs.contains("a-revoked-key"),
        "{logs}"
    );
}

/// A JSON-RPC request of `method` with `params`.
fn rpc(method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": 9, "method": method, "params": params})
}

/// What the entries of a list result name (`key` of each entry of `array`), sorted.
fn listed(answer: &Value, array: &str, key: &str) -> Vec<String> {
    let mut names: Vec<String> = answer["result"][array]
        .as_array()
        .unwrap_or_else(|| panic!("no {array} in {answer}"))
        .iter()
        .filter_map(|e| e[key].as_str().map(str::to_owned))
        .collect();
    names.sort();
    names
}

#[test]
fn server_everything_s_prompts_and_resources_are_listed_and_got_as_the_policy_says() {
    let rules = "- {match: echo, requiredScopes: [everything:echo]}
- {kind: prompt, match: simple-prompt, requiredScopes: [everything:echo]}
- {kind: prompt, match: '*', requiredScopes: [everything:admin]}
- {kind: resource, match: 'demo://resource/static/document/*', requiredScopes: [everything:echo]}
- {kind: resource, match: '*', requiredScopes: [everything:admin]}";
    let (fixture, server) = proxy_command(rules, &everything());
    let echo = fixture.token("alice", &[ECHO]);
    let admin = fixture.token("root", &[ECHO, ADMIN]);

    let (status, _, init) = post(
        &server,
        &echo,
        &rpc(
            "initialize",
            json!({"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}),
        ),
    );
    assert_eq!(status, 200, "{init}");
    let capabilities = &init["result"]["capabilities"];
    assert!(
        capabilities["prompts"].is_object() && capabilities["resources"].is_object(),
        "{init}"
    );

    // Prompts: the list shows what get allows; a denied get never reaches the upstream.
    let (_, _, prompts) = post(&server, &echo, &rpc("prompts/list", json!({})));
    assert_eq!(listed(&prompts, "prompts", "name"), ["simple-prompt"]);
    let (_, _, all_prompts) = post(&server, &admin, &rpc("prompts/list", json!({})));
    let all_prompts = listed(&all_prompts, "prompts", "name");
    assert!(
        all_prompts.len() > 1 && all_prompts.contains(&"args-prompt".to_owned()),
        "{all_prompts:?}"
    );
    let (status, _, got) = post(&server, &echo, &rpc("prompts/get", json!({"name": "simple-prompt"})));
    assert_eq!(status, 200, "{got}");
    assert!(
        got["result"]["messages"].as_array().is_some_and(|m| !m.is_empty()),
        "{got}"
    );
    let (status, _, denied) = post(
        &server,
        &echo,
        &rpc(
            "prompts/get",
            json!({"name": "args-prompt", "arguments": {"city": "Oslo"}}),
        ),
    );
    assert_eq!(
        (status, &denied["error"]["data"]["code"]),
        (403, &json!("INSUFFICIENT_SCOPE")),
        "{denied}"
    );
    let (status, _, got) = post(
        &server,
        &admin,
        &rpc(
            "prompts/get",
            json!({"name": "args-prompt", "arguments": {"city": "Oslo"}}),
        ),
    );
    assert_eq!(status, 200, "{got}");

    // Resources: static documents for echo, everything (templates included) for admin.
    let (_, _, resources) = post(&server, &echo, &rpc("resources/list", json!({})));
    let uris = listed(&resources, "resources", "uri");
    assert!(!uris.is_empty(), "{resources}");
    assert!(
        uris.iter().all(|u| u.starts_with("demo://resource/static/document/")),
        "{uris:?}"
    );
    let (_, _, templates) = post(&server, &echo, &rpc("resources/templates/list", json!({})));
    assert_eq!(
        listed(&templates, "resourceTemplates", "uriTemplate"),
        Vec::<String>::new()
    );
    let (_, _, templates) = post(&server, &admin, &rpc("resources/templates/list", json!({})));
    assert!(
        listed(&templates, "resourceTemplates", "uriTemplate")
            .iter()
            .any(|t| t.starts_with("demo://resource/dynamic/")),
        "{templates}"
    );
    let readable = &uris[0];
    let (status, _, read) = post(&server, &echo, &rpc("resources/read", json!({"uri": readable})));
    assert_eq!(status, 200, "{read}");
    assert_eq!(read["result"]["contents"][0]["uri"], readable.as_str(), "{read}");
    let dynamic = "demo://resource/dynamic/text/1";
    let (status, _, denied) = post(&server, &echo, &rpc("resources/read", json!({"uri": dynamic})));
    assert_eq!(
        (status, &denied["error"]["data"]["code"]),
        (403, &json!("INSUFFICIENT_SCOPE")),
        "{denied}"
    );
    let (status, _, read) = post(&server, &admin, &rpc("resources/read", json!({"uri": dynamic})));
    assert_eq!(status, 200, "{read}");

    // Every decision is audited with what it was about.
    let events = server.audit_events();
    let prompt_denial = events
        .iter()
        .find(|e| e["prompt"] == "args-prompt" && e["decision"] == "deny")
        .unwrap_or_else(|| panic!("no audit of the denied prompt: {events:?}"));
    assert_eq!(prompt_denial["reason"], "missing_scopes");
    assert!(
        events
            .iter()
            .any(|e| e["resource"] == dynamic && e["decision"] == "deny")
    );
    assert!(
        events
            .iter()
            .any(|e| e["resource"] == readable.as_str() && e["decision"] == "allow")
    );
}
