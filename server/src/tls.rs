//! Optional TLS termination on the MCP listener, and client-certificate authentication (mTLS).
//!
//! - **Versions**: TLS 1.3 and TLS 1.2 only ([`PROTOCOL_VERSIONS`]), with rustls' default (AEAD,
//!   forward-secret) cipher suites of the ring provider. ALPN offers `h2` and `http/1.1`.
//! - **Server certificate**: `--tls-cert` (PEM chain, leaf first) and `--tls-key` (PEM private key).
//! - **Client certificates**: with `--tls-client-ca`, a certificate a client presents must chain
//!   to one of the bundle's CAs and be valid now (otherwise the handshake fails); in `optional` mode
//!   a client may also present none, in `required` mode it must present one. The verified
//!   certificate's subject (Common Name, else first DNS subject alternative name) is attached to
//!   every request of the connection as a [`ClientCertificate`], which [`crate::http`] turns into
//!   a caller when the request carries no token.
//! - **Rotation**: [`TlsConfig`] fingerprints the bytes of the certificate, key and CA files;
//!   [`watch`] checks them every reload interval and, on a change, builds a new `ServerConfig` and
//!   swaps it in. New connections use the new files; open connections keep theirs. Invalid files
//!   (for example a key that does not match the certificate, as while the files are being
//!   rewritten one by one) are logged and the last good configuration stays in force.
//! - **Serving**: [`crate::edge::serve`] accepts, admits the connection under the edge's limits,
//!   completes the handshake ([`handshake`], at most [`HANDSHAKE_TIMEOUT`]) and serves the same
//!   axum router over HTTP/1.1 or HTTP/2 with the same timeouts as the plain listener. Failed
//!   handshakes are logged at debug level and never stop the loop. [`serve`] is that loop with
//!   the default limits.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::Router;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, SupportedProtocolVersion};
use sha2::{Digest, Sha256};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use x509_parser::extensions::GeneralName;

pub use crate::auth::ClientCertificate;
use crate::config::{ClientAuth, ServeArgs};

/// The protocol versions offered: TLS 1.3 and TLS 1.2. Anything older is refused at handshake.
pub const PROTOCOL_VERSIONS: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];

/// The ALPN protocols offered, in order of preference.
pub const ALPN_PROTOCOLS: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Longest time a client may take to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest subject accepted from a client certificate, in bytes.
const MAX_SUBJECT_BYTES: usize = 1024;

/// Where the TLS configuration comes from (`--tls-*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain (PEM).
    pub cert: PathBuf,
    /// The private key (PEM).
    pub key: PathBuf,
    /// CA certificates of client certificates (PEM bundle); `None`: no client certificates.
    pub client_ca: Option<PathBuf>,
    /// Whether a client must present a certificate (only with `client_ca`).
    pub client_auth: ClientAuth,
}

impl TlsFiles {
    /// The TLS settings of `args`, or `None` when TLS is off (no `--tls-cert`).
    pub fn from_args(args: &ServeArgs) -> Option<Self> {
        Some(Self {
            cert: args.tls_cert.clone()?,
            key: args.tls_key.clone()?,
            client_ca: args.tls_client_ca.clone(),
            client_auth: args.tls_client_auth.unwrap_or_default(),
        })
    }
}

/// Why a TLS configuration cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        source: io::Error,
    },
    /// A file is not valid PEM, or holds no object of the kind expected.
    #[error("{path}: {what}")]
    Pem {
        /// The file.
        path: String,
        /// What is wrong.
        what: String,
    },
    /// The certificate, key or CA is not usable (for example the key does not match the
    /// certificate).
    #[error("{context}: {source}")]
    Rustls {
        /// What was being built.
        context: String,
        /// The cause.
        source: rustls::Error,
    },
    /// The client CA bundle cannot verify client certificates.
    #[error("client CA {path}: {source}")]
    ClientCa {
        /// The file.
        path: String,
        /// The cause.
        source: rustls::server::VerifierBuilderError,
    },
}

/// The bytes of the TLS files at one moment.
struct Inputs {
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Option<Vec<u8>>,
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.display().to_string(),
        source,
    })
}

impl Inputs {
    fn read(files: &TlsFiles) -> Result<Self, TlsError> {
        Ok(Self {
            cert: read(&files.cert)?,
            key: read(&files.key)?,
            client_ca: files.client_ca.as_deref().map(read).transpose()?,
        })
    }

    fn fingerprint(&self) -> [u8; 32] {
        let mut hash = Sha256::new();
        for part in [Some(&self.cert), Some(&self.key), self.client_ca.as_ref()] {
            match part {
                Some(bytes) => {
                    hash.update((bytes.len() as u64).to_be_bytes());
                    hash.update(bytes);
                }
                None => hash.update(u64::MAX.to_be_bytes()),
            }
        }
        hash.finalize().into()
    }
}

fn certificates(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem_error = |what: String| TlsError::Pem {
        path: path.display().to_string(),
        what,
    };
    let certificates = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(format!("not valid PEM: {e}")))?;
    if certificates.is_empty() {
        return Err(pem_error("no CERTIFICATE in the file".into()));
    }
    Ok(certificates)
}

fn build(files: &TlsFiles, inputs: &Inputs) -> Result<ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certificates(&files.cert, &inputs.cert)?;
    let key = PrivateKeyDer::from_pem_slice(&inputs.key).map_err(|e| TlsError::Pem {
        path: files.key.display().to_string(),
        what: format!("no usable PRIVATE KEY (PKCS#8, PKCS#1 or SEC1): {e}"),
    })?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(PROTOCOL_VERSIONS)
        .map_err(|source| TlsError::Rustls {
            context: "protocol versions".into(),
            source,
        })?;
    let builder = match (&files.client_ca, &inputs.client_ca) {
        (Some(path), Some(pem)) => {
            let mut roots = RootCertStore::empty();
            for certificate in certificates(path, pem)? {
                roots.add(certificate).map_err(|source| TlsError::Rustls {
                    context: format!("client CA {}", path.display()),
                    source,
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = match files.client_auth {
                ClientAuth::Optional => verifier.allow_unauthenticated(),
                ClientAuth::Required => verifier,
            };
            let verifier = verifier.build().map_err(|source| TlsError::ClientCa {
                path: path.display().to_string(),
                source,
            })?;
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|source| TlsError::Rustls {
            context: format!("certificate {} with key {}", files.cert.display(), files.key.display()),
            source,
        })?;
    config.alpn_protocols = ALPN_PROTOCOLS.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// The TLS configuration in force, rebuilt when its files change.
pub struct TlsConfig {
    files: TlsFiles,
    current: ArcSwap<ServerConfig>,
    /// Fingerprint of the inputs of the last build attempt (successful or not), so that a bad
    /// file is reported once, not at every check.
    attempted: Mutex<[u8; 32]>,
}

impl TlsConfig {
    /// Reads the files and builds the first configuration.
    pub fn load(files: TlsFiles) -> Result<Self, TlsError> {
        let inputs = Inputs::read(&files)?;
        let config = build(&files, &inputs)?;
        Ok(Self {
            current: ArcSwap::from_pointee(config),
            attempted: Mutex::new(inputs.fingerprint()),
            files,
        })
    }

    /// The files it is built from.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// The configuration new connections use.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.current.load_full()
    }

    /// Rebuilds the configuration if the files changed since the last attempt. `Ok(true)` when a
    /// new configuration was installed; on an error the previous one stays in force.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let inputs = Inputs::read(&self.files)?;
        let fingerprint = inputs.fingerprint();
        {
            let mut attempted = self.attempted.lock().expect("TLS fingerprint lock");
            if *attempted == fingerprint {
                return Ok(false);
            }
            *attempted = fingerprint;
        }
        let config = build(&self.files, &inputs)?;
        self.current.store(Arc::new(config));
        Ok(true)
    }
}

/// Checks the TLS files every `interval` and installs new ones (runs until the process ends).
pub async fn watch(config: Arc<TlsConfig>, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let config = config.clone();
        match tokio::task::spawn_blocking(move || config.reload()).await {
            Ok(Ok(true)) => tracing::info!("TLS certificate reloaded"),
            Ok(Ok(false)) => {}
            Ok(Err(error)) => {
                tracing::warn!(%error, "cannot reload the TLS certificate; the previous one stays in force");
            }
            Err(error) => tracing::warn!(%error, "TLS reload task failed"),
        }
    }
}

/// The identity a client certificate names: its subject Common Name, else its first DNS subject
/// alternative name. `None` when it has neither, or only values that are empty, too long or hold
/// control characters.
pub fn certificate_subject(der: &[u8]) -> Option<String> {
    let (_, certificate) = x509_parser::parse_x509_certificate(der).ok()?;
    let usable =
        |name: &str| !name.is_empty() && name.len() <= MAX_SUBJECT_BYTES && !name.chars().any(char::is_control);
    let common_name = certificate
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .filter(|cn| usable(cn));
    if let Some(common_name) = common_name {
        return Some(common_name.to_owned());
    }
    let names = certificate.subject_alternative_name().ok().flatten()?;
    names.value.general_names.iter().find_map(|name| match name {
        GeneralName::DNSName(dns) if usable(dns) => Some((*dns).to_owned()),
        _ => None,
    })
}

/// The verified client certificate of a completed handshake, if the client presented one.
fn client_certificate(connection: &rustls::ServerConnection, client: SocketAddr) -> Option<ClientCertificate> {
    // rustls keeps peer certificates only when the verifier accepted them.
    let leaf = connection.peer_certificates()?.first()?;
    match certificate_subject(leaf) {
        Some(subject) => Some(ClientCertificate { subject }),
        None => {
            tracing::debug!(%client, "client certificate names no usable subject (CN or DNS name)");
            None
        }
    }
}

/// Completes the TLS handshake of a connection just accepted (at most [`HANDSHAKE_TIMEOUT`]):
/// the stream and the verified client certificate, if any; `None` (logged at debug level) when
/// the handshake fails or times out.
pub async fn handshake(
    tls: &TlsConfig,
    stream: TcpStream,
    client: SocketAddr,
) -> Option<(TlsStream<TcpStream>, Option<ClientCertificate>)> {
    let acceptor = TlsAcceptor::from(tls.current());
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => {
            let certificate = client_certificate(stream.get_ref().1, client);
            Some((stream, certificate))
        }
        Ok(Err(error)) => {
            tracing::debug!(%error, %client, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(%client, "TLS handshake timed out");
            None
        }
    }
}

/// Serves `router` over TLS on `listener` until `shutdown` completes, then waits for open
/// connections to finish (as `axum::serve(..).with_graceful_shutdown(..)` does), with the edge's
/// default limits ([`crate::edge`]); the server itself calls [`crate::edge::serve`] with the
/// limits its flags set.
pub async fn serve<F>(listener: TcpListener, router: Router, tls: Arc<TlsConfig>, shutdown: F) -> io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    let connections = crate::edge::Connections::new(
        crate::edge::EdgeLimits::default(),
        Arc::new(crate::metrics::Metrics::new()),
    );
    crate::edge::serve(listener, router, connections, Some(tls), shutdown).await
}
