//! Shipping the audit log with a real OpenTelemetry Collector (`tests/otelcol`, built from the
//! collector's Go modules by `make cluster-build`), configured by the documented
//! `config/observability/otelcol-audit.yaml`.
//!
//! The server runs as in a pod: audit events on standard output, operational logs on standard
//! error. The test writes both into a container log file as the container runtime does (CRI format
//! under `/var/log/pods/<namespace>_<pod>_<uid>/server/0.log`, one long line split into a partial
//! and a final part), runs the collector with the documented receiver, and reads what its file
//! exporter wrote: exactly the audit events, each parsed into attributes, timed by its own `time`,
//! with the pod's namespace, name and container; none of the operational lines; no token.

use std::path::Path;
use std::time::{Duration, Instant};

use palisade_e2e::collector::Collector;
use palisade_e2e::{Fixture, Server, TempDir};
use serde_json::{Value, json};

const NAMESPACE: &str = "team-a";
const POD: &str = "company-info-7d4b9c6f5-x2k8p";
const UID: &str = "0f3c2a9e-6b1d-4e8f-9a7c-5d2e1b0c3f4a";

/// A `tools/call` with `token` (none: anonymous).
fn call(server: &Server, token: Option<&str>, tool: &str) -> u16 {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": tool, "arguments": {}}});
    palisade_e2e::mcp_request_as(server, token, &body.to_string())
        .send()
        .expect("request")
        .status()
        .as_u16()
}

/// A CRI log line at `nanos` past a fixed second.
fn cri(nanos: usize, stream: &str, tag: &str, line: &str) -> String {
    format!("2026-12-04T18:00:00.{nanos:09}Z {stream} {tag} {line}\n")
}

/// The documented collector configuration with the test's paths: the receiver reads `logs` from
/// the beginning, and a file exporter replaces the audit store.
fn collector_config(logs: &Path, out: &Path) -> Value {
    let text = std::fs::read_to_string(palisade_e2e::repo_root().join("config/observability/otelcol-audit.yaml"))
        .expect("the documented configuration");
    let documented: Value = yaml_serde::from_str(&text).expect("YAML");
    let mut receiver = documented["receivers"]["filelog/palisade-audit"].clone();
    assert_eq!(receiver["include"], json!(["/var/log/pods/*/server/*.log"]));
    receiver["include"] = json!([logs.join("var/log/pods/*/server/*.log")]);
    receiver["start_at"] = json!("beginning");
    json!({
        "receivers": {"filelog/palisade-audit": receiver},
        "exporters": {"file": {"path": out}},
        "service": {
            "pipelines": {"logs/palisade-audit": {
                "receivers": documented["service"]["pipelines"]["logs/palisade-audit"]["receivers"],
                "exporters": ["file"],
            }},
            "telemetry": {"metrics": {"level": "none"}},
        },
    })
}

/// Every log record the file exporter wrote, with its resource's attributes.
fn exported(out: &Path) -> Vec<(Value, Value)> {
    let text = std::fs::read_to_string(out).unwrap_or_default();
    let mut records = Vec::new();
    for line in text.lines() {
        let Ok(batch) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        for resource in batch["resourceLogs"].as_array().into_iter().flatten() {
            for scope in resource["scopeLogs"].as_array().into_iter().flatten() {
                for record in scope["logRecords"].as_array().into_iter().flatten() {
                    records.push((resource["resource"].clone(), record.clone()));
                }
            }
        }
    }
    records
}

/// An OTLP attribute list as a map of string values.
fn attributes(list: &Value) -> serde_json::Map<String, Value> {
    list["attributes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|kv| {
            let value = &kv["value"];
            let value = value
                .get("stringValue")
                .cloned()
                .or_else(|| value.get("intValue").cloned())
                .unwrap_or_else(|| value.clone());
            (kv["key"].as_str().unwrap_or_default().to_owned(), value)
        })
        .collect()
}

#[test]
fn the_documented_collector_config_ships_exactly_the_audit_events() {
    let fixture = Fixture::sample("company-info.yaml");
    let server = Server::start(&fixture, &[]);
    let employee = fixture.token("erin", &["public:read"]);
    assert_eq!(call(&server, Some(&employee), "get_public_info"), 200);
    assert_eq!(call(&server, Some(&employee), "get_confidential_info"), 403);
    assert_eq!(call(&server, Some("not-a-token"), "get_public_info"), 401);
    assert_eq!(call(&server, None, "get_public_info"), 401);

    // The pod's container log, as the runtime writes it: both streams, interleaved.
    let audit = std::fs::read_to_string(&server.audit_log).expect("audit log");
    let audit: Vec<&str> = audit.lines().collect();
    let operational = server.logs();
    assert!(audit.len() >= 6 && !operational.is_empty(), "{audit:?} {operational:?}");
    let dir = TempDir::new("audit-shipping");
    let container = dir.path().join(format!("var/log/pods/{NAMESPACE}_{POD}_{UID}/server"));
    std::fs::create_dir_all(&container).unwrap();
    let mut log = String::new();
    let mut nanos = 0;
    for (i, line) in operational.iter().enumerate() {
        nanos += 1;
        log.push_str(&cri(nanos, "stderr", "F", line));
        if let Some(event) = audit.get(i) {
            nanos += 1;
            if i == 1 {
                // A long line the runtime split: a partial part, then the final one.
                let (first, rest) = event.split_at(event.len() / 2);
                log.push_str(&cri(nanos, "stdout", "P", first));
                log.push_str(&cri(nanos + 1, "stdout", "F", rest));
                nanos += 1;
            } else {
                log.push_str(&cri(nanos, "stdout", "F", event));
            }
        }
    }
    for event in audit.iter().skip(operational.len()) {
        nanos += 1;
        log.push_str(&cri(nanos, "stdout", "F", event));
    }
    std::fs::write(container.join("0.log"), &log).unwrap();

    let out = dir.path().join("exported.json");
    let mut collector = Collector::start(TempDir::new("otelcol-audit"), &collector_config(dir.path(), &out));
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut records = exported(&out);
    while records.len() < audit.len() && Instant::now() < deadline {
        collector.assert_running();
        std::thread::sleep(Duration::from_millis(200));
        records = exported(&out);
    }
    let collector_log = collector.log();
    assert_eq!(
        records.len(),
        audit.len(),
        "records: {records:?}\ncollector: {collector_log}"
    );

    for ((resource, record), line) in records.iter().zip(&audit) {
        let event: Value = serde_json::from_str(line).unwrap();
        let fields = attributes(record);
        // Each event whole, as attributes.
        for key in ["event_id", "request_id", "kind", "decision", "reason", "time"] {
            assert_eq!(fields.get(key), event.get(key), "{key} of {line}\n{record}");
        }
        // Timed by its own `time`, not by when it was read.
        let millis = time_millis(event["time"].as_str().unwrap());
        let nanos: u128 = record["timeUnixNano"].as_str().unwrap().parse().unwrap();
        assert_eq!(nanos, millis * 1_000_000, "{record}");
        // Where it came from.
        let resource = attributes(resource);
        assert_eq!(
            resource.get("k8s.namespace.name"),
            Some(&json!(NAMESPACE)),
            "{resource:?}"
        );
        assert_eq!(resource.get("k8s.pod.name"), Some(&json!(POD)));
        assert_eq!(resource.get("k8s.container.name"), Some(&json!("server")));
    }
    let shipped = std::fs::read_to_string(&out).unwrap();
    assert!(!shipped.contains(&employee), "a token was shipped");
    for line in &operational {
        let message: Value = serde_json::from_str(line).unwrap_or(Value::Null);
        if let Some(text) = message["fields"]["message"].as_str().or(message["message"].as_str()) {
            assert!(!shipped.contains(text), "an operational line was shipped: {line}");
        }
    }
}

/// Milliseconds since the epoch of an RFC 3339 UTC time with milliseconds
/// (`2026-11-22T01:02:03.456Z`).
fn time_millis(time: &str) -> u128 {
    let (date, clock) = time.trim_end_matches('Z').split_once('T').expect("T");
    let mut ymd = date.split('-').map(|p| p.parse::<i64>().unwrap());
    let (y, m, d) = (ymd.next().unwrap(), ymd.next().unwrap(), ymd.next().unwrap());
    let (hms, millis) = clock.split_once('.').expect("milliseconds");
    let mut parts = hms.split(':').map(|p| p.parse::<i64>().unwrap());
    let (h, min, s) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let seconds = days * 86_400 + h * 3600 + min * 60 + s;
    u128::try_from(seconds).unwrap() * 1000 + millis.parse::<u128>().unwrap()
}
