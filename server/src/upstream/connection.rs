//! JSON-RPC 2.0 over a byte stream, one message per line: the MCP stdio transport's framing
//! (messages are delimited by newlines and contain none), used for a child's stdin/stdout.
//!
//! - Request ids are Palisade's own, increasing from 1: callers' ids are not unique across the
//!   stateless clients the proxy serves, so they never reach the upstream.
//! - Each request waits at most its timeout. A request that times out, or whose caller goes
//!   away, is forgotten and the upstream is told with `notifications/cancelled`; a late answer
//!   is dropped.
//! - A line longer than the connection's limit, a line that is not a JSON-RPC message, or an
//!   answer with a malformed error closes the connection: the stream can no longer be trusted to
//!   be in step. Every waiting request then fails with [`UpstreamError::Invalid`]; a stream that
//!   ends or cannot be written fails them with [`UpstreamError::Unavailable`]. A closed
//!   connection stays closed ([`Connection::closed`] says why); the owner starts a new one.
//! - Requests from the upstream to the client (`sampling/createMessage`, `roots/list`,
//!   `elicitation/create`, ...) are answered -32601 at once: Palisade declares no client
//!   capabilities, so a conforming server does not send them.
//! - Notifications from the upstream are passed to subscribers by method name
//!   ([`Connection::notifications`]), e.g. `notifications/tools/list_changed`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::UpstreamError;

/// Lines waiting to be written to the upstream.
const OUTGOING_CAPACITY: usize = 256;
/// Notification method names kept for slow subscribers.
const NOTIFICATION_CAPACITY: usize = 64;

type Answer = Result<Value, UpstreamError>;

/// One JSON-RPC conversation with an upstream over a byte stream.
pub struct Connection {
    outgoing: mpsc::Sender<Vec<u8>>,
    shared: Arc<Shared>,
    notifications: broadcast::Sender<String>,
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
}

struct Shared {
    next_id: AtomicU64,
    state: Mutex<State>,
    /// Becomes true when the connection ends.
    ended: watch::Sender<bool>,
}

#[derive(Default)]
struct State {
    pending: HashMap<u64, oneshot::Sender<Answer>>,
    /// Why the connection ended, once it has.
    closed: Option<UpstreamError>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Ends the connection (the first reason wins; logged when `log`) and fails every waiting
    /// request with it.
    fn close(&self, reason: UpstreamError, log: bool) {
        let (reason, pending) = {
            let mut state = self.lock();
            if state.closed.is_none() {
                if log {
                    tracing::warn!(error = %reason, "upstream connection closed");
                }
                state.closed = Some(reason);
            }
            (
                state.closed.clone().expect("just set"),
                std::mem::take(&mut state.pending),
            )
        };
        for (_, waiter) in pending {
            let _ = waiter.send(Err(reason.clone()));
        }
        self.ended.send_replace(true);
    }

    fn answer(&self, id: u64, answer: Answer) {
        let waiter = self.lock().pending.remove(&id);
        match waiter {
            Some(waiter) => {
                let _ = waiter.send(answer);
            }
            None => tracing::debug!(id, "an upstream answer nobody waits for (timed out or cancelled)"),
        }
    }
}

impl Connection {
    /// Starts the conversation: a task reads `reader` (lines of at most `max_message_bytes`), a
    /// task writes `writer`.
    pub fn start<R, W>(reader: R, writer: W, max_message_bytes: usize) -> Self
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let shared = Arc::new(Shared {
            next_id: AtomicU64::new(1),
            state: Mutex::new(State::default()),
            ended: watch::channel(false).0,
        });
        let (outgoing, lines) = mpsc::channel(OUTGOING_CAPACITY);
        let (notifications, _) = broadcast::channel(NOTIFICATION_CAPACITY);
        let writer = tokio::spawn(write_lines(writer, lines, shared.clone()));
        let reader = tokio::spawn(read_lines(
            BufReader::new(reader),
            max_message_bytes,
            shared.clone(),
            outgoing.clone(),
            notifications.clone(),
        ));
        Self {
            outgoing,
            shared,
            notifications,
            reader,
            writer,
        }
    }

    /// Sends request `method` and waits at most `timeout` for its answer.
    pub async fn request(&self, method: &str, params: Option<Value>, timeout: Duration) -> Answer {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let (waiter, answer) = oneshot::channel();
        {
            let mut state = self.shared.lock();
            if let Some(reason) = &state.closed {
                return Err(reason.clone());
            }
            state.pending.insert(id, waiter);
        }
        // From here on, a request that ends without its answer is cancelled upstream.
        let mut guard = Waiting {
            id,
            connection: self,
            sent: false,
            answered: false,
        };
        let line = message(json!({"jsonrpc": "2.0", "id": id, "method": method}), params);
        let sent = tokio::time::timeout(timeout, self.outgoing.send(line)).await;
        match sent {
            Err(_) => return Err(UpstreamError::Timeout(timeout)),
            Ok(Err(_)) => return Err(self.closed().unwrap_or_else(|| unavailable("the writer stopped"))),
            Ok(Ok(())) => guard.sent = true,
        }
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(answer)) => {
                guard.answered = true;
                answer
            }
            Ok(Err(_)) => {
                guard.answered = true;
                Err(self.closed().unwrap_or_else(|| unavailable("the connection ended")))
            }
            Err(_) => Err(UpstreamError::Timeout(timeout)),
        }
    }

    /// Sends notification `method` (no answer).
    pub async fn notify(&self, method: &str, params: Option<Value>) -> Result<(), UpstreamError> {
        if let Some(reason) = self.closed() {
            return Err(reason);
        }
        let line = message(json!({"jsonrpc": "2.0", "method": method}), params);
        self.outgoing
            .send(line)
            .await
            .map_err(|_| self.closed().unwrap_or_else(|| unavailable("the writer stopped")))
    }

    /// Why the connection ended, if it has.
    pub fn closed(&self) -> Option<UpstreamError> {
        self.shared.lock().closed.clone()
    }

    /// Resolves once the connection has ended, with the reason.
    pub async fn ended(&self) -> UpstreamError {
        let mut ended = self.shared.ended.subscribe();
        // The sender lives in `shared`, which outlives this borrow: waiting cannot fail.
        let _ = ended.wait_for(|ended| *ended).await;
        self.closed().unwrap_or_else(|| unavailable("the connection ended"))
    }

    /// Method names of the notifications the upstream sends from now on.
    pub fn notifications(&self) -> broadcast::Receiver<String> {
        self.notifications.subscribe()
    }

    /// Requests sent and not answered yet.
    pub fn pending(&self) -> usize {
        self.shared.lock().pending.len()
    }

    /// Forgets request `id` and tells the upstream it is cancelled.
    fn cancel(&self, id: u64) {
        if self.shared.lock().pending.remove(&id).is_none() {
            return;
        }
        let params = json!({"requestId": id, "reason": "the client's request ended (timeout or disconnect)"});
        let line = message(
            json!({"jsonrpc": "2.0", "method": "notifications/cancelled"}),
            Some(params),
        );
        // Best effort: a full queue means the upstream is not reading anyway.
        let _ = self.outgoing.try_send(line);
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.reader.abort();
        self.writer.abort();
        self.shared.close(unavailable("the connection was dropped"), false);
    }
}

/// A request in flight: forgotten if it ends without its answer, and cancelled upstream if it
/// was sent.
struct Waiting<'c> {
    id: u64,
    connection: &'c Connection,
    sent: bool,
    answered: bool,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        if self.sent {
            self.connection.cancel(self.id);
        } else {
            self.connection.shared.lock().pending.remove(&self.id);
        }
    }
}

fn unavailable(why: &str) -> UpstreamError {
    UpstreamError::Unavailable(why.to_owned())
}

/// `head` with `params` (if any), serialized as one line.
fn message(mut head: Value, params: Option<Value>) -> Vec<u8> {
    if let (Some(params), Some(object)) = (params, head.as_object_mut()) {
        object.insert("params".into(), params);
    }
    let mut line = serde_json::to_vec(&head).expect("a JSON value serializes");
    line.push(b'\n');
    line
}

async fn write_lines<W>(mut writer: W, mut lines: mpsc::Receiver<Vec<u8>>, shared: Arc<Shared>)
where
    W: AsyncWrite + Unpin,
{
    while let Some(line) = lines.recv().await {
        let written = async {
            writer.write_all(&line).await?;
            writer.flush().await
        };
        if let Err(error) = written.await {
            shared.close(unavailable(&format!("cannot write to the upstream: {error}")), true);
            return;
        }
    }
}

async fn read_lines<R>(
    mut reader: BufReader<R>,
    max_message_bytes: usize,
    shared: Arc<Shared>,
    outgoing: mpsc::Sender<Vec<u8>>,
    notifications: broadcast::Sender<String>,
) where
    R: AsyncRead + Unpin,
{
    let mut line = Vec::new();
    loop {
        line.clear();
        match read_bounded_line(&mut reader, &mut line, max_message_bytes).await {
            Ok(true) => {}
            Ok(false) => {
                shared.close(unavailable("the upstream closed its output"), true);
                return;
            }
            Err(ReadError::TooLong) => {
                shared.close(
                    UpstreamError::Invalid(format!("a message longer than {max_message_bytes} bytes")),
                    true,
                );
                return;
            }
            Err(ReadError::Io(error)) => {
                shared.close(unavailable(&format!("cannot read from the upstream: {error}")), true);
                return;
            }
        }
        let text = line.strip_suffix(b"\r").unwrap_or(&line);
        if text.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let handled = match serde_json::from_slice::<Value>(text) {
            Ok(Value::Object(object)) => handle(object, &shared, &outgoing, &notifications),
            Ok(_) => Err("a line that is not a JSON-RPC message object".to_owned()),
            Err(error) => Err(format!("a line that is not JSON ({error})")),
        };
        if let Err(why) = handled {
            shared.close(UpstreamError::Invalid(why), true);
            return;
        }
    }
}

/// Acts on one message from the upstream; `Err` is a protocol violation.
fn handle(
    object: Map<String, Value>,
    shared: &Shared,
    outgoing: &mpsc::Sender<Vec<u8>>,
    notifications: &broadcast::Sender<String>,
) -> Result<(), String> {
    if object.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err("a message without \"jsonrpc\": \"2.0\"".into());
    }
    match (object.get("method"), object.get("id")) {
        // A request to the client: refused, since no client capability was declared.
        (Some(Value::String(method)), Some(id)) => {
            let refusal = json!({
                "jsonrpc": "2.0",
                "id": id,
                "error": {"code": -32601, "message": format!("Method not found: {method} (the client declares no capabilities)")},
            });
            let _ = outgoing.try_send(message(refusal, None));
            Ok(())
        }
        (Some(Value::String(method)), None) => {
            let _ = notifications.send(method.clone());
            Ok(())
        }
        (Some(_), _) => Err("a message whose method is not a string".into()),
        (None, Some(id)) => {
            // An answer: to one of Palisade's own requests, or to nothing.
            let Some(id) = id.as_u64() else {
                tracing::debug!(%id, "an upstream answer to an id Palisade never sent");
                return Ok(());
            };
            shared.answer(id, super::outcome(&object)?);
            Ok(())
        }
        (None, None) => Err("a message with neither method nor id".into()),
    }
}

/// Why [`read_bounded_line`] stopped.
pub(super) enum ReadError {
    /// The line is longer than allowed (what was read of it is in the buffer).
    TooLong,
    /// The stream failed.
    Io(std::io::Error),
}

/// Reads one line (without its newline) into `line`, refusing more than `max` bytes. `false` at
/// the end of the stream (a last line without newline is still returned first).
pub(super) async fn read_bounded_line<R>(
    reader: &mut BufReader<R>,
    line: &mut Vec<u8>,
    max: usize,
) -> Result<bool, ReadError>
where
    R: AsyncRead + Unpin,
{
    loop {
        let available = reader.fill_buf().await.map_err(ReadError::Io)?;
        if available.is_empty() {
            return Ok(!line.is_empty());
        }
        let (taken, done) = match available.iter().position(|&b| b == b'\n') {
            Some(end) => (end, true),
            None => (available.len(), false),
        };
        if line.len() + taken > max {
            return Err(ReadError::TooLong);
        }
        line.extend_from_slice(&available[..taken]);
        reader.consume(if done { taken + 1 } else { taken });
        if done {
            return Ok(true);
        }
    }
}

#[cfg(test)]
mod tests;
