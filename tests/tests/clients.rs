//! Seed 001's access matrix through real MCP clients: the official Python SDK (`mcp==2.3.0`, in
//! both its default `auto` mode, which speaks the stateless 2026-07-28 revision after a
//! `server/discover` probe, and its `legacy` mode, the `initialize` handshake) and the official
//! TypeScript SDK (`@modelcontextprotocol/sdk@1.32.2`, `initialize` at 2025-11-25).
//!
//! Each client is a small script (`tests/clients/`) that connects with a static bearer header (no
//! OAuth provider), lists and calls the tools, lists and reads the resources, and prints one JSON
//! report of what it saw, including every HTTP exchange. The tests assert on those reports:
//!
//! | token scopes                          | tools visible | calls                         | resources        |
//! |---------------------------------------|---------------|-------------------------------|------------------|
//! | `public:read`                         | public        | public ok, confidential 403   | public.md        |
//! | `public:read confidential:read`       | both          | both ok (confidential text)   | both             |
//! | none                                  | none          | both 403                      | none             |
//! | `public:read`, expired an hour ago    | -             | refused at connect with 401   | -                |
//!
//! A refusal is HTTP 403 with `WWW-Authenticate: Bearer error="insufficient_scope",
//! scope="<missing>"`; the Python SDK raises `MCPError` with the JSON-RPC error of the body, the
//! TypeScript SDK `StreamableHTTPError` whose `code` is the HTTP status.

use palisade_e2e::clients::{Run, Sdk, run};
use palisade_e2e::{Fixture, Server};

const PUBLIC_TOOL: &str = "get_public_info";
const CONFIDENTIAL_TOOL: &str = "get_confidential_info";
const PUBLIC_URI: &str = "palisade://public/public.md";
const CONFIDENTIAL_URI: &str = "palisade://confidential/confidential.md";
const PUBLIC_TEXT: &str = "# Acme Corp: public company information";
const CONFIDENTIAL_TEXT: &str = "# Acme Corp: strategy 2027 (CONFIDENTIAL)";

fn seed_001() -> (Fixture, Server) {
    let fixture = Fixture::sample("company-info.yaml");
    let server = Server::start(&fixture, &[]);
    (fixture, server)
}

/// Seed 001's access matrix through one client.
fn access_matrix(sdk: Sdk) {
    let (fixture, server) = seed_001();
    let mcp_url = server.mcp_url();

    // public:read: the public tool and document only.
    let token = fixture.token("alice", &["public:read"]);
    let seen = run(sdk, &server, &token, "scopes [public:read]");
    seen.connected();
    seen.only_mcp_endpoint(&mcp_url);
    seen.tools(&[PUBLIC_TOOL]);
    seen.allowed(seen.get(&format!("/calls/{PUBLIC_TOOL}")), PUBLIC_TOOL, PUBLIC_TEXT);
    seen.refused(
        seen.get(&format!("/calls/{CONFIDENTIAL_TOOL}")),
        CONFIDENTIAL_TOOL,
        "confidential:read",
    );
    seen.resources(&[PUBLIC_URI]);
    seen.allowed(&seen.report["reads"][PUBLIC_URI], PUBLIC_URI, PUBLIC_TEXT);
    seen.refused(
        &seen.report["reads"][CONFIDENTIAL_URI],
        CONFIDENTIAL_URI,
        "confidential:read",
    );

    // Both scopes: everything, including the confidential text.
    let token = fixture.token("bob", &["public:read", "confidential:read"]);
    let seen = run(sdk, &server, &token, "scopes [public:read, confidential:read]");
    seen.connected();
    seen.only_mcp_endpoint(&mcp_url);
    seen.tools(&[PUBLIC_TOOL, CONFIDENTIAL_TOOL]);
    seen.allowed(seen.get(&format!("/calls/{PUBLIC_TOOL}")), PUBLIC_TOOL, PUBLIC_TEXT);
    seen.allowed(
        seen.get(&format!("/calls/{CONFIDENTIAL_TOOL}")),
        CONFIDENTIAL_TOOL,
        CONFIDENTIAL_TEXT,
    );
    seen.resources(&[PUBLIC_URI, CONFIDENTIAL_URI]);
    seen.allowed(&seen.report["reads"][PUBLIC_URI], PUBLIC_URI, PUBLIC_TEXT);
    seen.allowed(
        &seen.report["reads"][CONFIDENTIAL_URI],
        CONFIDENTIAL_URI,
        CONFIDENTIAL_TEXT,
    );

    // No scopes: connected, but nothing visible and everything refused.
    let token = fixture.token("charlie", &[]);
    let seen = run(sdk, &server, &token, "scopes []");
    seen.connected();
    seen.only_mcp_endpoint(&mcp_url);
    seen.tools(&[]);
    seen.refused(seen.get(&format!("/calls/{PUBLIC_TOOL}")), PUBLIC_TOOL, "public:read");
    seen.refused(
        seen.get(&format!("/calls/{CONFIDENTIAL_TOOL}")),
        CONFIDENTIAL_TOOL,
        "confidential:read",
    );
    seen.resources(&[]);
    seen.refused(&seen.report["reads"][PUBLIC_URI], PUBLIC_URI, "public:read");
    seen.refused(
        &seen.report["reads"][CONFIDENTIAL_URI],
        CONFIDENTIAL_URI,
        "confidential:read",
    );

    // Expired: refused at connect with 401 invalid_token, and no OAuth flow.
    let token = fixture.sign(&fixture.claims("charlie", &["public:read"], -3600));
    let seen = run(sdk, &server, &token, "expired token");
    expired(&seen, &mcp_url);
}

fn expired(run: &Run, mcp_url: &str) {
    run.check(run.get("/fatal").is_null(), "the client script failed");
    run.check(run.get("/connected") == false, "an expired token must not connect");
    run.only_mcp_endpoint(mcp_url);
    let exchanges = run.get("/exchanges").as_array().cloned().unwrap_or_default();
    run.check(
        exchanges.iter().all(|e| e["status"] == 401),
        "every exchange with an expired token should be answered 401",
    );
    let connect_methods: Vec<&str> = exchanges.iter().filter_map(|e| e["rpc"].as_str()).collect();
    let expected: &[&str] = match run.sdk {
        // `auto` probes `server/discover`; any JSON-RPC error falls back to `initialize`.
        Sdk::PythonAuto => &["server/discover", "initialize"],
        Sdk::PythonLegacy | Sdk::TypeScript => &["initialize"],
    };
    run.check(
        connect_methods == expected,
        &format!("the client should try {expected:?} and stop"),
    );
    let error = &run.report["connectError"];
    run.check(error["httpStatus"] == 401, "the connect error should come from a 401");
    let challenge = error["wwwAuthenticate"].as_str().unwrap_or_default();
    run.check(
        challenge.starts_with("Bearer resource_metadata=") && challenge.contains(r#"error="invalid_token""#),
        "WWW-Authenticate should carry resource_metadata and error=\"invalid_token\"",
    );
    let rpc = run.rpc_error(error);
    run.check(
        rpc["code"] == -32001 && rpc["data"]["code"] == "TOKEN_EXPIRED",
        "the JSON-RPC error should be -32001 TOKEN_EXPIRED",
    );
    run.check(
        rpc["message"].as_str().unwrap_or_default().contains("expired"),
        "the message should say the token expired",
    );
}

#[test]
fn python_sdk_auto_mode_sees_seed_001_access_matrix() {
    access_matrix(Sdk::PythonAuto);
}

#[test]
fn python_sdk_legacy_mode_sees_seed_001_access_matrix() {
    access_matrix(Sdk::PythonLegacy);
}

#[test]
fn typescript_sdk_sees_seed_001_access_matrix() {
    access_matrix(Sdk::TypeScript);
}
