//! The spans of one request.
//!
//! Whether a trace is sampled is decided before anything of it is built (see
//! `palisade_telemetry::sampling`): most are not, and an unsampled trace makes its ids and
//! nothing else. A sampled trace's spans are plain data ([`SpanData`]) written here and handed to
//! the export queue: no SDK span, context, lock or reference count per span.
//!
//! A request's trace context comes from its `traceparent` header, or, when the headers carry
//! none, from `params._meta` — which is known only once the body is read, after authentication.
//! So the request span begins when its parent is known (at once with a header context, else
//! when the message is parsed, else when the request ends), with the time the request arrived
//! as its start; what ran before (authentication and the JWKS fetches it made) is recorded with
//! its times and written as child spans when the request span begins. The request span is
//! written when the request ends; a child when it ends.
//!
//! The trace is a plain value of the request (no allocation, no task-local): what runs for the
//! request and records into its trace (a JWKS fetch, an upstream call) is handed it. Once a trace
//! is known to be unsampled, its methods return after one atomic load, except the upstream call's,
//! which still hands the upstream the trace's ids.
//!
//! Attribute values never include a credential or an argument value.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Instant, SystemTime};

use axum::http::{HeaderMap, Version};
use opentelemetry::trace::{Link, SpanContext, SpanId, SpanKind, Status, TraceContextExt as _};
use opentelemetry::{Context, KeyValue, Value as AttributeValue};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};
use palisade_telemetry::{DecidingTracer, Decision as Sampling};
use serde_json::{Map, Value};

use super::{UpstreamPeer, propagation};

/// Longest attribute value taken from a request (a JSON-RPC id, a tool name): longer ones are cut.
const MOST_ATTRIBUTE_BYTES: usize = 256;

/// Room for the request span's attributes, made when it begins: the most it gets (HTTP 3,
/// message 5, caller 1, decision 2, request facts 3, answer 4), so that it never grows.
const REQUEST_SPAN_ATTRIBUTES: usize = 18;

/// The spans of one request: see the module documentation.
pub struct RequestTrace {
    tracer: &'static DecidingTracer,
    /// When the request arrived, and the same on the wall clock (read only for a recorded trace).
    arrived: Instant,
    arrived_at: OnceLock<SystemTime>,
    /// The caller's span in the headers.
    header_parent: Option<SpanContext>,
    state: Mutex<State>,
    /// The trace is not sampled: nothing more is recorded (known without the lock).
    unsampled: AtomicBool,
}

#[derive(Default)]
struct State {
    /// JWKS fetches not yet written (under the authentication that made them).
    fetches: Vec<Recorded>,
    /// The authentication, when it ended before the request span began.
    authentication: Option<Authentication>,
    /// The request span's ids, once begun.
    begun: Option<Begun>,
    /// The request span of a recorded trace, until it is written (boxed: most requests have
    /// none, and the trace moves with the request); taken when it is written, so it is written
    /// once.
    request: Option<Box<RequestSpan>>,
    /// When the message was handed to its method.
    dispatched: Option<Instant>,
}

/// The request span's ids, once begun.
#[derive(Clone)]
enum Begun {
    /// Sampled: the span is recorded.
    Recording(SpanContext),
    /// Not sampled: only its ids (for an upstream, which follows the same decision), nothing
    /// else is made.
    Unsampled(SpanContext),
}

impl Begun {
    /// The ids of a recorded request span (an unsampled trace is recorded nowhere: there is
    /// nothing for an audit line to find).
    fn recording(&self) -> Option<&SpanContext> {
        match self {
            Self::Recording(ids) => Some(ids),
            Self::Unsampled(_) => None,
        }
    }
}

/// What the request span holds until it is written.
struct RequestSpan {
    /// The caller's span, when there is one.
    parent: Option<SpanContext>,
    name: Cow<'static, str>,
    attributes: Vec<KeyValue>,
    links: Vec<Link>,
    status: Status,
}

/// A request span's W3C ids, written in hex where they are serialized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceIds {
    /// The trace id.
    pub trace: opentelemetry::trace::TraceId,
    /// The request span's id.
    pub span: opentelemetry::trace::SpanId,
}

impl TraceIds {
    fn of(ids: &SpanContext) -> Self {
        Self {
            trace: ids.trace_id(),
            span: ids.span_id(),
        }
    }
}

/// An authentication that ended before the request span began: plain data until it is written
/// (most traces are not sampled).
struct Authentication {
    start: Instant,
    end: Instant,
    /// `Ok(method)` or `Err(reason code)`.
    outcome: Result<&'static str, &'static str>,
}

impl Authentication {
    /// The span, with the JWKS fetches it made.
    fn recorded(self, fetches: Vec<Recorded>) -> Recorded {
        Recorded {
            name: Cow::Borrowed("authenticate"),
            kind: SpanKind::Internal,
            start: self.start,
            end: self.end,
            attributes: Attributes::Authentication(self.outcome),
            failed: self.outcome.err(),
            children: fetches,
        }
    }
}

/// A child span, ended: written under its parent as soon as the parent's ids are known.
struct Recorded {
    name: Cow<'static, str>,
    kind: SpanKind,
    start: Instant,
    end: Instant,
    /// Its attributes, made only when it is written (most requests' traces are not sampled).
    attributes: Attributes,
    /// `error.type`, when it failed.
    failed: Option<&'static str>,
    children: Vec<Recorded>,
}

/// The attributes of a [`Recorded`] span.
enum Attributes {
    /// An authentication: `Ok(method)` or `Err(reason code)`.
    Authentication(Result<&'static str, &'static str>),
    /// A JWKS fetch: the issuer and the outcome.
    JwksFetch(String, &'static str),
    /// Made already (the span is written at once).
    Made(Vec<KeyValue>),
}

impl Attributes {
    fn made(self) -> Vec<KeyValue> {
        match self {
            Self::Authentication(Ok(method)) => vec![
                KeyValue::new("palisade.auth.method", method),
                KeyValue::new("palisade.auth.outcome", "success"),
            ],
            Self::Authentication(Err(reason)) => vec![KeyValue::new("palisade.auth.outcome", reason)],
            Self::JwksFetch(issuer, outcome) => vec![
                KeyValue::new("palisade.jwks.issuer", bounded(&issuer)),
                KeyValue::new("palisade.jwks.outcome", outcome),
            ],
            Self::Made(attributes) => attributes,
        }
    }
}

/// What the request span says about the message, once parsed.
pub struct Message<'a> {
    /// `mcp.method.name`.
    pub method: &'a str,
    /// The parameters (for the target and the `_meta` trace context).
    pub params: &'a Map<String, Value>,
    /// `jsonrpc.request.id`.
    pub id: &'a crate::mcp::jsonrpc::Id,
    /// `mcp.protocol.version`, when the request names it.
    pub protocol_version: Option<&'a str>,
}

/// An authorization decision, for the `authorize` span.
pub struct Decision<'a> {
    /// `tool`, `resource`, `prompt` or `list`.
    pub kind: &'static str,
    /// `allow`, `deny` or `audit_deny`.
    pub effect: &'static str,
    pub reason: &'a str,
    pub target: Option<&'a str>,
    pub rule: Option<&'a str>,
    pub granted_by: &'a [&'a str],
    pub missing_scopes: &'a [&'a str],
    /// For `argument_denied`: the argument's name and the constraint (never its value).
    pub argument: Option<(&'a str, &'a str)>,
    /// When the decision was made.
    pub decided: Instant,
    /// The work the decision allowed ran here (not upstream): its span follows the decision.
    pub local_work: bool,
}

impl RequestTrace {
    /// The trace of a request that arrived at `arrived` with `headers`.
    pub fn new(tracer: &'static DecidingTracer, arrived: Instant, headers: &HeaderMap) -> Self {
        let trace = Self {
            tracer,
            arrived,
            arrived_at: OnceLock::new(),
            header_parent: propagation::from_headers(headers),
            state: Mutex::new(State::default()),
            unsampled: AtomicBool::new(false),
        };
        // A context in the headers is the parent, whatever `_meta` says: begin now.
        if trace.header_parent.is_some() {
            trace.begin(None);
        }
        trace
    }

    fn is_unsampled(&self) -> bool {
        self.unsampled.load(Ordering::Acquire)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The request's clock: every time of its spans is read from one base.
    fn clock(&self) -> Clock {
        Clock {
            arrived: self.arrived,
            arrived_at: *self
                .arrived_at
                .get_or_init(|| SystemTime::now() - self.arrived.elapsed()),
        }
    }

    /// `at` on the wall clock.
    fn wall(&self, at: Instant) -> SystemTime {
        self.clock().wall(at)
    }

    /// Changes the request span, while it is not written.
    fn with_request(&self, change: impl FnOnce(&mut RequestSpan)) {
        if let Some(request) = self.state().request.as_deref_mut() {
            change(request);
        }
    }

    /// A JWKS fetch this request made (and waited for) from `start` until now.
    pub fn jwks_fetched(&self, issuer: &str, start: Instant, outcome: &'static str) {
        if self.is_unsampled() {
            return;
        }
        let fetch = Recorded {
            name: Cow::Borrowed("jwks.fetch"),
            kind: SpanKind::Client,
            start,
            end: Instant::now(),
            attributes: Attributes::JwksFetch(issuer.to_owned(), outcome),
            failed: (outcome != "success").then_some(outcome),
            children: Vec::new(),
        };
        self.state().fetches.push(fetch);
    }

    /// The authentication that ran from `start` until now: `Ok(method)` or `Err(reason code)`.
    #[inline]
    pub fn authenticated(&self, start: Instant, outcome: Result<&'static str, &'static str>) {
        if !self.is_unsampled() {
            self.record_authentication(start, outcome);
        }
    }

    /// [`RequestTrace::authenticated`] of a trace that may be sampled.
    fn record_authentication(&self, start: Instant, outcome: Result<&'static str, &'static str>) {
        let authentication = Authentication {
            start,
            end: Instant::now(),
            outcome,
        };
        let mut state = self.state();
        match &state.begun {
            Some(Begun::Recording(request)) => {
                let request = request.clone();
                let fetches = std::mem::take(&mut state.fetches);
                drop(state);
                self.emit(&request, authentication.recorded(fetches));
            }
            Some(Begun::Unsampled(_)) => {}
            None => state.authentication = Some(authentication),
        }
    }

    /// Begins the request span if it has not begun: its parent is the headers' context, else the
    /// one in `params._meta`, else none (a new trace). Returns the request span's ids when it
    /// records.
    fn begin(&self, params: Option<&Map<String, Value>>) -> Option<SpanContext> {
        let mut state = self.state();
        if let Some(request) = &state.begun {
            return request.recording().cloned();
        }
        let parent = self
            .header_parent
            .clone()
            .or_else(|| params.and_then(propagation::from_meta));
        let ids = match self.tracer.decide(parent.as_ref()) {
            Sampling::Record(ids) => ids,
            Sampling::Drop(ids) => {
                self.unsampled(&mut state, ids);
                return None;
            }
        };
        let mut attributes = Vec::with_capacity(REQUEST_SPAN_ATTRIBUTES);
        attributes.extend([
            KeyValue::new("http.request.method", "POST"),
            KeyValue::new("http.route", "/mcp"),
            KeyValue::new("url.path", "/mcp"),
        ]);
        state.request = Some(Box::new(RequestSpan {
            parent,
            name: Cow::Borrowed("POST /mcp"),
            attributes,
            links: Vec::new(),
            status: Status::Unset,
        }));
        // The JWKS fetches of an authentication still running stay for it to claim.
        let authentication = state
            .authentication
            .take()
            .map(|authentication| authentication.recorded(std::mem::take(&mut state.fetches)));
        state.begun = Some(Begun::Recording(ids.clone()));
        drop(state);
        if let Some(authentication) = authentication {
            self.emit(&ids, authentication);
        }
        Some(ids)
    }

    /// Begins an unsampled trace: nothing more is made for it, its ids are all it needs.
    fn unsampled(&self, state: &mut State, ids: SpanContext) {
        state.authentication = None;
        state.fetches.clear();
        state.begun = Some(Begun::Unsampled(ids));
        self.unsampled.store(true, Ordering::Release);
    }

    /// Writes `span` (and its children) under the recorded span `parent`.
    fn emit(&self, parent: &SpanContext, span: Recorded) {
        let ids = self.tracer.child_of(parent);
        for child in span.children {
            self.emit(&ids, child);
        }
        let mut attributes = span.attributes.made();
        let mut status = Status::Unset;
        if let Some(failure) = span.failed {
            attributes.push(KeyValue::new("error.type", failure));
            status = Status::error("");
        }
        Span {
            ids,
            parent: parent.span_id(),
            parent_is_remote: false,
            kind: span.kind,
            name: span.name,
            start: self.wall(span.start),
            end: self.wall(span.end),
            attributes,
            links: Vec::new(),
            status,
        }
        .write(self.tracer);
    }

    /// The W3C trace id and span id of the request span, beginning it if it has not begun;
    /// `None` when the trace is not sampled.
    #[inline]
    pub fn ids(&self) -> Option<TraceIds> {
        if self.is_unsampled() {
            return None;
        }
        self.begin(None).as_ref().map(TraceIds::of)
    }

    /// Like [`RequestTrace::ids`], but only if the request span has begun.
    #[inline]
    pub fn ids_if_begun(&self) -> Option<TraceIds> {
        if self.is_unsampled() {
            return None;
        }
        self.state().begun.as_ref().and_then(Begun::recording).map(TraceIds::of)
    }

    /// Describes the message on the request span (beginning it, with `_meta` as a possible
    /// parent), just before it is handed to its method.
    #[inline]
    pub fn dispatch(&self, message: &Message<'_>) {
        if !self.is_unsampled() {
            self.describe_message(message);
        }
    }

    /// [`RequestTrace::dispatch`] of a trace that may be sampled.
    fn describe_message(&self, message: &Message<'_>) {
        if self.begin(Some(message.params)).is_none() {
            return;
        }
        // Both carried a context and they differ: the request span follows the headers (the
        // nearest hop, e.g. a gateway) and links to the caller's `_meta` context.
        let link = self.header_parent.as_ref().and_then(|header| {
            propagation::from_meta(message.params)
                .filter(|meta| (header.trace_id(), header.span_id()) != (meta.trace_id(), meta.span_id()))
                .map(|meta| Link::new(meta, Vec::new(), 0))
        });
        let name = message.params.get("name").and_then(Value::as_str);
        let target = match message.method {
            "tools/call" | "prompts/get" => name,
            _ => None,
        };
        let span_name = match target {
            Some(target) => format!("{} {}", message.method, bounded(target)),
            None => message.method.to_owned(),
        };
        let mut attributes = Vec::with_capacity(5);
        attributes.push(KeyValue::new("mcp.method.name", bounded(message.method)));
        match message.id {
            crate::mcp::jsonrpc::Id::Number(id) => attributes.push(KeyValue::new("jsonrpc.request.id", id.to_string())),
            crate::mcp::jsonrpc::Id::String(id) => attributes.push(KeyValue::new("jsonrpc.request.id", bounded(id))),
            crate::mcp::jsonrpc::Id::Null => {}
        }
        if let Some(version) = message.protocol_version {
            attributes.push(KeyValue::new("mcp.protocol.version", bounded(version)));
        }
        match (message.method, name) {
            ("tools/call", Some(tool)) => attributes.extend([
                KeyValue::new("gen_ai.tool.name", bounded(tool)),
                KeyValue::new("gen_ai.operation.name", "execute_tool"),
            ]),
            ("prompts/get", Some(prompt)) => attributes.push(KeyValue::new("gen_ai.prompt.name", bounded(prompt))),
            ("resources/read", _) => {
                if let Some(uri) = message.params.get("uri").and_then(Value::as_str) {
                    attributes.push(KeyValue::new("mcp.resource.uri", bounded(uri)));
                }
            }
            _ => {}
        }
        let mut state = self.state();
        state.dispatched = Some(Instant::now());
        if let Some(request) = state.request.as_deref_mut() {
            request.name = Cow::Owned(span_name);
            request.attributes.extend(attributes);
            request.links.extend(link);
        }
    }

    /// The caller, once authenticated: `user.id` (the subject, never a credential).
    #[inline]
    pub fn caller(&self, subject: Option<&str>) {
        if !self.is_unsampled() {
            self.describe_caller(subject);
        }
    }

    /// [`RequestTrace::caller`] of a trace that may be sampled.
    fn describe_caller(&self, subject: Option<&str>) {
        if let Some(subject) = subject {
            let user = KeyValue::new("user.id", bounded(subject));
            self.with_request(|request| request.attributes.push(user));
        }
    }

    /// The `authorize` span (from dispatch to decision), and the span of the work it allowed when
    /// that ran here.
    #[inline]
    pub fn decided(&self, decision: &Decision<'_>) {
        if !self.is_unsampled() {
            self.record_decision(decision);
        }
    }

    /// [`RequestTrace::decided`] of a trace that may be sampled.
    fn record_decision(&self, decision: &Decision<'_>) {
        // A denial from the routing headers is decided before any message was dispatched.
        let Some(request) = self.begin(None) else {
            return;
        };
        let dispatched = self.state().dispatched.unwrap_or(decision.decided);
        let mut attributes = Vec::with_capacity(9);
        attributes.extend([
            KeyValue::new("palisade.authz.kind", decision.kind),
            KeyValue::new("palisade.decision", decision.effect),
            KeyValue::new("palisade.reason", bounded(decision.reason)),
        ]);
        if let Some(target) = decision.target {
            attributes.push(KeyValue::new("palisade.authz.target", bounded(target)));
        }
        if let Some(rule) = decision.rule {
            attributes.push(KeyValue::new("palisade.rule", bounded(rule)));
        }
        if !decision.granted_by.is_empty() {
            attributes.push(KeyValue::new("palisade.granted_by", strings(decision.granted_by)));
        }
        if !decision.missing_scopes.is_empty() {
            attributes.push(KeyValue::new(
                "palisade.missing_scopes",
                strings(decision.missing_scopes),
            ));
        }
        if let Some((argument, constraint)) = decision.argument {
            attributes.push(KeyValue::new("palisade.argument", bounded(argument)));
            attributes.push(KeyValue::new("palisade.constraint", constraint.to_owned()));
        }
        let decided = decision.decided.max(dispatched);
        let now = Instant::now();
        self.emit(
            &request,
            Recorded {
                name: Cow::Borrowed("authorize"),
                kind: SpanKind::Internal,
                start: dispatched,
                end: decided,
                attributes: Attributes::Made(attributes),
                failed: None,
                children: Vec::new(),
            },
        );
        let permitted = decision.effect != "deny";
        if decision.local_work && permitted && decision.kind != "list" {
            // Named as the GenAI conventions name a tool's execution: `execute_tool {tool}`.
            let work = match (decision.kind, decision.target) {
                ("tool", Some(tool)) => {
                    let tool = bounded(tool);
                    Some((
                        Cow::Owned(format!("execute_tool {tool}")),
                        vec![
                            KeyValue::new("gen_ai.operation.name", "execute_tool"),
                            KeyValue::new("gen_ai.tool.name", tool),
                        ],
                    ))
                }
                ("resource", Some(uri)) => Some((
                    Cow::Borrowed("read_resource"),
                    vec![KeyValue::new("mcp.resource.uri", bounded(uri))],
                )),
                _ => None,
            };
            if let Some((name, attributes)) = work {
                self.emit(
                    &request,
                    Recorded {
                        name,
                        kind: SpanKind::Internal,
                        start: decided,
                        end: now,
                        attributes: Attributes::Made(attributes),
                        failed: None,
                        children: Vec::new(),
                    },
                );
            }
        }
        let outcome = [
            KeyValue::new("palisade.decision", decision.effect),
            KeyValue::new("palisade.reason", bounded(decision.reason)),
        ];
        self.with_request(|request| request.attributes.extend(outcome));
    }

    /// A client span for a call to the upstream (proxy mode), under the request span: the
    /// context to make the call in, and to send to the upstream.
    pub fn upstream_call(&self, method: &str, tool: Option<&str>, peer: &UpstreamPeer) -> Option<UpstreamCall> {
        let request = match self.state().begun.clone()? {
            Begun::Recording(request) => request,
            // Not sampled: the upstream still learns the trace (and that it is not sampled).
            Begun::Unsampled(ids) => {
                return Some(UpstreamCall {
                    context: Context::new().with_remote_span_context(ids),
                    span: None,
                });
            }
        };
        let ids = self.tracer.child_of(&request);
        let name = match tool {
            Some(tool) => format!("{method} {}", bounded(tool)),
            None => method.to_owned(),
        };
        // Room for the outcome and `error.type`.
        let mut attributes = Vec::with_capacity(4 + peer.attributes().len());
        attributes.push(KeyValue::new("mcp.method.name", method.to_owned()));
        if let Some(tool) = tool {
            attributes.push(KeyValue::new("gen_ai.tool.name", bounded(tool)));
        }
        attributes.extend_from_slice(peer.attributes());
        let clock = self.clock();
        let start = clock.wall(Instant::now());
        Some(UpstreamCall {
            context: Context::new().with_remote_span_context(ids.clone()),
            span: Some(PendingCall {
                tracer: self.tracer,
                clock,
                span: Span {
                    ids,
                    parent: request.span_id(),
                    parent_is_remote: false,
                    kind: SpanKind::Client,
                    name: Cow::Owned(name),
                    start,
                    end: start,
                    attributes,
                    links: Vec::new(),
                    status: Status::Unset,
                },
            }),
        })
    }

    /// Ends the request span with the answer's status.
    #[inline]
    pub fn finish(&self, status: u16, version: Version, scheme: &'static str) {
        if !self.is_unsampled() {
            self.end_request(status, version, scheme);
        }
    }

    /// [`RequestTrace::finish`] of a trace that may be sampled.
    fn end_request(&self, status: u16, version: Version, scheme: &'static str) {
        self.end(|request| {
            request.attributes.extend([
                KeyValue::new("http.response.status_code", i64::from(status)),
                KeyValue::new("network.protocol.version", protocol_version(version)),
                KeyValue::new("url.scheme", scheme),
            ]);
            if status >= 500 {
                request.attributes.push(KeyValue::new("error.type", status.to_string()));
                request.status = Status::error("");
            }
        });
    }

    /// Ends the request span of a request whose client went away.
    pub fn abandon(&self) {
        if !self.is_unsampled() {
            self.end(|request| {
                request
                    .attributes
                    .push(KeyValue::new("palisade.reason", "client_disconnected"));
            });
        }
    }

    /// Ends and writes the request span, the first time only (beginning it if it has not
    /// begun), when it records: `last` adds what the end knows.
    fn end(&self, last: impl FnOnce(&mut RequestSpan)) {
        let Some(ids) = self.begin(None) else {
            return;
        };
        let Some(mut request) = self.state().request.take() else {
            return;
        };
        last(&mut request);
        let RequestSpan {
            parent,
            name,
            attributes,
            links,
            status,
        } = *request;
        Span {
            parent: parent.as_ref().map_or(SpanId::INVALID, SpanContext::span_id),
            parent_is_remote: parent.as_ref().is_some_and(SpanContext::is_remote),
            ids,
            kind: SpanKind::Server,
            name,
            start: self.wall(self.arrived),
            end: self.wall(Instant::now()),
            attributes,
            links,
            status,
        }
        .write(self.tracer);
    }

    /// Records on the request span facts about it that are not known at the start.
    #[inline]
    pub fn request_facts(&self, request_id: &str, client: Option<&str>, policy_hash: Option<&str>) {
        if !self.is_unsampled() {
            self.describe_request(request_id, client, policy_hash);
        }
    }

    /// [`RequestTrace::request_facts`] of a trace that may be sampled.
    fn describe_request(&self, request_id: &str, client: Option<&str>, policy_hash: Option<&str>) {
        let facts = [
            Some(KeyValue::new("palisade.request_id", request_id.to_owned())),
            client.map(|client| KeyValue::new("client.address", client.to_owned())),
            policy_hash.map(|hash| KeyValue::new("palisade.policy.hash", hash.to_owned())),
        ];
        self.with_request(|request| request.attributes.extend(facts.into_iter().flatten()));
    }
}

impl Drop for RequestTrace {
    /// A recorded request span that no path ended is still written (as the SDK ends a span it
    /// drops), with the time the trace was dropped as its end.
    fn drop(&mut self) {
        if self.is_unsampled() {
            return;
        }
        let state = self.state.get_mut().unwrap_or_else(PoisonError::into_inner);
        if state.request.is_some() {
            self.end(|_| {});
        }
    }
}

/// A span, ended, as this module writes it.
struct Span {
    ids: SpanContext,
    parent: SpanId,
    parent_is_remote: bool,
    kind: SpanKind,
    name: Cow<'static, str>,
    start: SystemTime,
    end: SystemTime,
    attributes: Vec<KeyValue>,
    links: Vec<Link>,
    status: Status,
}

impl Span {
    /// Hands the span to the export queue, as the SDK's span data.
    fn write(self, tracer: &DecidingTracer) {
        let mut links = SpanLinks::default();
        links.links = self.links;
        tracer.record(SpanData {
            span_context: self.ids,
            parent_span_id: self.parent,
            parent_span_is_remote: self.parent_is_remote,
            span_kind: self.kind,
            name: self.name,
            start_time: self.start,
            end_time: self.end,
            attributes: self.attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links,
            status: self.status,
            instrumentation_scope: tracer.scope().clone(),
        });
    }
}

/// The wall clock of one request's instants: the time it arrived on both clocks, so that a wall
/// clock that steps mid-request cannot put a child outside its parent.
#[derive(Clone, Copy)]
struct Clock {
    arrived: Instant,
    arrived_at: SystemTime,
}

impl Clock {
    fn wall(&self, at: Instant) -> SystemTime {
        self.arrived_at + at.saturating_duration_since(self.arrived)
    }
}

/// A call to the upstream: the context it is made in (its client span's ids, or the request's
/// when the trace is not sampled).
pub struct UpstreamCall {
    /// The context to make the call in and to send upstream.
    pub context: Context,
    /// The call's client span, when the trace records, until it is written.
    span: Option<PendingCall>,
}

/// The client span of a call not yet answered.
struct PendingCall {
    tracer: &'static DecidingTracer,
    clock: Clock,
    span: Span,
}

impl UpstreamCall {
    /// Ends the call's span with its outcome (`ok`, `error`, `unavailable`, `timeout`, `invalid`;
    /// one dropped unanswered is `cancelled`).
    pub fn answered(mut self, outcome: &'static str) {
        self.end(outcome);
    }

    /// Writes the call's span, the first time only.
    fn end(&mut self, outcome: &'static str) {
        let Some(PendingCall {
            tracer,
            clock,
            mut span,
        }) = self.span.take()
        else {
            return;
        };
        span.end = clock.wall(Instant::now());
        span.attributes
            .push(KeyValue::new("palisade.upstream.outcome", outcome));
        if !matches!(outcome, "ok" | "cancelled") {
            span.attributes.push(KeyValue::new("error.type", outcome));
            span.status = Status::error("");
        }
        span.write(tracer);
    }
}

impl Drop for UpstreamCall {
    /// A call dropped before its answer (the request timed out, or its client went away) is
    /// still written, as `cancelled`: its id has gone upstream, and the upstream's spans are its
    /// children.
    fn drop(&mut self) {
        self.end("cancelled");
    }
}

fn protocol_version(version: Version) -> &'static str {
    match version {
        Version::HTTP_10 => "1.0",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

/// A caller-chosen string as an attribute value, cut at [`MOST_ATTRIBUTE_BYTES`].
fn bounded(value: &str) -> String {
    if value.len() <= MOST_ATTRIBUTE_BYTES {
        return value.to_owned();
    }
    let mut end = MOST_ATTRIBUTE_BYTES;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    value[..end].to_owned()
}

fn strings(values: &[&str]) -> AttributeValue {
    AttributeValue::Array(opentelemetry::Array::String(
        values.iter().map(|v| bounded(v).into()).collect(),
    ))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use opentelemetry::trace::{SpanId, TraceId};
    use serde_json::json;

    use super::*;
    use crate::mcp::jsonrpc::Id;
    use crate::trace::testing::{attribute, named, tracer};

    const CALLER_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
    const CALLER_SPAN: &str = "b7ad6b7169203331";

    /// Headers with the caller's span in `traceparent`, sampled (`01`) or not (`00`).
    fn caller_headers(flags: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let traceparent = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-{flags}");
        headers.insert("traceparent", traceparent.parse().unwrap());
        headers
    }

    /// An HTTP upstream, for the upstream calls' spans.
    fn upstream() -> UpstreamPeer {
        UpstreamPeer::http("http://10.0.0.7:8080/mcp")
    }

    fn decision(decided: Instant) -> Decision<'static> {
        Decision {
            kind: "tool",
            effect: "allow",
            reason: "granted",
            target: Some("read_file"),
            rule: Some("read_*"),
            granted_by: &["token"],
            missing_scopes: &[],
            argument: None,
            decided,
            local_work: true,
        }
    }

    #[test]
    fn a_meta_context_read_after_authentication_parents_the_whole_tree() {
        let (tracer, exporter) = tracer();
        let arrived = Instant::now();
        let trace = RequestTrace::new(tracer, arrived, &HeaderMap::new());
        // The authentication waits for a JWKS fetch, handed the request's trace.
        let fetch_started = Instant::now();
        std::thread::sleep(Duration::from_millis(2));
        trace.jwks_fetched("https://idp.example", fetch_started, "success");
        trace.authenticated(arrived, Ok("jwt"));
        assert!(trace.ids_if_begun().is_none(), "not begun before the message is read");
        let params =
            json!({"name": "read_file", "_meta": {"traceparent": format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01")}});
        trace.dispatch(&Message {
            method: "tools/call",
            params: params.as_object().unwrap(),
            id: &Id::Number(3),
            protocol_version: Some("2026-07-28"),
        });
        trace.decided(&decision(Instant::now()));
        let ids = trace.ids().expect("sampled");
        trace.finish(200, Version::HTTP_11, "http");

        let spans = exporter.get_finished_spans().unwrap();
        assert_eq!(spans.len(), 5, "{spans:#?}");
        let request = named(&spans, "tools/call read_file");
        assert_eq!(
            request.span_context.trace_id(),
            TraceId::from_hex(CALLER_TRACE).unwrap()
        );
        assert_eq!(request.parent_span_id, SpanId::from_hex(CALLER_SPAN).unwrap());
        assert_eq!(
            (ids.trace.to_string(), ids.span),
            (CALLER_TRACE.to_owned(), request.span_context.span_id())
        );
        assert_eq!(request.span_kind, SpanKind::Server);
        assert_eq!(attribute(request, "jsonrpc.request.id").as_deref(), Some("3"));
        assert_eq!(
            attribute(request, "mcp.protocol.version").as_deref(),
            Some("2026-07-28")
        );
        let authenticate = named(&spans, "authenticate");
        let fetch = named(&spans, "jwks.fetch");
        assert_eq!(authenticate.parent_span_id, request.span_context.span_id());
        assert_eq!(fetch.parent_span_id, authenticate.span_context.span_id());
        assert_eq!(fetch.span_kind, SpanKind::Client);
        assert!(fetch.end_time.duration_since(fetch.start_time).unwrap() >= Duration::from_millis(2));
        for child in [
            authenticate,
            fetch,
            named(&spans, "authorize"),
            named(&spans, "execute_tool read_file"),
        ] {
            assert!(
                child.start_time >= request.start_time && child.end_time <= request.end_time,
                "{child:#?}"
            );
        }
        assert_eq!(
            request.start_time,
            trace.wall(trace.arrived),
            "the request span starts when the request arrived"
        );
    }

    #[test]
    fn the_request_span_s_room_for_attributes_is_what_the_fullest_request_sets() {
        let (tracer, exporter) = tracer();
        let trace = RequestTrace::new(tracer, Instant::now(), &caller_headers("01"));
        let params = json!({"name": "read_file"});
        trace.dispatch(&Message {
            method: "tools/call",
            params: params.as_object().unwrap(),
            id: &Id::String("call-1".to_owned()),
            protocol_version: Some("2026-07-28"),
        });
        trace.caller(Some("alice"));
        trace.decided(&decision(Instant::now()));
        trace.request_facts("request-1", Some("10.0.0.7"), Some("sha256:policy"));
        trace.finish(502, Version::HTTP_11, "http");
        let spans = exporter.get_finished_spans().unwrap();
        let request = named(&spans, "tools/call read_file");
        assert_eq!(
            request.attributes.len(),
            REQUEST_SPAN_ATTRIBUTES,
            "a request span with every attribute there is: {:#?}",
            request.attributes
        );
    }

    #[test]
    fn a_header_context_wins_and_a_different_meta_context_is_linked() {
        let (tracer, exporter) = tracer();
        let trace = RequestTrace::new(tracer, Instant::now(), &caller_headers("01"));
        assert!(trace.ids_if_begun().is_some(), "begun at once with a header context");
        let meta = "00-1af7651916cd43dd8448eb211c80319c-c7ad6b7169203331-01";
        let params = json!({"name": "t", "_meta": {"traceparent": meta}});
        trace.dispatch(&Message {
            method: "tools/call",
            params: params.as_object().unwrap(),
            id: &Id::Null,
            protocol_version: None,
        });
        trace.finish(200, Version::HTTP_2, "https");
        let spans = exporter.get_finished_spans().unwrap();
        let request = named(&spans, "tools/call t");
        assert_eq!(request.parent_span_id, SpanId::from_hex(CALLER_SPAN).unwrap());
        let links: Vec<_> = request
            .links
            .iter()
            .map(|l| l.span_context.span_id().to_string())
            .collect();
        assert_eq!(links, ["c7ad6b7169203331"]);
        assert_eq!(attribute(request, "network.protocol.version").as_deref(), Some("2"));
        assert_eq!(attribute(request, "url.scheme").as_deref(), Some("https"));
    }

    #[test]
    fn an_unsampled_caller_s_trace_records_nothing_and_is_still_propagated() {
        let (tracer, exporter) = tracer();
        let trace = RequestTrace::new(tracer, Instant::now(), &caller_headers("00"));
        trace.authenticated(Instant::now(), Ok("jwt"));
        let call = trace.upstream_call("tools/call", Some("t"), &upstream()).unwrap();
        let mut params = serde_json::Map::new();
        super::propagation::inject_meta(&call.context, &mut params);
        let traceparent = params["_meta"]["traceparent"].as_str().unwrap().to_owned();
        assert!(
            traceparent.starts_with(&format!("00-{CALLER_TRACE}-")) && traceparent.ends_with("-00"),
            "the upstream learns the trace and that it is not sampled: {traceparent}"
        );
        assert_ne!(&traceparent[36..52], CALLER_SPAN, "the request's own span id");
        call.answered("ok");
        trace.decided(&decision(Instant::now()));
        trace.finish(503, Version::HTTP_11, "http");
        assert_eq!(trace.ids(), None, "nothing recorded: no ids for the audit events");
        assert!(exporter.get_finished_spans().unwrap().is_empty());
    }

    #[test]
    fn an_upstream_call_is_a_client_span_of_the_request_answered_or_cut_short() {
        let (tracer, exporter) = tracer();
        let trace = RequestTrace::new(tracer, Instant::now(), &caller_headers("01"));
        let request = trace.ids().expect("sampled");
        let answered = trace.upstream_call("tools/call", Some("t"), &upstream()).unwrap();
        let mut params = serde_json::Map::new();
        super::propagation::inject_meta(&answered.context, &mut params);
        let traceparent = params["_meta"]["traceparent"].as_str().unwrap().to_owned();
        answered.answered("timeout");
        // The request timed out, or its client went away, while the upstream was still working.
        drop(trace.upstream_call("tools/call", Some("t"), &upstream()).unwrap());
        trace.finish(503, Version::HTTP_11, "http");

        let spans = exporter.get_finished_spans().unwrap();
        let calls: Vec<_> = spans.iter().filter(|s| s.span_kind == SpanKind::Client).collect();
        assert_eq!(calls.len(), 2, "{spans:#?}");
        for call in &calls {
            assert_eq!(call.name, "tools/call t");
            assert_eq!(call.span_context.trace_id(), request.trace);
            assert_eq!(call.parent_span_id, request.span);
            assert!(!call.parent_span_is_remote);
            assert!(call.start_time <= call.end_time);
        }
        assert_eq!(
            traceparent,
            format!("00-{CALLER_TRACE}-{}-01", calls[0].span_context.span_id()),
            "the upstream's parent is the call's span"
        );
        assert_eq!(
            attribute(calls[0], "palisade.upstream.outcome").as_deref(),
            Some("timeout")
        );
        assert_eq!(attribute(calls[0], "error.type").as_deref(), Some("timeout"));
        assert!(matches!(calls[0].status, Status::Error { .. }));
        assert_eq!(
            attribute(calls[1], "palisade.upstream.outcome").as_deref(),
            Some("cancelled")
        );
        assert_eq!(calls[1].status, Status::Unset);
        let request_span = named(&spans, "POST /mcp");
        assert!(
            request_span.parent_span_is_remote,
            "the caller's span came in the headers"
        );
    }

    #[test]
    fn a_request_that_ends_before_its_message_is_a_root_span_with_its_status() {
        let (tracer, exporter) = tracer();
        let trace = RequestTrace::new(tracer, Instant::now(), &HeaderMap::new());
        trace.authenticated(Instant::now(), Err("token_expired"));
        trace.finish(401, Version::HTTP_11, "http");
        trace.finish(401, Version::HTTP_11, "http");
        trace.abandon();
        let spans = exporter.get_finished_spans().unwrap();
        assert_eq!(spans.len(), 2, "ended once: {spans:#?}");
        let request = named(&spans, "POST /mcp");
        assert_eq!(request.parent_span_id, SpanId::INVALID);
        assert_eq!(attribute(request, "http.response.status_code").as_deref(), Some("401"));
        assert_eq!(request.status, Status::Unset, "a 4xx is the caller's");
        let authenticate = named(&spans, "authenticate");
        assert_eq!(attribute(authenticate, "error.type").as_deref(), Some("token_expired"));
        assert!(matches!(authenticate.status, Status::Error { .. }));
    }

    #[test]
    fn a_request_span_no_path_ended_is_written_when_the_trace_is_dropped() {
        let (tracer, exporter) = tracer();
        let trace = RequestTrace::new(tracer, Instant::now(), &caller_headers("01"));
        trace.caller(Some("alice"));
        drop(trace);
        let spans = exporter.get_finished_spans().unwrap();
        let request = named(&spans, "POST /mcp");
        assert_eq!(attribute(request, "user.id").as_deref(), Some("alice"));
        assert!(request.end_time >= request.start_time);
    }

    #[test]
    fn caller_chosen_values_are_cut_on_a_character_boundary() {
        let long = "é".repeat(200);
        let cut = bounded(&long);
        assert!(cut.len() <= MOST_ATTRIBUTE_BYTES && long.starts_with(&cut));
        assert_eq!(cut.chars().count(), MOST_ATTRIBUTE_BYTES / 2);
        assert_eq!(bounded("short"), "short");
    }
}
