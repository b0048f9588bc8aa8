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

/// A token of the development issuer (`palisade-dev`, HS256 with `key`) for `resource`, valid
/// for an hour, with `subject` and `groups`.
pub fn dev_token(key: &[u8], resource: &str, subject: &str, groups: &[&str]) -> String {
    let now = palisade_e2e::unix_now() as i64;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"iss": "palisade-dev", "sub": subject, "aud": resource, "iat": now, "exp": now + 3600,
                "groups": groups}),
        &jsonwebtoken::EncodingKey::from_secret(key),
    )
    .expect("sign")
}

/// A JSON-RPC request `method` with `params` to an MCP endpoint (at revision 2025-11-25): the
/// HTTP status and the body.
pub async fn mcp(url: &str, token: &str, method: &str, params: serde_json::Value) -> (u16, String) {
    post_mcp(url, None, token, method, params).await
}

/// [`mcp`] with the body parsed (`Null` when it is not JSON) and, when given, a `Host` header of
/// `host` (a pod at its pod IP serves only the hosts of its resource and loopback).
pub async fn mcp_json(
    url: &str,
    host: Option<&str>,
    token: &str,
    method: &str,
    params: serde_json::Value,
) -> (u16, serde_json::Value) {
    let (status, body) = post_mcp(url, host, token, method, params).await;
    (status, serde_json::from_str(&body).unwrap_or(serde_json::Value::Null))
}

async fn post_mcp(
    url: &str,
    host: Option<&str>,
    token: &str,
    method: &str,
    params: serde_json::Value,
) -> (u16, String) {
    let (url, token, method) = (url.to_owned(), token.to_owned(), method.to_owned());
    let host = host.map(str::to_owned);
    tokio::task::spawn_blocking(move || {
        let mut request = palisade_e2e::http_client().post(url);
        if let Some(host) = host {
            request = request.header("host", host);
        }
        let response = request
            .bearer_auth(token)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2025-11-25")
            .body(json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string())
            .send()
            .expect("the pod answers");
        let status = response.status().as_u16();
        (status, response.text().unwrap_or_default())
    })
    .await
    .expect("join")
}
