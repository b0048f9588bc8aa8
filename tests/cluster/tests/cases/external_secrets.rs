//! External Secrets Operator for real: its controller (v0.16.2, built from its Go module by
//! `tests/cluster/eso/build.sh`) runs as a process of the suite, a ClusterSecretStore with its
//! built-in `fake` provider holds a random HMAC key, and an McpServer whose issuer's key comes
//! from an ExternalSecret (`spec.auth.issuers[].hmacKey.externalSecret`) gets, through the
//! operator's ExternalSecret, a real Secret that the kubelet stand-in mounts: a token signed with
//! that key is accepted and one signed with another key is refused. A remote key the store does
//! not hold makes the ExternalSecret not Ready, the McpServer reports it, and the running server
//! keeps serving with the key synced last.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::{Api, Client};
use palisade_crds::McpServer;
use palisade_operator::names;
use serde_json::json;

use super::reconcile::wait_reconciled;
use crate::support::kubelet::Pod;
use crate::support::operator::{Operator, install_rbac, service_account_kubeconfig};
use crate::support::{Cluster, TEST_MANAGER, condition, dev_token, mcp, repo_file, wait_for};

const NAMESPACE: &str = "team-eso";
const SERVER: &str = "company-info";
const RESOURCE: &str = "https://company-info.team-a.example.com/mcp";
/// The ClusterSecretStore the McpServer reads from.
const STORE: &str = "palisade-suite-fake";
/// The key under which the fake store holds the HMAC key.
const REMOTE_KEY: &str = "company-info-hmac";
/// External Secrets Operator's namespace and ServiceAccount (as its Helm chart names them).
const ESO_NAMESPACE: &str = "external-secrets";
const ESO_ACCOUNT: &str = "external-secrets";

/// The CRDs of the External Secrets Operator release the suite builds (`tests/cluster/eso/crds/`,
/// checked against the module by `build.sh`): the three the operator and the stores use, and
/// GeneratorState, which its controller watches whatever the ExternalSecrets use.
const ESO_CRDS: &[(&str, &str)] = &[
    (
        "tests/cluster/eso/crds/external-secrets.io_externalsecrets.yaml",
        "externalsecrets.external-secrets.io",
    ),
    (
        "tests/cluster/eso/crds/external-secrets.io_secretstores.yaml",
        "secretstores.external-secrets.io",
    ),
    (
        "tests/cluster/eso/crds/external-secrets.io_clustersecretstores.yaml",
        "clustersecretstores.external-secrets.io",
    ),
    (
        "tests/cluster/eso/crds/generators.external-secrets.io_generatorstates.yaml",
        "generatorstates.generators.external-secrets.io",
    ),
];

/// What External Secrets Operator's controller needs for the reconcilers the suite runs
/// (SecretStore, ClusterSecretStore, ExternalSecret, GeneratorState), and nothing else: it reads
/// stores and ExternalSecrets, writes their status, writes the Secrets of the ExternalSecrets,
/// records events and reads namespaces (a ClusterSecretStore's `conditions` select them).
const ESO_RBAC: &str = r#"
apiVersion: v1
kind: ServiceAccount
metadata:
  name: external-secrets
  namespace: external-secrets
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: palisade-suite-external-secrets
rules:
  - apiGroups: ["external-secrets.io"]
    resources: [secretstores, clustersecretstores, externalsecrets]
    verbs: [get, list, watch, update, patch]
  - apiGroups: ["external-secrets.io"]
    resources: [secretstores/status, clustersecretstores/status, externalsecrets/status,
                secretstores/finalizers, clustersecretstores/finalizers, externalsecrets/finalizers]
    verbs: [get, update, patch]
  - apiGroups: ["generators.external-secrets.io"]
    resources: [generatorstates]
    verbs: [get, list, watch, update, patch, delete]
  - apiGroups: [""]
    resources: [secrets]
    verbs: [get, list, watch, create, update, patch, delete]
  - apiGroups: [""]
    resources: [namespaces]
    verbs: [get, list, watch]
  - apiGroups: ["", "events.k8s.io"]
    resources: [events]
    verbs: [create, patch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: palisade-suite-external-secrets
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: palisade-suite-external-secrets
subjects:
  - kind: ServiceAccount
    name: external-secrets
    namespace: external-secrets
"#;

/// External Secrets Operator's controller as a process, stopped on drop.
struct ExternalSecretsOperator {
    child: Child,
    metrics: String,
    log: PathBuf,
}

impl ExternalSecretsOperator {
    /// `target/cluster/bin/external-secrets` with `kubeconfig`: leader election off, metrics on a
    /// free loopback port, only the reconcilers of stores, ExternalSecrets and generator states
    /// (no PushSecret or ClusterExternalSecret: their CRDs are not installed).
    fn start(cluster: &Cluster, kubeconfig: &Path) -> Self {
        let binary = palisade_cluster::bin_dir().join("external-secrets");
        assert!(
            binary.is_file(),
            "{} is not built: `make cluster-build` builds it (tests/cluster/eso/build.sh)",
            binary.display()
        );
        let port = palisade_e2e::free_port();
        let log = cluster.plane.dir().join("logs").join("external-secrets.log");
        let out = File::create(&log).expect("External Secrets Operator log");
        let err = out.try_clone().expect("External Secrets Operator log");
        let child = Command::new(&binary)
            .args(["--enable-leader-election=false", "--metrics-addr"])
            .arg(format!("127.0.0.1:{port}"))
            .args([
                "--enable-push-secret-reconciler=false",
                "--enable-cluster-push-secret-reconciler=false",
                "--enable-cluster-external-secret-reconciler=false",
                "--loglevel=debug",
            ])
            .env_clear()
            .env("KUBECONFIG", kubeconfig)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("start External Secrets Operator");
        Self {
            child,
            metrics: format!("http://127.0.0.1:{port}/metrics"),
            log,
        }
    }

    /// Waits until its metrics endpoint answers (its manager has started).
    async fn wait_started(&mut self) {
        let start = std::time::Instant::now();
        loop {
            let url = self.metrics.clone();
            let ok = tokio::task::spawn_blocking(move || {
                palisade_e2e::http_client()
                    .get(url)
                    .send()
                    .is_ok_and(|r| r.status().is_success())
            })
            .await
            .unwrap_or(false);
            if ok {
                eprintln!("    ok: External Secrets Operator serves its metrics");
                return;
            }
            assert!(
                !matches!(self.child.try_wait(), Ok(Some(_))) && start.elapsed() < Duration::from_secs(60),
                "External Secrets Operator did not start; its log:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

impl Drop for ExternalSecretsOperator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn api(client: &Client, kind: &str, namespace: Option<&str>) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk("external-secrets.io", "v1", kind));
    match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    }
}

/// `(status, reason, message)` of an External Secrets Operator object's `Ready` condition.
fn ready(object: &DynamicObject) -> Option<(String, String, String)> {
    let conditions = object.data.pointer("/status/conditions")?.as_array()?;
    let c = conditions.iter().find(|c| c["type"] == "Ready")?;
    let text = |field: &str| c[field].as_str().unwrap_or_default().to_owned();
    Some((text("status"), text("reason"), text("message")))
}

/// A random 32-byte key, hex-encoded (as `openssl rand -hex 32` makes the sample's key).
fn random_key() -> String {
    rand::random::<[u8; 32]>().iter().map(|b| format!("{b:02x}")).collect()
}

fn token(key: &str) -> String {
    dev_token(key.as_bytes(), RESOURCE, "erin", &["employees"])
}

/// The signed-with-the-synced-key token lists and calls the public tool; one signed with another
/// key gets 401.
async fn accepts_only_the_synced_key(url: &str, key: &str) {
    let good = token(key);
    let (status, body) = mcp(url, &good, "tools/list", json!({})).await;
    assert_eq!(status, 200, "tools/list with the synced key: {body}");
    assert!(
        body.contains("\"get_public_info\""),
        "the employee sees the public tool: {body}"
    );
    assert!(!body.contains("get_confidential_info"), "and only it: {body}");
    let (status, body) = mcp(
        url,
        &good,
        "tools/call",
        json!({"name": "get_public_info", "arguments": {}}),
    )
    .await;
    assert_eq!(status, 200, "tools/call with the synced key: {body}");
    assert!(body.contains("Acme Corp"), "the public documents: {body}");
    let (status, body) = mcp(url, &token(&random_key()), "tools/list", json!({})).await;
    assert_eq!(status, 401, "a token signed with another key is refused: {body}");
}

/// The sample with the development issuer's key from `remote_key` of the fake store.
fn sample_with_external_secret(remote_key: &str) -> String {
    let sample = repo_file("config/samples/company-info.yaml");
    let from = "        hmacKey:\n          secretKeyRef: {name: company-info-jwt, key: hmac-key}\n";
    assert!(sample.contains(from), "the sample's development issuer");
    sample.replace(
        from,
        &format!(
            "        hmacKey:\n          externalSecret:\n            storeRef: {{kind: ClusterSecretStore, name: {STORE}}}\n            remoteKey: {remote_key}\n"
        ),
    )
}

async fn install_crds(cluster: &Cluster) {
    let kubectl = cluster.kubectl();
    for (path, _) in ESO_CRDS {
        kubectl.ok_with(
            &["apply", "--server-side", "--force-conflicts", "-f", "-"],
            Some(&repo_file(path)),
        );
    }
    for (_, name) in ESO_CRDS {
        kubectl.ok(&[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            &format!("crd/{name}"),
        ]);
    }
}

pub async fn an_external_secret_synced_by_external_secrets_operator_keys_the_running_server(cluster: &mut Cluster) {
    install_crds(cluster).await;
    // The samples accepted by an earlier case name cloud stores (Vault, Google Secret Manager)
    // that nothing here can reach; External Secrets Operator validates stores one at a time, so
    // they would hold its worker for longer than this case waits. Only the fake store stays.
    cluster
        .kubectl()
        .ok(&["delete", "clustersecretstores", "--all", "--wait=true"]);
    cluster
        .kubectl()
        .ok(&["delete", "secretstores", "--all", "--all-namespaces", "--wait=true"]);
    cluster.namespace(ESO_NAMESPACE).await;
    cluster.kubectl().apply(ESO_NAMESPACE, ESO_RBAC);
    let eso_kubeconfig = service_account_kubeconfig(cluster, ESO_NAMESPACE, ESO_ACCOUNT);
    let mut eso = ExternalSecretsOperator::start(cluster, &eso_kubeconfig);
    eso.wait_started().await;

    // The fake store holds a random key.
    let key = random_key();
    let stores = api(&cluster.client, "ClusterSecretStore", None);
    stores
        .patch(
            STORE,
            &PatchParams::apply(TEST_MANAGER).force(),
            &Patch::Apply(json!({
                "apiVersion": "external-secrets.io/v1",
                "kind": "ClusterSecretStore",
                "metadata": {"name": STORE},
                "spec": {"provider": {"fake": {"data": [{"key": REMOTE_KEY, "value": key}]}}},
            })),
        )
        .await
        .expect("apply the ClusterSecretStore");
    wait_for("the ClusterSecretStore is Ready", Duration::from_secs(60), || {
        let stores = stores.clone();
        async move { (ready(&stores.get(STORE).await.ok()?)?.0 == "True").then_some(()) }
    })
    .await;

    // The operator, as its own ServiceAccount, reconciles an McpServer whose key is external.
    let kubeconfig = install_rbac(cluster).await;
    cluster.namespace(NAMESPACE).await;
    let operator = Operator::start(cluster, &kubeconfig, "eso-one", &[]);
    cluster
        .kubectl()
        .apply(NAMESPACE, &sample_with_external_secret(REMOTE_KEY));

    let external_secrets = api(&cluster.client, "ExternalSecret", Some(NAMESPACE));
    let external_secret = wait_for(
        "External Secrets Operator syncs the operator's ExternalSecret (Ready=True)",
        Duration::from_secs(90),
        || {
            let external_secrets = external_secrets.clone();
            async move {
                let list = external_secrets.list(&Default::default()).await.ok()?;
                let [object] = list.items.as_slice() else { return None };
                (ready(object)?.0 == "True").then(|| object.clone())
            }
        },
    )
    .await;
    let name = external_secret.metadata.name.clone().expect("name");
    let (status, reason, _) = ready(&external_secret).expect("Ready");
    assert_eq!((status.as_str(), reason.as_str()), ("True", "SecretSynced"));
    let secret_key = external_secret.data["spec"]["data"][0]["secretKey"]
        .as_str()
        .expect("spec.data[0].secretKey")
        .to_owned();
    let secrets: Api<Secret> = Api::namespaced(cluster.client.clone(), NAMESPACE);
    let secret = secrets
        .get(&name)
        .await
        .expect("the Secret External Secrets Operator wrote");
    let synced = |secret: &Secret| {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(&secret_key))
            .map(|v| v.0.clone())
    };
    assert_eq!(
        synced(&secret),
        Some(key.clone().into_bytes()),
        "the Secret holds the store's key"
    );
    let owner = secret.metadata.owner_references.clone().unwrap_or_default();
    assert!(
        owner
            .iter()
            .any(|o| o.kind == "ExternalSecret" && o.name == name && o.controller == Some(true)),
        "the ExternalSecret owns its Secret (creationPolicy Owner): {owner:?}"
    );
    let servers: Api<McpServer> = Api::namespaced(cluster.client.clone(), NAMESPACE);
    wait_reconciled(&servers, SERVER, &["company-info-access"]).await;

    // The pod, with that Secret projected, accepts tokens signed with the synced key only.
    let dir = cluster.plane.dir().join("pods").join("eso-company-info");
    let pod = Pod::start(&cluster.client, NAMESPACE, &names::deployment(SERVER), &dir).await;
    let url = pod.mcp_url();
    accepts_only_the_synced_key(&url, &key).await;

    // A remote key the store does not hold: External Secrets Operator marks the ExternalSecret
    // not Ready, the McpServer says so, and the Secret and the running server are untouched.
    cluster
        .kubectl()
        .apply(NAMESPACE, &sample_with_external_secret("no-such-key"));
    let failed = wait_for(
        "External Secrets Operator reports the missing remote key (Ready=False)",
        Duration::from_secs(60),
        || {
            let (external_secrets, name) = (external_secrets.clone(), name.clone());
            async move {
                let object = external_secrets.get(&name).await.ok()?;
                let remote = object.data.pointer("/spec/data/0/remoteRef/key")?.as_str()?.to_owned();
                let (status, reason, message) = ready(&object)?;
                (remote == "no-such-key" && status == "False").then_some((reason, message))
            }
        },
    )
    .await;
    assert_eq!(failed.0, "SecretSyncedError", "{failed:?}");
    assert_eq!(failed.1, "could not get secret data from provider", "{failed:?}");
    let server = wait_for(
        "SecretsReady=False (ExternalSecretSyncFailed) on the McpServer",
        Duration::from_secs(60),
        || {
            let servers = servers.clone();
            async move {
                let server = servers.get(SERVER).await.ok()?;
                (condition(&server, "SecretsReady")? == ("False".into(), "ExternalSecretSyncFailed".into()))
                    .then_some(server)
            }
        },
    )
    .await;
    let message = server
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "SecretsReady"))
        .map(|c| c.message.clone())
        .unwrap_or_default();
    assert_eq!(
        message,
        format!(
            "ExternalSecret {NAMESPACE}/{name} is not Ready (SecretSyncedError: could not get secret data from \
             provider); the pods keep the value synced last (see `kubectl describe externalsecret -n {NAMESPACE} \
             {name}`)"
        )
    );
    assert_eq!(
        condition(&server, "PolicyValid").map(|c| c.0),
        Some("True".into()),
        "the policy is unaffected"
    );
    let secret = secrets.get(&name).await.expect("the Secret is kept");
    assert_eq!(
        synced(&secret),
        Some(key.clone().into_bytes()),
        "the Secret keeps the key synced last"
    );
    // Longer than a projection and a reload take.
    tokio::time::sleep(Duration::from_secs(2)).await;
    accepts_only_the_synced_key(&url, &key).await;

    drop(pod);
    drop(operator);
    drop(eso);
}
