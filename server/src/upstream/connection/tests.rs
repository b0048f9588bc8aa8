//! The connection against a scripted upstream on an in-memory stream.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, DuplexStream, Lines, ReadHalf, WriteHalf};

use super::Connection;
use crate::upstream::UpstreamError;

const SECOND: Duration = Duration::from_secs(1);

/// The upstream's end: reads Palisade's lines, writes its own.
struct Peer {
    lines: Lines<BufReader<ReadHalf<DuplexStream>>>,
    writer: WriteHalf<DuplexStream>,
}

impl Peer {
    async fn next(&mut self) -> Value {
        let line = tokio::time::timeout(SECOND, self.lines.next_line())
            .await
            .expect("a line in time")
            .expect("readable")
            .expect("a line, not the end");
        serde_json::from_str(&line).expect("Palisade writes JSON")
    }

    async fn send(&mut self, text: &str) {
        self.writer.write_all(text.as_bytes()).await.expect("write");
        self.writer.write_all(b"\n").await.expect("write");
    }

    async fn answer(&mut self, id: &Value, result: Value) {
        self.send(&json!({"jsonrpc": "2.0", "id": id, "result": result}).to_string())
            .await;
    }
}

fn pair(max_message_bytes: usize) -> (Connection, Peer) {
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    let (read, write) = tokio::io::split(ours);
    let connection = Connection::start(read, write, max_message_bytes);
    let (read, writer) = tokio::io::split(theirs);
    let peer = Peer {
        lines: BufReader::new(read).lines(),
        writer,
    };
    (connection, peer)
}

#[tokio::test]
async fn answers_reach_their_callers_in_any_order() {
    let (connection, mut peer) = pair(1024);
    let first = connection.request("tools/call", Some(json!({"name": "a"})), SECOND);
    let second = connection.request("tools/call", Some(json!({"name": "b"})), SECOND);
    let upstream = async {
        let (x, y) = (peer.next().await, peer.next().await);
        assert_eq!((&x["jsonrpc"], &x["method"]), (&json!("2.0"), &json!("tools/call")));
        // Palisade's own ids, from 1.
        assert_eq!((&x["id"], &y["id"]), (&json!(1), &json!(2)));
        // The second is answered first.
        peer.answer(&y["id"], json!({"for": y["params"]["name"]})).await;
        peer.answer(&x["id"], json!({"for": x["params"]["name"]})).await;
    };
    let (first, second, ()) = tokio::join!(first, second, upstream);
    assert_eq!(first.unwrap(), json!({"for": "a"}));
    assert_eq!(second.unwrap(), json!({"for": "b"}));
    assert_eq!(connection.pending(), 0);
}

#[tokio::test]
async fn an_upstream_error_is_passed_on() {
    let (connection, mut peer) = pair(1024);
    let call = connection.request("tools/call", None, SECOND);
    let upstream = async {
        let request = peer.next().await;
        assert!(request.get("params").is_none(), "no params sent when there are none");
        let answer = json!({"jsonrpc": "2.0", "id": request["id"],
            "error": {"code": -32602, "message": "Unknown tool: x", "data": {"name": "x"}}});
        peer.send(&answer.to_string()).await;
    };
    let (answer, ()) = tokio::join!(call, upstream);
    assert_eq!(
        answer.unwrap_err(),
        UpstreamError::Rpc {
            code: -32602,
            message: "Unknown tool: x".into(),
            data: Some(json!({"name": "x"})),
        }
    );
    assert_eq!(connection.closed(), None, "an error answer is an answer");
}

#[tokio::test]
async fn a_request_that_times_out_is_cancelled_upstream_and_its_late_answer_dropped() {
    let (connection, mut peer) = pair(1024);
    let answer = connection.request("tools/call", None, Duration::from_millis(100)).await;
    assert_eq!(answer.unwrap_err(), UpstreamError::Timeout(Duration::from_millis(100)));
    let request = peer.next().await;
    let cancelled = peer.next().await;
    assert_eq!(cancelled["method"], "notifications/cancelled");
    assert_eq!(cancelled["params"]["requestId"], request["id"]);
    assert!(cancelled.get("id").is_none(), "a notification has no id");
    // The late answer goes nowhere; the connection carries on.
    peer.answer(&request["id"], json!({})).await;
    let next = connection.request("ping", None, SECOND);
    let upstream = async {
        let ping = peer.next().await;
        assert_eq!(ping["id"], 2);
        peer.answer(&ping["id"], json!({})).await;
    };
    let (next, ()) = tokio::join!(next, upstream);
    assert_eq!(next.unwrap(), json!({}));
    assert_eq!(connection.pending(), 0);
}

#[tokio::test]
async fn a_caller_that_goes_away_cancels_its_request() {
    let (connection, mut peer) = pair(1024);
    let call = connection.request("tools/call", None, SECOND);
    // The caller's future is dropped once the request is out.
    tokio::select! {
        _ = call => panic!("no answer was sent"),
        request = peer.next() => {
            assert_eq!(request["id"], 1);
        }
    }
    let cancelled = peer.next().await;
    assert_eq!(
        (&cancelled["method"], &cancelled["params"]["requestId"]),
        (&json!("notifications/cancelled"), &json!(1))
    );
    assert_eq!(connection.pending(), 0);
}

#[tokio::test]
async fn requests_from_the_upstream_are_refused_and_notifications_passed_on() {
    let (connection, mut peer) = pair(1024);
    let mut notifications = connection.notifications();
    peer.send(r#"{"jsonrpc":"2.0","id":"s1","method":"sampling/createMessage","params":{}}"#)
        .await;
    let refusal = peer.next().await;
    assert_eq!(refusal["id"], "s1");
    assert_eq!(refusal["error"]["code"], -32601);
    assert_eq!(
        refusal["error"]["message"],
        "Method not found: sampling/createMessage (the client declares no capabilities)"
    );
    peer.send(r#"{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}"#)
        .await;
    let method = tokio::time::timeout(SECOND, notifications.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(method, "notifications/tools/list_changed");
    assert_eq!(connection.closed(), None);
}

/// Each line breaks the protocol: the waiting request fails with the reason, the connection is
/// closed, and later requests fail at once with the same reason.
#[tokio::test]
async fn protocol_violations_close_the_connection_with_the_reason() {
    let cases: [(&str, &str); 7] = [
        (
            "Server started on stdio",
            "a line that is not JSON (expected value at line 1 column 1)",
        ),
        ("[1, 2]", "a line that is not a JSON-RPC message object"),
        (r#"{"id": 1, "result": {}}"#, "a message without \"jsonrpc\": \"2.0\""),
        (
            r#"{"jsonrpc": "2.0", "id": 1}"#,
            "an answer with both or neither of result and error",
        ),
        (
            r#"{"jsonrpc": "2.0", "id": 1, "error": {"code": "x", "message": "m"}}"#,
            "an error without an integer code and a string message",
        ),
        (
            r#"{"jsonrpc": "2.0", "method": 7}"#,
            "a message whose method is not a string",
        ),
        (
            r#"{"jsonrpc": "2.0", "params": {}}"#,
            "a message with neither method nor id",
        ),
    ];
    for (line, why) in cases {
        let (connection, mut peer) = pair(1024);
        let call = connection.request("tools/list", None, SECOND);
        let upstream = async {
            peer.next().await;
            peer.send(line).await;
        };
        let (answer, ()) = tokio::join!(call, upstream);
        let expected = UpstreamError::Invalid(why.into());
        assert_eq!(answer.unwrap_err(), expected, "{line}");
        assert_eq!(connection.closed(), Some(expected.clone()), "{line}");
        assert_eq!(
            connection.request("ping", None, SECOND).await.unwrap_err(),
            expected,
            "{line}"
        );
    }
}

#[tokio::test]
async fn a_message_over_the_limit_closes_the_connection() {
    let (connection, mut peer) = pair(100);
    let call = connection.request("tools/list", None, SECOND);
    let upstream = async {
        let request = peer.next().await;
        let big = json!({"jsonrpc": "2.0", "id": request["id"], "result": {"text": "x".repeat(200)}});
        peer.send(&big.to_string()).await;
    };
    let (answer, ()) = tokio::join!(call, upstream);
    assert_eq!(
        answer.unwrap_err(),
        UpstreamError::Invalid("a message longer than 100 bytes".into())
    );
}

#[tokio::test]
async fn the_end_of_the_stream_fails_waiting_requests_as_unavailable() {
    let (connection, mut peer) = pair(1024);
    let call = connection.request("tools/list", None, SECOND);
    let upstream = async move {
        peer.next().await;
        // Blank lines are allowed between messages; then the upstream goes away.
        peer.send("").await;
        drop(peer);
    };
    let (answer, ()) = tokio::join!(call, upstream);
    let expected = UpstreamError::Unavailable("the upstream closed its output".into());
    assert_eq!(answer.unwrap_err(), expected);
    assert_eq!(
        connection.notify("notifications/initialized", None).await.unwrap_err(),
        expected
    );
}
