//! The OTLP span exporter: each batch is encoded once, straight from the SDK's [`SpanData`]
//! ([`encode`]), and sent as it is over gRPC ([`grpc`]) or HTTP ([`http`]).

pub mod encode;
mod grpc;
mod http;

use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};

pub use grpc::GrpcTransport;
pub use http::HttpTransport;

/// Sent with every export request.
const USER_AGENT: &str = concat!("palisade-telemetry/", env!("CARGO_PKG_VERSION"));

/// Where the encoded batches go.
#[derive(Debug)]
pub enum Transport {
    /// `grpc`: the `TraceService/Export` call.
    Grpc(GrpcTransport),
    /// `http/protobuf`: a POST to the traces URL.
    Http(HttpTransport),
}

/// A [`SpanExporter`] over OTLP: see the module documentation.
#[derive(Debug)]
pub struct OtlpExporter {
    resource: Resource,
    transport: Transport,
}

impl OtlpExporter {
    /// Exports over `transport`; the resource is the provider's, set by the SDK.
    pub fn new(transport: Transport) -> Self {
        Self {
            resource: Resource::builder_empty().build(),
            transport,
        }
    }
}

impl SpanExporter for OtlpExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        // About 400 bytes a span: one allocation for most batches.
        let mut body = Vec::with_capacity(batch.len() * 512 + 256);
        encode::export_request(&self.resource, &batch, &mut body);
        drop(batch);
        match &self.transport {
            Transport::Grpc(grpc) => grpc.send(body).await,
            Transport::Http(http) => http.send(body).await,
        }
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.resource = resource.clone();
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::borrow::Cow;
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, UNIX_EPOCH};

    use http_body_util::{BodyExt as _, Full};
    use hyper::body::{Bytes, Incoming};
    use hyper::{Request, Response};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState};
    use opentelemetry::{InstrumentationScope, KeyValue};
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_sdk::trace::{SpanEvents, SpanLinks};
    use prost::Message as _;
    use reqwest::header::HeaderMap;

    use super::*;

    /// What the collector received: the path, the headers and the body of each request.
    type Received = Arc<Mutex<Vec<(String, ::http::HeaderMap, Vec<u8>)>>>;

    /// A collector on loopback (HTTP/1.1 and HTTP/2 without TLS) that keeps every request and
    /// answers as an OTLP collector does: a gRPC call with an empty message and `grpc-status: 0`,
    /// an HTTP POST with 200; or, when it `refuses`, `INVALID_ARGUMENT` and 400.
    async fn collector(refuses: bool) -> (String, Received) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let received: Received = Arc::default();
        let keep = received.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let keep = keep.clone();
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let keep = keep.clone();
                    async move {
                        let (parts, body) = request.into_parts();
                        let body = body.collect().await.unwrap().to_bytes().to_vec();
                        let grpc = parts
                            .headers
                            .get("content-type")
                            .is_some_and(|v| v == "application/grpc");
                        keep.lock()
                            .unwrap()
                            .push((parts.uri.path().to_owned(), parts.headers, body));
                        let response = if grpc {
                            let mut trailers = ::http::HeaderMap::new();
                            let status = if refuses { "3" } else { "0" };
                            trailers.insert("grpc-status", ::http::HeaderValue::from_static(status));
                            trailers.insert("grpc-message", ::http::HeaderValue::from_static("bad%20span"));
                            let body = Full::new(Bytes::from_static(&[0, 0, 0, 0, 0]))
                                .with_trailers(async move { Some(Ok(trailers)) })
                                .boxed();
                            Response::builder()
                                .header("content-type", "application/grpc")
                                .body(body)
                        } else {
                            Response::builder()
                                .status(if refuses { 400 } else { 200 })
                                .body(Full::new(Bytes::new()).with_trailers(async { None }).boxed())
                        };
                        Ok::<_, std::convert::Infallible>(response.unwrap())
                    }
                });
                tokio::spawn(
                    hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .into_owned(),
                );
            }
        });
        (format!("http://{address}"), received)
    }

    fn span() -> SpanData {
        SpanData {
            span_context: SpanContext::new(
                TraceId::from(7),
                SpanId::from(9),
                TraceFlags::SAMPLED,
                false,
                TraceState::default(),
            ),
            parent_span_id: SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: SpanKind::Server,
            name: Cow::Borrowed("tools/call read_file"),
            start_time: UNIX_EPOCH + Duration::from_secs(1),
            end_time: UNIX_EPOCH + Duration::from_secs(2),
            attributes: vec![KeyValue::new("mcp.method.name", "tools/call")],
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: Status::Unset,
            instrumentation_scope: InstrumentationScope::builder("palisade-server").build(),
        }
    }

    /// What the binaries do at start: reqwest is built without a crypto provider of its own.
    pub(crate) fn install_crypto() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }

    fn headers() -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", "Bearer collector-token".parse().unwrap());
        headers
    }

    /// The body of the one request the collector received, checked to have come to `path` as
    /// `content_type` with the configured header and the exporter's user agent.
    fn only_request(received: &Received, path: &str, content_type: &str) -> Vec<u8> {
        let received = received.lock().unwrap();
        assert_eq!(received.len(), 1);
        let (at, headers, body) = &received[0];
        assert_eq!(at, path);
        assert_eq!(headers["content-type"], content_type);
        assert_eq!(headers["authorization"], "Bearer collector-token");
        let agent = headers["user-agent"].to_str().unwrap();
        assert!(agent.starts_with("palisade-telemetry/"), "{agent}");
        body.clone()
    }

    /// The spans in an `ExportTraceServiceRequest`, by name.
    fn span_names(body: &[u8]) -> Vec<String> {
        let request = ExportTraceServiceRequest::decode(body).expect("an ExportTraceServiceRequest");
        request
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
            .map(|s| s.name.clone())
            .collect()
    }

    #[tokio::test]
    async fn grpc_sends_the_export_call_with_the_headers_as_metadata() {
        let (endpoint, received) = collector(false).await;
        let transport = GrpcTransport::new(&endpoint, None, headers(), Duration::from_secs(5)).unwrap();
        let exporter = OtlpExporter::new(Transport::Grpc(transport));
        exporter.export(vec![span(), span()]).await.expect("exported");
        let body = only_request(
            &received,
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            "application/grpc",
        );
        // A gRPC message: uncompressed, its length, the request.
        assert_eq!(body[0], 0);
        assert_eq!(
            u32::from_be_bytes(body[1..5].try_into().unwrap()) as usize,
            body.len() - 5
        );
        assert_eq!(span_names(&body[5..]), ["tools/call read_file", "tools/call read_file"]);
    }

    #[tokio::test]
    async fn http_posts_the_request_with_the_headers() {
        install_crypto();
        let (endpoint, received) = collector(false).await;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let transport = HttpTransport::new(client, format!("{endpoint}/v1/traces").parse().unwrap(), headers());
        let exporter = OtlpExporter::new(Transport::Http(transport));
        exporter.export(vec![span()]).await.expect("exported");
        let body = only_request(&received, "/v1/traces", "application/x-protobuf");
        assert_eq!(span_names(&body), ["tools/call read_file"]);
    }

    /// What exporting one span over `transport` failed with.
    async fn export_error(transport: Transport) -> String {
        OtlpExporter::new(transport)
            .export(vec![span()])
            .await
            .unwrap_err()
            .to_string()
    }

    #[tokio::test]
    async fn a_refused_or_unreachable_export_fails_with_what_happened() {
        install_crypto();
        let (endpoint, _) = collector(true).await;
        let grpc = |endpoint: &str, timeout| GrpcTransport::new(endpoint, None, HeaderMap::new(), timeout).unwrap();
        let http = |url: String| HttpTransport::new(reqwest::Client::new(), url.parse().unwrap(), HeaderMap::new());
        assert_eq!(
            export_error(Transport::Grpc(grpc(&endpoint, Duration::from_secs(5)))).await,
            "Operation failed: the collector answered InvalidArgument: bad span"
        );
        assert_eq!(
            export_error(Transport::Http(http(format!("{endpoint}/v1/traces")))).await,
            "Operation failed: the collector answered 400 Bad Request"
        );
        // Nothing listens there.
        let error = export_error(Transport::Grpc(grpc("http://127.0.0.1:9", Duration::from_secs(2)))).await;
        assert!(error.contains("cannot reach the collector"), "{error}");
        let error = export_error(Transport::Http(http("http://127.0.0.1:9/v1/traces".to_owned()))).await;
        assert!(error.contains("cannot reach the collector"), "{error}");
    }
}
