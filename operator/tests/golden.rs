//! Golden tests of `palisade-operator render` (Stackable style: whole objects in, whole objects
//! out): the render of each case equals `operator/tests/golden/<case>.yaml`.
//!
//! After an intended change, rewrite the expected files and review the diff:
//! `UPDATE_GOLDEN=1 cargo test -p palisade-operator --test golden`.

mod support;

use std::process::Command;

use support::{CASES, golden_path, render_case, repo_root};

#[test]
fn render_matches_the_golden_files() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1");
    let mut mismatches = Vec::new();
    for case in &CASES {
        let rendered = render_case(case);
        let path = golden_path(case);
        if update {
            std::fs::write(&path, &rendered).expect("write golden file");
            continue;
        }
        let expected = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (create it with UPDATE_GOLDEN=1)", path.display()));
        if rendered != expected {
            let line = rendered
                .lines()
                .zip(expected.lines())
                .position(|(a, b)| a != b)
                .unwrap_or_else(|| rendered.lines().count().min(expected.lines().count()));
            mismatches.push(format!(
                "{}: first difference at line {}:\n  rendered: {:?}\n  expected: {:?}",
                path.display(),
                line + 1,
                rendered.lines().nth(line),
                expected.lines().nth(line)
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "render output differs from the golden files (if intended: UPDATE_GOLDEN=1 cargo test -p palisade-operator --test golden):\n{}",
        mismatches.join("\n")
    );
}

#[test]
fn every_sample_has_a_golden_case() {
    let top = std::fs::read_dir(repo_root().join("config/samples")).expect("config/samples");
    let external = std::fs::read_dir(repo_root().join("config/samples/external-secrets")).expect("samples");
    for sample in top.chain(external) {
        let path = sample.expect("entry").path();
        let has_server = std::fs::read_to_string(&path).is_ok_and(|text| text.contains("\nkind: McpServer\n"));
        if path.extension().is_some_and(|e| e == "yaml") && has_server {
            let relative = path.strip_prefix(repo_root()).expect("inside the repo");
            assert!(
                CASES.iter().any(|c| relative == std::path::Path::new(c.input)),
                "{} has no golden case in operator/tests/support/mod.rs",
                relative.display()
            );
        }
    }
}

/// The binary prints what the library renders, byte for byte.
#[test]
fn the_render_command_prints_the_golden_output() {
    let case = &CASES[0];
    let output = Command::new(env!("CARGO_BIN_EXE_palisade-operator"))
        .args(["render", "-f", case.input, "--namespace", case.namespace])
        .current_dir(repo_root())
        .env_remove("PALISADE_SERVER_IMAGE")
        .env_remove("PALISADE_SERVER_IMAGE_PULL_POLICY")
        .env_remove("PALISADE_CLUSTER_DOMAIN")
        .output()
        .expect("run palisade-operator");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let expected = std::fs::read_to_string(golden_path(case)).expect("golden file");
    assert_eq!(String::from_utf8_lossy(&output.stdout), expected);
}

/// A directory is read recursively; servers come out sorted, whatever the file order.
#[test]
fn a_directory_renders_every_server_in_it() {
    let output = Command::new(env!("CARGO_BIN_EXE_palisade-operator"))
        .args(["render", "-f", "config/samples", "-f", "operator/tests/golden/inputs"])
        .current_dir(repo_root())
        .output()
        .expect("run palisade-operator");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let headers: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("# McpServer "))
        .map(|l| l.split(':').next().unwrap_or_default())
        .collect();
    assert_eq!(
        headers,
        [
            "default/company-info",
            "default/everything",
            "default/files",
            "default/sso-docs",
            "default/vendor-handbook",
            "team-c/handbook"
        ]
    );
}

/// A policy whose own test fails is refused: exit 1, the field path on stderr, nothing on stdout.
#[test]
fn a_failing_policy_test_refuses_the_render() {
    let sample = std::fs::read_to_string(repo_root().join("config/samples/company-info.yaml")).expect("sample");
    let broken = sample.replace(
        "      visibleTools: [get_public_info]\n      allowed: [get_public_info]",
        "      visibleTools: [get_public_info, get_confidential_info]\n      allowed: [get_public_info]",
    );
    assert_ne!(broken, sample, "the sample changed; update this test");
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("broken-company-info.yaml");
    std::fs::write(&path, broken).expect("write input");
    let output = Command::new(env!("CARGO_BIN_EXE_palisade-operator"))
        .args(["render", "-n", "team-a", "-f"])
        .arg(&path)
        .output()
        .expect("run palisade-operator");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(output.stdout.is_empty());
    assert!(
        stderr.contains("McpServer team-a/company-info fails its policy tests"),
        "{stderr}"
    );
    assert!(
        stderr.contains("McpAccessPolicy team-a/company-info-access: spec.tests[0]: test \"a public token sees only public information\" failed: does not see get_confidential_info"),
        "{stderr}"
    );
}

/// An invalid server is refused with every problem and its field path.
#[test]
fn an_invalid_server_refuses_the_render() {
    let input = "apiVersion: palisade.dev/v1alpha1\nkind: McpServer\nmetadata: {name: 1bad}\n\
                 spec:\n  tools: [{name: t, collection: missing, action: get}]\n  auth: {allowAnonymous: true}\n";
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("invalid-server.yaml");
    std::fs::write(&path, input).expect("write input");
    let output = Command::new(env!("CARGO_BIN_EXE_palisade-operator"))
        .args(["render", "-f"])
        .arg(&path)
        .output()
        .expect("run palisade-operator");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("McpServer default/1bad: metadata.name"), "{stderr}");
    assert!(stderr.contains("spec.tools[0].collection"), "{stderr}");
}

/// The operator-wide trace export defaults reach the server container, the pod's name from the
/// downward API; a default that cannot be used stops the command, naming the flag or field.
#[test]
fn the_server_trace_defaults_render_into_the_container_and_bad_ones_stop_the_command() {
    let render = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_palisade-operator"))
            .args(["render", "-n", "team-a", "-f", "config/samples/company-info.yaml"])
            .args(["--server-otlp-endpoint", "http://otel-collector.observability:4318"])
            .args(extra)
            .current_dir(repo_root())
            .output()
            .expect("run palisade-operator")
    };
    let output = render(&[
        "--server-trace-sampler",
        "traceidratio",
        "--server-otlp-resource-attributes",
        "k8s.cluster.name=eu-1,deployment.environment.name=production",
    ]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8_lossy(&output.stdout);
    for line in [
        "- name: PALISADE_POD_NAME\n          valueFrom:\n            fieldRef:\n              apiVersion: v1\n              fieldPath: metadata.name",
        "- name: OTEL_TRACES_SAMPLER\n          value: traceidratio",
        "- name: OTEL_RESOURCE_ATTRIBUTES\n          value: k8s.namespace.name=team-a,service.namespace=team-a,k8s.deployment.name=company-info,k8s.pod.name=$(PALISADE_POD_NAME),deployment.environment.name=production,k8s.cluster.name=eu-1",
    ] {
        assert!(stdout.contains(line), "{line} in:\n{stdout}");
    }
    for (extra, message) in [
        (
            ["--server-trace-sampler", "always_on"],
            "invalid value 'always_on' for '--server-trace-sampler <SERVER_TRACE_SAMPLER>'\n  \
             [possible values: parentbased_traceidratio, traceidratio]",
        ),
        (
            ["--server-otlp-resource-attributes", "team"],
            "the server pods' trace export (--server-otlp-resource-attributes): \"team\" is not KEY=VALUE",
        ),
        (
            ["--server-otlp-resource-attributes", "k8s.pod.name=x"],
            "the server pods' trace export (--server-otlp-*): resourceAttributes \"k8s.pod.name\": the operator sets it",
        ),
        (
            ["--server-otlp-resource-attributes", "team=a b"],
            "the server pods' trace export (--server-otlp-*): resourceAttributes \"team\": the value \"a b\" is not at most 255 letters, digits and '.', '_', '-', '/', ':', '@', '+'",
        ),
    ] {
        let output = render(&extra);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success() && output.stdout.is_empty(), "{stderr}");
        assert!(stderr.contains(message), "{message} in {stderr}");
    }
}

/// The `crds` subcommand still prints both CRDs.
#[test]
fn the_crds_command_still_works() {
    let output = Command::new(env!("CARGO_BIN_EXE_palisade-operator"))
        .arg("crds")
        .output()
        .expect("run palisade-operator");
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(stdout.matches("kind: CustomResourceDefinition").count(), 2);
}
