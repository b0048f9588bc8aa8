//! An upstream MCP server run as a child process, over the MCP stdio transport: Palisade writes
//! JSON-RPC messages to its stdin and reads them from its stdout, one per line; whatever it
//! writes to stderr is its log.
//!
//! - The child runs in a process group of its own, so that stopping it stops what it started
//!   too (`npx` starts `node`; `uvx` starts `python`): dropping a [`StdioUpstream`] kills the
//!   whole group.
//! - It inherits Palisade's environment except every `PALISADE_*` variable (Palisade's own
//!   settings never reach the upstream), plus what the caller adds.
//! - The last [`STDERR_TAIL`] lines of its stderr (each cut to [`STDERR_LINE_BYTES`]) are kept
//!   for status and errors, and logged at `debug`.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::io;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::io::{AsyncRead, BufReader};
use tokio::net::UnixStream;
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

use super::connection::{Connection, read_bounded_line};

/// How many of the child's last stderr lines are kept.
pub const STDERR_TAIL: usize = 20;
/// Longest stderr line kept (longer ones are cut).
pub const STDERR_LINE_BYTES: usize = 512;

/// A running child (or a stdio server behind a Unix socket) and the conversation with it.
pub struct StdioUpstream {
    /// `None` behind a socket: the process is the shim's, in another container.
    child: Option<Child>,
    connection: Connection,
    stderr: Arc<Mutex<VecDeque<String>>>,
    stderr_task: Option<JoinHandle<()>>,
}

impl StdioUpstream {
    /// Starts `argv` (program and arguments) with `extra_env` added to the inherited
    /// environment; its messages may be up to `max_message_bytes` long.
    pub fn spawn(argv: &[String], extra_env: &[(String, String)], max_message_bytes: usize) -> io::Result<Self> {
        let (program, args) = argv
            .split_first()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the upstream command is empty"))?;
        let mut command = Command::new(program);
        command
            .args(args)
            .env_clear()
            .envs(inherited_env(std::env::vars_os()))
            .envs(extra_env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = command.spawn()?;
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        tracing::info!(program = %program, pid = child.id(), "upstream process started");
        let tail = Arc::new(Mutex::new(VecDeque::with_capacity(STDERR_TAIL)));
        let stderr_task = tokio::spawn(keep_tail(stderr, tail.clone()));
        Ok(Self {
            child: Some(child),
            connection: Connection::start(stdout, stdin, max_message_bytes),
            stderr: tail,
            stderr_task: Some(stderr_task),
        })
    }

    /// Connects to a stdio server served on the Unix socket `path` by `palisade-stdio-shim`
    /// (which starts a new process for each connection; its stderr is its container's log).
    pub async fn connect(path: &Path, max_message_bytes: usize) -> io::Result<Self> {
        let stream = UnixStream::connect(path).await?;
        let (reader, writer) = stream.into_split();
        tracing::info!(socket = %path.display(), "upstream socket connected");
        Ok(Self {
            child: None,
            connection: Connection::start(reader, writer, max_message_bytes),
            stderr: Arc::new(Mutex::new(VecDeque::new())),
            stderr_task: None,
        })
    }

    /// The conversation with the child.
    pub fn connection(&self) -> &Connection {
        &self.connection
    }

    /// The child's last stderr lines, oldest first.
    pub fn stderr_tail(&self) -> Vec<String> {
        self.stderr
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }

    /// The child's process id while it runs.
    pub fn id(&self) -> Option<u32> {
        self.child.as_ref()?.id()
    }

    /// How the child ended, if it has.
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }
}

impl Drop for StdioUpstream {
    fn drop(&mut self) {
        if let Some(task) = &self.stderr_task {
            task.abort();
        }
        // process_group(0) made the child's pid its group's id.
        let group = self
            .id()
            .and_then(|pid| i32::try_from(pid).ok())
            .and_then(rustix::process::Pid::from_raw);
        if let Some(group) = group
            && let Err(error) = rustix::process::kill_process_group(group, rustix::process::Signal::KILL)
        {
            tracing::debug!(%error, "cannot signal the upstream's process group (it has ended)");
        }
        // kill_on_drop reaps the child itself.
    }
}

/// Palisade's environment without its own settings (`PALISADE_*`).
fn inherited_env(vars: impl Iterator<Item = (OsString, OsString)>) -> impl Iterator<Item = (OsString, OsString)> {
    vars.filter(|(name, _)| !is_palisade_setting(name))
}

/// Keeps the last lines of `stderr` in `tail` until it ends.
async fn keep_tail<R>(stderr: R, tail: Arc<Mutex<VecDeque<String>>>)
where
    R: AsyncRead + Unpin,
{
    let mut reader = BufReader::new(stderr);
    let mut line = Vec::new();
    loop {
        line.clear();
        // A line over the limit is kept cut: stderr is a log, not a protocol.
        match read_bounded_line(&mut reader, &mut line, STDERR_LINE_BYTES).await {
            Ok(true) | Err(super::connection::ReadError::TooLong) => {}
            Ok(false) | Err(super::connection::ReadError::Io(_)) => return,
        }
        let text = String::from_utf8_lossy(&line).trim_end().to_owned();
        tracing::debug!(line = %text, "upstream stderr");
        let mut tail = tail.lock().unwrap_or_else(PoisonError::into_inner);
        if tail.len() == STDERR_TAIL {
            tail.pop_front();
        }
        tail.push_back(text);
    }
}

/// Whether `name` is one of Palisade's own variables, which the upstream never sees.
fn is_palisade_setting(name: &OsStr) -> bool {
    name.as_encoded_bytes().starts_with(b"PALISADE_")
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use serde_json::json;

    use super::*;
    use crate::upstream::UpstreamError;

    fn sh(script: &str) -> Vec<String> {
        vec!["/bin/sh".into(), "-c".into(), script.into()]
    }

    async fn tail_with(upstream: &StdioUpstream, line: &str) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let tail = upstream.stderr_tail();
            if tail.iter().any(|l| l == line) || Instant::now() > deadline {
                return tail;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn a_child_answers_over_its_stdio_and_logs_to_stderr() {
        let script = r#"read request; echo "got $request" >&2;
            echo '{"jsonrpc":"2.0","id":1,"result":{"tools":[]}}'; sleep 5"#;
        let upstream = StdioUpstream::spawn(&sh(script), &[("GREETING".into(), "hi".into())], 4096).unwrap();
        let answer = upstream
            .connection()
            .request("tools/list", None, Duration::from_secs(5))
            .await;
        assert_eq!(answer.unwrap(), json!({"tools": []}));
        let tail = tail_with(&upstream, r#"got {"id":1,"jsonrpc":"2.0","method":"tools/list"}"#).await;
        assert_eq!(tail, [r#"got {"id":1,"jsonrpc":"2.0","method":"tools/list"}"#]);
    }

    #[tokio::test]
    async fn a_child_that_exits_is_unavailable() {
        let mut upstream = StdioUpstream::spawn(&sh("echo 'cannot start: no token' >&2; exit 3"), &[], 4096).unwrap();
        let answer = upstream
            .connection()
            .request("tools/list", None, Duration::from_secs(5))
            .await;
        // Whichever Palisade meets first: the closed stdout, or the closed stdin.
        match answer.unwrap_err() {
            UpstreamError::Unavailable(why) => assert!(
                why == "the upstream closed its output" || why.starts_with("cannot write to the upstream: Broken pipe"),
                "{why}"
            ),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            tail_with(&upstream, "cannot start: no token").await,
            ["cannot start: no token"]
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        let status = loop {
            if let Some(status) = upstream.exit_status() {
                break status;
            }
            assert!(Instant::now() < deadline, "the child did not end");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(status.code(), Some(3));
    }

    #[tokio::test]
    async fn dropping_the_upstream_stops_what_it_started() {
        // The child starts a grandchild and reports its pid.
        let upstream = StdioUpstream::spawn(&sh("sleep 60 & echo $! >&2; wait"), &[], 4096).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let grandchild = loop {
            if let Some(pid) = upstream.stderr_tail().first().and_then(|l| l.parse::<u32>().ok()) {
                break pid;
            }
            assert!(Instant::now() < deadline, "no pid on stderr");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let alive = |pid: u32| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|stat| stat.split(' ').nth(2).is_none_or(|state| state != "Z"))
        };
        assert!(alive(grandchild));
        drop(upstream);
        let deadline = Instant::now() + Duration::from_secs(5);
        while alive(grandchild) {
            assert!(
                Instant::now() < deadline,
                "the grandchild {grandchild} outlived the upstream"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[test]
    fn palisade_settings_are_not_inherited() {
        let vars = [
            ("PATH", "/usr/bin"),
            ("PALISADE_AUDIT_LOG", "/var/log/audit"),
            ("HOME", "/tmp"),
            ("PALISADE_LISTEN", "0.0.0.0:8080"),
        ]
        .map(|(k, v)| (OsString::from(k), OsString::from(v)));
        let kept: Vec<_> = inherited_env(vars.into_iter()).collect();
        assert_eq!(
            kept,
            [("PATH", "/usr/bin"), ("HOME", "/tmp")].map(|(k, v)| (OsString::from(k), OsString::from(v)))
        );
        assert!(is_palisade_setting(OsStr::new("PALISADE_X")));
    }

    #[tokio::test]
    async fn an_empty_command_is_refused() {
        let error = StdioUpstream::spawn(&[], &[], 4096).err().expect("refused");
        assert_eq!(error.to_string(), "the upstream command is empty");
    }
}
