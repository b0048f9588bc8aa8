//! Where `palisade-server` writes: documents (tokens, policies, reports, help) on standard output;
//! logs, warnings and errors on standard error, for every command; and text logs without colour
//! codes unless standard error is a terminal.

use std::net::TcpListener;
use std::process::{Command, Output};

fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_palisade-server")
}

fn run(args: &[&str]) -> Output {
    Command::new(binary()).args(args).output().expect("run palisade-server")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `serve` that fails at once: its MCP port is taken. Before that it logs that the policy file is
/// missing; then that it cannot listen.
fn failing_serve(log_format: &str, taken: &TcpListener) -> Vec<String> {
    let listen = taken.local_addr().expect("address").to_string();
    [
        "serve",
        "--policy-file",
        "/nonexistent/policy.yaml",
        "--listen",
        &listen,
        "--metrics-listen",
        "127.0.0.1:0",
        "--log-format",
        log_format,
    ]
    .map(str::to_owned)
    .to_vec()
}

#[test]
fn text_logs_have_no_colour_codes_when_redirected() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let output = Command::new(binary())
        .args(failing_serve("text", &taken))
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty(), "{}", text(&output.stdout));
    let log = text(&output.stderr);
    assert!(log.contains(" ERROR palisade_server: cannot listen error="), "{log}");
    assert!(!log.contains('\u{1b}'), "colour codes in a redirected log: {log:?}");
}

#[test]
fn text_logs_are_coloured_on_a_terminal() {
    // The control: under a pseudo-terminal (util-linux `script`), the same command colours its
    // levels, so the test above would see codes if the terminal check were missing.
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let command = std::iter::once(binary().to_owned())
        .chain(failing_serve("text", &taken))
        .collect::<Vec<_>>()
        .join(" ");
    let output = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .output()
        .expect("run `script` (util-linux) to give the server a terminal");
    let log = text(&output.stdout);
    assert!(log.contains("\u{1b}[31mERROR\u{1b}[0m"), "{log:?}");
}

#[test]
fn json_logs_go_to_stderr() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let output = Command::new(binary())
        .args(failing_serve("json", &taken))
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty());
    let last = text(&output.stderr).lines().last().unwrap_or_default().to_owned();
    let event: serde_json::Value = serde_json::from_str(&last).expect("a JSON log line");
    assert_eq!(event["level"], "ERROR");
    assert_eq!(event["message"], "cannot listen");
}

#[test]
fn every_command_writes_errors_to_stderr_only() {
    let absent = "/nonexistent/manifest.yaml";
    for args in [
        vec!["token", "--policy-file", "/nonexistent/policy.yaml"],
        vec!["token", "--exp", "soon", "--key-file", absent, "--aud", "x"],
        vec!["policy", "check", absent],
        vec!["policy", "compile", absent],
        vec!["policy", "explain", absent, "--tool", "t"],
        vec!["policy", "explain", "--policy-file", absent, "--tool", "t"],
        // Usage errors (clap).
        vec!["policy", "check"],
        vec!["serve", "--listen", "nowhere"],
        vec!["no-such-command"],
    ] {
        let output = run(&args);
        assert!(!output.status.success(), "{args:?}");
        assert!(
            output.stdout.is_empty(),
            "{args:?} wrote to stdout: {}",
            text(&output.stdout)
        );
        assert!(
            text(&output.stderr).starts_with("error: "),
            "{args:?}: {}",
            text(&output.stderr)
        );
    }
}

#[test]
fn help_and_version_are_documents() {
    for args in [vec!["--help"], vec!["policy", "explain", "--help"], vec!["--version"]] {
        let output = run(&args);
        assert!(output.status.success(), "{args:?}");
        assert!(output.stderr.is_empty(), "{args:?}: {}", text(&output.stderr));
        assert!(!output.stdout.is_empty(), "{args:?}");
    }
}
