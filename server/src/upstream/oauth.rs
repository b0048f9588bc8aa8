//! OAuth 2.0 client credentials for an HTTP upstream (RFC 6749 section 4.4): Palisade gets an
//! access token of its own from the upstream's authorization server and sends it as
//! `Authorization: Bearer`, never a caller's token.
//!
//! - The token request is `grant_type=client_credentials` with `client_secret_basic`, the
//!   configured `scope`, and `resource` (RFC 8707: the upstream's URL unless another is given),
//!   as the MCP authorization specification asks clients to name the server a token is for.
//! - The client secret is read from its file for every token request (a rotated Secret is used
//!   at the next one) and never logged; errors name the token endpoint, the HTTP status and the
//!   OAuth `error` code only.
//! - A token is used until shortly before it expires ([`TokenSource::bearer`]), fetched by one
//!   request at a time however many requests need it, and dropped when the upstream answers 401
//!   (the request is then sent once more with a new one).
//! - The token endpoint must be `https://`, except on a loopback host.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use reqwest::header::HeaderValue;
use serde::Deserialize;

use super::UpstreamError;

/// How long before its expiry a token is no longer used (at most half its lifetime).
const EXPIRY_MARGIN: Duration = Duration::from_secs(60);
/// Lifetime assumed for a token whose response has no `expires_in`.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(300);
/// The largest token response read.
const MAX_RESPONSE_BYTES: usize = 64 << 10;

/// How Palisade gets its tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCredentials {
    /// The authorization server's token endpoint.
    pub token_url: String,
    /// Palisade's client id there.
    pub client_id: String,
    /// The file holding the client secret.
    pub client_secret_file: PathBuf,
    /// Scopes asked for (none: the server's default).
    pub scopes: Vec<String>,
    /// RFC 8707 `resource`: the upstream's URL by default.
    pub resource: String,
}

/// What is wrong with `url` as a token endpoint, if anything.
pub fn token_url_problem(url: &str) -> Option<String> {
    let parsed = match reqwest::Url::parse(url) {
        Ok(parsed) => parsed,
        Err(error) => return Some(format!("{url} is not a URL ({error})")),
    };
    let host = parsed.host_str().unwrap_or_default();
    let loopback = host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match parsed.scheme() {
        "https" => None,
        "http" if loopback => None,
        _ => Some(format!(
            "{url} must be an https:// URL (http:// only on a loopback host): the client secret is sent to it"
        )),
    }
    .or_else(|| palisade_crds::upstream::url_problem(url).map(|p| format!("the token URL {p}")))
}

/// Palisade's current token, and how to get the next.
#[derive(Debug)]
pub struct TokenSource {
    credentials: ClientCredentials,
    token: ArcSwapOption<Token>,
    /// Held while a token is requested: one request at a time.
    fetching: tokio::sync::Mutex<()>,
}

#[derive(Debug)]
struct Token {
    header: HeaderValue,
    use_until: Instant,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    token_type: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

#[derive(Deserialize)]
struct ErrorResponse {
    error: String,
}

impl TokenSource {
    /// A source that has no token yet.
    pub fn new(credentials: ClientCredentials) -> Self {
        Self {
            credentials,
            token: ArcSwapOption::empty(),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    /// The `Authorization` value to send: the current token, or a new one from the token
    /// endpoint (through `client`).
    pub async fn bearer(&self, client: &reqwest::Client) -> Result<HeaderValue, UpstreamError> {
        if let Some(token) = self.fresh() {
            return Ok(token);
        }
        let _fetching = self.fetching.lock().await;
        // Another request may have fetched one while this one waited.
        if let Some(token) = self.fresh() {
            return Ok(token);
        }
        let token = self.fetch(client).await?;
        let header = token.header.clone();
        self.token.store(Some(Arc::new(token)));
        Ok(header)
    }

    /// Forgets the current token (the upstream refused it).
    pub fn invalidate(&self) {
        self.token.store(None);
    }

    fn fresh(&self) -> Option<HeaderValue> {
        let token = self.token.load();
        token
            .as_ref()
            .filter(|t| Instant::now() < t.use_until)
            .map(|t| t.header.clone())
    }

    async fn fetch(&self, client: &reqwest::Client) -> Result<Token, UpstreamError> {
        let credentials = &self.credentials;
        let endpoint = &credentials.token_url;
        let secret = std::fs::read_to_string(&credentials.client_secret_file).map_err(|error| {
            UpstreamError::Unavailable(format!(
                "cannot read the upstream's client secret {}: {error}",
                credentials.client_secret_file.display()
            ))
        })?;
        let secret = secret.strip_suffix('\n').unwrap_or(&secret);
        let mut form = vec![
            ("grant_type", "client_credentials".to_owned()),
            ("resource", credentials.resource.clone()),
        ];
        if !credentials.scopes.is_empty() {
            form.push(("scope", credentials.scopes.join(" ")));
        }
        let started = Instant::now();
        let mut response = client
            .post(endpoint)
            .basic_auth(form_encode(&credentials.client_id), Some(form_encode(secret)))
            .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(reqwest::header::ACCEPT, "application/json")
            .body(
                form.iter()
                    .map(|(name, value)| format!("{name}={}", form_encode(value)))
                    .collect::<Vec<_>>()
                    .join("&"),
            )
            .send()
            .await
            .map_err(|error| {
                UpstreamError::Unavailable(format!("cannot reach the token endpoint {endpoint}: {error}"))
            })?;
        let status = response.status();
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|error| UpstreamError::Unavailable(format!("the token endpoint {endpoint}: {error}")))?
        {
            if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(UpstreamError::Unavailable(format!(
                    "the token endpoint {endpoint} answered more than {MAX_RESPONSE_BYTES} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        if !status.is_success() {
            let code = serde_json::from_slice::<ErrorResponse>(&body)
                .map(|e| format!(" ({})", e.error.chars().take(64).collect::<String>()))
                .unwrap_or_default();
            return Err(UpstreamError::Unavailable(format!(
                "the token endpoint {endpoint} refused Palisade's client credentials: {status}{code}"
            )));
        }
        let answer: TokenResponse = serde_json::from_slice(&body).map_err(|_| {
            UpstreamError::Unavailable(format!("the token endpoint {endpoint} answered no access_token"))
        })?;
        if answer
            .token_type
            .as_deref()
            .is_some_and(|t| !t.eq_ignore_ascii_case("bearer"))
        {
            return Err(UpstreamError::Unavailable(format!(
                "the token endpoint {endpoint} answered a token that is not a bearer token"
            )));
        }
        let mut header = HeaderValue::from_str(&format!("Bearer {}", answer.access_token)).map_err(|_| {
            UpstreamError::Unavailable(format!(
                "the token endpoint {endpoint} answered a token that cannot be sent in a header"
            ))
        })?;
        header.set_sensitive(true);
        let lifetime = answer.expires_in.map_or(DEFAULT_LIFETIME, Duration::from_secs);
        let use_for = lifetime.saturating_sub(EXPIRY_MARGIN.min(lifetime / 2));
        tracing::info!(token_endpoint = %endpoint, expires_in_s = lifetime.as_secs(), "got an access token for the upstream");
        Ok(Token {
            header,
            use_until: started + use_for,
        })
    }
}

/// RFC 6749 section 2.3.1: the client id and secret are form-encoded
/// (`application/x-www-form-urlencoded`) before Basic encoding.
fn form_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => out.push(char::from(byte)),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_endpoint_is_https_except_on_loopback() {
        for good in [
            "https://idp.example.com/oauth/token",
            "http://127.0.0.1:9/token",
            "http://[::1]:9/token",
            "http://localhost/token",
        ] {
            assert_eq!(token_url_problem(good), None, "{good}");
        }
        for bad in [
            "http://idp.example.com/token",
            "ftp://idp/token",
            "https://u:p@idp/token",
        ] {
            assert!(token_url_problem(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn client_ids_and_secrets_are_form_encoded_before_basic() {
        assert_eq!(form_encode("a b:c%"), "a+b%3Ac%25");
    }
}
