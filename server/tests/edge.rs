//! The bounded edge, on a real `palisade-server serve` process and real sockets: credentials are
//! checked before the body is read, connections are capped (in total and unauthenticated per
//! client address), slow and idle clients are cut by timeouts, requests over `--max-concurrency`
//! are shed with 503 and `Retry-After`, `--audit-required` fails closed, and an IdP that hangs
//! cannot make tokens with made-up `kid`s hold the request places of valid callers. Each refusal is
//! shown as the client sees it, with its audit event and metric.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::Fixture;
use support::process::{Running, closed_within, connect_from, read_answer_async};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const TOOLS_LIST: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;

/// The head of a `POST /mcp` with `extra` header lines and a body of `length` bytes.
fn head(extra: &str, length: usize) -> String {
    format!(
        "POST /mcp HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Accept: application/json\r\nContent-Length: {length}\r\n{extra}\r\n"
    )
}

fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}\r\n")
}

async fn connect(server: &Running) -> TcpStream {
    TcpStream::connect(server.address).await.expect("connect")
}

fn events_with(server: &Running, reason: &str) -> Vec<Value> {
    server
        .audit_events()
        .into_iter()
        .filter(|e| e["reason"] == reason)
        .collect()
}

/// Waits (at most 5 s) for an audit event with `reason`.
async fn audited(server: &Running, reason: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(event) = events_with(server, reason).pop() {
            return event;
        }
        assert!(
            Instant::now() < deadline,
            "no audit event {reason}: {:#?}",
            server.audit_events()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the connections of `Running::start`'s readiness probes are gone.
async fn settled(server: &Running) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.metric("palisade_connections_open", "") > 0.0 {
        assert!(Instant::now() < deadline, "the probes' connections stay open");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unauthenticated_request_is_answered_before_its_body_is_sent() {
    let fx = Fixture::company_info();
    let server = Running::start(&fx, &[]);
    let mut stream = connect(&server).await;
    // A 1 MiB body announced, not one byte of it sent.
    stream.write_all(head("", 1 << 20).as_bytes()).await.expect("send head");
    let started = Instant::now();
    let answer = tokio::time::timeout(Duration::from_secs(5), read_answer_async(&mut stream))
        .await
        .expect("an answer without the body")
        .expect("answer");
    let waited = started.elapsed();
    eprintln!("edge: 401 after {waited:?} with the body unsent");
    assert_eq!(answer.status, 401, "{answer:?}");
    assert_eq!(
        answer.header("www-authenticate"),
        Some(format!("Bearer resource_metadata=\"{}\"", fx.resource_metadata()).as_str())
    );
    assert_eq!(
        answer.header("connection"),
        Some("close"),
        "the unread body is not read"
    );
    assert_eq!(answer.json()["error"]["data"]["code"], "MISSING_AUTHORIZATION");
    assert!(
        closed_within(&mut stream, Duration::from_secs(2)).await,
        "the server closes the connection"
    );
    let event = audited(&server, "missing_authorization").await;
    assert_eq!(event["http_status"], 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_credentials_get_the_challenge_before_the_body() {
    let fx = Fixture::company_info();
    let server = Running::start(&fx, &[]);
    let mut stream = connect(&server).await;
    let basic = "Authorization: Basic YWxpY2U6c2VjcmV0\r\n";
    stream
        .write_all(head(basic, 1 << 20).as_bytes())
        .await
        .expect("send head");
    let answer = tokio::time::timeout(Duration::from_secs(5), read_answer_async(&mut stream))
        .await
        .expect("an answer without the body")
        .expect("answer");
    assert_eq!(answer.status, 401, "{answer:?}");
    assert_eq!(
        answer.header("www-authenticate"),
        Some(format!("Bearer resource_metadata=\"{}\"", fx.resource_metadata()).as_str()),
        "no error attribute: the client starts discovery"
    );
    assert_eq!(answer.json()["error"]["data"]["code"], "UNSUPPORTED_CREDENTIALS");
    assert!(!server.audit_log.exists() || !std::fs::read_to_string(&server.audit_log).unwrap().contains("YWxp"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_are_cut_by_the_header_read_timeout() {
    let fx = Fixture::company_info();
    let server = Running::start(&fx, &["--header-read-timeout", "1s"]);
    let mut stream = connect(&server).await;
    let started = Instant::now();
    stream.write_all(b"POST /mcp HTTP/1.1\r\n").await.expect("request line");
    // One header line every 200 ms: never a complete head.
    let mut closed = false;
    for n in 0..50 {
        if stream.write_all(format!("X-Slow-{n}: 1\r\n").as_bytes()).await.is_err() {
            closed = true;
            break;
        }
        if closed_within(&mut stream, Duration::from_millis(200)).await {
            closed = true;
            break;
        }
    }
    let elapsed = started.elapsed();
    eprintln!("edge: a slow-header client was cut after {elapsed:?} (--header-read-timeout 1s)");
    assert!(closed, "the slow client is still connected after {elapsed:?}");
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(4),
        "{elapsed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed() {
    let fx = Fixture::company_info();
    let server = Running::start(&fx, &["--idle-timeout", "1s", "--header-read-timeout", "30s"]);
    let token = fx.token(&["public:read"]);
    let mut stream = connect(&server).await;
    let request = format!("{}{TOOLS_LIST}", head(&bearer(&token), TOOLS_LIST.len()));
    stream.write_all(request.as_bytes()).await.expect("send");
    let answer = read_answer_async(&mut stream).await.expect("answer");
    assert_eq!(answer.status, 200);
    let started = Instant::now();
    assert!(
        closed_within(&mut stream, Duration::from_secs(4)).await,
        "an idle connection stays open"
    );
    eprintln!(
        "edge: idle connection closed {:?} after its last answer (--idle-timeout 1s)",
        started.elapsed()
    );
    assert!(started.elapsed() >= Duration::from_millis(900));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_are_closed_at_once() {
    let fx = Fixture::company_info();
    let server = Running::start(&fx, &["--max-connections", "4"]);
    settled(&server).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(connect(&server).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut over = connect(&server).await;
    assert!(
        closed_within(&mut over, Duration::from_secs(2)).await,
        "the fifth connection is closed"
    );
    assert!(
        !closed_within(&mut held[0], Duration::from_millis(300)).await,
        "the first four stay"
    );
    assert_eq!(
        server.metric("palisade_connections_refused_total", r#"reason="connection_limit""#),
        1.0
    );
    assert_eq!(server.metric("palisade_connections_open", ""), 4.0);
    drop(held);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut again = connect(&server).await;
    assert!(
        !closed_within(&mut again, Duration::from_millis(300)).await,
        "places are given back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_connections_are_capped_per_client_address() {
    let fx = Fixture::company_info();
    let server = Running::start(&fx, &["--max-unauthenticated-connections-per-client", "2"]);
    let token = fx.token(&["public:read"]);
    settled(&server).await;
    let mut first = connect_from([127, 0, 0, 1], server.address).await.expect("first");
    let _second = connect_from([127, 0, 0, 1], server.address).await.expect("second");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut third = connect_from([127, 0, 0, 1], server.address).await.expect("third");
    assert!(
        closed_within(&mut third, Duration::from_secs(2)).await,
        "a third is refused"
    );
    let mut other = connect_from([127, 0, 0, 2], server.address)
        .await
        .expect("other address");
    assert!(
        !closed_within(&mut other, Duration::from_millis(300)).await,
        "another address is not affected"
    );
    assert_eq!(
        server.metric(
            "palisade_connections_refused_total",
            r#"reason="unauthenticated_per_client""#
        ),
        1.0
    );

    // A request that authenticates frees its connection's place.
    let request = format!("{}{TOOLS_LIST}", head(&bearer(&token), TOOLS_LIST.len()));
    first.write_all(request.as_bytes()).await.expect("send");
    assert_eq!(read_answer_async(&mut first).await.expect("answer").status, 200);
    let mut fourth = connect_from([127, 0, 0, 1], server.address).await.expect("fourth");
    assert!(
        !closed_within(&mut fourth, Duration::from_millis(300)).await,
        "a place was freed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_over_max_concurrency_are_shed_with_retry_after() {
    let fx = Fixture::company_info();
    let server = Running::start(&fx, &["--max-concurrency", "1", "--body-read-timeout", "10s"]);
    let token = fx.token(&["public:read"]);
    // Holds the one place: authenticated, its body still on the way.
    let mut holder = connect(&server).await;
    holder
        .write_all(head(&bearer(&token), TOOLS_LIST.len()).as_bytes())
        .await
        .expect("head");
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut shed = connect(&server).await;
    let request = format!("{}{TOOLS_LIST}", head(&bearer(&token), TOOLS_LIST.len()));
    shed.write_all(request.as_bytes()).await.expect("send");
    let started = Instant::now();
    let answer = read_answer_async(&mut shed).await.expect("answer");
    eprintln!("edge: shed in {:?}", started.elapsed());
    assert_eq!(answer.status, 503, "{answer:?}");
    assert_eq!(answer.header("retry-after"), Some("1"));
    let body = answer.json();
    assert_eq!(body["error"]["code"], -32603);
    assert_eq!(
        body["error"]["message"],
        "Service Unavailable: the server is serving its limit of 1 requests.\n\nAction: retry after the time in Retry-After."
    );
    let event = audited(&server, "overloaded").await;
    assert_eq!(
        (event["decision"].as_str(), event["http_status"].as_u64()),
        (Some("deny"), Some(503))
    );
    assert_eq!(
        server.metric("palisade_requests_shed_total", r#"reason="overloaded""#),
        1.0
    );

    // The holder finishes; the place is free again.
    holder.write_all(TOOLS_LIST.as_bytes()).await.expect("body");
    assert_eq!(read_answer_async(&mut holder).await.expect("answer").status, 200);
    // The shed answer closed its connection (its body was never read): a new one.
    assert_eq!(answer.header("connection"), Some("close"));
    let mut again = connect(&server).await;
    again.write_all(request.as_bytes()).await.expect("send again");
    assert_eq!(read_answer_async(&mut again).await.expect("answer").status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_does_not_arrive_is_answered_408() {
    let fx = Fixture::company_info();
    let server = Running::start(&fx, &["--body-read-timeout", "1s"]);
    let token = fx.token(&["public:read"]);
    let mut stream = connect(&server).await;
    stream
        .write_all(head(&bearer(&token), TOOLS_LIST.len()).as_bytes())
        .await
        .expect("head");
    let started = Instant::now();
    let answer = read_answer_async(&mut stream).await.expect("answer");
    let waited = started.elapsed();
    assert_eq!(answer.status, 408, "{answer:?}");
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(4),
        "{waited:?}"
    );
    assert_eq!(
        answer.json()["error"]["message"],
        "Request Timeout: the body did not arrive within 1 s.\n\nAction: send the whole body at once."
    );
    let event = audited(&server, "body_timeout").await;
    assert_eq!(event["http_status"], 408);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_required_refuses_requests_when_the_audit_sink_fails() {
    let fx = Fixture::company_info();
    // Every write to /dev/full fails (ENOSPC).
    let server = Running::start(&fx, &["--audit-required", "--audit-log", "/dev/full"]);
    let token = fx.token(&["public:read"]);
    for attempt in 0..3 {
        let mut stream = connect(&server).await;
        let request = format!("{}{TOOLS_LIST}", head(&bearer(&token), TOOLS_LIST.len()));
        stream.write_all(request.as_bytes()).await.expect("send");
        let answer = read_answer_async(&mut stream).await.expect("answer");
        assert_eq!(answer.status, 503, "attempt {attempt}: {answer:?}");
        assert_eq!(answer.header("retry-after"), Some("5"));
        assert_eq!(
            answer.json()["error"]["message"],
            "Service Unavailable: the audit trail cannot be written, and this server answers only audited \
             requests.\n\nAction: retry after the time in Retry-After."
        );
    }
    assert!(server.metric("palisade_requests_shed_total", r#"reason="audit_unavailable""#) >= 3.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_required_answers_once_the_audit_line_is_written() {
    let fx = Fixture::company_info();
    let server = Running::start(&fx, &["--audit-required"]);
    let token = fx.token(&["public:read"]);
    let mut stream = connect(&server).await;
    let request = format!(
        "{}{}",
        head(
            &format!("{}X-Request-Id: written-first\r\n", bearer(&token)),
            TOOLS_LIST.len()
        ),
        TOOLS_LIST
    );
    stream.write_all(request.as_bytes()).await.expect("send");
    let answer = read_answer_async(&mut stream).await.expect("answer");
    assert_eq!(answer.status, 200, "{answer:?}");
    // Read right after the answer, without waiting: the line is already in the file.
    let events: Vec<Value> = server
        .audit_events()
        .into_iter()
        .filter(|e| e["request_id"] == "written-first" && e["http_status"] == 200)
        .collect();
    assert_eq!(events.len(), 1, "{:#?}", server.audit_events());
    assert_eq!(events[0]["kind"], json!("authorization"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_call_denied_by_its_routing_headers_is_answered_before_its_body() {
    let fx = Fixture::company_info();
    let server = Running::start(&fx, &[]);
    // Holds public:read only: get_confidential_info is denied.
    let token = fx.token(&["public:read"]);
    let routing = "MCP-Protocol-Version: 2026-07-28\r\nMcp-Method: tools/call\r\nMcp-Name: get_confidential_info\r\n";
    let mut stream = connect(&server).await;
    stream
        .write_all(head(&format!("{}{routing}", bearer(&token)), 1 << 20).as_bytes())
        .await
        .expect("send head");
    let answer = tokio::time::timeout(Duration::from_secs(5), read_answer_async(&mut stream))
        .await
        .expect("an answer without the body")
        .expect("answer");
    assert_eq!(answer.status, 403, "{answer:?}");
    let body = answer.json();
    assert_eq!(body["id"], Value::Null, "the body, and so its id, was never read");
    assert_eq!(body["error"]["data"]["code"], "INSUFFICIENT_SCOPE");
    assert_eq!(body["error"]["data"]["requiredScopes"], json!(["confidential:read"]));
    assert!(
        answer
            .header("www-authenticate")
            .is_some_and(|c| c.contains(r#"error="insufficient_scope""#) && c.contains(r#"scope="confidential:read""#)),
        "{answer:?}"
    );
    assert_eq!(answer.header("connection"), Some("close"));
    let event = audited(&server, "missing_scopes").await;
    assert_eq!(
        (
            event["kind"].as_str(),
            event["tool"].as_str(),
            event["http_status"].as_u64()
        ),
        (Some("authorization"), Some("get_confidential_info"), Some(403))
    );
}

/// A JWKS endpoint that accepts connections and never answers; counts them.
async fn hanging_idp() -> (std::net::SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            held.push(stream);
        }
    });
    (address, accepted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_idp_and_made_up_kids_do_not_shed_valid_callers() {
    use support::{GOOGLE, google_keys_at, raw_jwt};

    let (idp, asked) = hanging_idp().await;
    let fx = Fixture::build(support::Sample::CompanyInfo, |policy, _| {
        google_keys_at(policy, &format!("http://{idp}/jwks"));
    });
    // The default limits: 32 requests at once, a 5 s key fetch timeout, a 10 s refetch interval.
    let server = Running::start(&fx, &[]);
    let token = fx.token(&["public:read"]);
    let mut claims = fx.claims("mallory@gmail.com", &["public:read"]);
    claims["iss"] = json!(GOOGLE);
    let until = Instant::now() + Duration::from_secs(7);

    // 40 clients send tokens of the hanging issuer with made-up kids, one connection each.
    let attackers: Vec<_> = (0..40)
        .map(|i| {
            let claims = claims.clone();
            let address = server.address;
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                let mut n = 0;
                while Instant::now() < until {
                    n += 1;
                    let forged = raw_jwt(
                        &json!({"alg": "RS256", "typ": "JWT", "kid": format!("made-up-{i}-{n}")}),
                        &claims,
                        &[7u8; 32],
                    );
                    let mut stream = TcpStream::connect(address).await.expect("connect");
                    let request = format!("{}{TOOLS_LIST}", head(&bearer(&forged), TOOLS_LIST.len()));
                    stream.write_all(request.as_bytes()).await.expect("send");
                    match read_answer_async(&mut stream).await {
                        Ok(answer) => statuses.push((answer.status, answer.json()["error"]["data"]["code"].clone())),
                        Err(error) => statuses.push((0, json!(error.to_string()))),
                    }
                }
                statuses
            })
        })
        .collect();

    // Meanwhile a valid caller lists its tools every 50 ms on one connection.
    let mut valid = Vec::new();
    let mut stream = connect(&server).await;
    let request = format!("{}{TOOLS_LIST}", head(&bearer(&token), TOOLS_LIST.len()));
    while Instant::now() < until {
        stream.write_all(request.as_bytes()).await.expect("send");
        let started = Instant::now();
        let answer = read_answer_async(&mut stream).await.expect("answer");
        valid.push((answer.status, started.elapsed()));
        if answer.header("connection") == Some("close") {
            stream = connect(&server).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut forged = Vec::new();
    for attacker in attackers {
        forged.extend(attacker.await.expect("attacker"));
    }

    let slowest = valid.iter().map(|(_, took)| *took).max().expect("answers");
    eprintln!(
        "edge: {} valid calls, slowest {slowest:?}; {} forged; the IdP was asked {} times",
        valid.len(),
        forged.len(),
        asked.load(std::sync::atomic::Ordering::SeqCst)
    );
    assert!(valid.iter().all(|(status, _)| *status == 200), "{valid:?}");
    assert!(valid.len() > 50, "{valid:?}");
    // The issuer never had keys: 503 KEYS_UNAVAILABLE, never a place taken from others.
    assert!(
        forged
            .iter()
            .all(|(status, code)| *status == 503 && code == "KEYS_UNAVAILABLE"),
        "{:?}",
        &forged[..forged.len().min(10)]
    );
    assert_eq!(
        server.metric("palisade_requests_shed_total", r#"reason="overloaded""#),
        0.0
    );
    // Most forged tokens did not wait for the hanging first fetch: only 16 per issuer may.
    assert!(server.metric("palisade_jwks_fetches_total", r#"result="busy""#) > 0.0);
    // One fetch in the refetch interval, however many tokens asked for one.
    assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 1);
}
