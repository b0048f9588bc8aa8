//! OTLP/protobuf (`ExportTraceServiceRequest`, opentelemetry-proto `trace/v1`) written straight
//! from the SDK's [`SpanData`] into one buffer: no intermediate message structs, no copy of a
//! name, key or value into an owned string of its own.
//!
//! A length-delimited field's length comes before its bytes but is known only after them: each
//! nested message is written after a guessed number of length bytes (one for an attribute, more
//! for a span or a batch), and moved only when the guess was wrong.

use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status};
use opentelemetry::{Array, InstrumentationScope, KeyValue, Value};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SpanData;

/// Protobuf wire types.
const VARINT: u32 = 0;
const FIXED64: u32 = 1;
const LENGTH_DELIMITED: u32 = 2;
const FIXED32: u32 = 5;

/// `SpanFlags`: the low byte holds the W3C trace flags; these say whether the parent (or the
/// linked span) is remote, and that this is known.
const HAS_IS_REMOTE: u32 = 0x100;
const IS_REMOTE: u32 = 0x200;

/// Appends `ExportTraceServiceRequest { resource_spans: [ { resource, scope_spans } ] }` for
/// `spans` to `out`: one `ScopeSpans` per instrumentation scope, in the order the scopes first
/// appear.
pub fn export_request(resource: &Resource, spans: &[SpanData], out: &mut Vec<u8>) {
    // ExportTraceServiceRequest.resource_spans = 1
    message(out, 1, 3, |out| {
        // ResourceSpans.resource = 1
        message(out, 1, 2, |out| {
            for (key, value) in resource.iter() {
                // Resource.attributes = 1
                attribute(out, 1, key.as_str(), value);
            }
        });
        let mut scopes: Vec<&InstrumentationScope> = Vec::new();
        for span in spans {
            if !scopes.contains(&&span.instrumentation_scope) {
                scopes.push(&span.instrumentation_scope);
            }
        }
        for scope in scopes {
            // ResourceSpans.scope_spans = 2
            message(out, 2, 3, |out| {
                // ScopeSpans.scope = 1
                message(out, 1, 1, |out| instrumentation_scope(out, scope));
                for span in spans.iter().filter(|span| span.instrumentation_scope == *scope) {
                    // ScopeSpans.spans = 2
                    message(out, 2, 2, |out| self::span(out, span));
                }
                // ScopeSpans.schema_url = 3
                string(out, 3, scope.schema_url().unwrap_or_default());
            });
        }
        // ResourceSpans.schema_url = 3
        string(out, 3, resource.schema_url().unwrap_or_default());
    });
}

fn instrumentation_scope(out: &mut Vec<u8>, scope: &InstrumentationScope) {
    string(out, 1, scope.name());
    string(out, 2, scope.version().unwrap_or_default());
    attributes(out, 3, scope.attributes());
}

fn span(out: &mut Vec<u8>, span: &SpanData) {
    let context = &span.span_context;
    bytes(out, 1, &context.trace_id().to_bytes());
    bytes(out, 2, &context.span_id().to_bytes());
    trace_state(out, 3, context);
    if span.parent_span_id != SpanId::INVALID {
        bytes(out, 4, &span.parent_span_id.to_bytes());
    }
    string(out, 5, &span.name);
    uint(out, 6, span_kind(&span.span_kind));
    fixed64(out, 7, nanos(span.start_time));
    fixed64(out, 8, nanos(span.end_time));
    attributes(out, 9, &span.attributes);
    uint(out, 10, span.dropped_attributes_count.into());
    for event in span.events.iter() {
        message(out, 11, 1, |out| {
            fixed64(out, 1, nanos(event.timestamp));
            string(out, 2, &event.name);
            attributes(out, 3, &event.attributes);
            uint(out, 4, event.dropped_attributes_count.into());
        });
    }
    uint(out, 12, span.events.dropped_count.into());
    for link in span.links.iter() {
        message(out, 13, 1, |out| {
            let linked = &link.span_context;
            bytes(out, 1, &linked.trace_id().to_bytes());
            bytes(out, 2, &linked.span_id().to_bytes());
            trace_state(out, 3, linked);
            attributes(out, 4, &link.attributes);
            uint(out, 5, link.dropped_attributes_count.into());
            fixed32(out, 6, flags(linked, linked.is_remote()));
        });
    }
    uint(out, 14, span.links.dropped_count.into());
    // Span.status = 15, always present (its code says whether it was set).
    message(out, 15, 1, |out| match &span.status {
        Status::Unset => {}
        Status::Ok => uint(out, 3, 1),
        Status::Error { description } => {
            string(out, 2, description);
            uint(out, 3, 2);
        }
    });
    fixed32(out, 16, flags(context, span.parent_span_is_remote));
}

fn flags(context: &SpanContext, remote: bool) -> u32 {
    let mut flags = u32::from(context.trace_flags().to_u8()) | HAS_IS_REMOTE;
    if remote {
        flags |= IS_REMOTE;
    }
    flags
}

fn trace_state(out: &mut Vec<u8>, field: u32, context: &SpanContext) {
    string(out, field, &context.trace_state().header());
}

fn span_kind(kind: &SpanKind) -> u64 {
    match kind {
        SpanKind::Internal => 1,
        SpanKind::Server => 2,
        SpanKind::Client => 3,
        SpanKind::Producer => 4,
        SpanKind::Consumer => 5,
    }
}

fn nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |since| u64::try_from(since.as_nanos()).unwrap_or(u64::MAX))
}

/// Each of `attributes` as a `KeyValue` in the repeated field `field`.
fn attributes<'a>(out: &mut Vec<u8>, field: u32, attributes: impl IntoIterator<Item = &'a KeyValue>) {
    for attribute in attributes {
        self::attribute(out, field, attribute.key.as_str(), &attribute.value);
    }
}

/// One `KeyValue` in the repeated field `field`.
fn attribute(out: &mut Vec<u8>, field: u32, key: &str, value: &Value) {
    message(out, field, 1, |out| key_value(out, key, value));
}

/// `KeyValue { key = 1, value = 2 }`.
fn key_value(out: &mut Vec<u8>, key: &str, value: &Value) {
    string(out, 1, key);
    message(out, 2, 1, |out| any_value(out, value));
}

/// An `AnyValue` that is not an array.
#[derive(Clone, Copy)]
enum Scalar<'a> {
    Text(&'a str),
    Bool(bool),
    Int(i64),
    Double(f64),
}

/// `AnyValue`'s one field: a oneof, so written even when it holds the default value.
fn scalar(out: &mut Vec<u8>, value: Scalar<'_>) {
    match value {
        Scalar::Text(text) => string_always(out, 1, text),
        Scalar::Bool(flag) => varint_field(out, 2, u64::from(flag)),
        // int64: two's complement in a varint.
        Scalar::Int(number) => varint_field(out, 3, number as u64),
        Scalar::Double(number) => fixed64_always(out, 4, number.to_bits()),
    }
}

/// `AnyValue`.
fn any_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::String(text) => scalar(out, Scalar::Text(text.as_str())),
        Value::Bool(flag) => scalar(out, Scalar::Bool(*flag)),
        Value::I64(number) => scalar(out, Scalar::Int(*number)),
        Value::F64(number) => scalar(out, Scalar::Double(*number)),
        Value::Array(array) => message(out, 5, 2, |out| array_value(out, array)),
        // A kind of value this encoder does not know yet: its text.
        other => scalar(out, Scalar::Text(&other.to_string())),
    }
}

/// `ArrayValue { values = 1 }`, each value an `AnyValue`.
fn array_value(out: &mut Vec<u8>, array: &Array) {
    let mut element = |value: Scalar<'_>| message(out, 1, 1, |out| scalar(out, value));
    match array {
        Array::Bool(values) => values.iter().for_each(|v| element(Scalar::Bool(*v))),
        Array::I64(values) => values.iter().for_each(|v| element(Scalar::Int(*v))),
        Array::F64(values) => values.iter().for_each(|v| element(Scalar::Double(*v))),
        Array::String(values) => values.iter().for_each(|v| element(Scalar::Text(v.as_str()))),
        other => element(Scalar::Text(&other.to_string())),
    }
}

/// A length-delimited field whose bytes `write` appends: `guess` bytes are left for the length
/// and the bytes moved only when the length needs another number of them.
fn message(out: &mut Vec<u8>, field: u32, guess: usize, write: impl FnOnce(&mut Vec<u8>)) {
    tag(out, field, LENGTH_DELIMITED);
    let at = out.len();
    out.resize(at + guess, 0);
    write(out);
    let length = (out.len() - at - guess) as u64;
    let used = varint_length(length);
    if used > guess {
        out.splice(at..at, std::iter::repeat_n(0, used - guess));
    } else if used < guess {
        out.drain(at..at + guess - used);
    }
    varint_at(&mut out[at..at + used], length);
}

fn tag(out: &mut Vec<u8>, field: u32, wire_type: u32) {
    varint(out, u64::from(field << 3 | wire_type));
}

/// Appends `value` as a varint, a byte at a time (most are one or two bytes: no copy of a
/// buffer, no call).
fn varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// How many bytes `value` takes as a varint.
fn varint_length(value: u64) -> usize {
    // 7 bits a byte; zero takes one.
    (64 - (value | 1).leading_zeros() as usize).div_ceil(7)
}

/// Writes `value` as a varint into `space`, exactly [`varint_length`] bytes long.
fn varint_at(space: &mut [u8], mut value: u64) {
    let last = space.len() - 1;
    for byte in &mut space[..last] {
        *byte = value as u8 | 0x80;
        value >>= 7;
    }
    space[last] = value as u8;
}

/// A varint field, left out when it is zero (proto3's default).
fn uint(out: &mut Vec<u8>, field: u32, value: u64) {
    if value != 0 {
        varint_field(out, field, value);
    }
}

fn varint_field(out: &mut Vec<u8>, field: u32, value: u64) {
    tag(out, field, VARINT);
    varint(out, value);
}

fn fixed64(out: &mut Vec<u8>, field: u32, value: u64) {
    if value != 0 {
        fixed64_always(out, field, value);
    }
}

fn fixed64_always(out: &mut Vec<u8>, field: u32, value: u64) {
    tag(out, field, FIXED64);
    out.extend_from_slice(&value.to_le_bytes());
}

fn fixed32(out: &mut Vec<u8>, field: u32, value: u32) {
    if value != 0 {
        tag(out, field, FIXED32);
        out.extend_from_slice(&value.to_le_bytes());
    }
}

/// A string field, left out when empty (proto3's default).
fn string(out: &mut Vec<u8>, field: u32, value: &str) {
    if !value.is_empty() {
        string_always(out, field, value);
    }
}

fn string_always(out: &mut Vec<u8>, field: u32, value: &str) {
    bytes_always(out, field, value.as_bytes());
}

fn bytes(out: &mut Vec<u8>, field: u32, value: &[u8]) {
    if !value.is_empty() {
        bytes_always(out, field, value);
    }
}

fn bytes_always(out: &mut Vec<u8>, field: u32, value: &[u8]) {
    tag(out, field, LENGTH_DELIMITED);
    varint(out, value.len() as u64);
    out.extend_from_slice(value);
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::time::Duration;

    use opentelemetry::trace::{Event, Link, SpanContext, SpanId, TraceFlags, TraceId, TraceState};
    use opentelemetry::{InstrumentationScope, KeyValue, StringValue};
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
    use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
    use opentelemetry_sdk::trace::{SpanEvents, SpanLinks};
    use prost::Message as _;

    use super::*;

    fn context(trace: u128, span: u64, flags: TraceFlags, remote: bool, state: &str) -> SpanContext {
        let state = if state.is_empty() {
            TraceState::default()
        } else {
            state.parse().expect("a trace state")
        };
        SpanContext::new(TraceId::from(trace), SpanId::from(span), flags, remote, state)
    }

    fn at(nanos: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_nanos(nanos)
    }

    /// Every kind of field and value a span can hold, and one that holds nothing optional.
    fn spans() -> Vec<SpanData> {
        let server = InstrumentationScope::builder("palisade-server")
            .with_version("0.1.0")
            .with_schema_url("https://opentelemetry.io/schemas/1.30.0")
            .with_attributes([KeyValue::new("scope.kind", "server")])
            .build();
        let bare = InstrumentationScope::builder("bare").build();
        let full = SpanData {
            span_context: context(
                0x0af7_6519_16cd_43dd_8448_eb21_1c80_319c,
                0xb7ad_6b71_6920_3331,
                TraceFlags::SAMPLED,
                false,
                "vendor=value,other=x",
            ),
            parent_span_id: SpanId::from(0x00f0_67aa_0ba9_02b7),
            parent_span_is_remote: true,
            span_kind: SpanKind::Server,
            name: Cow::Borrowed("tools/call read_file"),
            start_time: at(1_700_000_000_123_456_789),
            end_time: at(1_700_000_000_223_456_789),
            attributes: vec![
                KeyValue::new("http.request.method", "POST"),
                KeyValue::new("empty", ""),
                KeyValue::new("http.response.status_code", 200_i64),
                KeyValue::new("negative", -7_i64),
                KeyValue::new("zero", 0_i64),
                KeyValue::new("ratio", 0.25_f64),
                KeyValue::new("nought", 0.0_f64),
                KeyValue::new("yes", true),
                KeyValue::new("no", false),
                KeyValue::new(
                    "strings",
                    Value::Array(Array::String(vec![StringValue::from("a"), StringValue::from("")])),
                ),
                KeyValue::new("ints", Value::Array(Array::I64(vec![1, 0, -1]))),
                KeyValue::new("floats", Value::Array(Array::F64(vec![1.5, 0.0]))),
                KeyValue::new("bools", Value::Array(Array::Bool(vec![true, false]))),
                KeyValue::new("long", "x".repeat(300)),
            ],
            dropped_attributes_count: 2,
            events: {
                let mut events = SpanEvents::default();
                events.events.push(Event::new(
                    "retry",
                    at(1_700_000_000_150_000_000),
                    vec![KeyValue::new("attempt", 2_i64)],
                    1,
                ));
                events.dropped_count = 3;
                events
            },
            links: {
                let mut links = SpanLinks::default();
                links.links.push(Link::new(
                    context(42, 7, TraceFlags::default(), true, "k=v"),
                    vec![KeyValue::new("link.kind", "meta")],
                    4,
                ));
                links.dropped_count = 5;
                links
            },
            status: Status::error("upstream timed out"),
            instrumentation_scope: server.clone(),
        };
        let bare_span = SpanData {
            span_context: context(1, 2, TraceFlags::default(), false, ""),
            parent_span_id: SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: SpanKind::Internal,
            name: Cow::Borrowed(""),
            start_time: UNIX_EPOCH,
            end_time: UNIX_EPOCH,
            attributes: Vec::new(),
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: Status::Unset,
            instrumentation_scope: bare,
        };
        let mut ok = full.clone();
        ok.status = Status::Ok;
        ok.span_kind = SpanKind::Client;
        let mut producer = bare_span.clone();
        producer.span_kind = SpanKind::Producer;
        producer.instrumentation_scope = server.clone();
        let mut consumer = bare_span.clone();
        consumer.span_kind = SpanKind::Consumer;
        vec![full, bare_span, ok, producer, consumer]
    }

    fn resource() -> Resource {
        Resource::builder_empty()
            .with_service_name("palisade-server")
            .with_attributes([
                KeyValue::new("k8s.namespace.name", "team-a"),
                KeyValue::new("replicas", 3_i64),
            ])
            .with_schema_url([], "https://opentelemetry.io/schemas/1.30.0")
            .build()
    }

    /// What opentelemetry-proto's conversion and prost make of the same spans.
    fn reference(resource: &Resource, spans: Vec<SpanData>) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: group_spans_by_resource_and_scope(spans, &ResourceAttributesWithSchema::from(resource)),
        }
    }

    #[test]
    fn the_request_decodes_to_what_the_reference_conversion_makes() {
        let resource = resource();
        let mut encoded = Vec::new();
        export_request(&resource, &spans(), &mut encoded);
        let decoded = ExportTraceServiceRequest::decode(encoded.as_slice()).expect("valid protobuf");
        assert_eq!(decoded, reference(&resource, spans()));
        // The same bytes as prost's, field for field (both leave out proto3 defaults).
        assert_eq!(encoded, reference(&resource, spans()).encode_to_vec());
    }

    #[test]
    fn varints_are_prost_s_at_every_length() {
        let values = (0..64).flat_map(|bit| [1u64 << bit, (1u64 << bit) - 1, (1u64 << bit) + 1]);
        for value in values.chain([u64::MAX]) {
            let mut expected = Vec::new();
            prost::encoding::encode_varint(value, &mut expected);
            let mut appended = Vec::new();
            varint(&mut appended, value);
            assert_eq!(appended, expected, "{value}");
            assert_eq!(varint_length(value), expected.len(), "{value}");
            let mut in_place = vec![0; expected.len()];
            varint_at(&mut in_place, value);
            assert_eq!(in_place, expected, "{value}");
        }
    }

    #[test]
    fn lengths_that_need_more_or_fewer_bytes_than_guessed_are_moved_into_place() {
        let resource = resource();
        // A batch over 2 MiB (more than three length bytes) and an empty one (fewer).
        let mut many = Vec::new();
        for _ in 0..3000 {
            many.extend(spans());
        }
        for batch in [many, Vec::new()] {
            let mut encoded = Vec::new();
            export_request(&resource, &batch, &mut encoded);
            let decoded = ExportTraceServiceRequest::decode(encoded.as_slice()).expect("valid protobuf");
            assert_eq!(decoded, reference(&resource, batch));
        }
    }
}
