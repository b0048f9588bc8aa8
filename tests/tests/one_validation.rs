//! One validation path: the same manifest gets the same verdict and, word for word, the same
//! message from `palisade-server policy check` / `policy compile` / `policy explain` and
//! `palisade-operator render` (the controller runs the same `palisade_crds::validate`).

use std::path::Path;
use std::process::{Command, Output};

use palisade_e2e::{TempDir, operator_binary, repo_root, server_binary};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `render` and the three `policy` commands on one file.
fn all_four(file: &Path) -> [(String, Output); 4] {
    let file = file.to_str().expect("UTF-8 path");
    let run = |binary: &Path, args: &[&str]| Command::new(binary).args(args).output().expect("run");
    let server = server_binary();
    let operator = operator_binary();
    [
        ("render".to_owned(), run(&operator, &["render", "-f", file])),
        ("policy check".to_owned(), run(&server, &["policy", "check", file])),
        ("policy compile".to_owned(), run(&server, &["policy", "compile", file])),
        (
            "policy explain".to_owned(),
            run(
                &server,
                &[
                    "policy",
                    "explain",
                    file,
                    "--tool",
                    "get_public_info",
                    "--scope",
                    "public:read",
                ],
            ),
        ),
    ]
}

fn sample_with(dir: &TempDir, name: &str, from: &str, to: &str) -> std::path::PathBuf {
    let sample = std::fs::read_to_string(repo_root().join("config/samples/company-info.yaml")).expect("sample");
    let changed = sample.replace(from, to);
    assert_ne!(changed, sample, "{from:?} is not in the sample");
    let file = dir.path().join(name);
    std::fs::write(&file, changed).expect("write");
    file
}

#[test]
fn a_misspelt_test_field_fails_everywhere_with_the_message_render_gives() {
    // The third test case says `deny:` instead of `denied:`. Before, `policy check` passed it
    // ("pass", exit 0) while `render` refused it.
    let dir = TempDir::new("one-validation");
    let file = sample_with(
        &dir,
        "misspelt.yaml",
        "      denied: [get_public_info, get_confidential_info]",
        "      deny: [get_public_info, get_confidential_info]",
    );
    let expected = format!(
        "error: {} (document 4): McpAccessPolicy default/company-info-access: unknown field(s): spec.tests[2].deny\n",
        file.display()
    );
    for (command, output) in all_four(&file) {
        assert_eq!(output.status.code(), Some(1), "{command}");
        assert!(output.stdout.is_empty(), "{command}: {}", text(&output.stdout));
        assert_eq!(text(&output.stderr), expected, "{command}");
    }
}

#[test]
fn the_operators_server_checks_fail_policy_check_too() {
    // The Service's metrics port is a check of the operator's (it is not a policy problem), and
    // `policy check` now refuses the server exactly as `render` does.
    let dir = TempDir::new("one-validation");
    let file = sample_with(
        &dir,
        "metrics-port.yaml",
        "spec:\n  replicas: 2\n",
        "spec:\n  replicas: 2\n  service: {port: 9090}\n",
    );
    let expected = "error: McpServer default/company-info is invalid:\n  McpServer default/company-info: \
                    spec.service.port: port 9090 is the Service's metrics port; choose another\n";
    for (command, output) in all_four(&file) {
        assert_eq!(output.status.code(), Some(1), "{command}");
        assert!(output.stdout.is_empty(), "{command}: {}", text(&output.stdout));
        assert_eq!(text(&output.stderr), expected, "{command}");
    }
}

#[test]
fn a_valid_manifest_passes_everywhere() {
    let sample = repo_root().join("config/samples/company-info.yaml");
    for (command, output) in all_four(&sample) {
        assert!(output.status.success(), "{command}: {}", text(&output.stderr));
        assert_eq!(text(&output.stderr), "", "{command}");
        assert!(!output.stdout.is_empty(), "{command}");
    }
}
