//! The processes of the control plane: start, wait ready, restart, stop.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::kubeconfig::{Credentials, write_kubeconfig};
use crate::pki::Pki;
use crate::{Error, bin_dir};

/// The processes, in start order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    /// etcd.
    Etcd,
    /// kube-apiserver.
    ApiServer,
    /// kube-controller-manager (garbage collector, namespaces, Deployments, ReplicaSets, service
    /// accounts, `kube-root-ca.crt`).
    ControllerManager,
}

impl Component {
    /// The binary's name, also the name of its log file.
    pub fn name(self) -> &'static str {
        match self {
            Self::Etcd => "etcd",
            Self::ApiServer => "kube-apiserver",
            Self::ControllerManager => "kube-controller-manager",
        }
    }

    const ALL: [Self; 3] = [Self::Etcd, Self::ApiServer, Self::ControllerManager];
}

/// The loopback ports the processes listen on (kept across restarts).
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    /// etcd's client port.
    pub etcd_client: u16,
    /// etcd's peer port.
    pub etcd_peer: u16,
    /// The API server's secure port.
    pub api_server: u16,
}

impl Ports {
    fn pick() -> Result<Self, Error> {
        let port = || -> Result<u16, Error> {
            let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| Error::io(Path::new("127.0.0.1:0"), e))?;
            Ok(listener
                .local_addr()
                .map_err(|e| Error::io(Path::new("127.0.0.1:0"), e))?
                .port())
        };
        Ok(Self {
            etcd_client: port()?,
            etcd_peer: port()?,
            api_server: port()?,
        })
    }
}

/// A running control plane. Dropping it stops every process (unless [`ControlPlane::detach`]ed).
pub struct ControlPlane {
    dir: PathBuf,
    pki: Pki,
    ports: Ports,
    children: Vec<(Component, Child)>,
    admin_kubeconfig: PathBuf,
}

/// How long the API server may take to answer `/readyz` after its start.
const READY_TIMEOUT: Duration = Duration::from_secs(90);

impl ControlPlane {
    /// Starts etcd, the API server and the controller manager in `dir` (wiped first), and waits
    /// until the API server is ready.
    pub async fn start(dir: &Path) -> Result<Self, Error> {
        for component in Component::ALL {
            let binary = bin_dir().join(component.name());
            if !binary.is_file() {
                return Err(Error::NotBuilt(binary));
            }
        }
        if dir.exists() {
            std::fs::remove_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        for sub in ["pki", "logs", "etcd"] {
            let path = dir.join(sub);
            std::fs::create_dir_all(&path).map_err(|e| Error::io(&path, e))?;
        }
        let pki = Pki::generate(&dir.join("pki"))?;
        let ports = Ports::pick()?;
        let admin_kubeconfig = dir.join("kubeconfig");
        write_kubeconfig(
            &admin_kubeconfig,
            &format!("https://127.0.0.1:{}", ports.api_server),
            &pki.ca_cert,
            Credentials::Certificate(&pki.admin),
        )?;
        write_kubeconfig(
            &dir.join("controller-manager.kubeconfig"),
            &format!("https://127.0.0.1:{}", ports.api_server),
            &pki.ca_cert,
            Credentials::Certificate(&pki.controller_manager),
        )?;
        let mut plane = Self {
            dir: dir.to_owned(),
            pki,
            ports,
            children: Vec::new(),
            admin_kubeconfig,
        };
        for component in Component::ALL {
            plane.start_component(component).await?;
        }
        Ok(plane)
    }

    /// The directory of its files (certificates, kubeconfigs, logs, etcd's data).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The certificates and keys.
    pub fn pki(&self) -> &Pki {
        &self.pki
    }

    /// The listening ports.
    pub fn ports(&self) -> Ports {
        self.ports
    }

    /// `https://127.0.0.1:<port>`.
    pub fn server_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.ports.api_server)
    }

    /// The service-account issuer (the API server's URL; it serves the OIDC discovery document).
    pub fn service_account_issuer(&self) -> String {
        self.server_url()
    }

    /// The admin kubeconfig (`system:masters`).
    pub fn admin_kubeconfig(&self) -> &Path {
        &self.admin_kubeconfig
    }

    /// A client of the admin kubeconfig.
    pub async fn admin_client(&self) -> Result<Client, Error> {
        client_for(&self.admin_kubeconfig).await
    }

    /// The log file of a component.
    pub fn log_file(&self, component: Component) -> PathBuf {
        self.dir.join("logs").join(format!("{}.log", component.name()))
    }

    /// Kills `component` (SIGKILL, as a crash) and starts it again with the same ports, data and
    /// certificates; waits until it is ready.
    pub async fn restart(&mut self, component: Component) -> Result<(), Error> {
        self.kill(component);
        self.start_component(component).await
    }

    /// Kills `component` without starting it again.
    pub fn kill(&mut self, component: Component) {
        if let Some(index) = self.children.iter().position(|(c, _)| *c == component) {
            let (_, mut child) = self.children.remove(index);
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts `component` (which must not be running) and waits until it is ready.
    pub async fn start_component(&mut self, component: Component) -> Result<(), Error> {
        let log_path = self.log_file(component);
        let log = File::options()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| Error::io(&log_path, e))?;
        let err = log.try_clone().map_err(|e| Error::io(&log_path, e))?;
        let mut command = Command::new(bin_dir().join(component.name()));
        command
            .args(self.arguments(component))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err);
        // Its own process group: a Ctrl-C in the terminal of `make cluster` does not reach it.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let child = command
            .spawn()
            .map_err(|e| Error::io(&bin_dir().join(component.name()), e))?;
        self.children.push((component, child));
        self.wait_ready(component).await
    }

    fn arguments(&self, component: Component) -> Vec<String> {
        let dir = |name: &str| self.dir.join(name).display().to_string();
        let path = |p: &Path| p.display().to_string();
        let Ports {
            etcd_client,
            etcd_peer,
            api_server,
        } = self.ports;
        match component {
            Component::Etcd => vec![
                "--name=default".into(),
                format!("--data-dir={}", dir("etcd")),
                format!("--listen-client-urls=http://127.0.0.1:{etcd_client}"),
                format!("--advertise-client-urls=http://127.0.0.1:{etcd_client}"),
                format!("--listen-peer-urls=http://127.0.0.1:{etcd_peer}"),
                format!("--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}"),
                format!("--initial-cluster=default=http://127.0.0.1:{etcd_peer}"),
                // A test cluster: losing the last writes on a power cut is fine, fsync latency is not.
                "--unsafe-no-fsync=true".into(),
                "--log-level=warn".into(),
            ],
            Component::ApiServer => vec![
                format!("--etcd-servers=http://127.0.0.1:{etcd_client}"),
                format!("--secure-port={api_server}"),
                "--bind-address=127.0.0.1".into(),
                "--advertise-address=127.0.0.1".into(),
                format!("--tls-cert-file={}", path(&self.pki.serving.cert)),
                format!("--tls-private-key-file={}", path(&self.pki.serving.key)),
                format!("--client-ca-file={}", path(&self.pki.ca_cert)),
                "--authorization-mode=RBAC".into(),
                format!("--service-account-issuer={}", self.service_account_issuer()),
                format!(
                    "--service-account-key-file={}",
                    path(&self.pki.service_account_public_key)
                ),
                format!(
                    "--service-account-signing-key-file={}",
                    path(&self.pki.service_account_key)
                ),
                "--service-cluster-ip-range=10.0.0.0/24".into(),
                // No kubelet registers the API server's own endpoints.
                "--endpoint-reconciler-type=none".into(),
                "--allow-privileged=true".into(),
                "--profiling=false".into(),
                format!("--cert-dir={}", dir("pki")),
            ],
            Component::ControllerManager => vec![
                format!("--kubeconfig={}", dir("controller-manager.kubeconfig")),
                format!("--authentication-kubeconfig={}", dir("controller-manager.kubeconfig")),
                format!("--authorization-kubeconfig={}", dir("controller-manager.kubeconfig")),
                "--bind-address=127.0.0.1".into(),
                "--secure-port=0".into(),
                "--leader-elect=false".into(),
                format!("--root-ca-file={}", path(&self.pki.ca_cert)),
                format!(
                    "--service-account-private-key-file={}",
                    path(&self.pki.service_account_key)
                ),
                // Each controller as its own service account, with the roles Kubernetes bootstraps
                // for it (as in a real cluster).
                "--use-service-account-credentials=true".into(),
                // Every default controller: the garbage collector, namespaces, Deployments and
                // ReplicaSets, service accounts and the `kube-root-ca.crt` publisher among them.
                "--controllers=*".into(),
                // Quick reactions for tests: these default to tens of seconds.
                "--concurrent-gc-syncs=5".into(),
            ],
        }
    }

    async fn wait_ready(&mut self, component: Component) -> Result<(), Error> {
        let start = Instant::now();
        loop {
            if let Some(problem) = self.exited(component) {
                return Err(self.not_ready(component, problem));
            }
            let ready = match component {
                Component::Etcd => tokio::net::TcpStream::connect(("127.0.0.1", self.ports.etcd_client))
                    .await
                    .is_ok(),
                Component::ApiServer => self.api_server_ready().await,
                // It has no readiness endpoint of its own here (secure port off); it is ready when
                // it has published the root CA into `default`, its first visible act.
                Component::ControllerManager => self.root_ca_published().await,
            };
            if ready {
                return Ok(());
            }
            if start.elapsed() > READY_TIMEOUT {
                return Err(self.not_ready(component, format!("was not ready after {READY_TIMEOUT:?}")));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn api_server_ready(&self) -> bool {
        let Ok(client) = self.admin_client().await else {
            return false;
        };
        let request = http::Request::get("/readyz").body(Vec::new()).expect("request");
        matches!(tokio::time::timeout(Duration::from_secs(5), client.request_text(request)).await, Ok(Ok(body)) if body.trim() == "ok")
    }

    async fn root_ca_published(&self) -> bool {
        let Ok(client) = self.admin_client().await else {
            return false;
        };
        let config_maps: kube::Api<k8s_openapi::api::core::v1::ConfigMap> = kube::Api::namespaced(client, "default");
        matches!(config_maps.get_opt("kube-root-ca.crt").await, Ok(Some(_)))
    }

    fn exited(&mut self, component: Component) -> Option<String> {
        let (_, child) = self.children.iter_mut().find(|(c, _)| *c == component)?;
        match child.try_wait() {
            Ok(Some(status)) => Some(format!("exited ({status})")),
            _ => None,
        }
    }

    fn not_ready(&self, component: Component, problem: String) -> Error {
        let log = self.log_file(component);
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        Error::NotReady {
            component: component.name(),
            problem,
            log: log.display().to_string(),
            tail: lines[lines.len().saturating_sub(30)..].join("\n"),
        }
    }

    /// Leaves the processes running after this value is dropped, writing their process ids to
    /// `<dir>/pids` (for `palisade-cluster down`).
    pub fn detach(mut self) -> Result<PathBuf, Error> {
        let pids: Vec<String> = self
            .children
            .drain(..)
            .map(|(component, child)| format!("{} {}", child.id(), component.name()))
            .collect();
        let path = self.dir.join("pids");
        std::fs::write(&path, pids.join("\n") + "\n").map_err(|e| Error::io(&path, e))?;
        Ok(path)
    }

    /// Stops every process, the last started first.
    pub fn stop(&mut self) {
        while let Some((_, mut child)) = self.children.pop() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A client of a kubeconfig file.
pub async fn client_for(kubeconfig: &Path) -> Result<Client, Error> {
    let error = |message: String| Error::Kubeconfig {
        path: kubeconfig.to_owned(),
        message,
    };
    let config = Kubeconfig::read_from(kubeconfig).map_err(|e| error(e.to_string()))?;
    let mut config = kube::Config::from_custom_kubeconfig(config, &KubeConfigOptions::default())
        .await
        .map_err(|e| error(e.to_string()))?;
    config.connect_timeout = Some(Duration::from_secs(5));
    config.read_timeout = Some(Duration::from_secs(30));
    Client::try_from(config).map_err(|e| error(e.to_string()))
}
