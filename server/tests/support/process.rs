//! A `palisade-server serve` process on a fixture's files, for tests that need real sockets:
//! connection limits, timeouts, floods. Its audit log is a file in the fixture's directory.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::Fixture;

/// A running server; killed when dropped.
pub struct Running {
    child: Child,
    /// The MCP listener.
    pub address: SocketAddr,
    /// The metrics listener.
    pub metrics_address: SocketAddr,
    /// The audit log file.
    pub audit_log: PathBuf,
    /// Its standard error.
    log: PathBuf,
}

/// How a start ended.
enum Ready {
    Yes,
    /// It exited saying it cannot listen: a port was taken between the test finding it free and
    /// the server binding it.
    PortTaken,
    Exited(std::process::ExitStatus),
    TimedOut,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl Running {
    /// Starts the server on `fx`'s policy and documents with `extra` flags and waits for `/ready`.
    /// A port found free can be taken by a test running alongside before the server binds it: a
    /// server that exits saying it cannot listen is started again on other ports (twice at most);
    /// one that exits for another reason, or never gets ready, fails the test with its log.
    pub fn start(fx: &Fixture, extra: &[&str]) -> Self {
        for _ in 0..3 {
            let mut running = Self::spawn(fx, extra);
            match running.wait_ready(Duration::from_secs(20)) {
                Ready::Yes => return running,
                Ready::PortTaken => continue,
                Ready::Exited(status) => panic!(
                    "palisade-server exited ({status}) before it was ready; its log:\n{}",
                    running.log()
                ),
                Ready::TimedOut => panic!(
                    "palisade-server did not become ready within 20 s; its log:\n{}",
                    running.log()
                ),
            }
        }
        panic!("palisade-server could not listen on three pairs of free ports")
    }

    /// A server process on two ports that were free a moment ago.
    fn spawn(fx: &Fixture, extra: &[&str]) -> Self {
        let (port, metrics_port) = (free_port(), free_port());
        let audit_log = fx.dir.path().join(format!("audit-{port}.jsonl"));
        let audit_flag = audit_log.display().to_string();
        let has_audit_flag = extra.contains(&"--audit-log");
        let log = fx.dir.path().join(format!("server-{port}.log"));
        let mut command = Command::new(env!("CARGO_BIN_EXE_palisade-server"));
        command
            .arg("serve")
            .arg("--policy-file")
            .arg(fx.dir.path().join("policy.yaml"))
            .arg("--documents-dir")
            .arg(&fx.documents_dir)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--metrics-listen", &format!("127.0.0.1:{metrics_port}")])
            .args(["--log", "warn"]);
        if !has_audit_flag {
            command.args(["--audit-log", &audit_flag]);
        }
        let stderr = if std::env::var_os("PALISADE_TEST_LOGS").is_some() {
            Stdio::inherit()
        } else {
            Stdio::from(std::fs::File::create(&log).expect("server log file"))
        };
        let child = command
            .args(extra)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start palisade-server");
        Self {
            child,
            address: SocketAddr::from(([127, 0, 0, 1], port)),
            metrics_address: SocketAddr::from(([127, 0, 0, 1], metrics_port)),
            audit_log,
            log,
        }
    }

    /// Waits up to `timeout` for `/ready`, or for the process to exit.
    fn wait_ready(&mut self, timeout: Duration) -> Ready {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return if self.log().contains("cannot listen") {
                    Ready::PortTaken
                } else {
                    Ready::Exited(status)
                };
            }
            if let Ok(answer) = self.get("/ready")
                && answer.status == 200
            {
                return Ready::Yes;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ready::TimedOut
    }

    /// What the server wrote to standard error (empty when it went to the test's own).
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `VmRSS` and `VmHWM` of the process, in KiB.
    pub fn memory_kib(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("/proc status");
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// A GET on the MCP listener, on a new connection.
    pub fn get(&self, path: &str) -> std::io::Result<Answer> {
        let mut stream = TcpStream::connect(self.address)?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )?;
        read_answer(&mut stream)
    }

    /// The sum of the samples of metric `name` whose label text contains `labels`.
    pub fn metric(&self, name: &str, labels: &str) -> f64 {
        let mut stream = TcpStream::connect(self.metrics_address).expect("metrics connection");
        stream.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        write!(
            stream,
            "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )
        .expect("send");
        let answer = read_answer(&mut stream).expect("metrics");
        answer
            .body
            .lines()
            .filter(|l| l.starts_with(name) && l.contains(labels))
            .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
            .sum()
    }

    /// The audit events written so far.
    pub fn audit_events(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.audit_log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP/1.1 answer read off a socket.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    /// Lower-case names.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// Reads one answer (head, and a body of `Content-Length` bytes) from `stream`.
pub fn read_answer(stream: &mut TcpStream) -> std::io::Result<Answer> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "closed before an answer",
            ));
        }
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buffer[head_end + 4..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Ok(Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// Reads one answer from an async stream (head, and a body of `Content-Length` bytes).
pub async fn read_answer_async(stream: &mut tokio::net::TcpStream) -> std::io::Result<Answer> {
    use tokio::io::AsyncReadExt;
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "closed before an answer",
            ));
        }
        buffer.extend_from_slice(&chunk[..n]);
    };
    let length = content_length(&buffer[..head_end]);
    while buffer.len() < head_end + 4 + length {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
    let mut cursor = std::io::Cursor::new(buffer);
    parse_answer(&mut cursor)
}

fn content_length(head: &[u8]) -> usize {
    String::from_utf8_lossy(head)
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(n, _)| n.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0)
}

fn parse_answer(reader: &mut impl Read) -> std::io::Result<Answer> {
    let mut bytes = Vec::new();
    reader.read_to_end(&mut bytes)?;
    let head_end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "no head"))?;
    let head = String::from_utf8_lossy(&bytes[..head_end]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok(Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes[head_end + 4..]).into_owned(),
    })
}

/// Whether the server closes `stream` (a read returns end of file or a reset) within `within`.
pub async fn closed_within(stream: &mut tokio::net::TcpStream, within: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let deadline = tokio::time::Instant::now() + within;
    let mut chunk = [0u8; 1024];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// A connection to `to` from the local address `from` (any loopback address: 127.0.0.0/8).
pub async fn connect_from(from: [u8; 4], to: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((from, 0)))?;
    socket.connect(to).await
}
