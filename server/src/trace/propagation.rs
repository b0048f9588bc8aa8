//! W3C trace context in and out: the `traceparent`/`tracestate` headers, and the same keys in a
//! request's `params._meta` (MCP 2026-07-28, SEP-414). A malformed context is ignored, never an
//! error: tracing must not change what a request gets.

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanContext, TraceContextExt as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use serde_json::{Map, Value};

const TRACEPARENT: &str = "traceparent";
/// The header, parsed once: a lookup by `&str` parses and checks the name first, every request.
static TRACEPARENT_HEADER: HeaderName = HeaderName::from_static(TRACEPARENT);

struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

struct Meta<'a>(&'a Map<String, Value>);

impl Extractor for Meta<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(Value::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

fn extract(carrier: &dyn Extractor) -> Option<SpanContext> {
    let context = TraceContextPropagator::new().extract(carrier);
    let span_context = context.span().span_context().clone();
    span_context.is_valid().then_some(span_context)
}

/// The caller's span in the `traceparent` (and `tracestate`) headers; `None` when absent or
/// malformed.
pub fn from_headers(headers: &HeaderMap) -> Option<SpanContext> {
    // Most requests carry none. Comparing the few names a request has (a standard name differs
    // at once, a custom one by length first) costs a fraction of hashing `traceparent` for a
    // lookup; hyper bounds the number of headers.
    if !headers.keys().any(|name| *name == TRACEPARENT_HEADER) {
        return None;
    }
    extract(&Headers(headers))
}

/// The caller's span in `params._meta.traceparent` (and `tracestate`); `None` when absent or
/// malformed.
pub fn from_meta(params: &Map<String, Value>) -> Option<SpanContext> {
    let meta = params.get("_meta")?.as_object()?;
    if !meta.contains_key(TRACEPARENT) {
        return None;
    }
    extract(&Meta(meta))
}

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        // An empty `tracestate` is not sent.
        if value.is_empty() {
            return;
        }
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(key), HeaderValue::try_from(value)) {
            self.0.insert(name, value);
        }
    }
}

struct MetaInjector<'a>(&'a mut Map<String, Value>);

impl Injector for MetaInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if value.is_empty() {
            return;
        }
        self.0.insert(key.to_owned(), Value::String(value));
    }
}

/// Sets `traceparent` (and `tracestate`) for the span of `context`, when it has a valid one.
pub fn inject_headers(context: &Context, headers: &mut HeaderMap) {
    if context.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(context, &mut HeaderInjector(headers));
    }
}

/// Sets `_meta.traceparent` (and `tracestate`) in `params` for the span of `context`, when it has
/// a valid one; other `_meta` keys stay.
pub fn inject_meta(context: &Context, params: &mut Map<String, Value>) {
    if !context.span().span_context().is_valid() {
        return;
    }
    let meta = params.entry("_meta").or_insert_with(|| Value::Object(Map::new()));
    if !meta.is_object() {
        *meta = Value::Object(Map::new());
    }
    if let Value::Object(meta) = meta {
        TraceContextPropagator::new().inject_context(context, &mut MetaInjector(meta));
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{SpanId, TraceFlags, TraceId, TraceState};
    use serde_json::json;

    use super::*;

    const PARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    #[test]
    fn a_context_is_read_from_the_headers_or_meta_and_a_malformed_one_is_ignored() {
        let mut headers = HeaderMap::new();
        headers.insert("traceparent", HeaderValue::from_static(PARENT));
        headers.insert("tracestate", HeaderValue::from_static("vendor=value"));
        let in_headers = from_headers(&headers).unwrap();
        assert_eq!(
            in_headers.trace_id(),
            TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").unwrap()
        );
        assert!(in_headers.is_remote() && in_headers.is_sampled());
        assert_eq!(in_headers.trace_state().get("vendor"), Some("value"));

        let params = json!({"name": "t", "_meta": {"traceparent": PARENT, "progressToken": 1}});
        let in_meta = from_meta(params.as_object().unwrap()).unwrap();
        assert_eq!(
            (in_meta.trace_id(), in_meta.span_id(), in_meta.trace_flags()),
            (in_headers.trace_id(), in_headers.span_id(), in_headers.trace_flags())
        );
        assert_eq!(in_meta.trace_state(), &TraceState::default());

        for malformed in [
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "zz-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            "not a trace context",
        ] {
            let mut headers = HeaderMap::new();
            headers.insert("traceparent", HeaderValue::from_static(malformed));
            assert_eq!(from_headers(&headers), None, "{malformed}");
            let params = json!({"_meta": {"traceparent": malformed}});
            assert_eq!(from_meta(params.as_object().unwrap()), None, "{malformed}");
        }
        for params in [json!({}), json!({"_meta": 1}), json!({"_meta": {"traceparent": 7}})] {
            assert_eq!(from_meta(params.as_object().unwrap()), None);
        }
    }

    #[test]
    fn a_span_is_written_into_headers_and_meta() {
        let span = SpanContext::new(
            TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").unwrap(),
            SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        );
        let context = Context::new().with_remote_span_context(span);
        let mut headers = HeaderMap::new();
        inject_headers(&context, &mut headers);
        assert_eq!(
            headers["traceparent"],
            "00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01"
        );
        assert!(!headers.contains_key("tracestate"), "an empty tracestate is not sent");
        let mut params = json!({"name": "t", "_meta": {"progressToken": 1}})
            .as_object()
            .unwrap()
            .clone();
        inject_meta(&context, &mut params);
        assert_eq!(
            Value::Object(params),
            json!({"name": "t", "_meta": {
                "progressToken": 1,
                "traceparent": "00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01",
            }})
        );
        // No span: nothing written.
        let mut headers = HeaderMap::new();
        inject_headers(&Context::new(), &mut headers);
        assert!(headers.is_empty());
    }
}
