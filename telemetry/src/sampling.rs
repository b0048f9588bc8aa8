//! Sampling decided before anything is built, and the spans of a sampled trace handed to the
//! export queue as plain data.
//!
//! Most traces are not sampled, and a server that builds a span (a builder, a context, a
//! non-recording span) only to learn that pays for it on every request. A
//! [`DecidingTracer`] decides first, by the rules of the SDK's samplers for the same settings
//! (the same decision for every trace id and caller, a test holds it to the SDK's answers), with
//! the trace id the span will have: an unsampled trace gets its ids and nothing else. A sampled
//! one gets its ids too, and its spans are written by the caller as [`SpanData`] and handed to
//! the export queue ([`DecidingTracer::record`]): no SDK span, context, lock or reference count
//! per span.

use std::fmt;
use std::sync::Arc;

use opentelemetry::InstrumentationScope;
use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
use opentelemetry_sdk::trace::{IdGenerator as _, RandomIdGenerator, SpanData, SpanProcessor};

use crate::settings::{ParentlessSampler, Sampler};

/// A tracer that decides whether a trace is recorded before it builds anything: see the module
/// documentation.
#[derive(Clone)]
pub struct DecidingTracer {
    /// The provider's sampler settings, as the rule each decision applies.
    rule: Rule,
    /// Where a recorded span goes: the provider's export queue.
    sink: Arc<dyn SpanProcessor>,
    /// The instrumentation scope of the spans it records.
    scope: InstrumentationScope,
}

impl fmt::Debug for DecidingTracer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DecidingTracer")
            .field("rule", &self.rule)
            .field("scope", &self.scope.name())
            .finish()
    }
}

/// Whether a span is recorded, decided before it is built: its ids either way (its trace's, a new
/// span id, the parent's trace state).
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
            rule: Rule::of(sampler),
            sink,
            scope: InstrumentationScope::builder(scope).build(),
        }
    }

    /// Decides whether a span is recorded: under `parent` (a caller's span), or the first of a
    /// new trace.
    pub fn decide(&self, parent: Option<&SpanContext>) -> Decision {
        let (trace_id, trace_state) = match parent {
            Some(parent) => (parent.trace_id(), parent.trace_state().clone()),
            None => (RandomIdGenerator::default().new_trace_id(), TraceState::NONE),
        };
        let sampled = self.rule.samples(parent, trace_id);
        let ids = SpanContext::new(
            trace_id,
            self.new_span_id(),
            if sampled {
                TraceFlags::SAMPLED
            } else {
                TraceFlags::default()
            },
            false,
            trace_state,
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

/// The SDK's rules for the samplers the settings make, with a ratio's bound worked out once: a
/// caller's choice is followed only by a parent-based sampler; a ratio is judged on the trace id.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Rule {
    /// A caller's span, when there is one, decides.
    parent_based: bool,
    /// What decides otherwise.
    root: Root,
}

/// How a trace is decided on its id alone.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Root {
    Always,
    /// The trace ids whose test value ([`test_value`]) is below the bound: `opentelemetry_sdk`'s
    /// ratio test, so a service further on that uses it with the same ratio records the same
    /// traces.
    Below(u64),
}

impl Rule {
    fn of(sampler: Sampler) -> Self {
        let (parent_based, root) = match sampler {
            Sampler::AlwaysOn => (false, Root::Always),
            Sampler::AlwaysOff => (false, Root::Below(0)),
            Sampler::TraceIdRatio(ratio) => (false, Root::ratio(ratio)),
            Sampler::ParentBased(ParentlessSampler::AlwaysOn) => (true, Root::Always),
            Sampler::ParentBased(ParentlessSampler::AlwaysOff) => (true, Root::Below(0)),
            Sampler::ParentBased(ParentlessSampler::TraceIdRatio(ratio)) => (true, Root::ratio(ratio)),
        };
        Self { parent_based, root }
    }

    /// Whether the trace `trace_id`, started by `parent` (a caller's valid span context) or
    /// here, is recorded.
    fn samples(self, parent: Option<&SpanContext>, trace_id: TraceId) -> bool {
        match (self.parent_based, parent) {
            (true, Some(parent)) => parent.is_sampled(),
            _ => match self.root {
                Root::Always => true,
                Root::Below(bound) => test_value(trace_id) < bound,
            },
        }
    }
}

impl Root {
    /// A ratio of 1 or more records every trace, one of 0 or less (or NaN) none.
    fn ratio(ratio: f64) -> Self {
        if ratio >= 1.0 {
            Self::Always
        } else {
            Self::Below((ratio.max(0.0) * (1u64 << 63) as f64) as u64)
        }
    }
}

/// What a ratio is tested on: the top 63 bits of the trace id's last eight bytes.
fn test_value(trace_id: TraceId) -> u64 {
    // The trace id's last eight bytes, big-endian: its low 64 bits.
    (u128::from_be_bytes(trace_id.to_bytes()) as u64) >> 1
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use opentelemetry::Context;
    use opentelemetry::trace::{SpanKind, TraceContextExt as _};
    use opentelemetry_sdk::error::OTelSdkResult;
    use opentelemetry_sdk::trace::{SamplingDecision, ShouldSample as _};

    use super::*;

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
    fn sdk_ratio_decision(trace_id: TraceId) -> SamplingDecision {
        crate::sdk_sampler(Sampler::TraceIdRatio(0.25))
            .should_sample(None, trace_id, "root", &SpanKind::Server, &[], &[])
            .decision
    }

    #[test]
    fn a_ratio_decision_is_the_sdk_s_on_the_trace_id_the_trace_keeps() {
        let tracer = deciding(Sampler::ParentBased(ParentlessSampler::TraceIdRatio(0.25)));
        let (mut recorded, mut dropped) = (0, 0);
        for _ in 0..2000 {
            match tracer.decide(None) {
                Decision::Record(ids) => {
                    assert!(ids.is_valid() && ids.is_sampled() && !ids.is_remote());
                    // A ratio sampler anywhere else in the trace agrees.
                    assert_eq!(sdk_ratio_decision(ids.trace_id()), SamplingDecision::RecordAndSample);
                    recorded += 1;
                }
                Decision::Drop(ids) => {
                    assert!(ids.is_valid() && !ids.is_sampled() && !ids.is_remote());
                    assert_eq!(sdk_ratio_decision(ids.trace_id()), SamplingDecision::Drop);
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
            let ids = match tracer.decide(Some(&remote(42, flags))) {
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
        assert!(matches!(tracer.decide(None), Decision::Drop(_)));
    }

    #[test]
    fn always_and_never_ignore_the_caller() {
        assert!(matches!(
            deciding(Sampler::AlwaysOn).decide(Some(&remote(1, TraceFlags::default()))),
            Decision::Record(_)
        ));
        assert!(matches!(
            deciding(Sampler::AlwaysOff).decide(Some(&remote(1, TraceFlags::SAMPLED))),
            Decision::Drop(_)
        ));
    }

    #[test]
    fn a_child_is_of_its_parent_s_trace_and_a_recorded_span_reaches_the_sink() {
        let kept = Arc::new(Kept::default());
        let tracer = DecidingTracer::new(kept.clone(), "palisade-test", Sampler::AlwaysOn);
        let Decision::Record(parent) = tracer.decide(Some(&remote(5, TraceFlags::SAMPLED))) else {
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

    /// Every sampler the settings can make, with the ratios at and beyond the bounds.
    fn every_sampler() -> Vec<Sampler> {
        let ratios = [-0.5, 0.0, 1e-9, 0.01, 0.25, 0.5, 0.999_999, 1.0, 1.5, f64::NAN];
        let mut samplers = vec![Sampler::AlwaysOn, Sampler::AlwaysOff];
        samplers.extend(ratios.map(Sampler::TraceIdRatio));
        samplers.push(Sampler::ParentBased(ParentlessSampler::AlwaysOn));
        samplers.push(Sampler::ParentBased(ParentlessSampler::AlwaysOff));
        samplers.extend(ratios.map(|ratio| Sampler::ParentBased(ParentlessSampler::TraceIdRatio(ratio))));
        samplers
    }

    #[test]
    fn every_decision_is_the_sdk_sampler_s_for_the_same_settings() {
        // Random trace ids, and the ones at the edges of the ratio test (all bits clear, all set,
        // the low bit alone, the top bit of the low half alone).
        let mut trace_ids: Vec<TraceId> = (0..400).map(|_| RandomIdGenerator::default().new_trace_id()).collect();
        trace_ids.extend([0, u128::MAX, 1, 1 << 63, (1 << 64) - 1, 1 << 64].map(TraceId::from));
        for sampler in every_sampler() {
            let tracer = deciding(sampler);
            let sdk = crate::sdk_sampler(sampler);
            for &trace_id in &trace_ids {
                for parent in [None, Some(TraceFlags::SAMPLED), Some(TraceFlags::default())] {
                    let parent = parent.map(|flags| remote(u128::from_be_bytes(trace_id.to_bytes()), flags));
                    let sdk_decides = |trace_id| {
                        let context = parent.clone().map(|p| Context::new().with_remote_span_context(p));
                        sdk.should_sample(context.as_ref(), trace_id, "s", &SpanKind::Server, &[], &[])
                    };
                    // The rule itself, on every trace id.
                    let expected = sdk_decides(trace_id);
                    assert_eq!(
                        Rule::of(sampler).samples(parent.as_ref(), trace_id),
                        expected.decision == SamplingDecision::RecordAndSample,
                        "{sampler:?} {parent:?} {trace_id}"
                    );
                    // The tracer's decision, on the trace id it keeps (drawn anew without a parent).
                    let (ids, recorded) = match tracer.decide(parent.as_ref()) {
                        Decision::Record(ids) => (ids, true),
                        Decision::Drop(ids) => (ids, false),
                    };
                    let expected = sdk_decides(ids.trace_id());
                    assert_eq!(recorded, expected.decision == SamplingDecision::RecordAndSample);
                    assert_eq!(ids.is_sampled(), recorded);
                    assert_eq!(ids.trace_state(), &expected.trace_state, "{sampler:?} {parent:?}");
                    if parent.is_some() {
                        assert_eq!(ids.trace_id(), trace_id);
                    }
                }
            }
        }
    }
}
