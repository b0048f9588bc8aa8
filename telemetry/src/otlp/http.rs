//! OTLP over HTTP: a POST of the encoded `ExportTraceServiceRequest`
//! (`application/x-protobuf`) to the traces URL.

use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue, USER_AGENT};

/// The most of a collector's answer read (`ExportTraceServiceResponse`, usually empty).
const MOST_ANSWER_BYTES: usize = 64 * 1024;

/// A client for the collector's traces URL.
#[derive(Debug, Clone)]
pub struct HttpTransport {
    client: reqwest::Client,
    url: reqwest::Url,
    headers: HeaderMap,
}

impl HttpTransport {
    /// POSTs to `url` with `client` (its TLS settings and timeout), sending `headers`.
    pub fn new(client: reqwest::Client, url: reqwest::Url, mut headers: HeaderMap) -> Self {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/x-protobuf"));
        headers.insert(USER_AGENT, HeaderValue::from_static(super::USER_AGENT));
        Self { client, url, headers }
    }

    /// POSTs `body`; a 2xx answer is success.
    pub async fn send(&self, body: Vec<u8>) -> OTelSdkResult {
        let mut response = self
            .client
            .post(self.url.clone())
            .headers(self.headers.clone())
            .body(body)
            .send()
            .await
            .map_err(|error| OTelSdkError::InternalFailure(format!("cannot reach the collector: {error}")))?;
        let status = response.status();
        // A short answer is read to its end, so the connection goes back to the pool; a longer
        // one is not kept (a collector's answer is a few bytes).
        let mut read = 0;
        while let Ok(Some(chunk)) = response.chunk().await {
            read += chunk.len();
            if read > MOST_ANSWER_BYTES {
                break;
            }
        }
        if status.is_success() {
            Ok(())
        } else {
            Err(OTelSdkError::InternalFailure(format!(
                "the collector answered {status}"
            )))
        }
    }
}
