//! The attack table against proxy mode, as a differential test: every attack of `attacks.rs`
//! that does not depend on documents is sent both to the company-info document server and to
//! the same sample in proxy mode (same issuers, roles, bindings and rules, in front of a fake
//! stdio upstream that offers the sample's two tool names). The proxy must answer exactly as the
//! document server does — HTTP status, JSON-RPC code, `error.data.code`, `WWW-Authenticate`,
//! `Retry-After`, the audit events' kind, decision and reason — and nothing it refuses may reach
//! the upstream: the upstream's record holds exactly the allowed calls, with their name and
//! arguments only.

mod support;

use serde_json::{Value, json};
use support::*;

/// One attack: how to build the request on a fixture (tokens are signed with its own key).
struct Attack {
    name: &'static str,
    build: fn(&Fixture) -> Call,
}

fn tools_list() -> Value {
    request("tools/list", json!({}))
}

fn call_tool(name: &str) -> Value {
    request("tools/call", json!({"name": name, "arguments": {}}))
}

fn public_token(fx: &Fixture) -> String {
    fx.token(&["public:read"])
}

const ATTACKS: &[Attack] = &[
    Attack {
        name: "no credentials",
        build: |fx| fx.post().json(&call_tool("get_public_info")),
    },
    Attack {
        name: "a list without credentials",
        build: |fx| fx.post().json(&tools_list()),
    },
    Attack {
        name: "alg none",
        build: |fx| {
            let claims = fx.claims("mallory", &["public:read", "confidential:read"]);
            let token = raw_jwt(&json!({"alg": "none", "typ": "JWT"}), &claims, b"");
            fx.post().bearer(&token).json(&call_tool("get_confidential_info"))
        },
    },
    Attack {
        name: "signed with another key",
        build: |fx| {
            let claims = fx.claims("mallory", &["public:read", "confidential:read"]);
            let token = sign_hs256(&claims, b"not-the-server-s-key-0123456789abcdef");
            fx.post().bearer(&token).json(&call_tool("get_confidential_info"))
        },
    },
    Attack {
        name: "expired",
        build: |fx| {
            let mut claims = fx.claims("alice", &["public:read"]);
            claims["iat"] = json!(now() - 3720);
            claims["exp"] = json!(now() - 120);
            fx.post().bearer(&fx.sign(&claims)).json(&call_tool("get_public_info"))
        },
    },
    Attack {
        name: "another audience",
        build: |fx| {
            let mut claims = fx.claims("alice", &["public:read"]);
            claims["aud"] = json!("https://other.example.com/mcp");
            fx.post().bearer(&fx.sign(&claims)).json(&call_tool("get_public_info"))
        },
    },
    Attack {
        name: "unknown issuer",
        build: |fx| {
            let mut claims = fx.claims("alice", &["public:read"]);
            claims["iss"] = json!("https://evil.example.com");
            fx.post().bearer(&fx.sign(&claims)).json(&call_tool("get_public_info"))
        },
    },
    Attack {
        name: "oversize token",
        build: |fx| {
            let mut claims = fx.claims("alice", &["public:read"]);
            claims["padding"] = json!("x".repeat(9 * 1024));
            fx.post().bearer(&fx.sign(&claims)).json(&call_tool("get_public_info"))
        },
    },
    Attack {
        name: "token in the query string",
        build: |fx| {
            let token = public_token(fx);
            fx.post()
                .uri(&format!("/mcp?access_token={token}"))
                .json(&call_tool("get_public_info"))
        },
    },
    Attack {
        name: "two Authorization headers",
        build: |fx| {
            let both = fx.token(&["public:read", "confidential:read"]);
            fx.post()
                .add("authorization", &format!("Bearer {}", public_token(fx)))
                .add("authorization", &format!("Bearer {both}"))
                .json(&call_tool("get_confidential_info"))
        },
    },
    Attack {
        name: "Basic authorization",
        build: |fx| {
            fx.post()
                .set("authorization", "Basic YWxpY2U6c2VjcmV0")
                .json(&call_tool("get_public_info"))
        },
    },
    Attack {
        name: "a tool beyond the token's scopes",
        build: |fx| {
            fx.post()
                .bearer(&public_token(fx))
                .json(&call_tool("get_confidential_info"))
        },
    },
    Attack {
        name: "a tool nobody offers",
        build: |fx| fx.post().bearer(&public_token(fx)).json(&call_tool("rm")),
    },
    Attack {
        name: "a name that only looks allowed (case)",
        build: |fx| fx.post().bearer(&public_token(fx)).json(&call_tool("Get_Public_Info")),
    },
    Attack {
        name: "a name that only looks allowed (trailing space)",
        build: |fx| fx.post().bearer(&public_token(fx)).json(&call_tool("get_public_info ")),
    },
    Attack {
        name: "a name that only looks allowed (homoglyph)",
        build: |fx| fx.post().bearer(&public_token(fx)).json(&call_tool("get_publіc_info")),
    },
    Attack {
        name: "the allowed name and a denied one as duplicate keys",
        build: |fx| {
            fx.post().bearer(&public_token(fx)).body(
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_public_info","name":"get_confidential_info","arguments":{}}}"#,
            )
        },
    },
    Attack {
        name: "a name that is not a string",
        build: |fx| {
            fx.post()
                .bearer(&public_token(fx))
                .json(&request("tools/call", json!({"name": ["get_public_info"]})))
        },
    },
    Attack {
        name: "a batch",
        build: |fx| {
            fx.post().bearer(&public_token(fx)).json(&json!([
                call_tool("get_public_info"),
                call_tool("get_confidential_info")
            ]))
        },
    },
    Attack {
        name: "invalid JSON",
        build: |fx| {
            fx.post()
                .bearer(&public_token(fx))
                .body(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call""#)
        },
    },
    Attack {
        name: "a wrong content type",
        build: |fx| {
            fx.post()
                .bearer(&public_token(fx))
                .set("content-type", "text/plain")
                .json(&call_tool("get_public_info"))
        },
    },
    Attack {
        name: "an HTML-only Accept",
        build: |fx| {
            fx.post()
                .bearer(&public_token(fx))
                .set("accept", "text/html")
                .json(&call_tool("get_public_info"))
        },
    },
    Attack {
        name: "a foreign Host",
        build: |fx| {
            fx.post()
                .bearer(&public_token(fx))
                .set("host", "evil.example.com")
                .json(&call_tool("get_public_info"))
        },
    },
    Attack {
        name: "a foreign Origin",
        build: |fx| {
            fx.post()
                .bearer(&public_token(fx))
                .set("origin", "https://evil.example.com")
                .json(&call_tool("get_public_info"))
        },
    },
    Attack {
        name: "GET on the MCP endpoint",
        build: |fx| fx.get("/mcp").bearer(&public_token(fx)),
    },
    Attack {
        name: "an unknown method",
        build: |fx| {
            fx.post()
                .bearer(&public_token(fx))
                .json(&request("sampling/createMessage", json!({})))
        },
    },
    Attack {
        name: "a notification",
        build: |fx| {
            fx.post()
                .bearer(&public_token(fx))
                .json(&json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 1}}))
        },
    },
];

/// What a caller and the audit see of one answer.
#[derive(Debug, PartialEq)]
struct Observed {
    status: u16,
    rpc_code: Option<i64>,
    data_code: Option<Value>,
    challenge: Option<String>,
    retry_after: Option<String>,
    /// `(kind, decision, reason)` of each audit event.
    audit: Vec<(Value, Value, Value)>,
}

async fn observe(fx: &Fixture, call: Call) -> Observed {
    let answer = fx.send(call).await;
    let body = serde_json::from_slice::<Value>(&answer.body).unwrap_or(Value::Null);
    Observed {
        status: answer.status,
        rpc_code: body.pointer("/error/code").and_then(Value::as_i64),
        data_code: body.pointer("/error/data/code").cloned(),
        challenge: answer.header("www-authenticate"),
        retry_after: answer.header("retry-after"),
        audit: fx
            .take_events()
            .iter()
            .map(|e| (e["kind"].clone(), e["decision"].clone(), e["reason"].clone()))
            .collect(),
    }
}

#[tokio::test]
async fn every_attack_is_answered_by_the_proxy_exactly_as_by_the_document_server_and_never_reaches_the_upstream() {
    let documents = Fixture::company_info();
    let proxy = Fixture::company_info_proxy();
    proxy.upstream_ready().await;
    assert_eq!(documents.resource(), proxy.resource(), "one sample, one resource");

    for attack in ATTACKS {
        let expected = observe(&documents, (attack.build)(&documents)).await;
        let seen = observe(&proxy, (attack.build)(&proxy)).await;
        assert_eq!(seen, expected, "{}", attack.name);
        assert!(
            expected.status >= 400 || expected.rpc_code.is_some() || expected.status == 202,
            "{}: the attack was refused ({expected:?})",
            attack.name
        );
        let tokens = proxy.key_forms();
        for line in proxy.audit_lines() {
            assert!(
                !tokens.iter().any(|k| line.contains(k.as_str())),
                "{}: {line}",
                attack.name
            );
        }
    }
    assert!(
        proxy.upstream_received().is_empty(),
        "a refused request reached the upstream: {:?}",
        proxy.upstream_received()
    );

    // The control: an allowed call reaches the upstream, with its name and arguments only.
    let token = proxy.token(&["public:read"]);
    let call = proxy.post().bearer(&token).json(&request(
        "tools/call",
        json!({"name": "get_public_info", "arguments": {"q": 1}, "_meta": {"progressToken": "t"}}),
    ));
    let answer = proxy.send(call).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.result()["content"][0]["text"], "from the upstream");
    let received = proxy.upstream_received();
    assert_eq!(received.len(), 1, "{received:?}");
    assert_eq!(received[0]["method"], "tools/call");
    assert_eq!(
        received[0]["params"],
        json!({"name": "get_public_info", "arguments": {"q": 1}})
    );
    assert!(
        !received[0].to_string().contains(&token),
        "the caller's token reached the upstream"
    );
}
