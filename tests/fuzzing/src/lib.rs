//! The fuzz targets' entry points. `fuzz/` (cargo-fuzz, nightly, run by `make fuzz`) calls each
//! one with libFuzzer's inputs; `tests/replay.rs` calls them with every committed seed and every
//! input that once crashed (`fuzz/regressions/<target>/`), in `make test`.
//!
//! Each entry point feeds untrusted bytes to one parser the way the server or the operator does,
//! and checks the invariants that must hold for any input (round trips, decisions that agree).
//! A panic, an abort or a failed assertion is a crash.

#![forbid(unsafe_code)]

mod credentials;

use palisade_crds::compile::CompileOptions;
use palisade_crds::document::{Claims, PolicyDocument};
use palisade_crds::manifests::Manifests;
use palisade_crds::verdicts::validate_all;
use palisade_crds::{Identity, IdentitySource, Policy};
use palisade_server::auth::claims;
use palisade_server::documents::{is_valid_document_name, parse_resource_uri, resource_uri};
use palisade_server::mcp::jsonrpc::{self, Incoming};
use palisade_server::mcp::protocol::{self, RoutingHeaders};

pub use credentials::{API_KEY, bearer_is_accepted, credential};

/// A fuzz target's entry point: any bytes in, a panic on a broken invariant.
pub type Entry = fn(&[u8]);

/// The fuzz targets, by the name of their binary in `fuzz/fuzz_targets/` and corpus directory.
pub const TARGETS: &[(&str, Entry)] = &[
    ("jsonrpc_message", jsonrpc_message),
    ("routing_headers", routing_headers),
    ("credential", credential),
    ("jwt_claims", jwt_claims),
    ("policy_document", policy_document),
    ("compile_manifests", compile_manifests),
    ("document_names", document_names),
];

/// A request body as `POST /mcp` reads it: one JSON-RPC message. Whatever the body, the answer
/// is one message, and an error answer serializes.
pub fn jsonrpc_message(data: &[u8]) {
    match jsonrpc::parse(data) {
        Ok(Incoming::Request { method, .. } | Incoming::Notification { method }) => {
            assert!(!method.is_empty(), "a request without a method was accepted");
        }
        Ok(Incoming::Response) => {}
        Err(invalid) => {
            let answer = jsonrpc::error(&invalid.id, invalid.code, &invalid.message, None);
            serde_json::to_vec(&answer).expect("an error answer serializes");
        }
    }
}

/// The 2026-07-28 routing headers (`MCP-Protocol-Version`, `Mcp-Method`, `Mcp-Name`) against
/// the body they must agree with. The input is the three header values and the body, separated
/// by newlines (a header value cannot hold one).
pub fn routing_headers(data: &[u8]) {
    let mut parts = data.splitn(4, |b| *b == b'\n');
    let (Some(version), Some(method), Some(name), Some(body)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return;
    };
    let headers = RoutingHeaders {
        protocol_version: header_value(version),
        method: header_value(method),
        name: header_value(name),
    };
    if let Ok(Incoming::Request { method, params, .. }) = jsonrpc::parse(body)
        && let Err(rejection) = protocol::select(&method, &params, headers)
    {
        assert!(
            (400..500).contains(&rejection.status),
            "a header mismatch is the client's error, got {}",
            rejection.status
        );
    }
}

/// A header's value; an empty one counts as absent.
fn header_value(bytes: &[u8]) -> Option<&str> {
    std::str::from_utf8(bytes).ok().filter(|s| !s.is_empty())
}

/// Verified JWT claims to an identity, with the default claim names and with names that point
/// at the same claim twice, reading the same claim for argument rules too.
pub fn jwt_claims(data: &[u8]) {
    let Ok(serde_json::Value::Object(map)) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let source = || IdentitySource::Issuer("https://issuer.example".into());
    let _ = claims::identity(&map, &Claims::default(), source(), &[]);
    let same = Claims {
        subject: "x".into(),
        scopes: "x".into(),
        roles: "x".into(),
        groups: "x".into(),
        kubernetes_service_account: true,
    };
    let identity = claims::identity(&map, &same, source(), &["x".to_owned()]);
    if let Ok(identity) = identity {
        assert_eq!(identity.source, Some(source()), "an identity lost its source");
        assert!(
            identity.claims.iter().all(|(_, values)| !values.is_empty()
                && values.len() <= claims::MAX_CLAIM_VALUES
                && values.iter().all(|v| v.len() <= claims::MAX_CLAIM_VALUE_LEN)),
            "rule claims are bounded"
        );
    }
}

/// A mounted PolicyDocument as the server loads it. A document the evaluator accepts writes
/// back to YAML that loads to the same policy (the hash the pods report is stable).
pub fn policy_document(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(document) = PolicyDocument::from_yaml(text) else {
        return;
    };
    let Ok(policy) = Policy::new(document) else {
        return;
    };
    let written = policy.document().to_yaml();
    let again = PolicyDocument::from_yaml(&written).expect("a loaded policy writes back to YAML that loads");
    let again = Policy::new(again).expect("a written policy is valid again");
    assert_eq!(policy.hash(), again.hash(), "the policy hash changed in a round trip");
    for identity in [Identity::anonymous(), Identity::with_scopes(["docs:read", "*"])] {
        let access = policy.access(&identity);
        let listed = access.visible_tools().count();
        assert!(listed <= policy.tools().len(), "more tools listed than defined");
    }
}

/// McpServer and McpAccessPolicy manifests as `palisade-server policy compile` and the
/// operator read them: every server validated with the policies that bind it.
pub fn compile_manifests(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut manifests = Manifests::default();
    if manifests.add_yaml(text, "fuzz.yaml", "default").is_err() {
        return;
    }
    let verdicts = validate_all(&manifests, &CompileOptions::default());
    for valid in &verdicts.valid {
        let yaml = valid.document().to_yaml();
        let document = PolicyDocument::from_yaml(&yaml).expect("a compiled policy loads");
        Policy::new(document).expect("a compiled policy is valid in the server");
    }
}

/// Document names and resource URIs (`resources/read`): a URI that parses names a valid
/// document, and writing it back parses to the same pair.
pub fn document_names(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if is_valid_document_name(text) {
        assert!(
            !text.contains('/') && text != "." && text != "..",
            "a path was a valid name: {text:?}"
        );
    }
    if let Ok((collection, name)) = parse_resource_uri(text) {
        assert!(is_valid_document_name(&name));
        let again = parse_resource_uri(&resource_uri(&collection, &name)).expect("a written URI parses");
        assert_eq!(again, (collection, name), "a resource URI round trip changed it");
    }
}
