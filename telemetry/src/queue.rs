//! The export queue: a span that ends is handed to a bounded channel without waiting, and one
//! task on the runtime exports batches of them. A full queue drops the span; a batch that fails
//! or takes longer than the export timeout is dropped. Both are counted, and neither ever makes a
//! request wait.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry::Context;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;

use crate::metrics::{DropReason, ExportMetrics};
use crate::settings::QueueSettings;

/// A [`SpanProcessor`] that never blocks: see the module documentation.
#[derive(Debug)]
pub struct BoundedExport {
    sender: mpsc::Sender<SpanData>,
    metrics: ExportMetrics,
    closed: AtomicBool,
    /// Tells the export task to close the queue, drain it and end.
    shutdown: Arc<Notify>,
}

impl BoundedExport {
    /// Starts the export task on the current Tokio runtime; its handle ends once the queue is
    /// closed and drained.
    pub fn start<E>(exporter: E, settings: QueueSettings, metrics: ExportMetrics) -> (Self, JoinHandle<()>)
    where
        E: SpanExporter + 'static,
    {
        let (sender, receiver) = mpsc::channel(settings.max_queue_size);
        let shutdown = Arc::new(Notify::new());
        let worker = tokio::spawn(export_batches(
            exporter,
            receiver,
            shutdown.clone(),
            settings,
            metrics.clone(),
        ));
        let processor = Self {
            sender,
            metrics,
            closed: AtomicBool::new(false),
            shutdown,
        };
        (processor, worker)
    }
}

impl SpanProcessor for BoundedExport {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if self.closed.load(Ordering::Acquire) {
            self.metrics.dropped(DropReason::ShutDown, 1);
            return;
        }
        match self.sender.try_send(span) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => self.metrics.dropped(DropReason::QueueFull, 1),
            Err(mpsc::error::TrySendError::Closed(_)) => self.metrics.dropped(DropReason::ShutDown, 1),
        }
    }

    /// Nothing to wait for here: the task exports within the schedule delay, and
    /// [`crate::Tracing::shutdown`] drains the queue.
    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    /// Closes the queue (without blocking the caller); the export task drains what is queued.
    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Err(OTelSdkError::AlreadyShutdown);
        }
        self.shutdown.notify_one();
        Ok(())
    }
}

/// Exports what arrives in batches of at most `max_export_batch_size`, each at most
/// `schedule_delay` after its first span arrived; ends when the queue closes (exporting what is
/// left).
async fn export_batches<E: SpanExporter>(
    exporter: E,
    mut receiver: mpsc::Receiver<SpanData>,
    shutdown: Arc<Notify>,
    settings: QueueSettings,
    metrics: ExportMetrics,
) {
    let mut failing = false;
    // Once closed, `recv` yields what is queued and then `None`.
    let mut closing = false;
    loop {
        let first = tokio::select! {
            biased;
            () = shutdown.notified(), if !closing => {
                closing = true;
                receiver.close();
                continue;
            }
            span = receiver.recv() => span,
        };
        let Some(first) = first else {
            break;
        };
        let mut batch = Vec::with_capacity(settings.max_export_batch_size.min(64));
        batch.push(first);
        let deadline = tokio::time::Instant::now() + settings.schedule_delay;
        let mut open = true;
        while batch.len() < settings.max_export_batch_size {
            let next = tokio::select! {
                biased;
                () = shutdown.notified(), if !closing => {
                    closing = true;
                    receiver.close();
                    continue;
                }
                next = tokio::time::timeout_at(deadline, receiver.recv()) => next,
            };
            match next {
                Ok(Some(span)) => batch.push(span),
                Ok(None) => {
                    open = false;
                    break;
                }
                // Closing: no waiting for the deadline.
                Err(_) => break,
            }
        }
        let spans = batch.len() as u64;
        let outcome = tokio::time::timeout(settings.export_timeout, exporter.export(batch)).await;
        match outcome {
            Ok(Ok(())) => {
                metrics.exported(spans);
                if failing {
                    tracing::info!(spans, "span export works again");
                    failing = false;
                }
            }
            Ok(Err(error)) => {
                metrics.dropped(DropReason::ExportFailed, spans);
                // Once per outage, not once per batch.
                if !failing {
                    tracing::warn!(spans, %error, "cannot export spans; they are dropped and counted until the collector answers");
                    failing = true;
                }
            }
            Err(_) => {
                metrics.dropped(DropReason::ExportFailed, spans);
                if !failing {
                    tracing::warn!(
                        spans,
                        timeout_ms = settings.export_timeout.as_millis() as u64,
                        "span export timed out; spans are dropped and counted until the collector answers"
                    );
                    failing = true;
                }
            }
        }
        if !open {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    use opentelemetry::trace::{SpanContext, SpanKind, Status};
    use opentelemetry_sdk::trace::{SpanEvents, SpanLinks};

    use super::*;

    /// An exporter that counts what it exports, failing or hanging on demand.
    #[derive(Debug, Clone, Default)]
    struct Counting {
        exported: Arc<AtomicUsize>,
        fail: Arc<AtomicBool>,
        hang: Arc<AtomicBool>,
    }

    impl SpanExporter for Counting {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            if self.hang.load(Ordering::Acquire) {
                std::future::pending::<()>().await;
            }
            if self.fail.load(Ordering::Acquire) {
                return Err(OTelSdkError::InternalFailure("collector down".into()));
            }
            self.exported.fetch_add(batch.len(), Ordering::AcqRel);
            Ok(())
        }
    }

    fn span() -> SpanData {
        SpanData {
            span_context: SpanContext::empty_context(),
            parent_span_id: opentelemetry::trace::SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: SpanKind::Internal,
            name: "test".into(),
            start_time: std::time::SystemTime::now(),
            end_time: std::time::SystemTime::now(),
            attributes: Vec::new(),
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: Status::Unset,
            instrumentation_scope: Default::default(),
        }
    }

    /// Waits (at most 10 s) for `condition`.
    async fn eventually(condition: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !condition() {
            assert!(std::time::Instant::now() < deadline, "condition not met within 10 s");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn settings(queue: usize) -> QueueSettings {
        QueueSettings {
            max_queue_size: queue,
            max_export_batch_size: queue,
            schedule_delay: Duration::from_millis(20),
            export_timeout: Duration::from_millis(100),
        }
    }

    #[tokio::test]
    async fn every_span_is_exported_or_counted_as_dropped() {
        let exporter = Counting::default();
        let metrics = ExportMetrics::default();
        let (processor, worker) = BoundedExport::start(exporter.clone(), settings(8), metrics.clone());
        for _ in 0..5 {
            processor.on_end(span());
        }
        eventually(|| metrics.exported_count() == 5).await;
        assert_eq!(exporter.exported.load(Ordering::Acquire), 5);

        exporter.fail.store(true, Ordering::Release);
        for _ in 0..3 {
            processor.on_end(span());
        }
        eventually(|| metrics.dropped_count(DropReason::ExportFailed) == 3).await;

        processor.shutdown_with_timeout(Duration::from_secs(1)).unwrap();
        processor.on_end(span());
        assert_eq!(metrics.dropped_count(DropReason::ShutDown), 1);
        worker.await.unwrap();
    }

    #[tokio::test]
    async fn a_hanging_collector_fills_the_queue_and_nothing_waits() {
        let exporter = Counting::default();
        exporter.hang.store(true, Ordering::Release);
        let metrics = ExportMetrics::default();
        let (processor, _worker) = BoundedExport::start(exporter, settings(4), metrics.clone());
        // The task takes the first batch (at most 4) into the hanging export; 4 more fill the
        // queue; the rest are dropped at once.
        for _ in 0..4 {
            processor.on_end(span());
        }
        eventually(|| processor.sender.capacity() == 4).await;
        let started = std::time::Instant::now();
        for _ in 0..100 {
            processor.on_end(span());
        }
        assert!(started.elapsed() < Duration::from_millis(50), "on_end never waits");
        assert_eq!(metrics.dropped_count(DropReason::QueueFull), 96);
        // The hanging export times out and its batch is counted.
        eventually(|| metrics.dropped_count(DropReason::ExportFailed) == 4).await;
    }

    #[tokio::test]
    async fn shutting_down_exports_what_is_queued() {
        let exporter = Counting::default();
        let mut slow = settings(16);
        slow.schedule_delay = Duration::from_secs(60);
        let (processor, worker) = BoundedExport::start(exporter.clone(), slow, ExportMetrics::default());
        for _ in 0..3 {
            processor.on_end(span());
        }
        processor.shutdown_with_timeout(Duration::from_secs(1)).unwrap();
        tokio::time::timeout(Duration::from_secs(5), worker)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(exporter.exported.load(Ordering::Acquire), 3);
        assert!(matches!(
            processor.shutdown_with_timeout(Duration::from_secs(1)),
            Err(OTelSdkError::AlreadyShutdown)
        ));
    }
}
