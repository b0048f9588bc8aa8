//! `palisade-operator run` as a process, authenticated as its own ServiceAccount with exactly
//! the RBAC of `config/rbac/` (rendered by `kubectl kustomize`, as the install does), never as
//! cluster-admin.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

use palisade_cluster::{Credentials, write_kubeconfig};

use super::{Cluster, workspace_binary};

/// The operator's namespace, as in `config/rbac/`.
pub const OPERATOR_NAMESPACE: &str = "palisade-system";
/// The operator's ServiceAccount, as in `config/rbac/`.
pub const OPERATOR_ACCOUNT: &str = "palisade-operator";

/// The operator binary (built once per run).
pub fn binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| workspace_binary("palisade-operator", "palisade-operator"))
        .clone()
}

/// Installs `config/rbac` (kustomize) and returns a kubeconfig with a token of the operator's
/// ServiceAccount.
pub async fn install_rbac(cluster: &Cluster) -> PathBuf {
    cluster.namespace(OPERATOR_NAMESPACE).await;
    let kubectl = cluster.kubectl();
    let root = palisade_cluster::repo_root();
    let rbac = kubectl.ok(&["kustomize", &root.join("config/rbac").display().to_string()]);
    kubectl.apply(OPERATOR_NAMESPACE, &rbac);
    service_account_kubeconfig(cluster, OPERATOR_NAMESPACE, OPERATOR_ACCOUNT)
}

/// A kubeconfig with a bound token (TokenRequest API, two hours) of `namespace/account`.
pub fn service_account_kubeconfig(cluster: &Cluster, namespace: &str, account: &str) -> PathBuf {
    let token = cluster
        .kubectl()
        .ok(&["create", "token", account, "-n", namespace, "--duration", "2h"]);
    let path = cluster.plane.dir().join(format!("{namespace}-{account}.kubeconfig"));
    write_kubeconfig(
        &path,
        &cluster.plane.server_url(),
        &cluster.plane.pki().ca_cert,
        Credentials::Token(token.trim()),
    )
    .expect("write service-account kubeconfig");
    path
}

/// A running operator, killed on drop.
pub struct Operator {
    child: Option<Child>,
    /// `http://127.0.0.1:<port>` of /health, /ready, /metrics.
    pub http: String,
    identity: String,
}

impl Operator {
    /// Starts `palisade-operator run` with `kubeconfig`, leader election in the operator's
    /// namespace, and `extra` arguments.
    pub fn start(cluster: &Cluster, kubeconfig: &std::path::Path, identity: &str, extra: &[&str]) -> Self {
        Self::start_with_env(cluster, kubeconfig, identity, extra, &[])
    }

    /// Like [`Operator::start`], with environment variables (its `OTEL_*` settings).
    pub fn start_with_env(
        cluster: &Cluster,
        kubeconfig: &std::path::Path,
        identity: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let port = palisade_e2e::free_port();
        let log = cluster
            .plane
            .dir()
            .join("logs")
            .join(format!("operator-{identity}.log"));
        let out = File::create(&log).expect("operator log");
        let err = out.try_clone().expect("operator log");
        let child = Command::new(binary())
            .args(["run", "--leader-election-namespace", OPERATOR_NAMESPACE])
            .args(["--metrics-listen", &format!("127.0.0.1:{port}")])
            .args(["--log-format", "json"])
            .args(extra)
            .env("KUBECONFIG", kubeconfig)
            .env("POD_NAME", identity)
            .env("HOSTNAME", identity)
            .env(
                "RUST_LOG",
                std::env::var("PALISADE_OPERATOR_LOG").unwrap_or_else(|_| "info,palisade_operator=debug".into()),
            )
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("start palisade-operator");
        Self {
            child: Some(child),
            http: format!("http://127.0.0.1:{port}"),
            identity: identity.to_owned(),
        }
    }

    /// Kills it (SIGKILL: a crash, no Lease release).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Its leader-election identity.
    pub fn identity(&self) -> &str {
        &self.identity
    }
}

impl Drop for Operator {
    /// SIGTERM, as kubelet stops a pod: the operator releases its Lease and exits; SIGKILL if it
    /// has not within ten seconds.
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while std::time::Instant::now() < deadline {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        }
        self.kill();
    }
}

impl Operator {
    /// The sum of every sample of metric `name` on its `/metrics` (0 when it does not answer).
    pub async fn metric(&self, name: &str) -> f64 {
        let url = format!("{}/metrics", self.http);
        let name = name.to_owned();
        tokio::task::spawn_blocking(move || {
            let Ok(text) = palisade_e2e::http_client().get(url).send().and_then(|r| r.text()) else {
                return 0.0;
            };
            text.lines()
                .filter(|l| l.starts_with(&name) && l[name.len()..].starts_with(['{', ' ']))
                .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
                .sum()
        })
        .await
        .expect("scrape")
    }

    /// Whether the process has exited.
    pub fn exited(&mut self) -> bool {
        self.child.as_mut().is_none_or(|c| matches!(c.try_wait(), Ok(Some(_))))
    }
}
