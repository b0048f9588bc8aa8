//! A real OpenTelemetry Collector (`tests/otelcol`, built from the collector's Go modules by
//! `make cluster-build`) run by a test, and what its file exporter wrote.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use crate::{TempDir, free_port, target_dir};

/// The collector binary.
pub fn otelcol() -> PathBuf {
    let binary = target_dir().join("otelcol/bin/otelcol");
    assert!(
        binary.exists(),
        "{} is missing: run `make cluster-build` (builds the OpenTelemetry Collector of tests/otelcol)",
        binary.display()
    );
    binary
}

/// A running collector; stopped when dropped.
pub struct Collector {
    child: Option<Child>,
    dir: TempDir,
}

impl Collector {
    /// Runs the collector with `config` (a JSON value, which YAML reads), its files in `dir`.
    pub fn start(dir: TempDir, config: &Value) -> Self {
        let file = dir.path().join("otelcol.yaml");
        std::fs::write(&file, config.to_string()).unwrap();
        let log = std::fs::File::create(dir.path().join("otelcol.log")).unwrap();
        let child = Command::new(otelcol())
            .arg("--config")
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("the collector starts");
        Self {
            child: Some(child),
            dir,
        }
    }

    /// A directory for the test's files (the exporter's output), removed with the collector.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// What the collector logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("otelcol.log")).unwrap_or_default()
    }

    /// Panics with the collector's log if it exited.
    pub fn assert_running(&mut self) {
        if let Some(child) = &mut self.child
            && let Ok(Some(status)) = child.try_wait()
        {
            panic!("the collector exited ({status}): {}", self.log());
        }
    }

    /// Waits (at most 60 s) until the collector accepts connections on `port`.
    pub fn wait_listening(&mut self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            self.assert_running();
            assert!(
                Instant::now() < deadline,
                "the collector does not listen on {port}: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the collector.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A collector receiving traces over OTLP gRPC and HTTP and writing them to a file.
pub struct TraceCollector {
    pub collector: Collector,
    /// `http://127.0.0.1:<port>` of the gRPC receiver.
    pub grpc_endpoint: String,
    /// `http://127.0.0.1:<port>` of the HTTP receiver.
    pub http_endpoint: String,
    out: PathBuf,
}

impl TraceCollector {
    /// Starts it and waits until both receivers listen.
    pub fn start() -> Self {
        Self::start_with_tls(None)
    }

    /// Like [`TraceCollector::start`]; with `tls` (PEM certificate and key), both receivers
    /// serve TLS and the endpoints are `https://`.
    pub fn start_with_tls(tls: Option<(&str, &str)>) -> Self {
        Self::start_tls(tls, None)
    }

    /// Like [`TraceCollector::start_with_tls`], and both receivers require a client certificate
    /// that `client_ca` (PEM) signed.
    pub fn start_with_mutual_tls(cert: &str, key: &str, client_ca: &str) -> Self {
        Self::start_tls(Some((cert, key)), Some(client_ca))
    }

    fn start_tls(tls: Option<(&str, &str)>, client_ca: Option<&str>) -> Self {
        let (grpc, http) = (free_port(), free_port());
        let dir = TempDir::new("otelcol-traces");
        let out = dir.path().join("spans.json");
        let tls_config = tls.map(|(cert, key)| {
            let (cert_file, key_file) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
            std::fs::write(&cert_file, cert).unwrap();
            std::fs::write(&key_file, key).unwrap();
            let mut config = json!({"cert_file": cert_file, "key_file": key_file});
            if let Some(client_ca) = client_ca {
                let client_ca_file = dir.path().join("client-ca.pem");
                std::fs::write(&client_ca_file, client_ca).unwrap();
                config["client_ca_file"] = json!(client_ca_file);
            }
            config
        });
        let receiver = |port: u16| {
            let mut receiver = json!({"endpoint": format!("127.0.0.1:{port}")});
            if let Some(tls) = &tls_config {
                receiver["tls"] = tls.clone();
            }
            receiver
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let config = json!({
            "receivers": {"otlp": {"protocols": {"grpc": receiver(grpc), "http": receiver(http)}}},
            "exporters": {"file": {"path": out}},
            "service": {
                "pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["file"]}},
                "telemetry": {"metrics": {"level": "none"}},
            },
        });
        let mut collector = Collector::start(dir, &config);
        collector.wait_listening(grpc);
        collector.wait_listening(http);
        Self {
            collector,
            grpc_endpoint: format!("{scheme}://127.0.0.1:{grpc}"),
            http_endpoint: format!("{scheme}://127.0.0.1:{http}"),
            out,
        }
    }

    /// The raw output of the file exporter.
    pub fn raw(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// Every span written so far.
    pub fn spans(&self) -> Vec<ExportedSpan> {
        let mut spans = Vec::new();
        for line in self.raw().lines() {
            let Ok(batch) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            for resource in batch["resourceSpans"].as_array().into_iter().flatten() {
                let resource_attributes = attributes(&resource["resource"]);
                for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
                    for span in scope["spans"].as_array().into_iter().flatten() {
                        spans.push(ExportedSpan {
                            resource: resource_attributes.clone(),
                            scope: scope["scope"]["name"].as_str().unwrap_or_default().to_owned(),
                            trace_id: text(&span["traceId"]),
                            span_id: text(&span["spanId"]),
                            parent_span_id: text(&span["parentSpanId"]),
                            trace_state: text(&span["traceState"]),
                            name: text(&span["name"]),
                            kind: span["kind"].as_i64().unwrap_or_default(),
                            attributes: attributes(span),
                            links: span["links"].as_array().cloned().unwrap_or_default(),
                            status_code: span["status"]["code"].as_i64().unwrap_or_default(),
                            start: text(&span["startTimeUnixNano"]).parse().unwrap_or_default(),
                            end: text(&span["endTimeUnixNano"]).parse().unwrap_or_default(),
                        });
                    }
                }
            }
        }
        spans
    }

    /// Waits (at most 60 s) until `done` holds for the spans written; returns them.
    pub fn wait_for(&mut self, what: &str, done: impl Fn(&[ExportedSpan]) -> bool) -> Vec<ExportedSpan> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let spans = self.spans();
            if done(&spans) {
                return spans;
            }
            self.collector.assert_running();
            assert!(
                Instant::now() < deadline,
                "{what}: not within 60 s; spans: {spans:#?}\ncollector: {}",
                self.collector.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A span as the collector's file exporter wrote it (OTLP JSON).
#[derive(Debug, Clone)]
pub struct ExportedSpan {
    pub resource: Map<String, Value>,
    pub scope: String,
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    /// The W3C `tracestate` the span was recorded with (empty: none).
    pub trace_state: String,
    pub name: String,
    /// 1 internal, 2 server, 3 client.
    pub kind: i64,
    pub attributes: Map<String, Value>,
    pub links: Vec<Value>,
    /// 0 unset, 1 ok, 2 error.
    pub status_code: i64,
    pub start: u128,
    pub end: u128,
}

impl ExportedSpan {
    /// A string, integer or boolean attribute as JSON; arrays as arrays of their values.
    pub fn attribute(&self, key: &str) -> Option<&Value> {
        self.attributes.get(key)
    }
}

fn text(value: &Value) -> String {
    value.as_str().unwrap_or_default().to_owned()
}

/// An OTLP attribute list as a map of plain JSON values.
pub fn attributes(holder: &Value) -> Map<String, Value> {
    holder["attributes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|kv| (text(&kv["key"]), plain(&kv["value"])))
        .collect()
}

fn plain(value: &Value) -> Value {
    if let Some(v) = value.get("stringValue") {
        return v.clone();
    }
    if let Some(v) = value.get("intValue") {
        // OTLP JSON writes 64-bit integers as strings.
        return v
            .as_str()
            .and_then(|s| s.parse::<i64>().ok())
            .map_or_else(|| v.clone(), Value::from);
    }
    if let Some(v) = value.get("boolValue") {
        return v.clone();
    }
    if let Some(values) = value["arrayValue"]["values"].as_array() {
        return Value::Array(values.iter().map(plain).collect());
    }
    value.clone()
}
