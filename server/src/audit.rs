//! The audit trail: one JSON line per authentication, authorization and request decision.
//!
//! What it does: [`AuditEvent`] is the record of one decision; [`AuditSink`] serializes it to a single line and
//! hands the line to a dedicated writer thread, which appends it to stdout, stderr or a file. In production the
//! audit stream goes to stdout as pure JSON lines (no log prefix) and the operational `tracing` logs go to stderr,
//! so the two can be shipped, retained and access-controlled separately.
//!
//! What it deliberately does not do:
//! - Record credentials. [`AuditEvent`] has no field that could hold a token, API key, HMAC key or any other
//!   secret, nor request arguments or document content; the subject, issuer and decision are enough to
//!   investigate. Values are JSON-escaped, so a subject containing a newline cannot forge a second line.
//! - Block the request path on I/O. [`AuditSink::emit`] only serializes and does a non-blocking send on a bounded
//!   channel (capacity [`CHANNEL_CAPACITY`]). **If the channel is full, the event is dropped and counted**
//!   ([`AuditSink::dropped`]) instead of waiting. A full channel means the writer is tens of thousands of lines
//!   behind, i.e. the sink (disk, stdout pipe, log agent) is stalled; blocking there would turn a stuck log
//!   shipper into an outage of every request and tie up async worker threads. Availability is preferred over
//!   audit completeness, and the loss is made visible instead: the counter, and a warning on the operational log
//!   at the 1st, 2nd, 4th, 8th, ... drop. Lines that the writer fails to write are counted the same way.
//! - Rotate or ship files. File mode only appends (creating the file with mode 0600 on unix); rotation and
//!   shipping belong to the platform.
//! - Panic. Serialization, send and write failures are counted and logged, never unwrapped.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// How many serialized lines may wait for the writer before [`AuditSink::emit`] starts dropping.
pub const CHANNEL_CAPACITY: usize = 16_384;

/// How long the writer gathers lines after writing a batch before it takes the next: at most
/// this much later on disk, and at most one wake-up of the writer per gather under load.
const GATHER: Duration = Duration::from_millis(1);

/// A batch is written out once it reaches this size even if more lines are waiting.
const MAX_BATCH_BYTES: usize = 256 * 1024;

/// What an audit event records a decision about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditKind {
    Authentication,
    Authorization,
    Request,
}

/// One audited decision. Field names are snake_case; `None` and empty fields are left out of the JSON line.
#[derive(Clone, Debug, Serialize)]
pub struct AuditEvent<'a> {
    /// Random 128-bit id, 32 lower-case hex digits.
    pub event_id: String,
    pub request_id: &'a str,
    /// RFC 3339, UTC, milliseconds: `2026-11-22T01:02:03.456Z`.
    pub time: String,
    pub kind: AuditKind,
    /// `allow`, `deny`, `would_deny`, `success` or `failure`.
    pub decision: &'a str,
    /// Stable code, e.g. `ok`, `token_expired`, `missing_scopes`.
    pub reason: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_method: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_address: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mcp_method: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt: Option<&'a str>,
    /// The rule pattern that decided.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<&'a str>,
    /// Role names, or `token` for scopes the token carried itself.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub granted_by: Vec<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing_scopes: Vec<&'a str>,
    /// For `argument_denied`: the argument (by name; its value is never written) that failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub argument: Option<&'a str>,
    /// For `argument_denied`: the constraint it failed (`glob`, `in`, `regex`, `prefix`, `min`,
    /// `max`, `maxLength`, `required`, `type`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub constraint: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_hash: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_us: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    /// Proxy mode: how the request forwarded to the upstream went (`ok`, `error`, `unavailable`,
    /// `timeout`, `invalid`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<&'a str>,
    /// Proxy mode: how long the upstream took, in microseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_us: Option<u64>,
    /// With trace export on and the request's trace recorded (sampled): the W3C trace id (32
    /// hex digits) of the request's span, so that an audit line and its trace find each other.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "trace_id_hex")]
    pub trace_id: Option<opentelemetry::trace::TraceId>,
    /// With trace export on: the request span's id (16 hex digits).
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "span_id_hex")]
    pub span_id: Option<opentelemetry::trace::SpanId>,
}

impl<'a> AuditEvent<'a> {
    /// A new event with a fresh random id and the current time; the optional fields are empty, set them directly.
    pub fn new(request_id: &'a str, kind: AuditKind, decision: &'a str, reason: &'a str) -> Self {
        Self::with_id_and_time(
            random_id(),
            rfc3339_millis(SystemTime::now()),
            request_id,
            kind,
            decision,
            reason,
        )
    }

    /// Like [`AuditEvent::new`] with a given id and time (deterministic output for tests).
    pub fn with_id_and_time(
        event_id: String,
        time: String,
        request_id: &'a str,
        kind: AuditKind,
        decision: &'a str,
        reason: &'a str,
    ) -> Self {
        Self {
            event_id,
            request_id,
            time,
            kind,
            decision,
            reason,
            subject: None,
            issuer: None,
            auth_method: None,
            client_address: None,
            mcp_method: None,
            tool: None,
            resource: None,
            prompt: None,
            rule: None,
            granted_by: Vec::new(),
            missing_scopes: Vec::new(),
            argument: None,
            constraint: None,
            policy_hash: None,
            duration_us: None,
            http_status: None,
            upstream: None,
            upstream_us: None,
            trace_id: None,
            span_id: None,
        }
    }
}

fn trace_id_hex<S: serde::Serializer>(
    id: &Option<opentelemetry::trace::TraceId>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    id_hex(id.map(|id| id.to_bytes()), serializer)
}

fn span_id_hex<S: serde::Serializer>(
    id: &Option<opentelemetry::trace::SpanId>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    id_hex(id.map(|id| id.to_bytes()), serializer)
}

/// A W3C id (16 or 8 bytes) as lower-case hex, or none.
fn id_hex<S: serde::Serializer, const N: usize>(bytes: Option<[u8; N]>, serializer: S) -> Result<S::Ok, S::Error> {
    match bytes {
        Some(bytes) => serializer.serialize_str(hex(&bytes, &mut [0; 32][..2 * N])),
        None => serializer.serialize_none(),
    }
}

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// `bytes` as lower-case hex in `out` (twice as long), with a table: `format!("{:x}")` through
/// the serializer's escaping writer costs about a thousand instructions per event more.
fn hex<'o>(bytes: &[u8], out: &'o mut [u8]) -> &'o str {
    for (byte, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = HEX_DIGITS[usize::from(byte >> 4)];
        pair[1] = HEX_DIGITS[usize::from(byte & 0x0f)];
    }
    std::str::from_utf8(out).unwrap_or_default()
}

/// A random 128-bit id as 32 lower-case hex digits.
/// 128 random bits as 32 lower-case hex digits: the id of an audit event or of a request that
/// brought none. Written with a table; `hex::encode`'s iterator chain costs several times more,
/// and this runs up to three times per request.
pub fn random_id() -> String {
    hex(&rand::random::<[u8; 16]>(), &mut [0; 32]).to_owned()
}

/// Room for a typical audit line, so that serializing one does not reallocate.
const LINE_CAPACITY: usize = 768;

/// `time` as RFC 3339 in UTC with milliseconds. Times before 1970 (a broken clock) are written as the epoch.
fn rfc3339_millis(time: SystemTime) -> String {
    let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since_epoch.as_secs();
    let (year, month, day) = civil_from_days(secs / 86_400);
    let (hour, minute, second) = (secs % 86_400 / 3_600, secs % 3_600 / 60, secs % 60);
    let millis = u64::from(since_epoch.subsec_millis());
    // Written digit by digit: this runs twice per request, and `format!` costs ten times more.
    let mut text = String::with_capacity(24);
    // At least `width` digits, as `{value:0width$}` would write.
    let mut digits = |value: u64, width: u32, separator: Option<char>| {
        let width = width.max(value.checked_ilog10().unwrap_or(0) + 1);
        for position in (0..width).rev() {
            let digit = (value / 10u64.pow(position) % 10) as u8;
            text.push(char::from(b'0' + digit));
        }
        if let Some(separator) = separator {
            text.push(separator);
        }
    };
    digits(year, 4, Some('-'));
    digits(month, 2, Some('-'));
    digits(day, 2, Some('T'));
    digits(hour, 2, Some(':'));
    digits(minute, 2, Some(':'));
    digits(second, 2, Some('.'));
    digits(millis, 3, Some('Z'));
    text
}

/// Proleptic Gregorian (year, month, day) of a day count since 1970-01-01 (H. Hinnant's `civil_from_days`).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468; // days since 0000-03-01
    let era = z / 146_097;
    let doe = z % 146_097; // day of era, 0..=146096
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365; // year of era, 0..=399
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of year starting 1 March, 0..=365
    let mp = (5 * doy + 2) / 153; // month starting March, 0..=11
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = era * 400 + yoe + u64::from(month <= 2);
    (year, month, day)
}

/// Where audit lines go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuditSinkConfig {
    Stdout,
    Stderr,
    /// Appended to; created with mode 0600 on unix if missing.
    File(PathBuf),
}

enum Message {
    Line(Vec<u8>),
    /// Write out everything received so far, then answer.
    Flush(SyncSender<()>),
    /// Answer whether the batch that holds everything received so far was written, once it is
    /// (batched like lines: it does not force a write of its own).
    Confirm(tokio::sync::oneshot::Sender<bool>),
}

struct Inner {
    sender: SyncSender<Message>,
    dropped: Arc<AtomicU64>,
    /// Whether the last write succeeded (true until one fails).
    writing: Arc<AtomicBool>,
}

impl Drop for Inner {
    /// The last handle going away writes out what is still queued.
    fn drop(&mut self) {
        flush_through(&self.sender);
    }
}

/// Hands audit lines to the writer thread. Cheap to clone (one `Arc`), `Send + Sync`.
#[derive(Clone)]
pub struct AuditSink {
    inner: Arc<Inner>,
}

impl AuditSink {
    /// Opens the destination and starts the writer thread.
    pub fn new(config: AuditSinkConfig) -> io::Result<Self> {
        let writer: Box<dyn Write + Send> = match config {
            AuditSinkConfig::Stdout => Box::new(io::stdout()),
            AuditSinkConfig::Stderr => Box::new(io::stderr()),
            AuditSinkConfig::File(path) => Box::new(open_append(&path)?),
        };
        Self::with_writer(writer, CHANNEL_CAPACITY)
    }

    fn with_writer(writer: Box<dyn Write + Send>, capacity: usize) -> io::Result<Self> {
        let (sender, receiver) = mpsc::sync_channel(capacity);
        let dropped = Arc::new(AtomicU64::new(0));
        let writing = Arc::new(AtomicBool::new(true));
        let status = Status {
            dropped: Arc::clone(&dropped),
            writing: Arc::clone(&writing),
        };
        std::thread::Builder::new()
            .name("palisade-audit".into())
            .spawn(move || run_writer(receiver, writer, &status))?;
        Ok(Self {
            inner: Arc::new(Inner {
                sender,
                dropped,
                writing,
            }),
        })
    }

    /// Records `event`. Never blocks on I/O and never panics: when the writer is [`CHANNEL_CAPACITY`] lines
    /// behind, the event is dropped and counted (see the module docs for why).
    pub fn emit(&self, event: &AuditEvent<'_>) {
        let mut line = Vec::with_capacity(LINE_CAPACITY);
        match serde_json::to_writer(&mut line, event) {
            Ok(()) => {}
            Err(error) => {
                tracing::error!(%error, "audit event could not be serialized");
                self.count_dropped(1);
                return;
            }
        };
        line.push(b'\n');
        match self.inner.sender.try_send(Message::Line(line)) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.inner.writing.store(false, Ordering::Release);
                self.count_dropped(1);
            }
        }
    }

    /// Waits until every event emitted before this call (by any clone) has been written and flushed. For
    /// shutdown and tests; it blocks, so call it off the async request path.
    pub fn flush(&self) {
        flush_through(&self.inner.sender);
    }

    /// Whether the sink is writing: false from a failed write (or a full queue) until a write
    /// succeeds again. `--audit-required` refuses requests while it is false.
    pub fn healthy(&self) -> bool {
        self.inner.writing.load(Ordering::Acquire)
    }

    /// Resolves once every event emitted before this call is written: `true` if the write of the
    /// batch that held them succeeded, `false` if it failed or the queue is full. Confirmation
    /// does not force a write of its own: it rides with the lines of the batch. For
    /// `--audit-required`, together with [`AuditSink::dropped`] (a loss in an earlier batch).
    pub async fn confirm(&self) -> bool {
        let (sender, receiver) = tokio::sync::oneshot::channel();
        if self.inner.sender.try_send(Message::Confirm(sender)).is_err() {
            self.inner.writing.store(false, Ordering::Release);
            return false;
        }
        receiver.await.unwrap_or(false)
    }

    /// A sink writing to `writer`, for tests of what happens when the destination fails.
    pub fn to_writer(writer: Box<dyn Write + Send>) -> io::Result<Self> {
        Self::with_writer(writer, CHANNEL_CAPACITY)
    }

    /// How many events were lost so far: dropped because the channel was full, or not written because the
    /// destination failed.
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    fn count_dropped(&self, lines: u64) {
        record_drops(&self.inner.dropped, lines);
    }

    /// A sink that captures lines in memory, for tests (of this crate and of the end-to-end suite).
    pub fn memory() -> (Self, MemoryAudit) {
        let buffer = Arc::new(std::sync::Mutex::new(Vec::new()));
        let writer = SharedBuffer(Arc::clone(&buffer));
        let sink = Self::with_writer(Box::new(writer), CHANNEL_CAPACITY).expect("spawn audit writer thread");
        (sink.clone(), MemoryAudit { sink, buffer })
    }
}

/// Sends a flush marker (waiting for room in the channel) and waits for the writer to reach it.
fn flush_through(sender: &SyncSender<Message>) {
    let (ack_sender, ack_receiver) = mpsc::sync_channel(1);
    if sender.send(Message::Flush(ack_sender)).is_ok() {
        // An error means the writer thread is gone; there is nothing left to wait for.
        let _ = ack_receiver.recv();
    }
}

/// Adds `lines` to the drop counter, warning at the 1st, 2nd, 4th, 8th, ... loss so that a stalled sink is
/// visible in the operational log without flooding it.
fn record_drops(dropped: &AtomicU64, lines: u64) {
    let before = dropped.fetch_add(lines, Ordering::Relaxed);
    let after = before + lines;
    if (before + 1..=after).any(u64::is_power_of_two) {
        tracing::warn!(
            dropped = after,
            "audit events dropped: the audit sink is not keeping up or failing"
        );
    }
}

fn open_append(path: &std::path::Path) -> io::Result<std::fs::File> {
    let mut options = OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

/// What the writer thread reports back: lines lost, and whether the last write succeeded.
struct Status {
    dropped: Arc<AtomicU64>,
    writing: Arc<AtomicBool>,
}

/// The writer thread: takes lines off the channel, batches whatever is queued, writes the batch when the channel
/// is momentarily empty (or the batch is large), then gathers for [`GATHER`]; answers flush markers once
/// everything before them is written.
/// Ends when every [`AuditSink`] handle is gone.
fn run_writer(receiver: Receiver<Message>, mut writer: Box<dyn Write + Send>, status: &Status) {
    let mut batch = Batch::default();
    while let Ok(first) = receiver.recv() {
        let mut next = Some(first);
        while let Some(message) = next {
            match message {
                Message::Line(line) => batch.push(&line),
                Message::Flush(ack) => {
                    batch.write_to(&mut writer, status);
                    let _ = ack.send(());
                }
                Message::Confirm(ack) => batch.confirmations.push(ack),
            }
            if batch.bytes.len() >= MAX_BATCH_BYTES {
                batch.write_to(&mut writer, status);
            }
            // `None` when the channel is momentarily empty (or closed): time to write the batch.
            next = receiver.try_recv().ok();
        }
        batch.write_to(&mut writer, status);
        // Group commit: while this thread sleeps, senders queue lines without waking it (a wake
        // is a futex call and a context switch per line under load); the next batch takes them
        // all. An idle sink blocks in `recv` and costs nothing.
        std::thread::sleep(GATHER);
    }
}

/// Lines received but not yet written, and the confirmations waiting for them.
#[derive(Default)]
struct Batch {
    bytes: Vec<u8>,
    lines: u64,
    confirmations: Vec<tokio::sync::oneshot::Sender<bool>>,
}

impl Batch {
    fn push(&mut self, line: &[u8]) {
        self.bytes.extend_from_slice(line);
        self.lines += 1;
    }

    /// Writes and flushes the batch; on failure its lines are counted as dropped. Answers the
    /// confirmations with the outcome. Always leaves the batch empty.
    fn write_to(&mut self, writer: &mut dyn Write, status: &Status) {
        let mut written = true;
        if self.lines > 0 {
            match writer.write_all(&self.bytes).and_then(|()| writer.flush()) {
                Ok(()) => status.writing.store(true, Ordering::Release),
                Err(error) => {
                    tracing::error!(%error, lines = self.lines, "writing audit events failed");
                    status.writing.store(false, Ordering::Release);
                    record_drops(&status.dropped, self.lines);
                    written = false;
                }
            }
        }
        for confirmation in self.confirmations.drain(..) {
            let _ = confirmation.send(written && status.writing.load(Ordering::Acquire));
        }
        self.bytes.clear();
        self.lines = 0;
    }
}

/// Lines captured by [`AuditSink::memory`].
pub struct MemoryAudit {
    sink: AuditSink,
    buffer: Arc<std::sync::Mutex<Vec<u8>>>,
}

impl MemoryAudit {
    /// Every line written so far, after waiting for the events already emitted.
    pub fn lines(&self) -> Vec<String> {
        self.sink.flush();
        let bytes = self.buffer.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        String::from_utf8_lossy(&bytes).lines().map(str::to_owned).collect()
    }

    /// Every event written so far, parsed.
    pub fn events(&self) -> Vec<serde_json::Value> {
        self.lines()
            .iter()
            .map(|line| serde_json::from_str(line).expect("audit line is JSON"))
            .collect()
    }
}

struct SharedBuffer(Arc<std::sync::Mutex<Vec<u8>>>);

impl Write for SharedBuffer {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const ID: &str = "0123456789abcdef0123456789abcdef";
    const TIME: &str = "2026-11-22T01:02:03.456Z";

    fn fixed(kind: AuditKind, decision: &'static str, reason: &'static str) -> AuditEvent<'static> {
        AuditEvent::with_id_and_time(ID.into(), TIME.into(), "req-1", kind, decision, reason)
    }

    fn full_event() -> AuditEvent<'static> {
        let mut event = fixed(AuditKind::Authorization, "deny", "insufficient_scope");
        event.subject = Some("alice@example.com");
        event.issuer = Some("https://accounts.google.com");
        event.auth_method = Some("jwt");
        event.client_address = Some("10.0.0.7:51234");
        event.mcp_method = Some("tools/call");
        event.tool = Some("get_confidential_info");
        event.rule = Some("get_confidential_*");
        event.granted_by = vec!["employee", "token"];
        event.missing_scopes = vec!["confidential:read"];
        event.policy_hash = Some("9f2c");
        event.duration_us = Some(412);
        event.http_status = Some(403);
        event
    }

    #[test]
    fn serializes_to_the_exact_line() {
        let json = serde_json::to_string(&full_event()).unwrap();
        let expected = concat!(
            r#"{"event_id":"0123456789abcdef0123456789abcdef","request_id":"req-1","time":"2026-11-22T01:02:03.456Z","#,
            r#""kind":"authorization","decision":"deny","reason":"insufficient_scope","subject":"alice@example.com","#,
            r#""issuer":"https://accounts.google.com","auth_method":"jwt","client_address":"10.0.0.7:51234","#,
            r#""mcp_method":"tools/call","tool":"get_confidential_info","rule":"get_confidential_*","#,
            r#""granted_by":["employee","token"],"missing_scopes":["confidential:read"],"policy_hash":"9f2c","#,
            r#""duration_us":412,"http_status":403}"#
        );
        assert_eq!(json, expected);
    }

    #[test]
    fn empty_optional_fields_are_omitted() {
        let json = serde_json::to_string(&fixed(AuditKind::Authentication, "success", "ok")).unwrap();
        let expected = concat!(
            r#"{"event_id":"0123456789abcdef0123456789abcdef","request_id":"req-1","#,
            r#""time":"2026-11-22T01:02:03.456Z","kind":"authentication","decision":"success","reason":"ok"}"#
        );
        assert_eq!(json, expected);
    }

    #[test]
    fn new_generates_random_ids_and_current_time() {
        let a = AuditEvent::new("r", AuditKind::Request, "allow", "ok");
        let b = AuditEvent::new("r", AuditKind::Request, "allow", "ok");
        assert_eq!(a.event_id.len(), 32);
        assert!(
            a.event_id
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_ne!(a.event_id, b.event_id);
        assert_eq!(a.time.len(), TIME.len());
        assert!(a.time.starts_with("20") && a.time.ends_with('Z'));
    }

    #[test]
    fn formats_rfc3339_utc_with_millis() {
        let at = |millis: u64| rfc3339_millis(UNIX_EPOCH + Duration::from_millis(millis));
        assert_eq!(at(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(at(1_709_251_199_999), "2024-02-29T23:59:59.999Z");
        assert_eq!(at(1_795_309_323_456), "2026-11-22T01:02:03.456Z");
        assert_eq!(at(4_107_542_400_000), "2100-03-01T00:00:00.000Z");
        assert_eq!(at(253_402_300_799_000), "9999-12-31T23:59:59.000Z");
        assert_eq!(at(253_402_300_800_000), "10000-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339_millis(UNIX_EPOCH - Duration::from_secs(1)),
            "1970-01-01T00:00:00.000Z"
        );
    }

    #[test]
    fn hostile_values_stay_on_one_line() {
        let (sink, memory) = AuditSink::memory();
        let mut event = fixed(AuditKind::Authentication, "failure", "token_invalid");
        event.subject = Some("mallory\n{\"decision\":\"allow\"}\r\u{2028}");
        sink.emit(&event);
        let lines = memory.lines();
        assert_eq!(lines.len(), 1);
        let parsed: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(parsed["decision"], "failure");
        assert_eq!(parsed["subject"], "mallory\n{\"decision\":\"allow\"}\r\u{2028}");
    }

    #[test]
    fn memory_sink_keeps_order_across_clones_and_threads() {
        let (sink, memory) = AuditSink::memory();
        let threads: Vec<_> = (0..4)
            .map(|thread| {
                let sink = sink.clone();
                std::thread::spawn(move || {
                    for i in 0..250 {
                        let request_id = format!("{thread}-{i}");
                        sink.emit(&AuditEvent::new(&request_id, AuditKind::Request, "allow", "ok"));
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let events = memory.events();
        assert_eq!(events.len(), 1_000);
        assert_eq!(sink.dropped(), 0);
        for thread in 0..4 {
            let ids: Vec<_> = events
                .iter()
                .filter_map(|event| event["request_id"].as_str())
                .filter(|id| id.starts_with(&format!("{thread}-")))
                .map(str::to_owned)
                .collect();
            let expected: Vec<_> = (0..250).map(|i| format!("{thread}-{i}")).collect();
            assert_eq!(ids, expected);
        }
    }

    /// A writer whose first write blocks until the test releases it.
    struct StalledWriter {
        entered: mpsc::Sender<()>,
        release: mpsc::Receiver<()>,
        stalled: bool,
        inner: SharedBuffer,
    }

    impl Write for StalledWriter {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            if !self.stalled {
                self.stalled = true;
                self.entered.send(()).unwrap();
                self.release.recv().unwrap();
            }
            self.inner.write(bytes)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn full_channel_drops_and_counts_instead_of_blocking() {
        let (entered_sender, entered) = mpsc::channel();
        let (release, release_receiver) = mpsc::channel();
        let buffer = Arc::new(std::sync::Mutex::new(Vec::new()));
        let writer = StalledWriter {
            entered: entered_sender,
            release: release_receiver,
            stalled: false,
            inner: SharedBuffer(Arc::clone(&buffer)),
        };
        let sink = AuditSink::with_writer(Box::new(writer), 1).unwrap();
        let event = fixed(AuditKind::Request, "allow", "ok");

        sink.emit(&event); // taken by the writer, which then stalls
        entered.recv().unwrap();
        sink.emit(&event); // fills the channel
        sink.emit(&event); // dropped
        sink.emit(&event); // dropped
        assert_eq!(sink.dropped(), 2);

        release.send(()).unwrap();
        sink.flush();
        let written = buffer.lock().unwrap().iter().filter(|b| **b == b'\n').count();
        assert_eq!(written, 2);
        assert_eq!(sink.dropped(), 2);
    }

    struct FailingWriter;

    impl Write for FailingWriter {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::new(io::ErrorKind::BrokenPipe, "closed"))
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn write_failures_are_counted_not_panicked() {
        let sink = AuditSink::with_writer(Box::new(FailingWriter), 16).unwrap();
        for _ in 0..3 {
            sink.emit(&fixed(AuditKind::Request, "allow", "ok"));
        }
        sink.flush();
        assert_eq!(sink.dropped(), 3);
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("palisade-{name}-{}-{}", std::process::id(), random_id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn file_sink_creates_private_file_and_appends() {
        let dir = temp_dir("audit");
        let path = dir.join("audit.jsonl");

        let sink = AuditSink::new(AuditSinkConfig::File(path.clone())).unwrap();
        sink.emit(&fixed(AuditKind::Authentication, "success", "ok"));
        sink.emit(&full_event());
        sink.flush();
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 2);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        drop(sink);

        let reopened = AuditSink::new(AuditSinkConfig::File(path.clone())).unwrap();
        reopened.emit(&fixed(AuditKind::Request, "allow", "ok"));
        drop(reopened); // dropping the last handle writes what is queued

        let content = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = content.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(content.ends_with('\n'));
        assert_eq!(lines[1], serde_json::to_string(&full_event()).unwrap());
        assert!(lines[2].contains(r#""kind":"request""#));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn file_sink_reports_unopenable_path() {
        let dir = temp_dir("audit-missing");
        let path = dir.join("no-such-dir").join("audit.jsonl");
        assert!(AuditSink::new(AuditSinkConfig::File(path)).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn sink_is_send_sync_and_cheap_to_clone() {
        fn assert_send_sync<T: Send + Sync + Clone>() {}
        assert_send_sync::<AuditSink>();
        assert_eq!(std::mem::size_of::<AuditSink>(), std::mem::size_of::<usize>());
    }
}
