//! What became of the spans: exported, or dropped and why.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// Why a span was not exported.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum DropReason {
    /// The export queue was full (the collector is slow or down).
    QueueFull,
    /// Its batch could not be exported within the export timeout (the collector refused it,
    /// could not be reached, or did not answer).
    ExportFailed,
    /// It ended after the export stopped, during shutdown.
    ShutDown,
}

impl DropReason {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::QueueFull => "queue_full",
            Self::ExportFailed => "export_failed",
            Self::ShutDown => "shut_down",
        }
    }
}

impl EncodeLabelValue for DropReason {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DropLabels {
    reason: DropReason,
}

/// `trace_spans_exported_total` and `trace_spans_dropped_total{reason}`, registered at zero
/// whether or not export is on (so a dashboard's queries always find them).
#[derive(Debug, Clone, Default)]
pub struct ExportMetrics {
    exported: Counter,
    dropped: Family<DropLabels, Counter>,
}

impl ExportMetrics {
    /// The counters, registered in `registry` (under its prefix).
    pub fn new(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        metrics.register(registry);
        metrics
    }

    /// Registers the counters in `registry` (under its prefix), with every reason at 0.
    pub fn register(&self, registry: &mut Registry) {
        let metrics = self;
        registry.register(
            "trace_spans_exported",
            "Spans exported to the OpenTelemetry collector",
            metrics.exported.clone(),
        );
        registry.register(
            "trace_spans_dropped",
            "Spans not exported, by reason (queue_full, export_failed, shut_down)",
            metrics.dropped.clone(),
        );
        for reason in [DropReason::QueueFull, DropReason::ExportFailed, DropReason::ShutDown] {
            let _ = metrics.dropped.get_or_create(&DropLabels { reason });
        }
    }

    pub(crate) fn exported(&self, spans: u64) {
        self.exported.inc_by(spans);
    }

    pub(crate) fn dropped(&self, reason: DropReason, spans: u64) {
        self.dropped.get_or_create(&DropLabels { reason }).inc_by(spans);
    }

    /// Spans exported so far.
    pub fn exported_count(&self) -> u64 {
        self.exported.get()
    }

    /// Spans dropped so far for `reason`.
    pub fn dropped_count(&self, reason: DropReason) -> u64 {
        self.dropped.get_or_create(&DropLabels { reason }).get()
    }
}
