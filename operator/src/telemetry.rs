//! Logging and traces.
//!
//! Logs: JSON lines on standard error by default (one object per event, for log pipelines), or
//! human-readable text (coloured only when standard error is a terminal); the level from
//! `RUST_LOG` (default `info`).
//!
//! Traces, when the standard `OTEL_*` variables set an OTLP endpoint (see `palisade-telemetry`):
//! a span per reconcile with its steps, and a client span per Kubernetes API request (kube's own
//! spans, at debug level, taken whatever `RUST_LOG` says). Nothing else becomes a span: the
//! export's own HTTP and gRPC machinery never traces itself.

use std::io::IsTerminal as _;

use opentelemetry_sdk::trace::SdkTracer;
use tracing::Level;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::prelude::*;

/// Format of the log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// One JSON object per line.
    #[default]
    Json,
    /// Human-readable text.
    Text,
}

/// What becomes a span: the operator's own spans, and kube's API-call spans.
fn traced() -> Targets {
    Targets::new()
        .with_target("palisade_operator", Level::INFO)
        .with_target("kube_client", Level::DEBUG)
}

/// Installs the global subscriber, with `tracer`'s spans when trace export is on. Call once, at
/// start-up.
pub fn init(format: LogFormat, tracer: Option<SdkTracer>) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs = match format {
        LogFormat::Json => logs
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_filter(filter)
            .boxed(),
        // Colours only for a person at a terminal, never into a redirected file or a pipe.
        LogFormat::Text => logs
            .with_ansi(std::io::stderr().is_terminal())
            .with_filter(filter)
            .boxed(),
    };
    let spans = tracer.map(|tracer| tracing_opentelemetry::layer().with_tracer(tracer).with_filter(traced()));
    tracing_subscriber::registry().with(logs).with(spans).init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_operator_and_kube_client_become_spans() {
        let traced = traced();
        let enabled = |target: &str, level: Level| {
            let metadata_filter = traced.clone();
            metadata_filter.would_enable(target, &level)
        };
        assert!(enabled("palisade_operator::controller", Level::INFO));
        assert!(!enabled("palisade_operator::controller", Level::DEBUG));
        assert!(enabled("kube_client::client::builder", Level::DEBUG));
        for target in [
            "tonic",
            "h2",
            "hyper_util",
            "reqwest",
            "opentelemetry_sdk",
            "kube_runtime",
        ] {
            assert!(!enabled(target, Level::INFO), "{target}");
        }
    }
}
