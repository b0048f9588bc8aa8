//! Keeps one stdio upstream running: starts it, completes the handshake and reads its tools, and
//! when it exits (or never gets that far) starts it again after a back-off.
//!
//! - Back-off: [`Backoff::delay`] — 0.5 s, doubled after each failed start, at most 30 s; a
//!   process that ran for [`Backoff::healthy_after`] (60 s) starts the count again.
//! - While no process is ready, requests fail at once with [`UpstreamError::Unavailable`]
//!   naming the state ("starting", "restarting in 2 s after: ..."): callers never queue behind a
//!   crash loop.
//! - A request holds the process it was sent to: a restart does not cut answers in flight short
//!   more than the crash itself did.
//!
//! - The tool list is read at each start and again whenever the process says it changed
//!   (`notifications/tools/list_changed`); a list that cannot be read then keeps the last one.
//!
//! A process that hangs without exiting is not detected here (its requests time out).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, ArcSwapOption};
use serde_json::{Map, Value};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

use super::UpstreamError;
use super::handshake::{Handshake, initialize, list_tools};
use super::stdio::StdioUpstream;

/// How restarts are spaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The wait before the first restart.
    pub first: Duration,
    /// The longest wait.
    pub max: Duration,
    /// A process that ran this long resets the count.
    pub healthy_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            first: Duration::from_millis(500),
            max: Duration::from_secs(30),
            healthy_after: Duration::from_secs(60),
        }
    }
}

impl Backoff {
    /// The wait before restart number `attempt` (0 for the first).
    pub fn delay(&self, attempt: u32) -> Duration {
        self.first
            .checked_mul(1u32.checked_shl(attempt).unwrap_or(u32::MAX))
            .map_or(self.max, |d| d.min(self.max))
    }
}

/// Where a stdio upstream comes from.
#[derive(Debug, Clone)]
pub enum StdioSource {
    /// A child process the server starts.
    Command {
        /// Program and arguments.
        argv: Vec<String>,
        /// Variables added to the inherited environment.
        env: Vec<(String, String)>,
    },
    /// A Unix socket served by `palisade-stdio-shim` (the upstream in a container of its own):
    /// each connection is a new process.
    Socket(std::path::PathBuf),
}

/// What the supervisor runs and how.
#[derive(Debug, Clone)]
pub struct StdioConfig {
    /// The upstream.
    pub source: StdioSource,
    /// Longest message taken from the upstream.
    pub max_message_bytes: usize,
    /// Time for each request of the start: the handshake and each page of the tool list.
    pub start_timeout: Duration,
    /// Restart spacing.
    pub backoff: Backoff,
}

/// Where the upstream is.
#[derive(Debug, Clone, PartialEq)]
pub enum UpstreamState {
    /// The first start is under way.
    Starting,
    /// A process is ready.
    Ready,
    /// The last process ended (or did not start): the next start is `after` from then.
    Restarting {
        /// Restarts since the last healthy run.
        attempt: u32,
        /// The wait.
        after: Duration,
        /// Why the last process ended.
        reason: UpstreamError,
    },
}

/// A process that completed its start.
pub struct Live {
    /// The process.
    pub process: StdioUpstream,
    /// Its handshake.
    pub handshake: Handshake,
    /// Its tools, as last listed.
    tools: ArcSwap<Vec<Map<String, Value>>>,
}

impl Live {
    /// Its tools, as last listed (at the start, or after it said they changed).
    pub fn tools(&self) -> Arc<Vec<Map<String, Value>>> {
        self.tools.load_full()
    }
}

/// The running supervision; stopped (and the process with it) when dropped.
pub struct Supervisor {
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

struct Shared {
    live: ArcSwapOption<Live>,
    state: watch::Sender<UpstreamState>,
    restarts: AtomicU64,
    ever_ready: AtomicBool,
}

impl Supervisor {
    /// Starts supervising `config`'s command.
    pub fn start(config: StdioConfig) -> Self {
        let shared = Arc::new(Shared {
            live: ArcSwapOption::empty(),
            state: watch::channel(UpstreamState::Starting).0,
            restarts: AtomicU64::new(0),
            ever_ready: AtomicBool::new(false),
        });
        let task = tokio::spawn(supervise(config, shared.clone()));
        Self { shared, task }
    }

    /// The ready process, if there is one.
    pub fn live(&self) -> Option<Arc<Live>> {
        self.shared.live.load_full()
    }

    /// The state, now and as it changes.
    pub fn state(&self) -> watch::Receiver<UpstreamState> {
        self.shared.state.subscribe()
    }

    /// Whether a process has completed its start at least once.
    pub fn ever_ready(&self) -> bool {
        self.shared.ever_ready.load(Ordering::Relaxed)
    }

    /// Processes started again since the supervisor began.
    pub fn restarts(&self) -> u64 {
        self.shared.restarts.load(Ordering::Relaxed)
    }

    /// Sends `method` to the ready process, or fails at once saying why there is none.
    pub async fn request(
        &self,
        method: &str,
        params: Option<Value>,
        timeout: Duration,
    ) -> Result<Value, UpstreamError> {
        let Some(live) = self.live() else {
            let why = match &*self.shared.state.borrow() {
                UpstreamState::Starting | UpstreamState::Ready => "the upstream is starting".to_owned(),
                UpstreamState::Restarting { after, reason, .. } => {
                    format!(
                        "the upstream is restarting (in {} s) after: {reason}",
                        after.as_secs_f64()
                    )
                }
            };
            return Err(UpstreamError::Unavailable(why));
        };
        live.process.connection().request(method, params, timeout).await
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.task.abort();
        self.shared.live.store(None);
    }
}

/// Starts the process and completes its start; with the notifications it sent from the first.
async fn start(config: &StdioConfig) -> Result<(Live, broadcast::Receiver<String>), UpstreamError> {
    let process = match &config.source {
        StdioSource::Command { argv, env } => StdioUpstream::spawn(argv, env, config.max_message_bytes)
            .map_err(|error| UpstreamError::Unavailable(format!("cannot start {:?}: {error}", argv[0])))?,
        StdioSource::Socket(path) => StdioUpstream::connect(path, config.max_message_bytes)
            .await
            .map_err(|error| {
                UpstreamError::Unavailable(format!(
                    "cannot connect to the upstream socket {}: {error}",
                    path.display()
                ))
            })?,
    };
    // Subscribed before the handshake: a list_changed sent right after it is not missed.
    let notifications = process.connection().notifications();
    let handshake = initialize(process.connection(), config.start_timeout).await?;
    let tools = if handshake.offers("tools") {
        list_tools(process.connection(), config.start_timeout).await?
    } else {
        Vec::new()
    };
    let live = Live {
        process,
        handshake,
        tools: ArcSwap::from_pointee(tools),
    };
    Ok((live, notifications))
}

/// Serves `live` until its connection ends, listing its tools again each time it says they
/// changed; the reason it ended.
async fn run(live: &Live, mut notifications: broadcast::Receiver<String>, timeout: Duration) -> UpstreamError {
    let connection = live.process.connection();
    loop {
        let changed = tokio::select! {
            reason = connection.ended() => return reason,
            notification = notifications.recv() => match notification {
                Ok(method) => method == "notifications/tools/list_changed",
                // Notifications were dropped: one of them may have been a change.
                Err(broadcast::error::RecvError::Lagged(_)) => true,
                Err(broadcast::error::RecvError::Closed) => return connection.ended().await,
            },
        };
        if !changed || !live.handshake.offers("tools") {
            continue;
        }
        match list_tools(connection, timeout).await {
            Ok(tools) => {
                tracing::info!(tools = tools.len(), "upstream tools listed again after list_changed");
                live.tools.store(Arc::new(tools));
            }
            Err(error) => tracing::warn!(%error, "upstream tools could not be listed again; the last list stays"),
        }
    }
}

async fn supervise(config: StdioConfig, shared: Arc<Shared>) {
    let mut attempt: u32 = 0;
    loop {
        let reason = match start(&config).await {
            Ok((live, notifications)) => {
                let live = Arc::new(live);
                tracing::info!(
                    server = %live.handshake.server_name,
                    protocol = %live.handshake.protocol_version,
                    tools = live.tools().len(),
                    "upstream ready"
                );
                shared.live.store(Some(live.clone()));
                shared.ever_ready.store(true, Ordering::Relaxed);
                shared.state.send_replace(UpstreamState::Ready);
                let began = Instant::now();
                let reason = run(&live, notifications, config.start_timeout).await;
                shared.live.store(None);
                if began.elapsed() >= config.backoff.healthy_after {
                    attempt = 0;
                }
                reason
            }
            Err(reason) => reason,
        };
        let after = config.backoff.delay(attempt);
        attempt = attempt.saturating_add(1);
        shared.restarts.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(error = %reason, attempt, after_seconds = after.as_secs_f64(), "upstream ended; restarting");
        shared
            .state
            .send_replace(UpstreamState::Restarting { attempt, after, reason });
        tokio::time::sleep(after).await;
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn restarts_back_off_to_the_maximum() {
        let backoff = Backoff::default();
        let delays: Vec<f64> = (0..9).map(|n| backoff.delay(n).as_secs_f64()).collect();
        assert_eq!(delays, [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]);
        assert_eq!(backoff.delay(u32::MAX), backoff.max);
    }

    /// A minimal MCP server in sh: it answers the handshake and the tool list with Palisade's
    /// known ids (1 and 2), then does `then`.
    fn fake(then: &str) -> StdioConfig {
        let script = format!(
            r#"read init
echo '{{"jsonrpc":"2.0","id":1,"result":{{"protocolVersion":"2025-11-25","capabilities":{{"tools":{{}}}},"serverInfo":{{"name":"fake","version":"1"}}}}}}'
read initialized
read list
echo '{{"jsonrpc":"2.0","id":2,"result":{{"tools":[{{"name":"echo","inputSchema":{{"type":"object"}}}}]}}}}'
{then}"#
        );
        StdioConfig {
            source: StdioSource::Command {
                argv: vec!["/bin/sh".into(), "-c".into(), script],
                env: Vec::new(),
            },
            max_message_bytes: 4096,
            start_timeout: Duration::from_secs(5),
            backoff: Backoff {
                first: Duration::from_millis(50),
                max: Duration::from_millis(200),
                healthy_after: Duration::from_secs(60),
            },
        }
    }

    async fn wait_until(
        state: &mut watch::Receiver<UpstreamState>,
        what: impl Fn(&UpstreamState) -> bool,
    ) -> UpstreamState {
        tokio::time::timeout(Duration::from_secs(10), state.wait_for(|s| what(s)))
            .await
            .expect("in time")
            .expect("the supervisor runs")
            .clone()
    }

    #[tokio::test]
    async fn a_ready_upstream_has_its_handshake_and_tools() {
        let supervisor = Supervisor::start(fake("sleep 30"));
        wait_until(&mut supervisor.state(), |s| *s == UpstreamState::Ready).await;
        let live = supervisor.live().expect("live");
        assert_eq!(live.handshake.server_name, "fake");
        assert_eq!(
            *live.tools(),
            [json!({"name": "echo", "inputSchema": {"type": "object"}})
                .as_object()
                .unwrap()
                .clone()]
        );
        assert_eq!(supervisor.restarts(), 0);
    }

    #[tokio::test]
    async fn the_tools_are_listed_again_when_the_upstream_says_they_changed() {
        let supervisor = Supervisor::start(fake(
            r#"echo '{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}'
read again
echo '{"jsonrpc":"2.0","id":3,"result":{"tools":[{"name":"echo","inputSchema":{"type":"object"}},{"name":"add","inputSchema":{"type":"object"}}]}}'
sleep 30"#,
        ));
        wait_until(&mut supervisor.state(), |s| *s == UpstreamState::Ready).await;
        let live = supervisor.live().expect("live");
        let names = || -> Vec<String> {
            live.tools()
                .iter()
                .map(|t| t["name"].as_str().unwrap().to_owned())
                .collect()
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while names().len() < 2 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(names(), ["echo", "add"]);
    }

    #[tokio::test]
    async fn an_upstream_that_exits_is_restarted_with_back_off_and_requests_say_why_meanwhile() {
        let mut config = fake("exit 0");
        // The wait before the restart is long enough to see.
        config.backoff.first = Duration::from_millis(300);
        config.backoff.max = Duration::from_millis(300);
        let supervisor = Supervisor::start(config);
        let mut state = supervisor.state();
        let restarting = wait_until(&mut state, |s| matches!(s, UpstreamState::Restarting { .. })).await;
        assert_eq!(
            restarting,
            UpstreamState::Restarting {
                attempt: 1,
                after: Duration::from_millis(300),
                reason: UpstreamError::Unavailable("the upstream closed its output".into()),
            }
        );
        let refused = supervisor
            .request("tools/list", None, Duration::from_secs(1))
            .await
            .unwrap_err();
        assert_eq!(
            refused,
            UpstreamError::Unavailable(
                "the upstream is restarting (in 0.3 s) after: the upstream is unavailable: the upstream closed its output"
                    .into()
            )
        );
        // It comes back, and ends again: the count goes on.
        wait_until(&mut state, |s| {
            matches!(s, UpstreamState::Restarting { attempt: 2, .. })
        })
        .await;
        assert!(supervisor.restarts() >= 2);
    }

    /// Why the first process of `argv` ended, as the supervisor reports it.
    async fn first_restart_reason(argv: Vec<String>) -> UpstreamError {
        first_restart_reason_of(StdioSource::Command { argv, env: Vec::new() }).await
    }

    /// Why the first start from `source` ended, as the supervisor reports it.
    async fn first_restart_reason_of(source: StdioSource) -> UpstreamError {
        let mut config = fake("");
        config.source = source;
        let supervisor = Supervisor::start(config);
        let state = wait_until(&mut supervisor.state(), |s| {
            matches!(s, UpstreamState::Restarting { .. })
        })
        .await;
        assert!(supervisor.live().is_none());
        match state {
            UpstreamState::Restarting { reason, .. } => reason,
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_socket_nobody_listens_on_is_tried_again_with_the_reason() {
        let dir = std::env::temp_dir().join(format!("palisade-no-shim-{}", std::process::id()));
        let socket = dir.join("stdio.sock");
        assert_eq!(
            first_restart_reason_of(StdioSource::Socket(socket.clone())).await,
            UpstreamError::Unavailable(format!(
                "cannot connect to the upstream socket {}: No such file or directory (os error 2)",
                socket.display()
            ))
        );
    }

    #[tokio::test]
    async fn an_upstream_that_breaks_the_handshake_is_restarted_with_the_reason() {
        let argv = [
            "/bin/sh",
            "-c",
            "read init; echo 'Starting the server on stdio'; sleep 30",
        ];
        assert_eq!(
            first_restart_reason(argv.map(String::from).to_vec()).await,
            UpstreamError::Invalid("a line that is not JSON (expected value at line 1 column 1)".into())
        );
    }

    #[tokio::test]
    async fn a_command_that_cannot_start_is_retried() {
        assert_eq!(
            first_restart_reason(vec!["/nonexistent/mcp-server".into()]).await,
            UpstreamError::Unavailable(
                "cannot start \"/nonexistent/mcp-server\": No such file or directory (os error 2)".into()
            )
        );
    }
}
