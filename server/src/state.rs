//! What the server serves from: the loaded policy, the authenticator built from it, and the
//! documents, as one immutable [`Snapshot`] that requests read and reloads replace atomically.
//!
//! A reload validates everything first (policy, secret files, documents) and swaps only a
//! complete, valid snapshot: an invalid file keeps the last good snapshot in force, is logged,
//! counted in `palisade_policy_reloads_total{result="failure"}`, and shown by `/ready`. A request
//! holds the snapshot it started with, so no request fails or sees half of a reload.
//!
//! Changes are found by polling a cheap fingerprint of the inputs (sizes, modification times and
//! resolved paths of the document files; the bytes of the policy and secret files) at a fixed
//! interval. Polling works the same for ConfigMap and Secret volumes (which swap a `..data`
//! symlink), plain files, and editors that replace files, without depending on inotify.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use palisade_crds::document::KeySource;
use palisade_crds::{Policy, PolicyDocument};
use sha2::{Digest, Sha256};

use crate::audit::AuditSink;
use crate::auth::cluster_issuer::ServiceAccountIssuerFiles;
use crate::auth::jwks::{FetchObserver, JwksRegistry};
use crate::auth::{AuthSettings, Authenticator, LoadContext};
use crate::config::ServeArgs;
use crate::documents::{DocumentLimits, DocumentStore};
use crate::mcp::methods::Prerendered;
use crate::metrics::Metrics;

/// One consistent view of everything a request needs.
pub struct Snapshot {
    /// The prepared policy.
    pub policy: Policy,
    /// Authentication under that policy.
    pub auth: Authenticator,
    /// The documents of the policy's collections.
    pub documents: DocumentStore,
    /// The answers that depend on the policy and documents only, serialized once.
    pub prerendered: Prerendered,
    /// Fingerprint of the inputs this snapshot was built from.
    fingerprint: [u8; 32],
}

/// Server-wide state.
pub struct AppState {
    /// The snapshot in force; `None` until the first successful load.
    pub snapshot: ArcSwapOption<Snapshot>,
    /// Settings.
    pub config: ServeArgs,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Audit events.
    pub audit: AuditSink,
    /// JWKS caches, kept across reloads.
    pub jwks: JwksRegistry,
    /// HTTP client for JWKS and discovery.
    pub http: reqwest::Client,
    /// The last reload error (logged once when it changes) while the previous snapshot stays in
    /// force.
    pub last_error: Mutex<Option<String>>,
    /// Per-caller rate limits.
    pub rate_limiter: crate::rate_limit::RateLimiter,
    /// Places for requests being served (`--max-concurrency`); a request that finds none is shed.
    pub requests: Arc<tokio::sync::Semaphore>,
    /// Proxy mode: the upstream MCP server this server stands in front of (kept across reloads).
    pub proxy: Option<crate::mcp::proxy::Proxy>,
    /// The tracer of request spans; `None` while trace export is off.
    pub tracer: Option<&'static palisade_telemetry::DecidingTracer>,
    /// `url.scheme` of every request span: every connection of the MCP listener is TLS when a
    /// certificate is configured.
    pub url_scheme: &'static str,
}

/// Why a snapshot could not be built.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The policy file cannot be read.
    #[error("cannot read policy file {path}: {source}")]
    ReadPolicy {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The policy file is not a PolicyDocument.
    #[error("policy file {path}: {source}")]
    ParsePolicy {
        /// The file.
        path: String,
        /// The cause.
        source: palisade_crds::document::DocumentError,
    },
    /// The policy is not valid.
    #[error("policy file {path}: {problems}")]
    InvalidPolicy {
        /// The file.
        path: String,
        /// What is wrong.
        problems: palisade_crds::Problems,
    },
    /// A proxying server's policy defines tools or collections of its own.
    #[error(
        "policy file {path}: this server stands in front of an upstream and serves its tools: the policy must define no tools or collections (its rules decide on the upstream's tool names)"
    )]
    ProxyDefinesTools {
        /// The file.
        path: String,
    },
    /// A document server's policy pins an upstream's tools.
    #[error(
        "policy file {path}: the policy pins an upstream's tools (upstream:), but this server serves documents: start it with --upstream-url or an upstream command, or compile the policy for a document server"
    )]
    DocumentServerWithPins {
        /// The file.
        path: String,
    },
    /// A secret file is missing or invalid.
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthLoadError),
    /// The documents cannot be loaded.
    #[error("documents: {0}")]
    Documents(#[from] crate::documents::DocumentError),
}

impl LoadError {
    /// Which input failed, for the reload metric.
    pub fn file_label(&self) -> &'static str {
        match self {
            Self::ReadPolicy { .. }
            | Self::ParsePolicy { .. }
            | Self::InvalidPolicy { .. }
            | Self::ProxyDefinesTools { .. }
            | Self::DocumentServerWithPins { .. } => "policy",
            Self::Auth(_) => "secrets",
            Self::Documents(_) => "documents",
        }
    }
}

/// Unix time in seconds.
pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl AppState {
    /// State with no snapshot yet.
    pub fn new(config: ServeArgs, metrics: Arc<Metrics>, audit: AuditSink, http: reqwest::Client) -> Self {
        let rate_limiter = crate::rate_limit::RateLimiter::new(config.rate_limit, config.rate_limit_burst);
        let requests = Arc::new(tokio::sync::Semaphore::new(config.max_concurrency.max(1)));
        let url_scheme = if config.tls_cert.is_some() { "https" } else { "http" };
        Self {
            requests,
            snapshot: ArcSwapOption::empty(),
            config,
            metrics,
            audit,
            jwks: JwksRegistry::default(),
            http,
            last_error: Mutex::new(None),
            rate_limiter,
            proxy: None,
            tracer: None,
            url_scheme,
        }
    }

    fn auth_settings(&self) -> AuthSettings {
        AuthSettings {
            max_token_bytes: self.config.max_token_bytes,
            jwks_min_refetch_interval: self.config.jwks_refetch_interval,
            ..AuthSettings::default()
        }
    }

    /// Builds a snapshot from the files, without installing it.
    pub fn build_snapshot(&self) -> Result<Snapshot, LoadError> {
        let path = self.config.policy_file.display().to_string();
        let text = std::fs::read_to_string(&self.config.policy_file).map_err(|source| LoadError::ReadPolicy {
            path: path.clone(),
            source,
        })?;
        let document = PolicyDocument::from_yaml(&text).map_err(|source| LoadError::ParsePolicy {
            path: path.clone(),
            source,
        })?;
        if self.proxy.is_some() && !(document.tools.is_empty() && document.collections.is_empty()) {
            return Err(LoadError::ProxyDefinesTools { path });
        }
        if self.proxy.is_none() && document.upstream.is_some() {
            return Err(LoadError::DocumentServerWithPins { path });
        }
        let fingerprint = fingerprint(&text, &document, &self.config.documents_dir);
        let policy = Policy::new(document).map_err(|problems| LoadError::InvalidPolicy { path, problems })?;
        let metrics = self.metrics.clone();
        let observer: FetchObserver = Arc::new(move |issuer, result| metrics.jwks_fetched(issuer, result.as_str()));
        let auth = Authenticator::load(
            &policy.document().authentication,
            &LoadContext {
                registry: &self.jwks,
                http: &self.http,
                observer,
                settings: self.auth_settings(),
                service_account_issuer: ServiceAccountIssuerFiles {
                    ca_file: self.config.service_account_issuer_ca_file.clone(),
                    token_file: self.config.service_account_issuer_token_file.clone(),
                },
            },
        )?
        .with_rule_claims(policy.claim_names());
        for issuer in &policy.document().authentication.issuers {
            if !matches!(issuer.keys, palisade_crds::document::KeySource::HmacKeyFile(_)) {
                self.metrics.declare_jwks_issuer(&issuer.issuer);
            }
        }
        let collections: Vec<&str> = policy.document().collections.iter().map(|c| c.name.as_str()).collect();
        let documents = DocumentStore::load(&self.config.documents_dir, &collections, &DocumentLimits::default())?;
        let prerendered = Prerendered::new(&policy, &documents);
        Ok(Snapshot {
            policy,
            auth,
            documents,
            prerendered,
            fingerprint,
        })
    }

    /// Loads the files and installs the result if it is valid and differs from the snapshot in
    /// force. Returns whether a new snapshot was installed.
    pub fn reload(&self) -> Result<bool, LoadError> {
        if let Some(current) = self.snapshot.load_full()
            && input_fingerprint(&self.config.policy_file, &self.config.documents_dir) == Some(current.fingerprint)
        {
            // The files are back to what is in force (e.g. a refused edit was reverted).
            if self.last_error.lock().expect("last error lock").take().is_some() {
                tracing::info!(
                    policy_hash = current.policy.hash(),
                    "the files are back to the policy in force; the reload error is cleared"
                );
            }
            return Ok(false);
        }
        match self.build_snapshot() {
            Ok(snapshot) => {
                let previous = self.snapshot.load_full();
                let changed = previous.as_ref().is_none_or(|p| p.fingerprint != snapshot.fingerprint);
                if changed {
                    tracing::info!(
                        policy_hash = snapshot.policy.hash(),
                        documents = snapshot.documents.document_count(),
                        tools = snapshot.policy.tools().len(),
                        "policy and documents loaded"
                    );
                    self.metrics.set_policy_hash(snapshot.policy.hash());
                    self.metrics
                        .documents_loaded
                        .set(snapshot.documents.document_count() as i64);
                    self.metrics.ready.set(1);
                    self.metrics.policy_reloaded("policy", true);
                    self.snapshot.store(Some(Arc::new(snapshot)));
                }
                *self.last_error.lock().expect("last error lock") = None;
                Ok(changed)
            }
            Err(error) => {
                let message = error.to_string();
                let mut last = self.last_error.lock().expect("last error lock");
                if last.as_deref() != Some(message.as_str()) {
                    tracing::error!(error = %message, "reload refused; the last good policy stays in force");
                    self.metrics.policy_reloaded(error.file_label(), false);
                }
                *last = Some(message);
                Err(error)
            }
        }
    }
}

/// Polls for changes until the process ends.
pub async fn watch(state: Arc<AppState>) {
    let mut interval = tokio::time::interval(state.config.reload_interval.max(Duration::from_millis(100)));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let state = state.clone();
        // File I/O and document loading block; keep them off the request threads' executor.
        let _ = tokio::task::spawn_blocking(move || state.reload()).await;
    }
}

/// The fingerprint of the inputs as they are now, if the policy file can be read and parsed.
fn input_fingerprint(policy_file: &Path, documents_dir: &Path) -> Option<[u8; 32]> {
    let text = std::fs::read_to_string(policy_file).ok()?;
    let document = PolicyDocument::from_yaml(&text).ok()?;
    Some(fingerprint(&text, &document, documents_dir))
}

/// SHA-256 over the policy text, the bytes of every secret file it names, and for every document
/// file: its resolved path, size and modification time.
fn fingerprint(policy_text: &str, document: &PolicyDocument, documents_dir: &Path) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update(policy_text.as_bytes());
    let auth = &document.authentication;
    let secret_files = auth
        .issuers
        .iter()
        .filter_map(|i| match &i.keys {
            KeySource::HmacKeyFile(path) => Some(path.as_str()),
            _ => None,
        })
        .chain(auth.api_keys_file.as_deref());
    for path in secret_files {
        hash.update(path.as_bytes());
        hash.update(std::fs::read(path).unwrap_or_default());
    }
    for collection in &document.collections {
        let dir = documents_dir.join(&collection.name);
        hash.update(collection.name.as_bytes());
        let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        entries.sort();
        for entry in entries {
            let resolved = std::fs::canonicalize(&entry).unwrap_or_else(|_| entry.clone());
            hash.update(resolved.to_string_lossy().as_bytes());
            if let Ok(meta) = std::fs::metadata(&entry) {
                hash.update(meta.len().to_le_bytes());
                let modified = meta.modified().ok().and_then(|m| m.duration_since(UNIX_EPOCH).ok());
                hash.update(modified.map_or(0, |d| d.as_nanos()).to_le_bytes());
            }
        }
    }
    hash.finalize().into()
}
