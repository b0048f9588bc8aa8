//! `McpServer.spec.telemetry`: trace export of the server pods, and what it becomes in the
//! server container's environment (the standard `OTEL_*` variables `palisade-server` reads).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector};
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Trace export of the server pods: OpenTelemetry over OTLP, set as the standard `OTEL_*`
/// variables of the server container. A field left unset takes the operator's default (the Helm
/// chart's `mcpServers.telemetry`); with no endpoint from either, the pods export nothing.
/// Changing it rolls the pods.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
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
    /// "0.01"). With the default sampler a request that brings a trace context follows its
    /// caller's choice; with `traceidratio` every trace is sampled at this ratio. Default: "1".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 8), regex(pattern = RATIO_PATTERN))]
    pub sampling_ratio: Option<String>,

    /// `OTEL_TRACES_SAMPLER`: `parentbased_traceidratio` (the default) records a request whose
    /// trace context (`traceparent` header or `_meta`) says its caller records it, and samples
    /// the traces that start at the server at `samplingRatio`; `traceidratio` samples every
    /// trace at `samplingRatio` by its trace id, whatever the caller's sampled flag says, so
    /// that callers whose own tracing records everything do not make the pods record every
    /// request (a caller that picks its trace ids can still pick ones the ratio records).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampler: Option<TraceSampler>,

    /// `service.name` of the pods' spans (`OTEL_SERVICE_NAME`). Default: the McpServer's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128), regex(pattern = ATTRIBUTE_VALUE_PATTERN))]
    pub service_name: Option<String>,

    /// Resource attributes added to every span of the pods (`OTEL_RESOURCE_ATTRIBUTES`), e.g.
    /// `deployment.environment.name: production`; merged name by name over the operator's
    /// defaults. Names are letters, digits, `.`, `_`, `-` and `/` (at most 128; the operator
    /// refuses other names with `PolicyValid` false); values letters, digits and `.`, `_`, `-`,
    /// `/`, `:`, `@`, `+` (at most 255). The operator sets `k8s.namespace.name`,
    /// `service.namespace`, `k8s.deployment.name` and `k8s.pod.name` itself, and `service.name` is
    /// `serviceName`: none of them can be set here.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend(
        "maxProperties" = 16,
        "additionalProperties" = {"type": "string", "minLength": 1, "maxLength": 255, "pattern": ATTRIBUTE_VALUE_PATTERN}
    ))]
    #[x_kube(validation = Rule::new(crate::mcp_server::none_of(&OPERATOR_RESOURCE_ATTRIBUTES))
        .message("resourceAttributes cannot set k8s.namespace.name, service.namespace, k8s.deployment.name, k8s.pod.name or service.name: the operator sets them (service.name is serviceName)"))]
    pub resource_attributes: BTreeMap<String, String>,
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

/// Which traces the pods record: the standard sampler names (`OTEL_TRACES_SAMPLER`) that take
/// `samplingRatio`.
// NB: no doc comments on the variants (see `ImagePullPolicy`).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum TraceSampler {
    #[serde(rename = "parentbased_traceidratio")]
    ParentBasedTraceIdRatio,
    #[serde(rename = "traceidratio")]
    TraceIdRatio,
}

impl TraceSampler {
    /// The value of `OTEL_TRACES_SAMPLER`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ParentBasedTraceIdRatio => "parentbased_traceidratio",
            Self::TraceIdRatio => "traceidratio",
        }
    }

    /// The sampler named `name` (its `OTEL_TRACES_SAMPLER` value).
    pub fn parse(name: &str) -> Option<Self> {
        [Self::ParentBasedTraceIdRatio, Self::TraceIdRatio]
            .into_iter()
            .find(|sampler| sampler.as_str() == name)
    }
}

/// What the endpoint must look like (also the schema's pattern).
const ENDPOINT_PATTERN: &str = r"^https?://[^\s?#]+$";
/// What a sampling ratio must look like (also the schema's pattern).
const RATIO_PATTERN: &str = r"^(0(\.[0-9]{1,6})?|1(\.0{1,6})?)$";
/// What a resource attribute's name must look like: nothing that `OTEL_RESOURCE_ATTRIBUTES`
/// (`name=value,...`, read without unescaping) or the kubelet (`$(...)`) would read otherwise.
const ATTRIBUTE_NAME_PATTERN: &str = r"^[A-Za-z0-9._/-]{1,128}$";
/// What a resource attribute's value (and the service name) must look like.
const ATTRIBUTE_VALUE_PATTERN: &str = r"^[A-Za-z0-9._:/@+-]+$";

/// Resource attributes the operator sets on every server pod, which `resourceAttributes` may not.
pub const OPERATOR_RESOURCE_ATTRIBUTES: [&str; 5] = [
    "k8s.namespace.name",
    "service.namespace",
    "k8s.deployment.name",
    "k8s.pod.name",
    "service.name",
];

/// The pod's name, from the downward API: `k8s.pod.name` in `OTEL_RESOURCE_ATTRIBUTES` refers to it.
pub const POD_NAME_VARIABLE: &str = "PALISADE_POD_NAME";

impl TelemetrySpec {
    /// Why these settings cannot be used, naming the field: for what the API server's schema
    /// does not check (a resource attribute's name) and for settings that never passed it (the
    /// operator's own defaults, manifests read by `palisade-server policy check`).
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
        if let Some(name) = &self.service_name
            && !(matches(ATTRIBUTE_VALUE_PATTERN, name) && name.len() <= 128)
        {
            return Some(format!(
                "serviceName {name:?}: at most 128 letters, digits and '.', '_', '-', '/', ':', '@', '+'"
            ));
        }
        if self.resource_attributes.len() > 16 {
            return Some(format!(
                "resourceAttributes: {} attributes, at most 16",
                self.resource_attributes.len()
            ));
        }
        for (name, value) in &self.resource_attributes {
            if !matches(ATTRIBUTE_NAME_PATTERN, name) {
                return Some(format!(
                    "resourceAttributes {name:?}: a name is at most 128 letters, digits and '.', '_', '-', '/'"
                ));
            }
            if OPERATOR_RESOURCE_ATTRIBUTES.contains(&name.as_str()) {
                return Some(format!(
                    "resourceAttributes {name:?}: the operator sets it{}",
                    if name == "service.name" {
                        " (use serviceName)"
                    } else {
                        ""
                    }
                ));
            }
            if !(matches(ATTRIBUTE_VALUE_PATTERN, value) && value.len() <= 255) {
                return Some(format!(
                    "resourceAttributes {name:?}: the value {value:?} is not at most 255 letters, digits and '.', '_', '-', '/', ':', '@', '+'"
                ));
            }
        }
        None
    }

    /// `self`'s fields, each falling back to `defaults`' (resource attributes name by name).
    pub fn or(&self, defaults: &TelemetrySpec) -> TelemetrySpec {
        let mut resource_attributes = defaults.resource_attributes.clone();
        resource_attributes.extend(self.resource_attributes.clone());
        TelemetrySpec {
            enabled: self.enabled.or(defaults.enabled),
            endpoint: self.endpoint.clone().or_else(|| defaults.endpoint.clone()),
            protocol: self.protocol.or(defaults.protocol),
            sampling_ratio: self.sampling_ratio.clone().or_else(|| defaults.sampling_ratio.clone()),
            sampler: self.sampler.or(defaults.sampler),
            service_name: self.service_name.clone().or_else(|| defaults.service_name.clone()),
            resource_attributes,
        }
    }

    /// The server container's variables for server `name` in `namespace`: none when export is
    /// off (disabled, or no endpoint). The pod's name comes from the downward API
    /// ([`POD_NAME_VARIABLE`], before the attributes that refer to it).
    pub fn env(&self, namespace: &str, name: &str) -> Vec<EnvVar> {
        let Some(endpoint) = self.endpoint.as_ref().filter(|_| self.enabled != Some(false)) else {
            return Vec::new();
        };
        let mut attributes = format!(
            "k8s.namespace.name={namespace},service.namespace={namespace},k8s.deployment.name={name},\
             k8s.pod.name=$({POD_NAME_VARIABLE})"
        );
        for (key, value) in &self.resource_attributes {
            attributes.push_str(&format!(",{key}={value}"));
        }
        let plain = |name: &str, value: String| EnvVar {
            name: name.to_owned(),
            value: Some(value),
            value_from: None,
        };
        vec![
            EnvVar {
                name: POD_NAME_VARIABLE.to_owned(),
                value: None,
                value_from: Some(EnvVarSource {
                    field_ref: Some(ObjectFieldSelector {
                        api_version: Some("v1".to_owned()),
                        field_path: "metadata.name".to_owned(),
                    }),
                    ..EnvVarSource::default()
                }),
            },
            plain("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.clone()),
            plain(
                "OTEL_EXPORTER_OTLP_PROTOCOL",
                self.protocol.unwrap_or(OtlpProtocol::HttpProtobuf).as_str().to_owned(),
            ),
            plain(
                "OTEL_TRACES_SAMPLER",
                self.sampler
                    .unwrap_or(TraceSampler::ParentBasedTraceIdRatio)
                    .as_str()
                    .to_owned(),
            ),
            plain(
                "OTEL_TRACES_SAMPLER_ARG",
                self.sampling_ratio.clone().unwrap_or_else(|| "1".to_owned()),
            ),
            plain(
                "OTEL_SERVICE_NAME",
                self.service_name.clone().unwrap_or_else(|| name.to_owned()),
            ),
            plain("OTEL_RESOURCE_ATTRIBUTES", attributes),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `env` as `name=value` lines, a downward-API variable as `name<-fieldPath`.
    fn lines(env: &[EnvVar]) -> Vec<String> {
        env.iter()
            .map(|var| match (&var.value, &var.value_from) {
                (Some(value), None) => format!("{}={value}", var.name),
                (
                    None,
                    Some(EnvVarSource {
                        field_ref: Some(field), ..
                    }),
                ) => {
                    format!("{}<-{}", var.name, field.field_path)
                }
                other => panic!("{}: {other:?}", var.name),
            })
            .collect()
    }

    #[test]
    fn a_server_s_fields_win_over_the_operator_s_defaults_and_no_endpoint_means_no_export() {
        let defaults = TelemetrySpec {
            endpoint: Some("http://collector.observability:4317".into()),
            protocol: Some(OtlpProtocol::Grpc),
            sampling_ratio: Some("0.1".into()),
            sampler: Some(TraceSampler::TraceIdRatio),
            resource_attributes: BTreeMap::from([
                ("deployment.environment.name".into(), "production".into()),
                ("k8s.cluster.name".into(), "eu-1".into()),
            ]),
            ..TelemetrySpec::default()
        };
        let own = TelemetrySpec {
            sampling_ratio: Some("1".into()),
            service_name: Some("docs-search".into()),
            resource_attributes: BTreeMap::from([("k8s.cluster.name".into(), "eu-2".into())]),
            ..TelemetrySpec::default()
        };
        assert_eq!(
            lines(&own.or(&defaults).env("team-a", "docs")),
            [
                "PALISADE_POD_NAME<-metadata.name",
                "OTEL_EXPORTER_OTLP_ENDPOINT=http://collector.observability:4317",
                "OTEL_EXPORTER_OTLP_PROTOCOL=grpc",
                "OTEL_TRACES_SAMPLER=traceidratio",
                "OTEL_TRACES_SAMPLER_ARG=1",
                "OTEL_SERVICE_NAME=docs-search",
                "OTEL_RESOURCE_ATTRIBUTES=k8s.namespace.name=team-a,service.namespace=team-a,\
                 k8s.deployment.name=docs,k8s.pod.name=$(PALISADE_POD_NAME),\
                 deployment.environment.name=production,k8s.cluster.name=eu-2",
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
        assert_eq!(
            lines(&plain.env("a", "b"))[2..],
            [
                "OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf",
                "OTEL_TRACES_SAMPLER=parentbased_traceidratio",
                "OTEL_TRACES_SAMPLER_ARG=1",
                "OTEL_SERVICE_NAME=b",
                "OTEL_RESOURCE_ATTRIBUTES=k8s.namespace.name=a,service.namespace=a,k8s.deployment.name=b,\
                 k8s.pod.name=$(PALISADE_POD_NAME)",
            ]
        );
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
        let named = |name: &str| TelemetrySpec {
            service_name: Some(name.to_owned()),
            ..TelemetrySpec::default()
        };
        assert_eq!(named("docs-search").problem(), None);
        assert_eq!(
            named("docs,x=y").problem().unwrap(),
            "serviceName \"docs,x=y\": at most 128 letters, digits and '.', '_', '-', '/', ':', '@', '+'"
        );
    }

    #[test]
    fn a_resource_attribute_is_refused_when_the_variable_would_read_it_otherwise_or_the_operator_sets_it() {
        let with = |name: &str, value: &str| TelemetrySpec {
            resource_attributes: BTreeMap::from([(name.to_owned(), value.to_owned())]),
            ..TelemetrySpec::default()
        };
        assert_eq!(with("deployment.environment.name", "prod-eu:1/a@b+c").problem(), None);
        for (name, value, problem) in [
            (
                "team,x",
                "a",
                "resourceAttributes \"team,x\": a name is at most 128 letters, digits and '.', '_', '-', '/'",
            ),
            (
                "$(HOME)",
                "a",
                "resourceAttributes \"$(HOME)\": a name is at most 128 letters, digits and '.', '_', '-', '/'",
            ),
            (
                "k8s.pod.name",
                "x",
                "resourceAttributes \"k8s.pod.name\": the operator sets it",
            ),
            (
                "service.name",
                "x",
                "resourceAttributes \"service.name\": the operator sets it (use serviceName)",
            ),
            (
                "team",
                "a=b",
                "resourceAttributes \"team\": the value \"a=b\" is not at most 255 letters, digits and '.', '_', '-', '/', ':', '@', '+'",
            ),
            (
                "team",
                "$(HOME)",
                "resourceAttributes \"team\": the value \"$(HOME)\" is not at most 255 letters, digits and '.', '_', '-', '/', ':', '@', '+'",
            ),
            (
                "team",
                "",
                "resourceAttributes \"team\": the value \"\" is not at most 255 letters, digits and '.', '_', '-', '/', ':', '@', '+'",
            ),
        ] {
            assert_eq!(with(name, value).problem().as_deref(), Some(problem), "{name}={value}");
        }
        let many = TelemetrySpec {
            resource_attributes: (0..17).map(|i| (format!("a{i}"), "b".to_owned())).collect(),
            ..TelemetrySpec::default()
        };
        assert_eq!(many.problem().unwrap(), "resourceAttributes: 17 attributes, at most 16");
    }

    #[test]
    fn a_sampler_is_named_as_the_standard_variable_names_it() {
        for sampler in [TraceSampler::ParentBasedTraceIdRatio, TraceSampler::TraceIdRatio] {
            assert_eq!(TraceSampler::parse(sampler.as_str()), Some(sampler));
            assert_eq!(
                serde_json::to_value(sampler).unwrap(),
                serde_json::Value::String(sampler.as_str().to_owned())
            );
        }
        assert_eq!(TraceSampler::parse("always_on"), None);
    }
}
