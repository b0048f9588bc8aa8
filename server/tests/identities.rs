//! Identities that cannot collide, through the whole server (router, authentication, evaluator,
//! audit): a binding for `alice` of issuer A is not granted to `alice` of issuer B, of an API
//! key, or of a client certificate; each gets only what its own credential carries.

mod support;

use palisade_crds::IdentitySource;
use palisade_crds::document::{Binding, KeySource};
use palisade_server::auth::api_keys::hash_key;
use serde_json::{Value, json};
use support::*;

/// Issuer A: a second HMAC issuer (the fixture writes one key for every HMAC issuer).
const ISSUER_A: &str = "https://idp-a.example.com";
const ALICE_KEY: &str = "pk_live_alice_3f9e1c7a5b2d4f6a8c0e";

/// The company-info sample plus issuer A and an API key whose subject is alice, with the
/// strategist role (both tools) bound to alice of issuer A only.
fn fixture() -> Fixture {
    Fixture::build(Sample::CompanyInfo, |policy, dir| {
        let mut issuer_a = policy
            .authentication
            .issuers
            .iter()
            .find(|i| i.issuer == DEV_ISSUER)
            .expect("the development issuer")
            .clone();
        issuer_a.issuer = ISSUER_A.into();
        issuer_a.keys = KeySource::HmacKeyFile(dir.join("secrets/idp-a/hmac-key").display().to_string());
        policy.authentication.issuers.push(issuer_a);
        policy.authentication.issuers.sort_by(|a, b| a.issuer.cmp(&b.issuer));

        let keys = dir.join("secrets/api-keys/keys.yaml");
        std::fs::create_dir_all(keys.parent().unwrap()).unwrap();
        std::fs::write(
            &keys,
            format!(
                "apiVersion: palisade.dev/v1alpha1\nkind: ApiKeyTable\nkeys:\n\
                 - {{id: alice-key, subject: alice, sha256: {}, scopes: []}}\n",
                hash_key(ALICE_KEY)
            ),
        )
        .unwrap();
        policy.authentication.api_keys_file = Some(keys.display().to_string());

        policy.bindings.push(Binding {
            role: "strategist".into(),
            subjects: vec!["alice".into()],
            groups: Vec::new(),
            service_accounts: Vec::new(),
            anonymous: false,
            source: None,
            from: Some(IdentitySource::Issuer(ISSUER_A.into())),
        });
        policy.bindings.sort();
    })
}

fn alice_of(fx: &Fixture, issuer: &str, scopes: &[&str]) -> String {
    let mut claims = fx.claims("alice", scopes);
    claims["iss"] = Value::String(issuer.into());
    fx.sign(&claims)
}

fn no_params() -> Value {
    json!({})
}

#[tokio::test]
async fn alice_of_issuer_b_gets_only_what_her_own_token_grants() {
    let fx = fixture();

    // alice of issuer A holds the strategist role: both tools, with no scope in her token.
    let of_a = alice_of(&fx, ISSUER_A, &[]);
    let answer = fx.send(fx.rpc(&of_a, "tools/list", no_params())).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.tool_names(), ["get_confidential_info", "get_public_info"]);
    let answer = fx
        .send(fx.rpc(&of_a, "tools/call", json!({"name": "get_confidential_info"})))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert!(answer.text().contains("strategy 2027"));
    fx.take_events();

    // alice of issuer B (the development issuer), same `sub`, token scope public:read: only that.
    let of_b = alice_of(&fx, DEV_ISSUER, &["public:read"]);
    let answer = fx.send(fx.rpc(&of_b, "tools/list", no_params())).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.tool_names(), ["get_public_info"]);
    let answer = fx
        .send(fx.rpc(&of_b, "tools/call", json!({"name": "get_confidential_info"})))
        .await;
    assert_eq!(answer.status, 403, "{}", answer.text());
    assert_eq!(answer.data_code(), "INSUFFICIENT_SCOPE");
    assert!(!answer.text().contains("strategy 2027"));
    // The audit events name the caller by source and subject.
    let events = fx.take_events();
    let denial = events
        .iter()
        .find(|e| e["kind"] == "authorization" && e["decision"] == "deny")
        .expect("a denial event");
    assert_eq!(denial["subject"], "alice");
    assert_eq!(denial["issuer"], DEV_ISSUER);
    assert_eq!(denial["auth_method"], "jwt");

    // alice of issuer B without scopes: nothing.
    let bare = alice_of(&fx, DEV_ISSUER, &[]);
    let answer = fx.send(fx.rpc(&bare, "tools/list", no_params())).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert!(answer.tool_names().is_empty(), "{:?}", answer.tool_names());

    // The API key whose subject is alice: nothing either.
    let answer = fx
        .send(
            fx.post()
                .set("x-api-key", ALICE_KEY)
                .json(&request("tools/list", no_params())),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert!(answer.tool_names().is_empty(), "{:?}", answer.tool_names());
    let answer = fx
        .send(
            fx.post()
                .set("x-api-key", ALICE_KEY)
                .json(&request("tools/call", json!({"name": "get_confidential_info"}))),
        )
        .await;
    assert_eq!(answer.status, 403, "{}", answer.text());
    assert_eq!(answer.data_code(), "INSUFFICIENT_SCOPE");
}
