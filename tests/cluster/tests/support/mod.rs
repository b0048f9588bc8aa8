//! What the cluster suite's cases share: the control plane, `kubectl`, waiting, the operator as
//! a process authenticated as its own ServiceAccount.

pub mod harness;
pub mod kubelet;
pub mod operator;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use palisade_cluster::ControlPlane;
use palisade_crds::McpServer;
use serde_json::json;

/// The field manager of what the tests apply (as a user would with `kubectl apply`).
pub const TEST_MANAGER: &str = "palisade-cluster-suite";

/// What every case gets.
pub struct Cluster {
    /// The control plane.
    pub plane: ControlPlane,
    /// An admin client.
    pub client: Client,
}

impl Cluster {
    /// `kubectl` with the admin kubeconfig.
    pub fn kubectl(&self) -> Kubectl {
        Kubectl {
            kubeconfig: self.plane.admin_kubeconfig().to_owned(),
        }
    }

    /// Creates namespace `name` (server-side apply: idempotent).
    pub async fn namespace(&self, name: &str) {
        Api::<Namespace>::all(self.client.clone())
            .patch(
                name,
                &PatchParams::apply(TEST_MANAGER).force(),
                &Patch::Apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})),
            )
            .await
            .unwrap_or_else(|e| panic!("create namespace {name}: {e}"));
    }
}

/// `kubectl` against one kubeconfig.
#[derive(Clone)]
pub struct Kubectl {
    kubeconfig: PathBuf,
}

impl Kubectl {
    /// Runs `kubectl ARGS` with `stdin`, returning its output whatever its status.
    pub fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut child = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl is installed (make test installs it)");
        if let Some(text) = stdin {
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(text.as_bytes())
                .expect("write kubectl stdin");
        }
        child.wait_with_output().expect("kubectl output")
    }

    /// Runs `kubectl ARGS` and returns its standard output; panics with its standard error when it
    /// fails.
    pub fn ok(&self, args: &[&str]) -> String {
        self.ok_with(args, None)
    }

    /// [`Kubectl::ok`] with standard input.
    pub fn ok_with(&self, args: &[&str], stdin: Option<&str>) -> String {
        let output = self.run(args, stdin);
        assert!(
            output.status.success(),
            "kubectl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("kubectl prints UTF-8")
    }

    /// `kubectl apply --server-side` of YAML text into `namespace`.
    pub fn apply(&self, namespace: &str, yaml: &str) -> String {
        self.ok_with(
            &[
                "apply",
                "--server-side",
                "--field-manager",
                TEST_MANAGER,
                "--force-conflicts",
                "-n",
                namespace,
                "-f",
                "-",
            ],
            Some(yaml),
        )
    }
}

/// Polls `probe` every 250 ms until it gives a value; panics after `timeout`.
pub async fn wait_for<T, F>(what: &str, timeout: Duration, mut probe: impl FnMut() -> F) -> T
where
    F: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = probe().await {
            eprintln!("    ok: {what} ({:.1} s)", start.elapsed().as_secs_f64());
            return value;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// `(status, reason)` of an McpServer's condition.
pub fn condition(server: &McpServer, type_: &str) -> Option<(String, String)> {
    let status = server.status.as_ref()?;
    let c = status.conditions.iter().find(|c| c.type_ == type_)?;
    Some((c.status.clone(), c.reason.clone()))
}

/// The repository's file `path`.
pub fn repo_file(path: &str) -> String {
    let full = palisade_cluster::repo_root().join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// A cargo-built binary of the workspace (built once per run).
pub fn workspace_binary(package: &str, binary: &str) -> PathBuf {
    let status = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "--locked", "-p", package, "--bin", binary])
        .current_dir(palisade_cluster::repo_root())
        .status()
        .expect("run cargo build");
    assert!(status.success(), "cargo build -p {package} failed");
    palisade_cluster::target_dir().join("debug").join(binary)
}
