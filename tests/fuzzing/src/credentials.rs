//! The `credential` target: a bearer token or an API key, as the server's authenticator sees it
//! after the HTTP layer took it from a header, against a policy with a development HMAC issuer
//! and an API-key table.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use palisade_crds::document::PolicyDocument;
use palisade_server::auth::jwks::{FetchObserver, JwksRegistry};
use palisade_server::auth::{AuthSettings, Authenticator, Credential, LoadContext};

/// The HMAC key of the fuzz issuer. The committed seed tokens (`fuzz/corpus/credential/`) are
/// signed with it, so the fuzzer starts from tokens that verify.
pub const HMAC_KEY: &str = "palisade-fuzzing-hmac-key-32-bytes!";

/// The API key whose SHA-256 the fuzz table holds.
pub const API_KEY: &str = "palisade-fuzzing-api-key";

/// An instant inside every seed token's lifetime (their `exp` is 2100-01-01).
const NOW: u64 = 1_893_456_000;

struct Fixture {
    runtime: tokio::runtime::Runtime,
    authenticator: Authenticator,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("palisade-fuzzing-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("fixture directory");
        let key_file = dir.join("hmac-key");
        std::fs::write(&key_file, HMAC_KEY).expect("HMAC key file");
        let table = dir.join("api-keys.yaml");
        std::fs::write(
            &table,
            format!(
                "apiVersion: palisade.dev/v1alpha1\nkind: ApiKeyTable\nkeys:\n- id: fuzz\n  sha256: {}\n  subject: fuzz-bot\n  roles: [reader]\n  enabled: true\n",
                api_key_sha256()
            ),
        )
        .expect("API-key table");
        let document = PolicyDocument::from_yaml(&policy(&key_file, &table)).expect("the fixture policy loads");
        let _ = rustls::crypto::ring::default_provider().install_default();
        let registry = JwksRegistry::default();
        let http = reqwest::Client::builder().build().expect("HTTP client");
        let observer: FetchObserver = Arc::new(|_, _| {});
        let authenticator = Authenticator::load(
            &document.authentication,
            &LoadContext {
                registry: &registry,
                http: &http,
                observer,
                settings: AuthSettings::default(),
                service_account_issuer: Default::default(),
            },
        )
        .expect("the fixture authenticator loads");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        Fixture { runtime, authenticator }
    })
}

fn api_key_sha256() -> String {
    palisade_server::auth::api_keys::hash_key(API_KEY)
}

fn policy(key_file: &Path, table: &Path) -> String {
    format!(
        r"apiVersion: palisade.dev/v1alpha1
kind: PolicyDocument
metadata:
  server: fuzz/fuzz
mode: Enforce
authentication:
  resource: https://fuzz.example/mcp
  allowAnonymous: false
  leewaySeconds: 60
  apiKeysFile: {table}
  issuers:
  - issuer: palisade-fuzz
    audiences: [https://fuzz.example/mcp]
    algorithms: [HS256]
    keys:
      hmacKeyFile: {key}
    claims:
      subject: sub
      scopes: scope
      roles: roles
      groups: groups
",
        table = table.display(),
        key = key_file.display()
    )
}

/// Authenticates the input as a bearer token and as an API key, twice each: the second answer
/// (from the verified-token cache when the first succeeded) must be the first one.
pub fn credential(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let fixture = fixture();
    for credential in [Credential::Bearer(text), Credential::ApiKey(text)] {
        let first = fixture
            .runtime
            .block_on(fixture.authenticator.authenticate(credential, NOW, None));
        let second = fixture
            .runtime
            .block_on(fixture.authenticator.authenticate(credential, NOW, None));
        match (&first, &second) {
            (Ok(a), Ok(b)) => assert_eq!(a.identity, b.identity, "a cached verification changed the identity"),
            (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "a refusal changed on retry"),
            _ => panic!("the same credential was accepted once and refused once: {first:?} / {second:?}"),
        }
    }
}

/// Whether `token` authenticates as a bearer token against the fixture (the tests check that
/// the committed seeds start from a token that verifies).
pub fn bearer_is_accepted(token: &str) -> bool {
    let fixture = fixture();
    fixture
        .runtime
        .block_on(fixture.authenticator.authenticate(Credential::Bearer(token), NOW, None))
        .is_ok()
}
