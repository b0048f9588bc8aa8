//! One bad-input case per CEL rule of both CRDs, as a JSON merge patch (RFC 7386) on the
//! company-info sample, with the message the rule gives. Shared by the offline test
//! (`crds/tests/cel_table.rs`, kube's `validate_cel`) and the cluster suite (the API server
//! itself, `tests/cluster/tests/cases/api.rs`): one table, run both ways, the same message.

use serde_json::{Value, json};

/// One case.
pub struct CelCase {
    /// `McpServer` or `McpAccessPolicy`.
    pub kind: &'static str,
    /// What is wrong.
    pub name: &'static str,
    /// The merge patch that makes the sample object wrong.
    pub patch: fn() -> Value,
    /// The rule's message.
    pub message: &'static str,
}

/// Applies an RFC 7386 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(fields) => {
            if !target.is_object() {
                *target = Value::Object(serde_json::Map::new());
            }
            let object = target.as_object_mut().expect("an object");
            for (key, value) in fields {
                if value.is_null() {
                    object.remove(key);
                } else {
                    merge_patch(object.entry(key.clone()).or_insert(Value::Null), value);
                }
            }
        }
        other => *target = other.clone(),
    }
}

const GOOGLE: &str = "https://accounts.google.com";
const RESOURCE: &str = "https://company-info.team-a.example.com/mcp";

fn hmac_issuer(extra: Value) -> Value {
    let mut issuer =
        json!({"issuer": "palisade-dev", "hmacKey": {"secretKeyRef": {"name": "company-info-jwt", "key": "hmac-key"}}});
    merge_patch(&mut issuer, &extra);
    issuer
}

fn issuers(list: Value) -> Value {
    json!({"spec": {"auth": {"issuers": list}}})
}

/// Every case, one per rule.
pub const CASES: &[CelCase] = &[
    CelCase {
        kind: "McpServer",
        name: "a server name that is not a DNS-1035 label",
        patch: || json!({"metadata": {"name": "company.info"}}),
        message: "the name must be a DNS-1035 label of at most 63 characters: it names the server's Service",
    },
    CelCase {
        kind: "McpServer",
        name: "an API-key table with neither source",
        patch: || json!({"spec": {"auth": {"apiKeys": {}}}}),
        message: "set exactly one of secretKeyRef or externalSecret",
    },
    CelCase {
        kind: "McpServer",
        name: "a collection with neither a ConfigMap nor inline documents",
        patch: || {
            json!({"spec": {"documents": [
            {"collection": "public", "description": "Public company information"},
            {"collection": "confidential", "configMapRef": {"name": "company-confidential-docs"}}]}})
        },
        message: "set exactly one of configMapRef or inline",
    },
    CelCase {
        kind: "McpServer",
        name: "no issuer, no API keys, anonymous not allowed",
        patch: || issuers(json!([])),
        message: "configure at least one issuer or an apiKeys table, or set allowAnonymous: true explicitly",
    },
    CelCase {
        kind: "McpServer",
        name: "a resource URI with a fragment",
        patch: || json!({"spec": {"auth": {"resource": "https://company-info.team-a.example.com/mcp#x"}}}),
        message: "resource must be an absolute http(s) URI without a fragment (RFC 8707 section 2)",
    },
    CelCase {
        kind: "McpServer",
        name: "an issuer with both a JWKS URI and an HMAC key",
        patch: || issuers(json!([hmac_issuer(json!({"jwksUri": "https://example.com/jwks"}))])),
        message: "jwksUri and hmacKey are mutually exclusive: an issuer signs either with an HMAC key or with keys from a JWKS",
    },
    CelCase {
        kind: "McpServer",
        name: "an HMAC issuer accepting RS256",
        patch: || issuers(json!([hmac_issuer(json!({"algorithms": ["RS256"]}))])),
        message: "an hmacKey issuer accepts only HS256, HS384 or HS512",
    },
    CelCase {
        kind: "McpServer",
        name: "an OIDC issuer accepting HS256",
        patch: || issuers(json!([{"issuer": GOOGLE, "audiences": [RESOURCE], "algorithms": ["HS256"]}])),
        message: "a JWKS or OIDC issuer never accepts HS256/HS384/HS512 (its public keys would become HMAC secrets)",
    },
    CelCase {
        kind: "McpServer",
        name: "an OIDC issuer that is not a URL",
        patch: || issuers(json!([{"issuer": "accounts-google", "audiences": [RESOURCE]}])),
        message: "without jwksUri or hmacKey, keys come from OIDC discovery, which needs the issuer to be an http(s) URL",
    },
    CelCase {
        kind: "McpServer",
        name: "a JWKS URI that is not an http(s) URL",
        patch: || {
            issuers(
                json!([{"issuer": GOOGLE, "audiences": [RESOURCE], "jwksUri": "ftp://example.com/jwks", "allowInsecureHttp": true}]),
            )
        },
        message: "jwksUri must be an absolute http(s) URL",
    },
    CelCase {
        kind: "McpServer",
        name: "an issuer whose keys come over plain HTTP",
        patch: || issuers(json!([{"issuer": "http://idp.example.com", "audiences": [RESOURCE]}])),
        message: "signing keys are fetched over HTTPS only: use an https:// issuer or jwksUri, or set allowInsecureHttp: true on a development issuer",
    },
    CelCase {
        kind: "McpServer",
        name: "an HMAC issuer marked for plain HTTP",
        patch: || issuers(json!([hmac_issuer(json!({"allowInsecureHttp": true}))])),
        message: "allowInsecureHttp applies to keys fetched by JWKS or OIDC discovery; an hmacKey issuer fetches none",
    },
    CelCase {
        kind: "McpServer",
        name: "an HMAC issuer as the service-account issuer",
        patch: || issuers(json!([hmac_issuer(json!({"kubernetesServiceAccounts": true}))])),
        message: "an hmacKey issuer cannot be the cluster's service-account issuer: Kubernetes signs service-account tokens with its own keys, published by JWKS or OIDC discovery",
    },
    CelCase {
        kind: "McpServer",
        name: "a PodDisruptionBudget with both bounds",
        patch: || json!({"spec": {"podDisruptionBudget": {"enabled": true, "minAvailable": 1, "maxUnavailable": 1}}}),
        message: "minAvailable and maxUnavailable are mutually exclusive",
    },
    CelCase {
        kind: "McpServer",
        name: "autoscaling with min above max",
        patch: || json!({"spec": {"autoscaling": {"enabled": true, "minReplicas": 5, "maxReplicas": 2}}}),
        message: "minReplicas must not exceed maxReplicas",
    },
    CelCase {
        kind: "McpServer",
        name: "a tool serving a collection that is not listed",
        patch: || json!({"spec": {"tools": [{"name": "get_public_info", "collection": "nope", "action": "readAll"}]}}),
        message: "every tool must serve a collection listed in spec.documents",
    },
    CelCase {
        kind: "McpServer",
        name: "an upstream beside documents and tools",
        patch: || json!({"spec": {"upstream": {"url": "http://files-mcp:3001/mcp"}}}),
        message: "a server with an upstream serves the upstream's tools: leave documents and tools empty",
    },
    CelCase {
        kind: "McpServer",
        name: "an upstream URL with credentials in it",
        patch: || {
            json!({"spec": {"documents": null, "tools": null,
            "upstream": {"url": "https://user:secret@files-mcp.example.com/mcp"}}})
        },
        message: "an http:// or https:// URL with a host, without user:password@ and without a fragment",
    },
    CelCase {
        kind: "McpServer",
        name: "an upstream header Palisade sets itself",
        patch: || {
            json!({"spec": {"documents": null, "tools": null, "upstream": {"url": "http://files-mcp:3001/mcp",
            "headers": [{"name": "Mcp-Session-Id", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}}})
        },
        message: "Palisade sets this header itself (or it is hop-by-hop): choose another name",
    },
    CelCase {
        kind: "McpServer",
        name: "an OAuth token endpoint over plain HTTP",
        patch: || {
            json!({"spec": {"documents": null, "tools": null, "upstream": {"url": "http://files-mcp:3001/mcp",
            "oauth": {"tokenUrl": "http://idp.example.com/token", "clientId": "palisade",
                      "clientSecret": {"secretKeyRef": {"name": "s", "key": "k"}}}}}})
        },
        message: "tokenUrl must be an https:// URL with a host, without user:password@ and without a fragment: the client secret is sent to it",
    },
    CelCase {
        kind: "McpServer",
        name: "OAuth and an Authorization header",
        patch: || {
            json!({"spec": {"documents": null, "tools": null, "upstream": {"url": "http://files-mcp:3001/mcp",
            "headers": [{"name": "Authorization", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}],
            "oauth": {"tokenUrl": "https://idp.example.com/token", "clientId": "palisade",
                      "clientSecret": {"secretKeyRef": {"name": "s", "key": "c"}}}}}})
        },
        message: "oauth sets the upstream's Authorization header: remove the Authorization entry of headers",
    },
    CelCase {
        kind: "McpServer",
        name: "an upstream with both a url and a container",
        patch: || {
            json!({"spec": {"documents": null, "tools": null, "upstream": {"url": "http://files-mcp:3001/mcp",
            "container": {"image": "mcp/everything:1", "command": ["node"]}}}})
        },
        message: "set exactly one of url (an upstream reached over the network) and container (an upstream run in the server's pods)",
    },
    CelCase {
        kind: "McpServer",
        name: "a container upstream with headers",
        patch: || {
            json!({"spec": {"documents": null, "tools": null, "upstream": {
            "container": {"image": "mcp/everything:1", "command": ["node"]},
            "headers": [{"name": "X-Key", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}}})
        },
        message: "headers and oauth are the credentials of an upstream at a url: a container upstream takes its own from env",
    },
    CelCase {
        kind: "McpServer",
        name: "a stdio container without a command",
        patch: || json!({"spec": {"documents": null, "tools": null, "upstream": {"container": {"image": "mcp/everything:1"}}}}),
        message: "a stdio upstream needs its command: the operator cannot read the image's entrypoint",
    },
    CelCase {
        kind: "McpServer",
        name: "a stdio container with a port",
        patch: || json!({"spec": {"documents": null, "tools": null, "upstream": {"container": {"image": "i", "command": ["x"], "port": 3001}}}}),
        message: "port and path are for transport StreamableHttp",
    },
    CelCase {
        kind: "McpServer",
        name: "a StreamableHttp container without a port",
        patch: || json!({"spec": {"documents": null, "tools": null, "upstream": {"container": {"image": "i", "transport": "StreamableHttp"}}}}),
        message: "a StreamableHttp upstream needs the port it listens on",
    },
    CelCase {
        kind: "McpServer",
        name: "a StreamableHttp container on Palisade's metrics port",
        patch: || json!({"spec": {"documents": null, "tools": null, "upstream": {"container": {"image": "i", "transport": "StreamableHttp", "port": 9090}}}}),
        message: "8080 and 9090 are Palisade's own ports",
    },
    CelCase {
        kind: "McpServer",
        name: "a pod label the operator sets",
        patch: || json!({"spec": {"podTemplate": {"labels": {"app.kubernetes.io/instance": "other"}}}}),
        message: "podTemplate.labels cannot set app.kubernetes.io/name, instance, managed-by or component: the operator sets them, and they select the server's pods",
    },
    CelCase {
        kind: "McpServer",
        name: "a pod annotation the operator sets",
        patch: || json!({"spec": {"podTemplate": {"annotations": {"prometheus.io/scrape": "false"}}}}),
        message: "podTemplate.annotations cannot set kubectl.kubernetes.io/default-container or prometheus.io/scrape, port or path: the operator sets them",
    },
    CelCase {
        kind: "McpServer",
        name: "a resource attribute the operator sets",
        patch: || json!({"spec": {"telemetry": {"resourceAttributes": {"k8s.pod.name": "other"}}}}),
        message: "resourceAttributes cannot set k8s.namespace.name, service.namespace, k8s.deployment.name, k8s.pod.name or service.name: the operator sets them (service.name is serviceName)",
    },
    CelCase {
        kind: "McpAccessPolicy",
        name: "an argument constraint with min above max",
        patch: || {
            json!({"spec": {"tools": [
            {"match": "get_public_info", "requiredScopes": ["public:read"], "arguments": {"limit": {"min": 5, "max": 1}}},
            {"match": "get_confidential_info", "requiredScopes": ["confidential:read"]}]}})
        },
        message: "min must not be greater than max",
    },
    CelCase {
        kind: "McpAccessPolicy",
        name: "an argument constrained as a number and as a string",
        patch: || {
            json!({"spec": {"tools": [
            {"match": "get_public_info", "requiredScopes": ["public:read"], "arguments": {"limit": {"min": 1, "in": ["a"]}}},
            {"match": "get_confidential_info", "requiredScopes": ["confidential:read"]}]}})
        },
        message: "min and max constrain a number; glob, in, regex, prefix and maxLength a string: not both on one argument",
    },
    CelCase {
        kind: "McpAccessPolicy",
        name: "a scope that implies itself",
        patch: || json!({"spec": {"scopeImplications": [{"scope": "files", "implies": ["files:read", "files"]}]}}),
        message: "a scope does not imply itself; list the narrower scopes it implies",
    },
    CelCase {
        kind: "McpAccessPolicy",
        name: "a broader scope with a wildcard",
        patch: || json!({"spec": {"scopeImplications": [{"scope": "files:*", "implies": ["files:read"]}]}}),
        message: "the broader scope is a literal RFC 6749 scope token",
    },
    CelCase {
        kind: "McpAccessPolicy",
        name: "an implied scope with a partial wildcard",
        patch: || json!({"spec": {"scopeImplications": [{"scope": "files", "implies": ["file*:read"]}]}}),
        message: "scopes are RFC 6749 scope tokens; '*' may only stand for a whole ':'-separated segment, e.g. 'docs:*'",
    },
    CelCase {
        kind: "McpAccessPolicy",
        name: "a policy that targets nothing",
        patch: || json!({"spec": {"targetRefs": []}}),
        message: "a policy must target servers: set targetRefs or targetSelector",
    },
    CelCase {
        kind: "McpAccessPolicy",
        name: "a binding to an undefined role",
        patch: || json!({"spec": {"bindings": [{"role": "nobody", "groups": ["employees"]}]}}),
        message: "every binding must name a role defined in spec.roles",
    },
    CelCase {
        kind: "McpAccessPolicy",
        name: "a granted scope with a partial-segment wildcard",
        patch: || {
            json!({"spec": {"roles": [
            {"name": "employee", "scopes": ["public:re*"]},
            {"name": "strategist", "scopes": ["public:*", "confidential:read"]}]}})
        },
        message: "scopes are RFC 6749 scope tokens; '*' may only stand for a whole ':'-separated segment, e.g. 'docs:*'",
    },
    CelCase {
        kind: "McpAccessPolicy",
        name: "a required scope with a wildcard",
        patch: || {
            json!({"spec": {"tools": [
            {"match": "get_public_info", "requiredScopes": ["public:*"]},
            {"match": "get_confidential_info", "requiredScopes": ["confidential:read"]}]}})
        },
        message: "required scopes are literal RFC 6749 scope tokens; '*' is only allowed in the scopes a role grants",
    },
    CelCase {
        kind: "McpAccessPolicy",
        name: "a binding with both an issuer and a source",
        patch: || json!({"spec": {"bindings": [{"role": "employee", "groups": ["employees"], "issuer": "palisade-dev", "source": "ApiKeys"}]}}),
        message: "issuer and source are mutually exclusive: set issuer for a JWT issuer's identities, or source: ApiKeys or ClientCertificates",
    },
    CelCase {
        kind: "McpAccessPolicy",
        name: "a source on a binding without subjects or groups",
        patch: || json!({"spec": {"bindings": [{"role": "employee", "anonymous": true, "source": "ApiKeys"}]}}),
        message: "issuer and source qualify subjects and groups: a binding that sets one must name a subject or group",
    },
    CelCase {
        kind: "McpAccessPolicy",
        name: "a binding that names nobody",
        patch: || json!({"spec": {"bindings": [{"role": "employee"}]}}),
        message: "a binding must name at least one subject, group or service account, or set anonymous: true",
    },
    CelCase {
        kind: "McpAccessPolicy",
        name: "a wildcard subject",
        patch: || json!({"spec": {"bindings": [{"role": "employee", "subjects": ["*"]}]}}),
        message: "bind unauthenticated callers with anonymous: true, never with a wildcard or system:anonymous/system:unauthenticated",
    },
    CelCase {
        kind: "McpAccessPolicy",
        name: "a test that asserts nothing",
        patch: || json!({"spec": {"tests": [{"name": "nothing", "identity": {"subject": "alice"}}]}}),
        message: "a test must assert something: set visibleTools, allowed or denied (or allowedPrompts, deniedPrompts, allowedResources, deniedResources, allowedCalls, deniedCalls)",
    },
    CelCase {
        kind: "McpAccessPolicy",
        name: "a tool both allowed and denied",
        patch: || {
            json!({"spec": {"tests": [{"name": "both", "identity": {"subject": "alice"},
            "allowed": ["get_public_info"], "denied": ["get_public_info"]}]}})
        },
        message: "a tool cannot be both allowed and denied in one test",
    },
    CelCase {
        kind: "McpAccessPolicy",
        name: "an anonymous identity with a subject",
        patch: || {
            json!({"spec": {"tests": [{"name": "anonymous alice", "identity": {"anonymous": true, "subject": "alice"},
            "denied": ["get_public_info"]}]}})
        },
        message: "an anonymous identity has no subject, scopes, roles, groups or service account",
    },
];
