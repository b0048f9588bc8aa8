//! Where `palisade-operator` writes: documents (rendered objects, CRDs, help) on standard output;
//! logs, warnings and errors on standard error, for every command; and text logs without colour
//! codes unless standard error is a terminal.

use std::path::{Path, PathBuf};
use std::process::Command;

fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_palisade-operator")
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root")
        .to_path_buf()
}

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("streams");
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir.join(name)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `palisade-operator run` with no cluster to talk to: it logs why and stops.
fn run_without_cluster(log_format: &str) -> Command {
    let home = scratch("home");
    std::fs::create_dir_all(&home).expect("home");
    let mut command = Command::new(binary());
    command
        .args(["run", "--log-format", log_format, "--metrics-listen", "127.0.0.1:0"])
        .env("KUBECONFIG", scratch("no-kubeconfig"))
        .env("HOME", home)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT");
    command
}

#[test]
fn render_refuses_a_misspelt_field_on_stderr() {
    let sample = std::fs::read_to_string(repo().join("config/samples/company-info.yaml")).expect("sample");
    let misspelt = sample.replace(
        "      denied: [get_public_info, get_confidential_info]",
        "      deny: [get_public_info, get_confidential_info]",
    );
    let file = scratch("misspelt.yaml");
    std::fs::write(&file, misspelt).expect("write");
    let output = Command::new(binary())
        .args(["render", "-f"])
        .arg(&file)
        .args(["--namespace", "team-a"])
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty());
    // Word for word what `palisade-server policy check` prints (server/tests/cli.rs).
    assert_eq!(
        text(&output.stderr),
        format!(
            "error: {} (document 4): McpAccessPolicy team-a/company-info-access: unknown field(s): \
             spec.tests[2].deny\n",
            file.display()
        )
    );
}

#[test]
fn render_writes_objects_to_stdout_and_warnings_to_stderr() {
    let output = Command::new(binary())
        .args(["render", "-f"])
        .arg(repo().join("config/samples/sso-docs.yaml"))
        .output()
        .expect("run");
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(text(&output.stdout).starts_with("# Rendered by `palisade-operator render`"));
    for line in text(&output.stderr).lines() {
        assert!(line.starts_with("warning: "), "{line}");
    }
}

#[test]
fn every_command_writes_errors_to_stderr_only() {
    let absent = scratch("absent.yaml");
    let absent = absent.to_str().expect("UTF-8 path");
    let missing_dir = scratch("no-such-dir/sub");
    for args in [
        vec!["render", "-f", absent],
        vec!["crds", "--out-dir", missing_dir.to_str().expect("UTF-8 path")],
        vec!["render"],
        vec!["run", "--metrics-listen", "nowhere"],
        vec!["no-such-command"],
    ] {
        let output = Command::new(binary()).args(&args).output().expect("run");
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
fn run_logs_to_stderr_without_colour_codes_when_redirected() {
    let output = run_without_cluster("text").output().expect("run");
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty(), "{}", text(&output.stdout));
    let log = text(&output.stderr);
    assert!(log.contains(" ERROR "), "{log}");
    assert!(log.contains("palisade-operator stopped"), "{log}");
    assert!(!log.contains('\u{1b}'), "colour codes in a redirected log: {log:?}");

    let output = run_without_cluster("json").output().expect("run");
    assert!(output.stdout.is_empty());
    let last = text(&output.stderr).lines().last().unwrap_or_default().to_owned();
    let event: serde_json::Value = serde_json::from_str(&last).expect("a JSON log line");
    assert_eq!(event["level"], "ERROR");
}
