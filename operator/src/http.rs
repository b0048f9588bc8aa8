//! The operator's own HTTP endpoints on `--metrics-listen` (default `0.0.0.0:8080`): `/health`
//! (the process serves), `/ready` (the controllers run, or this replica stands by for the
//! leader) and `/metrics` (Prometheus text format). Nothing here touches the cluster.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;

/// What the endpoints read.
#[derive(Clone)]
pub struct AppState {
    /// The metrics.
    pub registry: Arc<Registry>,
    /// Set once this replica leads and its controllers run, or stands by as a follower.
    pub ready: Arc<AtomicBool>,
}

/// The router.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    if state.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting")
    }
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &state.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;
    use crate::metrics::Metrics;

    #[tokio::test]
    async fn health_ready_and_metrics() {
        let mut registry = Registry::default();
        let metrics = Metrics::new(&mut registry);
        metrics.reconciled("mcpserver", std::time::Duration::from_millis(20));
        metrics.failed("mcpserver", "apply");
        let ready = Arc::new(AtomicBool::new(false));
        let app = app(AppState {
            registry: Arc::new(registry),
            ready: ready.clone(),
        });
        let get = |path: &str| Request::get(path).body(Body::empty()).unwrap();
        assert_eq!(app.clone().oneshot(get("/health")).await.unwrap().status(), 200);
        assert_eq!(app.clone().oneshot(get("/ready")).await.unwrap().status(), 503);
        ready.store(true, Ordering::Relaxed);
        assert_eq!(app.clone().oneshot(get("/ready")).await.unwrap().status(), 200);
        let response = app.clone().oneshot(get("/metrics")).await.unwrap();
        assert_eq!(response.status(), 200);
        let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(
            text.contains("palisade_operator_reconciles_total{controller=\"mcpserver\"} 1"),
            "{text}"
        );
        assert!(text.contains("palisade_operator_reconcile_errors_total{controller=\"mcpserver\",error=\"apply\"} 1"));
        assert!(text.contains("palisade_operator_reconcile_duration_seconds_bucket"));
        assert_eq!(app.oneshot(get("/nope")).await.unwrap().status(), 404);
    }
}
