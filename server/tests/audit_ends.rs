//! Every request that reaches `POST /mcp` writes one closing audit event, whatever ends it: here
//! the ends that are not decisions of the policy (no policy loaded yet, the client going away
//! while its body is awaited), over the router without sockets.

mod support;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use palisade_server::audit::AuditSink;
use palisade_server::metrics::Metrics;
use palisade_server::state::AppState;
use support::Fixture;
use tower::ServiceExt;

fn tools_list(token: Option<&str>, body: Body) -> Request<Body> {
    let mut request = Request::post("/mcp")
        .header("host", "localhost")
        .header("content-type", "application/json")
        .header("x-request-id", "end-1");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    request.body(body).expect("request")
}

const TOOLS_LIST: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;

#[tokio::test]
async fn a_request_before_the_policy_is_loaded_is_refused_and_audited() {
    let fx = Fixture::company_info();
    let (sink, audit) = AuditSink::memory();
    // Never loaded: no snapshot.
    let state = Arc::new(AppState::new(
        fx.state.config.clone(),
        Arc::new(Metrics::new()),
        sink,
        reqwest::Client::new(),
    ));
    let app = palisade_server::http::app(state);
    let response = app
        .clone()
        .oneshot(tools_list(None, Body::from(TOOLS_LIST)))
        .await
        .expect("response");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        response.headers().get("retry-after").and_then(|v| v.to_str().ok()),
        Some("5")
    );
    let ready = app
        .oneshot(Request::get("/ready").body(Body::empty()).expect("request"))
        .await
        .expect("response");
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = http_body_util::BodyExt::collect(ready.into_body())
        .await
        .expect("body")
        .to_bytes();
    assert_eq!(&body[..], br#"{"status":"not_ready"}"#);

    let events = audit.events();
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0]["reason"], "policy_not_loaded");
    assert_eq!(events[0]["decision"], "deny");
    assert_eq!(events[0]["http_status"], 503);
    assert_eq!(events[0]["request_id"], "end-1");
}

#[tokio::test]
async fn a_client_that_goes_away_while_served_is_audited() {
    let fx = Fixture::company_info();
    let token = fx.token(&["public:read"]);
    // A body that never arrives: the request waits for it until its future is dropped, as hyper
    // drops it when the connection closes.
    let body = Body::new(NeverArrives);
    let pending = fx.router.clone().oneshot(tools_list(Some(&token), body));
    assert!(
        tokio::time::timeout(Duration::from_millis(200), pending).await.is_err(),
        "the request waits for its body"
    );
    let events = fx.take_events();
    let kinds = kinds_and_reasons(&events);
    assert_eq!(
        kinds,
        [("authentication", "ok"), ("request", "client_disconnected")],
        "{events:#?}"
    );
    let last = &events[1];
    assert_eq!(last["decision"], "abandoned");
    assert_eq!(last["request_id"], "end-1");
    assert!(last.get("http_status").is_none(), "nothing was sent: {last}");
}

#[tokio::test]
async fn a_request_cut_by_the_request_timeout_is_answered_503_and_audited() {
    let fx = Fixture::company_info();
    let token = fx.token(&["public:read"]);
    // --request-timeout 200ms, and a body timeout far above it: the request timeout decides.
    let mut config = fx.state.config.clone();
    config.request_timeout = Duration::from_millis(200);
    config.body_read_timeout = Duration::from_secs(30);
    let (sink, audit) = AuditSink::memory();
    let metrics = Arc::new(Metrics::new());
    let state = Arc::new(AppState::new(config, metrics.clone(), sink, reqwest::Client::new()));
    assert!(state.reload().expect("the policy loads"));
    let app = palisade_server::http::app(state);

    let started = std::time::Instant::now();
    let response = tokio::time::timeout(
        Duration::from_secs(5),
        app.oneshot(tools_list(Some(&token), Body::new(NeverArrives))),
    )
    .await
    .expect("answered, not left waiting")
    .expect("response");
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(200), "{elapsed:?}");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        response.headers().get("retry-after").and_then(|v| v.to_str().ok()),
        Some("1")
    );
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .expect("body")
        .to_bytes();
    let body: serde_json::Value = serde_json::from_slice(&body).expect("a JSON-RPC error");
    assert_eq!(body["error"]["code"], -32603, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("Service Unavailable: the request took longer than 0.2 s.")),
        "{body}"
    );

    let events = audit.events();
    let kinds = kinds_and_reasons(&events);
    assert_eq!(
        kinds,
        [("authentication", "ok"), ("request", "request_timeout")],
        "{events:#?}"
    );
    assert_eq!(events[1]["http_status"], 503);
    assert_eq!(events[1]["request_id"], "end-1");
    let scrape = metrics.encode();
    assert!(
        scrape
            .lines()
            .any(|l| l == r#"palisade_requests_shed_total{reason="request_timeout"} 1"#),
        "{scrape}"
    );
}

/// `(kind, reason)` of each audit event.
fn kinds_and_reasons(events: &[serde_json::Value]) -> Vec<(&str, &str)> {
    events
        .iter()
        .map(|e| (e["kind"].as_str().unwrap_or(""), e["reason"].as_str().unwrap_or("")))
        .collect()
}

/// A body whose data never comes.
struct NeverArrives;

impl axum::body::HttpBody for NeverArrives {
    type Data = axum::body::Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        std::task::Poll::Pending
    }
}
