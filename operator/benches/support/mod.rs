//! Synthetic McpServers and McpAccessPolicies shaped like the company-info sample, for the
//! reconcile benchmark and the cache-memory example. Every generated server validates: the
//! policies' tests hold by construction.
//! Shared by `benches/reconcile.rs` and `examples/cache_memory.rs`, which each use part of it.

#![allow(dead_code)]

use palisade_crds::{McpAccessPolicy, McpServer};
use serde_json::{Value, json};

/// The shape of one synthetic McpServer and of the policies that target it.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    /// Document collections (`c0`, `c1`, …), inline, one small document each.
    pub collections: usize,
    /// Tools (`tool_000`, …), round-robin over the collections.
    pub tools: usize,
    /// JWT issuers.
    pub issuers: usize,
    /// Policies per server.
    pub policies: usize,
    /// Roles per policy.
    pub roles: usize,
    /// Tool rules per policy.
    pub rules: usize,
    /// Bindings per policy.
    pub bindings: usize,
    /// Tests per policy.
    pub tests: usize,
}

/// The size the issue names for the cache: 2 collections, 4 tools, 2 issuers; one policy of 4
/// roles, 4 rules, 2 bindings and 3 tests.
pub const CACHE: Shape = Shape {
    collections: 2,
    tools: 4,
    issuers: 2,
    policies: 1,
    roles: 4,
    rules: 4,
    bindings: 2,
    tests: 3,
};

/// A larger server: 50 tools over 10 collections, 3 policies of 50 roles each.
pub const LARGE: Shape = Shape {
    collections: 10,
    tools: 50,
    issuers: 2,
    policies: 3,
    roles: 50,
    rules: 50,
    bindings: 50,
    tests: 5,
};

fn tool(k: usize) -> String {
    format!("tool_{k:03}")
}

fn scope(collection: usize) -> String {
    format!("c{collection}:read")
}

fn metadata(kind: &str, name: &str, namespace: &str, i: usize) -> Value {
    json!({
        "name": name,
        "namespace": namespace,
        "uid": format!("{:08x}-0000-4000-8000-{:012x}", i, i),
        "resourceVersion": format!("{}", 100_000 + i),
        "generation": 1,
        "creationTimestamp": "2026-11-22T00:00:00Z",
        "labels": {"app.kubernetes.io/part-of": "bench", "team": format!("team-{}", i % 20)},
        "annotations": {
            "owner": format!("team-{}@example.com", i % 20),
            "kubectl.kubernetes.io/last-applied-configuration":
                format!("{{\"apiVersion\":\"palisade.dev/v1alpha1\",\"kind\":\"{kind}\",\"metadata\":{{\"name\":\"{name}\",\"namespace\":\"{namespace}\"}}}}"),
        },
    })
}

/// Server number `i` in `namespace`, named `server-{i}`.
pub fn server(shape: &Shape, i: usize, namespace: &str) -> McpServer {
    let name = format!("server-{i}");
    let documents: Vec<Value> = (0..shape.collections)
        .map(|c| {
            json!({
                "collection": format!("c{c}"),
                "description": format!("Collection {c} of {name}"),
                "inline": [{"name": format!("doc-{c}.md"), "content": format!("# Collection {c}\n\nSome text of {name}.\n")}],
            })
        })
        .collect();
    let tools: Vec<Value> = (0..shape.tools)
        .map(|k| {
            json!({
                "name": tool(k),
                "description": format!("Reads collection c{}", k % shape.collections),
                "collection": format!("c{}", k % shape.collections),
                "action": if k % 2 == 0 { "readAll" } else { "get" },
            })
        })
        .collect();
    let issuers: Vec<Value> = (0..shape.issuers)
        .map(|n| {
            json!({
                "issuer": format!("https://issuer-{n}.example.com"),
                "audiences": [format!("https://{name}.{namespace}.example.com/mcp")],
                "jwksUri": format!("https://issuer-{n}.example.com/.well-known/jwks.json"),
            })
        })
        .collect();
    let object = json!({
        "apiVersion": "palisade.dev/v1alpha1",
        "kind": "McpServer",
        "metadata": metadata("McpServer", &name, namespace, i),
        "spec": {
            "replicas": 2,
            "documents": documents,
            "tools": tools,
            "auth": {"resource": format!("https://{name}.{namespace}.example.com/mcp"), "issuers": issuers},
            "serviceAccount": {"annotations": {"iam.gke.io/gcp-service-account": format!("{name}@proj.iam.gserviceaccount.com")}},
        },
    });
    serde_json::from_value(object).expect("synthetic McpServer")
}

/// The first issuer of every synthetic server, whose groups the bindings name (a server has
/// several issuers, so bindings say which).
const ISSUER_0: &str = "https://issuer-0.example.com";

/// Policy number `p` of server `i` (`server-{i}-access-{p}`). Policy `p` holds the rules of the
/// tools `k` with `k % policies == p` (at most `rules`), each requiring `c{k % collections}:read`;
/// role `j` grants `c{j % collections}:read` and binding `j` gives it to group `g{j}`.
pub fn policy(shape: &Shape, i: usize, p: usize, namespace: &str) -> McpAccessPolicy {
    let name = format!("server-{i}-access-{p}");
    let role = |j: usize| format!("p{p}-role-{j}");
    let roles: Vec<Value> = (0..shape.roles)
        .map(|j| json!({"name": role(j), "description": format!("Role {j}"), "scopes": [scope(j % shape.collections)]}))
        .collect();
    let mine: Vec<usize> = (0..shape.tools)
        .filter(|k| k % shape.policies == p)
        .take(shape.rules)
        .collect();
    let rules: Vec<Value> = mine
        .iter()
        .map(|&k| json!({"match": tool(k), "requiredScopes": [scope(k % shape.collections)]}))
        .collect();
    let bindings: Vec<Value> = (0..shape.bindings)
        .map(|j| json!({"role": role(j % shape.roles), "issuer": ISSUER_0, "groups": [format!("g{j}")]}))
        .collect();
    let tests: Vec<Value> = (0..shape.tests)
        .map(|t| {
            let k = mine[t % mine.len()];
            let c = k % shape.collections;
            let mut test = json!({
                "name": format!("scope {} calls {}", scope(c), tool(k)),
                "identity": {"issuer": ISSUER_0, "subject": format!("user-{t}"), "scopes": [scope(c)]},
                "allowed": [tool(k)],
            });
            if let Some(&other) = mine.iter().find(|&&o| o % shape.collections != c) {
                test["denied"] = json!([tool(other)]);
            }
            if t % 3 == 2 {
                test["name"] = json!(format!("nobody calls {}", tool(k)));
                test["identity"] = json!({"issuer": ISSUER_0, "subject": format!("user-{t}")});
                test["allowed"] = json!([]);
                test["denied"] = json!([tool(k)]);
            }
            test
        })
        .collect();
    let object = json!({
        "apiVersion": "palisade.dev/v1alpha1",
        "kind": "McpAccessPolicy",
        "metadata": metadata("McpAccessPolicy", &name, namespace, i * 8 + p),
        "spec": {
            "targetRefs": [{"name": format!("server-{i}")}],
            "roles": roles,
            "tools": rules,
            "bindings": bindings,
            "mode": "Enforce",
            "tests": tests,
        },
    });
    serde_json::from_value(object).expect("synthetic McpAccessPolicy")
}
