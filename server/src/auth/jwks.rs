//! The signing keys of a JWKS or OIDC-discovery issuer, cached.
//!
//! - Keys are fetched on first use. Once the cache is older than [`REFRESH_AT`] of its TTL
//!   (default 1 h, the issuer's `jwksCacheTtlSeconds`), the next request starts a refresh in the
//!   background and is served by the cached keys: no request waits for a refresh, only the first
//!   fetch of an issuer and the refetch for an unknown `kid` are awaited.
//! - A discovered `jwks_uri` is trusted as long as the keys: once the TTL has run out, the next
//!   refresh asks the discovery document again.
//! - Only `https://` URLs are fetched (the issuer's discovery document, its `jwks_uri`, a
//!   configured `jwksUri`), unless the issuer is marked `allowInsecureHttp` for development. No
//!   redirect is followed: a 3xx answer is a failed fetch.
//! - A token whose `kid` is not in the cache triggers one refetch, at most once per
//!   `min_refetch_interval` per issuer: a flood of made-up `kid`s costs the IdP one request per
//!   interval, not one per token.
//! - At most [`MAX_FETCH_WAITERS`] requests wait for a running fetch of an issuer that has keys
//!   (a refetch for an unknown `kid`), and at most [`MAX_FIRST_FETCH_WAITERS`] for the first
//!   fetch of one that has none yet (a cold start: those requests cannot be served otherwise);
//!   the others go on at once with the cached keys (401 for an unknown `kid`, 503 without keys).
//!   A hanging IdP therefore holds at most that many of the server's request places (its fetch
//!   times out after 5 s), and a flood of made-up `kid`s cannot shed valid callers. Requests
//!   that waited for a fetch take its outcome and do not fetch again.
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
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use http::StatusCode;
use jsonwebtoken::DecodingKey;
use jsonwebtoken::jwk::{JwkSet, PublicKeyUse};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::cluster_issuer::ServiceAccountIssuerFiles;
use crate::trace::RequestTrace;

/// The share of the TTL after which a request starts a background refresh: 4/5, so that the
/// keys are renewed before they expire.
pub const REFRESH_AT: (u32, u32) = (4, 5);

/// How many requests may wait for a running key fetch of an issuer that has keys. The others do
/// not wait: an unknown `kid` is then refused as unknown (401).
pub const MAX_FETCH_WAITERS: usize = 4;

/// How many requests may wait for the first key fetch of an issuer (half of the default
/// `--max-concurrency`). The others answer 503 `KEYS_UNAVAILABLE`.
pub const MAX_FIRST_FETCH_WAITERS: usize = 16;

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
    /// SHA-256 of the JWK as published: a verification cached with this key stays valid only
    /// while the issuer's current key set still holds a key with this fingerprint.
    pub fingerprint: [u8; 32],
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
    /// A request did not wait for the running fetch: [`MAX_FETCH_WAITERS`] (or
    /// [`MAX_FIRST_FETCH_WAITERS`]) already did.
    Busy,
}

impl FetchResult {
    /// Metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
            Self::RateLimited => "rate_limited",
            Self::Busy => "busy",
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
    /// The discovered `jwks_uri` and when it was discovered.
    jwks_uri: Option<(String, Instant)>,
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
    allow_insecure_http: bool,
    state: RwLock<State>,
    fetching: tokio::sync::Mutex<()>,
    /// Requests waiting for the running fetch.
    waiters: AtomicUsize,
    /// Fetches attempted so far: a request that waited for one takes its outcome.
    attempts: AtomicU64,
    /// A background refresh is running.
    refreshing: AtomicBool,
    /// A fetch is on the wire: set before `last_attempt` is written, cleared once its outcome
    /// is stored, so a request that reads a recent `last_attempt` and no fetch in flight knows
    /// that no fetch can give it new keys.
    in_flight: AtomicBool,
}

/// One request's place among the waiters of a fetch, given back when it ends or is dropped.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn join(waiters: &'a AtomicUsize, most: usize) -> Option<Self> {
        waiters
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < most).then_some(n + 1))
            .ok()
            .map(|_| Self(waiters))
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Marks the end of a fetch when dropped: after its outcome is stored, or when the request
/// that ran it is cancelled.
struct InFlight<'a>(&'a AtomicBool);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
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
            allow_insecure_http: false,
            state: RwLock::new(State::default()),
            fetching: tokio::sync::Mutex::new(()),
            waiters: AtomicUsize::new(0),
            attempts: AtomicU64::new(0),
            refreshing: AtomicBool::new(false),
            in_flight: AtomicBool::new(false),
        }
    }

    /// Fetches `http://` URLs too: the issuer is marked `allowInsecureHttp` (development only).
    pub fn allow_insecure_http(mut self, allow: bool) -> Self {
        self.allow_insecure_http = allow;
        self
    }

    fn refresh_after(&self) -> Duration {
        self.ttl * REFRESH_AT.0 / REFRESH_AT.1
    }

    /// Whether the current key set holds a key with `fingerprint`.
    pub fn has_key(&self, fingerprint: &[u8; 32]) -> bool {
        let state = self.state.read().expect("jwks state lock");
        state.keys.iter().any(|k| &k.fingerprint == fingerprint)
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

    /// Keys that may have signed a token with `kid`: fetching first when there never were keys,
    /// or once (rate-limited) when no cached key has that `kid`; starting a background refresh
    /// when the keys are due for one. `None` when there never were keys. A fetch the caller makes
    /// (and waits for) is recorded in `trace`, the caller's request's; one it waits for that
    /// another caller makes is recorded in that caller's.
    pub async fn keys_for(self: &Arc<Self>, kid: Option<&str>, trace: Option<&RequestTrace>) -> Option<Vec<Key>> {
        let (keys, fetched_at, _) = self.snapshot();
        match fetched_at {
            None => self.refresh(false, trace).await,
            Some(_) if kid.is_some() && !keys.iter().any(|k| k.kid.as_deref() == kid) => {
                self.refresh(true, trace).await
            }
            Some(at) if at.elapsed() >= self.refresh_after() => self.refresh_in_background(),
            Some(_) => {}
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

    /// Starts one refresh on the runtime unless one is running; the caller goes on with the
    /// cached keys.
    fn refresh_in_background(self: &Arc<Self>) {
        if self.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let cache = Arc::clone(self);
        tokio::spawn(async move {
            cache.refresh(false, None).await;
            cache.refreshing.store(false, Ordering::Release);
        });
    }

    /// Fetches unless another task just did, or a fetch was attempted less than
    /// `min_refetch_interval` ago: an unreachable IdP or a flood of unknown `kid`s costs the IdP
    /// at most one request per interval, and callers never queue behind a stream of timeouts.
    /// While a fetch runs, at most [`MAX_FETCH_WAITERS`] callers ([`MAX_FIRST_FETCH_WAITERS`]
    /// for the first fetch) wait for it and take its outcome; the others return at once.
    async fn refresh(&self, unknown_kid: bool, trace: Option<&RequestTrace>) {
        let recent = |at: Option<Instant>, window: Duration| at.is_some_and(|at| at.elapsed() < window);
        // An unknown `kid` while no fetch runs and the last one is recent: rate-limited at once,
        // without queueing on the fetch lock (a flood of made-up `kid`s must not count as waiters
        // and push out a request waiting for a real rotation).
        if unknown_kid {
            let last_attempt = self.snapshot().2;
            if recent(last_attempt, self.min_refetch_interval) && !self.in_flight.load(Ordering::Acquire) {
                (self.observer)(&self.issuer, FetchResult::RateLimited);
                return;
            }
        }
        let attempts = self.attempts.load(Ordering::Acquire);
        let _guard = match self.fetching.try_lock() {
            Ok(guard) => guard,
            Err(_) => {
                let cold = self.snapshot().1.is_none();
                let most = if cold {
                    MAX_FIRST_FETCH_WAITERS
                } else {
                    MAX_FETCH_WAITERS
                };
                let Some(_waiting) = Waiting::join(&self.waiters, most) else {
                    (self.observer)(&self.issuer, FetchResult::Busy);
                    return;
                };
                let guard = self.fetching.lock().await;
                // The fetch this caller waited for has its outcome: no second one.
                if self.attempts.load(Ordering::Acquire) != attempts {
                    return;
                }
                guard
            }
        };
        let (_, fetched_at, last_attempt) = self.snapshot();
        // Another task refreshed while this one waited for the lock.
        if !unknown_kid && recent(fetched_at, self.refresh_after()) {
            return;
        }
        if recent(last_attempt, self.min_refetch_interval) {
            if unknown_kid {
                (self.observer)(&self.issuer, FetchResult::RateLimited);
            }
            return;
        }
        self.in_flight.store(true, Ordering::Release);
        let _in_flight = InFlight(&self.in_flight);
        self.state.write().expect("jwks state lock").last_attempt = Some(Instant::now());
        let fetch_started = Instant::now();
        let fetched = self.fetch().await;
        // A fetch a request waited for is a span of that request's trace.
        if let Some(trace) = trace {
            let outcome = if fetched.is_ok() { "success" } else { "failure" };
            trace.jwks_fetched(&self.issuer, fetch_started, outcome);
        }
        self.attempts.fetch_add(1, Ordering::AcqRel);
        match fetched {
            Ok((keys, jwks_uri)) => {
                tracing::info!(issuer = %self.issuer, keys = keys.len(), "fetched signing keys");
                let mut state = self.state.write().expect("jwks state lock");
                state.keys = Arc::new(keys);
                state.fetched_at = Some(Instant::now());
                if matches!(self.location, KeyLocation::Discovery { .. }) && jwks_uri.1 {
                    state.jwks_uri = Some((jwks_uri.0, Instant::now()));
                }
                (self.observer)(&self.issuer, FetchResult::Success);
            }
            Err(error) => {
                tracing::warn!(issuer = %self.issuer, %error, "cannot fetch signing keys; cached keys stay in use");
                (self.observer)(&self.issuer, FetchResult::Failure);
            }
        }
    }

    /// The keys, and the JWKS URL with whether it was discovered just now.
    async fn fetch(&self) -> Result<(Vec<Key>, (String, bool)), FetchError> {
        let (jwks_uri, discovered) = match &self.location {
            KeyLocation::JwksUri(uri) => (uri.clone(), false),
            KeyLocation::Discovery { issuer } => {
                // A discovered jwks_uri expires with the keys it led to.
                let cached = self.state.read().expect("jwks state lock").jwks_uri.clone();
                match cached.filter(|(_, at)| at.elapsed() < self.ttl) {
                    Some((uri, _)) => (uri, false),
                    None => (self.discover(issuer).await?, true),
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
                    fingerprint: Sha256::digest(serde_json::to_vec(jwk).unwrap_or_default()).into(),
                }),
                Err(error) => {
                    tracing::warn!(issuer = %self.issuer, kid = ?jwk.common.key_id, %error, "skipping unusable key");
                    None
                }
            })
            .collect();
        Ok((keys, (jwks_uri, discovered)))
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
        if !url.starts_with("https://") && !self.allow_insecure_http {
            return Err(invalid(
                "not an https:// URL; keys are fetched over HTTPS only unless the issuer sets allowInsecureHttp: true (development only)"
                    .to_owned(),
            ));
        }
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
        if response.status().is_redirection() {
            return Err(invalid(format!(
                "answered {} (a redirect); redirects are not followed: configure the final URL",
                response.status()
            )));
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
/// files of the cluster's service-account issuer, or not; over plain HTTP too, or not).
pub type CacheKey = (String, KeyLocation, Option<ServiceAccountIssuerFiles>, bool);

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

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;
    use std::sync::{Arc, Mutex};

    use axum::Router;
    use axum::http::StatusCode;
    use axum::response::{IntoResponse, Redirect};
    use axum::routing::get;
    use serde_json::{Value, json};

    use super::*;
    use crate::auth::cluster_issuer::http_client_builder;

    fn ec_key(kid: &str) -> Value {
        json!({"kty": "EC", "crv": "P-256", "kid": kid, "use": "sig",
               "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
               "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"})
    }

    /// What the test IdP serves and has seen.
    #[derive(Default)]
    struct Idp {
        kid: Mutex<String>,
        delay: Mutex<Duration>,
        discoveries: AtomicU64,
        jwks: AtomicU64,
        redirected: AtomicU64,
    }

    /// A plain-HTTP IdP on loopback: discovery, a JWKS with one key (`idp.kid`) served after
    /// `idp.delay`, and `/moved`, which redirects to the JWKS. Returns its URL.
    async fn idp(idp: Arc<Idp>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (a, b, c) = (idp.clone(), idp.clone(), idp.clone());
        let issuer = url.clone();
        let router = Router::new()
            .route(
                "/.well-known/openid-configuration",
                get(move || async move {
                    a.discoveries.fetch_add(1, Ordering::SeqCst);
                    axum::Json(json!({"issuer": issuer, "jwks_uri": format!("{issuer}/jwks")}))
                }),
            )
            .route(
                "/jwks",
                get(move || async move {
                    let delay = *b.delay.lock().unwrap();
                    tokio::time::sleep(delay).await;
                    b.jwks.fetch_add(1, Ordering::SeqCst);
                    let kid = b.kid.lock().unwrap().clone();
                    axum::Json(json!({"keys": [ec_key(&kid)]})).into_response()
                }),
            )
            .route(
                "/moved",
                get(move || async move {
                    c.redirected.fetch_add(1, Ordering::SeqCst);
                    Redirect::temporary("/jwks").into_response()
                }),
            )
            .route("/gone", get(|| async { StatusCode::GONE }));
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        url
    }

    /// The HTTP client of the caches, with the process's crypto provider installed (as `main`
    /// does), so that each test also runs alone.
    fn client() -> reqwest::Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        http_client_builder().build().unwrap()
    }

    fn cache(issuer: &str, location: KeyLocation, ttl: Duration, insecure: bool) -> Arc<JwksCache> {
        Arc::new(
            JwksCache::new(issuer, location, ttl, Duration::ZERO, client(), Arc::new(|_, _| {}))
                .allow_insecure_http(insecure),
        )
    }

    /// A test IdP serving one key, `kid`, and its URL.
    async fn idp_serving(kid: &str) -> (Arc<Idp>, String) {
        let state = Arc::new(Idp::default());
        *state.kid.lock().unwrap() = kid.into();
        let url = idp(state.clone()).await;
        (state, url)
    }

    /// The cache of the JWKS at `<url>/jwks` (plain HTTP allowed, an hour's TTL).
    fn jwks_at(url: &str) -> Arc<JwksCache> {
        cache(
            url,
            KeyLocation::JwksUri(format!("{url}/jwks")),
            Duration::from_secs(3600),
            true,
        )
    }

    async fn wait_for(what: &str, counter: &AtomicU64, value: u64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while counter.load(Ordering::SeqCst) < value {
            assert!(
                Instant::now() < deadline,
                "{what}: still {}",
                counter.load(Ordering::SeqCst)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn a_fetch_a_request_makes_is_a_span_of_that_request_s_trace_only() {
        use axum::http::{HeaderMap, Version};
        use opentelemetry::trace::{SpanKind, TraceId};

        use crate::trace::RequestTrace;
        use crate::trace::testing::{attribute, tracer};

        const CALLER_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
        let (state, url) = idp_serving("k1").await;
        let keys = jwks_at(&url);
        let (tracer, exporter) = tracer();
        let mut with_context = HeaderMap::new();
        let traceparent = format!("00-{CALLER_TRACE}-b7ad6b7169203331-01");
        with_context.insert("traceparent", traceparent.parse().unwrap());
        // The first request makes the first fetch (its span begins only once the message is
        // read); the second finds the keys cached; the third, whose span began at once with the
        // caller's context, names a key the IdP rotated to and makes the second fetch.
        let authenticate = |trace: RequestTrace, kid: &'static str| {
            let keys = keys.clone();
            async move {
                let started = Instant::now();
                assert_eq!(keys.keys_for(Some(kid), Some(&trace)).await.unwrap().len(), 1);
                trace.authenticated(started, Ok("jwt"));
                trace.finish(200, Version::HTTP_11, "http");
                trace.ids().expect("recorded").trace
            }
        };
        let first = authenticate(RequestTrace::new(tracer, Instant::now(), &HeaderMap::new()), "k1").await;
        authenticate(RequestTrace::new(tracer, Instant::now(), &HeaderMap::new()), "k1").await;
        *state.kid.lock().unwrap() = "k2".into();
        let third = authenticate(RequestTrace::new(tracer, Instant::now(), &with_context), "k2").await;
        assert_eq!(third, TraceId::from_hex(CALLER_TRACE).unwrap());
        assert_eq!(state.jwks.load(Ordering::SeqCst), 2);

        let spans = exporter.get_finished_spans().unwrap();
        let fetches: Vec<_> = spans.iter().filter(|s| s.name == "jwks.fetch").collect();
        assert_eq!(fetches.len(), 2, "{spans:#?}");
        for (fetch, trace) in fetches.iter().zip([first, third]) {
            let authentication = spans
                .iter()
                .find(|s| s.name == "authenticate" && s.span_context.trace_id() == trace)
                .expect("the request's authentication");
            assert_eq!(fetch.span_context.trace_id(), trace);
            assert_eq!(fetch.parent_span_id, authentication.span_context.span_id());
            assert_eq!(fetch.span_kind, SpanKind::Client);
            assert_eq!(attribute(fetch, "palisade.jwks.issuer").as_deref(), Some(url.as_str()));
            assert_eq!(attribute(fetch, "palisade.jwks.outcome").as_deref(), Some("success"));
        }
    }

    #[tokio::test]
    async fn a_due_refresh_runs_in_the_background_and_no_request_waits_for_it() {
        let (state, url) = idp_serving("k1").await;
        let ttl = Duration::from_millis(1000);
        let keys = cache(&url, KeyLocation::JwksUri(format!("{url}/jwks")), ttl, true);
        assert_eq!(keys.keys_for(Some("k1"), None).await.unwrap().len(), 1);
        assert_eq!(state.jwks.load(Ordering::SeqCst), 1);

        // Past 4/5 of the TTL, with an IdP that now takes 3 s to answer.
        *state.delay.lock().unwrap() = Duration::from_secs(3);
        tokio::time::sleep(ttl * 4 / 5 + Duration::from_millis(50)).await;
        let started = Instant::now();
        for _ in 0..20 {
            assert_eq!(keys.keys_for(Some("k1"), None).await.unwrap().len(), 1);
        }
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "requests waited {:?} for a refresh",
            started.elapsed()
        );
        // One refresh ran in the background for all of them.
        wait_for("background refresh", &state.jwks, 2).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(state.jwks.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_discovered_jwks_uri_expires_with_the_keys() {
        let (state, url) = idp_serving("k1").await;
        let ttl = Duration::from_millis(600);
        let keys = cache(&url, KeyLocation::Discovery { issuer: url.clone() }, ttl, true);
        keys.keys_for(Some("k1"), None).await.unwrap();
        // An unknown kid within the TTL refetches the JWKS, not the discovery document.
        *state.kid.lock().unwrap() = "k2".into();
        keys.keys_for(Some("k2"), None).await.unwrap();
        assert_eq!(
            (
                state.discoveries.load(Ordering::SeqCst),
                state.jwks.load(Ordering::SeqCst)
            ),
            (1, 2)
        );
        // Past the TTL, the refresh asks the discovery document again.
        tokio::time::sleep(ttl + Duration::from_millis(50)).await;
        keys.keys_for(Some("k2"), None).await.unwrap();
        wait_for("rediscovery", &state.discoveries, 2).await;
        wait_for("refetch", &state.jwks, 3).await;
    }

    #[tokio::test]
    async fn a_hanging_idp_holds_only_a_few_requests_and_is_asked_once() {
        let (state, url) = idp_serving("k1").await;
        let results = Arc::new(Mutex::new(Vec::new()));
        let observed = results.clone();
        // No refetch interval: only the waiting rule keeps the IdP from being asked again.
        let keys = Arc::new(
            JwksCache::new(
                &url,
                KeyLocation::JwksUri(format!("{url}/jwks")),
                Duration::from_secs(3600),
                Duration::ZERO,
                client(),
                Arc::new(move |_, result| observed.lock().unwrap().push(result)),
            )
            .allow_insecure_http(true),
        );
        keys.keys_for(Some("k1"), None).await.unwrap();

        // The IdP now hangs for 1.5 s; 20 tokens with made-up kids arrive at once.
        *state.delay.lock().unwrap() = Duration::from_millis(1500);
        let started = Instant::now();
        let tasks: Vec<_> = (0..20)
            .map(|i| {
                let keys = keys.clone();
                tokio::spawn(async move {
                    let found = keys.keys_for(Some(&format!("made-up-{i}")), None).await.unwrap();
                    (found.len(), started.elapsed())
                })
            })
            .collect();
        let mut waited = 0;
        for task in tasks {
            let (found, took) = task.await.unwrap();
            assert_eq!(found, 0, "a made-up kid matches no key");
            if took >= Duration::from_millis(1000) {
                waited += 1;
            } else {
                assert!(took < Duration::from_millis(500), "a request waited {took:?}");
            }
        }
        // The one that fetched and MAX_FETCH_WAITERS others waited; the rest went on at once.
        assert_eq!(waited, 1 + MAX_FETCH_WAITERS);
        assert_eq!(
            state.jwks.load(Ordering::SeqCst),
            2,
            "the waiters took the fetch's outcome"
        );
        let results = results.lock().unwrap();
        let busy = results.iter().filter(|r| **r == FetchResult::Busy).count();
        assert_eq!(busy, 20 - 1 - MAX_FETCH_WAITERS);
        assert_eq!(keys.waiters.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_first_fetch_that_hangs_holds_at_most_half_the_places() {
        let state = Arc::new(Idp::default());
        *state.kid.lock().unwrap() = "k1".into();
        *state.delay.lock().unwrap() = Duration::from_millis(1500);
        let url = idp(state.clone()).await;
        let keys = jwks_at(&url);
        let started = Instant::now();
        let tasks: Vec<_> = (0..40)
            .map(|_| {
                let keys = keys.clone();
                tokio::spawn(async move { (keys.keys_for(Some("k1"), None).await.is_some(), started.elapsed()) })
            })
            .collect();
        let (mut served, mut refused) = (0, 0);
        for task in tasks {
            match task.await.unwrap() {
                (true, took) => {
                    assert!(took >= Duration::from_millis(1000), "served in {took:?}");
                    served += 1;
                }
                (false, took) => {
                    assert!(took < Duration::from_millis(500), "refused after {took:?}");
                    refused += 1;
                }
            }
        }
        // The first fetch serves the one that made it and MAX_FIRST_FETCH_WAITERS others.
        assert_eq!(
            (served, refused),
            (1 + MAX_FIRST_FETCH_WAITERS, 40 - 1 - MAX_FIRST_FETCH_WAITERS)
        );
        assert_eq!(state.jwks.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_withdrawn_key_leaves_the_key_set() {
        let (state, url) = idp_serving("k1").await;
        let keys = jwks_at(&url);
        let k1 = keys.keys_for(Some("k1"), None).await.unwrap()[0].fingerprint;
        assert!(keys.has_key(&k1));
        *state.kid.lock().unwrap() = "k2".into();
        let k2 = keys.keys_for(Some("k2"), None).await.unwrap()[0].fingerprint;
        assert!(keys.has_key(&k2));
        assert!(!keys.has_key(&k1), "k1 was withdrawn");
    }

    #[tokio::test]
    async fn plain_http_needs_the_development_mark() {
        let (state, url) = idp_serving("k1").await;
        let keys = cache(
            &url,
            KeyLocation::JwksUri(format!("{url}/jwks")),
            Duration::from_secs(3600),
            false,
        );
        assert!(keys.keys_for(Some("k1"), None).await.is_none());
        let error = keys.fetch().await.err().expect("the fetch fails").to_string();
        assert_eq!(
            error,
            format!(
                "{url}/jwks: not an https:// URL; keys are fetched over HTTPS only unless the issuer sets \
                 allowInsecureHttp: true (development only)"
            )
        );
        assert_eq!(state.jwks.load(Ordering::SeqCst), 0, "nothing was fetched");
    }

    #[tokio::test]
    async fn redirects_are_not_followed() {
        let (state, url) = idp_serving("k1").await;
        let keys = cache(
            &url,
            KeyLocation::JwksUri(format!("{url}/moved")),
            Duration::from_secs(3600),
            true,
        );
        assert!(keys.keys_for(Some("k1"), None).await.is_none());
        let error = keys.fetch().await.err().expect("the fetch fails").to_string();
        assert_eq!(
            error,
            format!(
                "{url}/moved: answered 307 Temporary Redirect (a redirect); redirects are not followed: \
                 configure the final URL"
            )
        );
        assert_eq!(state.redirected.load(Ordering::SeqCst), 2);
        assert_eq!(
            state.jwks.load(Ordering::SeqCst),
            0,
            "the redirect's target was never asked"
        );
    }
}
