//! Reaching the cluster's own service-account issuer from a pod.
//!
//! An issuer declared the cluster's service-account issuer (`kubernetesServiceAccounts: true` on
//! the McpServer, `claims.kubernetesServiceAccount: true` in the PolicyDocument) is usually the
//! API server itself (`https://kubernetes.default.svc.cluster.local`). Its discovery document and
//! JWKS are served over TLS with a certificate of the cluster CA, and only to authenticated
//! callers (the ClusterRole `system:service-account-issuer-discovery`, bound to every service
//! account). So the operator mounts the cluster CA (ConfigMap `kube-root-ca.crt`) and a
//! short-lived projected token of the pod's service account, and points
//! `--service-account-issuer-ca-file` and `--service-account-issuer-token-file` at them.
//!
//! For the keys of that issuer only, and when the files are configured:
//! - the CA bundle is trusted besides the system roots (an issuer with a public certificate, as
//!   on EKS or GKE, still verifies);
//! - the token is sent only when an endpoint asks for credentials (401 or 403), so an issuer that
//!   serves its keys to anyone never sees it;
//! - both files are read at every fetch: the kubelet rotates the token, and a rotated CA is used
//!   from the next fetch on.

use std::path::PathBuf;
use std::time::Duration;

/// Time limit of one fetch of a discovery document or JWKS.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Time limit of connecting to an issuer.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// The HTTP client settings of every key fetch: [`FETCH_TIMEOUT`], [`CONNECT_TIMEOUT`], and no
/// redirect followed (a redirect would let whoever controls its target serve signing keys; the
/// fetch refuses a 3xx answer, [`super::jwks`]).
pub fn http_client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .timeout(FETCH_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
}

/// The files that reach the cluster's service-account issuer (`--service-account-issuer-*`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ServiceAccountIssuerFiles {
    /// CA bundle (PEM) trusted besides the system roots.
    pub ca_file: Option<PathBuf>,
    /// A bearer token, sent when the issuer's endpoints answer 401 or 403.
    pub token_file: Option<PathBuf>,
}

impl ServiceAccountIssuerFiles {
    /// Whether neither file is configured.
    pub fn is_empty(&self) -> bool {
        self.ca_file.is_none() && self.token_file.is_none()
    }

    /// The client for one fetch: `shared` without a CA file; otherwise a client with the same
    /// limits that also trusts the CA bundle, read now.
    pub fn client(&self, shared: &reqwest::Client) -> Result<reqwest::Client, String> {
        let Some(path) = &self.ca_file else {
            return Ok(shared.clone());
        };
        let pem = std::fs::read(path).map_err(|e| format!("cannot read the CA bundle {}: {e}", path.display()))?;
        let certificates =
            reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| format!("CA bundle {}: {e}", path.display()))?;
        if certificates.is_empty() {
            return Err(format!("CA bundle {} holds no certificate", path.display()));
        }
        http_client_builder()
            .tls_certs_merge(certificates)
            .build()
            .map_err(|e| format!("cannot build an HTTP client trusting {}: {e}", path.display()))
    }

    /// The bearer token, read now (without surrounding whitespace), or `None` without a token
    /// file.
    pub fn token(&self) -> Option<Result<String, String>> {
        let path = self.token_file.as_ref()?;
        Some(match std::fs::read_to_string(path) {
            Ok(token) if !token.trim().is_empty() => Ok(token.trim().to_owned()),
            Ok(_) => Err(format!("the token file {} is empty", path.display())),
            Err(e) => Err(format!("cannot read the token file {}: {e}", path.display())),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Arc;

    use axum::Router;
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::get;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    use serde_json::json;

    use super::*;
    use crate::auth::jwks::{FetchResult, JwksCache, KeyLocation};
    use crate::config::ClientAuth;
    use crate::tls::{self, TlsConfig, TlsFiles};

    const TOKEN: &str = "projected-service-account-token";

    /// A directory removed on drop.
    struct Dir(PathBuf);

    impl Dir {
        fn new() -> Self {
            let path = std::env::temp_dir().join(format!("palisade-cluster-issuer-{}", rand::random::<u64>()));
            std::fs::create_dir_all(&path).unwrap();
            Self(path)
        }

        fn write(&self, name: &str, text: &str) -> PathBuf {
            let path = self.0.join(name);
            std::fs::write(&path, text).unwrap();
            path
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A CA (PEM) and a certificate with key (PEM) it signed for `localhost`.
    fn certificates() -> (String, String, String) {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_key = KeyPair::generate().unwrap();
        let ca_pem = ca_params.self_signed(&ca_key).unwrap().pem();
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        (ca_pem, cert.pem(), key.serialize_pem())
    }

    /// Requests an issuer saw: path, and whether they carried [`TOKEN`].
    type Seen = Arc<std::sync::Mutex<Vec<(&'static str, bool)>>>;

    /// An issuer like the API server: discovery and JWKS over TLS, to bearers of [`TOKEN`] only,
    /// and the JWKS only to a request that accepts `application/jwk-set+json` (else 406). Returns
    /// its URL, the CA file, and the requests it sees.
    async fn api_server(dir: &Dir) -> (String, PathBuf, Seen) {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (ca, cert, key) = certificates();
        let files = TlsFiles {
            cert: dir.write("tls.crt", &cert),
            key: dir.write("tls.key", &key),
            client_ca: None,
            client_auth: ClientAuth::Optional,
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let issuer = format!("https://localhost:{}", addr.port());
        let seen: Seen = Arc::default();
        let log = seen.clone();
        let authorized = move |path: &'static str, headers: &HeaderMap| {
            let ok = headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {TOKEN}"));
            log.lock().unwrap().push((path, ok));
            ok
        };
        let authorized_too = authorized.clone();
        let discovery = json!({"issuer": issuer, "jwks_uri": format!("{issuer}/openid/v1/jwks")});
        let router = Router::new()
            .route(
                "/.well-known/openid-configuration",
                get(move |headers: HeaderMap| async move {
                    if authorized("discovery", &headers) {
                        Ok(axum::Json(discovery))
                    } else {
                        Err(StatusCode::UNAUTHORIZED)
                    }
                }),
            )
            .route(
                "/openid/v1/jwks",
                get(move |headers: HeaderMap| async move {
                    let accept = headers.get("accept").and_then(|v| v.to_str().ok()).unwrap_or_default();
                    if !accept.contains("application/jwk-set+json") {
                        return Err(StatusCode::NOT_ACCEPTABLE);
                    }
                    if authorized_too("jwks", &headers) {
                        Ok(axum::Json(
                            json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "k1", "use": "sig",
                            "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
                            "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}),
                        ))
                    } else {
                        Err(StatusCode::FORBIDDEN)
                    }
                }),
            );
        let config = Arc::new(TlsConfig::load(files).unwrap());
        tokio::spawn(tls::serve(listener, router, config, std::future::pending()));
        (issuer, dir.write("ca.crt", &ca), seen)
    }

    fn cache(
        issuer: &str,
        files: Option<ServiceAccountIssuerFiles>,
    ) -> (Arc<JwksCache>, Arc<std::sync::Mutex<Vec<FetchResult>>>) {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let results = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = results.clone();
        let cache = JwksCache::new(
            issuer,
            KeyLocation::Discovery {
                issuer: issuer.to_owned(),
            },
            Duration::from_secs(3600),
            Duration::ZERO,
            http_client_builder().build().unwrap(),
            Arc::new(move |_, result| seen.lock().unwrap().push(result)),
        );
        let cache = match files {
            Some(files) => cache.with_service_account_issuer(files),
            None => cache,
        };
        (Arc::new(cache), results)
    }

    #[tokio::test]
    async fn discovery_against_the_api_server_uses_the_cluster_ca_and_the_token() {
        let dir = Dir::new();
        let (issuer, ca_file, seen) = api_server(&dir).await;
        let files = ServiceAccountIssuerFiles {
            ca_file: Some(ca_file.clone()),
            token_file: Some(dir.write("token", &format!("{TOKEN}\n"))),
        };
        let (with_files, results) = cache(&issuer, Some(files));
        let keys = with_files
            .keys_for(Some("k1"), None)
            .await
            .expect("the keys are fetched");
        assert_eq!(keys.len(), 1);
        assert_eq!(*results.lock().unwrap(), [FetchResult::Success]);
        // The token went only where it was asked for.
        assert_eq!(
            *seen.lock().unwrap(),
            [
                ("discovery", false),
                ("discovery", true),
                ("jwks", false),
                ("jwks", true)
            ]
        );

        // Without the CA, TLS fails; with the CA but without the token, the issuer refuses.
        let (plain, results) = cache(&issuer, None);
        assert!(plain.keys_for(Some("k1"), None).await.is_none());
        assert_eq!(*results.lock().unwrap(), [FetchResult::Failure]);
        let ca_only = ServiceAccountIssuerFiles {
            ca_file: Some(ca_file),
            token_file: None,
        };
        let (no_token, results) = cache(&issuer, Some(ca_only));
        assert!(no_token.keys_for(Some("k1"), None).await.is_none());
        assert_eq!(*results.lock().unwrap(), [FetchResult::Failure]);
    }

    #[test]
    fn unreadable_or_empty_files_are_errors_that_name_the_file() {
        // reqwest is built without a default crypto provider (as in main.rs).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = Dir::new();
        let shared = reqwest::Client::new();
        let files = ServiceAccountIssuerFiles {
            ca_file: Some(dir.write("ca.crt", "not a certificate")),
            token_file: Some(dir.write("token", " \n")),
        };
        assert!(files.client(&shared).unwrap_err().contains("ca.crt"));
        assert!(files.token().unwrap().unwrap_err().contains("is empty"));
        let missing = ServiceAccountIssuerFiles {
            ca_file: Some(dir.0.join("absent.crt")),
            token_file: Some(dir.0.join("absent")),
        };
        assert!(missing.client(&shared).unwrap_err().contains("absent.crt"));
        assert!(missing.token().unwrap().unwrap_err().contains("absent"));
        assert!(ServiceAccountIssuerFiles::default().is_empty());
        assert!(ServiceAccountIssuerFiles::default().token().is_none());
    }
}
