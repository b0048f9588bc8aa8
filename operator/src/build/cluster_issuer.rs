//! What a server pod needs to fetch the keys of the cluster's own service-account issuer, when
//! an issuer of `spec.auth.issuers` is declared `kubernetesServiceAccounts: true`: that issuer is
//! usually the API server (`https://kubernetes.default.svc.cluster.local`), whose discovery
//! document and JWKS are served with a certificate of the cluster CA, to service accounts only.
//!
//! | mount | source |
//! |---|---|
//! | `/var/run/secrets/palisade/kubernetes/token` | a projected token of the pod's ServiceAccount: audience the API server's (the default), valid 10 minutes, rotated by the kubelet |
//! | `/var/run/secrets/palisade/kubernetes/ca.crt` | key `ca.crt` of ConfigMap `kube-root-ca.crt` (every namespace has it) |
//!
//! The server gets the two paths as `PALISADE_SERVICE_ACCOUNT_ISSUER_CA_FILE` and
//! `PALISADE_SERVICE_ACCOUNT_ISSUER_TOKEN_FILE`; it trusts the CA besides the system roots, and
//! sends the token only to that issuer's endpoints and only when they ask for credentials. The
//! token grants nothing beyond what every service account may do (the operator binds no role to
//! the ServiceAccount). `automountServiceAccountToken` stays `false`: without such an issuer the
//! pod has no token at all.

use palisade_crds::McpServer;
use palisade_crds::k8s_openapi::api::core::v1::{
    ConfigMapProjection, KeyToPath, ProjectedVolumeSource, ServiceAccountTokenProjection, Volume, VolumeMount,
    VolumeProjection,
};

/// Directory of the token and the CA in the pod.
pub const DIR: &str = "/var/run/secrets/palisade/kubernetes";
/// File name of the projected token.
pub const TOKEN_FILE: &str = "token";
/// File name of the cluster CA bundle.
pub const CA_FILE: &str = "ca.crt";
/// The ConfigMap with the cluster CA that Kubernetes publishes in every namespace.
pub const ROOT_CA_CONFIG_MAP: &str = "kube-root-ca.crt";
/// Lifetime of the projected token, in seconds (the least the API server allows); the kubelet
/// renews it after 80 % of that.
pub const TOKEN_EXPIRATION_SECONDS: i64 = 600;
/// Name of the pod volume.
pub const VOLUME: &str = "kubernetes-api";

/// Whether an issuer of `server` is the cluster's service-account issuer, with keys from a JWKS
/// or discovery (an HMAC issuer never is: CEL and validation refuse that).
pub fn needed(server: &McpServer) -> bool {
    server
        .spec
        .auth
        .issuers
        .iter()
        .any(|issuer| issuer.kubernetes_service_accounts && issuer.hmac_key.is_none())
}

/// The projected volume (token and CA) and its read-only mount at [`DIR`].
pub fn volume(file_mode: i32) -> (Volume, VolumeMount) {
    let token = VolumeProjection {
        service_account_token: Some(ServiceAccountTokenProjection {
            // None: the API server's own audience, which its discovery endpoints accept.
            audience: None,
            expiration_seconds: Some(TOKEN_EXPIRATION_SECONDS),
            path: TOKEN_FILE.into(),
        }),
        ..VolumeProjection::default()
    };
    let ca = VolumeProjection {
        config_map: Some(ConfigMapProjection {
            name: ROOT_CA_CONFIG_MAP.into(),
            items: Some(vec![KeyToPath {
                key: CA_FILE.into(),
                path: CA_FILE.into(),
                mode: None,
            }]),
            optional: None,
        }),
        ..VolumeProjection::default()
    };
    (
        Volume {
            name: VOLUME.into(),
            projected: Some(ProjectedVolumeSource {
                default_mode: Some(file_mode),
                sources: Some(vec![token, ca]),
            }),
            ..Volume::default()
        },
        VolumeMount {
            name: VOLUME.into(),
            mount_path: DIR.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        },
    )
}

/// The server's environment that points it at the two files.
pub fn env() -> [(&'static str, String); 2] {
    [
        ("PALISADE_SERVICE_ACCOUNT_ISSUER_CA_FILE", format!("{DIR}/{CA_FILE}")),
        (
            "PALISADE_SERVICE_ACCOUNT_ISSUER_TOKEN_FILE",
            format!("{DIR}/{TOKEN_FILE}"),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use palisade_crds::k8s_openapi::api::core::v1::PodSpec;

    use super::*;
    use crate::build::pod::pod_template;
    use crate::settings::Settings;
    use crate::test_support::server;
    use crate::validate::validate;

    fn pod(issuer: &str) -> PodSpec {
        let server = server(&format!(
            "metadata: {{name: s, namespace: ns}}\nspec:\n  auth:\n    issuers:\n      - {issuer}\n"
        ));
        let validated = validate(&server, &[], &Settings::default()).unwrap();
        pod_template(&validated, &Settings::default()).spec.unwrap()
    }

    fn env(pod: &PodSpec) -> Vec<(String, String)> {
        pod.containers[0]
            .env
            .iter()
            .flatten()
            .filter(|e| e.name.starts_with("PALISADE_SERVICE_ACCOUNT_ISSUER_"))
            .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
            .collect()
    }

    #[test]
    fn the_service_account_issuer_gets_a_projected_token_and_the_cluster_ca() {
        let pod = pod("{issuer: 'https://kubernetes.default.svc.cluster.local', kubernetesServiceAccounts: true}");
        assert_eq!(pod.automount_service_account_token, Some(false));
        let volume = pod.volumes.iter().flatten().find(|v| v.name == VOLUME).unwrap();
        let sources = volume.projected.as_ref().unwrap().sources.as_ref().unwrap();
        let token = sources[0].service_account_token.as_ref().unwrap();
        assert_eq!(token.audience, None, "the API server's own audience");
        assert_eq!(token.expiration_seconds, Some(600));
        let ca = sources[1].config_map.as_ref().unwrap();
        assert_eq!(ca.name, "kube-root-ca.crt");
        let mount = pod.containers[0]
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.name == VOLUME)
            .unwrap();
        assert_eq!((mount.mount_path.as_str(), mount.read_only), (DIR, Some(true)));
        // The files the server is pointed at are the files of the volume.
        assert_eq!(
            env(&pod),
            [
                (
                    "PALISADE_SERVICE_ACCOUNT_ISSUER_CA_FILE".to_owned(),
                    format!("{}/{}", mount.mount_path, ca.items.as_ref().unwrap()[0].path)
                ),
                (
                    "PALISADE_SERVICE_ACCOUNT_ISSUER_TOKEN_FILE".to_owned(),
                    format!("{}/{}", mount.mount_path, token.path)
                ),
            ]
        );
    }

    #[test]
    fn without_the_service_account_issuer_the_pod_has_no_token() {
        let pod = pod("{issuer: 'https://accounts.google.com'}");
        assert_eq!(pod.automount_service_account_token, Some(false));
        assert!(pod.volumes.iter().flatten().all(|v| v.projected.is_none()));
        assert!(env(&pod).is_empty());
    }
}
