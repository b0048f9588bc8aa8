//! The spans of one request.
//!
//! A request's trace context comes from its `traceparent` header, or, when the headers carry
//! none, from `params._meta` — which is known only once the body is read, after authentication.
//! So the request span begins when its parent is known (at once with a header context, else
//! when the message is parsed, else when the request ends), with the time the request arrived
//! as its start; what ran before (authentication and the JWKS fetches it made) is recorded with
//! its times and written as child spans when the request span begins. Only the upstream call of
//! proxy mode is a live span: its context travels to the upstream.
//!
//! Attribute values never include a credential or an argument value.

use std::borrow::Cow;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Instant, SystemTime};

use axum::http::{HeaderMap, Version};
use opentelemetry::trace::{Link, SpanContext, SpanKind, Status, TraceContextExt as _, Tracer as _};
use opentelemetry::{Context, KeyValue, Value as AttributeValue};
use opentelemetry_sdk::trace::SdkTracer;
use serde_json::{Map, Value};

use super::propagation;

/// Longest attribute value taken from a request (a JSON-RPC id, a tool name): longer ones are cut.
const MOST_ATTRIBUTE_BYTES: usize = 256;

/// The spans of one request: see the module documentation.
pub struct RequestTrace {
    tracer: SdkTracer,
    /// When the request arrived, on both clocks.
    arrived_at: SystemTime,
    arrived: Instant,
    /// The caller's span in the headers.
    header_parent: Option<SpanContext>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// JWKS fetches not yet claimed by the authentication that made them.
    fetches: Vec<Recorded>,
    /// Spans that ended before the request span began.
    recorded: Vec<Recorded>,
    /// The request span, once begun.
    begun: Option<Context>,
    /// When the message was handed to its method.
    dispatched: Option<Instant>,
    finished: bool,
}

/// A span that ended before its parent began.
struct Recorded {
    name: &'static str,
    kind: SpanKind,
    start: Instant,
    end: Instant,
    attributes: Vec<KeyValue>,
    failed: Option<String>,
    children: Vec<Recorded>,
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
    pub fn new(tracer: &SdkTracer, arrived: Instant, headers: &HeaderMap) -> Arc<Self> {
        let trace = Arc::new(Self {
            tracer: tracer.clone(),
            arrived_at: SystemTime::now() - arrived.elapsed(),
            arrived,
            header_parent: propagation::from_headers(headers),
            state: Mutex::new(State::default()),
        });
        // A context in the headers is the parent, whatever `_meta` says: begin now.
        if trace.header_parent.is_some() {
            trace.begin(None);
        }
        trace
    }

    /// The trace of the request the current task serves, if trace export is on.
    pub fn current() -> Option<Arc<Self>> {
        Context::map_current(|context| context.get::<Arc<Self>>().cloned())
    }

    /// The context under which the request is served: [`RequestTrace::current`] finds it.
    pub fn context(self: &Arc<Self>) -> Context {
        Context::new().with_value(self.clone())
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wall(&self, at: Instant) -> SystemTime {
        self.arrived_at + at.saturating_duration_since(self.arrived)
    }

    /// A JWKS fetch this request made (and waited for) from `start` until now.
    pub fn jwks_fetched(&self, issuer: &str, start: Instant, outcome: &'static str) {
        let fetch = Recorded {
            name: "jwks.fetch",
            kind: SpanKind::Client,
            start,
            end: Instant::now(),
            attributes: vec![
                KeyValue::new("palisade.jwks.issuer", bounded(issuer)),
                KeyValue::new("palisade.jwks.outcome", outcome),
            ],
            failed: (outcome != "success").then(|| outcome.to_owned()),
            children: Vec::new(),
        };
        self.state().fetches.push(fetch);
    }

    /// The authentication that ran from `start` until now: `Ok(method)` or `Err(reason code)`.
    pub fn authenticated(&self, start: Instant, outcome: Result<&'static str, &str>) {
        let mut state = self.state();
        let children = std::mem::take(&mut state.fetches);
        let mut attributes = Vec::with_capacity(2);
        let failed = match outcome {
            Ok(method) => {
                attributes.push(KeyValue::new("palisade.auth.method", method));
                attributes.push(KeyValue::new("palisade.auth.outcome", "success"));
                None
            }
            Err(reason) => {
                attributes.push(KeyValue::new("palisade.auth.outcome", bounded(reason)));
                Some(reason.to_owned())
            }
        };
        let authentication = Recorded {
            name: "authenticate",
            kind: SpanKind::Internal,
            start,
            end: Instant::now(),
            attributes,
            failed,
            children,
        };
        match state.begun.clone() {
            Some(request) => {
                drop(state);
                self.emit(&request, authentication);
            }
            None => state.recorded.push(authentication),
        }
    }

    /// Begins the request span if it has not begun: its parent is the headers' context, else the
    /// one in `params._meta`, else none (a new trace). Returns the context with the request span.
    pub fn begin(&self, params: Option<&Map<String, Value>>) -> Context {
        let mut state = self.state();
        if let Some(request) = &state.begun {
            return request.clone();
        }
        let meta_parent = params.and_then(propagation::from_meta);
        let parent = self.header_parent.clone().or_else(|| meta_parent.clone());
        let parent_context = match parent {
            Some(parent) => Context::new().with_remote_span_context(parent),
            None => Context::new(),
        };
        let mut builder = self
            .tracer
            .span_builder("POST /mcp")
            .with_kind(SpanKind::Server)
            .with_start_time(self.arrived_at);
        // Both carried a context and they differ: the request span follows the headers (the
        // nearest hop, e.g. a gateway) and links to the caller's `_meta` context.
        if let (Some(_), Some(meta)) = (&self.header_parent, &meta_parent)
            && self.header_parent.as_ref().map(SpanContext::span_id) != Some(meta.span_id())
        {
            builder = builder.with_links(vec![Link::with_context(meta.clone())]);
        }
        let span = self.tracer.build_with_context(builder, &parent_context);
        let request = parent_context.with_span(span);
        if request.span().is_recording() {
            request.span().set_attributes([
                KeyValue::new("http.request.method", "POST"),
                KeyValue::new("http.route", "/mcp"),
                KeyValue::new("url.path", "/mcp"),
            ]);
        }
        let recorded = std::mem::take(&mut state.recorded);
        state.begun = Some(request.clone());
        drop(state);
        for span in recorded {
            self.emit(&request, span);
        }
        request
    }

    /// Writes `span` (and its children) under `parent`.
    fn emit(&self, parent: &Context, span: Recorded) {
        if !parent.span().is_recording() {
            return;
        }
        let started = self
            .tracer
            .span_builder(span.name)
            .with_kind(span.kind)
            .with_start_time(self.wall(span.start))
            .with_attributes(span.attributes)
            .start_with_context(&self.tracer, parent);
        let context = parent.with_span(started);
        if let Some(failure) = span.failed {
            context.span().set_attribute(KeyValue::new("error.type", failure));
            context.span().set_status(Status::error(""));
        }
        for child in span.children {
            self.emit(&context, child);
        }
        context.span().end_with_timestamp(self.wall(span.end));
    }

    /// The W3C trace id and span id of the request span (hex), beginning it if it has not begun.
    pub fn ids(&self) -> (String, String) {
        ids(&self.begin(None))
    }

    /// Like [`RequestTrace::ids`], but only if the request span has begun.
    pub fn ids_if_begun(&self) -> Option<(String, String)> {
        self.state().begun.as_ref().map(ids)
    }

    /// Describes the message on the request span (beginning it, with `_meta` as a possible
    /// parent), just before it is handed to its method.
    pub fn dispatch(&self, message: &Message<'_>) -> Context {
        let request = self.begin(Some(message.params));
        self.state().dispatched = Some(Instant::now());
        let span = request.span();
        if !span.is_recording() {
            return request;
        }
        let name = message.params.get("name").and_then(Value::as_str);
        let target = match message.method {
            "tools/call" | "prompts/get" => name,
            _ => None,
        };
        span.update_name(match target {
            Some(target) => Cow::Owned(format!("{} {}", message.method, bounded(target))),
            None => Cow::Owned(message.method.to_owned()),
        });
        span.set_attribute(KeyValue::new("mcp.method.name", bounded(message.method)));
        match message.id {
            crate::mcp::jsonrpc::Id::Number(id) => {
                span.set_attribute(KeyValue::new("jsonrpc.request.id", id.to_string()))
            }
            crate::mcp::jsonrpc::Id::String(id) => span.set_attribute(KeyValue::new("jsonrpc.request.id", bounded(id))),
            crate::mcp::jsonrpc::Id::Null => {}
        }
        if let Some(version) = message.protocol_version {
            span.set_attribute(KeyValue::new("mcp.protocol.version", bounded(version)));
        }
        match (message.method, name) {
            ("tools/call", Some(tool)) => {
                span.set_attribute(KeyValue::new("gen_ai.tool.name", bounded(tool)));
                span.set_attribute(KeyValue::new("gen_ai.operation.name", "execute_tool"));
            }
            ("prompts/get", Some(prompt)) => span.set_attribute(KeyValue::new("gen_ai.prompt.name", bounded(prompt))),
            ("resources/read", _) => {
                if let Some(uri) = message.params.get("uri").and_then(Value::as_str) {
                    span.set_attribute(KeyValue::new("mcp.resource.uri", bounded(uri)));
                }
            }
            _ => {}
        }
        request
    }

    /// The caller, once authenticated: `user.id` (the subject, never a credential).
    pub fn caller(&self, subject: Option<&str>) {
        if let (Some(subject), Some(request)) = (subject, self.state().begun.as_ref())
            && request.span().is_recording()
        {
            request.span().set_attribute(KeyValue::new("user.id", bounded(subject)));
        }
    }

    /// The `authorize` span (from dispatch to decision), and the span of the work it allowed when
    /// that ran here.
    pub fn decided(&self, decision: &Decision<'_>) {
        // A denial from the routing headers is decided before any message was dispatched.
        let request = self.begin(None);
        let dispatched = self.state().dispatched.unwrap_or(decision.decided);
        if !request.span().is_recording() {
            return;
        }
        let mut attributes = vec![
            KeyValue::new("palisade.authz.kind", decision.kind),
            KeyValue::new("palisade.decision", decision.effect),
            KeyValue::new("palisade.reason", bounded(decision.reason)),
        ];
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
                name: "authorize",
                kind: SpanKind::Internal,
                start: dispatched,
                end: decided,
                attributes,
                failed: None,
                children: Vec::new(),
            },
        );
        let permitted = decision.effect != "deny";
        if decision.local_work && permitted && decision.kind != "list" {
            let (name, attributes) = match (decision.kind, decision.target) {
                ("tool", Some(tool)) => (
                    "execute_tool",
                    vec![
                        KeyValue::new("gen_ai.operation.name", "execute_tool"),
                        KeyValue::new("gen_ai.tool.name", bounded(tool)),
                    ],
                ),
                ("resource", Some(uri)) => ("read_resource", vec![KeyValue::new("mcp.resource.uri", bounded(uri))]),
                _ => return,
            };
            self.emit(
                &request,
                Recorded {
                    name,
                    kind: SpanKind::Internal,
                    start: decided,
                    end: now,
                    attributes,
                    failed: None,
                    children: Vec::new(),
                },
            );
        }
        request.span().set_attributes([
            KeyValue::new("palisade.decision", decision.effect),
            KeyValue::new("palisade.reason", bounded(decision.reason)),
        ]);
    }

    /// A live client span for a call to the upstream (proxy mode), under the request span: the
    /// context to make the call in, and to send to the upstream.
    pub fn upstream_call(&self, method: &str, tool: Option<&str>) -> Option<UpstreamCall> {
        let request = self.state().begun.clone()?;
        if !request.span().is_recording() {
            // Not sampled: the upstream still learns the trace (and that it is not sampled).
            return Some(UpstreamCall {
                context: request,
                own_span: false,
            });
        }
        let name = match tool {
            Some(tool) => format!("{method} {}", bounded(tool)),
            None => method.to_owned(),
        };
        let mut attributes = vec![KeyValue::new("mcp.method.name", method.to_owned())];
        if let Some(tool) = tool {
            attributes.push(KeyValue::new("gen_ai.tool.name", bounded(tool)));
        }
        let span = self
            .tracer
            .span_builder(name)
            .with_kind(SpanKind::Client)
            .with_attributes(attributes)
            .start_with_context(&self.tracer, &request);
        Some(UpstreamCall {
            context: request.with_span(span),
            own_span: true,
        })
    }

    /// Ends the request span with the answer's status.
    pub fn finish(&self, status: u16, version: Version) {
        let request = self.begin(None);
        let mut state = self.state();
        if state.finished {
            return;
        }
        state.finished = true;
        drop(state);
        let span = request.span();
        if span.is_recording() {
            span.set_attribute(KeyValue::new("http.response.status_code", i64::from(status)));
            span.set_attribute(KeyValue::new("network.protocol.version", protocol_version(version)));
            if status >= 500 {
                span.set_attribute(KeyValue::new("error.type", status.to_string()));
                span.set_status(Status::error(""));
            }
        }
        span.end();
    }

    /// Ends the request span of a request whose client went away.
    pub fn abandon(&self) {
        let request = self.begin(None);
        let mut state = self.state();
        if state.finished {
            return;
        }
        state.finished = true;
        drop(state);
        let span = request.span();
        if span.is_recording() {
            span.set_attribute(KeyValue::new("palisade.reason", "client_disconnected"));
        }
        span.end();
    }

    /// Records on the request span facts about it that are not known at the start.
    pub fn request_facts(&self, request_id: &str, client: Option<&str>, policy_hash: Option<&str>) {
        let Some(request) = self.state().begun.clone() else {
            return;
        };
        let span = request.span();
        if !span.is_recording() {
            return;
        }
        span.set_attribute(KeyValue::new("palisade.request_id", request_id.to_owned()));
        if let Some(client) = client {
            span.set_attribute(KeyValue::new("client.address", client.to_owned()));
        }
        if let Some(hash) = policy_hash {
            span.set_attribute(KeyValue::new("palisade.policy.hash", hash.to_owned()));
        }
    }
}

/// A call to the upstream: the context it is made in (its client span, or the request's when
/// the trace is not sampled).
pub struct UpstreamCall {
    /// The context to make the call in and to send upstream.
    pub context: Context,
    own_span: bool,
}

impl UpstreamCall {
    /// Ends the call's span with its outcome (`ok`, `error`, `unavailable`, `timeout`, `invalid`).
    pub fn answered(&self, outcome: &'static str) {
        if !self.own_span {
            return;
        }
        let span = self.context.span();
        span.set_attribute(KeyValue::new("palisade.upstream.outcome", outcome));
        if outcome != "ok" {
            span.set_attribute(KeyValue::new("error.type", outcome));
            span.set_status(Status::error(""));
        }
        span.end();
    }
}

fn ids(request: &Context) -> (String, String) {
    let span = request.span();
    let context = span.span_context();
    (context.trace_id().to_string(), context.span_id().to_string())
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
