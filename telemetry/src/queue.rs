//! The export queue: a span that ends is pushed onto a bounded queue under a short lock, without
//! waking anything; one task on the runtime takes what is queued every schedule delay (or as
//! soon as a whole batch is waiting) and exports it in batches. A full queue drops the span; a
//! batch that fails or takes longer than the export timeout is dropped. Both are counted, and
//! neither ever makes a request wait.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use opentelemetry::Context;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::metrics::{DropReason, ExportMetrics};
use crate::settings::QueueSettings;

/// What the spans' threads and the export task share.
#[derive(Debug)]
struct Queue {
    spans: Mutex<Vec<SpanData>>,
    /// A whole batch is waiting, or the queue closed.
    ready: Notify,
    closed: AtomicBool,
}

impl Queue {
    fn spans(&self) -> MutexGuard<'_, Vec<SpanData>> {
        self.spans.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A [`SpanProcessor`] that never blocks: see the module documentation. Its clones share one
/// queue.
#[derive(Debug, Clone)]
pub struct BoundedExport {
    queue: Arc<Queue>,
    settings: QueueSettings,
    metrics: ExportMetrics,
}

impl BoundedExport {
    /// Starts the export task on the current Tokio runtime; its handle ends once the queue is
    /// closed and drained.
    pub fn start<E>(exporter: E, settings: QueueSettings, metrics: ExportMetrics) -> (Self, JoinHandle<()>)
    where
        E: SpanExporter + 'static,
    {
        let queue = Arc::new(Queue {
            spans: Mutex::new(Vec::new()),
            ready: Notify::new(),
            closed: AtomicBool::new(false),
        });
        let worker = tokio::spawn(export_batches(exporter, queue.clone(), settings, metrics.clone()));
        let processor = Self {
            queue,
            settings,
            metrics,
        };
        (processor, worker)
    }
}

impl SpanProcessor for BoundedExport {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        let mut spans = self.queue.spans();
        // Read under the lock it is set under: once the export task has found the queue closed
        // and empty, nothing is pushed that it would not see.
        if self.queue.closed.load(Ordering::Acquire) {
            drop(spans);
            self.metrics.dropped(DropReason::ShutDown, 1);
            return;
        }
        if spans.len() >= self.settings.max_queue_size {
            drop(spans);
            self.metrics.dropped(DropReason::QueueFull, 1);
            return;
        }
        spans.push(span);
        // Woken once per whole batch, not once per span.
        let batch_waiting = spans.len() == self.settings.max_export_batch_size;
        drop(spans);
        if batch_waiting {
            self.queue.ready.notify_one();
        }
    }

    /// Nothing to wait for here: the task exports within the schedule delay, and
    /// [`crate::Tracing::shutdown`] drains the queue.
    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    /// Closes the queue (without blocking the caller); the export task drains what is queued.
    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        let spans = self.queue.spans();
        let already = self.queue.closed.swap(true, Ordering::AcqRel);
        drop(spans);
        if already {
            return Err(OTelSdkError::AlreadyShutdown);
        }
        self.queue.ready.notify_one();
        Ok(())
    }
}

/// Every schedule delay, or as soon as a batch is waiting, exports what is queued in batches of
/// at most `max_export_batch_size`; ends when the queue is closed and empty.
async fn export_batches<E: SpanExporter>(
    exporter: E,
    queue: Arc<Queue>,
    settings: QueueSettings,
    metrics: ExportMetrics,
) {
    let mut failing = false;
    loop {
        if !queue.closed.load(Ordering::Acquire) {
            tokio::select! {
                () = tokio::time::sleep(settings.schedule_delay) => {}
                () = queue.ready.notified() => {}
            }
        }
        let mut taken = std::mem::take(&mut *queue.spans());
        while !taken.is_empty() {
            let rest = taken.split_off(taken.len().min(settings.max_export_batch_size));
            let batch = std::mem::replace(&mut taken, rest);
            failing = export(&exporter, batch, &settings, &metrics, failing).await;
        }
        if queue.closed.load(Ordering::Acquire) && queue.spans().is_empty() {
            break;
        }
    }
}

/// Exports one batch within the export timeout and counts it; whether export is failing now
/// (the log says so once per outage, not once per batch).
async fn export<E: SpanExporter>(
    exporter: &E,
    batch: Vec<SpanData>,
    settings: &QueueSettings,
    metrics: &ExportMetrics,
    failing: bool,
) -> bool {
    let spans = batch.len() as u64;
    match tokio::time::timeout(settings.export_timeout, exporter.export(batch)).await {
        Ok(Ok(())) => {
            metrics.exported(spans);
            if failing {
                tracing::info!(spans, "span export works again");
            }
            false
        }
        Ok(Err(error)) => {
            metrics.dropped(DropReason::ExportFailed, spans);
            if !failing {
                tracing::warn!(spans, %error, "cannot export spans; they are dropped and counted until the collector answers");
            }
            true
        }
        Err(_) => {
            metrics.dropped(DropReason::ExportFailed, spans);
            if !failing {
                tracing::warn!(
                    spans,
                    timeout_ms = settings.export_timeout.as_millis() as u64,
                    "span export timed out; spans are dropped and counted until the collector answers"
                );
            }
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

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
        crate::test_span("test")
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
        eventually(|| processor.queue.spans().is_empty()).await;
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
