//! The repository stands on its own: nothing refers to files beside it, the upstream CRDs the
//! tests validate against are vendored unchanged with their licence and origin, and the README
//! says plainly how to install while no image is published.

use std::path::Path;
use std::process::Command;

use palisade_e2e::repo_root;

/// Text files of the repository, relative paths, skipping build output and installed clients.
fn text_files(dir: &Path, out: &mut Vec<String>) {
    const SKIPPED: [&str; 5] = ["target", "node_modules", ".git", ".venv", "__pycache__"];
    const TEXT: [&str; 10] = ["rs", "sh", "py", "md", "toml", "yaml", "yml", "json", "txt", "lua"];
    for entry in std::fs::read_dir(dir).expect("read dir").filter_map(Result::ok) {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if path.is_dir() {
            if !SKIPPED.contains(&name.as_str()) {
                text_files(&path, out);
            }
        } else if name == "Makefile"
            || name == "run"
            || path.extension().is_some_and(|e| TEXT.contains(&&*e.to_string_lossy()))
        {
            let relative = path.strip_prefix(repo_root()).expect("inside").display().to_string();
            out.push(relative);
        }
    }
}

#[test]
fn nothing_refers_to_files_beside_the_repository() {
    let mut files = Vec::new();
    text_files(&repo_root(), &mut files);
    assert!(files.len() > 100, "{files:?}");
    let mut found = Vec::new();
    for file in &files {
        let Ok(text) = std::fs::read_to_string(repo_root().join(file)) else {
            continue;
        };
        for (number, line) in text.lines().enumerate() {
            // NB: spelt in two halves, so that this file does not find itself.
            for needle in [
                concat!("../", "shared"),
                concat!("shared", "/schemas"),
                concat!("/work/", "shared"),
            ] {
                if line.contains(needle) {
                    found.push(format!("{file}:{}: {line}", number + 1));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "references outside the repository:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_vendored_upstream_crds_are_unchanged_and_say_where_they_come_from() {
    let dir = repo_root().join("tests/schemas/upstream");
    let check = Command::new("sha256sum")
        .args(["--check", "--strict", "SHA256SUMS"])
        .current_dir(&dir)
        .output()
        .expect("run sha256sum");
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stdout));
    let listed = std::fs::read_to_string(dir.join("SHA256SUMS")).expect("SHA256SUMS");
    for file in [
        "external-secrets.io_externalsecrets.yaml",
        "external-secrets.io_secretstores.yaml",
        "external-secrets.io_clustersecretstores.yaml",
        "monitoring.coreos.com_servicemonitors.yaml",
        "monitoring.coreos.com_prometheusrules.yaml",
    ] {
        assert!(listed.contains(file), "SHA256SUMS lacks {file}");
    }
    let licence = std::fs::read_to_string(dir.join("LICENSE")).expect("LICENSE");
    assert!(licence.contains("Apache License") && licence.contains("Version 2.0, January 2004"));
    assert!(dir.join("NOTICE").exists());

    // The README names the tags the refresh script downloads, and the Prometheus Operator's
    // files carry that version.
    let script = std::fs::read_to_string(repo_root().join("scripts/refresh_upstream_schemas.sh")).expect("script");
    let readme = std::fs::read_to_string(dir.join("README.md")).expect("README.md");
    let pinned = |name: &str| -> String {
        script
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("the script pins no {name}"))
            .to_owned()
    };
    for name in ["ESO_VERSION", "PROMETHEUS_OPERATOR_VERSION"] {
        let tag = pinned(name);
        assert!(
            readme.contains(&format!("`{tag}`")),
            "README.md does not name {name} {tag}"
        );
    }
    let prometheus = pinned("PROMETHEUS_OPERATOR_VERSION");
    let servicemonitors =
        std::fs::read_to_string(dir.join("monitoring.coreos.com_servicemonitors.yaml")).expect("servicemonitors");
    assert!(servicemonitors.contains(&format!(
        "operator.prometheus.io/version: {}",
        prometheus.trim_start_matches('v')
    )));
    assert!(readme.contains("Apache-2.0"));
}

#[test]
fn the_readme_says_the_images_must_be_built_and_pushed_until_releases_publish_them() {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).expect("README.md");
    let install = readme
        .split("## Installing on a cluster")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("README.md has an Installing on a cluster section");
    for expected in [
        "No release has been published yet",
        "make image",
        "docker push",
        "a registry",
        "--set image.repository=",
        "--set mcpServers.image.repository=",
        "config/overlays/private-registry",
        ".github/workflows/release.yml",
    ] {
        assert!(
            install.contains(expected),
            "Installing on a cluster does not say {expected:?}"
        );
    }
}

#[test]
fn the_private_registry_overlay_replaces_both_images() {
    let output = Command::new("kubectl")
        .args(["kustomize", "config/overlays/private-registry"])
        .current_dir(repo_root())
        .output()
        .expect("run kubectl kustomize (make test-deps installs kubectl)");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let rendered = String::from_utf8_lossy(&output.stdout);
    let cargo = std::fs::read_to_string(repo_root().join("Cargo.toml")).expect("Cargo.toml");
    let version = cargo
        .lines()
        .find_map(|l| l.strip_prefix("version = \""))
        .and_then(|v| v.strip_suffix('"'))
        .expect("workspace version");
    assert!(
        rendered.contains(&format!(
            "image: registry.example.com/palisade/palisade-operator:{version}"
        )),
        "{rendered}"
    );
    assert!(
        rendered.contains(&format!(
            "value: registry.example.com/palisade/palisade-server:{version}"
        )),
        "{rendered}"
    );
    assert!(
        !rendered.contains("ghcr.io/palisade-dev/"),
        "an image still points at ghcr.io"
    );
}
