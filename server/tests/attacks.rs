//! The attack table, over the router (`oneshot`, no socket): every way of getting in without the
//! right credentials, of reaching a document outside one's scopes or collection, and of sending a
//! request the transport must refuse. Each row checks the HTTP status, the JSON-RPC error code and
//! `error.data.code`, the exact `WWW-Authenticate` challenge where one is sent, the audit events
//! (and that no audit line contains the token or the HMAC key), and the relevant metric.
//!

mod support;

use palisade_crds::common::PolicyMode;
use palisade_crds::document::Binding;
use palisade_server::auth::api_keys::hash_key;
use serde_json::{Value, json};
use support::*;

// -------------------------------------------------------------------------------------------------
// Authentication refusals

/// What an authentication refusal must look like.
struct Refusal {
    status: u16,
    /// `error.data.code`.
    code: &'static str,
    /// Audit reason and metric `reason` label.
    reason: &'static str,
    /// RFC 6750 `error` attribute.
    error: Option<&'static str>,
    /// First line of the message, the challenge's `error_description`.
    description: &'static str,
    /// Metric `method` label and audit `auth_method`.
    method: &'static str,
    /// The security violation counted, if any.
    violation: Option<&'static str>,
}

/// The exact challenge the server must send.
fn challenge(fx: &Fixture, error: Option<&str>, description: &str) -> String {
    let mut value = format!("Bearer resource_metadata=\"{}\"", fx.resource_metadata());
    if let Some(error) = error {
        value.push_str(&format!(", error=\"{error}\""));
    }
    value.push_str(&format!(", error_description=\"{description}\""));
    value
}

/// Sends `call` and checks the whole refusal: answer, challenge, audit, metrics, and that neither
/// the answer nor the audit log carries any of `secrets` or the HMAC key.
async fn assert_refused(fx: &Fixture, call: Call, secrets: &[&str], want: Refusal) {
    let answer = fx.send(call).await;
    let body = answer.text();
    assert_eq!(answer.status, want.status, "{body}");
    assert_eq!(answer.rpc_code(), UNAUTHORIZED, "{body}");
    assert_eq!(answer.data_code(), want.code, "{body}");
    assert_eq!(answer.json()["id"], Value::Null);
    let message = answer.rpc_message();
    assert!(message.starts_with(want.description), "{message}");
    assert!(
        message.contains("Action: "),
        "the message says what to do next: {message}"
    );
    // RFC 6750 §3.1: without (accepted) credentials, the challenge carries no error information.
    let expected = if want.error.is_none() && want.status == 401 {
        format!("Bearer resource_metadata=\"{}\"", fx.resource_metadata())
    } else {
        challenge(fx, want.error, want.description)
    };
    assert_eq!(answer.header("www-authenticate").as_deref(), Some(expected.as_str()));
    if want.status == 503 {
        assert_eq!(answer.header("retry-after").as_deref(), Some("5"));
    } else {
        assert_eq!(answer.header("retry-after"), None);
    }
    for secret in secrets {
        assert!(!body.contains(secret), "the answer echoes a credential: {body}");
        let headers = format!("{:?}", answer.headers);
        assert!(!headers.contains(secret), "a header echoes a credential: {headers}");
    }

    let events = fx.take_events();
    assert_eq!(events.len(), 1, "one authentication event: {events:#?}");
    let event = &events[0];
    assert_eq!(event["kind"], "authentication");
    assert_eq!(event["decision"], "failure");
    assert_eq!(event["reason"], want.reason);
    assert_eq!(event["auth_method"], want.method);
    assert_eq!(event["client_address"], CLIENT);
    assert_eq!(event["http_status"], want.status);
    assert_eq!(event["policy_hash"], fx.policy_hash().as_str());
    assert!(
        event.get("subject").is_none(),
        "a refused token names no subject: {event}"
    );
    fx.assert_audit_free_of(secrets);

    assert_eq!(
        fx.auth_attempts(want.method, "failure", want.reason),
        1.0,
        "{}",
        fx.metrics()
    );
    for method in ["jwt", "api_key", "anonymous"] {
        assert_eq!(fx.auth_attempts(method, "success", "ok"), 0.0);
    }
    fx.assert_violations(want.violation.as_slice());
}

fn invalid_token(reason: &'static str, description: &'static str, method: &'static str) -> Refusal {
    Refusal {
        status: 401,
        code: "INVALID_TOKEN",
        reason,
        error: Some("invalid_token"),
        description,
        method,
        violation: None,
    }
}

fn alg_not_allowed() -> Refusal {
    Refusal {
        violation: Some("alg_not_allowed"),
        ..invalid_token(
            "alg_not_allowed",
            "The token's signature algorithm is not accepted for its issuer.",
            "jwt",
        )
    }
}

fn invalid_signature() -> Refusal {
    Refusal {
        status: 401,
        code: "INVALID_SIGNATURE",
        reason: "invalid_signature",
        error: Some("invalid_token"),
        description: "The token signature is invalid.",
        method: "jwt",
        violation: Some("invalid_signature"),
    }
}

/// 401 with the bare challenge, like missing credentials: the only credential is one the server
/// does not accept, so the client should start discovery.
fn unsupported_credentials(
    reason: &'static str,
    description: &'static str,
    violation: Option<&'static str>,
) -> Refusal {
    Refusal {
        status: 401,
        code: "UNSUPPORTED_CREDENTIALS",
        reason,
        error: None,
        description,
        method: "none",
        violation,
    }
}

fn invalid_request(reason: &'static str, description: &'static str, violation: Option<&'static str>) -> Refusal {
    Refusal {
        status: 400,
        code: "INVALID_REQUEST",
        reason,
        error: Some("invalid_request"),
        description,
        method: "none",
        violation,
    }
}

fn tools_list() -> Value {
    request("tools/list", json!({}))
}

#[tokio::test]
async fn alg_none_is_refused_as_alg_not_allowed() {
    for alg in ["none", "None", "NONE"] {
        let fx = Fixture::company_info();
        let claims = fx.claims("mallory", &["public:read", "confidential:read"]);
        let token = raw_jwt(&json!({"alg": alg, "typ": "JWT"}), &claims, b"");
        assert!(token.ends_with('.'));
        let call = fx.post().bearer(&token).json(&tools_list());
        assert_refused(&fx, call, &[&token], alg_not_allowed()).await;
    }
}

#[tokio::test]
async fn alg_none_is_refused() {
    // The refusal itself (whatever the reason code): 401 INVALID_TOKEN, nothing served.
    for alg in ["none", "None", "NONE"] {
        let fx = Fixture::company_info();
        let claims = fx.claims("mallory", &["public:read", "confidential:read"]);
        let token = raw_jwt(&json!({"alg": alg, "typ": "JWT"}), &claims, b"");
        let answer = fx.send(fx.post().bearer(&token).json(&tools_list())).await;
        assert_eq!(answer.status, 401, "{}", answer.text());
        assert_eq!(answer.rpc_code(), UNAUTHORIZED);
        assert_eq!(answer.data_code(), "INVALID_TOKEN");
        let challenge = answer.header("www-authenticate").expect("challenge");
        assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
        let events = fx.take_events();
        assert_eq!(events.len(), 1);
        assert_eq!(
            (&events[0]["kind"], &events[0]["decision"]),
            (&json!("authentication"), &json!("failure"))
        );
        fx.assert_audit_free_of(&[&token]);
        assert_eq!(fx.auth_attempts("jwt", "success", "ok"), 0.0);
    }
}

#[tokio::test]
async fn hs256_signed_with_the_google_public_key_is_refused_without_fetching_keys() {
    let fx = Fixture::company_info();
    let mut claims = fx.claims("mallory", &["public:read", "confidential:read"]);
    claims["iss"] = json!(GOOGLE);
    let token = sign_hs256(&claims, RSA_PUBLIC_KEY_PEM.as_bytes());
    let call = fx.post().bearer(&token).json(&tools_list());
    assert_refused(&fx, call, &[&token], alg_not_allowed()).await;
    // The issuer's fetch series exist from the start, at 0, and stay there.
    let metrics = fx.metrics();
    let fetches: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("palisade_jwks_fetches_total{issuer=\"https://accounts.google.com\""))
        .collect();
    assert!(
        !fetches.is_empty() && fetches.iter().all(|l| l.ends_with(" 0")),
        "the issuer's keys must not be fetched for a token whose algorithm is not allowed:\n{metrics}"
    );
}

#[tokio::test]
async fn expired_token_beyond_the_leeway_is_refused() {
    let fx = Fixture::company_info();
    let mut claims = fx.claims("alice", &["public:read"]);
    claims["iat"] = json!(now() - 3720);
    claims["exp"] = json!(now() - 120);
    let token = fx.sign(&claims);
    let call = fx.post().bearer(&token).json(&tools_list());
    let want = Refusal {
        status: 401,
        code: "TOKEN_EXPIRED",
        reason: "token_expired",
        error: Some("invalid_token"),
        description: "The access token has expired.",
        method: "jwt",
        violation: None,
    };
    assert_refused(&fx, call, &[&token], want).await;
}

#[tokio::test]
async fn expiry_within_the_leeway_is_accepted() {
    let fx = Fixture::company_info();
    let mut claims = fx.claims("alice", &["public:read"]);
    claims["exp"] = json!(now() - 30);
    let answer = fx.send(fx.post().bearer(&fx.sign(&claims)).json(&tools_list())).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.tool_names(), ["get_public_info"]);
}

#[tokio::test]
async fn token_not_valid_yet_is_refused() {
    let fx = Fixture::company_info();
    let mut claims = fx.claims("alice", &["public:read"]);
    claims["nbf"] = json!(now() + 300);
    let token = fx.sign(&claims);
    let call = fx.post().bearer(&token).json(&tools_list());
    let want = invalid_token("not_yet_valid", "The token is not valid yet (nbf).", "jwt");
    assert_refused(&fx, call, &[&token], want).await;
}

#[tokio::test]
async fn token_issued_in_the_future_is_refused() {
    let fx = Fixture::company_info();
    let mut claims = fx.claims("alice", &["public:read"]);
    claims["iat"] = json!(now() + 300);
    let token = fx.sign(&claims);
    let call = fx.post().bearer(&token).json(&tools_list());
    let want = invalid_token("issued_in_future", "The token is issued in the future (iat).", "jwt");
    assert_refused(&fx, call, &[&token], want).await;
}

#[tokio::test]
async fn token_from_an_unknown_issuer_is_refused() {
    let fx = Fixture::company_info();
    let mut claims = fx.claims("alice", &["public:read"]);
    claims["iss"] = json!("https://evil.example.com");
    let token = fx.sign(&claims);
    let call = fx.post().bearer(&token).json(&tools_list());
    let want = Refusal {
        status: 401,
        code: "INVALID_ISSUER",
        reason: "invalid_issuer",
        error: Some("invalid_token"),
        description: "The access token comes from an issuer this server does not trust (iss).",
        method: "jwt",
        violation: None,
    };
    assert_refused(&fx, call, &[&token], want).await;
}

fn invalid_audience() -> Refusal {
    Refusal {
        status: 401,
        code: "INVALID_AUDIENCE",
        reason: "invalid_audience",
        error: Some("invalid_token"),
        description: "The access token is not intended for this server (aud).",
        method: "jwt",
        violation: None,
    }
}

#[tokio::test]
async fn token_for_another_audience_is_refused() {
    let fx = Fixture::company_info();
    let mut claims = fx.claims("alice", &["public:read"]);
    claims["aud"] = json!("https://other.team-a.example.com/mcp");
    let token = fx.sign(&claims);
    let call = fx.post().bearer(&token).json(&tools_list());
    assert_refused(&fx, call, &[&token], invalid_audience()).await;
}

#[tokio::test]
async fn token_without_audience_is_refused() {
    let fx = Fixture::company_info();
    let mut claims = fx.claims("alice", &["public:read"]);
    claims.as_object_mut().unwrap().remove("aud");
    let token = fx.sign(&claims);
    let call = fx.post().bearer(&token).json(&tools_list());
    assert_refused(&fx, call, &[&token], invalid_audience()).await;
}

#[tokio::test]
async fn token_without_expiry_is_refused() {
    let fx = Fixture::company_info();
    let mut claims = fx.claims("alice", &["public:read"]);
    claims.as_object_mut().unwrap().remove("exp");
    let token = fx.sign(&claims);
    let call = fx.post().bearer(&token).json(&tools_list());
    let want = invalid_token("missing_exp", "The token has no expiry (exp).", "jwt");
    assert_refused(&fx, call, &[&token], want).await;
}

#[tokio::test]
async fn unknown_kid_with_unreachable_jwks_answers_503_keys_unavailable() {
    // The Google issuer's keys at a closed loopback port instead of OIDC discovery on the internet.
    let fx = Fixture::build(Sample::CompanyInfo, |policy, _| {
        google_keys_at(policy, "http://127.0.0.1:9/jwks");
    });
    let mut claims = fx.claims("mallory@gmail.com", &["public:read"]);
    claims["iss"] = json!(GOOGLE);
    // The keys are never available, so the signature is never checked: random bytes will do.
    let token = raw_jwt(
        &json!({"alg": "RS256", "typ": "JWT", "kid": "unknown-kid-0000"}),
        &claims,
        &rand::random::<[u8; 32]>(),
    );
    let call = fx.post().bearer(&token).json(&tools_list());
    let want = Refusal {
        status: 503,
        code: "KEYS_UNAVAILABLE",
        reason: "keys_unavailable",
        error: None,
        description: "The issuer's signing keys cannot be fetched right now.",
        method: "jwt",
        violation: None,
    };
    assert_refused(&fx, call, &[&token], want).await;
    assert_eq!(
        fx.metric("palisade_jwks_fetches_total{issuer=\"https://accounts.google.com\",result=\"failure\"}"),
        1.0,
        "{}",
        fx.metrics()
    );
}

#[tokio::test]
async fn tampered_payload_is_refused() {
    let fx = Fixture::company_info();
    let token = fx.token(&["public:read"]);
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let mut claims = fx.claims("alice", &["public:read", "confidential:read"]);
    let original: Value = serde_json::from_slice(&base64_decode(&parts[1])).unwrap();
    claims["iat"] = original["iat"].clone();
    claims["exp"] = original["exp"].clone();
    parts[1] = base64_encode(&serde_json::to_vec(&claims).unwrap());
    let tampered = parts.join(".");
    let call = fx
        .post()
        .bearer(&tampered)
        .json(&request("tools/call", json!({"name": "get_confidential_info"})));
    assert_refused(&fx, call, &[&tampered, &token], invalid_signature()).await;
}

#[tokio::test]
async fn truncated_signature_is_refused() {
    let fx = Fixture::company_info();
    let token = fx.token(&["public:read"]);
    let cut = token.rfind('.').unwrap() + 21; // 20 of the signature's 43 characters
    let truncated = &token[..cut];
    let call = fx.post().bearer(truncated).json(&tools_list());
    assert_refused(&fx, call, &[truncated, &token], invalid_signature()).await;
}

#[tokio::test]
async fn stripped_signature_is_refused() {
    let fx = Fixture::company_info();
    let token = fx.token(&["public:read"]);
    let stripped = &token[..=token.rfind('.').unwrap()];
    let call = fx.post().bearer(stripped).json(&tools_list());
    assert_refused(&fx, call, &[stripped, &token], invalid_signature()).await;
}

#[tokio::test]
async fn token_truncated_inside_the_payload_is_refused() {
    // Two segments are not a JWT: the server treats it as an API key, and has no API-key table.
    let fx = Fixture::company_info();
    let token = fx.token(&["public:read"]);
    let truncated = &token[..token.rfind('.').unwrap() - 10];
    let call = fx.post().bearer(truncated).json(&tools_list());
    let want = invalid_token("malformed", "The token is malformed.", "api_key");
    assert_refused(&fx, call, &[truncated, &token], want).await;
}

#[tokio::test]
async fn oversize_token_is_refused() {
    let fx = Fixture::company_info();
    let mut claims = fx.claims("alice", &["public:read"]);
    claims["padding"] = json!("x".repeat(9 * 1024));
    let token = fx.sign(&claims);
    assert!(token.len() > 8 * 1024 && token.len() < 14 * 1024);
    let call = fx.post().bearer(&token).json(&tools_list());
    let want = Refusal {
        violation: Some("oversize"),
        ..invalid_token("too_large", "The token is larger than this server accepts.", "jwt")
    };
    assert_refused(&fx, call, &[&token], want).await;
}

#[tokio::test]
async fn malformed_base64_is_refused() {
    let fx = Fixture::company_info();
    let token = fx.token(&["public:read"]);
    let parts: Vec<&str> = token.split('.').collect();
    for bad in [
        format!("{}!.{}.{}", parts[0], parts[1], parts[2]),
        format!("{}.{}*.{}", parts[0], parts[1], parts[2]),
        "eyJ!!!.@@@@.####".to_owned(),
        "..".to_owned(),
    ] {
        let fx = Fixture::company_info();
        let call = fx.post().bearer(&bad).json(&tools_list());
        let want = invalid_token("malformed", "The token is malformed.", "jwt");
        assert_refused(&fx, call, &[&bad], want).await;
    }
    drop(fx);
}

#[tokio::test]
async fn token_in_the_query_string_is_refused() {
    let fx = Fixture::company_info();
    let token = fx.token(&["public:read"]);
    let call = fx.post().uri(&format!("/mcp?access_token={token}")).json(&tools_list());
    let want = unsupported_credentials(
        "token_in_query",
        "Access tokens are not accepted in the URL query string.",
        Some("token_in_query"),
    );
    assert_refused(&fx, call, &[&token], want).await;
}

#[tokio::test]
async fn token_in_the_query_string_is_refused_even_with_a_header() {
    let fx = Fixture::company_info();
    let token = fx.token(&["public:read"]);
    let call = fx
        .post()
        .bearer(&token)
        .uri(&format!("/mcp?x=1&ACCESS_TOKEN={token}"))
        .json(&tools_list());
    let want = invalid_request(
        "token_in_query",
        "Access tokens are not accepted in the URL query string.",
        Some("token_in_query"),
    );
    assert_refused(&fx, call, &[&token], want).await;
}

#[tokio::test]
async fn two_authorization_headers_are_refused() {
    let fx = Fixture::company_info();
    let public = fx.token(&["public:read"]);
    let both = fx.token(&["public:read", "confidential:read"]);
    let call = fx
        .post()
        .add("authorization", &format!("Bearer {public}"))
        .add("authorization", &format!("Bearer {both}"))
        .json(&tools_list());
    let want = invalid_request(
        "duplicate_authorization",
        "The request has more than one Authorization header.",
        Some("duplicate_authorization"),
    );
    assert_refused(&fx, call, &[&public, &both], want).await;
}

#[tokio::test]
async fn authorization_and_api_key_together_are_refused() {
    let fx = Fixture::company_info();
    let token = fx.token(&["public:read"]);
    let call = fx
        .post()
        .bearer(&token)
        .set("x-api-key", "pk_live_whatever")
        .json(&tools_list());
    let want = invalid_request(
        "duplicate_authorization",
        "The request has more than one Authorization header.",
        Some("duplicate_authorization"),
    );
    assert_refused(&fx, call, &[&token, "pk_live_whatever"], want).await;
}

#[tokio::test]
async fn basic_authorization_is_refused() {
    let fx = Fixture::company_info();
    let credentials = base64_encode_standard(b"alice:correct-horse-battery-staple");
    let call = fx
        .post()
        .set("authorization", &format!("Basic {credentials}"))
        .json(&tools_list());
    let want = unsupported_credentials(
        "unsupported_scheme",
        "Only the Bearer authorization scheme is accepted.",
        None,
    );
    assert_refused(&fx, call, &[&credentials, "correct-horse-battery-staple"], want).await;
}

const GOOD_KEY: &str = "pk_live_7f3a9c1e5b2d4f6a8c0e";
const DISABLED_KEY: &str = "pk_live_0d9e8f7a6b5c4d3e2f1a";
const WRONG_KEY: &str = "pk_live_7f3a9c1e5b2d4f6a8c0f";

fn with_api_keys() -> Fixture {
    Fixture::build(Sample::CompanyInfo, |policy, dir| {
        let path = dir.join("secrets/company-info-api-keys/keys.yaml");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(
            &path,
            format!(
                "apiVersion: palisade.dev/v1alpha1\nkind: ApiKeyTable\nkeys:\n\
                 - {{id: ci-bot, sha256: {}, scopes: [\"public:read\"]}}\n\
                 - {{id: old-bot, sha256: {}, scopes: [\"public:read\", \"confidential:read\"], enabled: false}}\n",
                hash_key(GOOD_KEY),
                hash_key(DISABLED_KEY)
            ),
        )
        .unwrap();
        policy.authentication.api_keys_file = Some(path.display().to_string());
    })
}

#[tokio::test]
async fn valid_api_key_is_accepted() {
    let fx = with_api_keys();
    let answer = fx.send(fx.post().set("x-api-key", GOOD_KEY).json(&tools_list())).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.tool_names(), ["get_public_info"]);
    let events = fx.take_events();
    assert_eq!(events[0]["kind"], "authentication");
    assert_eq!(events[0]["decision"], "success");
    assert_eq!(events[0]["auth_method"], "api_key");
    assert_eq!(events[0]["issuer"], "ci-bot");
    assert_eq!(fx.auth_attempts("api_key", "success", "ok"), 1.0);
    fx.assert_audit_free_of(&[GOOD_KEY, &hash_key(GOOD_KEY)]);
}

#[tokio::test]
async fn wrong_api_key_is_refused() {
    let fx = with_api_keys();
    let call = fx.post().set("x-api-key", WRONG_KEY).json(&tools_list());
    let want = invalid_token("unknown_api_key", "The API key is not valid.", "api_key");
    assert_refused(&fx, call, &[WRONG_KEY], want).await;
}

#[tokio::test]
async fn wrong_api_key_as_bearer_is_refused() {
    let fx = with_api_keys();
    let call = fx.post().bearer(WRONG_KEY).json(&tools_list());
    let want = invalid_token("unknown_api_key", "The API key is not valid.", "api_key");
    assert_refused(&fx, call, &[WRONG_KEY], want).await;
}

#[tokio::test]
async fn disabled_api_key_is_refused() {
    let fx = with_api_keys();
    let call = fx.post().set("x-api-key", DISABLED_KEY).json(&tools_list());
    let want = invalid_token("disabled_api_key", "The API key is disabled.", "api_key");
    assert_refused(&fx, call, &[DISABLED_KEY, &hash_key(DISABLED_KEY)], want).await;
}

#[tokio::test]
async fn anonymous_access_is_refused_by_default() {
    let fx = Fixture::company_info();
    let call = fx.post().json(&tools_list());
    let want = Refusal {
        status: 401,
        code: "MISSING_AUTHORIZATION",
        reason: "missing_authorization",
        error: None,
        description: "Authentication is required.",
        method: "none",
        violation: None,
    };
    assert_refused(&fx, call, &[], want).await;
}

#[tokio::test]
async fn missing_credentials_challenge_carries_no_error_information() {
    let fx = Fixture::company_info();
    let answer = fx.send(fx.post().json(&tools_list())).await;
    assert_eq!(answer.status, 401);
    assert_eq!(
        answer.header("www-authenticate"),
        Some(format!("Bearer resource_metadata=\"{}\"", fx.resource_metadata()))
    );
}

#[tokio::test]
async fn anonymous_callers_get_only_anonymous_roles_when_allowed() {
    let fx = Fixture::build(Sample::CompanyInfo, |policy, _| {
        policy.authentication.allow_anonymous = true;
        policy.bindings.push(Binding {
            role: "employee".into(),
            subjects: Vec::new(),
            groups: Vec::new(),
            service_accounts: Vec::new(),
            anonymous: true,
            source: None,
            from: None,
        });
        policy.bindings.sort();
    });
    let answer = fx.send(fx.post().json(&tools_list())).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.tool_names(), ["get_public_info"]);
    let events = fx.take_events();
    assert_eq!(events.len(), 2, "{events:#?}");
    assert_eq!(
        (&events[0]["kind"], &events[0]["decision"], &events[0]["auth_method"]),
        (&json!("authentication"), &json!("success"), &json!("anonymous"))
    );
    assert_eq!(events[1]["kind"], "authorization");
    assert_eq!(events[1]["decision"], "allow");
    assert_eq!(fx.auth_attempts("anonymous", "success", "ok"), 1.0);

    let public = fx
        .send(
            fx.post()
                .json(&request("tools/call", json!({"name": "get_public_info"}))),
        )
        .await;
    assert_eq!(public.status, 200);
    assert!(public.text().contains("Acme Corp: public company information"));
    let confidential = fx
        .send(
            fx.post()
                .json(&request("tools/call", json!({"name": "get_confidential_info"}))),
        )
        .await;
    assert_eq!(confidential.status, 403, "{}", confidential.text());
    assert_eq!(confidential.data_code(), "INSUFFICIENT_SCOPE");
    assert!(!confidential.text().contains("strategy 2027"));
    let events = fx.take_events();
    let denial = events.last().unwrap();
    assert_eq!(denial["decision"], "deny");
    assert_eq!(denial["reason"], "missing_scopes");
    assert_eq!(denial["auth_method"], "anonymous");
}

#[tokio::test]
async fn a_kubernetes_io_claim_from_another_issuer_is_no_service_account() {
    // The strategist role is bound to the service account team-a/strategy-bot. The development
    // HMAC issuer is not the cluster's service-account issuer, so whoever holds its key cannot
    // become that service account by writing a `kubernetes.io` claim.
    let fx = Fixture::build(Sample::CompanyInfo, |policy, _| {
        policy.bindings.push(Binding {
            role: "strategist".into(),
            subjects: Vec::new(),
            groups: Vec::new(),
            service_accounts: vec!["team-a/strategy-bot".into()],
            anonymous: false,
            source: None,
            from: None,
        });
        policy.bindings.sort();
    });
    let mut claims = fx.claims("system:serviceaccount:team-a:strategy-bot", &[]);
    claims["kubernetes.io"] = json!({"namespace": "team-a", "serviceaccount": {"name": "strategy-bot", "uid": "u"}});
    let token = fx.sign(&claims);
    let answer = fx
        .send(fx.rpc(&token, "tools/call", json!({"name": "get_confidential_info"})))
        .await;
    assert_eq!(answer.status, 403, "{}", answer.text());
    assert_eq!(answer.data_code(), "INSUFFICIENT_SCOPE");
    assert!(!answer.text().contains("strategy 2027"));
    let events = fx.take_events();
    let denial = events.last().unwrap();
    assert_eq!(
        (&denial["kind"], &denial["decision"], &denial["reason"]),
        (&json!("authorization"), &json!("deny"), &json!("missing_scopes")),
        "{denial}"
    );
    assert_eq!(denial["subject"], "system:serviceaccount:team-a:strategy-bot");

    let answer = fx.send(fx.rpc(&token, "tools/list", json!({}))).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert!(answer.tool_names().is_empty(), "{:?}", answer.tool_names());
}

// -------------------------------------------------------------------------------------------------
// Authorization

/// The challenge of a 403 for a caller lacking `scope`.
fn scope_challenge(fx: &Fixture, scope: &str) -> String {
    format!(
        "Bearer resource_metadata=\"{}\", error=\"insufficient_scope\", error_description=\"Missing required scope: {scope}.\", scope=\"{scope}\"",
        fx.resource_metadata()
    )
}

#[tokio::test]
async fn calling_a_tool_the_caller_cannot_see_is_refused_with_insufficient_scope() {
    let fx = Fixture::company_info();
    let token = fx.token(&["public:read"]);
    let answer = fx
        .send(fx.rpc(&token, "tools/call", json!({"name": "get_confidential_info"})))
        .await;
    assert_eq!(answer.status, 403, "{}", answer.text());
    assert_eq!(answer.json()["id"], 1);
    assert_eq!(answer.rpc_code(), UNAUTHORIZED);
    assert_eq!(answer.data_code(), "INSUFFICIENT_SCOPE");
    assert_eq!(
        answer.json()["error"]["data"]["requiredScopes"],
        json!(["confidential:read"])
    );
    assert_eq!(
        answer.header("www-authenticate"),
        Some(scope_challenge(&fx, "confidential:read"))
    );
    assert!(!answer.text().contains("strategy 2027"));

    let events = fx.take_events();
    assert_eq!(events.len(), 2, "{events:#?}");
    assert_eq!(events[0]["kind"], "authentication");
    assert_eq!(events[0]["decision"], "success");
    assert_eq!(events[0]["subject"], "alice");
    assert_eq!(events[0]["issuer"], DEV_ISSUER);
    assert_eq!(events[0]["client_address"], CLIENT);
    let denial = &events[1];
    assert_eq!(denial["kind"], "authorization");
    assert_eq!(denial["decision"], "deny");
    assert_eq!(denial["reason"], "missing_scopes");
    assert_eq!(denial["rule"], "get_confidential_info");
    assert_eq!(denial["tool"], "get_confidential_info");
    assert_eq!(denial["mcp_method"], "tools/call");
    assert_eq!(denial["missing_scopes"], json!(["confidential:read"]));
    assert_eq!(denial["http_status"], 403);
    assert_eq!(denial["client_address"], CLIENT);
    assert_eq!(denial["policy_hash"], fx.policy_hash().as_str());
    assert_eq!(fx.authz_checks("tool", "deny"), 1.0);
    assert_eq!(fx.authz_checks("tool", "allow"), 0.0);
    assert_eq!(fx.auth_attempts("jwt", "success", "ok"), 1.0);
    fx.assert_violations(&[]);
    fx.assert_audit_free_of(&[&token]);
}

#[tokio::test]
async fn an_unknown_tool_is_an_invalid_params_error() {
    let fx = Fixture::company_info();
    let token = fx.token(&["public:read", "confidential:read"]);
    let answer = fx.send(fx.rpc(&token, "tools/call", json!({"name": "x"}))).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.rpc_code(), -32602);
    assert_eq!(answer.rpc_message(), "Unknown tool: x");
    assert_eq!(answer.header("www-authenticate"), None);
    let events = fx.take_events();
    assert_eq!(events.len(), 2, "{events:#?}");
    assert_eq!(events[1]["kind"], "authorization");
    assert_eq!(events[1]["decision"], "deny");
    assert_eq!(events[1]["reason"], "unknown_tool");
    assert_eq!(events[1]["tool"], "x");
    assert_eq!(fx.authz_checks("tool", "deny"), 1.0);
    fx.assert_audit_free_of(&[&token]);
}

#[tokio::test]
async fn reading_a_confidential_resource_without_the_scope_is_refused() {
    let fx = Fixture::company_info();
    let token = fx.token(&["public:read"]);
    let uri = "palisade://confidential/confidential.md";
    let answer = fx.send(fx.rpc(&token, "resources/read", json!({"uri": uri}))).await;
    assert_eq!(answer.status, 403, "{}", answer.text());
    assert_eq!(answer.rpc_code(), UNAUTHORIZED);
    assert_eq!(answer.data_code(), "INSUFFICIENT_SCOPE");
    assert_eq!(
        answer.header("www-authenticate"),
        Some(scope_challenge(&fx, "confidential:read"))
    );
    assert!(!answer.text().contains("strategy 2027"));
    let events = fx.take_events();
    assert_eq!(events.len(), 2, "{events:#?}");
    let denial = &events[1];
    assert_eq!(denial["kind"], "authorization");
    assert_eq!(denial["decision"], "deny");
    assert_eq!(denial["reason"], "missing_scopes");
    assert_eq!(denial["resource"], uri);
    assert_eq!(denial["mcp_method"], "resources/read");
    assert_eq!(denial["http_status"], 403);
    assert_eq!(fx.authz_checks("resource", "deny"), 1.0);

    // resources/list does not show it either.
    let list = fx.send(fx.rpc(&token, "resources/list", json!({}))).await;
    let uris: Vec<Value> = list.result()["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["uri"].clone())
        .collect();
    assert_eq!(uris, [json!("palisade://public/public.md")]);
}

#[tokio::test]
async fn audit_mode_lets_the_call_through_and_records_would_deny() {
    let fx = Fixture::build(Sample::CompanyInfo, |policy, _| {
        let rule = policy
            .rules
            .iter_mut()
            .find(|r| r.match_ == "get_confidential_info")
            .expect("the rule");
        rule.mode = PolicyMode::Audit;
    });
    let token = fx.token(&["public:read"]);
    let answer = fx
        .send(fx.rpc(&token, "tools/call", json!({"name": "get_confidential_info"})))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.result()["isError"], false);
    assert!(answer.text().contains("strategy 2027"));
    let events = fx.take_events();
    assert_eq!(events.len(), 2, "{events:#?}");
    let event = &events[1];
    assert_eq!(event["kind"], "authorization");
    assert_eq!(event["decision"], "would_deny");
    assert_eq!(event["reason"], "missing_scopes");
    assert_eq!(event["rule"], "get_confidential_info");
    assert_eq!(event["missing_scopes"], json!(["confidential:read"]));
    assert_eq!(event["http_status"], 200);
    assert_eq!(fx.authz_checks("tool", "would_deny"), 1.0);
    assert_eq!(fx.authz_checks("tool", "deny"), 0.0);
}

// -------------------------------------------------------------------------------------------------
// Path traversal

/// URIs that try to leave a collection (or the documents directory) through `resources/read`.
const TRAVERSAL_URIS: [&str; 26] = [
    "palisade://public/../confidential/confidential.md",
    "palisade://public/..%2fconfidential%2fconfidential.md",
    "palisade://public/..%2Fconfidential%2Fconfidential.md",
    "palisade://public/%2e%2e%2fconfidential%2fconfidential.md",
    "palisade://public/%2E%2E%2Fconfidential%2Fconfidential.md",
    "palisade://public/%252e%252e%252fconfidential%252fconfidential.md",
    "palisade://public/..%5cconfidential%5cconfidential.md",
    "palisade://public/a\\..\\b",
    "palisade://public/..\\confidential\\confidential.md",
    "palisade://public/..%c0%afconfidential%c0%afconfidential.md",
    "palisade://public/....//confidential/confidential.md",
    "palisade://public/..",
    "palisade://public/.",
    "palisade://public/%2e%2e",
    "palisade://public/",
    "palisade://public/public.md%00",
    "palisade://public/public.md\u{0}",
    "palisade://public/public.md%00../../confidential/confidential.md",
    "palisade://public/%2fetc%2fpasswd",
    "palisade://public//etc/passwd",
    "palisade:///etc/passwd",
    "palisade://../confidential/confidential.md",
    "palisade://public/public.md?name=../confidential/confidential.md",
    "palisade://public/public.md#../confidential/confidential.md",
    "file:///etc/passwd",
    "/etc/passwd",
];

/// What a refused traversal must not contain: the documents directory, the other collection's
/// content, a system file's content.
fn assert_nothing_revealed(fx: &Fixture, answer: &Answer, input: &str) {
    let text = answer.text();
    let dir = fx.dir.path().display().to_string();
    if !input.contains(&dir) {
        assert!(!text.contains(&dir), "the answer reveals a server path: {text}");
    }
    for leaked in [
        "strategy 2027",
        "root:",
        "/var/lib/palisade",
        "/tmp/",
        "No such file",
        "os error",
    ] {
        if !input.contains(leaked) {
            assert!(!text.contains(leaked), "the answer reveals {leaked:?}: {text}");
        }
    }
}

#[tokio::test]
async fn path_traversal_through_resources_read_is_refused() {
    let fx = Fixture::company_info();
    let token = fx.token(&["public:read"]);
    for uri in TRAVERSAL_URIS {
        let answer = fx.send(fx.rpc(&token, "resources/read", json!({"uri": uri}))).await;
        assert_eq!(answer.status, 200, "{uri}: {}", answer.text());
        assert_eq!(answer.rpc_code(), -32002, "{uri}: {}", answer.text());
        assert_eq!(answer.rpc_message(), "Resource not found", "{uri}");
        assert!(answer.json().get("result").is_none());
        assert_nothing_revealed(&fx, &answer, uri);
    }
    // The same answer under the modern revision, with its own code.
    for uri in TRAVERSAL_URIS {
        let answer = fx
            .send(fx.modern(&token, "resources/read", json!({"uri": uri}), Some(uri)))
            .await;
        if answer.status == 400 {
            // A URI that cannot travel in a header (NUL) fails the routing-header check first.
            assert_eq!(answer.rpc_code(), -32020, "{uri}: {}", answer.text());
            continue;
        }
        assert_eq!(answer.status, 200, "{uri}: {}", answer.text());
        assert_eq!(answer.rpc_code(), -32602, "{uri}: {}", answer.text());
        assert_nothing_revealed(&fx, &answer, uri);
    }
    // Even a caller holding both scopes gets nothing outside a collection.
    let strategist = fx.token(&["public:read", "confidential:read"]);
    for uri in TRAVERSAL_URIS {
        let answer = fx
            .send(fx.rpc(&strategist, "resources/read", json!({"uri": uri})))
            .await;
        assert_eq!(answer.rpc_code(), -32002, "{uri}: {}", answer.text());
        assert!(answer.json().get("result").is_none());
    }
    // The control: the real document is served.
    let answer = fx
        .send(fx.rpc(&token, "resources/read", json!({"uri": "palisade://public/public.md"})))
        .await;
    assert_eq!(answer.status, 200);
    assert!(
        answer.result()["contents"][0]["text"]
            .as_str()
            .unwrap()
            .contains("Acme Corp: public company information")
    );
    fx.assert_audit_free_of(&[&token, &strategist]);
}

#[tokio::test]
async fn path_traversal_through_resources_read_is_audited_and_counted() {
    let fx = Fixture::company_info();
    let token = fx.token(&["public:read"]);
    let uri = "palisade://public/..%2fconfidential%2fconfidential.md";
    let answer = fx.send(fx.rpc(&token, "resources/read", json!({"uri": uri}))).await;
    assert_eq!(answer.rpc_code(), -32002);
    let events = fx.take_events();
    let last = events.last().expect("events");
    assert_eq!(last["mcp_method"], "resources/read");
    assert_ne!(last["decision"], "allow", "a refused traversal is not an allow: {last}");
    assert_ne!(last["reason"], "no_authorization_needed", "{last}");
    assert_eq!(fx.violations("path_traversal"), 1.0, "{}", fx.metrics());
}

/// Names that try to leave the checklists collection through a `get` tool.
fn traversal_names(fx: &Fixture) -> Vec<String> {
    let mut names: Vec<String> = [
        "../processes/onboarding.md",
        "..%2fprocesses%2fonboarding.md",
        "..%2Fprocesses%2Fonboarding.md",
        "%2e%2e%2fprocesses%2fonboarding.md",
        "%2e%2e/processes/onboarding.md",
        "..\\processes\\onboarding.md",
        "a\\..\\b",
        "....//processes/onboarding.md",
        "./release.md",
        "checklists/../processes/onboarding.md",
        "processes/onboarding.md",
        "/etc/passwd",
        "//etc/passwd",
        "file:///etc/passwd",
        "~/.ssh/id_rsa",
        "..",
        ".",
        "",
        " ",
        "release.md\u{0}",
        "release.md\u{0}../../processes/onboarding.md",
        "%00",
        "release.md/",
        "release.md\n../processes/onboarding.md",
        "..／processes／onboarding.md",
        "onboarding.md",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    let absolute = fx.documents_dir.join("processes").join("onboarding.md");
    names.push(absolute.display().to_string());
    names.push(format!("../../{}", absolute.display()));
    names
}

#[tokio::test]
async fn path_traversal_through_a_get_tool_is_refused() {
    let fx = Fixture::sso_docs();
    let onboarding = std::fs::read_to_string(fx.documents_dir.join("processes/onboarding.md")).unwrap();
    let secret_line = onboarding
        .lines()
        .find(|l| l.len() > 20 && !l.starts_with('#'))
        .expect("a line of content")
        .trim()
        .to_owned();
    let token = fx.token(&["checklist.read"]);
    for name in traversal_names(&fx) {
        let answer = fx
            .send(fx.rpc(
                &token,
                "tools/call",
                json!({"name": "get_checklist", "arguments": {"name": name}}),
            ))
            .await;
        assert_eq!(answer.status, 200, "{name:?}: {}", answer.text());
        let result = answer.result();
        assert_eq!(result["isError"], true, "{name:?} was served: {result}");
        let text = result["content"][0]["text"].as_str().unwrap();
        assert!(!text.contains(&secret_line), "{name:?} leaked another collection");
        assert!(
            text.starts_with("invalid document name") || text.starts_with("document \"onboarding.md\" not found"),
            "{name:?}: {text}"
        );
        assert_nothing_revealed(&fx, &answer, &name);
        let events = fx.take_events();
        assert_eq!(events.len(), 2, "{events:#?}");
        assert_eq!(events[1]["kind"], "authorization");
        assert_eq!(events[1]["tool"], "get_checklist");
    }
    // The control: a checklist by its name.
    let answer = fx
        .send(fx.rpc(
            &token,
            "tools/call",
            json!({"name": "get_checklist", "arguments": {"name": "release.md"}}),
        ))
        .await;
    assert_eq!(answer.result()["isError"], false, "{}", answer.text());
    fx.assert_audit_free_of(&[&token]);
    // Traversal attempts are not scope problems.
    assert_eq!(fx.authz_checks("tool", "deny"), 0.0);
}

#[tokio::test]
async fn path_traversal_through_a_get_tool_is_counted() {
    let fx = Fixture::sso_docs();
    let token = fx.token(&["checklist.read"]);
    let answer = fx
        .send(fx.rpc(
            &token,
            "tools/call",
            json!({"name": "get_checklist", "arguments": {"name": "../processes/onboarding.md"}}),
        ))
        .await;
    assert_eq!(answer.result()["isError"], true);
    assert_eq!(fx.violations("path_traversal"), 1.0, "{}", fx.metrics());
}

// -------------------------------------------------------------------------------------------------
// Transport

#[tokio::test]
async fn a_json_rpc_batch_is_refused() {
    let fx = Fixture::company_info();
    let token = fx.token(&["public:read"]);
    let batch = json!([request("tools/list", json!({})), request("ping", json!({}))]);
    let answer = fx.send(fx.post().bearer(&token).json(&batch)).await;
    assert_eq!(answer.status, 400, "{}", answer.text());
    assert_eq!(answer.rpc_code(), -32600);
    assert!(answer.rpc_message().contains("batches are not supported"));
    assert_eq!(answer.json()["id"], Value::Null);
    assert_eq!(fx.take_events()[0]["decision"], "success");
}

#[tokio::test]
async fn a_message_refused_after_authentication_is_audited() {
    let fx = Fixture::company_info();
    let token = fx.token(&["public:read"]);
    let calls = [
        fx.post().bearer(&token).json(&json!([request("ping", json!({}))])),
        fx.post().bearer(&token).body("{not json"),
        fx.modern(&token, "tools/call", json!({"name": "get_public_info"}), Some("x")),
    ];
    for call in calls {
        let answer = fx.send(call).await;
        assert_eq!(answer.status, 400);
        let events = fx.take_events();
        assert_eq!(events.len(), 2, "{events:#?}");
        assert_eq!(events[1]["kind"], "request");
        assert_eq!(events[1]["http_status"], 400);
    }
}

/// A transport refusal: status, JSON-RPC code, no challenge, no authentication attempted.
async fn assert_transport_refusal(fx: &Fixture, call: Call, status: u16, code: i64, violation: Option<&str>) {
    let answer = fx.send(call).await;
    assert_eq!(answer.status, status, "{}", answer.text());
    assert_eq!(answer.rpc_code(), code, "{}", answer.text());
    assert_eq!(answer.json()["id"], Value::Null);
    assert_eq!(answer.header("www-authenticate"), None);
    fx.assert_violations(violation.as_slice());
    for method in ["jwt", "api_key", "anonymous"] {
        assert_eq!(fx.auth_attempts(method, "success", "ok"), 0.0, "authenticated anyway");
    }
}

#[tokio::test]
async fn a_foreign_origin_is_refused() {
    for origin in [
        "https://evil.example.com",
        "null",
        "https://company-info.team-a.example.com.evil.example.com",
        "http://evil.example.com:8080",
    ] {
        let fx = Fixture::company_info();
        let token = fx.token(&["public:read"]);
        let call = fx.post().bearer(&token).set("origin", origin).json(&tools_list());
        assert_transport_refusal(&fx, call, 403, -32600, Some("foreign_origin")).await;
        fx.assert_audit_free_of(&[&token]);
    }
    // The server's own origin is accepted.
    let fx = Fixture::company_info();
    let call = fx
        .post()
        .bearer(&fx.token(&["public:read"]))
        .set("origin", "https://company-info.team-a.example.com")
        .json(&tools_list());
    assert_eq!(fx.send(call).await.status, 200);
}

#[tokio::test]
async fn a_foreign_origin_or_host_is_audited() {
    for (call, reason) in [
        (
            (|fx: &Fixture| fx.post().set("origin", "https://evil.example.com")) as fn(&Fixture) -> _,
            "foreign_origin",
        ),
        (|fx: &Fixture| fx.post().set("host", "evil.example.com"), "foreign_host"),
    ] {
        let fx = Fixture::company_info();
        let answer = fx.send(call(&fx).json(&tools_list())).await;
        assert_eq!(answer.status, 403);
        let events = fx.take_events();
        assert_eq!(events.len(), 1, "{events:#?}");
        assert_eq!(events[0]["kind"], "request");
        assert_eq!(events[0]["decision"], "deny");
        assert_eq!(events[0]["reason"], reason);
        assert_eq!(events[0]["http_status"], 403);
        assert_eq!(events[0]["client_address"], CLIENT);
    }
}

#[tokio::test]
async fn a_foreign_host_is_refused() {
    for host in [
        Some("evil.example.com"),
        Some("company-info.team-a.example.com.evil.example.com"),
        Some("evil.example.com:443"),
        Some("company-info.team-a.example.com@evil.example.com"),
        None,
    ] {
        let fx = Fixture::company_info();
        let token = fx.token(&["public:read"]);
        let call = fx.post().bearer(&token).json(&tools_list());
        let call = match host {
            Some(host) => call.set("host", host),
            None => call.remove("host"),
        };
        assert_transport_refusal(&fx, call, 403, -32600, Some("foreign_origin")).await;
    }
    // The resource's host (with a port) and localhost are accepted.
    for host in ["company-info.team-a.example.com:443", "localhost:8080", "127.0.0.1"] {
        let fx = Fixture::company_info();
        let call = fx
            .rpc(&fx.token(&["public:read"]), "tools/list", json!({}))
            .set("host", host);
        assert_eq!(fx.send(call).await.status, 200, "{host}");
    }
}

#[tokio::test]
async fn an_oversize_body_is_refused() {
    let fx = Fixture::company_info();
    let token = fx.token(&["public:read"]);
    let padding = "x".repeat(1 << 20);
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"padding": padding}});
    // The body is read only once the caller is authenticated: then 413.
    let answer = fx.send(fx.post().bearer(&token).json(&body)).await;
    assert_eq!(answer.status, 413, "{}", answer.text());
    assert_eq!(answer.rpc_code(), -32600);
    assert_eq!(
        answer.rpc_message(),
        "Payload Too Large: the body exceeds 1048576 bytes"
    );
    assert_eq!(answer.header("www-authenticate"), None);
    fx.assert_violations(&["oversize"]);
    let events = fx.take_events();
    let ends: Vec<(&str, &str)> = events
        .iter()
        .map(|e| (e["kind"].as_str().unwrap_or(""), e["reason"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(ends, [("authentication", "ok"), ("request", "body_too_large")]);
    assert_eq!(events[1]["http_status"], 413);

    // Without credentials the same body is never read: 401 with the challenge.
    let fx = Fixture::company_info();
    let answer = fx.send(fx.post().json(&body)).await;
    assert_eq!(answer.status, 401, "{}", answer.text());
    assert_eq!(answer.data_code(), "MISSING_AUTHORIZATION");
    fx.assert_violations(&[]);
}

#[tokio::test]
async fn invalid_json_is_a_parse_error() {
    let fx = Fixture::company_info();
    let token = fx.token(&["public:read"]);
    for body in [
        &b"{\"jsonrpc\": \"2.0\", \"id\": 1, \"method\": "[..],
        b"",
        b"\xff\xfe",
        b"tools/list",
    ] {
        let answer = fx.send(fx.post().bearer(&token).body(body.to_vec())).await;
        assert_eq!(answer.status, 400, "{}", answer.text());
        assert_eq!(answer.rpc_code(), -32700);
        assert_eq!(answer.json()["id"], Value::Null);
    }
}

#[tokio::test]
async fn a_wrong_content_type_is_refused() {
    for content_type in [Some("text/plain"), Some("application/x-www-form-urlencoded"), None] {
        let fx = Fixture::company_info();
        let call = fx.rpc(&fx.token(&["public:read"]), "tools/list", json!({}));
        let call = match content_type {
            Some(value) => call.set("content-type", value),
            None => call.remove("content-type"),
        };
        assert_transport_refusal(&fx, call, 415, -32600, None).await;
    }
}

#[tokio::test]
async fn an_html_only_accept_is_refused() {
    let fx = Fixture::company_info();
    let call = fx
        .rpc(&fx.token(&["public:read"]), "tools/list", json!({}))
        .set("accept", "text/html");
    assert_transport_refusal(&fx, call, 406, -32600, None).await;
}

#[tokio::test]
async fn get_and_delete_on_mcp_are_not_allowed() {
    let fx = Fixture::company_info();
    let token = fx.token(&["public:read"]);
    for method in ["GET", "DELETE"] {
        let call = Call::new(method, "/mcp")
            .set("host", &fx.host())
            .set("accept", "text/event-stream")
            .bearer(&token);
        let answer = fx.send(call).await;
        assert_eq!(answer.status, 405, "{method}");
        assert_eq!(answer.header("allow").as_deref(), Some("POST"));
        assert_eq!(answer.rpc_code(), -32600);
    }
}

#[tokio::test]
async fn an_unknown_path_is_404_not_401() {
    let fx = Fixture::company_info();
    for (method, path) in [
        ("GET", "/admin"),
        ("POST", "/mcp/extra"),
        ("GET", "/metrics"),
        ("POST", "/"),
        ("GET", "/.well-known/openid-configuration"),
    ] {
        let answer = fx.send(Call::new(method, path).set("host", &fx.host())).await;
        assert_eq!(answer.status, 404, "{method} {path}");
        assert_eq!(answer.header("www-authenticate"), None, "{method} {path}");
    }
    assert!(fx.take_events().is_empty());
}

#[tokio::test]
async fn a_notification_is_accepted_without_a_body() {
    let fx = Fixture::company_info();
    let token = fx.token(&["public:read"]);
    let call = fx
        .post()
        .bearer(&token)
        .json(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
    let answer = fx.send(call).await;
    assert_eq!(answer.status, 202);
    assert!(answer.body.is_empty(), "{}", answer.text());
    let events = fx.take_events();
    assert_eq!(events.len(), 2, "{events:#?}");
    assert_eq!(events[1]["kind"], "request");
    assert_eq!(events[1]["decision"], "allow");
    assert_eq!(events[1]["mcp_method"], "notifications/initialized");
    assert_eq!(events[1]["http_status"], 202);
}

// -------------------------------------------------------------------------------------------------
// Discovery, health, readiness

#[tokio::test]
async fn protected_resource_metadata_names_the_resource_issuer_and_scopes() {
    let fx = Fixture::company_info();
    for path in [
        "/.well-known/oauth-protected-resource/mcp",
        "/.well-known/oauth-protected-resource",
    ] {
        let answer = fx.send(fx.get(path)).await;
        assert_eq!(answer.status, 200, "{path}");
        let json = answer.json();
        assert_eq!(json["resource"], "https://company-info.team-a.example.com/mcp");
        assert_eq!(json["authorization_servers"], json!([GOOGLE]));
        assert_eq!(json["scopes_supported"], json!(["confidential:read", "public:read"]));
        assert_eq!(json["bearer_methods_supported"], json!(["header"]));
    }
    assert_eq!(
        fx.resource_metadata(),
        "https://company-info.team-a.example.com/.well-known/oauth-protected-resource/mcp"
    );
}

#[tokio::test]
async fn health_and_readiness() {
    let fx = Fixture::company_info();
    let health = fx.send(fx.get("/health")).await;
    assert_eq!(health.status, 200);
    assert_eq!(health.json()["status"], "ok");
    let ready = fx.send(fx.get("/ready")).await;
    assert_eq!(ready.status, 200);
    // Ready and the policy hash, nothing else: anyone may ask.
    assert_eq!(ready.json(), json!({"status": "ready", "policyHash": fx.policy_hash()}));
    assert!(fx.policy_hash().starts_with("sha256:"), "{}", fx.policy_hash());
}

// -------------------------------------------------------------------------------------------------
// Protocol revision 2026-07-28

#[tokio::test]
async fn modern_server_discover() {
    let fx = Fixture::company_info();
    let token = fx.token(&["public:read"]);
    let answer = fx.send(fx.modern(&token, "server/discover", json!({}), None)).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let result = answer.result();
    assert_eq!(result["supportedVersions"], json!([MODERN, "2025-11-25", "2025-06-18"]));
    assert_eq!(result["resultType"], "complete");
    assert_eq!(result["serverInfo"]["name"], "palisade-server");
}

#[tokio::test]
async fn modern_tools_list_is_private_to_the_caller() {
    let fx = Fixture::company_info();
    let token = fx.token(&["public:read"]);
    let answer = fx.send(fx.modern(&token, "tools/list", json!({}), None)).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let result = answer.result();
    assert_eq!(result["cacheScope"], "private");
    assert_eq!(result["resultType"], "complete");
    assert_eq!(answer.tool_names(), ["get_public_info"]);
}

#[tokio::test]
async fn modern_mismatched_mcp_name_is_refused() {
    let fx = Fixture::company_info();
    let token = fx.token(&["public:read", "confidential:read"]);
    let call = fx.modern(
        &token,
        "tools/call",
        json!({"name": "get_public_info"}),
        Some("get_confidential_info"),
    );
    let answer = fx.send(call).await;
    assert_eq!(answer.status, 400, "{}", answer.text());
    assert_eq!(answer.rpc_code(), -32020);
    assert!(!answer.text().contains("Acme"));
}

#[tokio::test]
async fn modern_unsupported_version_is_refused() {
    let fx = Fixture::company_info();
    let token = fx.token(&["public:read"]);
    let params = json!({"_meta": {META_VERSION: "2099-01-01", META_CAPABILITIES: {}}});
    let call = fx
        .post()
        .bearer(&token)
        .set("mcp-protocol-version", "2099-01-01")
        .set("mcp-method", "tools/list")
        .json(&request("tools/list", params));
    let answer = fx.send(call).await;
    assert_eq!(answer.status, 400, "{}", answer.text());
    assert_eq!(answer.rpc_code(), -32022);
    let data = &answer.json()["error"]["data"];
    assert_eq!(data["requested"], "2099-01-01");
    assert_eq!(data["supported"], json!([MODERN, "2025-11-25", "2025-06-18"]));
}

#[tokio::test]
async fn modern_initialize_is_method_not_found() {
    let fx = Fixture::company_info();
    let token = fx.token(&["public:read"]);
    let answer = fx
        .send(fx.modern(&token, "initialize", json!({"protocolVersion": MODERN}), None))
        .await;
    assert_eq!(answer.status, 404, "{}", answer.text());
    assert_eq!(answer.rpc_code(), -32601);
}

// -------------------------------------------------------------------------------------------------
// Seed 001's access-control matrix

async fn call_tool(fx: &Fixture, token: &str, tool: &str) -> Answer {
    fx.send(fx.rpc(token, "tools/call", json!({"name": tool}))).await
}

#[tokio::test]
async fn seed_001_matrix() {
    let fx = Fixture::company_info();
    let cases: [(&[&str], &[&str]); 3] = [
        (&["public:read"], &["get_public_info"]),
        (
            &["public:read", "confidential:read"],
            &["get_confidential_info", "get_public_info"],
        ),
        (&[], &[]),
    ];
    let mut tokens = Vec::new();
    for (scopes, visible) in cases {
        let token = fx.token(scopes);
        tokens.push(token.clone());
        let mut listed = fx.send(fx.rpc(&token, "tools/list", json!({}))).await.tool_names();
        listed.sort();
        assert_eq!(listed, visible, "{scopes:?}");
        for (tool, marker, scope) in [
            (
                "get_public_info",
                "Acme Corp: public company information",
                "public:read",
            ),
            ("get_confidential_info", "strategy 2027", "confidential:read"),
        ] {
            let answer = call_tool(&fx, &token, tool).await;
            if visible.contains(&tool) {
                assert_eq!(answer.status, 200, "{scopes:?} {tool}: {}", answer.text());
                assert_eq!(answer.result()["isError"], false);
                assert!(answer.text().contains(marker), "{scopes:?} {tool}");
            } else {
                assert_eq!(answer.status, 403, "{scopes:?} {tool}: {}", answer.text());
                assert_eq!(answer.data_code(), "INSUFFICIENT_SCOPE");
                assert_eq!(answer.header("www-authenticate"), Some(scope_challenge(&fx, scope)));
                assert!(!answer.text().contains(marker));
            }
        }
    }
    let mut expired = fx.claims("alice", &["public:read", "confidential:read"]);
    expired["exp"] = json!(now() - 3600);
    let answer = call_tool(&fx, &fx.sign(&expired), "get_public_info").await;
    assert_eq!(answer.status, 401);
    assert_eq!(answer.data_code(), "TOKEN_EXPIRED");
    assert_eq!(
        answer.header("www-authenticate"),
        Some(challenge(&fx, Some("invalid_token"), "The access token has expired."))
    );
    assert_eq!(fx.authz_checks("tool", "allow"), 3.0);
    assert_eq!(fx.authz_checks("tool", "deny"), 3.0);
    assert_eq!(fx.authz_checks("list", "allow"), 3.0);
    assert_eq!(fx.auth_attempts("jwt", "failure", "token_expired"), 1.0);
    let tokens: Vec<&str> = tokens.iter().map(String::as_str).collect();
    fx.assert_audit_free_of(&tokens);
}

// -------------------------------------------------------------------------------------------------
// Helpers

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn base64_encode_standard(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .expect("base64url")
}
