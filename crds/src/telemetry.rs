//! `McpServer.spec.telemetry`: trace export of the server pods, and what it becomes in the
//! server container's environment (the standard `OTEL_*` variables `palisade-server` reads).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Trace export of the server pods: OpenTelemetry over OTLP, set as the standard `OTEL_*`
/// variables of the server container. A field left unset takes the operator's default (the Helm
/// chart's `mcpServers.telemetry`); with no endpoint from either, the pods export nothing.
/// Changing it rolls the pods.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct TelemetrySpec {
    /// `false` turns trace export off for this server, whatever the operator's defaults say.
    /// Default: on whenever an endpoint is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,

    /// The collector's OTLP endpoint, `http://` or `https://`: e.g.
    /// `http://otel-collector.observability:4318` (http/protobuf) or `...:4317` (grpc). With
    /// `https://` the collector's certificate is verified against the system roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 8, max = 512), regex(pattern = ENDPOINT_PATTERN))]
    pub endpoint: Option<String>,

    /// `grpc` or `http/protobuf`. Default: `http/protobuf`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<OtlpProtocol>,

    /// Share of the traces that start at the server which are recorded, from "0" to "1" (e.g.
    /// "0.01"); a request that brings a trace context follows its caller's choice. Default: "1".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 8), regex(pattern = RATIO_PATTERN))]
    pub sampling_ratio: Option<String>,
}

/// How spans travel to the collector.
// NB: no doc comments on the variants (see `ImagePullPolicy`).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum OtlpProtocol {
    #[serde(rename = "grpc")]
    Grpc,
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
}

impl OtlpProtocol {
    /// The value of `OTEL_EXPORTER_OTLP_PROTOCOL`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Grpc => "grpc",
            Self::HttpProtobuf => "http/protobuf",
        }
    }
}

/// What the endpoint must look like (also the schema's pattern).
const ENDPOINT_PATTERN: &str = r"^https?://[^\s?#]+$";
/// What a sampling ratio must look like (also the schema's pattern).
const RATIO_PATTERN: &str = r"^(0(\.[0-9]{1,6})?|1(\.0{1,6})?)$";

impl TelemetrySpec {
    /// Why these settings cannot be used (for settings that did not pass the API server's
    /// schema, such as the operator's own defaults), naming the field.
    pub fn problem(&self) -> Option<String> {
        let matches = |pattern: &str, value: &str| regex::Regex::new(pattern).is_ok_and(|re| re.is_match(value));
        if let Some(endpoint) = &self.endpoint
            && !(matches(ENDPOINT_PATTERN, endpoint) && (8..=512).contains(&endpoint.len()))
        {
            return Some(format!(
                "endpoint {endpoint:?}: an OTLP endpoint is an http:// or https:// URL"
            ));
        }
        if let Some(ratio) = &self.sampling_ratio
            && !matches(RATIO_PATTERN, ratio)
        {
            return Some(format!(
                "samplingRatio {ratio:?}: a ratio is a decimal from \"0\" to \"1\""
            ));
        }
        None
    }

    /// `self`'s fields, each falling back to `defaults`'.
    pub fn or(&self, defaults: &TelemetrySpec) -> TelemetrySpec {
        TelemetrySpec {
            enabled: self.enabled.or(defaults.enabled),
            endpoint: self.endpoint.clone().or_else(|| defaults.endpoint.clone()),
            protocol: self.protocol.or(defaults.protocol),
            sampling_ratio: self.sampling_ratio.clone().or_else(|| defaults.sampling_ratio.clone()),
        }
    }

    /// The server container's `OTEL_*` variables for server `name` in `namespace`: none when
    /// export is off (disabled, or no endpoint).
    pub fn env(&self, namespace: &str, name: &str) -> Vec<(&'static str, String)> {
        let Some(endpoint) = self.endpoint.as_ref().filter(|_| self.enabled != Some(false)) else {
            return Vec::new();
        };
        vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.clone()),
            (
                "OTEL_EXPORTER_OTLP_PROTOCOL",
                self.protocol.unwrap_or(OtlpProtocol::HttpProtobuf).as_str().to_owned(),
            ),
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio".to_owned()),
            (
                "OTEL_TRACES_SAMPLER_ARG",
                self.sampling_ratio.clone().unwrap_or_else(|| "1".to_owned()),
            ),
            ("OTEL_SERVICE_NAME", name.to_owned()),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                format!("k8s.namespace.name={namespace},service.namespace={namespace},k8s.deployment.name={name}"),
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_s_fields_win_over_the_operator_s_defaults_and_no_endpoint_means_no_export() {
        let defaults = TelemetrySpec {
            enabled: None,
            endpoint: Some("http://collector.observability:4317".into()),
            protocol: Some(OtlpProtocol::Grpc),
            sampling_ratio: Some("0.1".into()),
        };
        let own = TelemetrySpec {
            sampling_ratio: Some("1".into()),
            ..TelemetrySpec::default()
        };
        let env = own.or(&defaults).env("team-a", "docs");
        assert_eq!(
            env,
            vec![
                (
                    "OTEL_EXPORTER_OTLP_ENDPOINT",
                    "http://collector.observability:4317".to_owned()
                ),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc".to_owned()),
                ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio".to_owned()),
                ("OTEL_TRACES_SAMPLER_ARG", "1".to_owned()),
                ("OTEL_SERVICE_NAME", "docs".to_owned()),
                (
                    "OTEL_RESOURCE_ATTRIBUTES",
                    "k8s.namespace.name=team-a,service.namespace=team-a,k8s.deployment.name=docs".to_owned()
                ),
            ]
        );
        let off = TelemetrySpec {
            enabled: Some(false),
            ..TelemetrySpec::default()
        };
        assert!(off.or(&defaults).env("team-a", "docs").is_empty());
        assert!(
            TelemetrySpec::default()
                .or(&TelemetrySpec::default())
                .env("team-a", "docs")
                .is_empty()
        );
        let plain = TelemetrySpec {
            endpoint: Some("https://collector:4318".into()),
            ..TelemetrySpec::default()
        };
        let env = plain.env("a", "b");
        assert_eq!(env[1], ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf".to_owned()));
        assert_eq!(env[3], ("OTEL_TRACES_SAMPLER_ARG", "1".to_owned()));
    }

    #[test]
    fn settings_that_did_not_pass_the_schema_are_refused_with_the_field() {
        let with = |endpoint: Option<&str>, ratio: Option<&str>| TelemetrySpec {
            endpoint: endpoint.map(str::to_owned),
            sampling_ratio: ratio.map(str::to_owned),
            ..TelemetrySpec::default()
        };
        assert_eq!(with(Some("http://collector:4317"), Some("0.01")).problem(), None);
        assert_eq!(with(None, Some("1.0")).problem(), None);
        assert_eq!(
            with(Some("collector:4317"), None).problem().unwrap(),
            "endpoint \"collector:4317\": an OTLP endpoint is an http:// or https:// URL"
        );
        for ratio in ["2", "0.5.1", "-0.1", "1.5", ".5", ""] {
            assert_eq!(
                with(None, Some(ratio)).problem().unwrap(),
                format!("samplingRatio {ratio:?}: a ratio is a decimal from \"0\" to \"1\"")
            );
        }
    }
}
