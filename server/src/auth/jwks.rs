//! The signing keys of a JWKS or OIDC-discovery issuer, cached.
//!
//! - Keys are fetched on first use and refetched once the cache is older than its TTL (default
//!   1 h, the issuer's `jwksCacheTtlSeconds`).
//! - A token whose `kid` is not in the cache triggers one refetch, at most once per
//!   `min_refetch_interval` per issuer: a flood of made-up `kid`s costs the IdP one request per
//!   interval, not one per token.
//! - When a refetch fails, the cached keys keep serving (the IdP being down must not lock
//!   callers out); only when there never were keys does verification answer 503.
//! - OIDC discovery (`<issuer>/.well-known/openid-configuration`) must return the same `issuer`
//!   (OpenID Connect Discovery 1.0 §4.3), else its `jwks_uri` is not trusted.
//!
//! - The keys of the cluster's service-account issuer may be fetched with the cluster CA and a
//!   service-account token ([`super::cluster_issuer`]).
//!
//! What this does not do: trust keys embedded in a token (`jwk`, `jku`, `x5u`, `x5c` headers are
//! ignored), or accept keys over anything but the configured URLs.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use http::StatusCode;
use jsonwebtoken::DecodingKey;
use jsonwebtoken::jwk::{JwkSet, PublicKeyUse};
use serde::Deserialize;

use super::cluster_issuer::ServiceAccountIssuerFiles;

/// Largest JWKS or discovery document accepted.
const MAX_DOCUMENT_BYTES: usize = 1 << 20;
/// `Accept` of a discovery document.
const ACCEPT_DISCOVERY: &str = "application/json";
/// `Accept` of a JWKS: its own media type first (RFC 7517 section 8.5.2; the Kubernetes API
/// server answers 406 to a request that does not accept it), plain JSON for the rest.
const ACCEPT_JWKS: &str = "application/jwk-set+json, application/json";

/// Where an issuer's keys are published.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeyLocation {
    /// A JWKS URL.
    JwksUri(String),
    /// OIDC discovery from the issuer URL.
    Discovery {
        /// The issuer (discovery document at `<issuer>/.well-known/openid-configuration`).
        issuer: String,
    },
}

/// A fetched key.
#[derive(Clone)]
pub struct Key {
    /// `kid`, if the JWKS gives one.
    pub kid: Option<String>,
    /// The algorithm the JWKS pins the key to, if any.
    pub algorithm: Option<String>,
    /// The key.
    pub key: DecodingKey,
}

/// Outcome of one fetch, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchResult {
    /// New keys are in the cache.
    Success,
    /// The fetch failed; the old keys (if any) stay.
    Failure,
    /// An unknown `kid` did not trigger a fetch: the last one was too recent.
    RateLimited,
}

impl FetchResult {
    /// Metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
            Self::RateLimited => "rate_limited",
        }
    }
}

/// Called after each fetch decision: (issuer, result).
pub type FetchObserver = Arc<dyn Fn(&str, FetchResult) + Send + Sync>;

#[derive(Default)]
struct State {
    keys: Arc<Vec<Key>>,
    fetched_at: Option<Instant>,
    last_attempt: Option<Instant>,
    jwks_uri: Option<String>,
}

/// The key cache of one issuer. Shared across policy reloads (keyed by issuer and location), so
/// a reload does not refetch.
pub struct JwksCache {
    issuer: String,
    location: KeyLocation,
    ttl: Duration,
    min_refetch_interval: Duration,
    http: reqwest::Client,
    service_account_issuer: Option<ServiceAccountIssuerFiles>,
    observer: FetchObserver,
    state: RwLock<State>,
    fetching: tokio::sync::Mutex<()>,
}

/// Why keys could not be fetched (logged; callers see 503 or the cached keys).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Network or HTTP error.
    #[error("fetching {url}: {source}")]
    Http {
        /// The URL.
        url: String,
        /// The cause.
        source: reqwest::Error,
    },
    /// The document is not what was expected.
    #[error("{url}: {message}")]
    Invalid {
        /// The URL.
        url: String,
        /// What is wrong.
        message: String,
    },
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

impl JwksCache {
    /// A cache for `issuer`'s keys at `location`.
    pub fn new(
        issuer: &str,
        location: KeyLocation,
        ttl: Duration,
        min_refetch_interval: Duration,
        http: reqwest::Client,
        observer: FetchObserver,
    ) -> Self {
        Self {
            issuer: issuer.to_owned(),
            location,
            ttl,
            min_refetch_interval,
            http,
            service_account_issuer: None,
            observer,
            state: RwLock::new(State::default()),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    /// Fetches with `files`: the issuer is the cluster's service-account issuer
    /// ([`super::cluster_issuer`]).
    pub fn with_service_account_issuer(mut self, files: ServiceAccountIssuerFiles) -> Self {
        self.service_account_issuer = Some(files);
        self
    }

    fn snapshot(&self) -> (Arc<Vec<Key>>, Option<Instant>, Option<Instant>) {
        let state = self.state.read().expect("jwks state lock");
        (state.keys.clone(), state.fetched_at, state.last_attempt)
    }

    /// Keys that may have signed a token with `kid`, fetching first when the cache is empty or
    /// stale, or once (rate-limited) when no cached key has that `kid`. `None` when there never
    /// were keys.
    pub async fn keys_for(&self, kid: Option<&str>) -> Option<Vec<Key>> {
        let (keys, fetched_at, _) = self.snapshot();
        let stale = fetched_at.is_none_or(|at| at.elapsed() >= self.ttl);
        if stale {
            self.refresh(false).await;
        } else if kid.is_some() && !keys.iter().any(|k| k.kid.as_deref() == kid) {
            self.refresh(true).await;
        }
        let (keys, fetched_at, _) = self.snapshot();
        fetched_at?;
        Some(
            keys.iter()
                .filter(|k| kid.is_none() || k.kid.is_none() || k.kid.as_deref() == kid)
                .cloned()
                .collect(),
        )
    }

    /// Fetches unless another task just did, or a fetch was attempted less than
    /// `min_refetch_interval` ago: an unreachable IdP or a flood of unknown `kid`s costs the IdP
    /// at most one request per interval, and callers never queue behind a stream of timeouts.
    async fn refresh(&self, unknown_kid: bool) {
        let _guard = self.fetching.lock().await;
        let (_, fetched_at, last_attempt) = self.snapshot();
        let recent = |at: Option<Instant>, window: Duration| at.is_some_and(|at| at.elapsed() < window);
        // Another task refreshed while this one waited for the lock.
        if !unknown_kid && recent(fetched_at, self.ttl) {
            return;
        }
        if recent(last_attempt, self.min_refetch_interval) {
            if unknown_kid {
                (self.observer)(&self.issuer, FetchResult::RateLimited);
            }
            return;
        }
        self.state.write().expect("jwks state lock").last_attempt = Some(Instant::now());
        match self.fetch().await {
            Ok((keys, jwks_uri)) => {
                tracing::info!(issuer = %self.issuer, keys = keys.len(), "fetched signing keys");
                let mut state = self.state.write().expect("jwks state lock");
                state.keys = Arc::new(keys);
                state.fetched_at = Some(Instant::now());
                state.jwks_uri = Some(jwks_uri);
                (self.observer)(&self.issuer, FetchResult::Success);
            }
            Err(error) => {
                tracing::warn!(issuer = %self.issuer, %error, "cannot fetch signing keys; cached keys stay in use");
                (self.observer)(&self.issuer, FetchResult::Failure);
            }
        }
    }

    async fn fetch(&self) -> Result<(Vec<Key>, String), FetchError> {
        let jwks_uri = match &self.location {
            KeyLocation::JwksUri(uri) => uri.clone(),
            KeyLocation::Discovery { issuer } => {
                let cached = self.state.read().expect("jwks state lock").jwks_uri.clone();
                match cached {
                    Some(uri) => uri,
                    None => self.discover(issuer).await?,
                }
            }
        };
        let body = self.get(&jwks_uri, ACCEPT_JWKS).await?;
        let set: JwkSet = serde_json::from_slice(&body).map_err(|e| FetchError::Invalid {
            url: jwks_uri.clone(),
            message: format!("not a JWK set: {e}"),
        })?;
        let keys = set
            .keys
            .iter()
            .filter(|jwk| !matches!(jwk.common.public_key_use, Some(ref u) if *u != PublicKeyUse::Signature))
            .filter_map(|jwk| match DecodingKey::from_jwk(jwk) {
                Ok(key) => Some(Key {
                    kid: jwk.common.key_id.clone(),
                    algorithm: jwk.common.key_algorithm.map(|a| format!("{a:?}")),
                    key,
                }),
                Err(error) => {
                    tracing::warn!(issuer = %self.issuer, kid = ?jwk.common.key_id, %error, "skipping unusable key");
                    None
                }
            })
            .collect();
        Ok((keys, jwks_uri))
    }

    async fn discover(&self, issuer: &str) -> Result<String, FetchError> {
        let url = format!("{}/.well-known/openid-configuration", issuer.trim_end_matches('/'));
        let body = self.get(&url, ACCEPT_DISCOVERY).await?;
        let discovery: Discovery = serde_json::from_slice(&body).map_err(|e| FetchError::Invalid {
            url: url.clone(),
            message: format!("not an OpenID Provider configuration: {e}"),
        })?;
        if discovery.issuer != issuer {
            return Err(FetchError::Invalid {
                url,
                message: format!("names issuer {:?}, expected {issuer:?}", discovery.issuer),
            });
        }
        Ok(discovery.jwks_uri)
    }

    async fn get(&self, url: &str, accept: &str) -> Result<Vec<u8>, FetchError> {
        let http = |source| FetchError::Http {
            url: url.to_owned(),
            source,
        };
        let invalid = |message| FetchError::Invalid {
            url: url.to_owned(),
            message,
        };
        let client = match &self.service_account_issuer {
            Some(files) => files.client(&self.http).map_err(invalid)?,
            None => self.http.clone(),
        };
        let request = || client.get(url).header(http::header::ACCEPT, accept);
        let mut response = request().send().await.map_err(http)?;
        // NB: the service-account token goes only to an endpoint that asks for credentials.
        if matches!(response.status(), StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN)
            && let Some(token) = self.service_account_issuer.as_ref().and_then(|f| f.token())
        {
            response = request()
                .bearer_auth(token.map_err(invalid)?)
                .send()
                .await
                .map_err(http)?;
        }
        let mut response = response.error_for_status().map_err(http)?;
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(http)? {
            if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
                return Err(FetchError::Invalid {
                    url: url.to_owned(),
                    message: format!("larger than {MAX_DOCUMENT_BYTES} bytes"),
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

/// What a key cache is for: the issuer, where its keys are, and how they are fetched (with the
/// files of the cluster's service-account issuer, or not).
pub type CacheKey = (String, KeyLocation, Option<ServiceAccountIssuerFiles>);

/// The key caches of every issuer, kept across policy reloads.
#[derive(Default)]
pub struct JwksRegistry {
    caches: std::sync::Mutex<HashMap<CacheKey, Arc<JwksCache>>>,
}

impl JwksRegistry {
    /// The cache for `key`, created on first use.
    pub fn cache(&self, key: CacheKey, create: impl FnOnce() -> JwksCache) -> Arc<JwksCache> {
        let mut caches = self.caches.lock().expect("jwks registry lock");
        caches.entry(key).or_insert_with(|| Arc::new(create())).clone()
    }

    /// Drops caches no issuer uses any more.
    pub fn retain(&self, used: &[CacheKey]) {
        let mut caches = self.caches.lock().expect("jwks registry lock");
        caches.retain(|key, _| used.contains(key));
    }
}
