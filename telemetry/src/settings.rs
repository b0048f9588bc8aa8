//! The trace settings, read from the standard OpenTelemetry environment variables.
//!
//! Export is off unless an OTLP endpoint is set (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or
//! `OTEL_EXPORTER_OTLP_ENDPOINT`), and off when `OTEL_SDK_DISABLED=true` or
//! `OTEL_TRACES_EXPORTER=none`. A value this module cannot honour is an error naming the variable,
//! not a silent default: a binary that was asked to trace and cannot says so at start-up.
//!
//! `OTEL_RESOURCE_ATTRIBUTES` is read by the SDK's resource detector (the service name in it is
//! read here too).

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use thiserror::Error;

/// How spans travel to the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// OTLP over gRPC (`grpc`, usually port 4317).
    Grpc,
    /// OTLP protobuf over HTTP (`http/protobuf`, usually port 4318; the default).
    HttpProtobuf,
}

/// Which traces are recorded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampler {
    /// Every trace.
    AlwaysOn,
    /// None.
    AlwaysOff,
    /// The given fraction of traces, chosen by trace id (the same trace is chosen everywhere).
    TraceIdRatio(f64),
    /// A request that arrives with a trace context follows its caller's choice; one without is
    /// decided by the inner sampler.
    ParentBased(ParentlessSampler),
}

/// The sampler of a [`Sampler::ParentBased`] for traces that start here.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ParentlessSampler {
    /// Every trace that starts here.
    AlwaysOn,
    /// None that starts here.
    AlwaysOff,
    /// The given fraction of those that start here.
    TraceIdRatio(f64),
}

/// The bounds of the export queue (`OTEL_BSP_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueSettings {
    /// Most spans waiting for export; a span that finds the queue full is dropped and counted.
    pub max_queue_size: usize,
    /// Most spans in one export.
    pub max_export_batch_size: usize,
    /// Longest time a span waits before its batch is exported.
    pub schedule_delay: Duration,
    /// Longest time one export may take; a batch that takes longer is dropped and counted.
    pub export_timeout: Duration,
}

impl Default for QueueSettings {
    /// The specification's defaults.
    fn default() -> Self {
        Self {
            max_queue_size: 2048,
            max_export_batch_size: 512,
            schedule_delay: Duration::from_millis(5000),
            export_timeout: Duration::from_millis(30_000),
        }
    }
}

/// Largest `OTEL_BSP_MAX_QUEUE_SIZE` accepted: the queue is memory an unreachable collector makes
/// the process hold.
pub const MOST_QUEUED_SPANS: usize = 65_536;

/// Trace export, when it is on.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceSettings {
    /// The collector (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, else `OTEL_EXPORTER_OTLP_ENDPOINT`).
    pub endpoint: String,
    /// The only CA trusted for an `https://` endpoint (`OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE`,
    /// else `OTEL_EXPORTER_OTLP_CERTIFICATE`); `None`: the system roots.
    pub certificate: Option<std::path::PathBuf>,
    /// The certificate and key presented to an `https://` collector that asks for one (mutual
    /// TLS): `OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE` and `OTEL_EXPORTER_OTLP_CLIENT_KEY` (or their
    /// `_TRACES_` forms), set together; `None`: none is presented.
    pub client_identity: Option<ClientIdentity>,
    /// The OTLP transport.
    pub protocol: Protocol,
    /// Which traces are recorded.
    pub sampler: Sampler,
    /// `service.name`: `OTEL_SERVICE_NAME`, else the one in `OTEL_RESOURCE_ATTRIBUTES`, else the
    /// binary's own name.
    pub service_name: String,
    /// The export queue.
    pub queue: QueueSettings,
    /// The endpoint came from `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`: used as it is, where the
    /// general one gets the signal's path (`/v1/traces`) over `http/protobuf`.
    pub signal_endpoint: bool,
    /// Headers sent with every export (`OTEL_EXPORTER_OTLP_HEADERS`, then
    /// `OTEL_EXPORTER_OTLP_TRACES_HEADERS`, whose keys win): often a collector's credentials, so
    /// never logged and never in an error.
    pub headers: Vec<(String, String)>,
    /// Longest time one export request may take (`OTEL_EXPORTER_OTLP_TRACES_TIMEOUT`, else
    /// `OTEL_EXPORTER_OTLP_TIMEOUT`; 10 s).
    pub timeout: Duration,
}

impl TraceSettings {
    /// Where export requests go: the endpoint, with `/v1/traces` added over `http/protobuf`
    /// when it came from the general variable (the specification's rule).
    pub fn traces_url(&self) -> String {
        match (self.protocol, self.signal_endpoint) {
            (Protocol::HttpProtobuf, false) => format!("{}/v1/traces", self.endpoint.trim_end_matches('/')),
            _ => self.endpoint.clone(),
        }
    }

    /// The export headers as sent, their values marked sensitive (a `Debug` print never shows
    /// them). Each was checked by the same [`header`] when the settings were read.
    pub fn header_map(&self) -> HeaderMap {
        self.headers
            .iter()
            .filter_map(|(name, value)| header(name, value))
            .collect()
    }
}

/// The files of a client certificate (PEM, the certificate first, then any intermediates) and
/// of its private key (PEM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    /// The certificate chain.
    pub certificate: std::path::PathBuf,
    /// The private key.
    pub key: std::path::PathBuf,
}

/// A variable set to a value that cannot be honoured.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("{variable}={value:?}: {reason}")]
pub struct SettingsError {
    /// The variable.
    pub variable: &'static str,
    /// Its value.
    pub value: String,
    /// What it may be instead.
    pub reason: &'static str,
}

impl TraceSettings {
    /// The settings from the process environment; `None` when export is off.
    pub fn from_env(default_service_name: &str) -> Result<Option<Self>, SettingsError> {
        Self::from_vars(|name| std::env::var(name).ok(), default_service_name)
    }

    /// The settings from `var` (a variable's value, `None` when unset); `None` when export is
    /// off.
    pub fn from_vars(
        var: impl Fn(&str) -> Option<String>,
        default_service_name: &str,
    ) -> Result<Option<Self>, SettingsError> {
        // An empty value counts as unset (the specification's rule).
        let var = |name: &str| var(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        if var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            return Ok(None);
        }
        match var("OTEL_TRACES_EXPORTER").as_deref() {
            None | Some("otlp") => {}
            Some("none") => return Ok(None),
            Some(other) => {
                return Err(error(
                    "OTEL_TRACES_EXPORTER",
                    other,
                    "the exporters are `otlp` and `none`",
                ));
            }
        }
        let Some((endpoint_variable, endpoint)) = first_set(
            &var,
            ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"],
        ) else {
            return Ok(None);
        };
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            return Err(error(
                endpoint_variable,
                &endpoint,
                "an endpoint is an http:// or https:// URL",
            ));
        }
        let protocol = match first_set(
            &var,
            ["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"],
        ) {
            None => Protocol::HttpProtobuf,
            Some((_, value)) if value == "grpc" => Protocol::Grpc,
            Some((_, value)) if value == "http/protobuf" => Protocol::HttpProtobuf,
            Some((name, value)) => {
                return Err(error(name, &value, "the protocols are `grpc` and `http/protobuf`"));
            }
        };
        let service_name = var("OTEL_SERVICE_NAME")
            .or_else(|| service_name_attribute(&var("OTEL_RESOURCE_ATTRIBUTES").unwrap_or_default()))
            .unwrap_or_else(|| default_service_name.to_owned());
        let certificate = first_set(
            &var,
            [
                "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
                "OTEL_EXPORTER_OTLP_CERTIFICATE",
            ],
        )
        .map(|(_, path)| std::path::PathBuf::from(path));
        let client_identity = client_identity(&var, &endpoint)?;
        if let Some((name, value)) = first_set(
            &var,
            [
                "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
                "OTEL_EXPORTER_OTLP_COMPRESSION",
            ],
        ) && !value.eq_ignore_ascii_case("none")
        {
            return Err(error(name, &value, "spans are sent uncompressed: `none`, or unset"));
        }
        let timeout = match first_set(
            &var,
            ["OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT"],
        ) {
            None => DEFAULT_EXPORT_REQUEST_TIMEOUT,
            Some((name, value)) => millis(name, &value)?,
        };
        let mut headers = Vec::new();
        for name in ["OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS"] {
            if let Some(value) = var(name) {
                for (key, value) in parse_headers(name, &value)? {
                    headers.retain(|(k, _): &(String, String)| !k.eq_ignore_ascii_case(&key));
                    headers.push((key, value));
                }
            }
        }
        Ok(Some(Self {
            signal_endpoint: endpoint_variable == "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            endpoint,
            certificate,
            client_identity,
            protocol,
            sampler: sampler(&var)?,
            service_name,
            queue: queue(&var)?,
            headers,
            timeout,
        }))
    }
}

/// The default of `OTEL_EXPORTER_OTLP_TIMEOUT`.
pub const DEFAULT_EXPORT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// `key=value,key=value` (values percent-encoded, as W3C Baggage): header names and values
/// HTTP and gRPC metadata can carry. An error names the entry by its key only: the values are
/// credentials.
fn parse_headers(variable: &'static str, list: &str) -> Result<Vec<(String, String)>, SettingsError> {
    let mut headers = Vec::new();
    for entry in list.split(',').map(str::trim).filter(|entry| !entry.is_empty()) {
        let Some((key, value)) = entry.split_once('=') else {
            return Err(error(
                variable,
                "(not shown)",
                "headers are key=value pairs separated by commas",
            ));
        };
        let key = key.trim().to_ascii_lowercase();
        let Some(value) = percent_decoded(value.trim()).filter(|value| header(&key, value).is_some()) else {
            return Err(SettingsError {
                variable,
                value: format!("{key}=(not shown)"),
                reason: "a header is a token name and a non-empty printable ASCII value (percent-encoded)",
            });
        };
        headers.push((key, value));
    }
    Ok(headers)
}

/// `name: value` as HTTP and gRPC metadata carry it (a token name, a non-empty printable ASCII
/// value), the value marked sensitive; `None` for one they cannot.
fn header(name: &str, value: &str) -> Option<(HeaderName, HeaderValue)> {
    let printable = !value.is_empty() && value.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b));
    let name = HeaderName::from_bytes(name.as_bytes()).ok()?;
    let mut value = HeaderValue::from_str(value).ok().filter(|_| printable)?;
    value.set_sensitive(true);
    Some((name, value))
}

/// `text` with its `%XX` escapes decoded; `None` when one is malformed or the result is not UTF-8.
fn percent_decoded(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at] == b'%' {
            let hex = bytes.get(at + 1..at + 3)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            decoded.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            at += 3;
        } else {
            decoded.push(bytes[at]);
            at += 1;
        }
    }
    String::from_utf8(decoded).ok()
}

/// `value` of `variable` as a duration: a whole number of milliseconds above 0.
fn millis(variable: &'static str, value: &str) -> Result<Duration, SettingsError> {
    value
        .parse::<u64>()
        .ok()
        .filter(|ms| *ms > 0)
        .map(Duration::from_millis)
        .ok_or_else(|| error(variable, value, "a duration is a whole number of milliseconds above 0"))
}

/// The first of `names` that is set (the signal's own variable, then the general one), with its
/// value.
fn first_set(var: &impl Fn(&str) -> Option<String>, names: [&'static str; 2]) -> Option<(&'static str, String)> {
    names.into_iter().find_map(|name| var(name).map(|value| (name, value)))
}

/// The client certificate and key: both or neither, and only for an `https://` endpoint (over
/// plain HTTP there is no TLS to present them in).
fn client_identity(
    var: &impl Fn(&str) -> Option<String>,
    endpoint: &str,
) -> Result<Option<ClientIdentity>, SettingsError> {
    let certificate = first_set(
        var,
        [
            "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE",
            "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
        ],
    );
    let key = first_set(
        var,
        ["OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY", "OTEL_EXPORTER_OTLP_CLIENT_KEY"],
    );
    match (certificate, key) {
        (None, None) => Ok(None),
        (Some((name, value)), None) | (None, Some((name, value))) => Err(error(
            name,
            &value,
            "a client certificate and its key are set together \
             (OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE and OTEL_EXPORTER_OTLP_CLIENT_KEY)",
        )),
        (Some((name, value)), Some(_)) if !endpoint.starts_with("https://") => Err(error(
            name,
            &value,
            "a client certificate is presented only to an https:// endpoint",
        )),
        (Some((_, certificate)), Some((_, key))) => Ok(Some(ClientIdentity {
            certificate: certificate.into(),
            key: key.into(),
        })),
    }
}

fn error(variable: &'static str, value: &str, reason: &'static str) -> SettingsError {
    SettingsError {
        variable,
        value: value.to_owned(),
        reason,
    }
}

/// `service.name` in `OTEL_RESOURCE_ATTRIBUTES` (`key=value,key=value`).
fn service_name_attribute(attributes: &str) -> Option<String> {
    attributes.split(',').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key.trim() == "service.name" && !value.trim().is_empty()).then(|| value.trim().to_owned())
    })
}

fn sampler(var: &impl Fn(&str) -> Option<String>) -> Result<Sampler, SettingsError> {
    let ratio = || -> Result<f64, SettingsError> {
        let Some(argument) = var("OTEL_TRACES_SAMPLER_ARG") else {
            return Ok(1.0);
        };
        argument
            .parse::<f64>()
            .ok()
            .filter(|ratio| (0.0..=1.0).contains(ratio))
            .ok_or_else(|| error("OTEL_TRACES_SAMPLER_ARG", &argument, "a ratio is a number from 0 to 1"))
    };
    Ok(match var("OTEL_TRACES_SAMPLER").as_deref() {
        None | Some("parentbased_always_on") => Sampler::ParentBased(ParentlessSampler::AlwaysOn),
        Some("parentbased_always_off") => Sampler::ParentBased(ParentlessSampler::AlwaysOff),
        Some("parentbased_traceidratio") => Sampler::ParentBased(ParentlessSampler::TraceIdRatio(ratio()?)),
        Some("always_on") => Sampler::AlwaysOn,
        Some("always_off") => Sampler::AlwaysOff,
        Some("traceidratio") => Sampler::TraceIdRatio(ratio()?),
        Some(other) => {
            return Err(error(
                "OTEL_TRACES_SAMPLER",
                other,
                "the samplers are always_on, always_off, traceidratio, parentbased_always_on, \
                 parentbased_always_off and parentbased_traceidratio",
            ));
        }
    })
}

fn queue(var: &impl Fn(&str) -> Option<String>) -> Result<QueueSettings, SettingsError> {
    let defaults = QueueSettings::default();
    let number = |name: &'static str, default: usize, reason: &'static str| -> Result<usize, SettingsError> {
        match var(name) {
            None => Ok(default),
            Some(value) => value
                .parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| error(name, &value, reason)),
        }
    };
    let duration = |name: &'static str, default: Duration| var(name).map_or(Ok(default), |value| millis(name, &value));
    let max_queue_size = number(
        "OTEL_BSP_MAX_QUEUE_SIZE",
        defaults.max_queue_size,
        "a queue size is a whole number above 0",
    )?;
    if max_queue_size > MOST_QUEUED_SPANS {
        return Err(error(
            "OTEL_BSP_MAX_QUEUE_SIZE",
            &max_queue_size.to_string(),
            "at most 65536 spans wait for export",
        ));
    }
    let max_export_batch_size = number(
        "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
        defaults.max_export_batch_size.min(max_queue_size),
        "a batch size is a whole number above 0",
    )?;
    if max_export_batch_size > max_queue_size {
        return Err(error(
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
            &max_export_batch_size.to_string(),
            "a batch is at most OTEL_BSP_MAX_QUEUE_SIZE spans",
        ));
    }
    Ok(QueueSettings {
        max_queue_size,
        max_export_batch_size,
        schedule_delay: duration("OTEL_BSP_SCHEDULE_DELAY", defaults.schedule_delay)?,
        export_timeout: duration("OTEL_BSP_EXPORT_TIMEOUT", defaults.export_timeout)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(vars: &[(&str, &str)]) -> Result<Option<TraceSettings>, SettingsError> {
        TraceSettings::from_vars(
            |name| vars.iter().find(|(n, _)| *n == name).map(|(_, v)| (*v).to_owned()),
            "palisade-server",
        )
    }

    const ENDPOINT: (&str, &str) = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318");

    #[test]
    fn export_is_off_without_an_endpoint_or_when_disabled() {
        assert_eq!(settings(&[]), Ok(None));
        assert_eq!(settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")]), Ok(None));
        assert_eq!(settings(&[ENDPOINT, ("OTEL_SDK_DISABLED", "TRUE")]), Ok(None));
        assert_eq!(settings(&[ENDPOINT, ("OTEL_TRACES_EXPORTER", "none")]), Ok(None));
        // Other variables alone turn nothing on.
        assert_eq!(settings(&[("OTEL_TRACES_SAMPLER", "always_on")]), Ok(None));
    }

    #[test]
    fn the_defaults_are_the_specification_s() {
        let on = settings(&[ENDPOINT]).unwrap().unwrap();
        assert_eq!(on.protocol, Protocol::HttpProtobuf);
        assert_eq!(on.sampler, Sampler::ParentBased(ParentlessSampler::AlwaysOn));
        assert_eq!(on.service_name, "palisade-server");
        assert_eq!(on.queue, QueueSettings::default());
        assert_eq!(on.timeout, DEFAULT_EXPORT_REQUEST_TIMEOUT);
        assert_eq!(on.headers, Vec::<(String, String)>::new());
        assert_eq!(on.traces_url(), "http://collector:4318/v1/traces");
    }

    #[test]
    fn the_traces_url_gets_the_signal_s_path_only_from_the_general_variable_over_http() {
        let url = |vars: &[(&str, &str)]| settings(vars).unwrap().unwrap().traces_url();
        assert_eq!(
            url(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/")]),
            "http://c:4318/v1/traces"
        );
        assert_eq!(
            url(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c/otlp")]),
            "http://c/otlp/v1/traces"
        );
        assert_eq!(
            url(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c/in")]),
            "http://c/in"
        );
        assert_eq!(
            url(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
            ]),
            "http://c:4317"
        );
    }

    #[test]
    fn headers_timeout_and_compression_are_read() {
        let on = settings(&[
            ENDPOINT,
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "Authorization=Bearer%20abc , x-tenant=a,x-team=b",
            ),
            ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "X-Tenant=traces"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
            ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "1500"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "none"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            on.headers,
            [("authorization", "Bearer abc"), ("x-team", "b"), ("x-tenant", "traces")]
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .to_vec(),
            "names lowercased, values decoded, the signal's own variable wins"
        );
        assert_eq!(on.timeout, Duration::from_millis(1500));
    }

    #[test]
    fn the_headers_are_sent_as_read_with_their_values_never_printed() {
        let on = settings(&[
            ENDPOINT,
            ("OTEL_EXPORTER_OTLP_HEADERS", "Authorization=Bearer%20abc,x-team=b"),
        ])
        .unwrap()
        .unwrap();
        let map = on.header_map();
        assert_eq!(map.len(), 2);
        assert_eq!(map["authorization"], "Bearer abc");
        assert_eq!(map["x-team"], "b");
        assert!(map.values().all(HeaderValue::is_sensitive));
        assert!(!format!("{map:?}").contains("abc"), "{map:?}");
    }

    #[test]
    fn a_malformed_header_is_named_by_its_key_and_its_value_is_never_shown() {
        for (list, shown) in [
            ("authorization=Bearer secret-token%zz", "authorization=(not shown)"),
            ("authorization", "(not shown)"),
            ("bad key=secret-token", "bad key=(not shown)"),
            ("x-empty=", "x-empty=(not shown)"),
            ("x-control=secret%0Atoken", "x-control=(not shown)"),
        ] {
            let error = settings(&[ENDPOINT, ("OTEL_EXPORTER_OTLP_HEADERS", list)]).unwrap_err();
            assert_eq!(error.variable, "OTEL_EXPORTER_OTLP_HEADERS");
            assert_eq!(error.value, shown);
            assert!(!error.to_string().contains("secret"), "{error}");
        }
        let error = settings(&[ENDPOINT, ("OTEL_EXPORTER_OTLP_HEADERS", "authorization")]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "OTEL_EXPORTER_OTLP_HEADERS=\"(not shown)\": headers are key=value pairs separated by commas"
        );
        let error = settings(&[ENDPOINT, ("OTEL_EXPORTER_OTLP_HEADERS", "authorization=a%zz")]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "OTEL_EXPORTER_OTLP_HEADERS=\"authorization=(not shown)\": a header is a token name and a non-empty \
             printable ASCII value (percent-encoded)"
        );
    }

    #[test]
    fn each_variable_is_read() {
        let on = settings(&[
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "https://collector:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc"),
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.01"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "k8s.namespace.name=team-a, service.name=docs",
            ),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "100"),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "10"),
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
            ("OTEL_BSP_EXPORT_TIMEOUT", "1000"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(on.protocol, Protocol::Grpc, "the signal's own variable wins");
        assert_eq!(on.endpoint, "https://collector:4317");
        assert_eq!(on.certificate, None);
        assert_eq!(on.client_identity, None);
        let mutual = settings(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4317"),
            ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", "/tls/client.crt"),
            ("OTEL_EXPORTER_OTLP_CLIENT_KEY", "/tls/shared.key"),
            ("OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY", "/tls/client.key"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            mutual.client_identity,
            Some(ClientIdentity {
                certificate: "/tls/client.crt".into(),
                key: "/tls/client.key".into(),
            }),
            "both together, the signal's own variable first"
        );
        assert_eq!(on.sampler, Sampler::ParentBased(ParentlessSampler::TraceIdRatio(0.01)));
        assert_eq!(on.service_name, "docs");
        assert_eq!(
            on.queue,
            QueueSettings {
                max_queue_size: 100,
                max_export_batch_size: 10,
                schedule_delay: Duration::from_millis(200),
                export_timeout: Duration::from_millis(1000),
            }
        );
        let named = settings(&[
            ENDPOINT,
            ("OTEL_SERVICE_NAME", "docs-server"),
            ("OTEL_RESOURCE_ATTRIBUTES", "service.name=other"),
            ("OTEL_TRACES_SAMPLER", "traceidratio"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(named.service_name, "docs-server");
        assert_eq!(named.sampler, Sampler::TraceIdRatio(1.0), "no argument: all");
        let small = settings(&[ENDPOINT, ("OTEL_BSP_MAX_QUEUE_SIZE", "100")])
            .unwrap()
            .unwrap();
        assert_eq!(
            small.queue.max_export_batch_size, 100,
            "a batch never exceeds the queue"
        );
    }

    #[test]
    fn a_value_that_cannot_be_honoured_is_an_error_naming_the_variable() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317")],
                "OTEL_EXPORTER_OTLP_ENDPOINT=\"collector:4317\": an endpoint is an http:// or https:// URL",
            ),
            (
                &[ENDPOINT, ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")],
                "OTEL_EXPORTER_OTLP_PROTOCOL=\"http/json\": the protocols are `grpc` and `http/protobuf`",
            ),
            (
                &[ENDPOINT, ("OTEL_TRACES_EXPORTER", "zipkin")],
                "OTEL_TRACES_EXPORTER=\"zipkin\": the exporters are `otlp` and `none`",
            ),
            (
                &[ENDPOINT, ("OTEL_TRACES_SAMPLER", "sometimes")],
                "OTEL_TRACES_SAMPLER=\"sometimes\": the samplers are always_on, always_off, traceidratio, \
                 parentbased_always_on, parentbased_always_off and parentbased_traceidratio",
            ),
            (
                &[
                    ENDPOINT,
                    ("OTEL_TRACES_SAMPLER", "traceidratio"),
                    ("OTEL_TRACES_SAMPLER_ARG", "2"),
                ],
                "OTEL_TRACES_SAMPLER_ARG=\"2\": a ratio is a number from 0 to 1",
            ),
            (
                &[ENDPOINT, ("OTEL_BSP_MAX_QUEUE_SIZE", "0")],
                "OTEL_BSP_MAX_QUEUE_SIZE=\"0\": a queue size is a whole number above 0",
            ),
            (
                &[ENDPOINT, ("OTEL_BSP_MAX_QUEUE_SIZE", "1000000")],
                "OTEL_BSP_MAX_QUEUE_SIZE=\"1000000\": at most 65536 spans wait for export",
            ),
            (
                &[
                    ENDPOINT,
                    ("OTEL_BSP_MAX_QUEUE_SIZE", "10"),
                    ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "20"),
                ],
                "OTEL_BSP_MAX_EXPORT_BATCH_SIZE=\"20\": a batch is at most OTEL_BSP_MAX_QUEUE_SIZE spans",
            ),
            (
                &[ENDPOINT, ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")],
                "OTEL_EXPORTER_OTLP_COMPRESSION=\"gzip\": spans are sent uncompressed: `none`, or unset",
            ),
            (
                &[ENDPOINT, ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "0")],
                "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT=\"0\": a duration is a whole number of milliseconds above 0",
            ),
            (
                &[ENDPOINT, ("OTEL_BSP_SCHEDULE_DELAY", "5s")],
                "OTEL_BSP_SCHEDULE_DELAY=\"5s\": a duration is a whole number of milliseconds above 0",
            ),
            (
                &[
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4317"),
                    ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", "/tls/client.crt"),
                ],
                "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE=\"/tls/client.crt\": a client certificate and its key \
                 are set together (OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE and OTEL_EXPORTER_OTLP_CLIENT_KEY)",
            ),
            (
                &[
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4317"),
                    ("OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY", "/tls/client.key"),
                ],
                "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY=\"/tls/client.key\": a client certificate and its key \
                 are set together (OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE and OTEL_EXPORTER_OTLP_CLIENT_KEY)",
            ),
            (
                &[
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
                    ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", "/tls/client.crt"),
                    ("OTEL_EXPORTER_OTLP_CLIENT_KEY", "/tls/client.key"),
                ],
                "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE=\"/tls/client.crt\": a client certificate is presented \
                 only to an https:// endpoint",
            ),
        ];
        for (vars, message) in cases {
            assert_eq!(settings(vars).unwrap_err().to_string(), *message);
        }
    }
}
