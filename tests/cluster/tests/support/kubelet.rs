//! The harness plays kubelet for a `palisade-server` pod: it reads the pod template of the
//! Deployment the operator applied, projects its ConfigMap and Secret volumes the way kubelet
//! does (files under a timestamped directory, a `..data` symlink swapped atomically on every
//! change, one symlink per key), and runs the locally built `palisade-server` with the
//! template's arguments and environment, the volumes bind-mounted at the template's mount paths
//! in a mount namespace of its own (`unshare`, as root), so the process sees exactly the paths
//! the compiled policy names.
//!
//! [`Pod::start`] runs the Deployment's template once, on a loopback port. [`Kubelet`] does what
//! kubelet does for the Pods that kube-controller-manager creates (Deployment → ReplicaSet →
//! Pods): it runs each Pod of a namespace, on an address of its own (`127.1.x.y`: all of 127/8
//! is local on Linux) with the template's ports, and writes the Pod's status through the status
//! subresource (phase `Running`, `podIP`, `Ready=True` once `GET /ready` answers 200), so the
//! operator finds ready pods at real addresses; a Pod deleted (scale-down, rollout) is stopped.
//!
//! What it does not do: pull images, isolate the network (the port is overridden through
//! `PALISADE_LISTEN` and `PALISADE_METRICS_LISTEN`), enforce the security context, run probes
//! after the first readiness, or restart the container.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Container, KeyToPath, PodSpec, Secret, Volume};
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

/// A running pod of a Deployment; stopped on drop.
pub struct Pod {
    child: Child,
    /// The pod's other containers (a container upstream), stopped with SIGTERM on drop.
    sidecars: Vec<Child>,
    stop: Arc<AtomicBool>,
    projector: Option<tokio::task::JoinHandle<()>>,
    /// `http://<address>:<port>`: the MCP port.
    pub base_url: String,
    /// `http://<address>:<port>/metrics`: the metrics port.
    pub metrics_url: String,
    /// The server's log.
    pub log: PathBuf,
}

/// What one volume mount projects.
#[derive(Clone)]
struct Projection {
    source: Source,
    items: Option<Vec<KeyToPath>>,
    local: PathBuf,
}

#[derive(Clone)]
enum Source {
    ConfigMap(String),
    Secret(String),
    EmptyDir,
}

impl Pod {
    /// Starts the first container of Deployment `namespace/name` in `dir`, on loopback ports.
    pub async fn start(client: &Client, namespace: &str, name: &str, dir: &Path) -> Self {
        let deployment = Api::<Deployment>::namespaced(client.clone(), namespace)
            .get(name)
            .await
            .unwrap_or_else(|e| panic!("Deployment {namespace}/{name}: {e}"));
        let template = deployment.spec.expect("spec").template.spec.expect("pod spec");
        let listen = Listen {
            ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: palisade_e2e::free_port(),
            metrics_port: palisade_e2e::free_port(),
        };
        let pod = PodName {
            name: format!("{name}-stand-in"),
            namespace: namespace.to_owned(),
        };
        Self::run(client, &pod, &template, dir, listen, Duration::from_millis(300)).await
    }

    /// Runs the first container of `template` in `dir`, listening as `listen` says, projecting
    /// its volumes every `projection_period`; returns once `GET /ready` answers 200.
    async fn run(
        client: &Client,
        pod: &PodName,
        template: &PodSpec,
        dir: &Path,
        listen: Listen,
        projection_period: Duration,
    ) -> Self {
        let namespace = pod.namespace.as_str();
        let container = template.containers.first().expect("a container").clone();
        let volumes = template.volumes.clone().unwrap_or_default();
        let mounts = mounts(&container, &volumes, dir);
        let projections: Vec<Projection> = mounts.iter().map(|(_, p)| p.clone()).collect();
        for projection in &projections {
            std::fs::create_dir_all(&projection.local).expect("volume dir");
            project_once(client, namespace, projection).await;
        }
        // Init containers run to completion, then the other containers start beside the server.
        for init in template.init_containers.iter().flatten() {
            let mounts = mounts_created(init, &volumes, dir);
            let log = dir.join(format!("{}.log", init.name));
            let status = spawn_other(init, &mounts, pod, &log)
                .wait()
                .expect("wait for an init container");
            assert!(
                status.success(),
                "init container {} failed: {}",
                init.name,
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        let sidecars = template.containers[1..]
            .iter()
            .map(|other| {
                let mounts = mounts_created(other, &volumes, dir);
                spawn_other(other, &mounts, pod, &dir.join(format!("{}.log", other.name)))
            })
            .collect();
        let log = dir.join("server.log");
        let child = spawn(&container, &mounts, pod, &listen, &log);
        let stop = Arc::new(AtomicBool::new(false));
        let projector = {
            let (client, namespace, stop) = (client.clone(), namespace.to_owned(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    tokio::time::sleep(projection_period).await;
                    for projection in &projections {
                        project_once(&client, &namespace, projection).await;
                    }
                }
            })
        };
        let pod = Self {
            child,
            sidecars,
            stop,
            projector: Some(projector),
            base_url: format!("http://{}:{}", listen.ip, listen.port),
            metrics_url: format!("http://{}:{}/metrics", listen.ip, listen.metrics_port),
            log,
        };
        pod.wait_ready().await;
        pod
    }

    async fn wait_ready(&self) {
        let url = format!("{}/ready", self.base_url);
        for _ in 0..200 {
            let url = url.clone();
            let ok = tokio::task::spawn_blocking(move || {
                palisade_e2e::http_client()
                    .get(url)
                    .send()
                    .is_ok_and(|r| r.status().as_u16() == 200)
            })
            .await
            .unwrap_or(false);
            if ok {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "the pod's palisade-server did not become ready; its log:\n{}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    /// `<base>/mcp`.
    pub fn mcp_url(&self) -> String {
        format!("{}/mcp", self.base_url)
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(projector) = self.projector.take() {
            projector.abort();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // As kubelet does: SIGTERM (the stdio shim then stops its process group), SIGKILL later.
        for sidecar in &mut self.sidecars {
            let _ = Command::new("kill").args(["-TERM", &sidecar.id().to_string()]).status();
        }
        for sidecar in &mut self.sidecars {
            for _ in 0..50 {
                if sidecar.try_wait().ok().flatten().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = sidecar.kill();
            let _ = sidecar.wait();
        }
    }
}

/// [`mounts`] of `container`, their local directories created (emptyDirs are all a container
/// other than the server mounts).
fn mounts_created(container: &Container, volumes: &[Volume], dir: &Path) -> Vec<(String, Projection)> {
    let mounts = mounts(container, volumes, dir);
    for (_, projection) in &mounts {
        std::fs::create_dir_all(&projection.local).expect("volume dir");
    }
    mounts
}

/// The image's shim, which the harness has as a locally built binary.
const SHIM_IN_IMAGE: &str = "/usr/local/bin/palisade-stdio-shim";

/// Runs a container other than the server (an init container, a container upstream) as a
/// process: its command and args under `unshare` with its volumes bind-mounted, as [`spawn`]
/// does for the server. Images are not pulled: a command of the server image (the shim) is the
/// local build; any other command must exist on this machine (or in a mounted volume).
fn spawn_other(container: &Container, mounts: &[(String, Projection)], pod: &PodName, log: &Path) -> Child {
    let mut argv: Vec<String> = container.command.iter().flatten().cloned().collect();
    argv.extend(container.args.iter().flatten().cloned());
    assert!(!argv.is_empty(), "container {} has no command", container.name);
    let mut command = if argv[0] == SHIM_IN_IMAGE {
        unshared(container, mounts, pod, Some(&palisade_e2e::shim_binary()), &argv[1..])
    } else {
        unshared(container, mounts, pod, None, &argv)
    };
    let out = File::create(log).expect("container log");
    let err = out.try_clone().expect("container log");
    command
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("start container {} under unshare (needs root): {e}", container.name))
}

/// `(mount path, projection)` of every volume mount of `container`.
fn mounts(container: &Container, volumes: &[Volume], dir: &Path) -> Vec<(String, Projection)> {
    container
        .volume_mounts
        .iter()
        .flatten()
        .map(|mount| {
            let volume = volumes
                .iter()
                .find(|v| v.name == mount.name)
                .unwrap_or_else(|| panic!("volume {} of a mount", mount.name));
            let (source, items) = if let Some(config_map) = &volume.config_map {
                (Source::ConfigMap(config_map.name.clone()), config_map.items.clone())
            } else if let Some(secret) = &volume.secret {
                (
                    Source::Secret(secret.secret_name.clone().expect("secretName")),
                    secret.items.clone(),
                )
            } else if volume.empty_dir.is_some() {
                (Source::EmptyDir, None)
            } else {
                panic!("volume {} is of a kind this kubelet does not project", volume.name)
            };
            let local = dir.join("volumes").join(&volume.name);
            (mount.mount_path.clone(), Projection { source, items, local })
        })
        .collect()
}

/// The files of a projection as they are in the API now (`None`: the object does not exist).
async fn files(client: &Client, namespace: &str, projection: &Projection) -> Option<BTreeMap<String, Vec<u8>>> {
    let all: BTreeMap<String, Vec<u8>> = match &projection.source {
        Source::EmptyDir => return None,
        Source::ConfigMap(name) => {
            let map = Api::<ConfigMap>::namespaced(client.clone(), namespace)
                .get_opt(name)
                .await
                .ok()??;
            let mut files: BTreeMap<String, Vec<u8>> = map
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.into_bytes()))
                .collect();
            files.extend(map.binary_data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)));
            files
        }
        Source::Secret(name) => Api::<Secret>::namespaced(client.clone(), namespace)
            .get_opt(name)
            .await
            .ok()??
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect(),
    };
    Some(match &projection.items {
        None => all,
        Some(items) => items
            .iter()
            .filter_map(|item| Some((item.path.clone(), all.get(&item.key)?.clone())))
            .collect(),
    })
}

async fn project_once(client: &Client, namespace: &str, projection: &Projection) {
    if let Some(files) = files(client, namespace, projection).await {
        atomic_write(&projection.local, &files).expect("project a volume");
    }
}

/// kubelet's AtomicWriter: the files go into a fresh `..<timestamp>` directory, `..data` is
/// swapped to it by a rename (atomic), each top-level name is a symlink through `..data`, and
/// the old directory is removed. Does nothing when the files are unchanged.
pub fn atomic_write(dir: &Path, files: &BTreeMap<String, Vec<u8>>) -> std::io::Result<()> {
    let data = dir.join("..data");
    if let Ok(current) = std::fs::read_link(&data) {
        let same = files
            .iter()
            .all(|(name, content)| std::fs::read(dir.join(&current).join(name)).is_ok_and(|c| &c == content))
            && count_files(&dir.join(&current)) == files.len();
        if same {
            return Ok(());
        }
    }
    let stamp = format!(
        "..{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_nanos()
    );
    let fresh = dir.join(&stamp);
    std::fs::create_dir_all(&fresh)?;
    for (name, content) in files {
        let path = fresh.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, content)?;
    }
    let previous = std::fs::read_link(&data).ok();
    let temporary = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&temporary);
    std::os::unix::fs::symlink(&stamp, &temporary)?;
    std::fs::rename(&temporary, &data)?;
    let top: std::collections::BTreeSet<String> = files
        .keys()
        .map(|k| k.split('/').next().unwrap_or(k).to_owned())
        .collect();
    for name in &top {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new("..data").join(name), &link)?;
        }
    }
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("..") && !top.contains(&name) {
            std::fs::remove_file(entry.path())?;
        }
    }
    if let Some(previous) = previous {
        std::fs::remove_dir_all(dir.join(previous))?;
    }
    Ok(())
}

fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .flatten()
            .map(|e| if e.path().is_dir() { count_files(&e.path()) } else { 1 })
            .sum()
    })
}

/// The server container under [`unshared`], the locally built `palisade-server` with the
/// container's arguments, listening as `listen` says.
fn spawn(container: &Container, mounts: &[(String, Projection)], pod: &PodName, listen: &Listen, log: &Path) -> Child {
    let args: Vec<String> = container.args.iter().flatten().cloned().collect();
    let mut command = unshared(container, mounts, pod, Some(&palisade_e2e::server_binary()), &args);
    command
        .env("PALISADE_LISTEN", format!("{}:{}", listen.ip, listen.port))
        .env(
            "PALISADE_METRICS_LISTEN",
            format!("{}:{}", listen.ip, listen.metrics_port),
        );
    let out = File::create(log).expect("server log");
    let err = out.try_clone().expect("server log");
    command
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("start the pod's palisade-server under unshare (needs root)")
}

/// `unshare` a mount namespace, bind-mount every volume of `mounts` at its mount path, then exec
/// `local` (a file of this machine, opened before any mount) with `args`, or, without `local`,
/// `args` as a command line found inside the namespace. The environment is `PATH` and the
/// container's [`environment`].
///
/// NB: a mount path may hide the harness's own files (the template mounts an emptyDir at `/tmp`,
/// and a clone of the repository may live under `/tmp`): such mounts come after the volumes
/// whose sources they would hide.
fn unshared(
    container: &Container,
    mounts: &[(String, Projection)],
    pod: &PodName,
    local: Option<&Path>,
    args: &[String],
) -> Command {
    let hides = |mount_path: &str| {
        mounts
            .iter()
            .any(|(_, p)| p.local.starts_with(mount_path) && p.local != Path::new(mount_path))
    };
    let mut ordered: Vec<&(String, Projection)> = mounts.iter().collect();
    // Stable: those that hide nothing first, in template order.
    ordered.sort_by_key(|(mount_path, _)| hides(mount_path));
    let mut script = String::from("set -e\nexec 3<\"$1\"\n");
    for (mount_path, projection) in ordered {
        // The mount point must exist in the (shared) file system; an empty directory is all
        // that is left behind outside the namespace.
        std::fs::create_dir_all(mount_path).unwrap_or_else(|e| panic!("mount point {mount_path}: {e}"));
        script.push_str(&format!(
            "mount --bind '{}' '{}'\n",
            projection.local.display(),
            mount_path
        ));
    }
    script.push_str(match local {
        Some(_) => "shift\nexec /proc/self/fd/3 \"$@\"\n",
        None => "shift\nexec \"$@\"\n",
    });
    let mut command = Command::new("unshare");
    command
        .args(["--mount", "--propagation", "private", "--", "sh", "-c", &script, "sh"])
        // Without a local program, fd 3 is /dev/null and unused.
        .arg(local.unwrap_or(Path::new("/dev/null")))
        .args(args);
    command.env_clear().env("PATH", "/usr/bin:/bin");
    command.envs(environment(container, pod));
    command
}

/// A pod's name and namespace, for the downward API.
pub struct PodName {
    pub name: String,
    pub namespace: String,
}

/// The container's variables as kubelet makes them: plain values with `$(NAME)` references to
/// variables defined before them expanded (`$$` is a `$`; an unknown name stays as written), and
/// the downward API's `metadata.name` and `metadata.namespace`. Other sources (Secret keys) are
/// left out: no test's container reads one.
fn environment(container: &Container, pod: &PodName) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = Vec::new();
    for var in container.env.iter().flatten() {
        let value = match (&var.value, var.value_from.as_ref().and_then(|v| v.field_ref.as_ref())) {
            (Some(value), _) => expand(value, &env),
            (None, Some(field)) => match field.field_path.as_str() {
                "metadata.name" => pod.name.clone(),
                "metadata.namespace" => pod.namespace.clone(),
                other => panic!("{}: the stand-in kubelet has no field {other}", var.name),
            },
            (None, None) => continue,
        };
        env.push((var.name.clone(), value));
    }
    env
}

/// `value` with kubelet's `$(NAME)` expansion over `defined`.
fn expand(value: &str, defined: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        if let Some(after) = rest.strip_prefix("$$") {
            out.push('$');
            rest = after;
        } else if let Some((name, after)) = rest.strip_prefix("$(").and_then(|r| r.split_once(')'))
            && let Some((_, known)) = defined.iter().rev().find(|(n, _)| n == name)
        {
            out.push_str(known);
            rest = after;
        } else {
            out.push('$');
            rest = &rest[1..];
        }
    }
    out.push_str(rest);
    out
}

/// Where a pod's server listens.
struct Listen {
    ip: IpAddr,
    port: u16,
    metrics_port: u16,
}

/// The next pod address: `127.1.x.y`, distinct for every pod of the run.
fn next_pod_ip() -> IpAddr {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    IpAddr::V4(Ipv4Addr::new(
        127,
        1,
        u8::try_from(n / 250).expect("fewer pods"),
        u8::try_from(n % 250 + 1).expect("< 251"),
    ))
}

/// The container port named `name` in `container`, else `default`.
fn container_port(container: &Container, name: &str, default: u16) -> u16 {
    container
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some(name))
        .and_then(|p| u16::try_from(p.container_port).ok())
        .unwrap_or(default)
}

/// Plays kubelet for every Pod of one namespace until dropped (see the module's documentation).
pub struct Kubelet {
    task: tokio::task::JoinHandle<()>,
    running: Arc<Mutex<BTreeMap<String, String>>>,
}

/// The field manager of the Pod status the stand-in writes.
const KUBELET_MANAGER: &str = "palisade-cluster-kubelet";

impl Kubelet {
    /// Starts playing kubelet in `namespace`: pods' files under `dir/<pod>`, ConfigMap and Secret
    /// changes projected every `projection_period` (kubelet's own sync takes up to a minute).
    pub fn start(client: &Client, namespace: &str, dir: &Path, projection_period: Duration) -> Self {
        let running = Arc::new(Mutex::new(BTreeMap::new()));
        let task = {
            let (client, namespace, dir, running) =
                (client.clone(), namespace.to_owned(), dir.to_owned(), running.clone());
            tokio::spawn(async move {
                let pods_api: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), &namespace);
                let mut pods: HashMap<String, Pod> = HashMap::new();
                loop {
                    if let Ok(list) = pods_api.list(&ListParams::default()).await {
                        let live: Vec<_> = list
                            .items
                            .into_iter()
                            .filter(|p| p.metadata.deletion_timestamp.is_none())
                            .collect();
                        // Stop what was deleted.
                        let names: std::collections::HashSet<String> = live.iter().map(ResourceExt::name_any).collect();
                        pods.retain(|name, _| names.contains(name));
                        running.lock().expect("running").retain(|name, _| names.contains(name));
                        for pod in live {
                            let name = pod.name_any();
                            if pods.contains_key(&name) {
                                continue;
                            }
                            let Some(spec) = pod.spec.clone() else { continue };
                            let container = spec.containers.first().expect("a container");
                            let listen = Listen {
                                ip: next_pod_ip(),
                                port: container_port(container, "mcp", 8080),
                                metrics_port: container_port(container, "metrics", 9090),
                            };
                            let ip = listen.ip;
                            let pod_name = PodName {
                                name: name.clone(),
                                namespace: namespace.clone(),
                            };
                            let started =
                                Pod::run(&client, &pod_name, &spec, &dir.join(&name), listen, projection_period).await;
                            report_running(&pods_api, &name, ip).await;
                            eprintln!("    kubelet: pod {namespace}/{name} running at {}", started.base_url);
                            running
                                .lock()
                                .expect("running")
                                .insert(name.clone(), started.base_url.clone());
                            pods.insert(name, started);
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            })
        };
        Self { task, running }
    }

    /// `pod name → http://<podIP>:<port>` of every pod running now.
    pub fn running(&self) -> BTreeMap<String, String> {
        self.running.lock().expect("running").clone()
    }
}

impl Drop for Kubelet {
    /// Stops every pod (dropping the task drops its [`Pod`]s, which kill their servers).
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Writes what kubelet writes once the container passed its readiness probe.
async fn report_running(pods: &Api<k8s_openapi::api::core::v1::Pod>, name: &str, ip: IpAddr) {
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let condition = |type_: &str| json!({"type": type_, "status": "True", "lastTransitionTime": now});
    let status = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "status": {
            "phase": "Running",
            "podIP": ip.to_string(),
            "podIPs": [{"ip": ip.to_string()}],
            "startTime": now,
            "conditions": [condition("PodScheduled"), condition("Initialized"), condition("ContainersReady"), condition("Ready")],
        }
    });
    pods.patch_status(
        name,
        &PatchParams::apply(KUBELET_MANAGER).force(),
        &Patch::Apply(&status),
    )
    .await
    .unwrap_or_else(|e| panic!("write the status of pod {name}: {e}"));
}
