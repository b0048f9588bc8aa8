//! Prometheus metrics of the server, exposed in the OpenMetrics text format on the metrics port.
//!
//! What it does: owns one [`Registry`] with every metric family the server records (authentication attempts,
//! authorization checks, security violations, requests and their latency, JWKS fetches, policy reloads, the loaded
//! policy's hash, the number of loaded documents, readiness), and encodes it on demand.
//!
//! What it deliberately does not do:
//! - No per-caller labels. No subject, key id, token, client address or tool argument ever becomes a label value:
//!   such labels leak identities into a system with weaker access control and make cardinality unbounded.
//!   Every label is either a closed enum, a string from a fixed table ([`method_label`], [`status_class`]), a
//!   compile-time error code, or a value from the operator-controlled policy (JWKS issuer, policy hash).
//! - No HTTP serving. The caller mounts [`Metrics::encode`] on its own route with [`CONTENT_TYPE`].
//! - No global registry: one [`Metrics`] is created at start-up and shared (it is `Send + Sync`).

use std::borrow::Cow;
use std::hash::Hash;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// `Content-Type` of the body returned by [`Metrics::encode`].
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds (seconds) of the request-duration histogram: 100 µs to 2.5 s, growing by ×10 per decade in the
/// 1-2.5-5 steps. Written out rather than computed so that the `le` labels are exact decimals.
const DURATION_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Upper bounds (seconds) of the upstream-duration histogram: tools of upstream servers run for
/// seconds, so it goes on to 30 s (the longest `--upstream-timeout` a default request timeout allows).
const UPSTREAM_DURATION_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0,
];

/// The MCP methods that get their own `method` label value; anything else is counted as `other`.
const KNOWN_METHODS: [&str; 11] = [
    "initialize",
    "ping",
    "tools/list",
    "tools/call",
    "resources/list",
    "resources/read",
    "resources/templates/list",
    "prompts/list",
    "server/discover",
    "notifications/initialized",
    "notifications/cancelled",
];

/// Maps an MCP method name (caller-controlled) to a bounded label value: the method itself when it is one the
/// server knows, `"other"` otherwise.
pub fn method_label(method: &str) -> &'static str {
    KNOWN_METHODS
        .iter()
        .copied()
        .find(|known| *known == method)
        .unwrap_or("other")
}

/// Maps an HTTP status code to its class (`"2xx"`, `"4xx"`, ...); codes outside 100..=599 map to `"other"`.
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "other",
    }
}

/// Declares a closed set of label values: a plain enum with idiomatic variant names, its snake_case wire
/// spelling (`as_str`), and [`EncodeLabelValue`]. (The derive macro of prometheus-client writes the variant
/// identifier verbatim, which would force lower-case variant names.)
macro_rules! label_values {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $value:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
        pub enum $name {
            $(#[doc = concat!("`", $value, "`")] $variant),+
        }

        impl $name {
            /// The label value as exposed.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $value),+
                }
            }
        }

        impl EncodeLabelValue for $name {
            fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
                std::fmt::Write::write_str(encoder, self.as_str())
            }
        }
    };
}

label_values!(
    /// How a caller tried to authenticate.
    AuthMethod {
        Jwt => "jwt",
        ApiKey => "api_key",
        Anonymous => "anonymous",
        ClientCertificate => "client_certificate",
        None => "none",
    }
);
label_values!(
    /// Result of an authentication attempt or a policy reload.
    Outcome { Success => "success", Failure => "failure" }
);
label_values!(
    /// What an authorization check was about.
    AuthzKind { Tool => "tool", Resource => "resource", Prompt => "prompt", List => "list" }
);
label_values!(
    /// Result of an authorization check; `WouldDeny` is a denial in `Audit` mode, which lets the request through.
    AuthzDecision { Allow => "allow", Deny => "deny", WouldDeny => "would_deny" }
);
label_values!(
    /// Kinds of security violation.
    Violation {
        InvalidSignature => "invalid_signature",
        AlgNotAllowed => "alg_not_allowed",
        ForeignOrigin => "foreign_origin",
        PathTraversal => "path_traversal",
        Oversize => "oversize",
        RateLimited => "rate_limited",
        TokenInQuery => "token_in_query",
        DuplicateAuthorization => "duplicate_authorization",
    }
);
label_values!(
    /// Why the edge closed a connection as soon as it was accepted.
    ConnectionRefusal {
        ConnectionLimit => "connection_limit",
        UnauthenticatedPerClient => "unauthenticated_per_client",
    }
);
label_values!(
    /// Why a request was answered 503 (or 408) without being served.
    Shed {
        Overloaded => "overloaded",
        RequestTimeout => "request_timeout",
        BodyTimeout => "body_timeout",
        AuditUnavailable => "audit_unavailable",
    }
);
label_values!(
    /// Result of a JWKS (or OIDC discovery) fetch.
    JwksResult { Success => "success", Failure => "failure", RateLimited => "rate_limited", Busy => "busy" }
);
label_values!(
    /// Which mounted input a reload was about.
    ReloadFile { Policy => "policy", Documents => "documents", Secrets => "secrets" }
);

/// Labels of `palisade_connections_refused_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectionRefusalLabels {
    pub reason: ConnectionRefusal,
}

/// Labels of `palisade_requests_shed_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShedLabels {
    pub reason: Shed,
}

/// Labels of `mcp_authentication_attempts_total`. Build with [`AuthLabels::success`] / [`AuthLabels::failure`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuthLabels {
    pub method: AuthMethod,
    pub result: Outcome,
    /// `ok` on success, otherwise the lower-cased stable error code (e.g. `token_expired`).
    pub reason: Cow<'static, str>,
}

impl AuthLabels {
    /// A successful attempt (`reason="ok"`).
    pub fn success(method: AuthMethod) -> Self {
        Self {
            method,
            result: Outcome::Success,
            reason: Cow::Borrowed("ok"),
        }
    }

    /// A failed attempt. `code` is a stable error code; it is `'static` so that no caller-supplied text can become
    /// a label value. It is lower-cased (`TOKEN_EXPIRED` becomes `token_expired`).
    pub fn failure(method: AuthMethod, code: &'static str) -> Self {
        let reason = if code.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(code.to_ascii_lowercase())
        } else {
            Cow::Borrowed(code)
        };
        Self {
            method,
            result: Outcome::Failure,
            reason,
        }
    }
}

/// Labels of `mcp_authorization_checks_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuthzLabels {
    pub kind: AuthzKind,
    pub decision: AuthzDecision,
}

/// Labels of `mcp_tool_calls_total`. `tool` is a tool the server knows (one its policy document
/// defines, or one its upstream listed), so its cardinality is bounded by the tools served; a call
/// of a name the server does not know is not counted here (it is in
/// `mcp_authorization_checks_total`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ToolCallLabels {
    pub tool: String,
    pub decision: AuthzDecision,
    /// The decision's reason code (`granted`, `missing_scopes`, `argument_denied`, ...).
    pub reason: &'static str,
}

/// Labels of `mcp_tool_call_duration_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ToolLabels {
    pub tool: String,
}

/// Labels of `mcp_security_violations_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ViolationLabels {
    pub r#type: Violation,
}

/// Labels of `mcp_requests_total`. Build with [`RequestLabels::new`] so both values are bounded.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// From [`method_label`].
    pub method: &'static str,
    /// From [`status_class`].
    pub status: &'static str,
}

impl RequestLabels {
    /// Labels for an MCP method name (any string; unknown ones become `other`) and an HTTP status code.
    pub fn new(mcp_method: &str, http_status: u16) -> Self {
        Self {
            method: method_label(mcp_method),
            status: status_class(http_status),
        }
    }
}

/// Labels of `mcp_request_duration_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    /// From [`method_label`].
    pub method: &'static str,
}

/// Labels of `palisade_jwks_fetches_total`. The issuer comes from the mounted policy, never from a token that
/// failed validation, so its cardinality is bounded by the policy.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JwksLabels {
    pub issuer: String,
    pub result: JwksResult,
}

/// Labels of `palisade_policy_reloads_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    pub file: ReloadFile,
    pub result: Outcome,
}

/// Labels of `palisade_upstream_requests_total`: both values are compile-time strings (the
/// forwarded method, and `ok`, `error`, `unavailable`, `timeout` or `invalid`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    pub method: &'static str,
    pub outcome: &'static str,
}

/// Labels of `palisade_upstream_tools`: `offered` or `withheld`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamToolLabels {
    pub state: &'static str,
}

/// Labels of `palisade_upstream_tool_pins`: `pinned`, `changed` or `unpinned`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamPinLabels {
    pub pin: &'static str,
}

/// Labels of `palisade_policy_info`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyInfoLabels {
    pub hash: String,
}

/// Every metric of the server. Fields are handles into the registry: recording through them shows up in
/// [`Metrics::encode`].
pub struct Metrics {
    registry: Registry,
    pub authentication_attempts: Family<AuthLabels, Counter>,
    pub authorization_checks: Family<AuthzLabels, Counter>,
    pub security_violations: Family<ViolationLabels, Counter>,
    pub requests: Family<RequestLabels, Counter>,
    pub request_duration: Family<MethodLabels, Histogram>,
    pub tool_calls: Family<ToolCallLabels, Counter>,
    pub tool_call_duration: Family<ToolLabels, Histogram>,
    pub jwks_fetches: Family<JwksLabels, Counter>,
    pub policy_reloads: Family<ReloadLabels, Counter>,
    /// Value 1 for the loaded policy's hash; set only through [`Metrics::set_policy_hash`].
    pub policy_info: Family<PolicyInfoLabels, Gauge>,
    pub documents_loaded: Gauge,
    /// 1 when policy and documents are loaded, else 0.
    pub ready: Gauge,
    /// Connections open on the MCP listener.
    pub connections_open: Gauge,
    /// Connections closed as soon as they were accepted, by reason.
    pub connections_refused: Family<ConnectionRefusalLabels, Counter>,
    /// Requests answered without being served (load shedding, timeouts, audit unavailable), by reason.
    pub requests_shed: Family<ShedLabels, Counter>,
    /// Requests forwarded to the upstream (proxy mode), by method and outcome.
    pub upstream_requests: Family<UpstreamLabels, Counter>,
    /// Time the upstream took, by method.
    pub upstream_request_duration: Family<MethodLabels, Histogram>,
    /// 1 while the upstream is ready, else 0 (proxy mode).
    pub upstream_ready: Gauge,
    /// Upstream processes started again, and attempts to open the first session of an HTTP upstream again.
    pub upstream_restarts: Counter,
    /// The upstream's tools offered to the policy and withheld (names no rule can govern, duplicates).
    pub upstream_tools: Family<UpstreamToolLabels, Gauge>,
    /// `palisade_upstream_tool_pins{pin}`: the upstream's governable tools by how each compares
    /// with its pin.
    pub upstream_tool_pins: Family<UpstreamPinLabels, Gauge>,
    /// `palisade_trace_spans_exported_total` and `palisade_trace_spans_dropped_total{reason}`.
    pub trace_export: palisade_telemetry::ExportMetrics,
    /// The hash currently exposed by `policy_info`, so that a new one can replace it.
    current_policy_hash: Mutex<Option<String>>,
}

impl Metrics {
    /// Creates every metric family and registers it.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let authentication_attempts = Family::default();
        let authorization_checks = Family::default();
        let security_violations = Family::default();
        let requests = Family::default();
        let request_duration = Family::<MethodLabels, Histogram>::new_with_constructor(duration_histogram);
        let tool_calls = Family::default();
        let tool_call_duration = Family::<ToolLabels, Histogram>::new_with_constructor(duration_histogram);
        let jwks_fetches = Family::default();
        let policy_reloads = Family::default();
        let policy_info = Family::default();
        let documents_loaded = Gauge::default();
        let ready = Gauge::default();
        let connections_open = Gauge::default();
        let connections_refused = Family::default();
        let requests_shed = Family::default();
        let upstream_requests = Family::default();
        let upstream_request_duration =
            Family::<MethodLabels, Histogram>::new_with_constructor(|| Histogram::new(UPSTREAM_DURATION_BUCKETS));
        let upstream_ready = Gauge::default();
        let upstream_restarts = Counter::default();
        let upstream_tools = Family::default();
        let upstream_tool_pins = Family::default();

        // Counters get `_total` appended by prometheus-client.
        let r = &mut registry;
        r.register(
            "mcp_authentication_attempts",
            "Authentication attempts by method, result and reason",
            authentication_attempts.clone(),
        );
        r.register(
            "mcp_authorization_checks",
            "Authorization decisions by kind and decision",
            authorization_checks.clone(),
        );
        r.register(
            "mcp_security_violations",
            "Security violations by type",
            security_violations.clone(),
        );
        r.register(
            "mcp_requests",
            "MCP requests by method and HTTP status class",
            requests.clone(),
        );
        r.register_with_unit(
            "mcp_request_duration",
            "Time to answer an MCP request, by method",
            Unit::Seconds,
            request_duration.clone(),
        );
        r.register(
            "mcp_tool_calls",
            "tools/call of the tools the server knows, by tool, decision and reason",
            tool_calls.clone(),
        );
        r.register_with_unit(
            "mcp_tool_call_duration",
            "Time to answer an allowed tools/call, by tool",
            Unit::Seconds,
            tool_call_duration.clone(),
        );
        r.register(
            "palisade_jwks_fetches",
            "JWKS and OIDC discovery fetches by issuer and result",
            jwks_fetches.clone(),
        );
        r.register(
            "palisade_policy_reloads",
            "Reloads of mounted files by file and result",
            policy_reloads.clone(),
        );
        r.register(
            "palisade_policy_info",
            "Hash of the policy in force (value is always 1)",
            policy_info.clone(),
        );
        r.register(
            "palisade_documents_loaded",
            "Documents currently served",
            documents_loaded.clone(),
        );
        r.register(
            "palisade_ready",
            "1 when policy and documents are loaded, else 0",
            ready.clone(),
        );
        r.register(
            "palisade_connections_open",
            "Connections open on the MCP listener",
            connections_open.clone(),
        );
        r.register(
            "palisade_connections_refused",
            "Connections closed as soon as they were accepted, by reason",
            connections_refused.clone(),
        );
        r.register(
            "palisade_requests_shed",
            "Requests answered 503 or 408 without being served, by reason",
            requests_shed.clone(),
        );

        r.register(
            "palisade_upstream_requests",
            "Requests forwarded to the upstream MCP server, by method and outcome",
            upstream_requests.clone(),
        );
        r.register_with_unit(
            "palisade_upstream_request_duration",
            "Time the upstream MCP server took to answer, by method",
            Unit::Seconds,
            upstream_request_duration.clone(),
        );
        r.register(
            "palisade_upstream_ready",
            "1 while the upstream MCP server is ready, else 0",
            upstream_ready.clone(),
        );
        r.register(
            "palisade_upstream_restarts",
            "Upstream processes started again (stdio) and first sessions attempted again (HTTP)",
            upstream_restarts.clone(),
        );
        r.register(
            "palisade_upstream_tools",
            "The upstream's tools offered to the policy or withheld, by state",
            upstream_tools.clone(),
        );
        r.register(
            "palisade_upstream_tool_pins",
            "The upstream's tools by how their definition compares with their pin",
            upstream_tool_pins.clone(),
        );

        let trace_export = palisade_telemetry::ExportMetrics::new(r.sub_registry_with_prefix("palisade"));

        let metrics = Self {
            registry,
            authentication_attempts,
            authorization_checks,
            security_violations,
            requests,
            request_duration,
            tool_calls,
            tool_call_duration,
            jwks_fetches,
            policy_reloads,
            policy_info,
            documents_loaded,
            ready,
            connections_open,
            connections_refused,
            requests_shed,
            upstream_requests,
            upstream_request_duration,
            upstream_ready,
            upstream_restarts,
            upstream_tools,
            upstream_tool_pins,
            trace_export,
            current_policy_hash: Mutex::new(None),
        };
        metrics.initialize_closed_series();
        metrics
    }

    /// Creates, at 0, every series whose label values are a closed set, so that they are exposed from the first
    /// scrape: `increase(mcp_security_violations_total[1m]) > 0` then fires on the very first violation (a series
    /// that appears already at 1 shows no increase), and ratios have a denominator. Series with open label values
    /// (failure reasons, JWKS issuers, MCP methods) appear when first recorded.
    fn initialize_closed_series(&self) {
        for method in [
            AuthMethod::Jwt,
            AuthMethod::ApiKey,
            AuthMethod::Anonymous,
            AuthMethod::ClientCertificate,
        ] {
            create_at_zero(&self.authentication_attempts, &AuthLabels::success(method));
        }
        for kind in [AuthzKind::Tool, AuthzKind::Resource, AuthzKind::Prompt, AuthzKind::List] {
            for decision in [AuthzDecision::Allow, AuthzDecision::Deny, AuthzDecision::WouldDeny] {
                create_at_zero(&self.authorization_checks, &AuthzLabels { kind, decision });
            }
        }
        for violation in [
            Violation::InvalidSignature,
            Violation::AlgNotAllowed,
            Violation::ForeignOrigin,
            Violation::PathTraversal,
            Violation::Oversize,
            Violation::RateLimited,
            Violation::TokenInQuery,
            Violation::DuplicateAuthorization,
        ] {
            create_at_zero(&self.security_violations, &ViolationLabels { r#type: violation });
        }
        for reason in [
            ConnectionRefusal::ConnectionLimit,
            ConnectionRefusal::UnauthenticatedPerClient,
        ] {
            create_at_zero(&self.connections_refused, &ConnectionRefusalLabels { reason });
        }
        for reason in [
            Shed::Overloaded,
            Shed::RequestTimeout,
            Shed::BodyTimeout,
            Shed::AuditUnavailable,
        ] {
            create_at_zero(&self.requests_shed, &ShedLabels { reason });
        }
        for file in [ReloadFile::Policy, ReloadFile::Documents, ReloadFile::Secrets] {
            for result in [Outcome::Success, Outcome::Failure] {
                create_at_zero(&self.policy_reloads, &ReloadLabels { file, result });
            }
        }
        // Zero on a document server, as palisade_upstream_ready is.
        for outcome in ["ok", "error", "unavailable", "timeout", "invalid"] {
            create_at_zero(
                &self.upstream_requests,
                &UpstreamLabels {
                    method: "tools/call",
                    outcome,
                },
            );
        }
    }

    /// Creates, at 0, the fetch series of a JWKS or discovery issuer of the policy in force, so
    /// that a failing fetch shows as an increase from its first occurrence.
    pub fn declare_jwks_issuer(&self, issuer: &str) {
        for result in [
            JwksResult::Success,
            JwksResult::Failure,
            JwksResult::RateLimited,
            JwksResult::Busy,
        ] {
            create_at_zero(
                &self.jwks_fetches,
                &JwksLabels {
                    issuer: issuer.to_owned(),
                    result,
                },
            );
        }
    }

    /// The registry in the OpenMetrics text format (ends with `# EOF`). Serve it with [`CONTENT_TYPE`].
    pub fn encode(&self) -> String {
        let mut out = String::new();
        match prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            Ok(()) => out,
            Err(error) => {
                tracing::error!(%error, "encoding metrics failed");
                String::new()
            }
        }
    }

    /// Counts a connection refused at accept.
    pub fn connection_refused(&self, reason: ConnectionRefusal) {
        self.connections_refused
            .get_or_create(&ConnectionRefusalLabels { reason })
            .inc();
    }

    /// Counts a request answered without being served.
    pub fn request_shed(&self, reason: Shed) {
        self.requests_shed.get_or_create(&ShedLabels { reason }).inc();
    }

    /// Exposes `hash` as the policy in force: its `palisade_policy_info` series is set to 1 and the previous
    /// hash's series is removed, so exactly one series remains.
    pub fn set_policy_hash(&self, hash: &str) {
        let mut current = self.current_policy_hash.lock().unwrap_or_else(PoisonError::into_inner);
        if current.as_deref() == Some(hash) {
            return;
        }
        // Add the new series before removing the old one: a scrape in between sees two, never none.
        self.policy_info
            .get_or_create(&PolicyInfoLabels { hash: hash.to_owned() })
            .set(1);
        if let Some(previous) = current.replace(hash.to_owned()) {
            self.policy_info.remove(&PolicyInfoLabels { hash: previous });
        }
    }

    /// Counts a JWKS / discovery fetch of `issuer` (from the policy). `result` is `success`, `failure`,
    /// `rate_limited` or `busy`; any other value is a bug, logged and not recorded.
    pub fn jwks_fetched(&self, issuer: &str, result: &str) {
        let result = match result {
            "success" => JwksResult::Success,
            "failure" => JwksResult::Failure,
            "rate_limited" => JwksResult::RateLimited,
            "busy" => JwksResult::Busy,
            unknown => {
                tracing::warn!(result = unknown, "unknown JWKS fetch result not counted");
                return;
            }
        };
        self.jwks_fetches
            .get_or_create(&JwksLabels {
                issuer: issuer.to_owned(),
                result,
            })
            .inc();
    }

    /// Counts a reload of `file` (`policy`, `documents` or `secrets`; any other value is a bug, logged and not
    /// recorded).
    pub fn policy_reloaded(&self, file: &str, success: bool) {
        let file = match file {
            "policy" => ReloadFile::Policy,
            "documents" => ReloadFile::Documents,
            "secrets" => ReloadFile::Secrets,
            unknown => {
                tracing::warn!(file = unknown, "unknown reload file label not counted");
                return;
            }
        };
        let result = if success { Outcome::Success } else { Outcome::Failure };
        self.policy_reloads.get_or_create(&ReloadLabels { file, result }).inc();
    }

    /// Records one request forwarded to the upstream.
    pub fn observe_upstream(&self, method: &'static str, outcome: &'static str, elapsed: Duration) {
        self.upstream_request_duration
            .get_or_create(&MethodLabels {
                method: method_label(method),
            })
            .observe(elapsed.as_secs_f64());
        self.upstream_requests
            .get_or_create(&UpstreamLabels { method, outcome })
            .inc();
    }

    /// Sets how many of the upstream's tools are offered to the policy and how many are withheld.
    pub fn set_upstream_tools(&self, offered: usize, withheld: usize) {
        for (state, count) in [("offered", offered), ("withheld", withheld)] {
            self.upstream_tools
                .get_or_create(&UpstreamToolLabels { state })
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
    }

    /// Sets `palisade_upstream_tool_pins`: how many governable tools are `pinned`, `changed`
    /// and `unpinned`.
    pub fn set_upstream_tool_pins(&self, pinned: usize, changed: usize, unpinned: usize) {
        for (pin, count) in [("pinned", pinned), ("changed", changed), ("unpinned", unpinned)] {
            self.upstream_tool_pins
                .get_or_create(&UpstreamPinLabels { pin })
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
    }

    /// Records the decision on a `tools/call` of a tool the server knows, and for an allowed call
    /// the time from the request's arrival to its answer.
    pub fn observe_tool_call(&self, tool: &str, decision: AuthzDecision, reason: &'static str, elapsed: Duration) {
        self.tool_calls
            .get_or_create(&ToolCallLabels {
                tool: tool.to_owned(),
                decision,
                reason,
            })
            .inc();
        if decision == AuthzDecision::Allow {
            self.tool_call_duration
                .get_or_create(&ToolLabels { tool: tool.to_owned() })
                .observe(elapsed.as_secs_f64());
        }
    }

    /// Records one answered MCP request: increments `mcp_requests_total` and observes its duration.
    pub fn observe_request(&self, mcp_method: &str, http_status: u16, elapsed: Duration) {
        let labels = RequestLabels::new(mcp_method, http_status);
        self.request_duration
            .get_or_create(&MethodLabels { method: labels.method })
            .observe(elapsed.as_secs_f64());
        self.requests.get_or_create(&labels).inc();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Makes the series for `labels` exist (at 0) without recording anything.
fn create_at_zero<S: Clone + Hash + Eq>(family: &Family<S, Counter>, labels: &S) {
    drop(family.get_or_create(labels));
}

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAMILIES: [(&str, &str); 12] = [
        ("mcp_authentication_attempts", "counter"),
        ("mcp_authorization_checks", "counter"),
        ("mcp_security_violations", "counter"),
        ("mcp_requests", "counter"),
        ("mcp_request_duration_seconds", "histogram"),
        ("palisade_jwks_fetches", "counter"),
        ("palisade_policy_reloads", "counter"),
        ("palisade_policy_info", "gauge"),
        ("palisade_documents_loaded", "gauge"),
        ("palisade_ready", "gauge"),
        ("palisade_upstream_ready", "gauge"),
        ("palisade_upstream_restarts", "counter"),
    ];

    fn lines_starting_with(text: &str, prefix: &str) -> Vec<String> {
        text.lines()
            .filter(|line| line.starts_with(prefix))
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn closed_series_are_exposed_at_zero_from_the_start() {
        let text = Metrics::new().encode();
        for name in [
            "mcp_authentication_attempts",
            "mcp_authorization_checks",
            "mcp_security_violations",
        ] {
            assert!(
                text.contains(&format!("# TYPE {name} counter\n")),
                "no TYPE for {name} in\n{text}"
            );
        }
        for expected in [
            r#"mcp_security_violations_total{type="invalid_signature"} 0"#,
            r#"mcp_security_violations_total{type="duplicate_authorization"} 0"#,
            r#"mcp_authorization_checks_total{kind="list",decision="would_deny"} 0"#,
            r#"mcp_authentication_attempts_total{method="api_key",result="success",reason="ok"} 0"#,
            r#"palisade_policy_reloads_total{file="secrets",result="failure"} 0"#,
            "palisade_ready 0",
        ] {
            assert!(
                text.lines().any(|line| line == expected),
                "missing `{expected}` in\n{text}"
            );
        }
        assert_eq!(lines_starting_with(&text, "mcp_security_violations_total{").len(), 8);
        assert_eq!(lines_starting_with(&text, "mcp_authorization_checks_total{").len(), 12);
    }

    #[test]
    fn every_family_has_help_and_type() {
        let metrics = Metrics::new();
        metrics.observe_request("initialize", 200, Duration::from_millis(1));
        let jwks = JwksLabels {
            issuer: "palisade-dev".into(),
            result: JwksResult::Success,
        };
        metrics.jwks_fetches.get_or_create(&jwks).inc();
        metrics.set_policy_hash("abc");
        let text = metrics.encode();
        for (name, kind) in FAMILIES {
            assert!(
                text.contains(&format!("# HELP {name} ")),
                "no HELP for {name} in\n{text}"
            );
            assert!(
                text.contains(&format!("# TYPE {name} {kind}\n")),
                "no TYPE for {name} in\n{text}"
            );
        }
        assert!(text.contains("# UNIT mcp_request_duration_seconds seconds\n"));
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn counters_are_exposed_with_total_suffix_and_exact_labels() {
        let metrics = Metrics::new();
        metrics
            .authentication_attempts
            .get_or_create(&AuthLabels::success(AuthMethod::Jwt))
            .inc();
        let expired = AuthLabels::failure(AuthMethod::ApiKey, "TOKEN_EXPIRED");
        metrics.authentication_attempts.get_or_create(&expired).inc_by(2);
        let would_deny = AuthzLabels {
            kind: AuthzKind::Tool,
            decision: AuthzDecision::WouldDeny,
        };
        metrics.authorization_checks.get_or_create(&would_deny).inc();
        let violation = ViolationLabels {
            r#type: Violation::DuplicateAuthorization,
        };
        metrics.security_violations.get_or_create(&violation).inc();
        let jwks = JwksLabels {
            issuer: "https://accounts.google.com".into(),
            result: JwksResult::RateLimited,
        };
        metrics.jwks_fetches.get_or_create(&jwks).inc();
        let reload = ReloadLabels {
            file: ReloadFile::Documents,
            result: Outcome::Failure,
        };
        metrics.policy_reloads.get_or_create(&reload).inc();
        metrics.documents_loaded.set(7);
        metrics.ready.set(1);

        let text = metrics.encode();
        for expected in [
            r#"mcp_authentication_attempts_total{method="jwt",result="success",reason="ok"} 1"#,
            r#"mcp_authentication_attempts_total{method="api_key",result="failure",reason="token_expired"} 2"#,
            r#"mcp_authorization_checks_total{kind="tool",decision="would_deny"} 1"#,
            r#"mcp_security_violations_total{type="duplicate_authorization"} 1"#,
            r#"palisade_jwks_fetches_total{issuer="https://accounts.google.com",result="rate_limited"} 1"#,
            r#"palisade_policy_reloads_total{file="documents",result="failure"} 1"#,
            "palisade_documents_loaded 7",
            "palisade_ready 1",
        ] {
            assert!(
                text.lines().any(|line| line == expected),
                "missing `{expected}` in\n{text}"
            );
        }
    }

    #[test]
    fn requests_and_durations_use_bounded_labels() {
        let metrics = Metrics::new();
        metrics.observe_request("tools/call", 200, Duration::from_micros(300));
        metrics.observe_request("x/attacker-chosen-1", 404, Duration::from_millis(3));
        metrics.observe_request("x/attacker-chosen-2", 404, Duration::from_secs(10));

        let text = metrics.encode();
        let requests = lines_starting_with(&text, "mcp_requests_total");
        assert_eq!(requests.len(), 2, "unknown methods must share one series: {requests:?}");
        assert!(requests.contains(&r#"mcp_requests_total{method="tools/call",status="2xx"} 1"#.to_owned()));
        assert!(requests.contains(&r#"mcp_requests_total{method="other",status="4xx"} 2"#.to_owned()));
        assert!(!text.contains("attacker"));

        let other = r#"mcp_request_duration_seconds_bucket{le="0.005",method="other"} 1"#;
        assert!(text.lines().any(|line| line == other), "missing `{other}` in\n{text}");
        let inf = r#"mcp_request_duration_seconds_bucket{le="+Inf",method="other"} 2"#;
        assert!(text.lines().any(|line| line == inf), "missing `{inf}` in\n{text}");
        assert!(text.contains(r#"mcp_request_duration_seconds_count{method="tools/call"} 1"#));
    }

    #[test]
    fn duration_buckets_span_100us_to_2_5s_with_exact_bounds() {
        let metrics = Metrics::new();
        metrics.observe_request("ping", 200, Duration::ZERO);
        let text = metrics.encode();
        let bounds: Vec<String> = lines_starting_with(&text, "mcp_request_duration_seconds_bucket")
            .iter()
            .filter_map(|line| line.split("le=\"").nth(1)?.split('"').next().map(str::to_owned))
            .collect();
        let expected = [
            "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5",
            "1.0", "2.5", "+Inf",
        ];
        assert_eq!(bounds, expected);
        assert!(
            DURATION_BUCKETS
                .windows(2)
                .all(|pair| pair[1] / pair[0] <= 2.5 && pair[1] > pair[0])
        );
    }

    #[test]
    fn string_helpers_map_to_closed_label_values() {
        let metrics = Metrics::new();
        metrics.jwks_fetched("https://issuer.example", "rate_limited");
        metrics.jwks_fetched("https://issuer.example", "bogus");
        metrics.policy_reloaded("policy", true);
        metrics.policy_reloaded("secrets", false);
        metrics.policy_reloaded("bogus", false);
        let text = metrics.encode();
        for expected in [
            r#"palisade_jwks_fetches_total{issuer="https://issuer.example",result="rate_limited"} 1"#,
            r#"palisade_policy_reloads_total{file="policy",result="success"} 1"#,
            r#"palisade_policy_reloads_total{file="secrets",result="failure"} 1"#,
        ] {
            assert!(
                text.lines().any(|line| line == expected),
                "missing `{expected}` in\n{text}"
            );
        }
        assert_eq!(lines_starting_with(&text, "palisade_jwks_fetches_total{").len(), 1);
        assert_eq!(lines_starting_with(&text, "palisade_policy_reloads_total{").len(), 6);
        assert!(!text.contains("bogus"));
    }

    #[test]
    fn policy_hash_replacement_leaves_exactly_one_series() {
        let metrics = Metrics::new();
        metrics.set_policy_hash("aaaa");
        metrics.set_policy_hash("aaaa");
        metrics.set_policy_hash("bbbb");
        let text = metrics.encode();
        let series = lines_starting_with(&text, "palisade_policy_info{");
        assert_eq!(series, vec![r#"palisade_policy_info{hash="bbbb"} 1"#.to_owned()]);
    }

    #[test]
    fn method_label_is_bounded() {
        for known in KNOWN_METHODS {
            assert_eq!(method_label(known), known);
        }
        for unknown in [
            "",
            "tools/list ",
            "TOOLS/LIST",
            "prompts/get",
            "other",
            "tools/call\n",
            "../etc",
        ] {
            assert_eq!(method_label(unknown), "other", "{unknown:?}");
        }
    }

    #[test]
    fn status_class_is_bounded() {
        assert_eq!(status_class(200), "2xx");
        assert_eq!(status_class(202), "2xx");
        assert_eq!(status_class(401), "4xx");
        assert_eq!(status_class(403), "4xx");
        assert_eq!(status_class(503), "5xx");
        assert_eq!(status_class(0), "other");
        assert_eq!(status_class(600), "other");
    }

    #[test]
    fn no_identity_labels_exist() {
        let metrics = Metrics::new();
        metrics
            .authentication_attempts
            .get_or_create(&AuthLabels::success(AuthMethod::Anonymous))
            .inc();
        metrics
            .authorization_checks
            .get_or_create(&AuthzLabels {
                kind: AuthzKind::List,
                decision: AuthzDecision::Allow,
            })
            .inc();
        let text = metrics.encode();
        for forbidden in ["subject=", "sub=", "user=", "kid=", "key_id=", "token=", "client="] {
            assert!(!text.contains(forbidden), "{forbidden} found in\n{text}");
        }
    }
}
