//! Authentication: from the credentials of a request to a [`Principal`], or an [`AuthError`].
//!
//! Mechanisms, all configured by the mounted PolicyDocument and secret files:
//! - **JWT** bearer tokens from the document's issuers: HS256/384/512 with a key file; RS/PS/ES/
//!   EdDSA with keys from a JWKS URL or OIDC discovery ([`jwks`]). The token's `alg` is never
//!   trusted beyond the issuer's allow-list; `iss` must match exactly; `aud` must contain one of
//!   the issuer's audiences (by default the server's resource URI, RFC 8707); `exp` is required;
//!   `nbf` and `iat` are honoured with the document's leeway.
//! - **API keys** ([`api_keys`]): sent as `X-API-Key: <key>`, or as a bearer token that is not a
//!   JWT.
//! - **Client certificates** (mTLS, [`crate::tls`]): the TLS layer verifies the certificate
//!   against `--tls-client-ca` and hands over its subject ([`ClientCertificate`]); the caller is
//!   that subject, bound by a binding's `subjects`. Used only when the request carries no
//!   Authorization or X-API-Key header: a token, when also sent, wins.
//! - **Anonymous** callers, only when the document allows them.
//!
//! Verified JWTs are cached, keyed by the SHA-256 of the whole token (so a cached entry can only
//! be hit by the very same token), in a cache that belongs to one loaded policy and is dropped
//! with it on reload. A cached verification holds until the token expires, at most
//! [`MAX_CACHED_VERIFICATION`] after it was made, and, for a key from a JWKS, only while the
//! issuer's current key set still holds that key: once the IdP withdraws a key, every token it
//! signed is refused, including those verified before.
//!
//! What this does not do: decide what a caller may do (the evaluator does), or log anything
//! that a token contains beyond the subject and issuer the audit event records.

pub mod api_keys;
pub mod claims;
pub mod cluster_issuer;
pub mod error;
pub mod jwks;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use palisade_crds::document::{Authentication, Issuer, KeySource};
use palisade_crds::mcp_server::JwtAlgorithm;
use palisade_crds::{Identity, IdentitySource};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use self::api_keys::ApiKeyTable;
use self::cluster_issuer::ServiceAccountIssuerFiles;
pub use self::error::{AuthError, Reason};
use self::jwks::{FetchObserver, JwksCache, JwksRegistry, KeyLocation};
use crate::trace::RequestTrace;

/// Whether a bearer credential has the shape of a JWT (three dot-separated segments); anything
/// else is looked up as an API key.
pub fn looks_like_jwt(token: &str) -> bool {
    token.bytes().filter(|&b| b == b'.').count() == 2
}

/// Longest time a verified token is served from the cache before it is verified again.
pub const MAX_CACHED_VERIFICATION: Duration = Duration::from_secs(300);

/// Most keys a token without `kid` is verified against.
const MAX_KEYS_WITHOUT_KID: usize = 4;

/// How a caller authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// A JWT bearer token.
    Jwt,
    /// An API key.
    ApiKey,
    /// No credentials.
    Anonymous,
    /// A client certificate verified by the TLS layer.
    ClientCertificate,
}

impl AuthMethod {
    /// Label for audit events and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Jwt => "jwt",
            Self::ApiKey => "api_key",
            Self::Anonymous => "anonymous",
            Self::ClientCertificate => "client_certificate",
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// What the evaluator needs.
    pub identity: Identity,
    /// How it authenticated.
    pub method: AuthMethod,
    /// The JWT issuer, or the API key's id.
    pub issuer: Option<String>,
    /// `exp` of the token (Unix seconds).
    pub expires_at: Option<u64>,
}

impl Principal {
    /// The key that tells callers apart (rate limits): the source and the subject together, so
    /// that `alice` of one issuer never shares a bucket with `alice` of another issuer or of an API
    /// key. `None` for anonymous callers, which have neither.
    pub fn caller_key(&self) -> Option<CallerKey> {
        let source = self.identity.source.as_ref()?.name();
        let subject = self
            .identity
            .subject
            .as_deref()
            .or(self.issuer.as_deref())
            .unwrap_or_default();
        Some(CallerKey::new(source, subject))
    }
}

/// A caller as (source, subject), written as one string without ambiguity: the length of the
/// source, `:`, the source, then the subject. (`a:b` + `c` and `a` + `b:c` differ.)
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CallerKey(String);

impl CallerKey {
    /// The key of `subject` from the source named `source` ([`palisade_crds::IdentitySource::name`]).
    pub fn new(source: &str, subject: &str) -> Self {
        Self(format!("{}:{source}{subject}", source.len()))
    }

    /// The key as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The credentials a request presents, as the HTTP layer extracted them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential<'a> {
    /// Nothing.
    None,
    /// `Authorization: Bearer <token>`.
    Bearer(&'a str),
    /// `X-API-Key: <key>`.
    ApiKey(&'a str),
    /// The subject of a client certificate the TLS layer verified.
    ClientCertificate(&'a str),
}

/// A client certificate that the TLS handshake verified against the configured client CA,
/// attached to every request of its connection (a request extension).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertificate {
    /// The certificate's subject Common Name, or else its first DNS subject alternative name.
    pub subject: String,
}

/// Limits and intervals that are not part of the policy.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// Longest token or API key accepted, in bytes.
    pub max_token_bytes: usize,
    /// Least time between two unknown-`kid` refetches of one issuer.
    pub jwks_min_refetch_interval: Duration,
    /// Most verified tokens cached per loaded policy.
    pub token_cache_capacity: usize,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            max_token_bytes: 8 * 1024,
            jwks_min_refetch_interval: Duration::from_secs(10),
            token_cache_capacity: 10_000,
        }
    }
}

/// A verified token in the cache.
struct CachedVerification {
    principal: Arc<Principal>,
    /// Unix seconds of the verification.
    verified_at: u64,
    /// The JWKS key that verified it: the entry is void once the key leaves the key set.
    key: Option<(Arc<JwksCache>, [u8; 32])>,
}

impl CachedVerification {
    fn valid_at(&self, now: u64, leeway: u64) -> bool {
        self.principal.expires_at.is_some_and(|exp| now <= exp + leeway)
            && now < self.verified_at.saturating_add(MAX_CACHED_VERIFICATION.as_secs())
            && self
                .key
                .as_ref()
                .is_none_or(|(cache, fingerprint)| cache.has_key(fingerprint))
    }
}

enum Keys {
    Hmac(DecodingKey),
    Jwks(Arc<JwksCache>),
}

struct Verifier {
    config: Issuer,
    algorithms: Vec<Algorithm>,
    keys: Keys,
}

/// A problem loading the authentication configuration (key files, API-key table).
#[derive(Debug, thiserror::Error)]
pub enum AuthLoadError {
    /// A secret file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// An HMAC key file is empty.
    #[error("HMAC key file {path} is empty")]
    EmptyKey {
        /// The file.
        path: String,
    },
    /// The API-key table is not valid.
    #[error("{path}: {source}")]
    ApiKeys {
        /// The file.
        path: String,
        /// The cause.
        source: api_keys::ApiKeyTableError,
    },
}

/// Everything needed to authenticate requests under one loaded policy.
pub struct Authenticator {
    allow_anonymous: bool,
    leeway: u64,
    settings: AuthSettings,
    issuers: HashMap<String, Verifier>,
    api_keys: Option<ApiKeyTable>,
    cache: RwLock<HashMap<[u8; 32], CachedVerification>>,
    /// The one anonymous caller, shared by every anonymous request.
    anonymous: Arc<Principal>,
    /// The token claims the policy's argument rules name, read into each identity.
    rule_claims: Vec<String>,
}

/// What [`Authenticator::load`] needs from the running server.
pub struct LoadContext<'a> {
    /// Keys caches kept across reloads.
    pub registry: &'a JwksRegistry,
    /// HTTP client for JWKS and discovery.
    pub http: &'a reqwest::Client,
    /// Called after each JWKS fetch decision.
    pub observer: FetchObserver,
    /// Limits.
    pub settings: AuthSettings,
    /// How to reach the cluster's service-account issuer (the issuers with
    /// `claims.kubernetesServiceAccount: true`); empty: like any other issuer.
    pub service_account_issuer: ServiceAccountIssuerFiles,
}

fn read_secret(path: &str) -> Result<Vec<u8>, AuthLoadError> {
    std::fs::read(path).map_err(|source| AuthLoadError::Read {
        path: path.to_owned(),
        source,
    })
}

fn algorithm(alg: JwtAlgorithm) -> Algorithm {
    match alg {
        JwtAlgorithm::HS256 => Algorithm::HS256,
        JwtAlgorithm::HS384 => Algorithm::HS384,
        JwtAlgorithm::HS512 => Algorithm::HS512,
        JwtAlgorithm::RS256 => Algorithm::RS256,
        JwtAlgorithm::RS384 => Algorithm::RS384,
        JwtAlgorithm::RS512 => Algorithm::RS512,
        JwtAlgorithm::PS256 => Algorithm::PS256,
        JwtAlgorithm::PS384 => Algorithm::PS384,
        JwtAlgorithm::PS512 => Algorithm::PS512,
        JwtAlgorithm::ES256 => Algorithm::ES256,
        JwtAlgorithm::ES384 => Algorithm::ES384,
        JwtAlgorithm::EdDSA => Algorithm::EdDSA,
    }
}

/// The HMAC key in a key file: the raw bytes, without one trailing newline (as `echo` or a
/// Kubernetes Secret created from a file tends to add).
pub fn hmac_key_bytes(mut bytes: Vec<u8>) -> Vec<u8> {
    if bytes.ends_with(b"\n") {
        bytes.pop();
        if bytes.ends_with(b"\r") {
            bytes.pop();
        }
    }
    bytes
}

impl Authenticator {
    /// Reads the key files and API-key table that `auth` names, and binds JWKS issuers to their
    /// (shared) key caches.
    pub fn load(auth: &Authentication, context: &LoadContext<'_>) -> Result<Self, AuthLoadError> {
        let mut issuers = HashMap::new();
        let mut used = Vec::new();
        for issuer in &auth.issuers {
            let keys = match &issuer.keys {
                KeySource::HmacKeyFile(path) => {
                    let key = hmac_key_bytes(read_secret(path)?);
                    if key.is_empty() {
                        return Err(AuthLoadError::EmptyKey { path: path.clone() });
                    }
                    Keys::Hmac(DecodingKey::from_secret(&key))
                }
                source => {
                    let location = match source {
                        KeySource::JwksUri(uri) => KeyLocation::JwksUri(uri.clone()),
                        _ => KeyLocation::Discovery {
                            issuer: issuer.issuer.clone(),
                        },
                    };
                    let cluster = Some(&context.service_account_issuer)
                        .filter(|files| issuer.claims.kubernetes_service_account && !files.is_empty())
                        .cloned();
                    let key = (
                        issuer.issuer.clone(),
                        location.clone(),
                        cluster.clone(),
                        issuer.allow_insecure_http,
                    );
                    used.push(key.clone());
                    Keys::Jwks(context.registry.cache(key, || {
                        let cache = JwksCache::new(
                            &issuer.issuer,
                            location,
                            Duration::from_secs(issuer.jwks_cache_ttl_seconds.into()),
                            context.settings.jwks_min_refetch_interval,
                            context.http.clone(),
                            context.observer.clone(),
                        )
                        .allow_insecure_http(issuer.allow_insecure_http);
                        match cluster {
                            Some(files) => cache.with_service_account_issuer(files),
                            None => cache,
                        }
                    }))
                }
            };
            issuers.insert(
                issuer.issuer.clone(),
                Verifier {
                    algorithms: issuer.algorithms.iter().map(|&a| algorithm(a)).collect(),
                    config: issuer.clone(),
                    keys,
                },
            );
        }
        context.registry.retain(&used);
        let api_keys = match &auth.api_keys_file {
            None => None,
            Some(path) => {
                let text = String::from_utf8_lossy(&read_secret(path)?).into_owned();
                Some(ApiKeyTable::parse(&text).map_err(|source| AuthLoadError::ApiKeys {
                    path: path.clone(),
                    source,
                })?)
            }
        };
        Ok(Self {
            allow_anonymous: auth.allow_anonymous,
            leeway: auth.leeway_seconds.into(),
            settings: context.settings.clone(),
            issuers,
            api_keys,
            cache: RwLock::new(HashMap::new()),
            anonymous: Arc::new(Principal {
                identity: Identity::anonymous(),
                method: AuthMethod::Anonymous,
                issuer: None,
                expires_at: None,
            }),
            rule_claims: Vec::new(),
        })
    }

    /// Reads these token claims (sorted; those the policy's argument rules name,
    /// [`palisade_crds::Policy::claim_names`]) into each verified identity.
    pub fn with_rule_claims(mut self, names: &[String]) -> Self {
        self.rule_claims = names.to_vec();
        self
    }

    /// Authenticates a request's credentials at time `now` (Unix seconds). A JWKS fetch it makes
    /// (and waits for) is recorded in `trace`, the request's, when trace export is on.
    pub async fn authenticate(
        &self,
        credential: Credential<'_>,
        now: u64,
        trace: Option<&RequestTrace>,
    ) -> Result<Arc<Principal>, AuthError> {
        match credential {
            Credential::None if self.allow_anonymous => Ok(Arc::clone(&self.anonymous)),
            Credential::None => Err(AuthError::MissingAuthorization),
            // Verified (chain, validity, CA) during the handshake; only its subject is left.
            Credential::ClientCertificate(subject) => Ok(Arc::new(Principal {
                identity: Identity {
                    source: Some(IdentitySource::ClientCertificates),
                    subject: Some(subject.to_owned()),
                    ..Identity::default()
                },
                method: AuthMethod::ClientCertificate,
                issuer: None,
                expires_at: None,
            })),
            Credential::Bearer(token) | Credential::ApiKey(token) if token.len() > self.settings.max_token_bytes => {
                Err(AuthError::InvalidToken(Reason::TooLarge))
            }
            Credential::Bearer(token) if looks_like_jwt(token) => self.authenticate_jwt(token, now, trace).await,
            Credential::Bearer(key) | Credential::ApiKey(key) => match &self.api_keys {
                Some(table) => table.authenticate(key).map(Arc::clone),
                None if matches!(credential, Credential::ApiKey(_)) => {
                    Err(AuthError::InvalidToken(Reason::UnknownApiKey))
                }
                None => Err(AuthError::InvalidToken(Reason::Malformed)),
            },
        }
    }

    async fn authenticate_jwt(
        &self,
        token: &str,
        now: u64,
        trace: Option<&RequestTrace>,
    ) -> Result<Arc<Principal>, AuthError> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(cached) = self.cache.read().expect("token cache lock").get(&digest)
            && cached.valid_at(now, self.leeway)
        {
            return Ok(Arc::clone(&cached.principal));
        }
        let (principal, key) = match self.verify_jwt(token, now, trace).await {
            Ok(verified) => verified,
            Err(error) => {
                // A token that no longer verifies (its key withdrawn) leaves the cache at once.
                self.cache.write().expect("token cache lock").remove(&digest);
                return Err(error);
            }
        };
        let principal = Arc::new(principal);
        let mut cache = self.cache.write().expect("token cache lock");
        if cache.len() >= self.settings.token_cache_capacity {
            // Bounded: start over rather than grow. Expired entries go with the rest.
            cache.clear();
        }
        cache.insert(
            digest,
            CachedVerification {
                principal: Arc::clone(&principal),
                verified_at: now,
                key,
            },
        );
        Ok(principal)
    }

    /// The caller a token names, and the JWKS key that verified it (none for an HMAC issuer).
    async fn verify_jwt(
        &self,
        token: &str,
        now: u64,
        trace: Option<&RequestTrace>,
    ) -> Result<(Principal, Option<(Arc<JwksCache>, [u8; 32])>), AuthError> {
        let malformed = || AuthError::InvalidToken(Reason::Malformed);
        // The header names the algorithm; `alg: none` and unknown algorithms fail to parse.
        let header = jsonwebtoken::decode_header(token).map_err(|_| match header_algorithm(token) {
            // `alg: none`, or any algorithm this server does not implement: refused as such.
            Some(alg) if alg.parse::<Algorithm>().is_err() => AuthError::InvalidToken(Reason::AlgorithmNotAllowed),
            _ => malformed(),
        })?;
        // The issuer decides which keys and algorithms apply, so it is read before verifying;
        // nothing else from the unverified payload is used.
        let unverified: Map<String, Value> =
            jsonwebtoken::dangerous::insecure_decode_claims(token).map_err(|_| malformed())?;
        let iss = match unverified.get("iss") {
            Some(Value::String(iss)) => iss.as_str(),
            Some(_) => return Err(AuthError::InvalidToken(Reason::InvalidClaim)),
            None => return Err(AuthError::InvalidToken(Reason::MissingIssuer)),
        };
        let verifier = self.issuers.get(iss).ok_or(AuthError::InvalidIssuer)?;
        if !verifier.algorithms.contains(&header.alg) {
            return Err(AuthError::InvalidToken(Reason::AlgorithmNotAllowed));
        }

        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&verifier.config.issuer]);
        validation.set_audience(&verifier.config.audiences);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.leeway = self.leeway;
        validation.validate_nbf = true;

        let (claims, key) = match &verifier.keys {
            Keys::Hmac(key) => (decode(token, key, &validation)?, None),
            Keys::Jwks(cache) => {
                let candidates = cache
                    .keys_for(header.kid.as_deref(), trace)
                    .await
                    .ok_or(AuthError::KeysUnavailable)?;
                let alg_name = format!("{:?}", header.alg);
                // NB: a token without `kid` is tried against a few keys only, so that a large JWKS
                // cannot turn one request into many signature verifications.
                let mut candidates = candidates
                    .iter()
                    .filter(|k| k.algorithm.as_ref().is_none_or(|a| *a == alg_name))
                    .take(MAX_KEYS_WITHOUT_KID)
                    .peekable();
                if candidates.peek().is_none() {
                    return Err(AuthError::InvalidToken(Reason::UnknownKeyId));
                }
                let mut outcome = Err(AuthError::InvalidSignature);
                for key in candidates {
                    outcome = decode(token, &key.key, &validation).map(|claims| (claims, key.fingerprint));
                    if !matches!(outcome, Err(AuthError::InvalidSignature)) {
                        break;
                    }
                }
                let (claims, fingerprint) = outcome?;
                (claims, Some((Arc::clone(cache), fingerprint)))
            }
        };
        if let Some(iat) = claims.get("iat").and_then(Value::as_u64)
            && iat > now + self.leeway
        {
            return Err(AuthError::InvalidToken(Reason::IssuedInTheFuture));
        }
        let principal = Principal {
            identity: claims::identity(
                &claims,
                &verifier.config.claims,
                IdentitySource::Issuer(verifier.config.issuer.clone()),
                &self.rule_claims,
            )?,
            method: AuthMethod::Jwt,
            issuer: Some(verifier.config.issuer.clone()),
            expires_at: claims.get("exp").and_then(Value::as_u64),
        };
        Ok((principal, key))
    }
}

/// The `alg` of a token header that the JWT library refused to parse, if the header is JSON.
fn header_algorithm(token: &str) -> Option<String> {
    use base64::Engine;
    let segment = token.split('.').next()?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(segment).ok()?;
    let header: Map<String, Value> = serde_json::from_slice(&bytes).ok()?;
    header.get("alg")?.as_str().map(str::to_owned)
}

fn decode(token: &str, key: &DecodingKey, validation: &Validation) -> Result<Map<String, Value>, AuthError> {
    use jsonwebtoken::errors::ErrorKind;
    jsonwebtoken::decode::<Map<String, Value>>(token, key, validation)
        .map(|data| data.claims)
        .map_err(|e| match e.kind() {
            ErrorKind::InvalidSignature => AuthError::InvalidSignature,
            ErrorKind::ExpiredSignature => AuthError::TokenExpired,
            ErrorKind::InvalidAudience => AuthError::InvalidAudience,
            ErrorKind::MissingRequiredClaim(claim) if claim == "aud" => AuthError::InvalidAudience,
            ErrorKind::InvalidIssuer => AuthError::InvalidIssuer,
            ErrorKind::MissingRequiredClaim(claim) if claim == "exp" => AuthError::InvalidToken(Reason::MissingExpiry),
            ErrorKind::MissingRequiredClaim(_) => AuthError::InvalidToken(Reason::InvalidClaim),
            ErrorKind::ImmatureSignature => AuthError::InvalidToken(Reason::NotYetValid),
            ErrorKind::InvalidAlgorithm => AuthError::InvalidToken(Reason::AlgorithmNotAllowed),
            ErrorKind::InvalidClaimFormat(_) => AuthError::InvalidToken(Reason::InvalidClaim),
            _ => AuthError::InvalidToken(Reason::Malformed),
        })
}
