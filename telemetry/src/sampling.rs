//! Sampling decided before anything is built.
//!
//! Most traces are not sampled, and a server that builds a span (a builder, a context, a
//! non-recording span) only to learn that pays for it on every request. A
//! [`DecidingTracer`] asks the tracer provider's own sampler first, with the trace id the span
//! will have: an unsampled trace gets its ids and nothing else, and a sampled one is built by the
//! SDK, whose sampler decides the same again. So that it does, a trace that starts here keeps the
//! trace id its decision was made on: [`DrawnFirst`], the provider's id generator, hands it to the
//! SDK (the id decides a ratio sampler's choice, and every service that samples by ratio must
//! see the same id to agree).

use std::cell::Cell;
use std::fmt;
use std::sync::Arc;

use opentelemetry::Context;
use opentelemetry::trace::{
    SpanBuilder, SpanContext, SpanId, SpanKind, TraceContextExt as _, TraceFlags, TraceId, Tracer as _,
};
use opentelemetry_sdk::trace::{
    IdGenerator, RandomIdGenerator, Sampler as SdkSampler, SamplingDecision, SdkTracer, ShouldSample as _,
};

use crate::settings::Sampler;

thread_local! {
    /// The trace id the next trace that starts on this thread takes: set only while
    /// [`ToRecord::start`] builds the span whose sampling was decided on it.
    static DRAWN: Cell<Option<TraceId>> = const { Cell::new(None) };
}

/// The provider's id generator: random ids, except for a trace whose id was drawn ahead to
/// decide its sampling (see the module documentation).
#[derive(Debug, Default)]
pub struct DrawnFirst(RandomIdGenerator);

impl IdGenerator for DrawnFirst {
    fn new_trace_id(&self) -> TraceId {
        DRAWN.take().unwrap_or_else(|| self.0.new_trace_id())
    }

    fn new_span_id(&self) -> SpanId {
        self.0.new_span_id()
    }
}

/// A tracer that decides whether a trace is recorded before it builds anything: see the module
/// documentation.
#[derive(Clone)]
pub struct DecidingTracer {
    tracer: SdkTracer,
    /// The provider's sampler (the same settings, so the same decisions).
    sampler: Arc<SdkSampler>,
}

impl fmt::Debug for DecidingTracer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DecidingTracer")
            .field("sampler", &self.sampler)
            .finish()
    }
}

/// Whether a span is recorded, decided before it is built.
#[derive(Debug)]
pub enum Decision<'a> {
    /// Sampled: [`ToRecord::start`] builds it.
    Record(ToRecord<'a>),
    /// Not sampled: the span's ids (its trace's, a new span id, not sampled, the parent's trace
    /// state), for what must still learn the trace (an upstream it is propagated to).
    Drop(SpanContext),
}

/// A span whose trace is sampled, not yet built.
#[derive(Debug)]
pub struct ToRecord<'a> {
    tracer: &'a SdkTracer,
    name: &'static str,
    kind: SpanKind,
    parent: Context,
    /// The id of a trace that starts with this span.
    drawn: Option<TraceId>,
}

impl DecidingTracer {
    /// `tracer` of a provider whose sampler is `sampler` and whose id generator is
    /// [`DrawnFirst`] (as [`crate::Tracing::install`] builds it).
    pub fn new(tracer: SdkTracer, sampler: Sampler) -> Self {
        Self {
            tracer,
            sampler: Arc::new(crate::sdk_sampler(sampler)),
        }
    }

    /// Decides whether the span `name` of `kind` is recorded: under `parent` (a caller's span),
    /// or the first of a new trace.
    pub fn decide(&self, parent: Option<SpanContext>, name: &'static str, kind: SpanKind) -> Decision<'_> {
        let (trace_id, drawn) = match &parent {
            Some(parent) => (parent.trace_id(), None),
            None => {
                let id = RandomIdGenerator::default().new_trace_id();
                (id, Some(id))
            }
        };
        // A context is made only for a parent (and for a span that is built): the sampler
        // reads a missing one as no parent, as it does an empty one.
        let parent = parent.map(|parent| Context::new().with_remote_span_context(parent));
        let result = self
            .sampler
            .should_sample(parent.as_ref(), trace_id, name, &kind, &[], &[]);
        match result.decision {
            SamplingDecision::Drop => Decision::Drop(SpanContext::new(
                trace_id,
                RandomIdGenerator::default().new_span_id(),
                TraceFlags::default(),
                false,
                result.trace_state,
            )),
            SamplingDecision::RecordOnly | SamplingDecision::RecordAndSample => Decision::Record(ToRecord {
                tracer: &self.tracer,
                name,
                kind,
                parent: parent.unwrap_or_default(),
                drawn,
            }),
        }
    }

    /// The tracer, for spans under one already recorded.
    pub fn tracer(&self) -> &SdkTracer {
        &self.tracer
    }
}

impl ToRecord<'_> {
    /// Builds the span (`configure` adds to its builder: a start time, attributes) and returns
    /// the context with it. The span does not record only if the provider was shut down since
    /// the decision.
    pub fn start(self, configure: impl FnOnce(SpanBuilder) -> SpanBuilder) -> Context {
        let builder = configure(self.tracer.span_builder(self.name).with_kind(self.kind));
        DRAWN.set(self.drawn);
        let span = self.tracer.build_with_context(builder, &self.parent);
        // Taken by the SDK, unless it built nothing (a provider shut down).
        DRAWN.set(None);
        self.parent.with_span(span)
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{TraceState, TracerProvider as _};
    use opentelemetry_sdk::trace::SdkTracerProvider;

    use super::*;
    use crate::settings::ParentlessSampler;

    fn deciding(sampler: Sampler) -> (SdkTracerProvider, DecidingTracer) {
        let provider = SdkTracerProvider::builder()
            .with_sampler(crate::sdk_sampler(sampler))
            .with_id_generator(DrawnFirst::default())
            .build();
        let tracer = DecidingTracer::new(provider.tracer("test"), sampler);
        (provider, tracer)
    }

    fn remote(trace: u128, flags: TraceFlags) -> SpanContext {
        SpanContext::new(
            TraceId::from(trace),
            SpanId::from(7),
            flags,
            true,
            TraceState::from_key_value([("vendor", "value")]).unwrap(),
        )
    }

    /// The SDK's decision for a trace id by a ratio of 0.25, wherever the trace is.
    fn by_ratio(trace_id: TraceId) -> SamplingDecision {
        crate::sdk_sampler(Sampler::TraceIdRatio(0.25))
            .should_sample(None, trace_id, "root", &SpanKind::Server, &[], &[])
            .decision
    }

    #[test]
    fn a_ratio_decision_is_the_sdk_s_on_the_trace_id_the_trace_keeps() {
        let (_provider, tracer) = deciding(Sampler::ParentBased(ParentlessSampler::TraceIdRatio(0.25)));
        let (mut recorded, mut dropped) = (0, 0);
        for _ in 0..2000 {
            match tracer.decide(None, "root", SpanKind::Server) {
                Decision::Record(to_record) => {
                    let context = to_record.start(|builder| builder);
                    let span = context.span();
                    assert!(span.is_recording(), "the SDK decided otherwise");
                    let ids = span.span_context();
                    assert!(ids.is_sampled() && !ids.is_remote());
                    // The trace kept the id it was decided on: a ratio sampler anywhere agrees.
                    assert_eq!(by_ratio(ids.trace_id()), SamplingDecision::RecordAndSample);
                    recorded += 1;
                }
                Decision::Drop(ids) => {
                    assert!(ids.is_valid() && !ids.is_sampled() && !ids.is_remote());
                    // The SDK's own sampler drops this trace id too.
                    assert_eq!(by_ratio(ids.trace_id()), SamplingDecision::Drop);
                    dropped += 1;
                }
            }
        }
        // About a quarter of 2,000 (the bounds are 7 standard deviations wide).
        assert!((365..=635).contains(&recorded), "{recorded} of 2000 recorded");
        assert_eq!(recorded + dropped, 2000);
        assert_eq!(DRAWN.get(), None, "no drawn id is left for another trace");
    }

    #[test]
    fn a_caller_s_choice_is_followed_with_its_trace_id_and_state() {
        let (_provider, tracer) = deciding(Sampler::ParentBased(ParentlessSampler::AlwaysOff));
        let Decision::Record(to_record) =
            tracer.decide(Some(remote(42, TraceFlags::SAMPLED)), "child", SpanKind::Server)
        else {
            panic!("a sampled caller's trace is recorded");
        };
        let context = to_record.start(|builder| builder);
        let ids = context.span().span_context().clone();
        assert_eq!(ids.trace_id(), TraceId::from(42));
        assert_ne!(ids.span_id(), SpanId::from(7));
        assert!(ids.is_sampled());

        let Decision::Drop(ids) = tracer.decide(Some(remote(43, TraceFlags::default())), "child", SpanKind::Server)
        else {
            panic!("an unsampled caller's trace is not recorded");
        };
        assert_eq!(ids.trace_id(), TraceId::from(43));
        assert_ne!(ids.span_id(), SpanId::from(7));
        assert!(!ids.is_sampled() && !ids.is_remote());
        assert_eq!(ids.trace_state().get("vendor"), Some("value"));

        // No caller, and the root sampler says no.
        assert!(matches!(
            tracer.decide(None, "root", SpanKind::Server),
            Decision::Drop(_)
        ));
    }

    #[test]
    fn always_and_never_ignore_the_caller() {
        let (_provider, always) = deciding(Sampler::AlwaysOn);
        assert!(matches!(
            always.decide(Some(remote(1, TraceFlags::default())), "s", SpanKind::Server),
            Decision::Record(_)
        ));
        let (_provider, never) = deciding(Sampler::AlwaysOff);
        assert!(matches!(
            never.decide(Some(remote(1, TraceFlags::SAMPLED)), "s", SpanKind::Server),
            Decision::Drop(_)
        ));
    }

    #[test]
    fn a_shut_down_provider_builds_a_span_that_does_not_record_and_keeps_no_drawn_id() {
        let (provider, tracer) = deciding(Sampler::AlwaysOn);
        let Decision::Record(to_record) = tracer.decide(None, "root", SpanKind::Server) else {
            panic!("always on");
        };
        provider.shutdown().unwrap();
        assert!(!to_record.start(|builder| builder).span().is_recording());
        assert_eq!(DRAWN.get(), None);
    }
}
