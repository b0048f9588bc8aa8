//! The golden cases and helpers shared by the integration tests.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

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

/// Every sample of `config/samples/` (seeds 001 and 002) and the every-switch input.
pub const CASES: [Case; 4] = [
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
