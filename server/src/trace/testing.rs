//! A tracer that keeps the spans it records, for the tests of code that records into a
//! request's trace.

use std::sync::Arc;

use opentelemetry_sdk::trace::{InMemorySpanExporter, InMemorySpanExporterBuilder, SimpleSpanProcessor, SpanData};
use palisade_telemetry::DecidingTracer;

/// A tracer that records every trace and the exporter that keeps its spans.
pub fn tracer() -> (&'static DecidingTracer, InMemorySpanExporter) {
    let exporter = InMemorySpanExporterBuilder::new().build();
    let sink = Arc::new(SimpleSpanProcessor::new(exporter.clone()));
    let sampler = palisade_telemetry::Sampler::ParentBased(palisade_telemetry::ParentlessSampler::AlwaysOn);
    let tracer = DecidingTracer::new(sink, "palisade-server", sampler);
    (Box::leak(Box::new(tracer)), exporter)
}

/// The span named `name`.
pub fn named<'a>(spans: &'a [SpanData], name: &str) -> &'a SpanData {
    spans
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no span {name}: {spans:#?}"))
}

/// The value of `span`'s attribute `key`, as text.
pub fn attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}
