//! An upstream at a Streamable HTTP endpoint (MCP 2025-11-25 "Streamable HTTP").
//!
//! - Each message is a POST with `Accept: application/json, text/event-stream`; the answer is
//!   either one JSON-RPC message or an event stream read until the answer to Palisade's id
//!   (other messages on the stream are skipped: Palisade declares no client capabilities).
//! - The session is Palisade's own: [`HttpUpstream::initialize`] keeps the `Mcp-Session-Id` the
//!   upstream gives and sends it, with `MCP-Protocol-Version`, on every later message. When the
//!   upstream no longer knows the session (404, as the specification says, or 400 with JSON-RPC
//!   error -32000, as the reference servers answer), Palisade initializes again and sends the
//!   request once more: the upstream refused it without running it.
//! - Request ids are Palisade's own, as on stdio; no header of Palisade's callers is ever sent
//!   (their tokens are not the upstream's to see). The headers sent besides the protocol's are
//!   the upstream's own credentials ([`Credentials`], `--upstream-header`).
//! - Answers are bounded: a JSON body or an event of more than the message limit is
//!   [`UpstreamError::Invalid`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue};
use serde_json::{Value, json};

use super::credentials::Credentials;
use super::handshake::{Handshake, handshake, initialize_params};
use super::oauth::TokenSource;
use super::sse::EventStream;
use super::{Transport, UpstreamError};

const SESSION_HEADER: &str = "mcp-session-id";
const VERSION_HEADER: &str = "mcp-protocol-version";

/// One Streamable HTTP upstream and Palisade's session with it.
pub struct HttpUpstream {
    client: reqwest::Client,
    url: String,
    max_message_bytes: usize,
    next_id: AtomicU64,
    session: Mutex<Session>,
    reinitializations: AtomicU64,
    credentials: Arc<Credentials>,
    oauth: Option<Arc<TokenSource>>,
}

#[derive(Default, Clone)]
struct Session {
    id: Option<String>,
    protocol_version: Option<String>,
}

/// How one POST ended, before the session is considered.
enum Posted {
    Answer(Value),
    Accepted,
    SessionUnknown,
    /// 401 to Palisade's own OAuth token: it expired or was revoked early.
    TokenRefused,
}

impl HttpUpstream {
    /// An upstream at `url`, reached with `client` (its timeouts, TLS roots and redirect policy
    /// apply); answers up to `max_message_bytes`.
    pub fn new(client: reqwest::Client, url: &str, max_message_bytes: usize) -> Self {
        Self {
            client,
            url: url.to_owned(),
            max_message_bytes,
            next_id: AtomicU64::new(1),
            session: Mutex::new(Session::default()),
            reinitializations: AtomicU64::new(0),
            credentials: Arc::new(Credentials::none()),
            oauth: None,
        }
    }

    /// Sends a bearer token of Palisade's own from `source` with every message, and gets a new
    /// one when the upstream answers 401.
    pub fn with_oauth(mut self, source: Arc<TokenSource>) -> Self {
        self.oauth = Some(source);
        self
    }

    /// Sends the headers of `credentials` with every message.
    pub fn with_credentials(mut self, credentials: Arc<Credentials>) -> Self {
        self.credentials = credentials;
        self
    }

    /// Opens a session: `initialize`, then `notifications/initialized`.
    pub async fn initialize(&self, timeout: Duration) -> Result<Handshake, UpstreamError> {
        *self.session() = Session::default();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let message = json!({"jsonrpc": "2.0", "id": id, "method": "initialize", "params": initialize_params()});
        let (posted, session_id) = self.post(&message, Some(id), timeout).await?;
        let result = match posted {
            Posted::Answer(result) => result,
            Posted::TokenRefused => return Err(self.token_refused()),
            Posted::Accepted | Posted::SessionUnknown => {
                return Err(UpstreamError::Invalid("initialize was not answered".into()));
            }
        };
        let handshake = handshake(&result)?;
        *self.session() = Session {
            id: session_id,
            protocol_version: Some(handshake.protocol_version.clone()),
        };
        self.notify("notifications/initialized", None).await?;
        Ok(handshake)
    }

    /// Sessions opened again because the upstream had forgotten Palisade's.
    pub fn reinitializations(&self) -> u64 {
        self.reinitializations.load(Ordering::Relaxed)
    }

    fn session(&self) -> std::sync::MutexGuard<'_, Session> {
        self.session.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// POSTs `message`; the answer to `id` (if it is a request) and the session id the upstream
    /// gave.
    async fn post(
        &self,
        message: &Value,
        id: Option<u64>,
        timeout: Duration,
    ) -> Result<(Posted, Option<String>), UpstreamError> {
        let session = self.session().clone();
        // The upstream's credentials first: the protocol's own headers below are never theirs
        // (their names are refused), and are set last all the same.
        let mut headers = HeaderMap::clone(&self.credentials.headers());
        headers.insert(ACCEPT, HeaderValue::from_static("application/json, text/event-stream"));
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        for (name, value) in [
            (SESSION_HEADER, &session.id),
            (VERSION_HEADER, &session.protocol_version),
        ] {
            if let Some(value) = value.as_deref().and_then(|v| HeaderValue::from_str(v).ok()) {
                headers.insert(name, value);
            }
        }
        // The span of this call, when a traced request makes it.
        crate::trace::inject_headers(&opentelemetry::Context::current(), &mut headers);
        let exchange = async {
            if let Some(oauth) = &self.oauth {
                headers.insert(AUTHORIZATION, oauth.bearer(&self.client).await?);
            }
            let response = self
                .client
                .post(&self.url)
                .headers(headers)
                .body(serde_json::to_vec(message).expect("a JSON value serializes"))
                .send()
                .await
                .map_err(|error| match error.is_timeout() {
                    // The client's own deadline (a backstop equal to the request's) came first.
                    true => UpstreamError::Timeout(timeout),
                    false => UpstreamError::Unavailable(format!("cannot reach {}: {error}", self.url)),
                })?;
            let session_id = response
                .headers()
                .get(SESSION_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let posted = self.read(response, id, session.id.is_some()).await?;
            Ok((posted, session_id))
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| UpstreamError::Timeout(timeout))?
    }

    /// What the upstream answered.
    async fn read(
        &self,
        mut response: reqwest::Response,
        id: Option<u64>,
        had_session: bool,
    ) -> Result<Posted, UpstreamError> {
        let status = response.status();
        let event_stream = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        match status {
            StatusCode::ACCEPTED if id.is_none() => return Ok(Posted::Accepted),
            StatusCode::OK if id.is_none() => return Ok(Posted::Accepted),
            StatusCode::NOT_FOUND if had_session => return Ok(Posted::SessionUnknown),
            StatusCode::UNAUTHORIZED if self.oauth.is_some() => return Ok(Posted::TokenRefused),
            StatusCode::OK if event_stream => {
                let id = id.expect("a request");
                let mut events = EventStream::new(self.max_message_bytes);
                while let Some(chunk) = response.chunk().await.map_err(|e| self.unavailable(&e))? {
                    let completed = events.feed(&chunk).map_err(|_| self.too_large())?;
                    // An event with empty data only primes resumption (its id): nothing to read.
                    for data in completed.iter().filter(|d| !d.iter().all(u8::is_ascii_whitespace)) {
                        if let Some(answer) = answer_to(data, id)? {
                            return Ok(Posted::Answer(answer?));
                        }
                    }
                }
                return Err(UpstreamError::Invalid(
                    "the event stream ended without the answer".into(),
                ));
            }
            _ => {}
        }
        let body = self.body(&mut response).await?;
        if status == StatusCode::OK {
            let id = id.expect("a request");
            return match answer_to(&body, id)? {
                Some(answer) => Ok(Posted::Answer(answer?)),
                None => Err(UpstreamError::Invalid("a JSON answer to another request".into())),
            };
        }
        // The reference servers answer a session they do not know with 400 and -32000.
        let session_error = serde_json::from_slice::<Value>(&body)
            .ok()
            .is_some_and(|b| b.pointer("/error/code").and_then(Value::as_i64) == Some(-32000));
        if status == StatusCode::BAD_REQUEST && had_session && session_error {
            return Ok(Posted::SessionUnknown);
        }
        Err(match status.as_u16() {
            401 | 403 => UpstreamError::Unavailable(format!("the upstream refused Palisade's credentials ({status})")),
            500..=599 => UpstreamError::Unavailable(format!("the upstream answered {status}")),
            _ => UpstreamError::Invalid(format!("the upstream answered {status}")),
        })
    }

    /// The whole body, at most the message limit.
    async fn body(&self, response: &mut reqwest::Response) -> Result<Vec<u8>, UpstreamError> {
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| self.unavailable(&e))? {
            if body.len() + chunk.len() > self.max_message_bytes {
                return Err(self.too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    fn unavailable(&self, error: &reqwest::Error) -> UpstreamError {
        UpstreamError::Unavailable(format!("reading the answer of {}: {error}", self.url))
    }

    /// Drops the refused token, so that the next message gets a new one.
    fn token_refused(&self) -> UpstreamError {
        if let Some(oauth) = &self.oauth {
            oauth.invalidate();
        }
        UpstreamError::Unavailable("the upstream refused Palisade's access token (401 Unauthorized)".into())
    }

    fn too_large(&self) -> UpstreamError {
        UpstreamError::Invalid(format!("a message longer than {} bytes", self.max_message_bytes))
    }
}

/// The answer to `id` in one JSON-RPC message, if it is that; `Err` if the message is not
/// JSON-RPC at all.
fn answer_to(data: &[u8], id: u64) -> Result<Option<Result<Value, UpstreamError>>, UpstreamError> {
    let message: Value = serde_json::from_slice(data)
        .map_err(|error| UpstreamError::Invalid(format!("a message that is not JSON ({error})")))?;
    let Value::Object(message) = message else {
        return Ok(None);
    };
    if message.contains_key("method") || message.get("id").and_then(Value::as_u64) != Some(id) {
        return Ok(None);
    }
    super::outcome(&message).map(Some).map_err(UpstreamError::Invalid)
}

impl Transport for HttpUpstream {
    async fn request(&self, method: &str, params: Option<Value>, timeout: Duration) -> Result<Value, UpstreamError> {
        for attempt in 0..2 {
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            let mut message = json!({"jsonrpc": "2.0", "id": id, "method": method});
            if let Some(params) = &params {
                message["params"] = params.clone();
            }
            match self.post(&message, Some(id), timeout).await?.0 {
                Posted::Answer(answer) => return Ok(answer),
                Posted::Accepted => return Err(UpstreamError::Invalid("a request answered 202 Accepted".into())),
                Posted::SessionUnknown if attempt == 0 => {
                    tracing::info!(url = %self.url, "the upstream forgot Palisade's session; initializing again");
                    self.reinitializations.fetch_add(1, Ordering::Relaxed);
                    self.initialize(timeout).await?;
                }
                Posted::TokenRefused if attempt == 0 => {
                    tracing::info!(url = %self.url, "the upstream refused Palisade's access token; getting a new one");
                    self.token_refused();
                }
                Posted::TokenRefused => return Err(self.token_refused()),
                Posted::SessionUnknown => {}
            }
        }
        Err(UpstreamError::Unavailable(
            "the upstream forgot the session it had just opened".into(),
        ))
    }

    async fn notify(&self, method: &str, params: Option<Value>) -> Result<(), UpstreamError> {
        let mut message = json!({"jsonrpc": "2.0", "method": method});
        if let Some(params) = params {
            message["params"] = params;
        }
        match self.post(&message, None, Duration::from_secs(10)).await?.0 {
            Posted::Accepted | Posted::Answer(_) => Ok(()),
            Posted::SessionUnknown => Err(UpstreamError::Unavailable(
                "the upstream does not know Palisade's session".into(),
            )),
            Posted::TokenRefused => Err(self.token_refused()),
        }
    }
}
