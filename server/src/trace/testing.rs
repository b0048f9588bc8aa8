//! A tracer that keeps the spans it records, for the tests of code that records into a
//! request's trace.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{InMemorySpanExporter, InMemorySpanExporterBuilder, SdkTracerProvider, SpanData};
use palisade_telemetry::DecidingTracer;

/// A tracer that records every trace (the provider must live as long as the spans are wanted)
/// and the exporter that keeps them.
pub fn tracer() -> (SdkTracerProvider, &'static DecidingTracer, InMemorySpanExporter) {
    let exporter = InMemorySpanExporterBuilder::new().build();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .with_id_generator(palisade_telemetry::sampling::DrawnFirst::default())
        .build();
    let sampler = palisade_telemetry::Sampler::ParentBased(palisade_telemetry::ParentlessSampler::AlwaysOn);
    let tracer = DecidingTracer::new(provider.tracer("palisade-server"), sampler);
    (provider, Box::leak(Box::new(tracer)), exporter)
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
