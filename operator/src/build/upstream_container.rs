//! `spec.upstream.container`: the upstream MCP server run in each of the server's pods, in a
//! container of its own.
//!
//! Why its own container rather than a child of `palisade-server`: containers of a pod have
//! separate mounts, so the upstream sees none of the server's volumes (policy, HMAC keys, API-key
//! tables, upstream credentials) — a child would run as the same user in the same file system
//! and could read them, mint tokens and signal the server. Its resources are its own, and
//! `kubectl logs -c upstream` shows its log.
//!
//! - **Stdio**: an init container from the server's image copies `palisade-stdio-shim` (a static
//!   binary, so it runs on any image's libc or none) into an emptyDir; the upstream container
//!   runs `palisade-stdio-shim run --socket /run/palisade/upstream/stdio.sock -- <command>
//!   <args>`, and the server (`PALISADE_UPSTREAM_SOCKET`) connects to that socket, which lives in
//!   a second emptyDir both containers mount. Each connection is a new upstream process.
//! - **StreamableHttp**: the container runs its own command; the server reaches it at
//!   `http://127.0.0.1:<port><path>` (`PALISADE_UPSTREAM_URL`). It also listens on the pod's IP:
//!   the NetworkPolicy is on by default for such a server, admitting only Palisade's ports.
//!
//! Both containers run as the restricted Pod Security Standard asks (non-root 65532, read-only
//! root filesystem with an emptyDir at `/tmp` and `HOME=/tmp`, no privilege escalation, every
//! capability dropped, `RuntimeDefault` seccomp).

use std::collections::BTreeMap;

use palisade_crds::McpServer;
use palisade_crds::k8s_openapi::api::core::v1::{
    Container, EmptyDirVolumeSource, EnvVar, ResourceRequirements, SecurityContext, Volume, VolumeMount,
};
use palisade_crds::k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use palisade_crds::upstream::{UPSTREAM_SOCKET_DIR, UPSTREAM_SOCKET_FILE, UpstreamContainer, UpstreamTransport};

use super::pod::{pull_policy, restricted};

/// The upstream's container name (`kubectl logs <pod> -c upstream`).
pub const UPSTREAM_CONTAINER: &str = "upstream";
/// The init container that installs the shim.
pub const SHIM_INIT_CONTAINER: &str = "install-stdio-shim";
/// The shim in the server image.
pub const SHIM_IN_IMAGE: &str = "/usr/local/bin/palisade-stdio-shim";
/// Where the shim is installed, in the init and upstream containers.
pub const SHIM_DIR: &str = "/palisade/bin";
const SHIM_VOLUME: &str = "palisade-stdio-shim";
const SOCKET_VOLUME: &str = "upstream-socket";
const TMP_VOLUME: &str = "upstream-tmp";

/// What a container upstream adds to the pod.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamPod {
    /// emptyDirs: the shim's, the socket's and the upstream's `/tmp`.
    pub volumes: Vec<Volume>,
    /// The shim's installation (stdio only).
    pub init_containers: Vec<Container>,
    /// The upstream.
    pub container: Container,
    /// Mounts the server container gets (the socket's directory, stdio only).
    pub server_mounts: Vec<VolumeMount>,
}

/// The socket the server connects to (stdio), in both containers.
pub fn socket_path() -> String {
    format!("{UPSTREAM_SOCKET_DIR}/{UPSTREAM_SOCKET_FILE}")
}

/// The pod parts of `upstream`, with the server's image `server_image` for the shim's init step.
pub fn upstream_pod(
    upstream: &UpstreamContainer,
    server_image: &str,
    server_pull_policy: Option<String>,
) -> UpstreamPod {
    let mut volumes = vec![empty_dir(TMP_VOLUME)];
    let mut mounts = vec![mount(TMP_VOLUME, "/tmp", false)];
    let mut init_containers = Vec::new();
    let mut server_mounts = Vec::new();
    let command = match upstream.transport {
        UpstreamTransport::Stdio => {
            volumes.push(empty_dir(SHIM_VOLUME));
            volumes.push(empty_dir(SOCKET_VOLUME));
            mounts.push(mount(SHIM_VOLUME, SHIM_DIR, true));
            mounts.push(mount(SOCKET_VOLUME, UPSTREAM_SOCKET_DIR, false));
            server_mounts.push(mount(SOCKET_VOLUME, UPSTREAM_SOCKET_DIR, false));
            init_containers.push(Container {
                name: SHIM_INIT_CONTAINER.into(),
                image: Some(server_image.to_owned()),
                image_pull_policy: server_pull_policy,
                command: Some(vec![SHIM_IN_IMAGE.into(), "install".into(), SHIM_DIR.into()]),
                volume_mounts: Some(vec![mount(SHIM_VOLUME, SHIM_DIR, false)]),
                resources: Some(small(None)),
                security_context: Some(restricted()),
                ..Container::default()
            });
            let mut command = vec![
                format!("{SHIM_DIR}/palisade-stdio-shim"),
                "run".into(),
                "--socket".into(),
                socket_path(),
                "--".into(),
            ];
            command.extend(upstream.command.iter().cloned());
            command.extend(upstream.args.iter().cloned());
            Some(command)
        }
        UpstreamTransport::StreamableHttp => Some(upstream.command.clone()).filter(|c| !c.is_empty()),
    };
    let args = match upstream.transport {
        // The shim takes the args after the command.
        UpstreamTransport::Stdio => None,
        UpstreamTransport::StreamableHttp => Some(upstream.args.clone()).filter(|a| !a.is_empty()),
    };
    // HOME first: the writable /tmp unless the spec sets it.
    let home = upstream
        .env
        .iter()
        .find(|e| e.name == "HOME")
        .cloned()
        .unwrap_or(EnvVar {
            name: "HOME".into(),
            value: Some("/tmp".into()),
            value_from: None,
        });
    let env: Vec<EnvVar> = std::iter::once(home)
        .chain(upstream.env.iter().filter(|e| e.name != "HOME").cloned())
        .collect();
    let container = Container {
        name: UPSTREAM_CONTAINER.into(),
        image: Some(upstream.image.clone()),
        image_pull_policy: upstream.image_pull_policy.map(|p| pull_policy(p).to_owned()),
        command,
        args,
        env: Some(env),
        volume_mounts: Some(mounts),
        resources: Some(small(upstream.resources.clone())),
        security_context: Some(security_context(upstream)),
        ..Container::default()
    };
    UpstreamPod {
        volumes,
        init_containers,
        container,
        server_mounts,
    }
}

/// The upstream's security context: [`restricted`], with the user and root filesystem its spec
/// asks for (root only when spelled out: `runAsUser: 0`).
fn security_context(upstream: &UpstreamContainer) -> SecurityContext {
    let mut context = restricted();
    if let Some(user) = upstream.run_as_user {
        context.run_as_user = Some(user);
        if user == 0 {
            context.run_as_non_root = Some(false);
        }
    }
    if let Some(read_only) = upstream.read_only_root_filesystem {
        context.read_only_root_filesystem = Some(read_only);
    }
    context
}

/// Whether `server`'s pods run as the restricted Pod Security Standard asks, for a server with a
/// container upstream (`None` otherwise): `Err` says what does not (pure).
pub fn pod_security(server: &McpServer) -> Option<Result<(), String>> {
    let container = server.spec.upstream.as_ref()?.container.as_ref()?;
    Some(match container.run_as_user {
        Some(0) => Err(
            "spec.upstream.container.runAsUser is 0: the upstream container runs as root, which the restricted Pod \
             Security Standard forbids (runAsNonRoot), so the pods are refused in namespaces that enforce it"
                .to_owned(),
        ),
        _ => Ok(()),
    })
}

/// `given`, or a small request and a 512Mi memory limit.
fn small(given: Option<ResourceRequirements>) -> ResourceRequirements {
    given.unwrap_or_else(|| ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_owned(), Quantity("50m".into())),
            ("memory".to_owned(), Quantity("64Mi".into())),
        ])),
        limits: Some(BTreeMap::from([("memory".to_owned(), Quantity("512Mi".into()))])),
        ..ResourceRequirements::default()
    })
}

fn empty_dir(name: &str) -> Volume {
    Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    }
}

fn mount(volume: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: volume.into(),
        mount_path: path.into(),
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stdio() -> UpstreamContainer {
        UpstreamContainer {
            image: "docker.io/mcp/filesystem:1.0.2".into(),
            image_pull_policy: None,
            transport: UpstreamTransport::Stdio,
            command: vec!["node".into(), "/app/dist/index.js".into()],
            args: vec!["/data".into()],
            env: vec![EnvVar {
                name: "LOG_LEVEL".into(),
                value: Some("debug".into()),
                value_from: None,
            }],
            resources: None,
            run_as_user: None,
            read_only_root_filesystem: None,
            port: None,
            path: None,
        }
    }

    #[test]
    fn root_is_only_what_the_spec_spells_out() {
        let root = UpstreamContainer {
            run_as_user: Some(0),
            read_only_root_filesystem: Some(false),
            ..stdio()
        };
        let context = upstream_pod(&root, "server:1", None)
            .container
            .security_context
            .unwrap();
        assert_eq!(
            (
                context.run_as_user,
                context.run_as_non_root,
                context.read_only_root_filesystem
            ),
            (Some(0), Some(false), Some(false))
        );
        assert_eq!(context.allow_privilege_escalation, Some(false));
        let default = upstream_pod(&stdio(), "server:1", None)
            .container
            .security_context
            .unwrap();
        assert_eq!((default.run_as_user, default.run_as_non_root), (None, Some(true)));
    }

    #[test]
    fn a_stdio_upstream_runs_under_the_shim_its_socket_shared_with_the_server_only() {
        let pod = upstream_pod(&stdio(), "ghcr.io/palisade-dev/palisade-server:0.1.0", None);
        assert_eq!(
            pod.container.command.as_deref().unwrap(),
            [
                "/palisade/bin/palisade-stdio-shim",
                "run",
                "--socket",
                "/run/palisade/upstream/stdio.sock",
                "--",
                "node",
                "/app/dist/index.js",
                "/data"
            ]
        );
        assert_eq!(pod.container.args, None);
        let init = &pod.init_containers[0];
        assert_eq!(
            init.image.as_deref(),
            Some("ghcr.io/palisade-dev/palisade-server:0.1.0")
        );
        assert_eq!(
            init.command.as_deref().unwrap(),
            ["/usr/local/bin/palisade-stdio-shim", "install", "/palisade/bin"]
        );
        let names: Vec<&str> = pod.volumes.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["upstream-tmp", "palisade-stdio-shim", "upstream-socket"]);
        assert_eq!(pod.server_mounts, [mount(SOCKET_VOLUME, UPSTREAM_SOCKET_DIR, false)]);
        let env: Vec<&str> = pod.container.env.iter().flatten().map(|e| e.name.as_str()).collect();
        assert_eq!(env, ["HOME", "LOG_LEVEL"]);
        // No volume of the server's (policy, secrets, documents) reaches the upstream.
        let mounted: Vec<&str> = pod
            .container
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| m.name.as_str())
            .collect();
        assert_eq!(mounted, ["upstream-tmp", "palisade-stdio-shim", "upstream-socket"]);
        assert_eq!(pod.container.security_context, Some(restricted()));
    }

    #[test]
    fn a_streamable_http_upstream_runs_its_own_command_and_shares_nothing_with_the_server() {
        let http = UpstreamContainer {
            transport: UpstreamTransport::StreamableHttp,
            command: Vec::new(),
            args: vec!["streamableHttp".into()],
            port: Some(3001),
            ..stdio()
        };
        let pod = upstream_pod(&http, "server:1", None);
        assert_eq!(pod.container.command, None, "the image's entrypoint");
        assert_eq!(pod.container.args.as_deref().unwrap(), ["streamableHttp"]);
        assert!(pod.init_containers.is_empty() && pod.server_mounts.is_empty());
        assert_eq!(http.loopback_url().as_deref(), Some("http://127.0.0.1:3001/mcp"));
    }
}
