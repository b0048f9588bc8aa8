//! OTLP over gRPC: the `opentelemetry.proto.collector.trace.v1.TraceService/Export` unary call,
//! its request already encoded.

use std::time::Duration;

use bytes::{Buf as _, BufMut as _};
use http::uri::PathAndQuery;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use tonic::client::Grpc;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::metadata::MetadataMap;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

const EXPORT: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// A channel to the collector (connected on first use, reconnected after a failure).
#[derive(Debug, Clone)]
pub struct GrpcTransport {
    client: Grpc<Channel>,
    metadata: MetadataMap,
    timeout: Duration,
}

impl GrpcTransport {
    /// A transport to `endpoint` (`http://` or `https://` with `tls`), sending `headers` as
    /// metadata; each call ends within `timeout`. Needs a Tokio runtime.
    pub fn new(
        endpoint: &str,
        tls: Option<ClientTlsConfig>,
        headers: http::HeaderMap,
        timeout: Duration,
    ) -> Result<Self, String> {
        let mut endpoint = Endpoint::from_shared(endpoint.to_owned())
            .map_err(|error| error.to_string())?
            .user_agent(super::USER_AGENT)
            .map_err(|error| error.to_string())?
            .connect_timeout(timeout)
            .timeout(timeout);
        if let Some(tls) = tls {
            endpoint = endpoint.tls_config(tls).map_err(|error| error.to_string())?;
        }
        Ok(Self {
            client: Grpc::new(endpoint.connect_lazy()),
            metadata: MetadataMap::from_headers(headers),
            timeout,
        })
    }

    /// Makes the call with `body`, an encoded `ExportTraceServiceRequest`.
    pub async fn send(&self, body: Vec<u8>) -> OTelSdkResult {
        let mut client = self.client.clone();
        client
            .ready()
            .await
            .map_err(|error| OTelSdkError::InternalFailure(format!("cannot reach the collector: {error}")))?;
        let mut request = tonic::Request::new(body);
        *request.metadata_mut() = self.metadata.clone();
        request.set_timeout(self.timeout);
        client
            .unary::<_, (), _>(request, PathAndQuery::from_static(EXPORT), Encoded)
            .await
            .map(drop)
            .map_err(|status| {
                // A status made from a transport error has it as its source: no collector answered.
                OTelSdkError::InternalFailure(match std::error::Error::source(&status) {
                    Some(_) => format!("cannot reach the collector: {}", status.message()),
                    None => format!("the collector answered {:?}: {}", status.code(), status.message()),
                })
            })
    }
}

/// Sends bytes encoded beforehand; reads the answer (`ExportTraceServiceResponse`) without
/// decoding it.
#[derive(Debug, Clone, Copy)]
struct Encoded;

impl Codec for Encoded {
    type Encode = Vec<u8>;
    type Decode = ();
    type Encoder = Self;
    type Decoder = Self;

    fn encoder(&mut self) -> Self {
        Self
    }

    fn decoder(&mut self) -> Self {
        Self
    }
}

impl Encoder for Encoded {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, buffer: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        buffer.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Encoded {
    type Item = ();
    type Error = tonic::Status;

    fn decode(&mut self, buffer: &mut DecodeBuf<'_>) -> Result<Option<()>, tonic::Status> {
        buffer.advance(buffer.remaining());
        Ok(Some(()))
    }
}
