//! Why a request was not authenticated: the error codes of seed 002's table, each with its HTTP
//! status, its RFC 6750 `error` value, a message that tells the caller what to do next, and a
//! finer reason code for audit events and metrics.
//!
//! Messages never echo the token, a key, or anything from inside the token.

use std::fmt;

/// A failed authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// No credentials, and anonymous access is not allowed.
    MissingAuthorization,
    /// The request carries credentials in a way that is not accepted (RFC 6750 §3.1
    /// `invalid_request`): two Authorization headers, a token in the query string next to a
    /// header.
    InvalidRequest(Reason),
    /// The only credential is one this server does not accept: an Authorization scheme other
    /// than Bearer, or a token in the query string alone. Answered like missing credentials (401
    /// with the challenge and no `error` attribute, RFC 6750 §3.1), so that the client starts
    /// discovery.
    UnsupportedCredentials(Reason),
    /// Malformed, unverifiable, not yet valid, or otherwise unacceptable token or API key.
    InvalidToken(Reason),
    /// The signature does not verify.
    InvalidSignature,
    /// `exp` is in the past (beyond the leeway).
    TokenExpired,
    /// `aud` does not contain an accepted audience.
    InvalidAudience,
    /// `iss` is not an accepted issuer.
    InvalidIssuer,
    /// The issuer's keys cannot be fetched and none are cached: the token may be valid, so this
    /// is a 503, not a 401.
    KeysUnavailable,
}

/// The fine-grained reason behind [`AuthError::InvalidToken`], [`AuthError::InvalidRequest`] and
/// [`AuthError::UnsupportedCredentials`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The token is not three base64url segments of JSON.
    Malformed,
    /// The token is longer than the configured maximum.
    TooLarge,
    /// The `alg` header is not in the issuer's allow-list (this includes `none`).
    AlgorithmNotAllowed,
    /// The token has no `exp` claim.
    MissingExpiry,
    /// The token has no `iss` claim.
    MissingIssuer,
    /// `nbf` is in the future.
    NotYetValid,
    /// `iat` is in the future.
    IssuedInTheFuture,
    /// No key of the issuer has the token's `kid`.
    UnknownKeyId,
    /// A claim has the wrong type.
    InvalidClaim,
    /// The API key is not in the table.
    UnknownApiKey,
    /// The API key is disabled.
    DisabledApiKey,
    /// More than one Authorization header.
    DuplicateAuthorization,
    /// A token in the URL query string.
    TokenInQuery,
    /// An Authorization scheme other than Bearer.
    UnsupportedScheme,
}

impl Reason {
    /// Stable snake-case code for audit events and metrics.
    pub fn code(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::TooLarge => "too_large",
            Self::AlgorithmNotAllowed => "alg_not_allowed",
            Self::MissingExpiry => "missing_exp",
            Self::MissingIssuer => "missing_iss",
            Self::NotYetValid => "not_yet_valid",
            Self::IssuedInTheFuture => "issued_in_future",
            Self::UnknownKeyId => "unknown_kid",
            Self::InvalidClaim => "invalid_claim",
            Self::UnknownApiKey => "unknown_api_key",
            Self::DisabledApiKey => "disabled_api_key",
            Self::DuplicateAuthorization => "duplicate_authorization",
            Self::TokenInQuery => "token_in_query",
            Self::UnsupportedScheme => "unsupported_scheme",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Self::Malformed => "The token is malformed.",
            Self::TooLarge => "The token is larger than this server accepts.",
            Self::AlgorithmNotAllowed => "The token's signature algorithm is not accepted for its issuer.",
            Self::MissingExpiry => "The token has no expiry (exp).",
            Self::MissingIssuer => "The token has no issuer (iss).",
            Self::NotYetValid => "The token is not valid yet (nbf).",
            Self::IssuedInTheFuture => "The token is issued in the future (iat).",
            Self::UnknownKeyId => "The token is signed with a key the issuer does not publish.",
            Self::InvalidClaim => "A claim of the token has the wrong type.",
            Self::UnknownApiKey => "The API key is not valid.",
            Self::DisabledApiKey => "The API key is disabled.",
            Self::DuplicateAuthorization => "The request has more than one Authorization header.",
            Self::TokenInQuery => "Access tokens are not accepted in the URL query string.",
            Self::UnsupportedScheme => "Only the Bearer authorization scheme is accepted.",
        }
    }
}

impl AuthError {
    /// The code of seed 002's error table.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MissingAuthorization => "MISSING_AUTHORIZATION",
            Self::InvalidRequest(_) => "INVALID_REQUEST",
            Self::UnsupportedCredentials(_) => "UNSUPPORTED_CREDENTIALS",
            Self::InvalidToken(_) => "INVALID_TOKEN",
            Self::InvalidSignature => "INVALID_SIGNATURE",
            Self::TokenExpired => "TOKEN_EXPIRED",
            Self::InvalidAudience => "INVALID_AUDIENCE",
            Self::InvalidIssuer => "INVALID_ISSUER",
            Self::KeysUnavailable => "KEYS_UNAVAILABLE",
        }
    }

    /// The audit reason: the finer reason where there is one, else the code in lower case.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::InvalidRequest(reason) | Self::InvalidToken(reason) | Self::UnsupportedCredentials(reason) => {
                reason.code()
            }
            Self::MissingAuthorization => "missing_authorization",
            Self::InvalidSignature => "invalid_signature",
            Self::TokenExpired => "token_expired",
            Self::InvalidAudience => "invalid_audience",
            Self::InvalidIssuer => "invalid_issuer",
            Self::KeysUnavailable => "keys_unavailable",
        }
    }

    /// HTTP status: 400 for a malformed request, 503 when keys are unavailable, else 401.
    pub fn status(&self) -> u16 {
        match self {
            Self::InvalidRequest(_) => 400,
            Self::KeysUnavailable => 503,
            _ => 401,
        }
    }

    /// The RFC 6750 §3.1 `error` attribute, if any (none when no credentials were sent).
    pub fn bearer_error(&self) -> Option<&'static str> {
        match self {
            Self::MissingAuthorization | Self::UnsupportedCredentials(_) | Self::KeysUnavailable => None,
            Self::InvalidRequest(_) => Some("invalid_request"),
            _ => Some("invalid_token"),
        }
    }

    /// Whether the failure is a security violation worth its own metric (a forged or tampered
    /// token, a forbidden algorithm, a malformed request), rather than an ordinary expiry.
    pub fn violation(&self) -> Option<&'static str> {
        match self {
            Self::InvalidSignature => Some("invalid_signature"),
            Self::InvalidToken(Reason::AlgorithmNotAllowed) => Some("alg_not_allowed"),
            Self::InvalidToken(Reason::TooLarge) => Some("oversize"),
            Self::InvalidRequest(Reason::DuplicateAuthorization) => Some("duplicate_authorization"),
            Self::InvalidRequest(Reason::TokenInQuery) | Self::UnsupportedCredentials(Reason::TokenInQuery) => {
                Some("token_in_query")
            }
            _ => None,
        }
    }

    /// What went wrong and what to do next.
    pub fn message(&self) -> String {
        let (what, action) = match self {
            Self::MissingAuthorization => (
                "Authentication is required.",
                "Send an access token in the Authorization header (Authorization: Bearer <token>).",
            ),
            Self::InvalidRequest(reason) => (
                reason.describe(),
                "Send exactly one Authorization: Bearer <token> header and nothing in the query string.",
            ),
            Self::UnsupportedCredentials(reason) => (
                reason.describe(),
                "Send an access token in the Authorization header (Authorization: Bearer <token>); \
                 the resource_metadata in WWW-Authenticate names the authorization servers.",
            ),
            Self::InvalidToken(reason @ (Reason::UnknownApiKey | Reason::DisabledApiKey)) => {
                (reason.describe(), "Use an enabled API key issued for this server.")
            }
            Self::InvalidToken(reason) => (
                reason.describe(),
                "Obtain a new access token from the authorization server.",
            ),
            Self::InvalidSignature => (
                "The token signature is invalid.",
                "Obtain a new access token from the authorization server; do not modify tokens.",
            ),
            Self::TokenExpired => (
                "The access token has expired.",
                "Obtain a new access token from the authorization server.",
            ),
            Self::InvalidAudience => (
                "The access token is not intended for this server (aud).",
                "Request a token for this server's resource (see /.well-known/oauth-protected-resource).",
            ),
            Self::InvalidIssuer => (
                "The access token comes from an issuer this server does not trust (iss).",
                "Obtain a token from one of the authorization servers listed in /.well-known/oauth-protected-resource.",
            ),
            Self::KeysUnavailable => (
                "The issuer's signing keys cannot be fetched right now.",
                "Retry shortly.",
            ),
        };
        format!("{what}\n\nAction: {action}")
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.code(), self.reason())
    }
}

impl std::error::Error for AuthError {}
