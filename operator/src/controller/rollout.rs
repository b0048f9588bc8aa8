//! Rollout truth: which policy the server's ready pods enforce, as they report it themselves.
//!
//! Applying the policy ConfigMap does not put a policy in force: kubelet projects a ConfigMap
//! change into the pods' volumes a minute or more later, and only then does each server reload
//! it. So the operator asks every ready pod of the server (`GET http://<podIP>:<MCP port>/ready`,
//! which answers `{"status":"ready","policyHash":"sha256:..."}`) and counts the pods on each
//! hash. [`Rollout::complete`] is what `PolicyRolledOut=True` and `status.policyHash` mean: at
//! least one pod is ready and every ready pod reported the policy the operator compiled last.
//!
//! The pods come from the shared pod store ([`super::shared`]); [`ready_pods`] and [`tally`] are
//! pure, and [`ReadyProbe`] is the one I/O step, so the tower-test scenarios can answer for pods.
//!
//! Why plain HTTP: the pods the operator builds serve the MCP port in plain HTTP (TLS, when
//! wanted, ends at the Service's ingress or mesh in front of them), and `/ready` carries no
//! secret. Why the MCP port: `/ready` lives there, next to what it vouches for; the metrics port
//! says nothing about the policy.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use futures::future::BoxFuture;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::runtime::reflector::Store;
use palisade_crds::inventory::UpstreamInventory;
use palisade_crds::mcp_server::PolicyRollout;

/// The hash under which [`tally`] counts ready pods that did not report one.
pub const UNKNOWN_HASH: &str = "unknown";

/// How long one pod may take to answer `GET /ready` (connect, request and body).
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The largest `/ready` body read (it is a few hundred bytes).
const MAX_BODY: usize = 64 * 1024;

/// The largest `/inventory` body read: 1,000 tools of about 300 bytes each, with room.
const MAX_INVENTORY_BODY: usize = 1024 * 1024;

/// A ready pod of a server and where its MCP port listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadyPod {
    /// `metadata.name`.
    pub name: String,
    /// `status.podIP` and the MCP port.
    pub address: SocketAddr,
}

/// What one pod answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The pod.
    pub pod: String,
    /// Its policy hash, or why it gave none.
    pub hash: Result<String, String>,
}

/// The policy rollout of one server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rollout {
    /// The hash of the policy the operator compiled last (the one it wants in force).
    pub desired: String,
    /// How many ready pods there are.
    pub ready: i32,
    /// Ready pods per reported hash, sorted by hash; [`UNKNOWN_HASH`] for those that gave none.
    pub pods: Vec<PolicyRollout>,
    /// `pod: why` for each ready pod that did not report a hash, sorted.
    pub unanswered: Vec<String>,
}

impl Rollout {
    /// At least one pod is ready and every ready pod reported [`Rollout::desired`].
    pub fn complete(&self) -> bool {
        self.ready > 0 && self.pods.iter().all(|p| p.hash == self.desired)
    }

    /// Ready pods on the desired hash.
    pub fn on_desired(&self) -> i32 {
        self.pods.iter().find(|p| p.hash == self.desired).map_or(0, |p| p.pods)
    }
}

/// The rollout of `desired` from what the ready pods reported (pure).
pub fn tally(desired: &str, reports: &[Report]) -> Rollout {
    let mut counts: BTreeMap<String, i32> = BTreeMap::new();
    let mut unanswered = Vec::new();
    for report in reports {
        let hash = match &report.hash {
            Ok(hash) => hash.clone(),
            Err(why) => {
                unanswered.push(format!("{}: {why}", report.pod));
                UNKNOWN_HASH.to_owned()
            }
        };
        *counts.entry(hash).or_default() += 1;
    }
    unanswered.sort();
    Rollout {
        desired: desired.to_owned(),
        ready: i32::try_from(reports.len()).unwrap_or(i32::MAX),
        pods: counts
            .into_iter()
            .map(|(hash, pods)| PolicyRollout { hash, pods })
            .collect(),
        unanswered,
    }
}

/// The ready pods of McpServer `server` in `namespace` among `pods` (pure): those its Deployment
/// selects (`selector`), not being deleted, with condition `Ready=True` and a pod IP, sorted by
/// name.
pub fn ready_pods<'a>(
    pods: impl IntoIterator<Item = &'a Pod>,
    namespace: &str,
    selector: &BTreeMap<String, String>,
    port: u16,
) -> Vec<ReadyPod> {
    let mut ready: Vec<ReadyPod> = pods
        .into_iter()
        .filter(|pod| pod.metadata.namespace.as_deref() == Some(namespace))
        .filter(|pod| pod.metadata.deletion_timestamp.is_none())
        .filter(|pod| {
            let labels = pod.labels();
            selector.iter().all(|(k, v)| labels.get(k) == Some(v))
        })
        .filter(|pod| is_ready(pod))
        .filter_map(|pod| {
            let ip: IpAddr = pod.status.as_ref()?.pod_ip.as_deref()?.parse().ok()?;
            Some(ReadyPod {
                name: pod.name_any(),
                address: SocketAddr::new(ip, port),
            })
        })
        .collect();
    ready.sort_by(|a, b| a.name.cmp(&b.name));
    ready
}

/// Whether `pod` has condition `Ready=True`.
pub fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// What rollout truth needs of a pod to tell whether a change matters: its readiness and its
/// address (the hash it serves is asked, not watched).
pub fn readiness_key(pod: &Pod) -> (bool, Option<String>) {
    (is_ready(pod), pod.status.as_ref().and_then(|s| s.pod_ip.clone()))
}

/// Asks one pod which policy it serves (and, for a proxy, what its upstream offers).
pub trait ReadyProbe: Send + Sync {
    /// The `policyHash` of `GET http://<address>/ready`, or why there is none.
    fn policy_hash(&self, address: SocketAddr) -> BoxFuture<'_, Result<String, ProbeError>>;

    /// The body of `GET http://<address>/inventory` (a proxy's metrics port), or why there is
    /// none. Pods that front no upstream have none.
    fn inventory(&self, address: SocketAddr) -> BoxFuture<'_, Result<UpstreamInventory, ProbeError>> {
        let _ = address;
        Box::pin(async { Err(ProbeError::Status("/inventory", 404)) })
    }
}

/// Why a pod gave no answer to `GET <path>`.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// No answer within [`PROBE_TIMEOUT`].
    #[error("no answer to GET {0} within {1:?}")]
    Timeout(&'static str, Duration),
    /// The connection failed.
    #[error("cannot connect: {0}")]
    Connect(#[source] std::io::Error),
    /// The HTTP exchange failed.
    #[error("GET {0} failed: {1}")]
    Http(&'static str, #[source] hyper::Error),
    /// The pod is not ready (503) or answered another status.
    #[error("GET {0} answered HTTP {1}")]
    Status(&'static str, u16),
    /// The body is not what a palisade-server sends there (`/ready`:
    /// `{"status":"ready","policyHash":"..."}`).
    #[error("GET {0} answered no policy hash or inventory")]
    Body(&'static str),
}

/// [`ReadyProbe`] over plain HTTP/1.1, each call bounded by [`PROBE_TIMEOUT`].
#[derive(Debug, Clone, Copy, Default)]
pub struct HttpReadyProbe;

impl ReadyProbe for HttpReadyProbe {
    fn policy_hash(&self, address: SocketAddr) -> BoxFuture<'_, Result<String, ProbeError>> {
        Box::pin(async move {
            let body = get(address, "/ready", MAX_BODY).await?;
            policy_hash_of(&body).ok_or(ProbeError::Body("/ready"))
        })
    }

    fn inventory(&self, address: SocketAddr) -> BoxFuture<'_, Result<UpstreamInventory, ProbeError>> {
        Box::pin(async move {
            let body = get(address, "/inventory", MAX_INVENTORY_BODY).await?;
            serde_json::from_slice(&body).map_err(|_| ProbeError::Body("/inventory"))
        })
    }
}

/// The body of a `200 OK` answer to `GET http://<address><path>` of at most `max` bytes, within
/// [`PROBE_TIMEOUT`].
async fn get(address: SocketAddr, path: &'static str, max: usize) -> Result<Bytes, ProbeError> {
    tokio::time::timeout(PROBE_TIMEOUT, get_once(address, path, max))
        .await
        .map_err(|_| ProbeError::Timeout(path, PROBE_TIMEOUT))?
}

async fn get_once(address: SocketAddr, path: &'static str, max: usize) -> Result<Bytes, ProbeError> {
    let stream = tokio::net::TcpStream::connect(address)
        .await
        .map_err(ProbeError::Connect)?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| ProbeError::Http(path, e))?;
    let driver = tokio::spawn(connection);
    let request = http::Request::get(path)
        .header(http::header::HOST, address.to_string())
        .header(http::header::ACCEPT, "application/json")
        .body(Empty::<Bytes>::new())
        .map_err(|_| ProbeError::Body(path))?;
    let answer = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| ProbeError::Http(path, e))?;
        let status = response.status().as_u16();
        if status != 200 {
            return Err(ProbeError::Status(path, status));
        }
        Limited::new(response.into_body(), max)
            .collect()
            .await
            .map(|collected| collected.to_bytes())
            .map_err(|_| ProbeError::Body(path))
    }
    .await;
    driver.abort();
    answer
}

/// The `policyHash` of a `/ready` body whose `status` is `ready` (pure).
pub fn policy_hash_of(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    if value.get("status")?.as_str()? != "ready" {
        return None;
    }
    let hash = value.get("policyHash")?.as_str()?;
    hash.starts_with("sha256:").then(|| hash.to_owned())
}

/// Asks every pod in `pods` at once.
pub async fn probe_all(probe: &dyn ReadyProbe, pods: &[ReadyPod]) -> Vec<Report> {
    futures::future::join_all(pods.iter().map(|pod| async move {
        Report {
            pod: pod.name.clone(),
            hash: probe.policy_hash(pod.address).await.map_err(|e| e.to_string()),
        }
    }))
    .await
}

/// The rollout of `desired` for McpServer `server` in `namespace`: its ready pods in `pods`, asked
/// through `probe`.
pub async fn observe(
    pods: &Store<Pod>,
    probe: &dyn ReadyProbe,
    namespace: &str,
    server: &str,
    desired: &str,
) -> Rollout {
    let state = pods.state();
    let ready = ready_pods(
        state.iter().map(AsRef::as_ref),
        namespace,
        &crate::names::selector_labels(server),
        u16::try_from(crate::ports::MCP).unwrap_or(8080),
    );
    let reports = probe_all(probe, &ready).await;
    let rollout = tally(desired, &reports);
    tracing::debug!(
        desired,
        ready = rollout.ready,
        on_desired = rollout.on_desired(),
        complete = rollout.complete(),
        "policy rollout observed"
    );
    rollout
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    use kube::api::ObjectMeta;

    use super::*;

    fn pod(name: &str, server: &str, ready: bool, ip: Option<&str>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("team-a".into()),
                labels: Some(crate::names::selector_labels(server)),
                ..ObjectMeta::default()
            },
            spec: None,
            status: Some(PodStatus {
                pod_ip: ip.map(Into::into),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..PodCondition::default()
                }]),
                ..PodStatus::default()
            }),
        }
    }

    fn report(pod: &str, hash: Result<&str, &str>) -> Report {
        Report {
            pod: pod.into(),
            hash: hash.map(Into::into).map_err(Into::into),
        }
    }

    #[test]
    fn only_ready_pods_of_the_server_with_an_ip_are_asked() {
        let mut deleting = pod("docs-d", "docs", true, Some("10.0.0.4"));
        deleting.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
        ));
        let pods = [
            pod("docs-b", "docs", true, Some("10.0.0.2")),
            pod("docs-a", "docs", true, Some("10.0.0.1")),
            pod("docs-c", "docs", false, Some("10.0.0.3")),
            pod("docs-e", "docs", true, None),
            pod("other", "docs-other", true, Some("10.0.0.5")),
            deleting,
        ];
        let ready = ready_pods(&pods, "team-a", &crate::names::selector_labels("docs"), 8080);
        assert_eq!(
            ready,
            [
                ReadyPod {
                    name: "docs-a".into(),
                    address: "10.0.0.1:8080".parse().unwrap()
                },
                ReadyPod {
                    name: "docs-b".into(),
                    address: "10.0.0.2:8080".parse().unwrap()
                },
            ]
        );
        assert!(ready_pods(&pods, "team-b", &crate::names::selector_labels("docs"), 8080).is_empty());
    }

    #[test]
    fn a_rollout_is_complete_only_when_every_ready_pod_reports_the_desired_hash() {
        let all = tally(
            "sha256:new",
            &[report("a", Ok("sha256:new")), report("b", Ok("sha256:new"))],
        );
        assert!(all.complete());
        assert_eq!(
            all.pods,
            [PolicyRollout {
                hash: "sha256:new".into(),
                pods: 2
            }]
        );

        let mixed = tally(
            "sha256:new",
            &[report("b", Ok("sha256:old")), report("a", Ok("sha256:new"))],
        );
        assert!(!mixed.complete());
        assert_eq!(mixed.on_desired(), 1);
        assert_eq!(mixed.ready, 2);

        let silent = tally(
            "sha256:new",
            &[report("a", Ok("sha256:new")), report("b", Err("timed out"))],
        );
        assert!(!silent.complete());
        assert_eq!(
            silent.pods,
            [
                PolicyRollout {
                    hash: "sha256:new".into(),
                    pods: 1
                },
                PolicyRollout {
                    hash: UNKNOWN_HASH.into(),
                    pods: 1
                },
            ]
        );
        assert_eq!(silent.unanswered, ["b: timed out"]);

        assert!(!tally("sha256:new", &[]).complete(), "no ready pod enforces anything");
    }

    #[test]
    fn only_a_ready_body_with_a_sha256_hash_counts() {
        assert_eq!(
            policy_hash_of(br#"{"status":"ready","policyHash":"sha256:ab","tools":3}"#).as_deref(),
            Some("sha256:ab")
        );
        assert_eq!(
            policy_hash_of(br#"{"status":"not_ready","policyHash":"sha256:ab"}"#),
            None
        );
        assert_eq!(policy_hash_of(br#"{"status":"ready","policyHash":"md5:ab"}"#), None);
        assert_eq!(policy_hash_of(br#"{"status":"ready"}"#), None);
        assert_eq!(policy_hash_of(b"ready"), None);
    }

    #[tokio::test]
    async fn the_http_probe_reads_the_hash_and_reports_a_503_and_a_closed_port() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        async fn serve_once(answer: &'static str) -> SocketAddr {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let address = listener.local_addr().unwrap();
            tokio::spawn(async move {
                let (mut stream, _) = listener.accept().await.unwrap();
                let mut buffer = [0u8; 1024];
                let read = stream.read(&mut buffer).await.unwrap();
                assert!(buffer[..read].starts_with(b"GET /ready HTTP/1.1\r\n"));
                stream.write_all(answer.as_bytes()).await.unwrap();
            });
            address
        }
        let body = r#"{"status":"ready","policyHash":"sha256:cafe"}"#;
        let ok = serve_once(Box::leak(
            format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_boxed_str(),
        ))
        .await;
        assert_eq!(HttpReadyProbe.policy_hash(ok).await.unwrap(), "sha256:cafe");

        let unavailable = serve_once("HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n").await;
        assert_eq!(
            HttpReadyProbe.policy_hash(unavailable).await.unwrap_err().to_string(),
            "GET /ready answered HTTP 503"
        );

        let closed = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap()
        };
        assert!(matches!(
            HttpReadyProbe.policy_hash(closed).await.unwrap_err(),
            ProbeError::Connect(_)
        ));
    }
}
