//! OpenTelemetry trace export for `palisade-server` and `palisade-operator`.
//!
//! [`TraceSettings::from_env`] reads the standard `OTEL_*` variables (export is off when no OTLP
//! endpoint is set); [`Tracing::install`] builds the tracer provider whose spans leave through a
//! [`queue::BoundedExport`]: bounded, never blocking, every span either exported or counted in
//! [`ExportMetrics`]. The batches leave through [`otlp::OtlpExporter`], which encodes OTLP itself
//! and sends it over gRPC or HTTP.

pub mod metrics;
pub mod otlp;
pub mod queue;
pub mod sampling;
pub mod settings;

use std::time::Duration;

use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{Sampler as SdkSampler, SdkTracer, SdkTracerProvider, SpanExporter as _};
use thiserror::Error;
use tokio::task::JoinHandle;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

pub use metrics::{DropReason, ExportMetrics};
pub use sampling::{DecidingTracer, Decision};
pub use settings::{ClientIdentity, ParentlessSampler, Protocol, QueueSettings, Sampler, SettingsError, TraceSettings};

/// Trace export could not start.
#[derive(Debug, Error)]
pub enum TelemetryError {
    /// An `OTEL_*` variable has a value that cannot be honoured.
    #[error("trace export: {0}")]
    Settings(#[from] SettingsError),
    /// The endpoint is not a URL the transport can use.
    #[error("trace export: the endpoint {endpoint}: {reason}")]
    Endpoint {
        /// The endpoint.
        endpoint: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `OTEL_EXPORTER_OTLP_CERTIFICATE` names a file that is not a readable PEM certificate.
    #[error("trace export: the collector's CA certificate {path}: {reason}")]
    Certificate {
        /// The file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE` or `_CLIENT_KEY` names a file that cannot be read,
    /// or the two do not make a certificate and its key.
    #[error("trace export: the client certificate {certificate} and key {key}: {reason}")]
    ClientIdentity {
        /// The certificate file.
        certificate: String,
        /// The key file.
        key: String,
        /// What is wrong with them.
        reason: String,
    },
}

/// Trace export, installed: the provider whose tracers record spans, and its export task.
#[derive(Debug)]
pub struct Tracing {
    provider: SdkTracerProvider,
    sampler: Sampler,
    /// The provider's processor, shared with the deciding tracers (which hand it spans directly).
    processor: queue::BoundedExport,
    worker: JoinHandle<()>,
}

impl Tracing {
    /// Builds the exporter and the provider, and starts the export task on the current Tokio
    /// runtime.
    pub fn install(settings: &TraceSettings, metrics: ExportMetrics) -> Result<Self, TelemetryError> {
        let certificate_error = |reason: String| TelemetryError::Certificate {
            path: settings
                .certificate
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            reason,
        };
        // Read and parsed here, for both protocols: a file without a certificate stops the start
        // rather than leave every export failing.
        let certificate = settings
            .certificate
            .as_ref()
            .map(|path| {
                let pem = std::fs::read(path).map_err(|error| certificate_error(error.to_string()))?;
                let roots = reqwest::Certificate::from_pem_bundle(&pem)
                    .map_err(|error| certificate_error(with_sources(&error)))?;
                if roots.is_empty() {
                    return Err(certificate_error("no PEM certificate in it".to_owned()));
                }
                Ok((pem, roots))
            })
            .transpose()?;
        let identity = settings.client_identity.as_ref().map(read_identity).transpose()?;
        let https = settings.endpoint.starts_with("https://");
        let headers = settings.header_map();
        let transport = match settings.protocol {
            Protocol::Grpc => {
                // An https endpoint trusts the configured CA, else the system roots.
                let tls = https.then(|| {
                    let tls = ClientTlsConfig::new();
                    let mut tls = match &certificate {
                        Some((pem, _)) => tls.ca_certificate(Certificate::from_pem(pem)),
                        None => tls.with_native_roots(),
                    };
                    if let Some((pem, _)) = &identity {
                        tls = tls.identity(Identity::from_pem(&pem.certificate, &pem.key));
                    }
                    tls
                });
                otlp::GrpcTransport::new(&settings.endpoint, tls, headers, settings.timeout)
                    .map(otlp::Transport::Grpc)
                    .map_err(|reason| TelemetryError::Endpoint {
                        endpoint: settings.endpoint.clone(),
                        reason,
                    })?
            }
            Protocol::HttpProtobuf => {
                let mut client = reqwest::Client::builder().timeout(settings.timeout);
                if let Some((_, roots)) = certificate {
                    client = client.tls_certs_only(roots);
                }
                if let Some((_, identity)) = identity {
                    client = client.identity(identity);
                }
                // What failed is what was configured: the CA, else the client identity.
                let client =
                    client
                        .build()
                        .map_err(|error| match (&settings.certificate, &settings.client_identity) {
                            (None, Some(files)) => TelemetryError::ClientIdentity {
                                certificate: files.certificate.display().to_string(),
                                key: files.key.display().to_string(),
                                reason: with_sources(&error),
                            },
                            _ => certificate_error(with_sources(&error)),
                        })?;
                let url = settings.traces_url();
                let url = reqwest::Url::parse(&url).map_err(|error| TelemetryError::Endpoint {
                    endpoint: url,
                    reason: error.to_string(),
                })?;
                otlp::Transport::Http(otlp::HttpTransport::new(client, url, headers))
            }
        };
        let mut exporter = otlp::OtlpExporter::new(transport);
        // `OTEL_RESOURCE_ATTRIBUTES` is read by the builder's detectors; the service name is the
        // one the settings resolved (the variable's, or the binary's own).
        let resource = Resource::builder()
            .with_service_name(settings.service_name.clone())
            .build();
        exporter.set_resource(&resource);
        let (processor, worker) = queue::BoundedExport::start(exporter, settings.queue, metrics);
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor.clone())
            .with_sampler(sdk_sampler(settings.sampler))
            .with_resource(resource)
            .build();
        Ok(Self {
            provider,
            sampler: settings.sampler,
            processor,
            worker,
        })
    }

    /// A tracer named after the instrumentation scope (the crate that records the spans).
    pub fn tracer(&self, scope: &'static str) -> SdkTracer {
        use opentelemetry::trace::TracerProvider as _;
        self.provider.tracer(scope)
    }

    /// Like [`Tracing::tracer`], deciding sampling before anything is built and taking the
    /// spans of a sampled trace as plain data: for the spans of a request, most of which are not
    /// sampled. Its spans go to the same queue, and stop with the provider.
    pub fn deciding_tracer(&self, scope: &'static str) -> DecidingTracer {
        DecidingTracer::new(std::sync::Arc::new(self.processor.clone()), scope, self.sampler)
    }

    /// The provider, for bridges such as `tracing-opentelemetry`.
    pub fn provider(&self) -> &SdkTracerProvider {
        &self.provider
    }

    /// Stops recording, and exports what is queued within `timeout`.
    pub async fn shutdown(self, timeout: Duration) {
        // Closes the queue without blocking; the task drains it.
        let _ = self.provider.shutdown();
        if tokio::time::timeout(timeout, self.worker).await.is_err() {
            tracing::warn!(
                timeout_ms = timeout.as_millis() as u64,
                "spans still queued at shutdown were not exported in time"
            );
        }
    }
}

/// A client certificate and key, read and checked: a start with files that do not make one stops
/// with them named, rather than every export failing later.
struct IdentityPem {
    certificate: Vec<u8>,
    key: Vec<u8>,
}

fn read_identity(files: &ClientIdentity) -> Result<(IdentityPem, reqwest::Identity), TelemetryError> {
    let error = |reason: String| TelemetryError::ClientIdentity {
        certificate: files.certificate.display().to_string(),
        key: files.key.display().to_string(),
        reason,
    };
    let certificate = std::fs::read(&files.certificate).map_err(|e| error(e.to_string()))?;
    let key = std::fs::read(&files.key).map_err(|e| error(e.to_string()))?;
    let mut both = certificate.clone();
    both.push(b'\n');
    both.extend_from_slice(&key);
    let identity = reqwest::Identity::from_pem(&both).map_err(|e| error(with_sources(&e)))?;
    Ok((IdentityPem { certificate, key }, identity))
}

/// An error and its sources, `: `-separated (reqwest's own message is only "builder error").
fn with_sources(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A span with nothing in it but its name, for the tests of what carries spans.
#[cfg(test)]
pub(crate) fn test_span(name: &'static str) -> opentelemetry_sdk::trace::SpanData {
    use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status};
    use opentelemetry_sdk::trace::{SpanEvents, SpanLinks};
    opentelemetry_sdk::trace::SpanData {
        span_context: SpanContext::empty_context(),
        parent_span_id: SpanId::INVALID,
        parent_span_is_remote: false,
        span_kind: SpanKind::Internal,
        name: name.into(),
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

pub(crate) fn sdk_sampler(sampler: Sampler) -> SdkSampler {
    match sampler {
        Sampler::AlwaysOn => SdkSampler::AlwaysOn,
        Sampler::AlwaysOff => SdkSampler::AlwaysOff,
        Sampler::TraceIdRatio(ratio) => SdkSampler::TraceIdRatioBased(ratio),
        Sampler::ParentBased(root) => SdkSampler::ParentBased(Box::new(match root {
            ParentlessSampler::AlwaysOn => SdkSampler::AlwaysOn,
            ParentlessSampler::AlwaysOff => SdkSampler::AlwaysOff,
            ParentlessSampler::TraceIdRatio(ratio) => SdkSampler::TraceIdRatioBased(ratio),
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(endpoint: &str, protocol: &str) -> TraceSettings {
        let vars = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
        ];
        TraceSettings::from_vars(
            |name| vars.iter().find(|(n, _)| *n == name).map(|(_, v)| (*v).to_owned()),
            "test",
        )
        .unwrap()
        .unwrap()
    }

    #[tokio::test]
    async fn what_a_deciding_tracer_hands_over_after_shutdown_is_counted_as_dropped() {
        let metrics = ExportMetrics::default();
        // Nothing listens there: nothing is exported either way.
        let tracing = Tracing::install(&settings("http://127.0.0.1:9", "grpc"), metrics.clone()).unwrap();
        let tracer = tracing.deciding_tracer("palisade-test");
        tracing.shutdown(Duration::from_millis(100)).await;
        let mut late = test_span("late");
        late.instrumentation_scope = tracer.scope().clone();
        tracer.record(late);
        assert_eq!(metrics.dropped_count(DropReason::ShutDown), 1);
        assert_eq!(metrics.exported_count(), 0);
    }

    #[tokio::test]
    async fn an_endpoint_that_is_not_a_url_stops_the_start_with_it_named() {
        crate::otlp::tests::install_crypto();
        for (protocol, expected) in [
            ("grpc", "trace export: the endpoint http://collector :4317: invalid URI"),
            (
                "http/protobuf",
                "trace export: the endpoint http://collector :4317/v1/traces: invalid international domain name",
            ),
        ] {
            let error =
                Tracing::install(&settings("http://collector :4317", protocol), ExportMetrics::default()).unwrap_err();
            assert_eq!(error.to_string(), expected, "{protocol}");
        }
    }
}
