//! Sampling decided before anything is built, and the spans of a sampled trace handed to the
//! export queue as plain data.
//!
//! Most traces are not sampled, and a server that builds a span (a builder, a context, a
//! non-recording span) only to learn that pays for it on every request. A
//! [`DecidingTracer`] asks a sampler made from the provider's settings (so it decides as the
//! provider would) first, with the trace id the span will have: an unsampled trace gets its ids
//! and nothing else. A sampled one gets its ids too, and its spans are written by the caller as
//! [`SpanData`] and handed to the export queue ([`DecidingTracer::record`]): no SDK span, context,
//! lock or reference count per span. At 1%, a recorded trace runs once in a hundred requests, on
//! code and data the other requests have pushed out of the caches, and costs in time far more
//! than its instructions; what it does not run costs nothing.

use std::fmt;
use std::sync::Arc;

use opentelemetry::trace::{SpanContext, SpanId, SpanKind, TraceFlags};
use opentelemetry::{Context, InstrumentationScope, trace::TraceContextExt as _};
use opentelemetry_sdk::trace::{
    IdGenerator as _, RandomIdGenerator, Sampler as SdkSampler, SamplingDecision, ShouldSample as _, SpanData,
    SpanProcessor,
};

use crate::settings::Sampler;

/// A tracer that decides whether a trace is recorded before it builds anything: see the module
/// documentation.
#[derive(Clone)]
pub struct DecidingTracer {
    /// A sampler of the provider's settings (the same decisions).
    sampler: SdkSampler,
    /// Where a recorded span goes: the provider's export queue.
    sink: Arc<dyn SpanProcessor>,
    /// The instrumentation scope of the spans it records.
    scope: InstrumentationScope,
}

impl fmt::Debug for DecidingTracer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DecidingTracer")
            .field("sampler", &self.sampler)
            .field("scope", &self.scope.name())
            .finish()
    }
}

/// Whether a span is recorded, decided before it is built: its ids either way (its trace's, a new
/// span id, the parent's trace state as the sampler left it).
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Sampled: the caller writes the span and hands it to [`DecidingTracer::record`].
    Record(SpanContext),
    /// Not sampled (the flags say so), for what must still learn the trace (an upstream it is
    /// propagated to).
    Drop(SpanContext),
}

impl DecidingTracer {
    /// Records the spans of scope `scope` into `sink` (the processor of the provider
    /// [`crate::Tracing::install`] builds), sampled by `sampler`.
    pub fn new(sink: Arc<dyn SpanProcessor>, scope: &'static str, sampler: Sampler) -> Self {
        Self {
            sampler: crate::sdk_sampler(sampler),
            sink,
            scope: InstrumentationScope::builder(scope).build(),
        }
    }

    /// Decides whether the span `name` of `kind` is recorded: under `parent` (a caller's span),
    /// or the first of a new trace.
    pub fn decide(&self, parent: Option<SpanContext>, name: &'static str, kind: SpanKind) -> Decision {
        let trace_id = match &parent {
            Some(parent) => parent.trace_id(),
            None => RandomIdGenerator::default().new_trace_id(),
        };
        // A context is made only for a parent: the sampler reads a missing one as no parent, as
        // it does an empty one.
        let parent = parent.map(|parent| Context::new().with_remote_span_context(parent));
        let result = self
            .sampler
            .should_sample(parent.as_ref(), trace_id, name, &kind, &[], &[]);
        // The samplers the settings make answer `RecordAndSample` or `Drop`: a span that would be
        // recorded for no exporter (`RecordOnly`) is not made.
        let sampled = result.decision == SamplingDecision::RecordAndSample;
        let ids = SpanContext::new(
            trace_id,
            self.new_span_id(),
            if sampled {
                TraceFlags::SAMPLED
            } else {
                TraceFlags::default()
            },
            false,
            result.trace_state,
        );
        if sampled {
            Decision::Record(ids)
        } else {
            Decision::Drop(ids)
        }
    }

    /// A new random span id.
    fn new_span_id(&self) -> SpanId {
        RandomIdGenerator::default().new_span_id()
    }

    /// The ids of a new child of the recorded span `parent`: the same trace, flags and state.
    pub fn child_of(&self, parent: &SpanContext) -> SpanContext {
        SpanContext::new(
            parent.trace_id(),
            self.new_span_id(),
            parent.trace_flags(),
            false,
            parent.trace_state().clone(),
        )
    }

    /// The instrumentation scope of the spans it records.
    pub fn scope(&self) -> &InstrumentationScope {
        &self.scope
    }

    /// Hands a recorded span to the export queue (counted as dropped there if the queue is full
    /// or shut down).
    pub fn record(&self, span: SpanData) {
        self.sink.on_end(span);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use opentelemetry::trace::{TraceId, TraceState};
    use opentelemetry_sdk::error::OTelSdkResult;

    use super::*;
    use crate::settings::ParentlessSampler;

    /// A processor that keeps what it is handed.
    #[derive(Debug, Default)]
    struct Kept(Mutex<Vec<SpanData>>);

    impl SpanProcessor for Kept {
        fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &Context) {}

        fn on_end(&self, span: SpanData) {
            self.0.lock().unwrap().push(span);
        }

        fn force_flush(&self) -> OTelSdkResult {
            Ok(())
        }

        fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
            Ok(())
        }
    }

    fn deciding(sampler: Sampler) -> DecidingTracer {
        DecidingTracer::new(Arc::new(Kept::default()), "test", sampler)
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
        let tracer = deciding(Sampler::ParentBased(ParentlessSampler::TraceIdRatio(0.25)));
        let (mut recorded, mut dropped) = (0, 0);
        for _ in 0..2000 {
            match tracer.decide(None, "root", SpanKind::Server) {
                Decision::Record(ids) => {
                    assert!(ids.is_valid() && ids.is_sampled() && !ids.is_remote());
                    // A ratio sampler anywhere else in the trace agrees.
                    assert_eq!(by_ratio(ids.trace_id()), SamplingDecision::RecordAndSample);
                    recorded += 1;
                }
                Decision::Drop(ids) => {
                    assert!(ids.is_valid() && !ids.is_sampled() && !ids.is_remote());
                    assert_eq!(by_ratio(ids.trace_id()), SamplingDecision::Drop);
                    dropped += 1;
                }
            }
        }
        // About a quarter of 2,000 (the bounds are 7 standard deviations wide).
        assert!((365..=635).contains(&recorded), "{recorded} of 2000 recorded");
        assert_eq!(recorded + dropped, 2000);
    }

    #[test]
    fn a_caller_s_choice_is_followed_with_its_trace_id_and_state() {
        let tracer = deciding(Sampler::ParentBased(ParentlessSampler::AlwaysOff));
        for (flags, sampled) in [(TraceFlags::SAMPLED, true), (TraceFlags::default(), false)] {
            let ids = match tracer.decide(Some(remote(42, flags)), "child", SpanKind::Server) {
                Decision::Record(ids) if sampled => ids,
                Decision::Drop(ids) if !sampled => ids,
                other => panic!("a caller that sampled ({sampled}) decides: {other:?}"),
            };
            assert_eq!(ids.trace_id(), TraceId::from(42));
            assert_ne!(ids.span_id(), SpanId::from(7));
            assert_eq!(ids.is_sampled(), sampled);
            assert!(!ids.is_remote());
            assert_eq!(ids.trace_state().get("vendor"), Some("value"));
        }
        // No caller, and the root sampler says no.
        assert!(matches!(
            tracer.decide(None, "root", SpanKind::Server),
            Decision::Drop(_)
        ));
    }

    #[test]
    fn always_and_never_ignore_the_caller() {
        assert!(matches!(
            deciding(Sampler::AlwaysOn).decide(Some(remote(1, TraceFlags::default())), "s", SpanKind::Server),
            Decision::Record(_)
        ));
        assert!(matches!(
            deciding(Sampler::AlwaysOff).decide(Some(remote(1, TraceFlags::SAMPLED)), "s", SpanKind::Server),
            Decision::Drop(_)
        ));
    }

    #[test]
    fn a_child_is_of_its_parent_s_trace_and_a_recorded_span_reaches_the_sink() {
        let kept = Arc::new(Kept::default());
        let tracer = DecidingTracer::new(kept.clone(), "palisade-test", Sampler::AlwaysOn);
        let Decision::Record(parent) = tracer.decide(Some(remote(5, TraceFlags::SAMPLED)), "p", SpanKind::Server)
        else {
            panic!("always on");
        };
        let child = tracer.child_of(&parent);
        assert_eq!(
            (child.trace_id(), child.trace_flags(), child.trace_state()),
            (parent.trace_id(), parent.trace_flags(), parent.trace_state())
        );
        assert_ne!(child.span_id(), parent.span_id());
        let mut span = crate::test_span("child");
        span.span_context = child.clone();
        span.parent_span_id = parent.span_id();
        span.instrumentation_scope = tracer.scope().clone();
        tracer.record(span);
        let kept = kept.0.lock().unwrap();
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].span_context, child);
        assert_eq!(kept[0].instrumentation_scope.name(), "palisade-test");
    }
}
