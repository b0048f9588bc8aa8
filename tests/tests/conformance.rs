//! The official MCP conformance suite (`@modelcontextprotocol/conformance@0.1.16`, Node 22) against
//! `palisade-server`: `conformance server --url http://127.0.0.1:PORT/mcp`, every active server
//! scenario.
//!
//! The suite cannot send an Authorization header, so the server runs a test configuration,
//! `tests/conformance/policy.yaml`: anonymous callers are admitted and bound to a role that holds
//! the scope of four document tools over `tests/conformance/documents/`. Scenarios that exercise
//! features a read-only document server does not have (the suite's fixture tools, prompts,
//! logging, completion, subscriptions, resource templates, SSE sessions) are listed, each with its
//! reason, in `tests/conformance/expected-failures.yaml`; the suite exits 1 on any other failure
//! and on any listed scenario that passes, so the list stays exact. The applicable scenarios
//! (server-initialize, ping, tools-list, resources-list, dns-rebinding-protection) must pass with
//! at least one check each.
//!
//! One excluded scenario has a part that does apply: server-sse-multiple-streams stops at "no
//! session id" (a stateless server has none) before it sends three concurrent POSTs; this test
//! sends them itself.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use palisade_e2e::{Fixture, Server, TempDir, http_client, node_modules, node22, repo_root};
use serde_json::{Value, json};

/// How long one run of the suite may take before it is killed (it takes a few seconds).
const SUITE_TIMEOUT: Duration = Duration::from_secs(180);
/// Scenarios that apply to Palisade: each must pass.
const APPLICABLE: [&str; 5] = [
    "server-initialize",
    "ping",
    "tools-list",
    "resources-list",
    "dns-rebinding-protection",
];

fn conformance_dir() -> PathBuf {
    repo_root().join("tests/conformance")
}

/// The test configuration: the policy and documents under `tests/conformance/`, used in place.
fn fixture() -> Fixture {
    let dir = conformance_dir();
    let policy_file = dir.join("policy.yaml");
    let policy = std::fs::read_to_string(&policy_file).expect("read the conformance policy");
    let resource = policy
        .lines()
        .find_map(|l| l.trim().strip_prefix("resource: "))
        .expect("resource")
        .to_owned();
    Fixture {
        dir: TempDir::new("conformance"),
        policy_file,
        documents_dir: dir.join("documents"),
        hmac_key: Vec::new(),
        resource,
    }
}

/// The suite's entry point, from its package.json (`bin.conformance`), checking the pinned version.
fn suite_entry() -> PathBuf {
    let package = node_modules().join("@modelcontextprotocol/conformance");
    let manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(package.join("package.json")).expect("read the suite's package.json"),
    )
    .expect("package.json");
    assert_eq!(
        manifest["version"], "0.1.16",
        "the pinned conformance suite (make e2e-deps)"
    );
    let bin = manifest["bin"]["conformance"].as_str().expect("bin.conformance");
    package.join(bin)
}

/// The scenario names listed under `server:` in the expected-failures file.
fn expected_failures(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).expect("read expected-failures.yaml");
    let mut in_server = false;
    let mut names = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or_default().trim_end();
        if line.is_empty() {
            continue;
        }
        if !line.starts_with(' ') && !line.starts_with('-') {
            in_server = line == "server:";
            continue;
        }
        if in_server && let Some(name) = line.trim().strip_prefix("- ") {
            names.push(name.trim().to_owned());
        }
    }
    names
}

/// Output without ANSI colour codes.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Runs the suite against `url` with the baseline; returns (exit code, stdout + stderr).
fn run_suite(url: &str, baseline: &Path, workdir: &Path) -> (Option<i32>, String) {
    let mut child = Command::new(node22())
        .arg(suite_entry())
        .args(["server", "--url", url, "--expected-failures"])
        .arg(baseline)
        .current_dir(workdir)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the conformance suite");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + SUITE_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the suite") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = format!(
        "{}\n--- stderr ---\n{}",
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default()
    );
    match status {
        Some(status) => (status.code(), strip_ansi(&output)),
        None => panic!("the conformance suite did not finish within {SUITE_TIMEOUT:?}:\n{output}"),
    }
}

fn post(server: &Server, body: Value) -> (u16, Option<String>, Value) {
    let response = http_client()
        .post(server.mcp_url())
        .header("content-type", "application/json")
        .header("accept", "text/event-stream, application/json")
        .header("mcp-protocol-version", "2025-03-26")
        .body(body.to_string())
        .send()
        .expect("POST /mcp");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (status, content_type, response.json().unwrap_or(Value::Null))
}

#[test]
fn conformance_suite_passes_every_applicable_scenario() {
    let fixture = fixture();
    let server = Server::start(&fixture, &[]);

    // The configuration is what the suite needs: anonymous callers see the fixture tools and documents.
    let (status, _, tools) = post(&server, json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}));
    assert_eq!(status, 200, "{tools}");
    assert_eq!(tools["result"]["tools"].as_array().map(Vec::len), Some(4), "{tools}");
    let (status, _, resources) = post(&server, json!({"jsonrpc": "2.0", "id": 2, "method": "resources/list"}));
    assert_eq!(status, 200, "{resources}");
    assert_eq!(
        resources["result"]["resources"].as_array().map(Vec::len),
        Some(2),
        "{resources}"
    );

    // What server-sse-multiple-streams would check after its session step: three concurrent POSTs
    // (no session id) are all answered, with JSON.
    let answers: Vec<(u16, Option<String>, Value)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..3)
            .map(|i| {
                let server = &server;
                scope.spawn(move || {
                    post(
                        server,
                        json!({"jsonrpc": "2.0", "id": 1000 + i, "method": "tools/list"}),
                    )
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("POST thread")).collect()
    });
    for (status, content_type, body) in &answers {
        assert_eq!(*status, 200, "{body}");
        assert!(
            content_type
                .as_deref()
                .is_some_and(|c| c.starts_with("application/json")),
            "{content_type:?}"
        );
        assert_eq!(body["result"]["tools"].as_array().map(Vec::len), Some(4), "{body}");
    }

    let baseline = conformance_dir().join("expected-failures.yaml");
    let excluded = expected_failures(&baseline);
    assert!(!excluded.is_empty(), "the baseline lists scenarios");
    for scenario in APPLICABLE {
        assert!(
            !excluded.iter().any(|e| e == scenario),
            "{scenario} applies and must not be excluded"
        );
    }
    let workdir = TempDir::new("conformance-run");
    let started = Instant::now();
    let (code, output) = run_suite(&server.mcp_url(), &baseline, workdir.path());
    assert_eq!(code, Some(0), "the conformance suite failed:\n{output}");
    assert!(output.contains("Baseline check passed"), "{output}");

    // Every applicable scenario ran and passed at least one check.
    for scenario in APPLICABLE {
        let line = output
            .lines()
            .find(|l| {
                l.trim_start_matches(['✓', '✗', ' '])
                    .starts_with(&format!("{scenario}: "))
            })
            .unwrap_or_else(|| panic!("{scenario} did not run:\n{output}"));
        let counts = line.split(": ").nth(1).unwrap_or_default();
        let passed: usize = counts
            .split(" passed")
            .next()
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0);
        assert!(
            line.starts_with('✓') && passed >= 1 && counts.contains(" 0 failed"),
            "{scenario}: {line}\n{output}"
        );
    }
    // The baseline is exact: every excluded scenario ran and failed as expected.
    for scenario in &excluded {
        assert!(
            output.lines().any(|l| l.trim() == format!("~ {scenario}")),
            "{scenario} is not reported as an expected failure:\n{output}"
        );
    }
    let total = output
        .lines()
        .find(|l| l.starts_with("Total: "))
        .unwrap_or_default()
        .to_owned();
    eprintln!(
        "conformance: {} applicable scenarios passed, {} excluded by the baseline ({total}) in {:.1?}",
        APPLICABLE.len(),
        excluded.len(),
        started.elapsed()
    );
}
