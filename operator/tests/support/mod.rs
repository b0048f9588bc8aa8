//! The golden cases and helpers shared by the integration tests.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use palisade_operator::bind::bound_policies;
use palisade_operator::render::{Inputs, render};
use palisade_operator::{Settings, build_children, validate};

/// One golden case: an input file (relative to the repository), the namespace it is rendered
/// into (as its header comment says: `kubectl apply -n ...`), and its expected output
/// `operator/tests/golden/<name>.yaml`.
pub struct Case {
    /// Name of the golden file.
    pub name: &'static str,
    /// Input, relative to the repository root.
    pub input: &'static str,
    /// `--namespace`.
    pub namespace: &'static str,
}

/// Every sample of `config/samples/` (seeds 001 and 002, and two proxies) and the every-switch input.
pub const CASES: [Case; 6] = [
    Case {
        name: "company-info",
        input: "config/samples/company-info.yaml",
        namespace: "team-a",
    },
    Case {
        name: "sso-docs",
        input: "config/samples/sso-docs.yaml",
        namespace: "team-b",
    },
    Case {
        name: "external-secrets",
        input: "config/samples/external-secrets/vendor-handbook.yaml",
        namespace: "team-c",
    },
    Case {
        name: "filesystem-proxy",
        input: "config/samples/filesystem-proxy.yaml",
        namespace: "team-d",
    },
    Case {
        name: "everything-container",
        input: "config/samples/everything-container.yaml",
        namespace: "team-e",
    },
    Case {
        name: "everything",
        input: "operator/tests/golden/inputs/everything.yaml",
        namespace: "default",
    },
];

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("operator/ is inside the repository")
        .to_owned()
}

/// The Cargo target directory.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| repo_root().join("target"), PathBuf::from)
}

/// The expected output of a case.
pub fn golden_path(case: &Case) -> PathBuf {
    repo_root()
        .join("operator/tests/golden")
        .join(format!("{}.yaml", case.name))
}

fn inputs(case: &Case) -> Inputs {
    Inputs::read(&[repo_root().join(case.input)], case.namespace).unwrap_or_else(|e| panic!("{}: {e}", case.input))
}

/// `palisade-operator render -f <input> --namespace <namespace>` with the default settings.
pub fn render_case(case: &Case) -> String {
    render(&inputs(case), &Settings::default())
        .unwrap_or_else(|e| panic!("{}: {e}", case.input))
        .yaml
}

/// Every child object of every server of a case, as `(built into Kubernetes, YAML)`.
pub fn children(case: &Case) -> Vec<(bool, String)> {
    let inputs = inputs(case);
    let mut out = Vec::new();
    for server in &inputs.servers {
        let bound = bound_policies(server, &inputs.policies);
        let validated =
            validate(server, &bound.policies, &Settings::default()).unwrap_or_else(|e| panic!("{}: {e}", case.input));
        for child in build_children(&validated, &Settings::default()).iter() {
            out.push((child.is_builtin(), yaml_serde::to_string(&child).expect("serializes")));
        }
    }
    out
}

/// A tool of the test virtualenv (`make e2e-deps`: the pinned kubernetes-validate, jsonschema,
/// Helm's engine).
pub fn venv_bin(tool: &str) -> PathBuf {
    let path = target_dir().join("e2e-deps/venv/bin").join(tool);
    assert!(
        path.exists(),
        "{} is missing: run `make e2e-deps` (installs the pinned kubernetes-validate, jsonschema and helm-python-sdk)",
        path.display()
    );
    path
}

/// An upstream CRD vendored in `tests/schemas/upstream/` (External Secrets Operator, Prometheus
/// Operator; `scripts/refresh_upstream_schemas.sh` refreshes them).
pub fn upstream_crd(file: &str) -> PathBuf {
    let path = repo_root().join("tests/schemas/upstream").join(file);
    assert!(
        path.exists(),
        "{} is missing: the upstream CRDs are vendored in tests/schemas/upstream/ (scripts/refresh_upstream_schemas.sh)",
        path.display()
    );
    path
}

fn output_text(output: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `kubernetes-validate --strict` for Kubernetes `version` on a file with `count` objects;
/// Ok(its output) only if every one passed.
pub fn kubernetes_validate(file: &Path, version: &str, count: usize) -> Result<String, String> {
    let output = Command::new(venv_bin("kubernetes-validate"))
        .args(["--strict", "--kubernetes-version", version])
        .arg(file)
        .output()
        .expect("run kubernetes-validate");
    let text = output_text(&output);
    // NB: kubernetes-validate exits 0 with a WARN for kinds it has no schema for: count passes.
    let passed = text.matches(" passed for resource ").count();
    if output.status.success() && passed == count && !text.contains("WARN") {
        Ok(text)
    } else {
        Err(text)
    }
}

/// `support/validate_custom_resources.py`: the custom resources in `file` against the schema of
/// `crd`, strict; Ok(its output) only if every one passed.
pub fn validate_custom_resources(crd: &Path, file: &Path) -> Result<String, String> {
    let output = Command::new(venv_bin("python"))
        .arg(repo_root().join("operator/tests/support/validate_custom_resources.py"))
        .arg(crd)
        .arg(file)
        .output()
        .expect("run validate_custom_resources.py");
    let text = output_text(&output);
    if output.status.success() { Ok(text) } else { Err(text) }
}

/// A file of the repository, by its path relative to the root.
pub fn read_repo_file(relative: &str) -> String {
    let path = repo_root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The documents of a multi-document YAML text, empty ones left out.
pub fn yaml_documents(text: &str) -> Vec<serde_json::Value> {
    use serde::Deserialize;
    yaml_serde::Deserializer::from_str(text)
        .map(|document| serde_json::Value::deserialize(document).expect("valid YAML"))
        .filter(|value| !value.is_null())
        .collect()
}

/// `Kind namespace/name` of an object.
pub fn object_key(object: &serde_json::Value) -> String {
    format!(
        "{} {}/{}",
        object["kind"].as_str().unwrap_or("?"),
        object["metadata"]["namespace"].as_str().unwrap_or(""),
        object["metadata"]["name"].as_str().unwrap_or("?"),
    )
}

/// The object of `kind` named `name`; panics, listing what there is, when there is none.
pub fn find_object<'a>(objects: &'a [serde_json::Value], kind: &str, name: &str) -> &'a serde_json::Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| {
            panic!(
                "no {kind} {name} in {:?}",
                objects.iter().map(object_key).collect::<Vec<_>>()
            )
        })
}

/// `kubectl kustomize` of a directory of the repository.
pub fn kustomize(dir: &str) -> Vec<serde_json::Value> {
    let output = Command::new("kubectl")
        .arg("kustomize")
        .arg(repo_root().join(dir))
        .output()
        .expect("run `kubectl kustomize` (kubectl must be on PATH)");
    assert!(
        output.status.success(),
        "kubectl kustomize {dir}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    yaml_documents(&String::from_utf8(output.stdout).expect("UTF-8"))
}

/// Writes `objects` as multi-document YAML into `<CARGO_TARGET_TMPDIR>/<dir>/<name>`, for the
/// validators. Each document is JSON (valid YAML): yaml_serde writes the string "on" unquoted,
/// which kubernetes-validate (PyYAML, YAML 1.1) would read as a boolean.
pub fn scratch_documents<'a>(
    dir: &str,
    name: &str,
    objects: impl IntoIterator<Item = &'a serde_json::Value>,
) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    let path = dir.join(name);
    let text: String = objects
        .into_iter()
        .map(|o| format!("---\n{}\n", serde_json::to_string_pretty(o).expect("serializes")))
        .collect();
    std::fs::write(&path, text).expect("write objects");
    path
}
