//! The HTTP surface: `POST /mcp` (Streamable HTTP, stateless, JSON responses), `/health`,
//! `/ready`, the RFC 9728 Protected Resource Metadata, and `/metrics` on its own listener.
//!
//! Order of checks on `POST /mcp`, each answered with its own status:
//! Host and Origin (403) → Content-Type (415) and Accept (406) → body size (413) → credentials and
//! authentication (400/401/503, with `WWW-Authenticate`) → per-caller rate limit (429) → JSON-RPC
//! parsing (400) → protocol revision and routing headers (400) → the method, authorized by the
//! evaluator (403 `insufficient_scope` when denied).
//!
//! Every request writes one authentication audit event and one authorization (or request) event,
//! and counts in the metrics. Clients never see internals: errors carry a code and a message that
//! says what to do next.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use palisade_crds::evaluator::Effect;
use serde_json::{Value, json};

use crate::audit::{AuditEvent, AuditKind};
use crate::auth::{AuthError, AuthMethod, ClientCertificate, Credential, Principal, Reason};
use crate::edge::ConnectionSlot;
use crate::mcp::jsonrpc::{self, Id, Incoming};
use crate::mcp::methods::{self, AuthzKind, AuthzRecord, Call, Reply};
use crate::mcp::protocol::{self, RoutingHeaders};
use crate::mcp::proxy;
use crate::metrics::{self, AuthLabels, AuthzDecision, AuthzLabels, Shed, Violation, ViolationLabels};
use crate::state::{AppState, Snapshot, now};
use crate::trace::RequestTrace;
use crate::upstream::UpstreamError;

/// The MCP router (port 8080).
pub fn app(state: Arc<AppState>) -> Router {
    Router::new()
        .route(
            "/mcp",
            get(method_not_allowed).post(post_mcp).delete(method_not_allowed),
        )
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route(
            "/.well-known/oauth-protected-resource",
            get(protected_resource_metadata),
        )
        .route(
            "/.well-known/oauth-protected-resource/{*path}",
            get(protected_resource_metadata),
        )
        .with_state(state)
}

/// The metrics router (port 9090): `/metrics`, and a proxy's `/inventory`.
pub fn metrics_app(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/inventory", get(inventory))
        .with_state(state)
}

/// A proxying server's inventory of its upstream's tools: names, definition hashes, pin states,
/// served and reachable (no descriptions, no schemas). On the metrics port, not the MCP port:
/// the names of tools a caller may not see are not for every caller that reaches the MCP
/// endpoint; the operator reads it to fill `status.upstream`. 404 for a document server, 503
/// until the upstream has listed its tools under a loaded policy.
async fn inventory(State(state): State<Arc<AppState>>) -> Response {
    let Some(proxy) = &state.proxy else {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"error": "this server serves documents: it has no upstream"})),
        )
            .into_response();
    };
    let inventory = state
        .snapshot
        .load_full()
        .and_then(|snapshot| proxy.inventory(&snapshot.policy));
    match inventory {
        Some(inventory) => axum::Json(inventory).into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"error": "the upstream has not listed its tools yet"})),
        )
            .into_response(),
    }
}

async fn metrics_handler(State(state): State<Arc<AppState>>) -> Response {
    ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], state.metrics.encode()).into_response()
}

async fn health() -> Response {
    axum::Json(json!({"status": "ok"})).into_response()
}

/// Ready or not, and the policy hash: nothing else, as anyone may ask. Why a reload was refused
/// goes to the operational log and `palisade_policy_reloads_total{result="failure"}`.
/// Ready once the policy is loaded and, in proxy mode, the upstream has listed its tools once
/// (a later restart of the upstream keeps the pod ready: its callers get 503 with Retry-After
/// meanwhile, and endpoints do not flap). Says the policy hash and where the upstream is, no
/// detail (it is unauthenticated).
async fn ready(State(state): State<Arc<AppState>>) -> Response {
    let upstream = state
        .proxy
        .as_ref()
        .map(|proxy| (proxy.ever_ready(), proxy.state_label()));
    let (status, mut body) = match (state.snapshot.load_full(), upstream) {
        (Some(snapshot), None | Some((true, _))) => (
            StatusCode::OK,
            json!({"status": "ready", "policyHash": snapshot.policy.hash()}),
        ),
        _ => (StatusCode::SERVICE_UNAVAILABLE, json!({"status": "not_ready"})),
    };
    if let Some((_, upstream)) = upstream {
        body["upstream"] = json!(upstream);
    }
    (status, axum::Json(body)).into_response()
}

async fn method_not_allowed() -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        [(header::ALLOW, "POST")],
        axum::Json(json!({"jsonrpc": "2.0", "id": null, "error": {"code": jsonrpc::code::INVALID_REQUEST,
            "message": "Method Not Allowed: this server is stateless and offers no SSE stream; send each message with POST"}})),
    )
        .into_response()
}

/// The parts of a resource URI that the metadata URL is built from.
fn split_resource(resource: &str) -> (&str, &str) {
    let after_scheme = resource.find("://").map_or(0, |i| i + 3);
    match resource[after_scheme..].find('/') {
        Some(i) => resource.split_at(after_scheme + i),
        None => (resource, ""),
    }
}

/// The RFC 9728 metadata URL of a resource: the well-known path inserted before the resource's path.
pub fn resource_metadata_url(resource: &str) -> String {
    let (origin, path) = split_resource(resource);
    format!(
        "{origin}/.well-known/oauth-protected-resource{}",
        path.trim_end_matches('/')
    )
}

async fn protected_resource_metadata(State(state): State<Arc<AppState>>) -> Response {
    let Some(snapshot) = state.snapshot.load_full() else {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    let document = snapshot.policy.document();
    let auth = &document.authentication;
    let authorization_servers: Vec<&str> = auth
        .issuers
        .iter()
        .map(|i| i.issuer.as_str())
        .filter(|i| i.starts_with("https://") || i.starts_with("http://"))
        .collect();
    let mut scopes: Vec<&str> = document
        .rules
        .iter()
        .flat_map(|r| r.required_scopes.iter().map(String::as_str))
        .collect();
    scopes.sort_unstable();
    scopes.dedup();
    axum::Json(json!({
        "resource": auth.resource,
        "authorization_servers": authorization_servers,
        "scopes_supported": scopes,
        "bearer_methods_supported": ["header"],
        "resource_name": document.metadata.server.as_deref().unwrap_or("palisade"),
    }))
    .into_response()
}

/// Per-request facts for audit events.
struct Context {
    request_id: String,
    client: Option<String>,
    started: Instant,
    /// The event that closes the request (with its status) was emitted.
    closed: AtomicBool,
    /// The body was read (or reading it began): an answer before that closes an HTTP/1.1
    /// connection rather than leave the unread body in it.
    body_read: AtomicBool,
    /// The request's spans, while trace export is on.
    trace: Option<RequestTrace>,
}

impl Context {
    fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    /// The trace and span ids for an audit event of a recorded trace: for the event that closes
    /// the request always (the request span begins then if it has not), for an earlier one once
    /// the span has begun.
    fn trace_ids(&self, closing: bool) -> Option<crate::trace::TraceIds> {
        let trace = self.trace.as_ref()?;
        if closing { trace.ids() } else { trace.ids_if_begun() }
    }
}

/// Writes the request's trace and span ids into `event`.
fn with_trace_ids(event: &mut AuditEvent<'_>, ids: Option<crate::trace::TraceIds>) {
    if let Some(ids) = ids {
        event.trace_id = Some(ids.trace);
        event.span_id = Some(ids.span);
    }
}

/// Audits a request that ends without its closing event: the client went away (the connection
/// closed and the request's future was dropped) while it was being served.
struct Unfinished<'a> {
    state: &'a AppState,
    ctx: &'a Context,
    snapshot: Option<&'a Snapshot>,
}

impl Drop for Unfinished<'_> {
    fn drop(&mut self) {
        if !self.ctx.closed.load(Ordering::Acquire) {
            let mut event = AuditEvent::new(
                &self.ctx.request_id,
                AuditKind::Request,
                "abandoned",
                "client_disconnected",
            );
            event.client_address = self.ctx.client.as_deref();
            event.policy_hash = self.snapshot.map(|s| s.policy.hash());
            event.duration_us = Some(self.ctx.started.elapsed().as_micros() as u64);
            with_trace_ids(&mut event, self.ctx.trace_ids(true));
            if let Some(trace) = &self.ctx.trace {
                trace.abandon();
            }
            self.state.audit.emit(&event);
        }
    }
}

fn request_id(headers: &HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        })
        .map_or_else(crate::audit::random_id, str::to_owned)
}

fn json_response(status: u16, body: &Value, request_id: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    with_request_id((status, axum::Json(body)).into_response(), request_id)
}

/// 200 with a JSON body serialized already.
fn serialized_response(body: String, request_id: &str) -> Response {
    let response = (
        [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        body,
    )
        .into_response();
    with_request_id(response, request_id)
}

fn with_request_id(mut response: Response, request_id: &str) -> Response {
    if let Ok(value) = HeaderValue::from_str(request_id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

fn rpc_error(status: u16, id: &Id, code: i64, message: &str, data: Option<Value>, request_id: &str) -> Response {
    json_response(status, &jsonrpc::error(id, code, message, data), request_id)
}

fn violation(state: &AppState, kind: Violation) {
    state
        .metrics
        .security_violations
        .get_or_create(&ViolationLabels { r#type: kind })
        .inc();
}

/// Hosts accepted in the Host header: the configured list, or the resource's host and localhost.
fn host_allowed(state: &AppState, snapshot: &Snapshot, host: &str) -> bool {
    let configured = &state.config.allowed_hosts;
    if configured.iter().any(|h| h == "*") {
        return true;
    }
    let without_port = strip_port(host);
    let matches = |allowed: &str| allowed.eq_ignore_ascii_case(host) || allowed.eq_ignore_ascii_case(without_port);
    if !configured.is_empty() {
        return configured.iter().any(|h| matches(h));
    }
    let (origin, _) = split_resource(&snapshot.policy.document().authentication.resource);
    let resource_host = strip_port(origin.split("://").nth(1).unwrap_or_default());
    [resource_host, "localhost", "127.0.0.1", "[::1]"]
        .into_iter()
        .any(matches)
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_inclusive(']').next().unwrap_or(host);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

fn origin_allowed(state: &AppState, snapshot: &Snapshot, origin: &str) -> bool {
    if state
        .config
        .allowed_origins
        .iter()
        .any(|o| o == "*" || o.eq_ignore_ascii_case(origin))
    {
        return true;
    }
    // Same-site by default: an origin whose host is an accepted Host.
    origin
        .split_once("://")
        .is_some_and(|(scheme, host)| matches!(scheme, "http" | "https") && host_allowed(state, snapshot, host))
}

/// `Authorization: Bearer <token>` or `X-API-Key`; refuses ambiguous or misplaced credentials.
/// Without either header, the subject of the connection's verified client certificate (mTLS), if
/// any: a token sent over a connection with a client certificate wins over the certificate.
///
/// A request whose only credential is one this server does not accept (another scheme such as
/// `Basic`, or a token in the query string) is answered like one without credentials: 401 with
/// the challenge, so that a client starts discovery (RFC 6750 §3.1).
fn credentials<'a>(
    headers: &'a HeaderMap,
    query: Option<&str>,
    certificate: Option<&'a ClientCertificate>,
) -> Result<Credential<'a>, AuthError> {
    let in_query = query.is_some_and(|q| {
        q.split('&').any(|pair| {
            pair.split('=')
                .next()
                .is_some_and(|k| k.eq_ignore_ascii_case("access_token"))
        })
    });
    let mut authorization = headers.get_all(header::AUTHORIZATION).iter();
    let first = authorization.next();
    if authorization.next().is_some() || headers.get_all("x-api-key").iter().count() > 1 {
        return Err(AuthError::InvalidRequest(Reason::DuplicateAuthorization));
    }
    let api_key = headers.get("x-api-key");
    if in_query {
        return Err(if first.is_none() && api_key.is_none() {
            AuthError::UnsupportedCredentials(Reason::TokenInQuery)
        } else {
            AuthError::InvalidRequest(Reason::TokenInQuery)
        });
    }
    match (first, api_key) {
        (Some(_), Some(_)) => Err(AuthError::InvalidRequest(Reason::DuplicateAuthorization)),
        (None, None) => Ok(certificate.map_or(Credential::None, |c| Credential::ClientCertificate(&c.subject))),
        (None, Some(key)) => key
            .to_str()
            .ok()
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(Credential::ApiKey)
            .ok_or(AuthError::InvalidToken(Reason::Malformed)),
        (Some(value), None) => bearer(value),
    }
}

/// The token of an `Authorization` header value: `Bearer <token>` (the scheme in any case).
fn bearer(value: &HeaderValue) -> Result<Credential<'_>, AuthError> {
    let value = value.to_str().map_err(|_| AuthError::InvalidToken(Reason::Malformed))?;
    let value = value.trim();
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::UnsupportedCredentials(Reason::UnsupportedScheme));
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(AuthError::InvalidToken(Reason::Malformed));
    }
    Ok(Credential::Bearer(token))
}

fn quote(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"")
}

/// `WWW-Authenticate: Bearer ...` (RFC 6750 §3, RFC 9728 §5.1).
fn challenge(snapshot: &Snapshot, error: Option<&str>, description: Option<&str>, scope: Option<&str>) -> String {
    let resource = &snapshot.policy.document().authentication.resource;
    let mut value = format!(
        "Bearer resource_metadata=\"{}\"",
        quote(&resource_metadata_url(resource))
    );
    if let Some(error) = error {
        value.push_str(&format!(", error=\"{error}\""));
    }
    if let Some(description) = description {
        value.push_str(&format!(", error_description=\"{}\"", quote(description)));
    }
    if let Some(scope) = scope {
        value.push_str(&format!(", scope=\"{}\"", quote(scope)));
    }
    value
}

fn with_challenge(mut response: Response, challenge: String) -> Response {
    if let Ok(value) = HeaderValue::from_str(&challenge) {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

fn metrics_method(credential: &Credential<'_>) -> metrics::AuthMethod {
    match credential {
        Credential::None => metrics::AuthMethod::None,
        Credential::ApiKey(_) => metrics::AuthMethod::ApiKey,
        Credential::Bearer(t) if crate::auth::looks_like_jwt(t) => metrics::AuthMethod::Jwt,
        Credential::Bearer(_) => metrics::AuthMethod::ApiKey,
        Credential::ClientCertificate(_) => metrics::AuthMethod::ClientCertificate,
    }
}

fn principal_method(method: AuthMethod) -> metrics::AuthMethod {
    match method {
        AuthMethod::Jwt => metrics::AuthMethod::Jwt,
        AuthMethod::ApiKey => metrics::AuthMethod::ApiKey,
        AuthMethod::Anonymous => metrics::AuthMethod::Anonymous,
        AuthMethod::ClientCertificate => metrics::AuthMethod::ClientCertificate,
    }
}

fn auth_failure(
    state: &AppState,
    snapshot: &Snapshot,
    ctx: &Context,
    error: &AuthError,
    method: metrics::AuthMethod,
) -> Response {
    state
        .metrics
        .authentication_attempts
        .get_or_create(&AuthLabels::failure(method, error.reason()))
        .inc();
    if let Some(kind) = error.violation() {
        violation(
            state,
            match kind {
                "invalid_signature" => Violation::InvalidSignature,
                "alg_not_allowed" => Violation::AlgNotAllowed,
                "token_in_query" => Violation::TokenInQuery,
                "oversize" => Violation::Oversize,
                _ => Violation::DuplicateAuthorization,
            },
        );
    }
    let status = error.status();
    let mut event = event(
        ctx,
        snapshot,
        None,
        AuditKind::Authentication,
        "failure",
        error.reason(),
        Some(status),
    );
    event.auth_method = Some(method.as_str());
    ctx.close();
    state.audit.emit(&event);

    let message = error.message();
    let body = jsonrpc::error(
        &Id::Null,
        jsonrpc::code::UNAUTHORIZED,
        &message,
        Some(json!({"code": error.code()})),
    );
    let response = json_response(status, &body, &ctx.request_id);
    // RFC 6750 §3.1: a request without (accepted) credentials gets no error information.
    let described = !matches!(
        error,
        AuthError::MissingAuthorization | AuthError::UnsupportedCredentials(_)
    );
    let description = described.then(|| message.lines().next().unwrap_or_default().to_owned());
    let mut response = with_challenge(
        response,
        challenge(snapshot, error.bearer_error(), description.as_deref(), None),
    );
    if status == 503 {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    }
    response
}

/// `POST /mcp`.
async fn post_mcp(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let (mut parts, body) = request.into_parts();
    // HTTP/2 (negotiated by ALPN over TLS) carries the host as `:authority`, which hyper puts in
    // the URI, and no Host header (RFC 9113 §8.3.1): checked as the Host header would be.
    if !parts.headers.contains_key(header::HOST)
        && let Some(authority) = parts.uri.authority()
        && let Ok(value) = HeaderValue::from_str(authority.as_str())
    {
        parts.headers.insert(header::HOST, value);
    }
    let started = Instant::now();
    let ctx = Context {
        request_id: request_id(&parts.headers),
        client: parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip().to_string()),
        started,
        closed: AtomicBool::new(false),
        body_read: AtomicBool::new(false),
        trace: state
            .tracer
            .map(|tracer| RequestTrace::new(tracer, started, &parts.headers)),
    };
    let snapshot = state.snapshot.load_full();
    let unfinished = Unfinished {
        state: &state,
        ctx: &ctx,
        snapshot: snapshot.as_deref(),
    };
    let (mut response, method) = serve_bounded(&state, snapshot.as_deref(), &ctx, &parts, body).await;
    drop(unfinished);
    // An answer sent before the body was read leaves the body in an HTTP/1.1 connection: close it
    // rather than read what an unauthenticated client sends.
    let has_body = parts.headers.contains_key(header::TRANSFER_ENCODING)
        || parts
            .headers
            .get(header::CONTENT_LENGTH)
            .is_some_and(|length| length.as_bytes() != b"0");
    if has_body && !ctx.body_read.load(Ordering::Acquire) && parts.version < axum::http::Version::HTTP_2 {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    let status = response.status().as_u16();
    state
        .metrics
        .observe_request(method.as_deref().unwrap_or("other"), status, ctx.started.elapsed());
    if let Some(trace) = &ctx.trace {
        trace.request_facts(
            &ctx.request_id,
            ctx.client.as_deref(),
            snapshot.as_deref().map(|s| s.policy.hash()),
        );
        trace.finish(status, parts.version, state.url_scheme);
    }
    response
}

/// Longest time a request waits for one of the `--max-concurrency` places before it is shed.
pub const QUEUE_WAIT: Duration = Duration::from_millis(250);

/// The request's bounds around [`serve_mcp`]: a place among `--max-concurrency` (else shed
/// after at most [`QUEUE_WAIT`]), a loaded policy, a working audit sink with `--audit-required`, and `--request-timeout`.
async fn serve_bounded(
    state: &AppState,
    snapshot: Option<&Snapshot>,
    ctx: &Context,
    parts: &axum::http::request::Parts,
    body: Body,
) -> (Response, Option<String>) {
    // A short, bounded wait for a place, then shed: bursts are absorbed, nothing queues for long.
    let place = match state.requests.clone().try_acquire_owned() {
        Ok(place) => Ok(place),
        Err(_) => tokio::time::timeout(QUEUE_WAIT, state.requests.clone().acquire_owned())
            .await
            .map_err(|_| ())
            .and_then(|acquired| acquired.map_err(|_| ())),
    };
    let Ok(_place) = place else {
        return (shed(state, snapshot, ctx, Shed::Overloaded), None);
    };
    if state.config.audit_required && !state.audit.healthy() {
        return (shed(state, snapshot, ctx, Shed::AuditUnavailable), None);
    }
    let Some(snapshot) = snapshot else {
        edge_event(state, None, ctx, "policy_not_loaded", 503);
        let response = rpc_error(
            503,
            &Id::Null,
            jsonrpc::code::INTERNAL_ERROR,
            "The server has not loaded its policy yet.\n\nAction: retry shortly.",
            None,
            &ctx.request_id,
        );
        return (retry_after(response, 5), None);
    };
    let lost_before = state.audit.dropped();
    let served = tokio::time::timeout(
        state.config.request_timeout,
        serve_mcp(state, snapshot, ctx, parts, body),
    )
    .await;
    let Ok((response, method)) = served else {
        return (shed(state, Some(snapshot), ctx, Shed::RequestTimeout), None);
    };
    // Fail closed: the answer goes out only once the request's audit lines are written.
    if state.config.audit_required && !(state.audit.confirm().await && state.audit.dropped() == lost_before) {
        return (shed(state, Some(snapshot), ctx, Shed::AuditUnavailable), method);
    }
    (response, method)
}

/// A request answered without being served: 503 with `Retry-After` (408 for a body that came too
/// slowly), counted and audited.
fn shed(state: &AppState, snapshot: Option<&Snapshot>, ctx: &Context, reason: Shed) -> Response {
    state.metrics.request_shed(reason);
    let (status, message, retry) = match reason {
        Shed::Overloaded => (
            503,
            format!(
                "Service Unavailable: the server is serving its limit of {} requests.\n\nAction: retry after the time in Retry-After.",
                state.config.max_concurrency
            ),
            Some(1),
        ),
        Shed::RequestTimeout => (
            503,
            format!(
                "Service Unavailable: the request took longer than {}.\n\nAction: retry after the time in Retry-After.",
                seconds(state.config.request_timeout)
            ),
            Some(1),
        ),
        Shed::BodyTimeout => (
            408,
            format!(
                "Request Timeout: the body did not arrive within {}.\n\nAction: send the whole body at once.",
                seconds(state.config.body_read_timeout)
            ),
            None,
        ),
        Shed::AuditUnavailable => (
            503,
            "Service Unavailable: the audit trail cannot be written, and this server answers only \
             audited requests.\n\nAction: retry after the time in Retry-After."
                .to_owned(),
            Some(5),
        ),
    };
    edge_event(state, snapshot, ctx, reason.as_str(), status);
    let response = rpc_error(
        status,
        &Id::Null,
        jsonrpc::code::INTERNAL_ERROR,
        &message,
        None,
        &ctx.request_id,
    );
    match retry {
        Some(seconds) => retry_after(response, seconds),
        None => response,
    }
}

/// A timeout as the messages say it: `30 s`, `0.2 s`.
fn seconds(duration: Duration) -> String {
    format!("{} s", duration.as_secs_f64())
}

fn retry_after(mut response: Response, seconds: u64) -> Response {
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    response
}

/// The closing event of a request the edge ended (shed, timed out, no policy, no audit).
fn edge_event(state: &AppState, snapshot: Option<&Snapshot>, ctx: &Context, reason: &str, status: u16) {
    let mut event = AuditEvent::new(&ctx.request_id, AuditKind::Request, "deny", reason);
    event.client_address = ctx.client.as_deref();
    event.policy_hash = snapshot.map(|s| s.policy.hash());
    event.http_status = Some(status);
    event.duration_us = Some(ctx.started.elapsed().as_micros() as u64);
    with_trace_ids(&mut event, ctx.trace_ids(true));
    ctx.close();
    state.audit.emit(&event);
}

/// Reads a body of at most `limit` bytes within `timeout`.
async fn read_body(body: Body, limit: usize, timeout: Duration) -> Result<Bytes, BodyError> {
    match tokio::time::timeout(timeout, Limited::new(body, limit).collect()).await {
        Err(_) => Err(BodyError::Timeout),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(error)) if error.is::<LengthLimitError>() => Err(BodyError::TooLarge),
        Ok(Err(_)) => Err(BodyError::Broken),
    }
}

/// Why a body could not be read.
enum BodyError {
    TooLarge,
    Timeout,
    /// The client closed the connection or sent a malformed body.
    Broken,
}

fn media_type(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.to_ascii_lowercase())
}

async fn serve_mcp(
    state: &AppState,
    snapshot: &Snapshot,
    ctx: &Context,
    parts: &axum::http::request::Parts,
    body: Body,
) -> (Response, Option<String>) {
    let headers = &parts.headers;
    let query = parts.uri.query();
    let certificate = parts.extensions.get::<ClientCertificate>();
    // Refusals before authentication: answered, and audited as request denials.
    let reject = |status: u16, code: i64, message: &str, reason: &str| {
        audit_request(state, snapshot, ctx, None, None, reason, status);
        (rpc_error(status, &Id::Null, code, message, None, &ctx.request_id), None)
    };
    // DNS-rebinding and cross-origin protection (MCP transports, "Security Warning").
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    if !host_allowed(state, snapshot, host) {
        violation(state, Violation::ForeignOrigin);
        return reject(
            403,
            jsonrpc::code::INVALID_REQUEST,
            "Forbidden: the Host header names a host this server does not serve",
            "foreign_host",
        );
    }
    if let Some(origin) = headers.get(header::ORIGIN).map(|o| o.to_str().unwrap_or("invalid"))
        && !origin_allowed(state, snapshot, origin)
    {
        violation(state, Violation::ForeignOrigin);
        return reject(
            403,
            jsonrpc::code::INVALID_REQUEST,
            "Forbidden: requests from this Origin are not allowed",
            "foreign_origin",
        );
    }
    let head_bytes: usize = headers.iter().map(|(n, v)| n.as_str().len() + v.len() + 4).sum();
    if head_bytes > state.config.max_header_bytes {
        violation(state, Violation::Oversize);
        return reject(
            431,
            jsonrpc::code::INVALID_REQUEST,
            "Request Header Fields Too Large",
            "headers_too_large",
        );
    }
    let json_body = media_type(headers, header::CONTENT_TYPE)
        .is_some_and(|c| c.split(';').next().map(str::trim) == Some("application/json"));
    if !json_body {
        return reject(
            415,
            jsonrpc::code::INVALID_REQUEST,
            "Unsupported Media Type: Content-Type must be application/json",
            "unsupported_media_type",
        );
    }
    if let Some(accept) = media_type(headers, header::ACCEPT)
        && !["application/json", "application/*", "*/*"]
            .iter()
            .any(|t| accept.contains(t))
    {
        return reject(
            406,
            jsonrpc::code::INVALID_REQUEST,
            "Not Acceptable: this server answers with application/json",
            "not_acceptable",
        );
    }
    // Authentication.
    let authentication_started = if ctx.trace.is_some() {
        Instant::now()
    } else {
        ctx.started
    };
    let authenticated = |outcome: Result<&'static str, &'static str>| {
        if let Some(trace) = &ctx.trace {
            trace.authenticated(authentication_started, outcome);
        }
    };
    let credential = match credentials(headers, query, certificate) {
        Ok(credential) => credential,
        Err(error) => {
            authenticated(Err(error.reason()));
            return (
                auth_failure(state, snapshot, ctx, &error, metrics::AuthMethod::None),
                None,
            );
        }
    };
    let principal = match snapshot.auth.authenticate(credential, now(), ctx.trace.as_ref()).await {
        Ok(principal) => principal,
        Err(error) => {
            authenticated(Err(error.reason()));
            return (
                auth_failure(state, snapshot, ctx, &error, metrics_method(&credential)),
                None,
            );
        }
    };
    authenticated(Ok(principal.method.as_str()));
    state
        .metrics
        .authentication_attempts
        .get_or_create(&AuthLabels::success(principal_method(principal.method)))
        .inc();
    audit_authentication(state, snapshot, ctx, &principal);
    if let Some(slot) = parts.extensions.get::<Arc<ConnectionSlot>>() {
        slot.authenticated();
    }

    // (source, subject): alice of one issuer never shares a bucket with alice of another. The
    // key is made only when there is a limit (it allocates).
    let limited = state.rate_limiter.enabled().then(|| {
        let caller = crate::rate_limit::caller_key(&principal, ctx.client.as_deref());
        state.rate_limiter.check(&caller, Instant::now())
    });
    if let Some(Err(retry_after)) = limited {
        violation(state, Violation::RateLimited);
        audit_request(state, snapshot, ctx, Some(&principal), None, "rate_limited", 429);
        let mut response = rpc_error(
            429,
            &Id::Null,
            jsonrpc::code::INVALID_REQUEST,
            "Too Many Requests: slow down and retry after the time in Retry-After",
            None,
            &ctx.request_id,
        );
        if let Ok(value) = HeaderValue::from_str(&retry_after.to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        return (response, None);
    }

    // 2026-07-28: a tool call the headers show to be denied is answered without its body.
    if let Some(denied) = denied_by_headers(state, snapshot, ctx, &principal, headers) {
        return denied;
    }

    // The body, only now that the caller is known (and within its rate).
    let too_large = |state: &AppState| {
        violation(state, Violation::Oversize);
        audit_request(state, snapshot, ctx, Some(&principal), None, "body_too_large", 413);
        let message = format!(
            "Payload Too Large: the body exceeds {} bytes",
            state.config.max_body_bytes
        );
        (
            rpc_error(
                413,
                &Id::Null,
                jsonrpc::code::INVALID_REQUEST,
                &message,
                None,
                &ctx.request_id,
            ),
            None,
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > state.config.max_body_bytes as u64) {
        return too_large(state);
    }
    ctx.body_read.store(true, Ordering::Release);
    let body = match read_body(body, state.config.max_body_bytes, state.config.body_read_timeout).await {
        Ok(body) => body,
        Err(BodyError::TooLarge) => return too_large(state),
        Err(BodyError::Timeout) => return (shed(state, Some(snapshot), ctx, Shed::BodyTimeout), None),
        Err(BodyError::Broken) => {
            audit_request(state, snapshot, ctx, Some(&principal), None, "body_unreadable", 400);
            let response = rpc_error(
                400,
                &Id::Null,
                jsonrpc::code::INVALID_REQUEST,
                "Bad Request: the body could not be read (the connection closed or the framing is invalid).",
                None,
                &ctx.request_id,
            );
            return (response, None);
        }
    };

    // The message.
    let (id, method, params) = match jsonrpc::parse(&body) {
        Ok(Incoming::Request { id, method, params }) => (id, method, params),
        Ok(Incoming::Notification { method }) => {
            audit_request(
                state,
                snapshot,
                ctx,
                Some(&principal),
                Some(&method),
                "no_authorization_needed",
                202,
            );
            return (StatusCode::ACCEPTED.into_response(), Some(method));
        }
        Ok(Incoming::Response) => {
            audit_request(
                state,
                snapshot,
                ctx,
                Some(&principal),
                None,
                "client_response_ignored",
                202,
            );
            return (StatusCode::ACCEPTED.into_response(), None);
        }
        Err(invalid) => {
            let reason = if invalid.code == jsonrpc::code::PARSE_ERROR {
                "parse_error"
            } else {
                "invalid_request"
            };
            audit_request(state, snapshot, ctx, Some(&principal), None, reason, 400);
            return (
                rpc_error(400, &invalid.id, invalid.code, &invalid.message, None, &ctx.request_id),
                None,
            );
        }
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let routing = RoutingHeaders {
        protocol_version: header("mcp-protocol-version"),
        method: header("mcp-method"),
        name: header("mcp-name"),
    };
    let revision = match protocol::select(&method, &params, routing) {
        Ok(revision) => revision,
        Err(rejection) => {
            let reason = match rejection.code {
                protocol::HEADER_MISMATCH => "header_mismatch",
                protocol::UNSUPPORTED_VERSION => "unsupported_version",
                _ => "invalid_request",
            };
            audit_request(
                state,
                snapshot,
                ctx,
                Some(&principal),
                Some(&method),
                reason,
                rejection.status,
            );
            let response = rpc_error(
                rejection.status,
                &id,
                rejection.code,
                &rejection.message,
                rejection.data,
                &ctx.request_id,
            );
            return (response, Some(method));
        }
    };

    if let Some(trace) = &ctx.trace {
        trace.dispatch(&crate::trace::Message {
            method: &method,
            params: &params,
            id: &id,
            protocol_version: routing.protocol_version,
        });
        trace.caller(principal.identity.subject.as_deref());
    }
    let access = snapshot.policy.access(&principal.identity);
    let call = Call {
        snapshot,
        access: &access,
        revision,
        trace: ctx.trace.as_ref(),
    };
    let (reply, authz) = match &state.proxy {
        Some(proxy) => proxy::handle(&call, proxy, &method, &params).await,
        None => methods::handle(&call, &method, &params),
    };
    respond(state, snapshot, ctx, &principal, &id, method, reply, authz)
}

/// A `tools/call` whose 2026-07-28 routing headers name a tool the caller may not call: the
/// denial is answered from the headers, without reading the body (its JSON-RPC id is then
/// unknown: `null`). A request whose headers say nothing, or name a tool that the caller may call
/// (or that does not exist), is decided from its body, which must then agree with the headers.
fn denied_by_headers(
    state: &AppState,
    snapshot: &Snapshot,
    ctx: &Context,
    principal: &Principal,
    headers: &HeaderMap,
) -> Option<(Response, Option<String>)> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let tool = protocol::routed_tool(RoutingHeaders {
        protocol_version: header("mcp-protocol-version"),
        method: header("mcp-method"),
        name: header("mcp-name"),
    })?;
    let access = snapshot.policy.access(&principal.identity);
    let decision = access.check_tool(&tool);
    if decision.tool.is_none() || decision.effect.permits() {
        return None;
    }
    let call = Call {
        snapshot,
        access: &access,
        revision: protocol::Revision::Modern,
        trace: ctx.trace.as_ref(),
    };
    let params = serde_json::Map::from_iter([("name".to_owned(), Value::String(tool))]);
    let method = "tools/call".to_owned();
    let (reply, authz) = methods::handle(&call, &method, &params);
    Some(respond(
        state,
        snapshot,
        ctx,
        principal,
        &Id::Null,
        method,
        reply,
        authz,
    ))
}

/// The answer to a message, and its closing audit event.
#[allow(clippy::too_many_arguments)]
fn respond(
    state: &AppState,
    snapshot: &Snapshot,
    ctx: &Context,
    principal: &Principal,
    id: &Id,
    method: String,
    reply: Reply<'_>,
    authz: Option<AuthzRecord<'_>>,
) -> (Response, Option<String>) {
    // Proxy mode: the upstream had no tool list to decide on.
    let upstream_failed = matches!(reply, Reply::Upstream(_));
    let response = match reply {
        Reply::Result(result) => json_response(200, &jsonrpc::result(id, result), &ctx.request_id),
        Reply::Serialized(result) => serialized_response(jsonrpc::result_text(id, &result), &ctx.request_id),
        Reply::Error {
            status,
            code,
            message,
            data,
        } => rpc_error(status, id, code, &message, data, &ctx.request_id),
        Reply::Upstream(error) => {
            let data = error.data_code().map(|code| json!({"code": code}));
            let response = rpc_error(
                error.http_status(),
                id,
                jsonrpc::code::INTERNAL_ERROR,
                &error.caller_message(),
                data,
                &ctx.request_id,
            );
            match error {
                UpstreamError::Unavailable(_) => retry_after(response, 1),
                _ => response,
            }
        }
        Reply::InsufficientScope { missing, message } => {
            let body = jsonrpc::error(
                id,
                jsonrpc::code::UNAUTHORIZED,
                &message,
                Some(json!({"code": "INSUFFICIENT_SCOPE", "requiredScopes": missing})),
            );
            let scope = missing.join(" ");
            let description = message.lines().next().unwrap_or_default().to_owned();
            with_challenge(
                json_response(403, &body, &ctx.request_id),
                challenge(
                    snapshot,
                    Some("insufficient_scope"),
                    Some(&description),
                    (!scope.is_empty()).then_some(scope.as_str()),
                ),
            )
        }
    };
    let status = response.status().as_u16();
    let reason_without_decision = if upstream_failed {
        "upstream_unavailable"
    } else {
        "no_authorization_needed"
    };
    match authz {
        Some(record) => audit_authorization(state, snapshot, ctx, principal, &method, &record, status),
        None => audit_request(
            state,
            snapshot,
            ctx,
            Some(principal),
            Some(&method),
            reason_without_decision,
            status,
        ),
    }
    (response, Some(method))
}

/// An audit event carrying what every event of this request has: ids, caller, client address,
/// policy hash, and (for the event that closes the request) status and duration.
fn event<'a>(
    ctx: &'a Context,
    snapshot: &'a Snapshot,
    principal: Option<&'a Principal>,
    kind: AuditKind,
    decision: &'a str,
    reason: &'a str,
    status: Option<u16>,
) -> AuditEvent<'a> {
    let mut event = AuditEvent::new(&ctx.request_id, kind, decision, reason);
    if let Some(principal) = principal {
        event.subject = principal.identity.subject.as_deref();
        event.issuer = principal.issuer.as_deref();
        event.auth_method = Some(principal.method.as_str());
    }
    event.client_address = ctx.client.as_deref();
    event.policy_hash = Some(snapshot.policy.hash());
    if let Some(status) = status {
        event.http_status = Some(status);
        event.duration_us = Some(ctx.started.elapsed().as_micros() as u64);
    }
    with_trace_ids(&mut event, ctx.trace_ids(status.is_some()));
    event
}

fn audit_authentication(state: &AppState, snapshot: &Snapshot, ctx: &Context, principal: &Principal) {
    let event = event(
        ctx,
        snapshot,
        Some(principal),
        AuditKind::Authentication,
        "success",
        "ok",
        None,
    );
    state.audit.emit(&event);
}

/// A request without an authorization decision: refused before it reached a method (bad Host,
/// Origin, media type, size, message), or a method that needs none (`initialize`, notifications).
fn audit_request(
    state: &AppState,
    snapshot: &Snapshot,
    ctx: &Context,
    principal: Option<&Principal>,
    method: Option<&str>,
    reason: &str,
    status: u16,
) {
    let decision = if status < 400 { "allow" } else { "deny" };
    let mut event = event(
        ctx,
        snapshot,
        principal,
        AuditKind::Request,
        decision,
        reason,
        Some(status),
    );
    event.mcp_method = method;
    ctx.close();
    state.audit.emit(&event);
}

fn audit_authorization(
    state: &AppState,
    snapshot: &Snapshot,
    ctx: &Context,
    principal: &Principal,
    method: &str,
    record: &AuthzRecord<'_>,
    status: u16,
) {
    let (kind, decision) = (
        match record.kind {
            AuthzKind::Tool => metrics::AuthzKind::Tool,
            AuthzKind::Resource => metrics::AuthzKind::Resource,
            AuthzKind::Prompt => metrics::AuthzKind::Prompt,
            AuthzKind::List => metrics::AuthzKind::List,
        },
        match record.effect {
            Effect::Allow => AuthzDecision::Allow,
            Effect::Deny => AuthzDecision::Deny,
            Effect::AuditDeny => AuthzDecision::WouldDeny,
        },
    );
    state
        .metrics
        .authorization_checks
        .get_or_create(&AuthzLabels { kind, decision })
        .inc();
    // A tool the server knows (not an unknown name, which a caller could vary without bound).
    if record.kind == AuthzKind::Tool
        && record.reason != palisade_crds::Reason::UnknownTool.code()
        && let Some(tool) = record.target.as_deref()
    {
        state
            .metrics
            .observe_tool_call(tool, decision, record.reason, ctx.started.elapsed());
    }
    if record.path_traversal {
        violation(state, Violation::PathTraversal);
    }
    if let Some(trace) = &ctx.trace {
        trace.decided(&crate::trace::Decision {
            kind: match record.kind {
                AuthzKind::Tool => "tool",
                AuthzKind::Resource => "resource",
                AuthzKind::Prompt => "prompt",
                AuthzKind::List => "list",
            },
            effect: record.effect.as_str(),
            reason: record.reason,
            target: record.target.as_deref(),
            rule: record.rule,
            granted_by: &record.granted_by,
            missing_scopes: &record.missing,
            argument: record.argument,
            decided: record.decided,
            local_work: state.proxy.is_none(),
        });
    }
    let mut event = event(
        ctx,
        snapshot,
        Some(principal),
        AuditKind::Authorization,
        record.effect.as_str(),
        record.reason,
        Some(status),
    );
    event.mcp_method = Some(method);
    match record.kind {
        AuthzKind::Resource => event.resource = record.target.as_deref(),
        AuthzKind::Prompt => event.prompt = record.target.as_deref(),
        _ => event.tool = record.target.as_deref(),
    }
    event.rule = record.rule;
    event.granted_by = record.granted_by.clone();
    event.missing_scopes = record.missing.clone();
    if let Some((argument, constraint)) = record.argument {
        event.argument = Some(argument);
        event.constraint = Some(constraint);
    }
    if let Some(forwarded) = record.upstream {
        event.upstream = Some(forwarded.outcome);
        event.upstream_us = Some(u64::try_from(forwarded.duration.as_micros()).unwrap_or(u64::MAX));
    }
    ctx.close();
    state.audit.emit(&event);
}
