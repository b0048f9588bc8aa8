//! Proxy mode's upstream client against real third-party MCP servers over stdio, driven
//! directly (not yet through `palisade-server serve`): the reference "everything" server
//! (`@modelcontextprotocol/server-everything`, TypeScript, on the pinned Node 22; over stdio and
//! over Streamable HTTP) and the Python `mcp-server-time`, both pinned in tests/deps and installed by `make e2e-deps`. Each is
//! initialized as a 2025-11-25 client with no capabilities, lists its tools, answers a call, and
//! an error; a call that outlives its timeout is cancelled and the connection carries on; a
//! killed server is started again by the supervisor and answers again; an HTTP upstream that
//! restarts (and so forgets Palisade's session) gets a new session and the request again.

use std::time::Duration;

use palisade_e2e::python;
use palisade_e2e::reference_servers::{HttpEverything, everything};
use palisade_server::upstream::handshake::list_tools;
use palisade_server::upstream::http::HttpUpstream;
use palisade_server::upstream::stdio::StdioUpstream;
use palisade_server::upstream::supervisor::{Backoff, StdioConfig, StdioSource, Supervisor, UpstreamState};
use palisade_server::upstream::{Transport, UpstreamError};
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(20);
const MAX_MESSAGE: usize = 1 << 20;

/// Initializes `upstream` as a legacy (2025-11-25) client and returns the `initialize` result.
async fn initialize(upstream: &StdioUpstream) -> Value {
    let params = json!({
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "palisade-server", "version": env!("CARGO_PKG_VERSION")},
    });
    let result = upstream
        .connection()
        .request("initialize", Some(params), TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("initialize: {e}; stderr: {:?}", upstream.stderr_tail()));
    upstream
        .connection()
        .notify("notifications/initialized", None)
        .await
        .expect("initialized");
    result
}

async fn tool_names(upstream: &StdioUpstream) -> Vec<String> {
    let listed = upstream
        .connection()
        .request("tools/list", Some(json!({})), TIMEOUT)
        .await
        .expect("tools/list");
    listed["tools"]
        .as_array()
        .expect("a tools array")
        .iter()
        .map(|t| t["name"].as_str().expect("a name").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_everything_over_stdio() {
    let argv = everything();
    let upstream = StdioUpstream::spawn(&argv, &[], MAX_MESSAGE).expect("node starts");

    let init = initialize(&upstream).await;
    assert_eq!(init["protocolVersion"], "2025-11-25", "{init}");
    assert_eq!(init["serverInfo"]["name"], "mcp-servers/everything", "{init}");

    let tools = tool_names(&upstream).await;
    for tool in ["echo", "get-sum", "trigger-long-running-operation"] {
        assert!(tools.iter().any(|t| t == tool), "{tool} in {tools:?}");
    }

    let echoed = upstream
        .connection()
        .request(
            "tools/call",
            Some(json!({"name": "echo", "arguments": {"message": "through Palisade"}})),
            TIMEOUT,
        )
        .await
        .expect("echo");
    assert_eq!(echoed["content"][0]["text"], "Echo: through Palisade");

    // An unknown method is the upstream's own JSON-RPC error, passed on as it is.
    let error = upstream
        .connection()
        .request("no/such/method", Some(json!({})), TIMEOUT)
        .await
        .unwrap_err();
    assert!(matches!(&error, UpstreamError::Rpc { code: -32601, .. }), "{error:?}");

    // A 3 s operation with a 500 ms timeout: cancelled upstream; the connection carries on.
    let slow = upstream
        .connection()
        .request(
            "tools/call",
            Some(json!({"name": "trigger-long-running-operation", "arguments": {"duration": 3, "steps": 3}})),
            Duration::from_millis(500),
        )
        .await;
    assert_eq!(slow.unwrap_err(), UpstreamError::Timeout(Duration::from_millis(500)));
    let sum = upstream
        .connection()
        .request(
            "tools/call",
            Some(json!({"name": "get-sum", "arguments": {"a": 2, "b": 3}})),
            TIMEOUT,
        )
        .await
        .expect("get-sum after a cancelled call");
    let text = sum["content"][0]["text"].as_str().expect("text");
    assert!(text.contains('5'), "{text}");
    assert_eq!(upstream.connection().closed(), None);
    assert_eq!(upstream.connection().pending(), 0);
    assert!(
        upstream
            .stderr_tail()
            .iter()
            .any(|l| l == "Starting default (STDIO) server..."),
        "{:?}",
        upstream.stderr_tail()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_server_time_over_stdio() {
    let program = python().with_file_name("mcp-server-time");
    let argv = vec![program.display().to_string(), "--local-timezone".into(), "UTC".into()];
    let upstream = StdioUpstream::spawn(&argv, &[], MAX_MESSAGE).expect("mcp-server-time starts");

    let init = initialize(&upstream).await;
    assert_eq!(init["serverInfo"]["name"], "mcp-time", "{init}");

    let tools = tool_names(&upstream).await;
    assert_eq!(tools, ["get_current_time", "convert_time"]);

    let now = upstream
        .connection()
        .request(
            "tools/call",
            Some(json!({"name": "get_current_time", "arguments": {"timezone": "UTC"}})),
            TIMEOUT,
        )
        .await
        .expect("get_current_time");
    let text = now["content"][0]["text"].as_str().expect("text");
    let parsed: Value = serde_json::from_str(text).expect("the tool answers JSON text");
    assert_eq!(parsed["timezone"], "UTC", "{text}");

    // A bad argument is a tool error (isError), not a protocol error.
    let bad = upstream
        .connection()
        .request(
            "tools/call",
            Some(json!({"name": "get_current_time", "arguments": {"timezone": "Nowhere/Land"}})),
            TIMEOUT,
        )
        .await;
    match bad {
        Ok(result) => assert_eq!(result["isError"], true, "{result}"),
        Err(UpstreamError::Rpc { .. }) => {}
        Err(other) => panic!("{other:?}"),
    }
    assert_eq!(upstream.connection().closed(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_everything_is_started_again() {
    let supervisor = Supervisor::start(StdioConfig {
        source: StdioSource::Command {
            argv: everything(),
            env: Vec::new(),
        },
        max_message_bytes: MAX_MESSAGE,
        start_timeout: TIMEOUT,
        backoff: Backoff::default(),
    });
    let mut state = supervisor.state();
    let ready = |state: &UpstreamState| *state == UpstreamState::Ready;
    tokio::time::timeout(TIMEOUT, state.wait_for(ready))
        .await
        .expect("ready in time")
        .expect("supervised");
    let live = supervisor.live().expect("a live process");
    assert!(live.tools().iter().any(|t| t["name"] == "echo"));
    let pid = live.process.id().expect("running");
    drop(live);

    let killed = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let restarting = |state: &UpstreamState| matches!(state, UpstreamState::Restarting { .. });
    let state_now = tokio::time::timeout(TIMEOUT, state.wait_for(restarting))
        .await
        .expect("noticed in time")
        .expect("supervised")
        .clone();
    let UpstreamState::Restarting { attempt, after, reason } = state_now else {
        unreachable!()
    };
    assert_eq!((attempt, after), (1, Duration::from_millis(500)));
    assert!(matches!(reason, UpstreamError::Unavailable(_)), "{reason:?}");

    tokio::time::timeout(TIMEOUT, state.wait_for(ready))
        .await
        .expect("ready again in time")
        .expect("supervised");
    let echoed = supervisor
        .request(
            "tools/call",
            Some(json!({"name": "echo", "arguments": {"message": "again"}})),
            TIMEOUT,
        )
        .await
        .expect("echo after the restart");
    assert_eq!(echoed["content"][0]["text"], "Echo: again");
    assert_eq!(supervisor.restarts(), 1);
    assert_ne!(supervisor.live().and_then(|l| l.process.id()), Some(pid));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_everything_over_streamable_http_with_a_session_of_our_own() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let server = HttpEverything::start(port);
    let client = reqwest::Client::builder().build().expect("client");
    let upstream = HttpUpstream::new(client, &format!("http://127.0.0.1:{port}/mcp"), MAX_MESSAGE);

    let handshake = upstream.initialize(TIMEOUT).await.expect("initialize");
    assert_eq!(handshake.server_name, "mcp-servers/everything");
    assert_eq!(handshake.protocol_version, "2025-11-25");
    let tools = list_tools(&upstream, TIMEOUT).await.expect("tools/list");
    assert!(tools.iter().any(|t| t["name"] == "echo"), "{tools:?}");

    let echo = |message: &str| json!({"name": "echo", "arguments": {"message": message}});
    // Answered over an event stream (the server's default), matched to Palisade's id.
    let echoed = upstream
        .request("tools/call", Some(echo("over HTTP")), TIMEOUT)
        .await
        .expect("echo");
    assert_eq!(echoed["content"][0]["text"], "Echo: over HTTP");
    let error = upstream
        .request("no/such/method", Some(json!({})), TIMEOUT)
        .await
        .unwrap_err();
    assert!(matches!(&error, UpstreamError::Rpc { code: -32601, .. }), "{error:?}");

    // The upstream restarts and forgets every session: the next request opens a new one.
    drop(server);
    let _server = HttpEverything::start(port);
    let echoed = upstream
        .request("tools/call", Some(echo("after a restart")), TIMEOUT)
        .await
        .expect("echo after the upstream restarted");
    assert_eq!(echoed["content"][0]["text"], "Echo: after a restart");
    assert_eq!(upstream.reinitializations(), 1);
}
