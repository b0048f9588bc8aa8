//! The pod template of the server Deployment: one `palisade-server serve` container under the
//! Kubernetes "restricted" Pod Security Standard.
//!
//! - runs as user and group 65532 (non-root), read-only root filesystem, no privilege escalation,
//!   every capability dropped, `RuntimeDefault` seccomp;
//! - no service-account token (the server calls no Kubernetes API) and no service links; only
//!   when an issuer is the cluster's service-account issuer, a short-lived projected token and the
//!   cluster CA for its OIDC discovery ([`super::cluster_issuer`]);
//! - configured through the `PALISADE_*` environment (the server's flags' twins), with the file
//!   layout of [`super::volumes`]; a proxy (`spec.upstream`) gets its upstream's URL, timeout and
//!   header files there too ([`upstream_env`]), and a request timeout longer than the upstream's;
//! - liveness `/health`, readiness `/ready` (policy and documents loaded), a startup probe, and a
//!   short `preStop` sleep so that endpoints are gone before the server drains;
//! - spread over nodes and zones unless `spec.scheduling.topologySpreadConstraints` says otherwise;
//! - the labels and annotations of `spec.podTemplate` under the operator's own, which always win
//!   (the labels select the pods).
//!
//! What deliberately is not on the template: the policy hash or any content hash. The server
//! reloads the policy, documents and secret files in place, so content changes must not roll the
//! pods; everything that does need a restart (image, volumes, environment) is part of the
//! template itself and rolls the pods by changing it.

use std::collections::BTreeMap;

use palisade_crds::McpServer;
use palisade_crds::document::{DEFAULT_DOCUMENTS_DIR, DEFAULT_POLICY_PATH};
use palisade_crds::k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EnvVar, HTTPGetAction, Lifecycle, LifecycleHandler, PodSecurityContext,
    PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile, SecurityContext, SleepAction,
    TopologySpreadConstraint,
};
use palisade_crds::k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use palisade_crds::k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use palisade_crds::k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use palisade_crds::kube::ResourceExt as _;
use palisade_crds::mcp_server::ImagePullPolicy;
use palisade_crds::secret_uses::secret_uses;
use palisade_crds::upstream::REQUEST_TIMEOUT_MARGIN_SECONDS;

use super::cluster_issuer;
use super::upstream_container::{self, upstream_pod};
use super::volumes::volumes;
use crate::names::{self, Component};
use crate::ports;
use crate::settings::Settings;
use crate::validate::ValidatedServer;

/// User and group the server runs as (the "nonroot" user of distroless images).
pub const RUN_AS: i64 = 65532;

/// The pod template.
pub fn pod_template(input: &ValidatedServer<'_>, settings: &Settings) -> PodTemplateSpec {
    let spec = &input.server().spec;
    let scheduling = spec.scheduling.clone().unwrap_or_default();
    let (mut volumes, mut mounts): (Vec<_>, Vec<_>) = volumes(input).into_iter().unzip();
    let extra = spec.pod_template.clone().unwrap_or_default();
    let server = container(input, settings);
    let upstream = spec.upstream.as_ref().and_then(|u| u.container.as_ref()).map(|c| {
        upstream_pod(
            c,
            server.image.as_deref().unwrap_or_default(),
            server.image_pull_policy.clone(),
        )
    });
    let mut containers = Vec::new();
    let mut init_containers = None;
    if let Some(upstream) = upstream {
        volumes.extend(upstream.volumes);
        mounts.extend(upstream.server_mounts);
        init_containers = Some(upstream.init_containers).filter(|c| !c.is_empty());
        containers.push(upstream.container);
    }
    containers.insert(
        0,
        Container {
            volume_mounts: Some(mounts),
            ..server
        },
    );
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(under(extra.labels, names::labels(input.name(), Component::Server))),
            annotations: Some(under(extra.annotations, operator_annotations())),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            service_account_name: Some(names::service_account(input.name())),
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(RUN_AS),
                run_as_group: Some(RUN_AS),
                fs_group: Some(RUN_AS),
                seccomp_profile: Some(runtime_default()),
                ..PodSecurityContext::default()
            }),
            init_containers,
            containers,
            volumes: Some(volumes),
            node_selector: Some(scheduling.node_selector).filter(|s| !s.is_empty()),
            tolerations: Some(scheduling.tolerations).filter(|t| !t.is_empty()),
            affinity: scheduling.affinity,
            priority_class_name: scheduling.priority_class_name,
            topology_spread_constraints: Some(
                scheduling
                    .topology_spread_constraints
                    .unwrap_or_else(|| default_topology_spread(input.name())),
            )
            .filter(|c| !c.is_empty()),
            ..PodSpec::default()
        }),
    }
}

/// The annotations the operator puts on every pod: the default container for `kubectl`, and
/// where Prometheus scrapes.
pub fn operator_annotations() -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "kubectl.kubernetes.io/default-container".to_owned(),
            names::CONTAINER.to_owned(),
        ),
        ("prometheus.io/scrape".to_owned(), "true".to_owned()),
        ("prometheus.io/port".to_owned(), ports::METRICS.to_string()),
        ("prometheus.io/path".to_owned(), "/metrics".to_owned()),
    ])
}

/// `user`'s entries under `operator`'s: on a key both set, the operator's value wins (CEL refuses
/// such keys at admission; this holds for objects that never passed it, such as `render` input).
fn under(mut user: BTreeMap<String, String>, operator: BTreeMap<String, String>) -> BTreeMap<String, String> {
    user.extend(operator);
    user
}

fn container(input: &ValidatedServer<'_>, settings: &Settings) -> Container {
    let spec = &input.server().spec;
    let mut env = vec![
        ("PALISADE_POLICY_FILE", DEFAULT_POLICY_PATH.to_owned()),
        ("PALISADE_DOCUMENTS_DIR", DEFAULT_DOCUMENTS_DIR.to_owned()),
        ("PALISADE_LISTEN", format!("0.0.0.0:{}", ports::MCP)),
        ("PALISADE_METRICS_LISTEN", format!("0.0.0.0:{}", ports::METRICS)),
        (
            "PALISADE_ALLOWED_HOSTS",
            allowed_hosts(
                input.server(),
                input.document().authentication.resource.as_str(),
                settings,
            )
            .join(","),
        ),
    ];
    env.extend(ServerLimits::for_server(input.server()).env());
    env.extend(upstream_env(input.server()));
    if cluster_issuer::needed(input.server()) {
        env.extend(cluster_issuer::env());
    }
    let mut env: Vec<EnvVar> = env
        .into_iter()
        .map(|(name, value)| EnvVar {
            name: name.into(),
            value: Some(value),
            value_from: None,
        })
        .collect();
    let telemetry = spec.telemetry.clone().unwrap_or_default();
    env.extend(telemetry.or(&settings.server_telemetry).env(
        &input.server().namespace().unwrap_or_default(),
        &input.server().name_any(),
    ));
    Container {
        name: names::CONTAINER.into(),
        image: Some(spec.image.clone().unwrap_or_else(|| settings.server_image.clone())),
        image_pull_policy: spec
            .image_pull_policy
            .or(settings.image_pull_policy)
            .map(|policy| pull_policy(policy).to_owned()),
        args: Some(vec!["serve".into()]),
        env: Some(env),
        ports: Some(vec![
            container_port(names::MCP_PORT_NAME, ports::MCP),
            container_port(names::METRICS_PORT_NAME, ports::METRICS),
        ]),
        startup_probe: Some(Probe {
            period_seconds: Some(2),
            failure_threshold: Some(30),
            ..http_probe("/health")
        }),
        liveness_probe: Some(Probe {
            period_seconds: Some(10),
            failure_threshold: Some(3),
            ..http_probe("/health")
        }),
        readiness_probe: Some(Probe {
            period_seconds: Some(5),
            failure_threshold: Some(2),
            ..http_probe("/ready")
        }),
        // NB: endpoints are removed asynchronously when a pod terminates; waiting a few seconds
        // before SIGTERM lets Services and proxies stop sending new requests first. The image has
        // no shell, hence the built-in sleep action rather than `exec: sleep`.
        lifecycle: Some(Lifecycle {
            pre_stop: Some(LifecycleHandler {
                sleep: Some(SleepAction { seconds: 5 }),
                ..LifecycleHandler::default()
            }),
            ..Lifecycle::default()
        }),
        resources: Some(spec.resources.clone().unwrap_or_else(default_resources)),
        security_context: Some(restricted()),
        ..Container::default()
    }
}

/// A container's security context under the restricted Pod Security Standard, with a read-only
/// root filesystem.
pub(super) fn restricted() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            add: None,
        }),
        seccomp_profile: Some(runtime_default()),
        ..SecurityContext::default()
    }
}

/// Proxy mode (`spec.upstream`): the upstream's URL, its timeout, the files of its headers (the
/// Secret keys the pod mounts, [`secret_uses`]) and its OAuth client credentials, as the server's
/// `PALISADE_UPSTREAM_*` variables. Nothing for a document server.
pub fn upstream_env(server: &McpServer) -> Vec<(&'static str, String)> {
    let Some(upstream) = &server.spec.upstream else {
        return Vec::new();
    };
    let mut env = Vec::new();
    match (&upstream.url, &upstream.container) {
        (Some(url), _) => env.push(("PALISADE_UPSTREAM_URL", url.clone())),
        (None, Some(container)) => match container.loopback_url() {
            Some(url) => env.push(("PALISADE_UPSTREAM_URL", url)),
            None => env.push(("PALISADE_UPSTREAM_SOCKET", upstream_container::socket_path())),
        },
        (None, None) => {}
    }
    env.push(("PALISADE_UPSTREAM_TIMEOUT", format!("{}s", upstream.timeout_seconds())));
    let uses = secret_uses(server);
    let headers: Vec<String> = upstream
        .headers
        .iter()
        .enumerate()
        .filter_map(|(i, header)| {
            let field = format!("spec.upstream.headers[{i}].valueFrom");
            let file = &uses.iter().find(|u| u.field_path == field)?.file;
            Some(format!("{}={}", header.name, file.path))
        })
        .collect();
    if !headers.is_empty() {
        env.push(("PALISADE_UPSTREAM_HEADERS", headers.join(",")));
    }
    if let Some(oauth) = &upstream.oauth {
        env.push(("PALISADE_UPSTREAM_OAUTH_TOKEN_URL", oauth.token_url.clone()));
        env.push(("PALISADE_UPSTREAM_OAUTH_CLIENT_ID", oauth.client_id.clone()));
        if let Some(secret) = uses.iter().find(|u| u.field_path == "spec.upstream.oauth.clientSecret") {
            env.push(("PALISADE_UPSTREAM_OAUTH_CLIENT_SECRET_FILE", secret.file.path.clone()));
        }
        if !oauth.scopes.is_empty() {
            env.push(("PALISADE_UPSTREAM_OAUTH_SCOPES", oauth.scopes.join(" ")));
        }
        if let Some(resource) = &oauth.resource {
            env.push(("PALISADE_UPSTREAM_OAUTH_RESOURCE", resource.clone()));
        }
    }
    env
}

/// The Host names the server accepts (`PALISADE_ALLOWED_HOSTS`, DNS-rebinding protection): the
/// Service's in-cluster names, the host of the resource URI (the public name callers use), and
/// the loopback names (for `kubectl port-forward`). The server compares without the port.
pub fn allowed_hosts(server: &McpServer, resource: &str, settings: &Settings) -> Vec<String> {
    use palisade_crds::kube::ResourceExt;
    let service = names::service(&server.name_any());
    let namespace = server.namespace().unwrap_or_default();
    let mut hosts = vec![
        service.clone(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.{}", settings.cluster_domain),
    ];
    if let Some(host) = url_host(resource) {
        hosts.push(host.to_ascii_lowercase());
    }
    hosts.extend(["localhost", "127.0.0.1", "[::1]"].map(String::from));
    let mut seen = std::collections::HashSet::new();
    hosts.retain(|h| seen.insert(h.clone()));
    hosts
}

/// The host of an absolute `http(s)` URL, without userinfo and port.
fn url_host(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if host_port.starts_with('[') {
        host_port.split_inclusive(']').next()?
    } else {
        host_port.split(':').next()?
    };
    (!host.is_empty()).then_some(host)
}

pub(super) fn pull_policy(policy: ImagePullPolicy) -> &'static str {
    match policy {
        ImagePullPolicy::Always => "Always",
        ImagePullPolicy::IfNotPresent => "IfNotPresent",
        ImagePullPolicy::Never => "Never",
    }
}

fn container_port(name: &str, port: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.into()),
        container_port: port,
        protocol: Some("TCP".into()),
        ..ContainerPort::default()
    }
}

fn http_probe(path: &str) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String(names::MCP_PORT_NAME.into()),
            ..HTTPGetAction::default()
        }),
        timeout_seconds: Some(2),
        ..Probe::default()
    }
}

fn runtime_default() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".into(),
        localhost_profile: None,
    }
}

/// The server's edge and request limits, passed as its `PALISADE_*` flags; the pod's memory limit
/// is derived from them ([`memory_limit_bytes`]), so that the worst case the limits allow stays
/// inside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// `--max-connections`.
    pub max_connections: u64,
    /// `--max-unauthenticated-connections-per-client`.
    pub max_unauthenticated_per_client: u64,
    /// `--max-concurrency`.
    pub max_concurrency: u64,
    /// `--max-body-bytes`.
    pub max_body_bytes: u64,
    /// `--max-header-bytes`.
    pub max_header_bytes: u64,
    /// `--header-read-timeout`, `--body-read-timeout`, `--idle-timeout`, `--request-timeout`,
    /// in seconds.
    pub timeouts_seconds: [u64; 4],
}

/// Memory of the server apart from connections and requests: the runtime, the policy, the caches
/// (at most 10,000 verified tokens), and documents up to 16 MiB. Larger document collections
/// need `spec.resources`.
pub const BASE_MEMORY_BYTES: u64 = 48 << 20;
/// The audit queue: 16,384 lines (the server's `audit::CHANNEL_CAPACITY`) of at most about 1 KiB.
pub const AUDIT_QUEUE_BYTES: u64 = 16_384 * 1024;
/// What one connection can hold besides its head: the HTTP/2 connection receive window (32 KiB,
/// `edge::H2_CONNECTION_WINDOW`), rustls' buffers (about 34 KiB) and hyper's and the task's
/// state (8 KiB).
pub const CONNECTION_OVERHEAD_BYTES: u64 = (32 + 34 + 8) << 10;
/// A request in flight holds its body, the parsed message, and its answer: counted as three
/// bodies.
pub const REQUEST_BODY_COPIES: u64 = 3;

impl ServerLimits {
    /// The server's defaults.
    pub const DEFAULT: Self = Self {
        max_connections: 1024,
        max_unauthenticated_per_client: 64,
        max_concurrency: 32,
        max_body_bytes: 1 << 20,
        max_header_bytes: 16 << 10,
        timeouts_seconds: [10, 10, 60, 30],
    };

    /// The limits of `server`'s pods: the defaults, with a request timeout longer than the
    /// upstream's (`spec.upstream.timeoutSeconds` + 5 s) where that is longer than the default, so
    /// that a slow upstream is answered 504 before the server's own deadline.
    pub fn for_server(server: &McpServer) -> Self {
        let mut limits = Self::DEFAULT;
        if let Some(upstream) = &server.spec.upstream {
            let needed = u64::try_from(upstream.timeout_seconds() + REQUEST_TIMEOUT_MARGIN_SECONDS).unwrap_or_default();
            limits.timeouts_seconds[3] = limits.timeouts_seconds[3].max(needed);
        }
        limits
    }

    /// The flags, as environment variables.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let [header, body, idle, request] = self.timeouts_seconds;
        vec![
            ("PALISADE_MAX_CONNECTIONS", self.max_connections.to_string()),
            (
                "PALISADE_MAX_UNAUTHENTICATED_CONNECTIONS_PER_CLIENT",
                self.max_unauthenticated_per_client.to_string(),
            ),
            ("PALISADE_MAX_CONCURRENCY", self.max_concurrency.to_string()),
            ("PALISADE_MAX_BODY_BYTES", self.max_body_bytes.to_string()),
            ("PALISADE_MAX_HEADER_BYTES", self.max_header_bytes.to_string()),
            ("PALISADE_HEADER_READ_TIMEOUT", format!("{header}s")),
            ("PALISADE_BODY_READ_TIMEOUT", format!("{body}s")),
            ("PALISADE_IDLE_TIMEOUT", format!("{idle}s")),
            ("PALISADE_REQUEST_TIMEOUT", format!("{request}s")),
        ]
    }
}

/// The worst-case memory of a server with `limits` (docs/server.md, "Limits and memory"):
/// base + audit queue + connections × (HTTP/1.1 read buffer, head + 8 KiB, + per-connection
/// overhead) + concurrent requests × 3 bodies. Unauthenticated requests hold no body: it is not
/// read before authentication.
pub fn memory_limit_bytes(limits: &ServerLimits) -> u64 {
    let read_buffer = (limits.max_header_bytes + (8 << 10)).max(8 << 10);
    let per_connection = read_buffer + CONNECTION_OVERHEAD_BYTES;
    BASE_MEMORY_BYTES
        + AUDIT_QUEUE_BYTES
        + limits.max_connections * per_connection
        + limits.max_concurrency * REQUEST_BODY_COPIES * limits.max_body_bytes
}

/// A quantity in whole mebibytes, rounded up.
fn mebibytes(bytes: u64) -> Quantity {
    Quantity(format!("{}Mi", bytes.div_ceil(1 << 20)))
}

/// Requests 50m CPU and 64Mi memory, limits memory to what the server's limits need
/// ([`memory_limit_bytes`] of [`ServerLimits::DEFAULT`]: 258Mi). No CPU limit: throttling a
/// latency-sensitive server helps no one; the request is what the scheduler and the HPA use.
pub fn default_resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_owned(), Quantity("50m".into())),
            ("memory".to_owned(), Quantity("64Mi".into())),
        ])),
        limits: Some(BTreeMap::from([(
            "memory".to_owned(),
            mebibytes(memory_limit_bytes(&ServerLimits::DEFAULT)),
        )])),
        ..ResourceRequirements::default()
    }
}

/// Spread the pods over nodes and zones, as a preference (`ScheduleAnyway`): a small cluster
/// still schedules them all. `pod-template-hash` keeps a rollout's old and new pods apart.
pub fn default_topology_spread(server: &str) -> Vec<TopologySpreadConstraint> {
    ["kubernetes.io/hostname", "topology.kubernetes.io/zone"]
        .into_iter()
        .map(|key| TopologySpreadConstraint {
            max_skew: 1,
            topology_key: key.into(),
            when_unsatisfiable: "ScheduleAnyway".into(),
            label_selector: Some(LabelSelector {
                match_labels: Some(names::selector_labels(server)),
                match_expressions: None,
            }),
            match_label_keys: Some(vec!["pod-template-hash".into()]),
            ..TopologySpreadConstraint::default()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::server;

    #[test]
    fn allowed_hosts_are_the_service_names_the_resource_host_and_loopback() {
        let server = server("metadata: {name: docs, namespace: team-a}\nspec: {auth: {allowAnonymous: true}}");
        let hosts = allowed_hosts(&server, "https://Docs.Example.com:8443/mcp", &Settings::default());
        assert_eq!(
            hosts,
            [
                "docs",
                "docs.team-a",
                "docs.team-a.svc",
                "docs.team-a.svc.cluster.local",
                "docs.example.com",
                "localhost",
                "127.0.0.1",
                "[::1]",
            ]
        );
        // The default resource is the in-cluster URL: no duplicate.
        let settings = Settings {
            cluster_domain: "corp.internal".into(),
            ..Settings::default()
        };
        let hosts = allowed_hosts(&server, "http://docs.team-a.svc.corp.internal/mcp", &settings);
        assert_eq!(hosts.len(), 7);
        assert_eq!(hosts[3], "docs.team-a.svc.corp.internal");
    }

    #[test]
    fn pod_labels_and_annotations_from_the_spec_never_override_the_operator_s() {
        let server = server(
            r#"
metadata: {name: docs, namespace: team-a}
spec:
  auth: {allowAnonymous: true}
  podTemplate:
    labels: {team: search, app.kubernetes.io/instance: hijack, app.kubernetes.io/part-of: portal}
    annotations: {sidecar.istio.io/inject: "true", prometheus.io/port: "1"}
"#,
        );
        let validated = crate::validate::validate(&server, &[], &Settings::default()).unwrap();
        let metadata = pod_template(&validated, &Settings::default()).metadata.unwrap();
        let labels = metadata.labels.unwrap();
        assert_eq!(labels["team"], "search");
        assert_eq!(labels["app.kubernetes.io/part-of"], "portal");
        for (key, value) in names::labels("docs", Component::Server) {
            assert_eq!(labels[&key], value, "{key}");
        }
        assert_eq!(labels.len(), 6);
        let annotations = metadata.annotations.unwrap();
        assert_eq!(annotations["sidecar.istio.io/inject"], "true");
        assert_eq!(annotations["prometheus.io/port"], ports::METRICS.to_string());
        assert_eq!(annotations.len(), 5);

        // The keys the CRD refuses are exactly those the operator sets.
        let label_keys: Vec<String> = names::labels("docs", Component::Server).into_keys().collect();
        let mut reserved: Vec<&str> = palisade_crds::mcp_server::OPERATOR_POD_LABELS.to_vec();
        reserved.sort_unstable();
        assert_eq!(label_keys, reserved);
        let annotation_keys: Vec<String> = operator_annotations().into_keys().collect();
        let mut reserved: Vec<&str> = palisade_crds::mcp_server::OPERATOR_POD_ANNOTATIONS.to_vec();
        reserved.sort_unstable();
        assert_eq!(annotation_keys, reserved);
    }

    #[test]
    fn a_proxy_s_container_gets_its_upstream_and_a_longer_request_timeout_and_mounts_its_header_secrets() {
        let server = server(
            r#"
metadata: {name: files, namespace: team-a}
spec:
  auth: {allowAnonymous: true}
  upstream:
    url: http://files-mcp.team-a.svc:3001/mcp
    timeoutSeconds: 60
    headers:
      - {name: Authorization, valueFrom: {secretKeyRef: {name: files-upstream, key: token}}}
      - name: X-Tenant
        valueFrom: {externalSecret: {remoteKey: tenant, storeRef: {name: vault}}}
"#,
        );
        let validated = crate::validate::validate(&server, &[], &Settings::default()).unwrap();
        let spec = pod_template(&validated, &Settings::default()).spec.unwrap();
        let env: BTreeMap<String, String> = spec.containers[0]
            .env
            .iter()
            .flatten()
            .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
            .collect();
        assert_eq!(env["PALISADE_UPSTREAM_URL"], "http://files-mcp.team-a.svc:3001/mcp");
        assert_eq!(env["PALISADE_UPSTREAM_TIMEOUT"], "60s");
        assert_eq!(env["PALISADE_REQUEST_TIMEOUT"], "65s");
        let tenant_secret = palisade_crds::secret_files::default_target_secret_name(
            "files",
            palisade_crds::secret_files::SecretPurpose::UpstreamHeader { name: "X-Tenant" },
        );
        assert_eq!(
            env["PALISADE_UPSTREAM_HEADERS"],
            format!(
                "Authorization=/etc/palisade/secrets/files-upstream/token,X-Tenant=/etc/palisade/secrets/{tenant_secret}/header-value"
            )
        );
        let volumes: Vec<String> = spec
            .volumes
            .iter()
            .flatten()
            .filter_map(|v| v.secret.as_ref()?.secret_name.clone())
            .collect();
        assert!(volumes.contains(&"files-upstream".to_owned()), "{volumes:?}");
        assert!(volumes.contains(&tenant_secret), "{volumes:?}");

        // A document server has none of it, and the default request timeout.
        let documents = server_without_upstream();
        let validated = crate::validate::validate(&documents, &[], &Settings::default()).unwrap();
        let spec = pod_template(&validated, &Settings::default()).spec.unwrap();
        let names: Vec<&str> = spec.containers[0]
            .env
            .iter()
            .flatten()
            .map(|e| e.name.as_str())
            .collect();
        assert!(!names.iter().any(|n| n.starts_with("PALISADE_UPSTREAM")), "{names:?}");
        assert_eq!(ServerLimits::for_server(&documents), ServerLimits::DEFAULT);
    }

    #[test]
    fn a_proxy_s_oauth_client_credentials_are_passed_with_the_secret_s_file() {
        let server = server(
            r#"
metadata: {name: files, namespace: team-a}
spec:
  auth: {allowAnonymous: true}
  upstream:
    url: http://files-mcp.team-a.svc:3001/mcp
    oauth:
      tokenUrl: https://idp.example.com/oauth2/token
      clientId: palisade-files
      clientSecret: {secretKeyRef: {name: files-oauth, key: secret}}
      scopes: ["files:read", "files:list"]
"#,
        );
        let env: BTreeMap<&str, String> = upstream_env(&server).into_iter().collect();
        assert_eq!(
            env["PALISADE_UPSTREAM_OAUTH_TOKEN_URL"],
            "https://idp.example.com/oauth2/token"
        );
        assert_eq!(env["PALISADE_UPSTREAM_OAUTH_CLIENT_ID"], "palisade-files");
        assert_eq!(
            env["PALISADE_UPSTREAM_OAUTH_CLIENT_SECRET_FILE"],
            "/etc/palisade/secrets/files-oauth/secret"
        );
        assert_eq!(env["PALISADE_UPSTREAM_OAUTH_SCOPES"], "files:read files:list");
        assert!(
            !env.contains_key("PALISADE_UPSTREAM_OAUTH_RESOURCE"),
            "the server's default: the URL"
        );
        assert!(!env.contains_key("PALISADE_UPSTREAM_HEADERS"));
    }

    fn server_without_upstream() -> McpServer {
        server("metadata: {name: docs, namespace: team-a}\nspec:\n  auth: {allowAnonymous: true}\n")
    }

    #[test]
    fn the_memory_limit_covers_the_worst_case_of_the_default_limits() {
        let limits = ServerLimits::DEFAULT;
        // 48 MiB base + 16 MiB audit queue + 1024 × (24 + 74) KiB + 32 × 3 × 1 MiB.
        let expected = (48 << 20) + (16 << 20) + 1024 * (98 << 10) + 96 * (1 << 20);
        assert_eq!(memory_limit_bytes(&limits), expected);
        assert_eq!(mebibytes(memory_limit_bytes(&limits)), Quantity("258Mi".into()));
        let doubled = ServerLimits {
            max_concurrency: 64,
            ..limits
        };
        assert_eq!(
            memory_limit_bytes(&doubled) - memory_limit_bytes(&limits),
            32 * 3 * (1 << 20),
            "every concurrent request adds three bodies"
        );
    }

    #[test]
    fn the_limits_are_passed_as_flags() {
        let env = ServerLimits::DEFAULT.env();
        let get = |name: &str| env.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str());
        assert_eq!(get("PALISADE_MAX_CONNECTIONS"), Some("1024"));
        assert_eq!(get("PALISADE_MAX_CONCURRENCY"), Some("32"));
        assert_eq!(get("PALISADE_HEADER_READ_TIMEOUT"), Some("10s"));
        assert_eq!(get("PALISADE_IDLE_TIMEOUT"), Some("60s"));
    }

    #[test]
    fn url_hosts_drop_userinfo_port_and_path() {
        assert_eq!(url_host("https://a.example/mcp"), Some("a.example"));
        assert_eq!(url_host("http://u:p@a.example:80/x"), Some("a.example"));
        assert_eq!(url_host("http://[fd00::1]:8080/mcp"), Some("[fd00::1]"));
        assert_eq!(url_host("https://a.example?x#y"), Some("a.example"));
        assert_eq!(url_host("not a url"), None);
    }
}
