//! OIDC against a real OpenID Provider on loopback: `oidc-provider@9.13.3` (Node 22), started by
//! `tests/oidc/provider.mjs` with fresh RSA and P-256 keys, two client-credentials clients and an
//! RFC 8707 resource indicator for the server's resource URI, so that it issues RFC 9068 JWT
//! access tokens (`typ: at+jwt`, RS256 for client `palisade-rs`, ES256 for `palisade-es`) whose
//! `aud` is the server's resource and whose `scope` is what the client asked for.
//!
//! The server runs the company-info sample with its Google issuer replaced by the provider
//! (`keys: {oidcDiscovery: true}`, algorithms RS256 and ES256, audience the resource, and
//! `allowInsecureHttp: true`, since the provider serves plain HTTP on loopback). The tests show:
//!
//! - the provider's tokens are accepted and their scopes decide the visible and callable tools;
//! - key rotation (the provider restarted on the same port with new keys) costs exactly one JWKS
//!   refetch, triggered by the first token with the new `kid`; after it, a token the server had
//!   verified (and cached) before the rotation is refused, since its key left the key set;
//! - with the provider down, tokens signed by the cached keys keep working, and a failed refetch
//!   changes nothing, even once the cache's TTL has run out;
//! - with the provider down from the start (no keys ever fetched), tokens get 503 with
//!   Retry-After, a flood of them costs one fetch attempt, and the server recovers by itself;
//! - a flood of tokens with made-up `kid`s (`--jwks-refetch-interval 30s`) costs the provider at
//!   most one fetch per window: every other unknown `kid` is counted `rate_limited`, and every
//!   forged token gets 401 `invalid_token`;
//! - with trace export on, the key fetch the first token waits for is a `jwks.fetch` span under
//!   its request's `authenticate` span, in the caller's trace, in a real OpenTelemetry Collector.
//!
//! Fetches are counted twice: by the server (`palisade_jwks_fetches_total{issuer,result}`) and by
//! the provider, which reports every request it serves.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use palisade_e2e::collector::TraceCollector;
use palisade_e2e::{Fixture, Server, free_port, http_client, node_modules, node22, repo_root, unix_now};
use serde_json::{Value, json};

const CLIENT_SECRET: &str = "palisade-e2e-client-secret";
/// Gets RS256 access tokens.
const RS_CLIENT: &str = "palisade-rs";
/// Gets ES256 access tokens.
const ES_CLIENT: &str = "palisade-es";
const PUBLIC_TOOL: &str = "get_public_info";
const CONFIDENTIAL_TOOL: &str = "get_confidential_info";

/// One request the provider served.
#[derive(Debug, Clone)]
struct Served {
    method: String,
    path: String,
}

/// `tests/oidc/provider.mjs` running on a port, killed on drop.
struct Provider {
    child: Child,
    /// Held open: the script exits when its stdin closes (the test process went away).
    _stdin: ChildStdin,
    issuer: String,
    /// `kid`s of its keys, by algorithm.
    kids: HashMap<String, String>,
    served: Arc<Mutex<Vec<Served>>>,
}

impl Provider {
    /// Starts the provider on `port` for `resource`, with fresh keys; retries briefly while the
    /// port is still held by a provider that was just stopped.
    fn start(port: u16, resource: &str) -> Self {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match Self::try_start(port, resource) {
                Ok(provider) => return provider,
                Err(why) if Instant::now() < deadline => {
                    eprintln!("provider did not start ({why}); retrying");
                    std::thread::sleep(Duration::from_millis(250));
                }
                Err(why) => panic!("oidc-provider did not start on port {port}: {why}"),
            }
        }
    }

    fn try_start(port: u16, resource: &str) -> Result<Self, String> {
        let mut child = Command::new(node22())
            .arg(repo_root().join("tests/oidc/provider.mjs"))
            .arg(port.to_string())
            .arg(resource)
            .arg(node_modules())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start node provider.mjs");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if std::env::var_os("PALISADE_E2E_LOGS").is_some() {
                    eprintln!("oidc-provider: {line}");
                }
            }
        });
        let served = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = mpsc::channel::<Value>();
        {
            let served = served.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    let Ok(event) = serde_json::from_str::<Value>(&line) else {
                        continue;
                    };
                    match event["event"].as_str() {
                        Some("ready") => {
                            let _ = ready_tx.send(event);
                        }
                        Some("request") => served.lock().expect("served lock").push(Served {
                            method: event["method"].as_str().unwrap_or_default().to_owned(),
                            path: event["path"].as_str().unwrap_or_default().to_owned(),
                        }),
                        _ => {}
                    }
                }
            });
        }
        let ready = wait_ready(&ready_rx, &mut child);
        let ready = match ready {
            Ok(ready) => ready,
            Err(why) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(why);
            }
        };
        let issuer = ready["issuer"].as_str().expect("issuer").to_owned();
        assert_eq!(
            issuer,
            format!("http://127.0.0.1:{port}"),
            "issuer without trailing slash"
        );
        let kids = ready["kids"]
            .as_object()
            .expect("kids")
            .iter()
            .map(|(alg, kid)| (alg.clone(), kid.as_str().expect("kid").to_owned()))
            .collect();
        Ok(Self {
            child,
            _stdin: stdin,
            issuer,
            kids,
            served,
        })
    }

    /// How many `GET <path>` it served.
    fn gets(&self, path: &str) -> usize {
        self.served
            .lock()
            .expect("served lock")
            .iter()
            .filter(|s| s.method == "GET" && s.path == path)
            .count()
    }

    /// A client-credentials access token for the resource, with these scopes.
    fn token(&self, client_id: &str, resource: &str, scopes: &[&str]) -> String {
        let body = form(&[
            ("grant_type", "client_credentials"),
            ("scope", &scopes.join(" ")),
            ("resource", resource),
        ]);
        let response = http_client()
            .post(format!("{}/token", self.issuer))
            .basic_auth(client_id, Some(CLIENT_SECRET))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .expect("token request");
        let status = response.status().as_u16();
        let body: Value = response.json().expect("token response is JSON");
        assert_eq!(status, 200, "token endpoint: {body}");
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["scope"], scopes.join(" "), "granted scopes: {body}");
        body["access_token"].as_str().expect("access_token").to_owned()
    }

    /// Stops the process and waits for it.
    fn stop(mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        self.kill();
    }
}

fn wait_ready(ready: &Receiver<Value>, child: &mut Child) -> Result<Value, String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(event) = ready.recv_timeout(Duration::from_millis(100)) {
            return Ok(event);
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("exited with {status} (PALISADE_E2E_LOGS=1 shows its log)"));
        }
    }
    Err("not ready within 20 s".into())
}

/// `application/x-www-form-urlencoded`.
fn form(pairs: &[(&str, &str)]) -> String {
    let encode = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
                b' ' => "+".to_owned(),
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// The JOSE header of a JWT.
fn jwt_header(token: &str) -> Value {
    let header = token.split('.').next().expect("header");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).expect("base64url header")).expect("JSON header")
}

/// A token that claims to come from `issuer` with a random `kid` and a random "signature".
fn forged_token(issuer: &str, resource: &str) -> String {
    let kid = format!("forged-{:032x}", rand::random::<u128>());
    let header = json!({"alg": "RS256", "typ": "at+jwt", "kid": kid});
    let now = unix_now();
    let claims = json!({
        "iss": issuer, "aud": resource, "sub": "mallory", "client_id": "mallory",
        "iat": now, "exp": now + 600, "scope": "public:read confidential:read",
    });
    let signature: Vec<u8> = (0..256).map(|_| rand::random::<u8>()).collect();
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        URL_SAFE_NO_PAD.encode(signature)
    )
}

/// The company-info sample with its Google issuer replaced by the provider on `port`, with
/// `jwksCacheTtlSeconds: ttl`.
fn fixture_for(port: u16, ttl: u32) -> (Fixture, String) {
    let fixture = Fixture::sample("company-info.yaml");
    let issuer = format!("http://127.0.0.1:{port}");
    let policy = std::fs::read_to_string(&fixture.policy_file).expect("read policy");
    let google = "- issuer: https://accounts.google.com\n";
    assert!(
        policy.contains(google),
        "the sample has a Google issuer to replace:\n{policy}"
    );
    // The provider serves plain HTTP on loopback: a development issuer, marked as such.
    let indent = policy
        .lines()
        .find(|l| l.trim_start().starts_with(google.trim_end()))
        .map_or(0, |l| l.len() - l.trim_start().len())
        + 2;
    let policy = policy.replace(
        google,
        &format!("- issuer: {issuer}\n{}allowInsecureHttp: true\n", " ".repeat(indent)),
    );
    // The issuer block as the test relies on it: discovery, RS256 and ES256, the resource as audience.
    let block: String = policy
        .split(&format!("- issuer: {issuer}\n"))
        .nth(1)
        .expect("issuer block")
        .lines()
        .take_while(|l| !l.starts_with("  - issuer:"))
        .collect::<Vec<_>>()
        .join("\n");
    for expected in [
        format!("- {}", fixture.resource),
        "- RS256".to_owned(),
        "- ES256".to_owned(),
        "oidcDiscovery".to_owned(),
    ] {
        assert!(block.contains(&expected), "issuer block lacks {expected:?}:\n{block}");
    }
    assert!(block.contains("jwksCacheTtlSeconds: 3600"), "{block}");
    // Issuers are sorted: the provider's block comes before palisade-dev's (which ignores it).
    let policy = policy.replacen("jwksCacheTtlSeconds: 3600", &format!("jwksCacheTtlSeconds: {ttl}"), 1);
    std::fs::write(&fixture.policy_file, policy).expect("write policy");
    (fixture, issuer)
}

/// The response to one MCP request: status, `WWW-Authenticate`, body.
struct Reply {
    status: u16,
    challenge: String,
    retry_after: Option<String>,
    body: Value,
}

fn mcp(server: &Server, token: &str, method: &str, params: Value) -> Reply {
    mcp_with(server, token, method, params, &[])
}

/// [`mcp`] with extra request headers.
fn mcp_with(server: &Server, token: &str, method: &str, params: Value, headers: &[(&str, &str)]) -> Reply {
    let mut request = http_client()
        .post(server.mcp_url())
        .bearer_auth(token)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-11-25");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request
        .body(json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string())
        .send()
        .expect("MCP request");
    let status = response.status().as_u16();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let text = response.text().expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Reply {
        status,
        challenge,
        retry_after,
        body,
    }
}

/// The tools `tools/list` shows this token (asserting 200).
fn visible_tools(server: &Server, token: &str) -> Vec<String> {
    let reply = mcp(server, token, "tools/list", json!({}));
    assert_eq!(reply.status, 200, "tools/list: {}", reply.body);
    let mut names: Vec<String> = reply.body["result"]["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .map(|t| t["name"].as_str().expect("name").to_owned())
        .collect();
    names.sort();
    names
}

fn metric(server: &Server, name: &str, labels: &[(&str, &str)]) -> f64 {
    server.metric(name, labels)
}

fn jwks_fetches(server: &Server, issuer: &str, result: &str) -> u64 {
    metric(
        server,
        "palisade_jwks_fetches_total",
        &[("issuer", issuer), ("result", result)],
    ) as u64
}

fn tools(names: &[&str]) -> Vec<String> {
    let mut names: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
    names.sort();
    names
}

/// (a) tokens and scopes, (b) key rotation, (c) the IdP down.
#[test]
fn provider_tokens_key_rotation_and_outage() {
    let port = free_port();
    let (fixture, issuer) = fixture_for(port, 3600);
    let resource = fixture.resource.clone();
    let provider = Provider::start(port, &resource);
    assert_eq!(provider.issuer, issuer);
    let server = Server::start(&fixture, &["--jwks-refetch-interval", "1s"]);

    // (a) Client-credentials tokens, RS256 and ES256, are accepted; scopes decide the tools.
    let public_rs = provider.token(RS_CLIENT, &resource, &["public:read"]);
    let both_es = provider.token(ES_CLIENT, &resource, &["public:read", "confidential:read"]);
    let header = jwt_header(&public_rs);
    assert_eq!(
        (header["alg"].as_str(), header["typ"].as_str(), header["kid"].as_str()),
        (Some("RS256"), Some("at+jwt"), Some(provider.kids["RS256"].as_str()))
    );
    assert_eq!(jwt_header(&both_es)["alg"], "ES256");
    assert_eq!(jwt_header(&both_es)["kid"], provider.kids["ES256"].as_str());

    assert_eq!(visible_tools(&server, &public_rs), tools(&[PUBLIC_TOOL]));
    assert_eq!(
        visible_tools(&server, &both_es),
        tools(&[PUBLIC_TOOL, CONFIDENTIAL_TOOL])
    );
    let denied = mcp(&server, &public_rs, "tools/call", json!({"name": CONFIDENTIAL_TOOL}));
    assert_eq!(denied.status, 403, "{}", denied.body);
    assert!(
        denied.challenge.contains("error=\"insufficient_scope\"") && denied.challenge.contains("confidential:read"),
        "{}",
        denied.challenge
    );
    let allowed = mcp(&server, &both_es, "tools/call", json!({"name": CONFIDENTIAL_TOOL}));
    assert_eq!(allowed.status, 200, "{}", allowed.body);
    assert!(
        allowed.body["result"]["content"][0]["text"]
            .as_str()
            .is_some_and(|t| t.contains("strategy 2027")),
        "{}",
        allowed.body
    );
    // One discovery and one JWKS fetch served every token so far.
    assert_eq!(jwks_fetches(&server, &issuer, "success"), 1);
    assert_eq!(
        (
            provider.gets("/.well-known/openid-configuration"),
            provider.gets("/jwks")
        ),
        (1, 1)
    );
    let events = server.audit_events();
    assert!(
        events.iter().any(|e| e["kind"] == "authentication"
            && e["decision"] == "success"
            && e["subject"] == RS_CLIENT
            && e["issuer"] == issuer.as_str()),
        "audit events name the client and the provider"
    );
    // A token the server verifies now, and so caches, signed by the key about to be withdrawn.
    let verified_rs = provider.token(RS_CLIENT, &resource, &["public:read"]);
    assert_eq!(visible_tools(&server, &verified_rs), tools(&[PUBLIC_TOOL]));
    assert_eq!(
        visible_tools(&server, &verified_rs),
        tools(&[PUBLIC_TOOL]),
        "from the cache"
    );
    let fetched_at = Instant::now();

    // (b) Key rotation: the provider restarts on the same port with new keys.
    let retired_rs = provider.token(RS_CLIENT, &resource, &["public:read"]); // never shown to the server
    let old_kids = provider.kids.clone();
    provider.stop();
    let provider = Provider::start(port, &resource);
    for alg in ["RS256", "ES256"] {
        assert_ne!(provider.kids[alg], old_kids[alg], "new {alg} key");
    }
    // Outside the refetch interval of the first fetch, so the unknown kid may trigger a refetch.
    std::thread::sleep(Duration::from_millis(1100).saturating_sub(fetched_at.elapsed()));
    let before = jwks_fetches(&server, &issuer, "success");
    let rotated_rs = provider.token(RS_CLIENT, &resource, &["public:read"]);
    let rotated_es = provider.token(ES_CLIENT, &resource, &["public:read", "confidential:read"]);
    let spare_rs = provider.token(RS_CLIENT, &resource, &["public:read", "confidential:read"]);
    let spare_es = provider.token(ES_CLIENT, &resource, &["public:read"]);
    assert_eq!(jwt_header(&rotated_rs)["kid"], provider.kids["RS256"].as_str());
    assert_eq!(visible_tools(&server, &rotated_rs), tools(&[PUBLIC_TOOL]));
    assert_eq!(
        jwks_fetches(&server, &issuer, "success"),
        before + 1,
        "the new kid costs exactly one refetch"
    );
    assert_eq!(
        visible_tools(&server, &rotated_es),
        tools(&[PUBLIC_TOOL, CONFIDENTIAL_TOOL]),
        "the new EC key came with the same refetch"
    );
    assert_eq!(jwks_fetches(&server, &issuer, "success"), before + 1);
    assert_eq!(jwks_fetches(&server, &issuer, "failure"), 0);
    // The new provider saw exactly that one JWKS fetch, and no discovery (its jwks_uri is cached).
    assert_eq!(
        (
            provider.gets("/.well-known/openid-configuration"),
            provider.gets("/jwks")
        ),
        (0, 1)
    );
    // A token signed by the retired key (never seen by the server) is refused.
    let retired = mcp(&server, &retired_rs, "tools/list", json!({}));
    assert_eq!(retired.status, 401, "{}", retired.body);
    assert!(
        retired.challenge.contains("error=\"invalid_token\""),
        "{}",
        retired.challenge
    );
    // A token verified (and cached) before the rotation is refused too: a cached verification
    // holds only while the key that made it is still in the issuer's key set.
    let withdrawn = mcp(&server, &verified_rs, "tools/list", json!({}));
    assert_eq!(
        withdrawn.status, 401,
        "a cached token outlived its key: {}",
        withdrawn.body
    );
    assert!(
        withdrawn.challenge.contains("error=\"invalid_token\""),
        "{}",
        withdrawn.challenge
    );
    // (Its unknown kid may or may not have caused another fetch, depending on the time since the last.)
    let successes = jwks_fetches(&server, &issuer, "success");

    // (c) The IdP goes down: tokens signed by the cached keys keep working.
    provider.stop();
    assert!(
        http_client().get(format!("{issuer}/jwks")).send().is_err(),
        "the provider is down"
    );
    assert_eq!(
        visible_tools(&server, &spare_rs),
        tools(&[PUBLIC_TOOL, CONFIDENTIAL_TOOL]),
        "a fresh token signed by a cached key, with the IdP down"
    );
    // An unknown kid makes the server try to refetch (outside the interval): the fetch fails and
    // the cached keys stay in force.
    std::thread::sleep(Duration::from_millis(1100));
    let failures = jwks_fetches(&server, &issuer, "failure");
    let forged = mcp(&server, &forged_token(&issuer, &resource), "tools/list", json!({}));
    assert_eq!(forged.status, 401, "{}", forged.body);
    assert_eq!(
        jwks_fetches(&server, &issuer, "failure"),
        failures + 1,
        "one failed refetch"
    );
    assert_eq!(
        visible_tools(&server, &spare_es),
        tools(&[PUBLIC_TOOL]),
        "cached keys still serve after a failed refetch"
    );
    assert_eq!(
        jwks_fetches(&server, &issuer, "success"),
        successes,
        "no fetch succeeded while down"
    );
    eprintln!(
        "oidc: jwks fetches success={} failure={} rate_limited={}",
        jwks_fetches(&server, &issuer, "success"),
        jwks_fetches(&server, &issuer, "failure"),
        jwks_fetches(&server, &issuer, "rate_limited")
    );
}

/// (d) A flood of made-up `kid`s costs at most one fetch per refetch interval.
#[test]
fn unknown_kid_flood_is_rate_limited() {
    const THREADS: usize = 8;
    const PER_THREAD: usize = 25;
    const FLOOD: usize = THREADS * PER_THREAD;
    let port = free_port();
    let (fixture, issuer) = fixture_for(port, 3600);
    let resource = fixture.resource.clone();
    let provider = Provider::start(port, &resource);
    let server = Server::start(&fixture, &["--jwks-refetch-interval", "30s"]);
    let window = Instant::now();

    let flood = |label: &str| {
        let statuses: Vec<(u16, String)> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..THREADS)
                .map(|_| {
                    scope.spawn(|| {
                        (0..PER_THREAD)
                            .map(|_| {
                                let reply = mcp(&server, &forged_token(&issuer, &resource), "tools/list", json!({}));
                                (reply.status, reply.challenge)
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().expect("flood thread"))
                .collect()
        });
        assert_eq!(statuses.len(), FLOOD);
        for (status, challenge) in &statuses {
            assert_eq!(*status, 401, "{label}: a forged token is refused");
            assert!(challenge.contains("error=\"invalid_token\""), "{label}: {challenge}");
        }
    };

    // A cold cache: the first forged token fetches the keys once; the others are rate-limited (or
    // wait for that very fetch).
    flood("cold flood");
    assert_eq!(
        jwks_fetches(&server, &issuer, "success"),
        1,
        "one fetch for the whole flood"
    );
    assert_eq!(jwks_fetches(&server, &issuer, "failure"), 0);
    let limited_cold = jwks_fetches(&server, &issuer, "rate_limited");
    assert!(
        limited_cold >= (FLOOD - THREADS) as u64 && limited_cold < FLOOD as u64,
        "rate_limited={limited_cold} of {FLOOD}"
    );
    assert_eq!(provider.gets("/jwks"), 1, "the IdP saw one JWKS request");

    // The real keys are cached: a genuine token costs nothing.
    let genuine = provider.token(RS_CLIENT, &resource, &["public:read"]);
    assert_eq!(visible_tools(&server, &genuine), tools(&[PUBLIC_TOOL]));

    // A warm cache: every unknown kid is rate-limited, none is fetched.
    flood("warm flood");
    assert!(
        window.elapsed() < Duration::from_secs(30),
        "still inside one refetch window"
    );
    assert_eq!(
        jwks_fetches(&server, &issuer, "success"),
        1,
        "no fetch within the window"
    );
    assert_eq!(jwks_fetches(&server, &issuer, "failure"), 0);
    assert_eq!(
        jwks_fetches(&server, &issuer, "rate_limited"),
        limited_cold + FLOOD as u64,
        "every unknown kid of the warm flood is rate-limited"
    );
    assert_eq!(
        jwks_fetches(&server, &issuer, "busy"),
        0,
        "no fetch was running, so no request was turned away as busy"
    );
    assert_eq!(
        (
            provider.gets("/.well-known/openid-configuration"),
            provider.gets("/jwks")
        ),
        (1, 1),
        "the IdP saw one discovery and one JWKS request for {} forged tokens",
        2 * FLOOD
    );
    assert_eq!(
        metric(
            &server,
            "mcp_authentication_attempts_total",
            &[("method", "jwt"), ("result", "failure"), ("reason", "unknown_kid")]
        ) as usize,
        2 * FLOOD
    );
    assert_eq!(
        visible_tools(&server, &genuine),
        tools(&[PUBLIC_TOOL]),
        "genuine tokens still work"
    );
    eprintln!(
        "oidc flood: {} forged tokens -> 401; jwks fetches success=1 rate_limited={} (cold flood {limited_cold}); IdP /jwks GETs={}",
        2 * FLOOD,
        jwks_fetches(&server, &issuer, "rate_limited"),
        provider.gets("/jwks")
    );
}

/// (c, continued) The cache's TTL runs out while the IdP is down: the stale keys keep serving.
#[test]
fn expired_cache_keeps_serving_while_the_idp_is_down() {
    const TTL: Duration = Duration::from_secs(2);
    let port = free_port();
    let (fixture, issuer) = fixture_for(port, TTL.as_secs() as u32);
    let resource = fixture.resource.clone();
    let provider = Provider::start(port, &resource);
    let server = Server::start(&fixture, &["--jwks-refetch-interval", "1s"]);
    let first = provider.token(RS_CLIENT, &resource, &["public:read"]);
    let unseen = provider.token(ES_CLIENT, &resource, &["public:read", "confidential:read"]);
    assert_eq!(visible_tools(&server, &first), tools(&[PUBLIC_TOOL]));
    let fetched_at = Instant::now();
    assert_eq!(jwks_fetches(&server, &issuer, "success"), 1);
    provider.stop();

    // Past the TTL (and the refetch interval): the next new token makes the server refetch, which
    // fails; the expired keys still verify it.
    std::thread::sleep((TTL + Duration::from_millis(300)).saturating_sub(fetched_at.elapsed()));
    let reply = mcp(&server, &unseen, "tools/call", json!({"name": CONFIDENTIAL_TOOL}));
    assert_eq!(reply.status, 200, "stale keys serve with the IdP down: {}", reply.body);
    // The refresh runs in the background (the request did not wait for it).
    let deadline = Instant::now() + Duration::from_secs(5);
    while jwks_fetches(&server, &issuer, "failure") == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(jwks_fetches(&server, &issuer, "failure"), 1, "one failed refetch");
    assert_eq!(jwks_fetches(&server, &issuer, "success"), 1);
    eprintln!(
        "oidc ttl: cache expired after {TTL:?} with the IdP down; token accepted; fetches success=1 failure={}",
        jwks_fetches(&server, &issuer, "failure")
    );
}

/// The first token of an issuer makes the server fetch its keys while the request waits: that
/// fetch is a `jwks.fetch` span (kind client) under the request's `authenticate` span, exported to
/// a real OpenTelemetry Collector in the caller's trace; a request served from the cached keys has
/// none; the provider's token is in no span.
#[test]
fn the_key_fetch_a_request_waits_for_is_a_span_of_its_trace() {
    let mut collector = TraceCollector::start();
    let port = free_port();
    let (fixture, issuer) = fixture_for(port, 3600);
    let resource = fixture.resource.clone();
    let provider = Provider::start(port, &resource);
    let endpoint = collector.grpc_endpoint.clone();
    let server = Server::start_with_env(
        &fixture,
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_SERVICE_NAME", "palisade-oidc"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    );
    let token = provider.token(RS_CLIENT, &resource, &["public:read"]);
    let list = |trace_id: &str| {
        let traceparent = format!("00-{trace_id}-b7ad6b7169203331-01");
        mcp_with(
            &server,
            &token,
            "tools/list",
            json!({}),
            &[("traceparent", &traceparent)],
        )
        .status
    };
    let (cold, warm) = ("6af7651916cd43dd8448eb211c80319c", "7af7651916cd43dd8448eb211c80319c");
    assert_eq!(list(cold), 200);
    assert_eq!(list(warm), 200);
    let spans = collector.wait_for("both requests' authentication spans", |spans| {
        [cold, warm]
            .iter()
            .all(|id| spans.iter().any(|s| s.trace_id == *id && s.name == "authenticate"))
    });
    let named = |trace_id: &str, name: &str| {
        spans
            .iter()
            .find(|s| s.trace_id == trace_id && s.name == name)
            .unwrap_or_else(|| panic!("no {name} in trace {trace_id}: {spans:#?}"))
    };
    let authenticate = named(cold, "authenticate");
    let fetch = named(cold, "jwks.fetch");
    assert_eq!(fetch.parent_span_id, authenticate.span_id);
    assert_eq!(fetch.kind, 3, "a client span");
    assert_eq!(fetch.attribute("palisade.jwks.issuer"), Some(&json!(issuer)));
    assert_eq!(fetch.attribute("palisade.jwks.outcome"), Some(&json!("success")));
    assert!(
        authenticate.start <= fetch.start && fetch.end <= authenticate.end,
        "{authenticate:#?} {fetch:#?}"
    );
    assert!(
        spans.iter().all(|s| !(s.trace_id == warm && s.name == "jwks.fetch")),
        "the cached keys need no fetch"
    );
    assert_eq!(jwks_fetches(&server, &issuer, "success"), 1);
    assert!(!collector.raw().contains(&token), "the token was exported");
}

/// The IdP is down from the start: no keys were ever fetched, so tokens get 503 with Retry-After
/// (not 401: the token may well be good), a flood costs one fetch per refetch interval, and the
/// server recovers on its own once the IdP is up.
#[test]
fn idp_down_at_start_answers_503_then_recovers() {
    const INTERVAL: Duration = Duration::from_secs(5);
    const FLOOD: usize = 30;
    let port = free_port();
    let (fixture, issuer) = fixture_for(port, 3600);
    let resource = fixture.resource.clone();
    let server = Server::start(
        &fixture,
        &["--jwks-refetch-interval", &format!("{}s", INTERVAL.as_secs())],
    );

    let first_attempt = Instant::now();
    for _ in 0..FLOOD {
        let reply = mcp(&server, &forged_token(&issuer, &resource), "tools/list", json!({}));
        assert_eq!(reply.status, 503, "no keys yet: {}", reply.body);
        assert!(reply.retry_after.is_some(), "503 carries Retry-After");
        assert!(
            reply.challenge.starts_with("Bearer resource_metadata="),
            "{}",
            reply.challenge
        );
    }
    let failures = jwks_fetches(&server, &issuer, "failure");
    assert!(
        first_attempt.elapsed() < INTERVAL,
        "the flood fits in one refetch interval"
    );
    assert_eq!(failures, 1, "{FLOOD} tokens cost one fetch attempt");

    let provider = Provider::start(port, &resource);
    let token = provider.token(RS_CLIENT, &resource, &["public:read", "confidential:read"]);
    std::thread::sleep((INTERVAL + Duration::from_millis(200)).saturating_sub(first_attempt.elapsed()));
    assert_eq!(visible_tools(&server, &token), tools(&[PUBLIC_TOOL, CONFIDENTIAL_TOOL]));
    assert_eq!(jwks_fetches(&server, &issuer, "success"), 1);
    assert_eq!(provider.gets("/jwks"), 1);
    eprintln!("oidc cold: {FLOOD} tokens with the IdP down -> 503, 1 failed fetch; recovered with 1 fetch");
}

/// Proxy mode with OAuth 2.0 client credentials: a proxy stands in front of the company-info
/// server (the upstream, which trusts the provider) and gets its own access token from the
/// provider (`palisade-rs`, scope `public:read`, RFC 8707 `resource` = the upstream's resource).
/// Callers with development tokens reach the upstream's public tool; the upstream decides on the
/// proxy's token (the provider's issuer), never a caller's; one token serves many calls.
#[test]
fn a_proxy_gets_its_own_upstream_token_with_client_credentials() {
    let port = free_port();
    let (upstream_fixture, issuer) = fixture_for(port, 3600);
    let resource = upstream_fixture.resource.clone();
    let provider = Provider::start(port, &resource);
    let upstream = Server::start(&upstream_fixture, &[]);

    let proxy_fixture = palisade_e2e::proxy_fixture(&format!(
        "- {{match: {PUBLIC_TOOL}, requiredScopes: [public:read]}}\n- {{match: {CONFIDENTIAL_TOOL}, requiredScopes: [confidential:read]}}"
    ));
    let secret_file = proxy_fixture.dir.path().join("secrets/client-secret");
    std::fs::write(&secret_file, format!("{CLIENT_SECRET}\n")).expect("write the client secret");
    let token_url = format!("{issuer}/token");
    let proxy = Server::start(
        &proxy_fixture,
        &[
            "--upstream-url",
            &upstream.mcp_url(),
            "--upstream-oauth-token-url",
            &token_url,
            "--upstream-oauth-client-id",
            RS_CLIENT,
            "--upstream-oauth-client-secret-file",
            secret_file.to_str().expect("UTF-8 path"),
            "--upstream-oauth-scope",
            "public:read",
            "--upstream-oauth-resource",
            &resource,
        ],
    );
    let caller = proxy_fixture.token("alice", &["public:read"]);
    assert_eq!(visible_tools(&proxy, &caller), tools(&[PUBLIC_TOOL]));
    for _ in 0..3 {
        let reply = mcp(
            &proxy,
            &caller,
            "tools/call",
            json!({"name": PUBLIC_TOOL, "arguments": {}}),
        );
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(reply.body["result"]["isError"], false, "{}", reply.body);
    }
    // One token for the handshake, the tool list and every call.
    let token_requests = provider
        .served
        .lock()
        .expect("served lock")
        .iter()
        .filter(|s| s.method == "POST" && s.path == "/token")
        .count();
    assert_eq!(token_requests, 1);
    // The upstream served the proxy's token (the provider's issuer), never alice's.
    let calls: Vec<Value> = upstream
        .audit_events()
        .into_iter()
        .filter(|e| e["mcp_method"] == "tools/call")
        .collect();
    assert_eq!(calls.len(), 3, "{calls:?}");
    for event in &calls {
        assert_eq!(event["issuer"], issuer.as_str(), "{event}");
        assert_eq!(event["decision"], "allow", "{event}");
        assert_ne!(event["subject"], "alice", "{event}");
    }
    let logs = proxy.logs().join("\n");
    assert!(logs.contains("got an access token for the upstream"), "{logs}");
    assert!(!logs.contains(CLIENT_SECRET), "the client secret is never logged");
}
