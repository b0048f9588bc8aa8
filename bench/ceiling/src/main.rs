//! The ceiling of the load benchmark: HTTP + JSON-RPC and nothing else.
//!
//! `palisade-bench-ceiling LISTEN RESULTS_FILE` serves `POST /mcp` on `LISTEN` (loopback). Every
//! request body is parsed as JSON-RPC; the answer is `{"jsonrpc":"2.0","id":<id>,"result":R}`,
//! where R is the result the RESULTS_FILE (a JSON object: method → result) holds for the method,
//! serialized per request. The load benchmark fills RESULTS_FILE with Palisade's own results, so
//! that both servers send the same bytes. No authentication, authorization, audit or metrics.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

type Results = Arc<HashMap<String, Value>>;

async fn mcp(State(results): State<Results>, body: Bytes) -> Response {
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        let error = json!({"code": -32700, "message": "parse error"});
        return reply(
            StatusCode::BAD_REQUEST,
            json!({"jsonrpc": "2.0", "id": null, "error": error}),
        );
    };
    let id = request.get("id").cloned().unwrap_or(Value::Null);
    let method = request.get("method").and_then(Value::as_str).unwrap_or_default();
    match results.get(method) {
        Some(result) => reply(StatusCode::OK, json!({"jsonrpc": "2.0", "id": id, "result": result})),
        None => {
            let error = json!({"code": -32601, "message": "method not found"});
            reply(
                StatusCode::NOT_FOUND,
                json!({"jsonrpc": "2.0", "id": id, "error": error}),
            )
        }
    }
}

fn reply(status: StatusCode, body: Value) -> Response {
    let bytes = serde_json::to_vec(&body).expect("a Value always serializes");
    (status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response()
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(results)) = (args.next(), args.next()) else {
        eprintln!("usage: palisade-bench-ceiling LISTEN RESULTS_FILE");
        std::process::exit(2);
    };
    let results: HashMap<String, Value> =
        serde_json::from_slice(&std::fs::read(&results).expect("cannot read the results file"))
            .expect("the results file is not a JSON object");
    let app = Router::new().route("/mcp", post(mcp)).with_state(Arc::new(results));
    let listener = tokio::net::TcpListener::bind(&listen).await.expect("cannot listen");
    axum::serve(listener, app).await.expect("server error");
}
