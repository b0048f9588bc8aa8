//! The per-caller rate limit over the router: over the limit, 429 with `Retry-After`, counted
//! and audited; other callers are not affected.

mod support;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use palisade_server::audit::AuditSink;
use palisade_server::metrics::Metrics;
use palisade_server::state::AppState;
use support::Fixture;
use tower::ServiceExt;

fn tools_list(token: &str) -> Request<Body> {
    Request::post("/mcp")
        .header("host", "localhost")
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {token}"))
        .body(Body::from(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#))
        .expect("request")
}

#[tokio::test]
async fn callers_over_their_rate_get_429_with_retry_after() {
    let fx = Fixture::company_info();
    let mut args = fx.state.config.clone();
    args.rate_limit = 1;
    args.rate_limit_burst = 1;
    let (sink, audit) = AuditSink::memory();
    let state = Arc::new(AppState::new(
        args,
        Arc::new(Metrics::new()),
        sink,
        reqwest::Client::new(),
    ));
    state.reload().expect("the policy loads");
    let app = palisade_server::http::app(state.clone());
    let alice = fx.token(&["public:read"]);

    // A rate of 1/s with a burst of 1: two requests pass, the third waits.
    for _ in 0..2 {
        let response = app.clone().oneshot(tools_list(&alice)).await.expect("response");
        assert_eq!(response.status(), StatusCode::OK);
    }
    let limited = app.clone().oneshot(tools_list(&alice)).await.expect("response");
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        limited.headers().get("retry-after").and_then(|v| v.to_str().ok()),
        Some("1")
    );

    // Another caller has a bucket of its own.
    let mut claims = fx.claims("bob", &["public:read"]);
    claims["sub"] = "bob".into();
    let bob = fx.sign(&claims);
    let response = app.clone().oneshot(tools_list(&bob)).await.expect("response");
    assert_eq!(response.status(), StatusCode::OK);

    let metrics = state.metrics.encode();
    assert!(
        metrics.contains(r#"mcp_security_violations_total{type="rate_limited"} 1"#),
        "{metrics}"
    );
    let events = audit.events();
    let refused: Vec<_> = events.iter().filter(|e| e["reason"] == "rate_limited").collect();
    assert_eq!(refused.len(), 1, "{events:#?}");
    assert_eq!(refused[0]["decision"], "deny");
    assert_eq!(refused[0]["http_status"], 429);
    assert_eq!(refused[0]["subject"], "alice");
}
