//! The CEL rules (`x-kubernetes-validations`) of both CRDs, evaluated client-side with
//! `validate_cel` (kube-cel): the samples pass, every rule rejects what it is meant to reject (and
//! nothing else fires), the scope regexes agree with the Rust scope parser, and kube-cel's static
//! analysis finds no cost, scope or bounds problem in any rule.
//!
//! Uniqueness is not CEL's job: lists whose items have a natural key are list-maps
//! (`x-kubernetes-list-type: map`), which the API server checks itself. The tests of section 5
//! check the same offline ([`list_map_duplicates`]): every such list has its key, and a duplicate
//! key is found where the API server would refuse it.

mod support;

use std::collections::BTreeSet;

use palisade_crds::BindingSource;
use palisade_crds::access_policy::{
    BindingSpec, GRANTED_SCOPE_REGEX, LITERAL_SCOPE_REGEX, PolicyTestSpec, ServiceAccountRef, TargetRef, TestIdentity,
    ToolRuleSpec,
};
use palisade_crds::common::{ExternalSecretSource, SecretKeyRef, SecretKeySource, SecretStoreKind, SecretStoreRef};
use palisade_crds::document::{PinningMode, UnpinnedTools};
use palisade_crds::k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use palisade_crds::k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use palisade_crds::kube::CustomResourceExt;
use palisade_crds::kube::core::cel::{
    ErrorKind, ScopeContext, ValidationError, ValidationErrors, WarningKind, analyze_rule, compile_schema,
};
use palisade_crds::mcp_server::{
    AutoscalingSpec, ConfigMapRef, DocumentCollection, InlineDocument, IssuerSpec, JwtAlgorithm,
    OPERATOR_POD_ANNOTATIONS, OPERATOR_POD_LABELS, PodDisruptionBudgetSpec, PodTemplateMetadata,
};
use palisade_crds::scope::{ScopeGrant, check_literal_scope};
use palisade_crds::telemetry::{OPERATOR_RESOURCE_ATTRIBUTES, TelemetrySpec};
use palisade_crds::upstream::{Pinning, UpstreamHeader, UpstreamOAuth, UpstreamSpec, UpstreamTool};
use palisade_crds::{McpAccessPolicy, McpServer};
use serde_json::Value;

// ── The message of every rule ────────────────────────────────────────────────────────────────────

// McpServer
const NAME_DNS_1035: &str = "the name must be a DNS-1035 label of at most 63 characters: it names the server's Service";
const SECRET_EXACTLY_ONE: &str = "set exactly one of secretKeyRef or externalSecret";
const DOCUMENTS_EXACTLY_ONE: &str = "set exactly one of configMapRef or inline";
const AUTH_SOMETHING: &str =
    "configure at least one issuer or an apiKeys table, or set allowAnonymous: true explicitly";
const RESOURCE_URI: &str = "resource must be an absolute http(s) URI without a fragment (RFC 8707 section 2)";
const JWKS_XOR_HMAC: &str =
    "jwksUri and hmacKey are mutually exclusive: an issuer signs either with an HMAC key or with keys from a JWKS";
const HMAC_ONLY_HS: &str = "an hmacKey issuer accepts only HS256, HS384 or HS512";
const JWKS_NEVER_HS: &str =
    "a JWKS or OIDC issuer never accepts HS256/HS384/HS512 (its public keys would become HMAC secrets)";
const OIDC_NEEDS_URL: &str =
    "without jwksUri or hmacKey, keys come from OIDC discovery, which needs the issuer to be an http(s) URL";
const JWKS_URI_URL: &str = "jwksUri must be an absolute http(s) URL";
const KEYS_OVER_HTTPS: &str = "signing keys are fetched over HTTPS only: use an https:// issuer or jwksUri, or set allowInsecureHttp: true on a development issuer";
const HMAC_NO_INSECURE_HTTP: &str =
    "allowInsecureHttp applies to keys fetched by JWKS or OIDC discovery; an hmacKey issuer fetches none";
const ISSUER_XOR_SOURCE: &str = palisade_crds::access_policy::ISSUER_XOR_SOURCE;
const QUALIFIER_NEEDS_NAMES: &str =
    "issuer and source qualify subjects and groups: a binding that sets one must name a subject or group";
const HMAC_NO_SERVICE_ACCOUNTS: &str = "an hmacKey issuer cannot be the cluster's service-account issuer: Kubernetes signs service-account tokens with its own keys, published by JWKS or OIDC discovery";
const PDB_EXCLUSIVE: &str = "minAvailable and maxUnavailable are mutually exclusive";
const AUTOSCALING_RANGE: &str = "minReplicas must not exceed maxReplicas";
const TOOL_COLLECTION_EXISTS: &str = "every tool must serve a collection listed in spec.documents";
const POD_LABELS_RESERVED: &str = "podTemplate.labels cannot set app.kubernetes.io/name, instance, managed-by or component: the operator sets them, and they select the server's pods";
const POD_ANNOTATIONS_RESERVED: &str = "podTemplate.annotations cannot set kubectl.kubernetes.io/default-container or prometheus.io/scrape, port or path: the operator sets them";
const UPSTREAM_ALONE: &str = "a server with an upstream serves the upstream's tools: leave documents and tools empty";
const UPSTREAM_URL: &str = "an http:// or https:// URL with a host, without user:password@ and without a fragment";
const UPSTREAM_HEADER_NAME: &str = "Palisade sets this header itself (or it is hop-by-hop): choose another name";
const OAUTH_TOKEN_URL: &str = "tokenUrl must be an https:// URL with a host, without user:password@ and without a fragment: the client secret is sent to it";
const OAUTH_OWNS_AUTHORIZATION: &str =
    "oauth sets the upstream's Authorization header: remove the Authorization entry of headers";
const UPSTREAM_URL_OR_CONTAINER: &str = "set exactly one of url (an upstream reached over the network) and container (an upstream run in the server's pods)";
const UPSTREAM_CREDENTIALS_FOR_URL: &str =
    "headers and oauth are the credentials of an upstream at a url: a container upstream takes its own from env";
const STDIO_COMMAND: &str = "a stdio upstream needs its command: the operator cannot read the image's entrypoint";
const PORT_PATH_FOR_HTTP: &str = "port and path are for transport StreamableHttp";
const HTTP_NEEDS_PORT: &str = "a StreamableHttp upstream needs the port it listens on";
const NOT_PALISADE_PORTS: &str = "8080 and 9090 are Palisade's own ports";
const RESOURCE_ATTRIBUTES_RESERVED: &str = "resourceAttributes cannot set k8s.namespace.name, service.namespace, k8s.deployment.name, k8s.pod.name or service.name: the operator sets them (service.name is serviceName)";

// McpAccessPolicy
const POLICY_TARGETS: &str = "a policy must target servers: set targetRefs or targetSelector";
const BINDING_ROLE_DEFINED: &str = "every binding must name a role defined in spec.roles";
const GRANTED_SCOPE: &str =
    "scopes are RFC 6749 scope tokens; '*' may only stand for a whole ':'-separated segment, e.g. 'docs:*'";
const REQUIRED_SCOPE: &str =
    "required scopes are literal RFC 6749 scope tokens; '*' is only allowed in the scopes a role grants";
const BINDING_SOMEONE: &str =
    "a binding must name at least one subject, group or service account, or set anonymous: true";
const BINDING_NO_WILDCARD: &str = "bind unauthenticated callers with anonymous: true, never with a wildcard or system:anonymous/system:unauthenticated";
const TEST_ASSERTS: &str = "a test must assert something: set visibleTools, allowed or denied (or allowedPrompts, deniedPrompts, allowedResources, deniedResources, allowedCalls, deniedCalls)";
const TEST_ALLOWED_DENIED: &str = "a tool cannot be both allowed and denied in one test";
const ANONYMOUS_IDENTITY: &str = "an anonymous identity has no subject, scopes, roles, groups or service account";
const ARGUMENT_MIN_MAX: &str = "min must not be greater than max";
const IMPLICATION_SCOPE: &str = "the broader scope is a literal RFC 6749 scope token";
const IMPLICATION_NOT_SELF: &str = "a scope does not imply itself; list the narrower scopes it implies";
const ARGUMENT_ONE_TYPE: &str =
    "min and max constrain a number; glob, in, regex, prefix and maxLength a string: not both on one argument";

/// Every rule message this file tests, per CRD.
const MCP_SERVER_MESSAGES: [&str; 30] = [
    UPSTREAM_URL_OR_CONTAINER,
    UPSTREAM_CREDENTIALS_FOR_URL,
    STDIO_COMMAND,
    PORT_PATH_FOR_HTTP,
    HTTP_NEEDS_PORT,
    NOT_PALISADE_PORTS,
    OAUTH_TOKEN_URL,
    OAUTH_OWNS_AUTHORIZATION,
    UPSTREAM_ALONE,
    UPSTREAM_URL,
    UPSTREAM_HEADER_NAME,
    KEYS_OVER_HTTPS,
    HMAC_NO_INSECURE_HTTP,
    NAME_DNS_1035,
    SECRET_EXACTLY_ONE,
    DOCUMENTS_EXACTLY_ONE,
    AUTH_SOMETHING,
    RESOURCE_URI,
    JWKS_XOR_HMAC,
    HMAC_ONLY_HS,
    JWKS_NEVER_HS,
    OIDC_NEEDS_URL,
    JWKS_URI_URL,
    HMAC_NO_SERVICE_ACCOUNTS,
    PDB_EXCLUSIVE,
    AUTOSCALING_RANGE,
    TOOL_COLLECTION_EXISTS,
    POD_LABELS_RESERVED,
    POD_ANNOTATIONS_RESERVED,
    RESOURCE_ATTRIBUTES_RESERVED,
];
const MCP_ACCESS_POLICY_MESSAGES: [&str; 15] = [
    IMPLICATION_SCOPE,
    IMPLICATION_NOT_SELF,
    ARGUMENT_MIN_MAX,
    ARGUMENT_ONE_TYPE,
    ISSUER_XOR_SOURCE,
    QUALIFIER_NEEDS_NAMES,
    POLICY_TARGETS,
    BINDING_ROLE_DEFINED,
    GRANTED_SCOPE,
    REQUIRED_SCOPE,
    BINDING_SOMEONE,
    BINDING_NO_WILDCARD,
    TEST_ASSERTS,
    TEST_ALLOWED_DENIED,
    ANONYMOUS_IDENTITY,
];

// ── Helpers ──────────────────────────────────────────────────────────────────────────────────────

/// The McpServer of the company-info sample (HMAC and OIDC issuers, two ConfigMap collections).
fn server() -> McpServer {
    support::sample("company-info.yaml").0
}

/// The McpAccessPolicy of the company-info sample.
fn policy() -> McpAccessPolicy {
    support::sample("company-info.yaml").1.remove(0)
}

fn secret_ref(name: &str, key: &str) -> SecretKeyRef {
    SecretKeyRef {
        name: name.into(),
        key: key.into(),
    }
}

fn external_secret(remote_key: &str) -> ExternalSecretSource {
    ExternalSecretSource {
        store_ref: SecretStoreRef {
            kind: SecretStoreKind::ClusterSecretStore,
            name: "gcp-secret-manager".into(),
        },
        remote_key: remote_key.into(),
        property: None,
        version: None,
        refresh_interval: Some("15m".into()),
        target_secret_name: None,
    }
}

fn inline_document(name: &str) -> InlineDocument {
    InlineDocument {
        name: name.into(),
        content: format!("# {name}\n"),
    }
}

fn describe(errors: &ValidationErrors) -> String {
    errors
        .iter()
        .map(|e| {
            format!(
                "\n  - [{:?}] {}: {} (rule: {})",
                e.kind, e.field_path, e.message, e.rule
            )
        })
        .collect()
}

#[track_caller]
fn assert_valid(what: &str, result: Result<(), ValidationErrors>) {
    if let Err(errors) = result {
        panic!("{what}: expected no CEL error, got:{}", describe(&errors));
    }
}

/// Asserts that validation failed, and only because the rule with `message` evaluated to false
/// (possibly at several places): no other rule fired and no rule failed to evaluate.
#[track_caller]
fn assert_rejected(what: &str, result: Result<(), ValidationErrors>, message: &str) -> Vec<ValidationError> {
    let errors = match result {
        Ok(()) => panic!("{what}: expected the rule {message:?} to reject the object, but it was accepted"),
        Err(errors) => errors,
    };
    let all_expected = errors
        .iter()
        .all(|e| e.kind == ErrorKind::ValidationFailure && e.message == message);
    assert!(
        all_expected,
        "{what}: expected only {message:?} (ValidationFailure), got:{}",
        describe(&errors)
    );
    errors.into_vec()
}

/// [`assert_rejected`], and the one error is reported at `field_path`.
#[track_caller]
fn assert_rejected_at(what: &str, result: Result<(), ValidationErrors>, message: &str, field_path: &str) {
    let errors = assert_rejected(what, result, message);
    let paths: Vec<&str> = errors.iter().map(|e| e.field_path.as_str()).collect();
    assert_eq!(paths, [field_path], "{what}: field paths of {message:?}");
}

fn mutated_server(mutate: impl FnOnce(&mut McpServer)) -> McpServer {
    let mut server = server();
    mutate(&mut server);
    server
}

fn mutated_policy(mutate: impl FnOnce(&mut McpAccessPolicy)) -> McpAccessPolicy {
    let mut policy = policy();
    mutate(&mut policy);
    policy
}

/// The company-info server, made valid with the optional parts the sample does not use, so that
/// the rules on them are evaluated: an apiKeys table, an inline collection, a JWKS issuer, a
/// PodDisruptionBudget and autoscaling.
fn full_server() -> McpServer {
    mutated_server(|s| {
        s.spec.auth.api_keys = Some(SecretKeySource {
            secret_key_ref: Some(secret_ref("company-info-api-keys", "keys.yaml")),
            external_secret: None,
        });
        s.spec.documents.push(DocumentCollection {
            collection: "handbook".into(),
            description: None,
            config_map_ref: None,
            inline: Some(vec![inline_document("intro.md"), inline_document("leave.md")]),
        });
        s.spec.auth.issuers.push(IssuerSpec {
            issuer: "sso.example.com".into(),
            audiences: vec!["api://company-info".into()],
            algorithms: vec![JwtAlgorithm::RS256, JwtAlgorithm::ES256],
            jwks_uri: Some("https://sso.example.com/keys".into()),
            hmac_key: None,
            claims: None,
            kubernetes_service_accounts: true,
            allow_insecure_http: false,
        });
        s.spec.pod_disruption_budget = Some(PodDisruptionBudgetSpec {
            enabled: true,
            min_available: None,
            max_unavailable: Some(IntOrString::Int(1)),
        });
        s.spec.autoscaling = Some(AutoscalingSpec {
            enabled: true,
            min_replicas: Some(2),
            max_replicas: Some(10),
            target_cpu_utilization_percentage: Some(70),
        });
    })
}

/// Index of the HMAC issuer (`palisade-dev`), the OIDC issuer (Google) and the JWKS issuer of
/// [`full_server`].
const HMAC: usize = 1;
const OIDC: usize = 0;
const JWKS: usize = 2;

fn full_server_with(mutate: impl FnOnce(&mut McpServer)) -> McpServer {
    let mut server = full_server();
    mutate(&mut server);
    server
}

// ── 1. The samples pass ──────────────────────────────────────────────────────────────────────────

#[test]
fn every_sample_object_passes_every_cel_rule() {
    let mut servers = 0;
    let mut policies = 0;
    for (path, documents) in support::samples() {
        for document in documents {
            let name = format!("{}: {}", path.display(), document["metadata"]["name"]);
            match document["kind"].as_str() {
                Some("McpServer") => {
                    let server: McpServer = serde_json::from_value(document).unwrap();
                    assert_valid(&name, server.validate_cel());
                    assert_eq!(list_map_duplicates(&server), Vec::<String>::new(), "{name}");
                    servers += 1;
                }
                Some("McpAccessPolicy") => {
                    let policy: McpAccessPolicy = serde_json::from_value(document).unwrap();
                    assert_valid(&name, policy.validate_cel());
                    assert_eq!(list_map_duplicates(&policy), Vec::<String>::new(), "{name}");
                    policies += 1;
                }
                _ => {}
            }
        }
    }
    assert!(
        servers >= 2 && policies >= 2,
        "found {servers} servers and {policies} policies"
    );
}

#[test]
fn the_fully_configured_base_server_passes() {
    // The base of the McpServer tests below must itself be valid, or the tests prove nothing.
    assert_valid("full_server", full_server().validate_cel());
}

/// Every rule message of the CRDs is one this file tests, and the other way round: a new rule
/// without a test (or a changed message) fails here.
#[test]
fn every_rule_of_both_crds_is_covered_by_a_test() {
    for (kind, schema, covered) in [
        ("McpServer", schema_of(&McpServer::crd()), &MCP_SERVER_MESSAGES[..]),
        (
            "McpAccessPolicy",
            schema_of(&McpAccessPolicy::crd()),
            &MCP_ACCESS_POLICY_MESSAGES[..],
        ),
    ] {
        let mut in_crd = BTreeSet::new();
        for site in rule_sites(&schema) {
            for rule in site.rules {
                let message = rule["message"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{kind} {}: a rule without a message", site.path));
                in_crd.insert(message.to_owned());
            }
        }
        let covered: BTreeSet<String> = covered.iter().map(|m| (*m).to_owned()).collect();
        assert_eq!(
            in_crd, covered,
            "{kind}: the rule messages of the CRD and those tested here differ"
        );
    }
}

// ── 2. McpServer rules ───────────────────────────────────────────────────────────────────────────

#[test]
fn the_server_name_must_be_a_dns_1035_label() {
    for bad in ["1st-server", "Company-Info", "company.info", &"a".repeat(64)] {
        let server = mutated_server(|s| s.metadata.name = Some(bad.to_owned()));
        assert_rejected(bad, server.validate_cel(), NAME_DNS_1035);
    }
    for good in ["company-info", "a", &"a".repeat(63)] {
        let server = mutated_server(|s| s.metadata.name = Some(good.to_owned()));
        assert_valid(good, server.validate_cel());
    }
}

#[test]
fn secret_key_source_needs_exactly_one_source() {
    let both = full_server_with(|s| {
        s.spec.auth.api_keys.as_mut().unwrap().external_secret = Some(external_secret("company-info-api-keys"));
    });
    assert_rejected_at(
        "apiKeys with both",
        both.validate_cel(),
        SECRET_EXACTLY_ONE,
        "spec.auth.apiKeys",
    );

    let neither = full_server_with(|s| s.spec.auth.api_keys.as_mut().unwrap().secret_key_ref = None);
    assert_rejected_at(
        "apiKeys with neither",
        neither.validate_cel(),
        SECRET_EXACTLY_ONE,
        "spec.auth.apiKeys",
    );

    // The same type, nested under an issuer.
    let hmac_neither = full_server_with(|s| s.spec.auth.issuers[HMAC].hmac_key.as_mut().unwrap().secret_key_ref = None);
    assert_rejected_at(
        "hmacKey with neither",
        hmac_neither.validate_cel(),
        SECRET_EXACTLY_ONE,
        "spec.auth.issuers[1].hmacKey",
    );
    let hmac_both = full_server_with(|s| {
        s.spec.auth.issuers[HMAC].hmac_key.as_mut().unwrap().external_secret = Some(external_secret("jwt-key"));
    });
    assert_rejected_at(
        "hmacKey with both",
        hmac_both.validate_cel(),
        SECRET_EXACTLY_ONE,
        "spec.auth.issuers[1].hmacKey",
    );

    let external_only = full_server_with(|s| {
        s.spec.auth.api_keys = Some(SecretKeySource {
            secret_key_ref: None,
            external_secret: Some(external_secret("company-info-api-keys")),
        });
        s.spec.auth.issuers[HMAC].hmac_key = Some(SecretKeySource {
            secret_key_ref: None,
            external_secret: Some(external_secret("jwt-key")),
        });
    });
    assert_valid("externalSecret only", external_only.validate_cel());
}

#[test]
fn document_collection_needs_exactly_one_source() {
    let both = full_server_with(|s| {
        s.spec.documents[0].inline = Some(vec![inline_document("public.md")]);
    });
    assert_rejected_at(
        "configMapRef and inline",
        both.validate_cel(),
        DOCUMENTS_EXACTLY_ONE,
        "spec.documents[0]",
    );

    let neither = full_server_with(|s| s.spec.documents[0].config_map_ref = None);
    assert_rejected_at(
        "neither",
        neither.validate_cel(),
        DOCUMENTS_EXACTLY_ONE,
        "spec.documents[0]",
    );

    // `inline: []` is set (an empty collection); the rule is about which source, not its size.
    let empty_inline = full_server_with(|s| {
        s.spec.documents[0].config_map_ref = None;
        s.spec.documents[0].inline = Some(vec![]);
    });
    assert_valid("inline: []", empty_inline.validate_cel());

    let config_map_only = full_server_with(|s| {
        s.spec.documents[2].inline = None;
        s.spec.documents[2].config_map_ref = Some(ConfigMapRef {
            name: "handbook".into(),
        });
    });
    assert_valid("configMapRef only", config_map_only.validate_cel());
}

#[test]
fn inline_document_names_are_unique() {
    let duplicate = full_server_with(|s| {
        s.spec.documents[2]
            .inline
            .as_mut()
            .unwrap()
            .push(inline_document("intro.md"));
    });
    assert_duplicate_at("duplicate inline name", &duplicate, "spec.documents[2].inline[2]");

    // Names differing only in case or extension are different files.
    let distinct = full_server_with(|s| {
        let inline = s.spec.documents[2].inline.as_mut().unwrap();
        inline.push(inline_document("Intro.md"));
        inline.push(inline_document("intro.txt"));
    });
    assert_no_duplicate("distinct inline names", &distinct);
}

#[test]
fn auth_needs_an_issuer_an_api_key_table_or_explicit_anonymous_access() {
    let nothing = mutated_server(|s| s.spec.auth.issuers.clear());
    assert_rejected_at(
        "no way to authenticate",
        nothing.validate_cel(),
        AUTH_SOMETHING,
        "spec.auth",
    );

    let anonymous = mutated_server(|s| {
        s.spec.auth.issuers.clear();
        s.spec.auth.allow_anonymous = true;
    });
    assert_valid("allowAnonymous only", anonymous.validate_cel());

    let api_keys = full_server_with(|s| s.spec.auth.issuers.clear());
    assert_valid("apiKeys only", api_keys.validate_cel());

    let issuers = mutated_server(|s| s.spec.auth.issuers.truncate(1));
    assert_valid("one issuer only", issuers.validate_cel());
}

#[test]
fn issuers_are_unique() {
    let duplicate = full_server_with(|s| {
        let google = s.spec.auth.issuers[OIDC].clone();
        s.spec.auth.issuers.push(google);
    });
    assert_duplicate_at("duplicate issuer", &duplicate, "spec.auth.issuers[3]");

    // Same issuer value with different settings is still a duplicate: `iss` alone picks the issuer.
    let same_iss = full_server_with(|s| s.spec.auth.issuers[JWKS].issuer = s.spec.auth.issuers[OIDC].issuer.clone());
    assert_duplicate_at("same iss, other keys", &same_iss, "spec.auth.issuers[2]");
}

#[test]
fn resource_is_an_absolute_http_uri_without_fragment() {
    for bad in [
        "company-info",                        // not a URI
        "company-info.team-a.example.com/mcp", // no scheme
        "/mcp",                                // an absolute path is a URL to isURL, not a URI here
        "ftp://company-info.team-a.example.com/mcp",
        "urn:palisade:company-info",
        "https://company-info.team-a.example.com/mcp#tools",
        "https://company-info.team-a.example.com/#",
    ] {
        let server = mutated_server(|s| s.spec.auth.resource = Some(bad.into()));
        assert_rejected_at(bad, server.validate_cel(), RESOURCE_URI, "spec.auth.resource");
    }
    for good in [
        "https://company-info.team-a.example.com/mcp",
        "http://company-info.team-a.svc.cluster.local/mcp",
        "https://company-info.team-a.example.com:8443/mcp?tenant=a",
        "https://company-info.team-a.example.com",
        "http://10.0.0.12:8080/mcp",
    ] {
        let server = mutated_server(|s| s.spec.auth.resource = Some(good.into()));
        assert_valid(good, server.validate_cel());
    }
}

#[test]
fn an_issuer_has_either_a_jwks_uri_or_an_hmac_key() {
    let both =
        full_server_with(|s| s.spec.auth.issuers[HMAC].jwks_uri = Some("https://palisade.example.com/keys".into()));
    assert_rejected_at(
        "jwksUri and hmacKey",
        both.validate_cel(),
        JWKS_XOR_HMAC,
        "spec.auth.issuers[1]",
    );
}

#[test]
fn an_hmac_issuer_accepts_only_hmac_algorithms() {
    for algorithms in [
        vec![JwtAlgorithm::RS256],
        vec![JwtAlgorithm::HS256, JwtAlgorithm::RS256],
        vec![JwtAlgorithm::EdDSA],
    ] {
        let server = full_server_with(|s| s.spec.auth.issuers[HMAC].algorithms = algorithms.clone());
        assert_rejected(
            &format!("hmacKey with {algorithms:?}"),
            server.validate_cel(),
            HMAC_ONLY_HS,
        );
    }
    let hmac = full_server_with(|s| {
        s.spec.auth.issuers[HMAC].algorithms = vec![JwtAlgorithm::HS256, JwtAlgorithm::HS384, JwtAlgorithm::HS512];
    });
    assert_valid("hmacKey with HS256/384/512", hmac.validate_cel());
}

#[test]
fn a_jwks_or_oidc_issuer_never_accepts_hmac_algorithms() {
    for (issuer, algorithms) in [
        (OIDC, vec![JwtAlgorithm::HS256]),
        (OIDC, vec![JwtAlgorithm::RS256, JwtAlgorithm::HS512]),
        (JWKS, vec![JwtAlgorithm::HS384]),
    ] {
        let server = full_server_with(|s| s.spec.auth.issuers[issuer].algorithms = algorithms.clone());
        assert_rejected(
            &format!("issuer {issuer} with {algorithms:?}"),
            server.validate_cel(),
            JWKS_NEVER_HS,
        );
    }
    let asymmetric = full_server_with(|s| {
        s.spec.auth.issuers[OIDC].algorithms = vec![
            JwtAlgorithm::RS256,
            JwtAlgorithm::RS512,
            JwtAlgorithm::PS256,
            JwtAlgorithm::ES384,
            JwtAlgorithm::EdDSA,
        ];
    });
    assert_valid("asymmetric algorithms", asymmetric.validate_cel());
}

#[test]
fn an_oidc_issuer_is_an_http_url() {
    // Without its hmacKey, `palisade-dev` would need OIDC discovery, which needs a URL.
    let discovery = full_server_with(|s| s.spec.auth.issuers[HMAC].hmac_key = None);
    assert_rejected_at(
        "non-URL OIDC issuer",
        discovery.validate_cel(),
        OIDC_NEEDS_URL,
        "spec.auth.issuers[1].issuer",
    );

    let server = full_server_with(|s| s.spec.auth.issuers[OIDC].issuer = "accounts.google.com".into());
    assert_rejected("issuer without scheme", server.validate_cel(), OIDC_NEEDS_URL);

    // A non-URL issuer is fine with keys from a JWKS (the JWKS issuer of full_server) or an HMAC key.
    assert_valid("non-URL JWKS and HMAC issuers", full_server().validate_cel());
    let http = full_server_with(|s| {
        s.spec.auth.issuers[OIDC].issuer = "http://dex.dex.svc.cluster.local:5556".into();
        s.spec.auth.issuers[OIDC].allow_insecure_http = true;
    });
    assert_valid("http OIDC issuer for development", http.validate_cel());
}

#[test]
fn keys_are_fetched_over_https_unless_an_issuer_is_marked_for_development() {
    let http_discovery =
        full_server_with(|s| s.spec.auth.issuers[OIDC].issuer = "http://dex.dex.svc.cluster.local:5556".into());
    assert_rejected_at(
        "http OIDC issuer",
        http_discovery.validate_cel(),
        KEYS_OVER_HTTPS,
        "spec.auth.issuers[0]",
    );
    let http_jwks =
        full_server_with(|s| s.spec.auth.issuers[JWKS].jwks_uri = Some("http://sso.example.com/keys".into()));
    assert_rejected_at(
        "http jwksUri",
        http_jwks.validate_cel(),
        KEYS_OVER_HTTPS,
        "spec.auth.issuers[2]",
    );
    let marked = full_server_with(|s| {
        s.spec.auth.issuers[JWKS].jwks_uri = Some("http://sso.example.com/keys".into());
        s.spec.auth.issuers[JWKS].allow_insecure_http = true;
    });
    assert_valid("http jwksUri marked for development", marked.validate_cel());
    // A non-URL issuer with an https jwksUri, and an HMAC issuer of any name, fetch nothing over HTTP.
    assert_valid("the full server", full_server().validate_cel());

    let hmac = full_server_with(|s| s.spec.auth.issuers[HMAC].allow_insecure_http = true);
    assert_rejected_at(
        "allowInsecureHttp on an HMAC issuer",
        hmac.validate_cel(),
        HMAC_NO_INSECURE_HTTP,
        "spec.auth.issuers[1].allowInsecureHttp",
    );
}

#[test]
fn an_hmac_issuer_is_never_the_service_account_issuer() {
    // full_server's JWKS issuer already sets kubernetesServiceAccounts: true and passes.
    let server = full_server_with(|s| s.spec.auth.issuers[HMAC].kubernetes_service_accounts = true);
    assert_rejected_at(
        "hmacKey with kubernetesServiceAccounts",
        server.validate_cel(),
        HMAC_NO_SERVICE_ACCOUNTS,
        "spec.auth.issuers[1].kubernetesServiceAccounts",
    );
    let oidc = full_server_with(|s| s.spec.auth.issuers[OIDC].kubernetes_service_accounts = true);
    assert_valid("OIDC issuer with kubernetesServiceAccounts", oidc.validate_cel());
}

#[test]
fn jwks_uri_is_an_absolute_http_url() {
    for bad in [
        "sso.example.com/keys",
        "/keys",
        "ftp://sso.example.com/keys",
        "not a url",
    ] {
        // (Marked for development, so that only the URL rule speaks, not the HTTPS one.)
        let server = full_server_with(|s| {
            s.spec.auth.issuers[JWKS].jwks_uri = Some(bad.into());
            s.spec.auth.issuers[JWKS].allow_insecure_http = true;
        });
        assert_rejected_at(bad, server.validate_cel(), JWKS_URI_URL, "spec.auth.issuers[2].jwksUri");
    }
    for good in [
        "https://login.microsoftonline.com/common/discovery/v2.0/keys",
        "http://keycloak.auth.svc:8080/realms/a/protocol/openid-connect/certs",
    ] {
        let server = full_server_with(|s| {
            s.spec.auth.issuers[JWKS].jwks_uri = Some(good.into());
            s.spec.auth.issuers[JWKS].allow_insecure_http = good.starts_with("http://");
        });
        assert_valid(good, server.validate_cel());
    }
}

#[test]
fn pod_disruption_budget_sets_at_most_one_bound() {
    let both = full_server_with(|s| {
        s.spec.pod_disruption_budget.as_mut().unwrap().min_available = Some(IntOrString::String("50%".into()));
    });
    assert_rejected_at(
        "both bounds",
        both.validate_cel(),
        PDB_EXCLUSIVE,
        "spec.podDisruptionBudget",
    );

    for (min, max) in [
        (Some(IntOrString::String("50%".into())), None),
        (None, Some(IntOrString::String("25%".into()))),
        (Some(IntOrString::Int(1)), None),
        (None, None),
    ] {
        let server = full_server_with(|s| {
            let pdb = s.spec.pod_disruption_budget.as_mut().unwrap();
            pdb.min_available = min.clone();
            pdb.max_unavailable = max.clone();
        });
        assert_valid(
            &format!("minAvailable {min:?}, maxUnavailable {max:?}"),
            server.validate_cel(),
        );
    }
}

#[test]
fn autoscaling_min_does_not_exceed_max() {
    let inverted = full_server_with(|s| {
        let autoscaling = s.spec.autoscaling.as_mut().unwrap();
        autoscaling.min_replicas = Some(5);
        autoscaling.max_replicas = Some(3);
    });
    assert_rejected_at(
        "min > max",
        inverted.validate_cel(),
        AUTOSCALING_RANGE,
        "spec.autoscaling",
    );

    for (min, max) in [(Some(4), Some(4)), (Some(20), None), (None, Some(1)), (None, None)] {
        let server = full_server_with(|s| {
            let autoscaling = s.spec.autoscaling.as_mut().unwrap();
            autoscaling.min_replicas = min;
            autoscaling.max_replicas = max;
        });
        assert_valid(&format!("min {min:?}, max {max:?}"), server.validate_cel());
    }
}

#[test]
fn document_collections_are_unique() {
    let duplicate = full_server_with(|s| {
        let public = s.spec.documents[0].clone();
        s.spec.documents.push(public);
    });
    assert_duplicate_at("duplicate collection", &duplicate, "spec.documents[3]");
}

#[test]
fn tool_names_are_unique() {
    let duplicate = full_server_with(|s| {
        let mut tool = s.spec.tools[0].clone();
        tool.collection = "confidential".into();
        s.spec.tools.push(tool);
    });
    let at = format!("spec.tools[{}]", duplicate.spec.tools.len() - 1);
    assert_duplicate_at("duplicate tool", &duplicate, &at);

    // Names are case-sensitive (MCP tool names are).
    let case = full_server_with(|s| {
        let mut tool = s.spec.tools[0].clone();
        tool.name = "Get_Public_Info".into();
        s.spec.tools.push(tool);
    });
    assert_no_duplicate("names differing in case", &case);
}

#[test]
fn every_tool_serves_a_listed_collection() {
    let missing = full_server_with(|s| s.spec.tools[1].collection = "strategy".into());
    assert_rejected_at(
        "unknown collection",
        missing.validate_cel(),
        TOOL_COLLECTION_EXISTS,
        "spec.tools",
    );

    let no_documents = mutated_server(|s| s.spec.documents.clear());
    assert_rejected(
        "tools without any collection",
        no_documents.validate_cel(),
        TOOL_COLLECTION_EXISTS,
    );

    // Two tools on one collection, and a collection no tool serves, are fine.
    let shared = full_server_with(|s| s.spec.tools[1].collection = "public".into());
    assert_valid("two tools, one collection", shared.validate_cel());
    let empty = mutated_server(|s| {
        s.spec.tools.clear();
        s.spec.documents.clear();
    });
    assert_valid("no tools, no documents", empty.validate_cel());
}

/// The company-info server turned into a proxy: no documents or tools, an upstream with one
/// header from a Secret and one from an external store.
fn proxy_server() -> McpServer {
    mutated_server(|s| {
        s.spec.documents.clear();
        s.spec.tools.clear();
        s.spec.upstream = Some(UpstreamSpec {
            url: Some("http://files-mcp.team-a.svc.cluster.local:3001/mcp".into()),
            container: None,
            timeout_seconds: Some(60),
            headers: vec![
                UpstreamHeader {
                    name: "Authorization".into(),
                    value_from: SecretKeySource {
                        secret_key_ref: Some(secret_ref("files-upstream", "token")),
                        external_secret: None,
                    },
                },
                UpstreamHeader {
                    name: "X-Tenant".into(),
                    value_from: SecretKeySource {
                        secret_key_ref: None,
                        external_secret: Some(external_secret("files-tenant")),
                    },
                },
            ],
            oauth: None,
            tools: vec![UpstreamTool {
                name: "read_file".into(),
                sha256: Some(format!("sha256:{}", "a".repeat(64))),
                title: None,
                description: Some("Reads one file of the team's share".into()),
            }],
            pinning: Some(Pinning {
                mode: PinningMode::Report,
                unpinned: UnpinnedTools::Withhold,
            }),
        });
    })
}

fn proxy_server_with(mutate: impl FnOnce(&mut McpServer)) -> McpServer {
    let mut server = proxy_server();
    mutate(&mut server);
    server
}

fn upstream(server: &mut McpServer) -> &mut UpstreamSpec {
    server.spec.upstream.as_mut().expect("a proxy")
}

#[test]
fn an_upstream_replaces_documents_and_tools() {
    assert_valid("proxy_server", proxy_server().validate_cel());
    let with_documents = proxy_server_with(|s| s.spec.documents = full_server().spec.documents);
    assert_rejected_at(
        "upstream and documents",
        with_documents.validate_cel(),
        UPSTREAM_ALONE,
        "spec.upstream",
    );
    let with_tools = full_server_with(|s| s.spec.upstream = proxy_server().spec.upstream);
    assert_rejected_at(
        "upstream, documents and tools",
        with_tools.validate_cel(),
        UPSTREAM_ALONE,
        "spec.upstream",
    );
}

#[test]
fn the_upstream_url_is_http_with_a_host_and_no_credentials_or_fragment() {
    for url in [
        "https://mcp.example.com",
        "http://10.0.0.7:3001/mcp?tenant=a",
        "http://[::1]:9/mcp",
    ] {
        assert_valid(
            url,
            proxy_server_with(|s| upstream(s).url = Some(url.into())).validate_cel(),
        );
    }
    for url in [
        "ftp://mcp.example.com/mcp",
        "http:///mcp",
        "https://user:secret@mcp.example.com/mcp",
        "https://mcp.example.com/mcp#top",
        "https://mcp.example.com/m cp",
        "mcp.example.com/mcp",
    ] {
        let server = proxy_server_with(|s| upstream(s).url = Some(url.into()));
        assert_rejected_at(url, server.validate_cel(), UPSTREAM_URL, "spec.upstream.url");
    }
    // The compiler (and palisade-server's --upstream-url) refuse the same.
    for url in [
        "https://user:secret@mcp.example.com/mcp",
        "https://mcp.example.com/mcp#top",
    ] {
        assert!(palisade_crds::upstream::url_problem(url).is_some(), "{url}");
    }
}

/// The company-info server fronting `container` instead of a URL.
fn container_server(container: serde_json::Value) -> McpServer {
    proxy_server_with(|s| {
        let upstream = upstream(s);
        upstream.url = None;
        upstream.headers.clear();
        upstream.container = Some(serde_json::from_value(container).expect("a container"));
    })
}

#[test]
fn an_upstream_is_a_url_or_a_container_and_a_container_says_how_it_is_reached() {
    let stdio = serde_json::json!({"image": "mcp/everything:1", "command": ["node", "dist/index.js", "stdio"]});
    assert_valid("stdio container", container_server(stdio.clone()).validate_cel());
    let http =
        serde_json::json!({"image": "mcp/everything:1", "transport": "StreamableHttp", "port": 3001, "path": "/mcp"});
    assert_valid("http container", container_server(http.clone()).validate_cel());

    let both = proxy_server_with(|s| upstream(s).container = Some(serde_json::from_value(stdio.clone()).unwrap()));
    assert_rejected_at(
        "url and container",
        both.validate_cel(),
        UPSTREAM_URL_OR_CONTAINER,
        "spec.upstream",
    );
    let neither = proxy_server_with(|s| {
        upstream(s).url = None;
        upstream(s).headers.clear();
    });
    assert_rejected_at(
        "neither",
        neither.validate_cel(),
        UPSTREAM_URL_OR_CONTAINER,
        "spec.upstream",
    );
    let headers = proxy_server_with(|s| {
        upstream(s).url = None;
        upstream(s).container = Some(serde_json::from_value(stdio.clone()).unwrap());
    });
    assert_rejected_at(
        "container with headers",
        headers.validate_cel(),
        UPSTREAM_CREDENTIALS_FOR_URL,
        "spec.upstream.headers",
    );
    let cases = [
        (
            serde_json::json!({"image": "mcp/everything:1"}),
            STDIO_COMMAND,
            "spec.upstream.container.command",
        ),
        (
            serde_json::json!({"image": "i", "command": ["x"], "port": 3001}),
            PORT_PATH_FOR_HTTP,
            "spec.upstream.container.port",
        ),
        (
            serde_json::json!({"image": "i", "transport": "StreamableHttp"}),
            HTTP_NEEDS_PORT,
            "spec.upstream.container.port",
        ),
        (
            serde_json::json!({"image": "i", "transport": "StreamableHttp", "port": 9090}),
            NOT_PALISADE_PORTS,
            "spec.upstream.container.port",
        ),
    ];
    for (container, message, path) in cases {
        assert_rejected_at(message, container_server(container).validate_cel(), message, path);
    }
}

#[test]
fn upstream_headers_are_never_ones_palisade_sets_and_are_unique() {
    for name in [
        "Host",
        "content-type",
        "Mcp-Session-Id",
        "MCP-Protocol-Version",
        "mcp-name",
        "Transfer-Encoding",
    ] {
        let server = proxy_server_with(|s| upstream(s).headers[0].name = name.into());
        assert_rejected_at(
            name,
            server.validate_cel(),
            UPSTREAM_HEADER_NAME,
            "spec.upstream.headers[0].name",
        );
        assert!(palisade_crds::upstream::header_name_problem(name).is_some(), "{name}");
    }
    let duplicate = proxy_server_with(|s| {
        let mut header = upstream(s).headers[0].clone();
        header.value_from.secret_key_ref = Some(secret_ref("other", "token"));
        upstream(s).headers.push(header);
    });
    assert_duplicate_at("duplicate header", &duplicate, "spec.upstream.headers[2]");
    let no_source = proxy_server_with(|s| upstream(s).headers[1].value_from.external_secret = None);
    assert_rejected_at(
        "header without a source",
        no_source.validate_cel(),
        SECRET_EXACTLY_ONE,
        "spec.upstream.headers[1].valueFrom",
    );
}

fn with_oauth(server: &mut McpServer) {
    upstream(server).headers[0].name = "X-Team".into();
    upstream(server).oauth = Some(UpstreamOAuth {
        token_url: "https://idp.example.com/oauth2/token".into(),
        client_id: "palisade".into(),
        client_secret: SecretKeySource {
            secret_key_ref: Some(secret_ref("files-oauth", "client-secret")),
            external_secret: None,
        },
        scopes: vec!["files:read".into()],
        resource: None,
    });
}

#[test]
fn oauth_client_credentials_need_an_https_token_url_and_own_the_authorization_header() {
    assert_valid("oauth", proxy_server_with(with_oauth).validate_cel());
    for url in [
        "http://idp.example.com/token",
        "https://client:secret@idp.example.com/token",
        "https://idp.example.com/token#x",
    ] {
        let server = proxy_server_with(|s| {
            with_oauth(s);
            upstream(s).oauth.as_mut().unwrap().token_url = url.into();
        });
        assert_rejected_at(
            url,
            server.validate_cel(),
            OAUTH_TOKEN_URL,
            "spec.upstream.oauth.tokenUrl",
        );
    }
    let both = proxy_server_with(|s| {
        with_oauth(s);
        upstream(s).headers[0].name = "authorization".into();
    });
    assert_rejected_at(
        "oauth and an Authorization header",
        both.validate_cel(),
        OAUTH_OWNS_AUTHORIZATION,
        "spec.upstream.oauth",
    );
}

#[test]
fn pod_template_cannot_set_the_operator_s_labels_or_annotations() {
    let with = |labels: &[(&str, &str)], annotations: &[(&str, &str)]| {
        let pairs = |list: &[(&str, &str)]| list.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        full_server_with(|s| {
            s.spec.pod_template = Some(PodTemplateMetadata {
                labels: pairs(labels),
                annotations: pairs(annotations),
            })
        })
    };
    let mesh = with(
        &[("team", "search"), ("app.kubernetes.io/part-of", "portal")],
        &[("sidecar.istio.io/inject", "true"), ("prometheus.io/scheme", "https")],
    );
    assert_valid("own labels and annotations", mesh.validate_cel());
    for label in OPERATOR_POD_LABELS {
        let server = with(&[("team", "search"), (label, "x")], &[]);
        assert_rejected_at(
            label,
            server.validate_cel(),
            POD_LABELS_RESERVED,
            "spec.podTemplate.labels",
        );
    }
    for annotation in OPERATOR_POD_ANNOTATIONS {
        let server = with(&[], &[(annotation, "x")]);
        assert_rejected_at(
            annotation,
            server.validate_cel(),
            POD_ANNOTATIONS_RESERVED,
            "spec.podTemplate.annotations",
        );
    }
}

#[test]
fn telemetry_cannot_set_the_operator_s_resource_attributes() {
    let with = |name: &str| {
        full_server_with(|s| {
            s.spec.telemetry = Some(TelemetrySpec {
                resource_attributes: [("deployment.environment.name", "production"), (name, "x")]
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect(),
                ..TelemetrySpec::default()
            })
        })
    };
    assert_valid("own attributes", with("k8s.cluster.name").validate_cel());
    for name in OPERATOR_RESOURCE_ATTRIBUTES {
        assert_rejected_at(
            name,
            with(name).validate_cel(),
            RESOURCE_ATTRIBUTES_RESERVED,
            "spec.telemetry.resourceAttributes",
        );
    }
}

// ── 2. McpAccessPolicy rules ─────────────────────────────────────────────────────────────────────

#[test]
fn a_policy_targets_servers() {
    let untargeted = mutated_policy(|p| p.spec.target_refs.clear());
    assert_rejected_at("no target", untargeted.validate_cel(), POLICY_TARGETS, "spec");

    let by_label = mutated_policy(|p| {
        p.spec.target_refs.clear();
        p.spec.target_selector = Some(LabelSelector {
            match_labels: Some([("palisade.dev/team".to_owned(), "a".to_owned())].into()),
            match_expressions: None,
        });
    });
    assert_valid("targetSelector only", by_label.validate_cel());

    let both = mutated_policy(|p| {
        p.spec.target_refs.push(TargetRef {
            name: "sso-docs".into(),
            namespace: None,
        });
        p.spec.target_selector = Some(LabelSelector::default());
    });
    assert_valid("targetRefs and targetSelector", both.validate_cel());
}

#[test]
fn role_names_are_unique() {
    let duplicate = mutated_policy(|p| {
        let mut role = p.spec.roles[0].clone();
        role.scopes = vec!["confidential:read".into()];
        p.spec.roles.push(role);
    });
    let at = format!("spec.roles[{}]", duplicate.spec.roles.len() - 1);
    assert_duplicate_at("duplicate role", &duplicate, &at);
}

#[test]
fn several_rules_may_share_a_match_as_alternatives() {
    // `tools` is an atomic list: a second rule for one match is an alternative, not a duplicate.
    let alternative = mutated_policy(|p| {
        let mut rule = p.spec.tools[0].clone();
        rule.required_scopes = vec![];
        p.spec.tools.push(rule);
    });
    assert_no_duplicate("a second rule for one match", &alternative);

    // Argument constraints are checked at admission: min above max, numeric and string
    // constraints on one argument (a glob's normal form is its schema pattern, see crd_schema).
    let with_arguments = |yaml: &str| {
        mutated_policy(|p| {
            p.spec.tools[0].arguments = yaml_serde::from_str(yaml).unwrap();
        })
    };
    assert_valid(
        "argument constraints",
        with_arguments("{path: {glob: [\"/data/public/**\"]}, n: {min: 1, max: 2}, t: {in: [a], regex: \"[a-z]+\"}}")
            .validate_cel(),
    );
    assert_rejected(
        "min > max",
        with_arguments("{n: {min: 5, max: 1}}").validate_cel(),
        ARGUMENT_MIN_MAX,
    );
    assert_rejected(
        "number and string",
        with_arguments("{n: {min: 1, in: [a]}}").validate_cel(),
        ARGUMENT_ONE_TYPE,
    );

    // Overlapping globs are different matches (the most specific wins at evaluation).
    let globs = mutated_policy(|p| {
        for glob in ["get_*", "*"] {
            p.spec.tools.push(ToolRuleSpec {
                match_: glob.into(),
                required_scopes: vec!["public:read".into()],
                arguments: Default::default(),
            });
        }
    });
    assert_no_duplicate("overlapping globs", &globs);
}

#[test]
fn every_binding_names_a_defined_role() {
    let undefined = mutated_policy(|p| p.spec.bindings[1].role = "strategy".into());
    assert_rejected_at(
        "undefined role",
        undefined.validate_cel(),
        BINDING_ROLE_DEFINED,
        "spec.bindings",
    );

    let no_roles = mutated_policy(|p| p.spec.roles.clear());
    assert_rejected("bindings without roles", no_roles.validate_cel(), BINDING_ROLE_DEFINED);
}

#[test]
fn test_names_are_unique() {
    let duplicate = mutated_policy(|p| {
        let mut test = p.spec.tests[1].clone();
        test.name = p.spec.tests[0].name.clone();
        p.spec.tests.push(test);
    });
    let at = format!("spec.tests[{}]", duplicate.spec.tests.len() - 1);
    assert_duplicate_at("duplicate test", &duplicate, &at);
}

fn policy_with_granted_scope(scope: &str) -> McpAccessPolicy {
    mutated_policy(|p| p.spec.roles[1].scopes.push(scope.into()))
}

fn policy_with_required_scope(scope: &str) -> McpAccessPolicy {
    mutated_policy(|p| p.spec.tools[1].required_scopes.push(scope.into()))
}

#[test]
fn granted_scopes_are_scope_tokens_with_whole_segment_wildcards() {
    for bad in [
        "doc*:read",    // partial wildcard, first segment
        "docs:re*",     // partial wildcard, last segment
        "docs:*read",   // partial wildcard, leading star
        "docs:**",      // two stars are not a segment wildcard
        "**",           // idem, alone
        "docs:*:re*ad", // a whole-segment wildcard does not excuse a partial one
        "docs read",    // space (the separator of the scope claim)
        "docs:read ",   // trailing space
        "docs\tread",   // control character
        "docs\"read",   // '"' is not a scope-token character
        "docs\\read",   // nor is '\'
        "dócs:read",    // non-ASCII
        "",             // empty (also minLength 1 in the schema)
    ] {
        let errors = assert_rejected(bad, policy_with_granted_scope(bad).validate_cel(), GRANTED_SCOPE);
        let paths: Vec<&str> = errors.iter().map(|e| e.field_path.as_str()).collect();
        assert_eq!(paths, ["spec.roles[1].scopes"], "{bad:?}");
    }
    for good in [
        "docs:*",
        "*:read",
        "*",
        "*:*",
        "docs:*:all",
        "api://sso-mcp-server/read",
        "checklist.read",
        "https://graph.microsoft.com/User.Read",
        "public:read!#$%&'()+,-./;<=>?@[]^_`{|}~",
        "openid",
    ] {
        assert_valid(good, policy_with_granted_scope(good).validate_cel());
    }
}

/// A scope token may have empty `:`-segments (RFC 6749 allows any scope-token character, `:`
/// included, anywhere). Tools may require such a scope (the literal regex and
/// `check_literal_scope` accept it) and `ScopeGrant::parse` accepts it as a grant, so a role must be
/// able to grant it too; a whole-segment wildcard next to an empty segment is well-formed as well.
#[test]
fn granted_scopes_may_have_empty_segments_like_required_scopes() {
    for scope in ["docs::read", ":read", "docs:", "docs::*", "*:"] {
        assert!(ScopeGrant::parse(scope).is_ok(), "{scope:?}");
        // The same scope with its wildcard spelt out, as a tool would require it.
        assert_valid(
            &format!("required scope {scope:?}"),
            policy_with_required_scope(&scope.replace('*', "any")).validate_cel(),
        );
        assert_valid(
            &format!("granted scope {scope:?}"),
            policy_with_granted_scope(scope).validate_cel(),
        );
    }
}

#[test]
fn required_scopes_are_literal_scope_tokens() {
    for bad in [
        "docs:*",     // wildcards are for grants only
        "*",          // idem
        "*:read",     // idem
        "doc*:read",  // idem
        "docs read",  // space
        "docs\"read", // '"'
        "docs\\read", // '\'
        "docs\nread", // control character
        "dócs:read",  // non-ASCII
        "",           // empty
    ] {
        let errors = assert_rejected(bad, policy_with_required_scope(bad).validate_cel(), REQUIRED_SCOPE);
        let paths: Vec<&str> = errors.iter().map(|e| e.field_path.as_str()).collect();
        assert_eq!(paths, ["spec.tools[1].requiredScopes"], "{bad:?}");
    }
    for good in [
        "checklist.read",
        "api://sso-mcp-server/read",
        "public:read",
        "a:b:c:d",
        "public:read!#$%&'()+,-./;<=>?@[]^_`{|}~",
    ] {
        assert_valid(good, policy_with_required_scope(good).validate_cel());
    }
    let none = mutated_policy(|p| p.spec.tools[0].required_scopes.clear());
    assert_valid("no required scopes", none.validate_cel());
}

#[test]
fn a_binding_names_someone() {
    // (The sample's binding qualifies its groups with an issuer; a binding without names has none.)
    let nobody = mutated_policy(|p| {
        p.spec.bindings[0].groups.clear();
        p.spec.bindings[0].issuer = None;
    });
    assert_rejected_at(
        "empty binding",
        nobody.validate_cel(),
        BINDING_SOMEONE,
        "spec.bindings[0]",
    );

    for (what, mutate) in [
        (
            "subject",
            (|b| b.subjects = vec!["alice".into()]) as fn(&mut BindingSpec),
        ),
        ("service account", |b| {
            b.service_accounts = vec![ServiceAccountRef {
                namespace: Some("ci".into()),
                name: "deployer".into(),
            }]
        }),
        ("anonymous", |b| b.anonymous = true),
    ] {
        let policy = mutated_policy(|p| {
            p.spec.bindings[0].groups.clear();
            p.spec.bindings[0].issuer = None;
            mutate(&mut p.spec.bindings[0]);
        });
        assert_valid(what, policy.validate_cel());
    }
}

#[test]
fn a_binding_names_one_source_and_only_for_subjects_and_groups() {
    let both = mutated_policy(|p| {
        p.spec.bindings[0].issuer = Some("palisade-dev".into());
        p.spec.bindings[0].source = Some(BindingSource::ApiKeys);
    });
    assert_rejected_at(
        "issuer and source",
        both.validate_cel(),
        ISSUER_XOR_SOURCE,
        "spec.bindings[0]",
    );
    let anonymous = mutated_policy(|p| {
        p.spec.bindings[0].groups.clear();
        p.spec.bindings[0].anonymous = true;
        p.spec.bindings[0].issuer = None;
        p.spec.bindings[0].source = Some(BindingSource::ApiKeys);
    });
    assert_rejected_at(
        "source on an anonymous binding",
        anonymous.validate_cel(),
        QUALIFIER_NEEDS_NAMES,
        "spec.bindings[0]",
    );
    for source in [BindingSource::ApiKeys, BindingSource::ClientCertificates] {
        let policy = mutated_policy(|p| {
            p.spec.bindings[0].issuer = None;
            p.spec.bindings[0].source = Some(source);
        });
        assert_valid(&format!("{source:?}"), policy.validate_cel());
    }
    let test = mutated_policy(|p| {
        p.spec.tests[0].identity.issuer = Some("palisade-dev".into());
        p.spec.tests[0].identity.source = Some(BindingSource::ApiKeys);
    });
    assert_rejected_at(
        "test identity",
        test.validate_cel(),
        ISSUER_XOR_SOURCE,
        "spec.tests[0].identity",
    );
}

#[test]
fn a_binding_never_grants_unauthenticated_callers_by_name() {
    for (subjects, groups) in [
        (vec!["*"], vec![]),
        (vec!["system:anonymous"], vec![]),
        (vec!["alice", "*"], vec![]),
        (vec![], vec!["employees", "*"]),
        (vec![], vec!["system:unauthenticated"]),
    ] {
        let policy = mutated_policy(|p| {
            p.spec.bindings[0].subjects = subjects.iter().map(|s| (*s).to_owned()).collect();
            p.spec.bindings[0].groups = groups.iter().map(|g| (*g).to_owned()).collect();
        });
        assert_rejected_at(
            &format!("subjects {subjects:?}, groups {groups:?}"),
            policy.validate_cel(),
            BINDING_NO_WILDCARD,
            "spec.bindings[0]",
        );
    }
    // Names that merely contain these strings are ordinary names.
    let lookalikes = mutated_policy(|p| {
        p.spec.bindings[0].subjects = vec!["system:anonymous-auditor".into(), "a*".into()];
        p.spec.bindings[0].groups = vec!["system:authenticated".into(), "team-*".into()];
    });
    assert_valid("lookalike names", lookalikes.validate_cel());
}

#[test]
fn a_policy_test_asserts_something() {
    let empty = mutated_policy(|p| p.spec.tests[1].visible_tools = None);
    assert_rejected_at("no assertion", empty.validate_cel(), TEST_ASSERTS, "spec.tests[1]");
    // A proxy's test may assert on prompts or resources only.
    for field in 0..4 {
        let mut only = empty.clone();
        let test = &mut only.spec.tests[1];
        let list = match field {
            0 => &mut test.allowed_prompts,
            1 => &mut test.denied_prompts,
            2 => &mut test.allowed_resources,
            _ => &mut test.denied_resources,
        };
        list.push("simple-prompt".into());
        assert_valid("a prompt or resource assertion", only.validate_cel());
    }

    // `visibleTools: []` asserts that nothing is visible (the "no scopes" tests of both samples do).
    let nothing_visible = mutated_policy(|p| p.spec.tests[1].visible_tools = Some(vec![]));
    assert_valid("visibleTools: []", nothing_visible.validate_cel());
    let denied_only = mutated_policy(|p| {
        p.spec.tests[1].visible_tools = None;
        p.spec.tests[1].denied = vec!["get_confidential_info".into()];
    });
    assert_valid("denied only", denied_only.validate_cel());
    let allowed_only = mutated_policy(|p| {
        p.spec.tests[1].visible_tools = None;
        p.spec.tests[1].allowed = vec!["get_public_info".into()];
    });
    assert_valid("allowed only", allowed_only.validate_cel());
}

#[test]
fn a_policy_test_does_not_both_allow_and_deny_a_tool() {
    let overlap = mutated_policy(|p| p.spec.tests[0].allowed.push("get_confidential_info".into()));
    assert_rejected_at(
        "allowed and denied",
        overlap.validate_cel(),
        TEST_ALLOWED_DENIED,
        "spec.tests[0]",
    );
}

#[test]
fn an_anonymous_test_identity_carries_nothing_else() {
    let anonymous = |mutate: fn(&mut TestIdentity)| {
        mutated_policy(|p| {
            p.spec.tests.push(PolicyTestSpec {
                name: "anonymous callers see nothing".into(),
                identity: TestIdentity {
                    anonymous: true,
                    ..TestIdentity::default()
                },
                visible_tools: Some(vec![]),
                allowed: vec![],
                denied: vec![],
                allowed_calls: vec![],
                denied_calls: vec![],
                allowed_prompts: vec![],
                denied_prompts: vec![],
                allowed_resources: vec![],
                denied_resources: vec![],
            });
            mutate(&mut p.spec.tests.last_mut().unwrap().identity);
        })
    };
    assert_valid("anonymous", anonymous(|_| {}).validate_cel());
    for (what, mutate) in [
        (
            "subject",
            (|i| i.subject = Some("alice".into())) as fn(&mut TestIdentity),
        ),
        ("scopes", |i| i.scopes = vec!["public:read".into()]),
        ("roles", |i| i.roles = vec!["employee".into()]),
        ("groups", |i| i.groups = vec!["employees".into()]),
        ("service account", |i| {
            i.service_account = Some(ServiceAccountRef {
                namespace: None,
                name: "deployer".into(),
            })
        }),
    ] {
        assert_rejected_at(
            &format!("anonymous with {what}"),
            anonymous(mutate).validate_cel(),
            ANONYMOUS_IDENTITY,
            "spec.tests[5].identity",
        );
    }
    // Without `anonymous`, an identity may be empty (a token without claims of interest).
    let empty = mutated_policy(|p| p.spec.tests[2].identity = TestIdentity::default());
    assert_valid("empty identity", empty.validate_cel());
}

// ── 3. The CEL scope regexes agree with the Rust scope parser ────────────────────────────────────

/// Granted and required scopes: valid and invalid, including the edge cases where a regex and a
/// hand-written parser tend to disagree (empty segments, stars, the excluded characters).
const SCOPE_CASES: [&str; 36] = [
    "docs:read",
    "docs:*",
    "*:read",
    "*",
    "*:*",
    "docs:*:all",
    "api://sso-mcp-server/read",
    "checklist.read",
    "https://graph.microsoft.com/User.Read",
    "!#$%&'()+,-./;<=>?@[]^_`{|}~",
    "doc*:read",
    "docs:re*",
    "docs:*read",
    "docs:**",
    "**",
    "*docs",
    "docs read",
    "docs\tread",
    "docs\"read",
    "docs\\read",
    "dócs",
    "docs:read\u{7f}",
    "",
    // Empty segments: RFC 6749 scope tokens may contain "::", a leading or a trailing ':'.
    "docs::read",
    ":read",
    "docs:",
    ":",
    "::",
    "docs::*",
    "*:",
    ":*",
    "a:b:c",
    "A-Z_0.9~",
    "scope=x",
    "[docs]",
    "@admin",
];

/// Whether `policy` (which differs from a valid one only in one list of scopes) passes its CEL
/// rules; if not, the scope rule with `message` must be the only one that failed.
fn cel_accepts(policy: McpAccessPolicy, scope: &str, message: &str) -> bool {
    match policy.validate_cel() {
        Ok(()) => true,
        Err(errors) => {
            assert!(
                errors
                    .iter()
                    .all(|e| e.kind == ErrorKind::ValidationFailure && e.message == message),
                "{scope:?}: unexpected CEL errors:{}",
                describe(&errors)
            );
            false
        }
    }
}

#[test]
fn the_granted_scope_regex_agrees_with_scope_grant_parse() {
    assert!(
        policy_rule_text("spec.roles[].scopes").contains(&GRANTED_SCOPE_REGEX.replace('\\', r"\\")),
        "the RoleSpec.scopes rule is built from GRANTED_SCOPE_REGEX"
    );
    let disagreements: Vec<String> = SCOPE_CASES
        .iter()
        .filter_map(|scope| {
            let rust = ScopeGrant::parse(scope);
            let policy = mutated_policy(|p| p.spec.roles[0].scopes = vec![(*scope).to_owned()]);
            let cel = cel_accepts(policy, scope, GRANTED_SCOPE);
            (rust.is_ok() != cel).then(|| format!("{scope:?}: ScopeGrant::parse = {rust:?}, CEL accepts = {cel}"))
        })
        .collect();
    assert!(
        disagreements.is_empty(),
        "GRANTED_SCOPE_REGEX {GRANTED_SCOPE_REGEX:?} and ScopeGrant::parse disagree on:\n  {}",
        disagreements.join("\n  ")
    );
}

#[test]
fn the_literal_scope_regex_agrees_with_check_literal_scope() {
    assert!(
        policy_rule_text("spec.tools[].requiredScopes").contains(&LITERAL_SCOPE_REGEX.replace('\\', r"\\")),
        "the ToolRuleSpec.requiredScopes rule is built from LITERAL_SCOPE_REGEX"
    );
    let disagreements: Vec<String> = SCOPE_CASES
        .iter()
        .filter_map(|scope| {
            let rust = check_literal_scope(scope);
            let policy = mutated_policy(|p| p.spec.tools[0].required_scopes = vec![(*scope).to_owned()]);
            let cel = cel_accepts(policy, scope, REQUIRED_SCOPE);
            (rust.is_ok() != cel).then(|| format!("{scope:?}: check_literal_scope = {rust:?}, CEL accepts = {cel}"))
        })
        .collect();
    assert!(
        disagreements.is_empty(),
        "LITERAL_SCOPE_REGEX {LITERAL_SCOPE_REGEX:?} and check_literal_scope disagree on:\n  {}",
        disagreements.join("\n  ")
    );
}

/// The text of the one CEL rule at `path` of the McpAccessPolicy schema.
fn policy_rule_text(path: &str) -> String {
    let site = rule_sites(&schema_of(&McpAccessPolicy::crd()))
        .into_iter()
        .find(|site| site.path == path)
        .unwrap_or_else(|| panic!("no rule at {path}"));
    assert_eq!(site.rules.len(), 1, "{path}");
    site.rules[0]["rule"].as_str().unwrap().to_owned()
}

// ── 4. Static analysis of every rule ─────────────────────────────────────────────────────────────

/// The openAPIV3Schema of a CRD as JSON.
fn schema_of(
    crd: &palisade_crds::k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
) -> Value {
    assert_eq!(crd.spec.versions.len(), 1);
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .unwrap();
    serde_json::to_value(schema).unwrap()
}

/// A schema node that carries `x-kubernetes-validations`.
struct RuleSite {
    /// Dotted path of the node, `[]` for list items (`spec.roles[].scopes`).
    path: String,
    node: Value,
    rules: Vec<Value>,
}

fn rule_sites(schema: &Value) -> Vec<RuleSite> {
    fn walk(node: &Value, path: String, sites: &mut Vec<RuleSite>) {
        if let Some(rules) = node.get("x-kubernetes-validations").and_then(Value::as_array) {
            sites.push(RuleSite {
                path: path.clone(),
                node: node.clone(),
                rules: rules.clone(),
            });
        }
        if let Some(properties) = node.get("properties").and_then(Value::as_object) {
            for (name, child) in properties {
                let child_path = if path.is_empty() {
                    name.clone()
                } else {
                    format!("{path}.{name}")
                };
                walk(child, child_path, sites);
            }
        }
        if let Some(items) = node.get("items") {
            walk(items, format!("{path}[]"), sites);
        }
        if let Some(additional) = node.get("additionalProperties").filter(|a| a.is_object()) {
            walk(additional, format!("{path}{{}}"), sites);
        }
        for keyword in ["allOf", "anyOf", "oneOf"] {
            for (i, branch) in node
                .get(keyword)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                walk(branch, format!("{path}({keyword}[{i}])"), sites);
            }
        }
    }
    let mut sites = Vec::new();
    walk(schema, String::new(), &mut sites);
    sites
}

/// The names selected with `.name` in a CEL expression, outside string literals (field names and
/// method names alike).
fn selected_names(rule: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut chars = rule.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                while let Some(d) = chars.next() {
                    if d == '\\' {
                        chars.next();
                    } else if d == c {
                        break;
                    }
                }
            }
            '.' => {
                let mut name = String::new();
                while let Some(&d) = chars.peek().filter(|d| d.is_ascii_alphanumeric() || **d == '_') {
                    name.push(d);
                    chars.next();
                }
                if !name.is_empty() {
                    names.insert(name);
                }
            }
            _ => {}
        }
    }
    names
}

/// The iteration variables a rule binds with the comprehension macros (`all`, `exists`,
/// `exists_one`, `map`, `filter`).
fn macro_variables(rule: &str) -> BTreeSet<String> {
    let mut variables = BTreeSet::new();
    for name in ["all", "exists", "exists_one", "map", "filter"] {
        for (at, _) in rule.match_indices(&format!(".{name}(")) {
            let rest = &rule[at + name.len() + 2..];
            if let Some((variable, _)) = rest.split_once(',') {
                let variable = variable.trim();
                if !variable.is_empty() && variable.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    variables.insert(variable.to_owned());
                }
            }
        }
    }
    variables
}

#[test]
fn macro_variables_are_found() {
    let rule = "self.tools.all(t, self.documents.exists(d, d.collection == t.collection)) && self.map( x ,x)";
    let expected: BTreeSet<String> = ["t", "d", "x"].into_iter().map(String::from).collect();
    assert_eq!(macro_variables(rule), expected);
    // A free variable is still reported by kube-cel, and is not mistaken for a bound one.
    let schema = serde_json::json!({"type": "object", "properties": {"a": {"type": "array", "maxItems": 4, "items": {"type": "string", "maxLength": 8}}}});
    let compiled = compile_schema(&schema);
    let rule = "self.a.all(s, s == object.metadata.name)";
    let free: Vec<String> = analyze_rule(rule, &compiled, ScopeContext::CrdValidation)
        .into_iter()
        .filter(|w| w.kind == WarningKind::WrongScope)
        .map(|w| w.message)
        .filter(|m| {
            !macro_variables(rule)
                .iter()
                .any(|v| m.starts_with(&format!("variable '{v}' ")))
        })
        .collect();
    assert_eq!(free.len(), 1, "{free:?}");
    assert!(free[0].starts_with("variable 'object' "), "{free:?}");
}

/// Every list a rule can iterate must have `maxItems`, and every string it reads `maxLength` (or an
/// `enum`), or the apiserver's cost estimate assumes the request-size worst case. Checks `node`
/// and, through objects, the properties whose names the rule selects.
fn missing_bounds(node: &Value, path: &str, names: &BTreeSet<String>, problems: &mut Vec<String>) {
    match node.get("type").and_then(Value::as_str) {
        Some("array") => {
            if node.get("maxItems").is_none() {
                problems.push(format!("{path}: list without maxItems"));
            }
            if let Some(items) = node.get("items") {
                missing_bounds(items, &format!("{path}[]"), names, problems);
            }
        }
        Some("string") if node.get("maxLength").is_none() && node.get("enum").is_none() => {
            problems.push(format!("{path}: string without maxLength"));
        }
        Some("object") => {
            for (name, child) in node.get("properties").and_then(Value::as_object).into_iter().flatten() {
                if names.contains(name) {
                    missing_bounds(child, &format!("{path}.{name}"), names, problems);
                }
            }
        }
        _ => {}
    }
}

#[test]
fn every_rule_compiles_and_passes_kube_cel_static_analysis() {
    let mut problems = Vec::new();
    let mut rules = 0;
    for (kind, schema) in [
        ("McpServer", schema_of(&McpServer::crd())),
        ("McpAccessPolicy", schema_of(&McpAccessPolicy::crd())),
    ] {
        for site in rule_sites(&schema) {
            let at = format!("{kind} {}", site.path);
            let compiled = compile_schema(&site.node);
            if compiled.has_errors() {
                for error in compiled.compilation_errors() {
                    problems.push(format!("{at}: compilation error: {error}"));
                }
            }
            assert_eq!(compiled.validations.len(), site.rules.len(), "{at}");
            for rule in &site.rules {
                rules += 1;
                let text = rule["rule"].as_str().unwrap();
                let bound = macro_variables(text);
                for warning in analyze_rule(text, &compiled, ScopeContext::CrdValidation) {
                    // kube-cel 0.8 takes its variables from cel 0.13's `references()`, which also
                    // lists the iteration variables of macros (`d` in `self.all(d, ...)`), so each
                    // of them comes back as WrongScope. Only a free variable is a real finding.
                    if warning.kind == WarningKind::WrongScope
                        && bound
                            .iter()
                            .any(|v| warning.message.starts_with(&format!("variable '{v}' ")))
                    {
                        continue;
                    }
                    let kind_name = match warning.kind {
                        WarningKind::CostExceeded => "cost exceeded",
                        WarningKind::WrongScope => "wrong scope",
                        WarningKind::MissingBounds => "missing bounds",
                        _ => "other warning",
                    };
                    problems.push(format!("{at}: {kind_name}: {} (rule: {text})", warning.message));
                }
                let mut missing = Vec::new();
                missing_bounds(&site.node, &site.path, &selected_names(text), &mut missing);
                for m in missing {
                    problems.push(format!("{at}: {m} (rule: {text})"));
                }
            }
        }
    }
    // 30 McpServer rules (the SecretKeySource rule sits four times: HMAC keys, API keys, upstream
    // headers, the upstream's OAuth client secret) and 11 McpAccessPolicy rules (the
    // issuer-or-source rule sits on bindings and on test identities, the required-scope rule on
    // tool, prompt and resource rules).
    // Argument constraints: 2 rules on each of tool and prompt rules (which share the type; the
    // compiler refuses constraints on prompts).
    // Scope implications: the broader scope, what it implies, not itself.
    assert_eq!(rules, 33 + 14 + 4 + 3, "number of x-kubernetes-validations entries");
    assert!(
        problems.is_empty(),
        "static analysis of the CEL rules:\n  {}",
        problems.join("\n  ")
    );
}

// ── 5. List-map keys instead of uniqueness rules ─────────────────────────────────────────────────

/// Both kinds, for the offline list-map check.
trait Checked: CustomResourceExt + serde::Serialize {
    fn cel(&self) -> Result<(), ValidationErrors>;
}

impl Checked for McpServer {
    fn cel(&self) -> Result<(), ValidationErrors> {
        self.validate_cel()
    }
}

impl Checked for McpAccessPolicy {
    fn cel(&self) -> Result<(), ValidationErrors> {
        self.validate_cel()
    }
}

/// Field paths of the list items the API server refuses as `Duplicate value`: an item of a
/// list-map (`x-kubernetes-list-type: map`) whose keys an earlier item of the list has.
fn list_map_duplicates<K: Checked>(object: &K) -> Vec<String> {
    fn walk(schema: &Value, value: &Value, path: &str, out: &mut Vec<String>) {
        match value {
            Value::Object(fields) => {
                for (name, child) in fields {
                    if let Some(child_schema) = schema.get("properties").and_then(|p| p.get(name)) {
                        let child_path = if path.is_empty() {
                            name.clone()
                        } else {
                            format!("{path}.{name}")
                        };
                        walk(child_schema, child, &child_path, out);
                    }
                }
            }
            Value::Array(items) => {
                if schema["x-kubernetes-list-type"] == "map" {
                    let keys = schema["x-kubernetes-list-map-keys"].as_array().expect("map keys");
                    let mut seen = BTreeSet::new();
                    for (i, item) in items.iter().enumerate() {
                        let key: Vec<&Value> = keys
                            .iter()
                            .map(|k| item.get(k.as_str().unwrap()).unwrap_or(&Value::Null))
                            .collect();
                        if !seen.insert(serde_json::to_string(&key).unwrap()) {
                            out.push(format!("{path}[{i}]"));
                        }
                    }
                }
                for (i, item) in items.iter().enumerate() {
                    walk(&schema["items"], item, &format!("{path}[{i}]"), out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(
        &schema_of(&K::crd()),
        &serde_json::to_value(object).unwrap(),
        "",
        &mut out,
    );
    out
}

/// No CEL rule refuses `object` (uniqueness is no rule's job), and the API server's list-map
/// check refuses exactly the item at `path`.
#[track_caller]
fn assert_duplicate_at<K: Checked>(what: &str, object: &K, path: &str) {
    assert_valid(what, object.cel());
    assert_eq!(list_map_duplicates(object), [path], "{what}");
}

/// Neither CEL nor the list-map check refuses `object`.
#[track_caller]
fn assert_no_duplicate<K: Checked>(what: &str, object: &K) {
    assert_valid(what, object.cel());
    assert_eq!(list_map_duplicates(object), Vec::<String>::new(), "{what}");
}

/// Every list-map of a schema: `(path, keys)`, `[]` marking list items.
fn list_maps(schema: &Value) -> Vec<(String, Vec<String>)> {
    fn walk(node: &Value, path: String, out: &mut Vec<(String, Vec<String>)>) {
        if node["x-kubernetes-list-type"] == "map" {
            let keys = node["x-kubernetes-list-map-keys"]
                .as_array()
                .unwrap_or_else(|| panic!("{path}: a list-map without x-kubernetes-list-map-keys"))
                .iter()
                .map(|k| k.as_str().unwrap().to_owned())
                .collect();
            out.push((path.clone(), keys));
        }
        for (name, child) in node.get("properties").and_then(Value::as_object).into_iter().flatten() {
            let child_path = if path.is_empty() {
                name.clone()
            } else {
                format!("{path}.{name}")
            };
            walk(child, child_path, out);
        }
        if let Some(items) = node.get("items") {
            walk(items, format!("{path}[]"), out);
        }
    }
    let mut out = Vec::new();
    walk(schema, String::new(), &mut out);
    out
}

/// The schema node at a path of [`list_maps`].
fn node_at<'a>(schema: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(schema, |node, segment| {
        let (name, items) = match segment.strip_suffix("[]") {
            Some(name) => (name, true),
            None => (segment, false),
        };
        let node = &node["properties"][name];
        if items { &node["items"] } else { node }
    })
}

fn keyed(entries: &[(&str, &[&str])]) -> Vec<(String, Vec<String>)> {
    entries
        .iter()
        .map(|(path, keys)| ((*path).to_owned(), keys.iter().map(|k| (*k).to_owned()).collect()))
        .collect()
}

#[test]
fn the_lists_with_a_natural_key_are_list_maps() {
    let mut servers = list_maps(&schema_of(&McpServer::crd()));
    servers.sort();
    assert_eq!(
        servers,
        keyed(&[
            ("spec.auth.issuers", &["issuer"]),
            ("spec.documents", &["collection"]),
            ("spec.documents[].inline", &["name"]),
            ("spec.tools", &["name"]),
            ("spec.upstream.container.env", &["name"]),
            ("spec.upstream.headers", &["name"]),
            ("spec.upstream.tools", &["name"]),
            ("status.conditions", &["type"]),
            ("status.policyRollout", &["hash"]),
            ("status.upstream.tools", &["name"]),
        ])
    );
    let mut policies = list_maps(&schema_of(&McpAccessPolicy::crd()));
    policies.sort();
    // Bindings have no key (several may grant one role); targetRefs' namespace is optional; tool
    // rules have none (several rules of one match are alternatives).
    assert_eq!(
        policies,
        keyed(&[
            ("spec.prompts", &["match"]),
            ("spec.resources", &["match"]),
            ("spec.roles", &["name"]),
            ("spec.scopeImplications", &["scope"]),
            ("spec.tests", &["name"]),
            ("status.conditions", &["type"]),
            ("status.testResults", &["name", "server"]),
        ])
    );
}

/// The API server accepts a list-map only when its items are objects whose keys are required (or
/// defaulted) scalars; and an existing object stays valid when the key was required before.
#[test]
fn every_list_map_key_is_a_required_scalar() {
    for (kind, schema) in [
        ("McpServer", schema_of(&McpServer::crd())),
        ("McpAccessPolicy", schema_of(&McpAccessPolicy::crd())),
    ] {
        for (path, keys) in list_maps(&schema) {
            let items = &node_at(&schema, &path)["items"];
            assert_eq!(items["type"], "object", "{kind} {path}");
            let required: Vec<&str> = items["required"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            for key in keys {
                let property = &items["properties"][&key];
                assert!(
                    ["string", "integer", "boolean"].contains(&property["type"].as_str().unwrap_or_default()),
                    "{kind} {path}: key {key} is not a scalar: {property}"
                );
                assert!(
                    required.contains(&key.as_str()) || property.get("default").is_some(),
                    "{kind} {path}: key {key} is neither required nor defaulted"
                );
                assert!(
                    property.get("nullable").is_none(),
                    "{kind} {path}: key {key} is nullable"
                );
            }
        }
    }
}

/// The O(n^2) `exists_one` uniqueness rules are gone: the list-maps replace them.
#[test]
fn no_rule_does_uniqueness_with_exists_one() {
    for schema in [schema_of(&McpServer::crd()), schema_of(&McpAccessPolicy::crd())] {
        for site in rule_sites(&schema) {
            for rule in site.rules {
                let text = rule["rule"].as_str().unwrap();
                assert!(!text.contains("exists_one"), "{}: {text}", site.path);
            }
        }
    }
}

#[test]
fn test_results_are_keyed_by_case_and_server() {
    let mut policy = policy();
    let result = |name: &str, server: &str| palisade_crds::access_policy::TestResultStatus {
        name: name.into(),
        server: server.into(),
        passed: true,
        message: None,
    };
    policy.status = Some(palisade_crds::McpAccessPolicyStatus {
        test_results: vec![result("a", "s1"), result("a", "s2"), result("b", "s1")],
        ..Default::default()
    });
    assert_no_duplicate("one case on two servers", &policy);
    policy.status.as_mut().unwrap().test_results.push(result("a", "s2"));
    assert_duplicate_at("one case twice on one server", &policy, "status.testResults[3]");
}
