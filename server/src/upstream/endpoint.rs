//! The one upstream a proxying server stands in front of, however it is reached: a command run
//! over stdio (kept running by the [`Supervisor`]) or a Streamable HTTP endpoint (kept by
//! [`HttpKeeper`]). Both give the proxy the same three things: a way to send a request, the
//! upstream's tools as last listed, and where the upstream is ([`UpstreamState`]).
//!
//! The HTTP keeper opens Palisade's session when the server starts, retrying with the same
//! back-off as a stdio restart until the upstream answers, then lists the tools again every
//! [`HttpConfig::refresh`] (the proxy holds no stream on which the upstream could say they
//! changed). A list that cannot be read keeps the last one; a session the upstream forgot is
//! opened again by the next request ([`super::http`]).

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use serde_json::{Map, Value};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::credentials::Credentials;
use super::handshake::{Handshake, list_tools};
use super::http::HttpUpstream;
use super::oauth::{ClientCredentials, TokenSource, token_url_problem};
use super::supervisor::{Backoff, StdioConfig, StdioSource, Supervisor, UpstreamState};
use super::{Transport, UpstreamError};
use crate::config::ServeArgs;
use crate::metrics::Metrics;
use crate::trace::UpstreamPeer;

/// Time for each request of an upstream's start (the handshake, each page of its tools).
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the tools of an HTTP upstream are listed again.
const HTTP_REFRESH: Duration = Duration::from_secs(60);
/// The least message size taken from an upstream, whatever `--max-body-bytes` says: tool lists
/// are larger than requests.
const MIN_MESSAGE_BYTES: usize = 1 << 20;

/// The tools of an upstream, as last listed: one JSON object per tool, in the upstream's order.
pub type Tools = Arc<Vec<Map<String, Value>>>;

/// How the HTTP keeper reaches and watches an upstream.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// The endpoint (`https://mcp.example.com/mcp`).
    pub url: String,
    /// Longest message taken from the upstream.
    pub max_message_bytes: usize,
    /// Time for each request of the start and of a refresh.
    pub start_timeout: Duration,
    /// Spacing of the attempts to open the first session.
    pub backoff: Backoff,
    /// How often the tools are listed again.
    pub refresh: Duration,
    /// The headers sent with every request (the upstream's credentials).
    pub credentials: Arc<Credentials>,
}

/// The client credentials of `--upstream-oauth-*`, checked; `None` without a token URL.
fn oauth(args: &ServeArgs, url: &str) -> Result<Option<ClientCredentials>, String> {
    let Some(token_url) = &args.upstream_oauth_token_url else {
        if args.upstream_oauth_client_id.is_some() || args.upstream_oauth_client_secret_file.is_some() {
            return Err(
                "--upstream-oauth-client-id and --upstream-oauth-client-secret-file need --upstream-oauth-token-url"
                    .into(),
            );
        }
        return Ok(None);
    };
    if let Some(problem) = token_url_problem(token_url) {
        return Err(format!("--upstream-oauth-token-url: {problem}"));
    }
    let (Some(client_id), Some(secret_file)) =
        (&args.upstream_oauth_client_id, &args.upstream_oauth_client_secret_file)
    else {
        return Err(
            "--upstream-oauth-token-url needs --upstream-oauth-client-id and --upstream-oauth-client-secret-file"
                .into(),
        );
    };
    if args
        .upstream_headers
        .iter()
        .any(|h| h.name == reqwest::header::AUTHORIZATION)
    {
        return Err("--upstream-header Authorization and --upstream-oauth-token-url both set the upstream's Authorization header: keep one".into());
    }
    std::fs::metadata(secret_file)
        .map_err(|error| format!("--upstream-oauth-client-secret-file {}: {error}", secret_file.display()))?;
    Ok(Some(ClientCredentials {
        token_url: token_url.clone(),
        client_id: client_id.clone(),
        client_secret_file: secret_file.clone(),
        scopes: args
            .upstream_oauth_scopes
            .iter()
            .filter(|s| !s.is_empty())
            .cloned()
            .collect(),
        resource: args.upstream_oauth_resource.clone().unwrap_or_else(|| url.to_owned()),
    }))
}

/// An upstream kept ready.
pub enum Upstream {
    /// A command speaking MCP on its standard input and output.
    Stdio(Supervisor),
    /// A Streamable HTTP endpoint.
    Http(HttpKeeper),
}

impl Upstream {
    /// The upstream `serve`'s flags name (`--upstream-url`, or a command after `--`), started,
    /// with where it is for the spans of the calls to it; `None` for a document server.
    pub fn from_args(args: &ServeArgs) -> Result<Option<(Self, UpstreamPeer)>, String> {
        if args.upstream_url.is_none() && !args.upstream_headers.is_empty() {
            return Err("--upstream-header is for an --upstream-url: a stdio upstream is a child process, and a document server has no upstream".into());
        }
        if args.upstream_url.is_none() && args.upstream_oauth_token_url.is_some() {
            return Err("--upstream-oauth-token-url is for an --upstream-url: a stdio upstream is a child process, and a document server has no upstream".into());
        }
        if args.upstream_url.is_none() && args.upstream_command.is_empty() && args.upstream_socket.is_none() {
            return Ok(None);
        }
        if args.upstream_timeout >= args.request_timeout {
            return Err(format!(
                "--upstream-timeout ({} s) must be shorter than --request-timeout ({} s), so that a slow upstream is answered 504 and cancelled",
                args.upstream_timeout.as_secs(),
                args.request_timeout.as_secs()
            ));
        }
        // The upstream's messages are bounded like the callers' requests.
        let max_message_bytes = args.max_body_bytes.max(MIN_MESSAGE_BYTES);
        if let Some(url) = &args.upstream_url {
            let oauth = oauth(args, url)?.map(|c| Arc::new(TokenSource::new(c)));
            // A backstop only: each request's own deadline (`--upstream-timeout`, answered 504
            // `UPSTREAM_TIMEOUT`) comes first.
            let client = crate::auth::cluster_issuer::http_client_builder()
                .timeout(args.upstream_timeout + Duration::from_secs(5))
                .build()
                .map_err(|error| format!("cannot build the HTTP client: {error}"))?;
            let config = HttpConfig {
                url: url.clone(),
                max_message_bytes,
                start_timeout: START_TIMEOUT,
                backoff: Backoff::default(),
                refresh: HTTP_REFRESH,
                credentials: Arc::new(Credentials::load(args.upstream_headers.clone())?),
            };
            return Ok(Some((
                Self::Http(HttpKeeper::start(client, config, oauth)),
                UpstreamPeer::http(url),
            )));
        }
        let (source, peer) = match &args.upstream_socket {
            Some(path) => (StdioSource::Socket(path.clone()), UpstreamPeer::unix_socket()),
            None => (
                StdioSource::Command {
                    argv: args.upstream_command.clone(),
                    env: Vec::new(),
                },
                UpstreamPeer::child_process(),
            ),
        };
        let upstream = Self::Stdio(Supervisor::start(StdioConfig {
            source,
            max_message_bytes,
            start_timeout: START_TIMEOUT,
            backoff: Backoff::default(),
        }));
        Ok(Some((upstream, peer)))
    }

    /// Sends request `method`, waiting at most `timeout` for the answer; fails at once when the
    /// upstream is not ready.
    pub async fn request(
        &self,
        method: &str,
        params: Option<Value>,
        timeout: Duration,
    ) -> Result<Value, UpstreamError> {
        match self {
            Self::Stdio(supervisor) => supervisor.request(method, params, timeout).await,
            Self::Http(keeper) => keeper.request(method, params, timeout).await,
        }
    }

    /// Whether the upstream offered `capability` (`prompts`, `resources`) in its last handshake.
    pub fn offers(&self, capability: &str) -> bool {
        match self {
            Self::Stdio(supervisor) => supervisor.live().is_some_and(|live| live.handshake.offers(capability)),
            Self::Http(keeper) => keeper
                .shared
                .handshake
                .load()
                .as_ref()
                .is_some_and(|handshake| handshake.offers(capability)),
        }
    }

    /// The tools as last listed; `None` before the upstream was first ready, and while a stdio
    /// upstream is being restarted.
    pub fn tools(&self) -> Option<Tools> {
        match self {
            Self::Stdio(supervisor) => supervisor.live().map(|live| live.tools()),
            Self::Http(keeper) => keeper.shared.tools.load_full(),
        }
    }

    /// Whether the upstream has completed its start (handshake and tool list) at least once.
    pub fn ever_ready(&self) -> bool {
        match self {
            Self::Stdio(supervisor) => supervisor.ever_ready(),
            // Once ready, an HTTP upstream stays ready: its failures are per request.
            Self::Http(keeper) => *keeper.shared.state.borrow() == UpstreamState::Ready,
        }
    }

    /// Where the upstream is, now and as it changes.
    pub fn state(&self) -> watch::Receiver<UpstreamState> {
        match self {
            Self::Stdio(supervisor) => supervisor.state(),
            Self::Http(keeper) => keeper.shared.state.subscribe(),
        }
    }
}

/// One Streamable HTTP upstream with Palisade's session open; stopped when dropped.
pub struct HttpKeeper {
    shared: Arc<HttpShared>,
    task: JoinHandle<()>,
}

struct HttpShared {
    upstream: HttpUpstream,
    tools: ArcSwapOption<Vec<Map<String, Value>>>,
    /// The last handshake.
    handshake: ArcSwapOption<Handshake>,
    state: watch::Sender<UpstreamState>,
}

impl HttpKeeper {
    /// Starts opening a session with `config.url` through `client` (its TLS roots and redirect
    /// policy apply).
    pub fn start(client: reqwest::Client, config: HttpConfig, oauth: Option<Arc<TokenSource>>) -> Self {
        let mut upstream = HttpUpstream::new(client, &config.url, config.max_message_bytes)
            .with_credentials(config.credentials.clone());
        if let Some(oauth) = oauth {
            upstream = upstream.with_oauth(oauth);
        }
        let shared = Arc::new(HttpShared {
            upstream,
            tools: ArcSwapOption::empty(),
            handshake: ArcSwapOption::empty(),
            state: watch::channel(UpstreamState::Starting).0,
        });
        let task = tokio::spawn(keep(config, shared.clone()));
        Self { shared, task }
    }

    async fn request(&self, method: &str, params: Option<Value>, timeout: Duration) -> Result<Value, UpstreamError> {
        if let UpstreamState::Starting | UpstreamState::Restarting { .. } = &*self.shared.state.borrow() {
            return Err(UpstreamError::Unavailable(
                "the upstream has not completed its first handshake".into(),
            ));
        }
        self.shared.upstream.request(method, params, timeout).await
    }
}

impl Drop for HttpKeeper {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The handshake and the tool list (`None` when the upstream offers no tools).
async fn open(
    config: &HttpConfig,
    upstream: &HttpUpstream,
) -> Result<(Handshake, Option<Vec<Map<String, Value>>>), UpstreamError> {
    let handshake = upstream.initialize(config.start_timeout).await?;
    if !handshake.offers("tools") {
        return Ok((handshake, None));
    }
    let tools = list_tools(upstream, config.start_timeout).await?;
    Ok((handshake, Some(tools)))
}

async fn keep(config: HttpConfig, shared: Arc<HttpShared>) {
    let mut attempt: u32 = 0;
    let offers_tools = loop {
        match open(&config, &shared.upstream).await {
            Ok((handshake, tools)) => {
                shared.handshake.store(Some(Arc::new(handshake)));
                let offers_tools = tools.is_some();
                let tools = tools.unwrap_or_default();
                tracing::info!(url = %config.url, tools = tools.len(), "upstream ready");
                shared.tools.store(Some(Arc::new(tools)));
                shared.state.send_replace(UpstreamState::Ready);
                break offers_tools;
            }
            Err(reason) => {
                let after = config.backoff.delay(attempt);
                attempt = attempt.saturating_add(1);
                tracing::warn!(url = %config.url, error = %reason, attempt, after_seconds = after.as_secs_f64(),
                    "upstream not reachable; trying again");
                shared
                    .state
                    .send_replace(UpstreamState::Restarting { attempt, after, reason });
                tokio::time::sleep(after).await;
            }
        }
    };
    if !offers_tools {
        return;
    }
    loop {
        tokio::time::sleep(config.refresh).await;
        match list_tools(&shared.upstream, config.start_timeout).await {
            Ok(tools) => shared.tools.store(Some(Arc::new(tools))),
            Err(error) => {
                tracing::warn!(url = %config.url, %error, "upstream tools could not be listed again; the last list stays");
            }
        }
    }
}

/// Keeps `palisade_upstream_ready` and `palisade_upstream_restarts_total` up to date with
/// `state`, until the upstream is dropped.
pub async fn report_state(mut state: watch::Receiver<UpstreamState>, metrics: Arc<Metrics>) {
    loop {
        let restarting = matches!(*state.borrow_and_update(), UpstreamState::Restarting { .. });
        let ready = matches!(*state.borrow(), UpstreamState::Ready);
        metrics.upstream_ready.set(i64::from(ready));
        if restarting {
            metrics.upstream_restarts.inc();
        }
        if state.changed().await.is_err() {
            return;
        }
    }
}
