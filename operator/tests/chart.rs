//! The Helm chart `charts/palisade`:
//! - its CRDs and RBAC rules are copies of the single sources (`crds/palisade.dev_*.yaml`,
//!   `config/rbac/`), byte for byte, so they cannot drift (`scripts/sync_chart_crds.sh` copies);
//! - `values.yaml` satisfies `values.schema.json`, and the schema refuses typical mistakes;
//! - rendered by Helm's own engine (Helm 4.2.3's Go SDK, through the pinned `helm-python-sdk` in the
//!   test virtualenv; no `helm` binary is needed), with the default values and with every
//!   option on, every object is valid: built-in kinds and CRDs against the Kubernetes API
//!   schemas (`kubernetes-validate --strict`), ServiceMonitors and the PrometheusRule against
//!   the Prometheus Operator's CRD schemas (`support/validate_custom_resources.py`);
//! - with the default values, release `palisade` in `palisade-system` installs the same objects,
//!   names, rules and pod spec as `kubectl apply -k config/default`;
//! - the ServiceMonitor for MCP servers selects the Services the operator builds, on their
//!   metrics port;
//! - the alert rules (`files/prometheus-rules.yaml`, plain data the PrometheusRule template
//!   includes) are a valid PrometheusRule spec and use the metric and label names the server
//!   and the operator expose. (promtool's unit tests of the alerts: `scripts/chart_test.sh`.)
//!
//! Needs `make e2e-deps` (the virtualenv) and `kubectl`; the Prometheus Operator's CRDs are
//! vendored in `tests/schemas/upstream/`.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use palisade_operator::settings::DEFAULT_SERVER_IMAGE;
use serde_json::{Value, json};
use support::{
    find_object as find, kubernetes_validate, kustomize, object_key as key, repo_root, scratch_documents, target_dir,
    upstream_crd, validate_custom_resources, yaml_documents as documents,
};

/// The oldest Kubernetes the chart supports (`kubeVersion`), the one the operator is built for,
/// and the newest `kubernetes-validate` 1.37.0 ships.
const KUBERNETES_VERSIONS: [&str; 3] = ["1.29.0", "1.34.0", "1.37.0"];

const RELEASE: &str = "palisade";
const NAMESPACE: &str = "palisade-system";

fn chart_dir() -> PathBuf {
    repo_root().join("charts/palisade")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn yaml_file(path: &Path) -> Value {
    yaml_serde::from_str(&read(path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

/// Every number as a float: YAML writers differ on `65535.0` against `65535`.
fn normalize(value: &Value) -> Value {
    match value {
        Value::Number(n) => json!(n.as_f64().expect("finite")),
        Value::Array(items) => Value::Array(items.iter().map(normalize).collect()),
        Value::Object(map) => Value::Object(map.iter().map(|(k, v)| (k.clone(), normalize(v))).collect()),
        other => other.clone(),
    }
}

/// Where `a` and `b` differ, as `path: a | b` lines.
fn differences(a: &Value, b: &Value, path: &str) -> Vec<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            keys.into_iter()
                .flat_map(|k| {
                    let at = |m: &serde_json::Map<String, Value>| m.get(k).cloned().unwrap_or(Value::Null);
                    differences(&at(x), &at(y), &format!("{path}.{k}"))
                })
                .collect()
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .flat_map(|(i, (p, q))| differences(p, q, &format!("{path}[{i}]")))
            .collect(),
        _ if a == b => Vec::new(),
        _ => vec![format!("{path}: {a} | {b}")],
    }
}

fn env_of(deployment: &Value, name: &str) -> Option<Value> {
    deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
        .cloned()
}

// --- Copies of the single sources ---------------------------------------------------------

/// `(source, copy in the chart)` for every file the chart carries a copy of.
fn copied_files() -> Vec<(PathBuf, PathBuf)> {
    let root = repo_root();
    let mut pairs: Vec<(PathBuf, PathBuf)> = palisade_crds::CRD_FILES
        .iter()
        .map(|file| (root.join("crds").join(file), chart_dir().join("files/crds").join(file)))
        .collect();
    for file in [
        "cluster_role.yaml",
        "leader_election_role.yaml",
        "aggregated_roles.yaml",
    ] {
        pairs.push((
            root.join("config/rbac").join(file),
            chart_dir().join("files/rbac").join(file),
        ));
    }
    pairs
}

#[test]
fn the_charts_crds_and_rbac_rules_are_copies_of_the_sources() {
    for (source, copy) in copied_files() {
        assert!(
            read(&source) == read(&copy),
            "{} is not a copy of {}: run scripts/sync_chart_crds.sh",
            copy.display(),
            source.display()
        );
    }
    // No stale copy of a CRD that is gone (the template renders every files/crds/*.yaml).
    let copies: BTreeSet<String> = std::fs::read_dir(chart_dir().join("files/crds"))
        .expect("files/crds")
        .map(|entry| entry.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    let sources: BTreeSet<String> = palisade_crds::CRD_FILES.iter().map(|f| (*f).to_owned()).collect();
    assert_eq!(
        copies, sources,
        "charts/palisade/files/crds/ differs from the generated CRDs: run scripts/sync_chart_crds.sh"
    );
}

// --- values.schema.json -------------------------------------------------------------------

fn values_validator() -> jsonschema::Validator {
    let schema: Value =
        serde_json::from_str(&read(&chart_dir().join("values.schema.json"))).expect("values.schema.json is JSON");
    jsonschema::draft7::new(&schema).expect("values.schema.json is a valid draft-07 schema")
}

fn schema_errors(validator: &jsonschema::Validator, values: &Value) -> Vec<String> {
    validator
        .iter_errors(values)
        .map(|e| {
            let path = e.instance_path().to_string();
            format!("{}: {e}", if path.is_empty() { "/" } else { &path })
        })
        .collect()
}

fn default_values() -> Value {
    yaml_file(&chart_dir().join("values.yaml"))
}

/// `values` with `path` (dot-separated) set to `value`.
fn with(mut values: Value, path: &str, value: Value) -> Value {
    let mut at = &mut values;
    for part in path.split('.') {
        at = &mut at[part];
    }
    *at = value;
    values
}

#[test]
fn values_yaml_satisfies_the_values_schema() {
    let validator = values_validator();
    assert_eq!(schema_errors(&validator, &default_values()), Vec::<String>::new());
    // Every option on is valid too (the values the render tests use).
    assert_eq!(schema_errors(&validator, &everything_values()), Vec::<String>::new());
}

#[test]
fn the_values_schema_refuses_typical_mistakes() {
    let validator = values_validator();
    let cases = [
        (
            with(default_values(), "replicas", json!(3)),
            "/: Additional properties are not allowed ('replicas' was unexpected)",
        ),
        (
            with(default_values(), "crds.upgrade", json!(true)),
            "/crds: Additional properties are not allowed ('upgrade' was unexpected)",
        ),
        (
            with(default_values(), "replicaCount", json!(0)),
            "/replicaCount: 0 is less than the minimum of 1",
        ),
        (
            with(default_values(), "replicaCount", json!("2")),
            "/replicaCount: \"2\" is not of type \"integer\"",
        ),
        (
            with(default_values(), "logFormat", json!("xml")),
            "/logFormat: \"xml\" is not one of \"json\" or \"text\"",
        ),
        (
            with(default_values(), "image.pullPolicy", json!("always")),
            "/image/pullPolicy: \"always\" is not one of \"\", \"Always\" or 2 other candidates",
        ),
        (
            with(default_values(), "serviceMonitor.interval", json!("30 seconds")),
            "/serviceMonitor/interval: \"30 seconds\" does not match \"^(0|(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$\"",
        ),
        (
            with(default_values(), "watchNamespace", json!("Team_A")),
            "/watchNamespace: \"Team_A\" does not match \"^([a-z0-9]([-a-z0-9]*[a-z0-9])?)?$\"",
        ),
        (
            with(default_values(), "watchNamespaces", json!(["team-a", "Team_B"])),
            "/watchNamespaces/1: \"Team_B\" does not match \"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$\"",
        ),
        (
            with(default_values(), "watchNamespaces", json!("team-a")),
            "/watchNamespaces: \"team-a\" is not of type \"array\"",
        ),
        (
            with(
                default_values(),
                "prometheusRule.additionalRuleLabels",
                json!({"team": 1}),
            ),
            "/prometheusRule/additionalRuleLabels/team: 1 is not of type \"string\"",
        ),
        (
            with(default_values(), "tracing.otlpEndpoint", json!("otel-collector:4317")),
            "/tracing/otlpEndpoint: \"otel-collector:4317\" does not match \"^(https?://[^\\s?#]+)?$\"",
        ),
        (
            with(default_values(), "mcpServers.telemetry.protocol", json!("http/json")),
            "/mcpServers/telemetry/protocol: \"http/json\" is not one of \"\", \"grpc\" or \"http/protobuf\"",
        ),
        (
            with(default_values(), "mcpServers.telemetry.samplingRatio", json!(0.1)),
            "/mcpServers/telemetry/samplingRatio: 0.1 is not of type \"string\"",
        ),
        (
            with(default_values(), "mcpServers.telemetry.sampler", json!("always_on")),
            "/mcpServers/telemetry/sampler: \"always_on\" is not one of \"\", \"parentbased_traceidratio\" or \"traceidratio\"",
        ),
        (
            with(
                default_values(),
                "mcpServers.telemetry.resourceAttributes",
                json!({"service.name": "docs"}),
            ),
            "/mcpServers/telemetry/resourceAttributes: {\"enum\":[\"k8s.namespace.name\",\"service.namespace\",\"k8s.deployment.name\",\"k8s.pod.name\",\"service.name\"]} is not allowed for \"service.name\"",
        ),
        (
            with(
                default_values(),
                "mcpServers.telemetry.resourceAttributes",
                json!({"team": "a,b=c"}),
            ),
            "/mcpServers/telemetry/resourceAttributes/team: \"a,b=c\" does not match \"^[A-Za-z0-9._:/@+-]+$\"",
        ),
    ];
    for (values, expected) in cases {
        assert_eq!(schema_errors(&validator, &values), [expected]);
    }
}

// --- Rendering with Helm's engine ---------------------------------------------------------

/// Renders (and lints) the chart with Helm 4's engine through `helm-python-sdk`: the values are
/// validated against values.schema.json by Helm first, as `helm install` does.
const HELM: &str = r#"
import json, sys
import helm_python as helm
request = json.load(sys.stdin)
try:
    with helm.Chart.load(request["chart"]) as chart:
        chart.validate_schema(request["values"])
        manifests = chart.render(
            request["values"], name=request["release"], namespace=request["namespace"], is_install=True
        )
    lint = helm.lint(request["chart"], request["values"], strict=True, namespace=request["namespace"])
    json.dump({"manifests": manifests, "lint": lint}, sys.stdout)
except helm.HelmError as error:
    json.dump({"error": str(error)}, sys.stdout)
"#;

struct Rendered {
    /// Every object, in the order of the templates' paths.
    objects: Vec<Value>,
    notes: String,
    /// helm lint --strict findings above "info".
    lint: Vec<String>,
}

fn helm(values: &Value) -> Result<Rendered, String> {
    let python = target_dir().join("e2e-deps/venv/bin/python");
    assert!(python.exists(), "{} is missing: run `make e2e-deps`", python.display());
    let request = json!({
        "chart": chart_dir(),
        "values": values,
        "release": RELEASE,
        "namespace": NAMESPACE,
    });
    let mut child = Command::new(&python)
        .args(["-c", HELM])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the test virtualenv's python");
    serde_json::to_writer(child.stdin.take().expect("stdin"), &request).expect("write the request");
    let output = child.wait_with_output().expect("wait for python");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && !stderr.contains("ModuleNotFoundError"),
        "rendering with helm-python-sdk failed (is `helm-python-sdk` in tests/deps/requirements.txt \
         and `make e2e-deps` run?):\n{stderr}"
    );
    let reply: Value = serde_json::from_slice(&output.stdout).expect("JSON from the helper");
    if let Some(error) = reply["error"].as_str() {
        return Err(error.to_owned());
    }
    let manifests: BTreeMap<String, String> =
        serde_json::from_value(reply["manifests"].clone()).expect("template path -> manifest");
    let mut objects = Vec::new();
    let mut notes = String::new();
    for (template, text) in &manifests {
        if template.ends_with("NOTES.txt") {
            notes = text.clone();
        } else {
            objects.extend(documents(text));
        }
    }
    let lint = reply["lint"]["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["severity"].as_i64().unwrap_or(3) > 1)
        .chain(reply["lint"]["errors"].as_array().into_iter().flatten())
        .map(Value::to_string)
        .collect();
    Ok(Rendered { objects, notes, lint })
}

fn render(values: &Value) -> Rendered {
    helm(values).unwrap_or_else(|e| panic!("helm: {e}"))
}

/// The default values with `ci/everything-values.yaml` over them: every switch on, every list
/// filled.
fn everything_values() -> Value {
    let mut values = default_values();
    merge(&mut values, &yaml_file(&chart_dir().join("ci/everything-values.yaml")));
    values
}

fn merge(into: &mut Value, from: &Value) {
    match (into, from) {
        (Value::Object(into), Value::Object(from)) => {
            for (k, v) in from {
                merge(into.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (into, from) => *into = from.clone(),
    }
}

/// The upstream CRD of a monitoring.coreos.com kind, vendored in `tests/schemas/upstream/`.
fn monitoring_crd(plural: &str) -> PathBuf {
    upstream_crd(&format!("monitoring.coreos.com_{plural}.yaml"))
}

/// Validates every object: built-ins against the Kubernetes schemas, ServiceMonitors and
/// PrometheusRules against their CRDs. Returns how many custom resources of each kind it saw.
fn validate_all(name: &str, objects: &[Value]) -> BTreeMap<String, usize> {
    let monitoring = |o: &&Value| {
        o["apiVersion"]
            .as_str()
            .is_some_and(|v| v.starts_with("monitoring.coreos.com/"))
    };
    let builtin: Vec<&Value> = objects.iter().filter(|o| !monitoring(o)).collect();
    let file = scratch_documents("chart", &format!("{name}-builtin.yaml"), builtin.iter().copied());
    for version in KUBERNETES_VERSIONS {
        if let Err(output) = kubernetes_validate(&file, version, builtin.len()) {
            panic!("{name} against Kubernetes {version}:\n{output}");
        }
    }
    let mut counts = BTreeMap::new();
    for (kind, plural) in [
        ("ServiceMonitor", "servicemonitors"),
        ("PrometheusRule", "prometheusrules"),
    ] {
        let custom = of_kind(objects, kind);
        counts.insert(kind.to_owned(), custom.len());
        if custom.is_empty() {
            continue;
        }
        let file = scratch_documents("chart", &format!("{name}-{plural}.yaml"), custom.iter().copied());
        if let Err(output) = validate_custom_resources(&monitoring_crd(plural), &file) {
            panic!("{name}: {kind} against the Prometheus Operator's CRD:\n{output}");
        }
    }
    assert_eq!(
        objects.len(),
        builtin.len() + counts.values().sum::<usize>(),
        "an unexpected custom resource"
    );
    counts
}

#[test]
fn the_default_install_renders_lints_and_validates() {
    let rendered = render(&default_values());
    assert_eq!(rendered.lint, Vec::<String>::new(), "helm lint --strict");
    let counts = validate_all("default", &rendered.objects);
    assert_eq!(counts.values().sum::<usize>(), 0, "monitoring is off by default");
    assert!(
        of_kind(&rendered.objects, "ConfigMap").is_empty(),
        "no dashboard by default"
    );
    assert!(
        rendered
            .notes
            .contains("kubectl -n palisade-system rollout status deployment/palisade-operator")
    );
}

#[test]
fn every_option_renders_lints_and_validates() {
    let rendered = render(&everything_values());
    assert_eq!(rendered.lint, Vec::<String>::new(), "helm lint --strict");
    let counts = validate_all("everything", &rendered.objects);
    assert_eq!(counts["ServiceMonitor"], 2, "the operator's and the MCP servers'");
    assert_eq!(counts["PrometheusRule"], 1);

    let objects = &rendered.objects;
    // The dashboard: the file, whole, in a ConfigMap the Grafana sidecar picks up.
    let dashboard = of_kind(objects, "ConfigMap")
        .into_iter()
        .find(|c| c["metadata"]["name"] == "palisade-dashboard")
        .expect("the dashboard ConfigMap");
    assert_eq!(dashboard["metadata"]["namespace"], "monitoring");
    assert_eq!(dashboard["metadata"]["labels"]["grafana_dashboard"], "1");
    assert_eq!(dashboard["metadata"]["annotations"]["grafana_folder"], "Palisade");
    let shipped: Value =
        serde_json::from_str(dashboard["data"]["palisade.json"].as_str().expect("palisade.json")).expect("JSON");
    assert_eq!(shipped, dashboard_file());
    let deployment = find(objects, "Deployment", "palisade-operator");
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "palisade");
    assert_eq!(
        pod["containers"][0]["image"],
        "ghcr.io/palisade-dev/palisade-operator:0.1.0-rc.1"
    );
    for (name, value) in [
        ("PALISADE_WATCH_NAMESPACES", "team-a,team-b"),
        ("PALISADE_SERVER_IMAGE", "registry.example.com/palisade-server:0.1.0"),
        ("PALISADE_SERVER_IMAGE_PULL_POLICY", "Always"),
        ("PALISADE_CLUSTER_DOMAIN", "corp.internal"),
        ("PALISADE_LOG_FORMAT", "text"),
        ("RUST_LOG", "info,palisade_operator=debug"),
        (
            "PALISADE_SERVER_OTLP_ENDPOINT",
            "http://otel-collector.observability:4318",
        ),
        ("PALISADE_SERVER_OTLP_PROTOCOL", "http/protobuf"),
        ("PALISADE_SERVER_TRACE_SAMPLING_RATIO", "0.01"),
        ("PALISADE_SERVER_TRACE_SAMPLER", "traceidratio"),
        (
            "PALISADE_SERVER_OTLP_RESOURCE_ATTRIBUTES",
            "deployment.environment.name=production,k8s.cluster.name=corp-eu-1",
        ),
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "http://otel-collector.observability:4317",
        ),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
        ("OTEL_TRACES_SAMPLER_ARG", "0.5"),
        (
            "OTEL_RESOURCE_ATTRIBUTES",
            "k8s.namespace.name=$(POD_NAMESPACE),k8s.pod.name=$(POD_NAME)",
        ),
    ] {
        assert_eq!(
            env_of(deployment, name).map(|e| e["value"].clone()),
            Some(json!(value)),
            "{name}"
        );
    }
    // Watching two namespaces: a Role in each with the rules of config/rbac/cluster_role.yaml,
    // and no ClusterRole or ClusterRoleBinding for the operator.
    assert!(of_kind(objects, "ClusterRoleBinding").is_empty());
    assert!(
        of_kind(objects, "ClusterRole")
            .iter()
            .all(|r| r["metadata"]["name"] != "palisade-operator"),
        "no ClusterRole for the operator"
    );
    let cluster_role = yaml_file(&repo_root().join("config/rbac/cluster_role.yaml"));
    for namespace in ["team-a", "team-b"] {
        let in_namespace = |kind: &str| {
            of_kind(objects, kind)
                .into_iter()
                .find(|o| o["metadata"]["name"] == "palisade-operator" && o["metadata"]["namespace"] == namespace)
                .unwrap_or_else(|| panic!("{kind} palisade-operator in {namespace}"))
        };
        assert_eq!(in_namespace("Role")["rules"], cluster_role["rules"], "{namespace}");
        let binding = in_namespace("RoleBinding");
        assert_eq!(
            binding["roleRef"],
            json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "palisade-operator"})
        );
        assert_eq!(
            binding["subjects"],
            json!([{"kind": "ServiceAccount", "name": "palisade", "namespace": NAMESPACE}])
        );
    }
    // ... and the MCP servers are scraped there only.
    let servers = find(objects, "ServiceMonitor", "palisade-mcp-servers");
    assert_eq!(
        servers["spec"]["namespaceSelector"],
        json!({"matchNames": ["team-a", "team-b"]})
    );
    assert_eq!(servers["metadata"]["labels"]["release"], "kube-prometheus-stack");
    // crds.keep off: no resource policy.
    for crd in of_kind(objects, "CustomResourceDefinition") {
        assert!(crd["metadata"]["annotations"].is_null(), "{}", key(crd));
    }
}

#[test]
fn helm_refuses_values_the_schema_refuses() {
    let error = helm(&with(default_values(), "replicas", json!(3)))
        .err()
        .expect("an unknown key must fail");
    assert_eq!(
        error,
        "palisade:\n- at '': additional properties 'replicas' not allowed\n"
    );
    let error = helm(&with(default_values(), "logFormat", json!("xml")))
        .err()
        .expect("an unknown log format must fail");
    assert_eq!(
        error,
        "palisade:\n- at '/logFormat': value must be one of 'json', 'text'\n"
    );
}

#[test]
fn the_default_release_installs_what_config_default_installs() {
    let chart = render(&default_values()).objects;
    // Helm does not create its release namespace; kustomize does.
    let kustomize: Vec<Value> = kustomize("config/default")
        .into_iter()
        .filter(|o| o["kind"] != "Namespace")
        .collect();

    let keys = |objects: &[Value]| objects.iter().map(key).collect::<BTreeSet<_>>();
    assert_eq!(keys(&chart), keys(&kustomize));

    for expected in &kustomize {
        let kind = expected["kind"].as_str().expect("kind");
        let actual = find(&chart, kind, expected["metadata"]["name"].as_str().expect("name"));
        // Everything but the metadata is the same (for a Deployment, its pods' labels too) ...
        let strip = |object: &Value| {
            let mut object = normalize(object);
            object.as_object_mut().expect("an object").remove("metadata");
            if kind == "Deployment" {
                object["spec"]["template"]["metadata"] = Value::Null;
            }
            object
        };
        let differences = differences(&strip(actual), &strip(expected), "");
        assert!(
            differences.is_empty(),
            "{} differs (chart | config/default):\n{}",
            key(expected),
            differences.join("\n")
        );
        // ... and the chart's labels include kustomize's.
        for (label, value) in expected["metadata"]["labels"].as_object().into_iter().flatten() {
            assert_eq!(
                &actual["metadata"]["labels"][label],
                value,
                "{}: label {label}",
                key(expected)
            );
        }
    }
    let pod_labels = |objects: &[Value]| {
        find(objects, "Deployment", "palisade-operator")["spec"]["template"]["metadata"]["labels"].clone()
    };
    for (label, value) in pod_labels(&kustomize).as_object().expect("labels") {
        assert_eq!(&pod_labels(&chart)[label], value, "pod label {label}");
    }
}

#[test]
fn crds_install_and_crds_keep_decide_the_crds() {
    let crds = |values: &Value| -> Vec<Value> {
        of_kind(&render(values).objects, "CustomResourceDefinition")
            .into_iter()
            .cloned()
            .collect()
    };
    let kept = crds(&default_values());
    assert_eq!(kept.len(), palisade_crds::CRD_FILES.len());
    for (crd, file) in kept
        .iter()
        .zip(["palisade.dev_mcpaccesspolicies.yaml", "palisade.dev_mcpservers.yaml"])
    {
        assert_eq!(
            crd["metadata"]["annotations"],
            json!({"helm.sh/resource-policy": "keep"}),
            "{}",
            key(crd)
        );
        // The spec is the generated one.
        let source = yaml_file(&repo_root().join("crds").join(file));
        assert_eq!(normalize(&crd["spec"]), normalize(&source["spec"]), "{file}");
        assert_eq!(crd["metadata"]["name"], source["metadata"]["name"]);
    }
    assert!(crds(&with(default_values(), "crds.install", json!(false))).is_empty());
    let notes = render(&with(default_values(), "crds.install", json!(false))).notes;
    assert!(notes.contains("NB: crds.install=false"), "{notes}");
}

#[test]
fn leader_election_off_means_one_replica() {
    let values = with(default_values(), "leaderElection.enabled", json!(false));
    assert_eq!(
        helm(&values)
            .err()
            .expect("two replicas without leader election must fail"),
        "execution error at (palisade/templates/deployment.yaml:2:4): leaderElection.enabled=false needs \
         replicaCount 1: two operators without a Lease would both reconcile"
    );
    let objects = render(&with(values, "replicaCount", json!(1))).objects;
    let deployment = find(&objects, "Deployment", "palisade-operator");
    assert_eq!(
        env_of(deployment, "PALISADE_DISABLE_LEADER_ELECTION").map(|e| e["value"].clone()),
        Some(json!("true"))
    );
    assert!(of_kind(&objects, "Role").is_empty(), "no leader-election Role");
    assert!(
        of_kind(&objects, "PodDisruptionBudget").is_empty(),
        "no PDB for one replica"
    );
}

#[test]
fn the_mcp_servers_service_monitor_selects_the_services_the_operator_builds() {
    let values = with(default_values(), "mcpServers.serviceMonitor.enabled", json!(true));
    let objects = render(&values).objects;
    let monitor = find(&objects, "ServiceMonitor", "palisade-mcp-servers");
    assert_eq!(monitor["spec"]["namespaceSelector"], json!({"any": true}));
    // The Service the operator builds for the company-info sample.
    let services: Vec<Value> = support::children(&support::CASES[0])
        .into_iter()
        .map(|(_, yaml)| yaml_serde::from_str::<Value>(&yaml).expect("a child"))
        .filter(|child| child["kind"] == "Service")
        .collect();
    let [service] = services.as_slice() else {
        panic!("one Service expected, got {}", services.len())
    };
    let labels = &service["metadata"]["labels"];
    for (label, value) in monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("matchLabels")
    {
        assert_eq!(&labels[label], value, "the Service's label {label}");
    }
    let endpoint = &monitor["spec"]["endpoints"][0];
    let port = service["spec"]["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .find(|p| p["name"] == endpoint["port"])
        .expect("the Service has the monitored port");
    assert_eq!(port["port"], 9090);
    // mcp_server, which the alerts group by, is the McpServer's name.
    assert_eq!(
        endpoint["relabelings"][0]["sourceLabels"],
        json!(["__meta_kubernetes_service_label_app_kubernetes_io_instance"])
    );
    assert_eq!(labels["app.kubernetes.io/instance"], "company-info");
}

// --- Alert rules ----------------------------------------------------------------------------

fn rules_file() -> Value {
    yaml_file(&chart_dir().join("files/prometheus-rules.yaml"))
}

fn as_prometheus_rule(spec: &Value) -> Value {
    json!({
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "palisade", "namespace": NAMESPACE},
        "spec": spec,
    })
}

#[test]
fn the_rules_file_is_a_valid_prometheus_rule_spec() {
    let crd = monitoring_crd("prometheusrules");
    let rule = as_prometheus_rule(&rules_file());
    let file = scratch_documents("chart", "prometheus-rule.yaml", [&rule]);
    if let Err(output) = validate_custom_resources(&crd, &file) {
        panic!("files/prometheus-rules.yaml as a PrometheusRule:\n{output}");
    }
    // The check is no rubber stamp.
    let mut broken = rule.clone();
    broken["spec"]["groups"][0]["rules"][0]["for"] = json!("2 minutes");
    broken["spec"]["groups"][0]["rules"][0]["severity"] = json!("warning");
    let file = scratch_documents("chart", "broken-prometheus-rule.yaml", [&broken]);
    let output = validate_custom_resources(&crd, &file).expect_err("an invalid PrometheusRule must fail");
    assert!(
        output.contains("spec.groups.0.rules.0.for: '2 minutes' does not match")
            && output.contains("Additional properties are not allowed ('severity' was unexpected)"),
        "{output}"
    );
}

#[test]
fn the_prometheus_rule_is_the_rules_file_with_the_additional_labels() {
    let values = with(
        with(default_values(), "prometheusRule.enabled", json!(true)),
        "prometheusRule.additionalRuleLabels",
        json!({"team": "platform", "severity": "page"}),
    );
    let objects = render(&values).objects;
    let rendered = find(&objects, "PrometheusRule", "palisade");
    let mut expected = rules_file();
    for group in expected["groups"].as_array_mut().expect("groups") {
        for rule in group["rules"].as_array_mut().expect("rules") {
            // An alert's own label (severity) wins over an additional one.
            rule["labels"]["team"] = json!("platform");
        }
    }
    assert_eq!(rendered["spec"], expected);
}

/// `(metric, [(label, value)])` of every series selector in a PromQL `expr`: a name followed by
/// `{matchers}` or a range `[...]` (a function is followed by `(`, a grouping label by `,` or `)`).
fn selectors(expr: &str) -> Vec<(String, Vec<(String, String)>)> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(start) = rest.find(|c: char| c.is_ascii_alphabetic() || c == '_') {
        rest = &rest[start..];
        let length = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let (name, after) = rest.split_at(length);
        match after.chars().next() {
            Some('{') => {
                let end = after.find('}').expect("a closing brace");
                let matchers = after[1..end]
                    .split(',')
                    .filter(|m| !m.trim().is_empty())
                    .map(|m| {
                        let (label, value) = m.split_once('=').expect("label=value");
                        (
                            label.trim_end_matches('!').trim().to_owned(),
                            value.trim().trim_matches('"').to_owned(),
                        )
                    })
                    .collect();
                out.push((name.to_owned(), matchers));
                rest = &after[end + 1..];
            }
            Some('[') => {
                out.push((name.to_owned(), Vec::new()));
                rest = after;
            }
            _ => rest = after,
        }
    }
    out
}

#[test]
fn the_selector_parser_finds_every_series() {
    assert_eq!(
        selectors("sum by (a, b) (rate(x_total{result=\"failure\", e!=\"v\"}[5m])) > 1 and increase(y_total[1m])"),
        [
            (
                "x_total".to_owned(),
                vec![("result".into(), "failure".into()), ("e".into(), "v".into())]
            ),
            ("y_total".to_owned(), vec![]),
        ]
    );
}

#[test]
fn the_alerts_use_metrics_and_label_values_that_exist() {
    let server_docs = read(&repo_root().join("docs/server.md"));
    let operator_docs = read(&repo_root().join("operator/README.md"));
    // The label values are string literals of these sources (closed enums).
    let server_metrics = read(&repo_root().join("server/src/metrics.rs"));
    let operator_errors = read(&repo_root().join("operator/src/controller/error.rs"));
    let mut metrics = BTreeSet::new();
    for group in rules_file()["groups"].as_array().expect("groups") {
        for rule in group["rules"].as_array().expect("rules") {
            let expr = rule["expr"].as_str().expect("expr");
            for (metric, matchers) in selectors(expr) {
                let (docs, source) = if metric.starts_with("mcp_") {
                    (&server_docs, &server_metrics)
                } else {
                    (&operator_docs, &operator_errors)
                };
                assert!(
                    docs.contains(&format!("`{metric}")),
                    "{metric} is not a documented metric"
                );
                for (label, value) in matchers {
                    assert!(
                        docs.contains(&format!("`{label}`")) || docs.contains(&format!("{label}=")),
                        "{metric}: label {label} is not documented"
                    );
                    assert!(
                        source.contains(&format!("\"{value}\"")),
                        "{metric}: {label}=\"{value}\" is not a value the code writes"
                    );
                }
                metrics.insert(metric);
            }
        }
    }
    assert_eq!(
        metrics,
        BTreeSet::from(
            [
                "mcp_authentication_attempts_total",
                "mcp_authorization_checks_total",
                "mcp_security_violations_total",
                "palisade_operator_reconcile_errors_total",
            ]
            .map(String::from)
        )
    );
}

// --- Grafana dashboard -----------------------------------------------------------------------

fn dashboard_file() -> Value {
    serde_json::from_str(&read(&chart_dir().join("files/grafana-dashboard.json"))).expect("the dashboard is JSON")
}

/// Every PromQL expression of the dashboard's panels.
fn dashboard_queries() -> Vec<String> {
    let dashboard = dashboard_file();
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            queries.push(target["expr"].as_str().expect("expr").to_owned());
        }
    }
    queries
}

/// The metric names the dashboard queries, as the binaries expose them (a histogram's
/// `_bucket` series belong to its family).
fn dashboard_metrics() -> BTreeSet<String> {
    dashboard_queries()
        .iter()
        .flat_map(|expr| selectors(expr))
        .map(|(metric, _)| metric.trim_end_matches("_bucket").to_owned())
        .collect()
}

#[test]
fn the_dashboard_is_a_grafana_dashboard_over_documented_metrics() {
    let dashboard = dashboard_file();
    assert_eq!(dashboard["uid"], "palisade-overview");
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    for panel in panels {
        assert!(ids.insert(panel["id"].as_u64().expect("id")), "panel ids are unique");
        let position = &panel["gridPos"];
        assert!(
            position["x"].as_u64().unwrap() + position["w"].as_u64().unwrap() <= 24,
            "{}",
            panel["title"]
        );
        if panel["type"] != "row" {
            assert_eq!(panel["datasource"]["uid"], "${datasource}", "{}", panel["title"]);
            assert!(
                !panel["description"].as_str().unwrap_or_default().is_empty(),
                "{}",
                panel["title"]
            );
        }
    }
    // Every metric and label value it queries is documented and written by the code; the cluster
    // suite checks that a real scrape of both binaries has every one of the metrics.
    let server_docs = read(&repo_root().join("docs/server.md"));
    let operator_docs = read(&repo_root().join("operator/README.md"));
    let server_metrics = read(&repo_root().join("server/src/metrics.rs"));
    for expr in dashboard_queries() {
        for (metric, matchers) in selectors(&expr) {
            let family = metric.trim_end_matches("_bucket");
            let docs = if family.starts_with("palisade_operator_") {
                &operator_docs
            } else {
                &server_docs
            };
            assert!(
                docs.contains(&format!("`{family}")),
                "{family} is not a documented metric"
            );
            for (label, value) in matchers {
                if label == "namespace" {
                    continue; // added by the scrape
                }
                assert!(
                    server_metrics.contains(&format!("\"{value}\"")),
                    "{metric}: {label}=\"{value}\""
                );
            }
        }
    }
    assert_eq!(
        dashboard_metrics(),
        BTreeSet::from(
            [
                "mcp_authentication_attempts_total",
                "mcp_authorization_checks_total",
                "mcp_request_duration_seconds",
                "mcp_requests_total",
                "mcp_security_violations_total",
                "mcp_tool_call_duration_seconds",
                "mcp_tool_calls_total",
                "palisade_jwks_fetches_total",
                "palisade_operator_kubernetes_requests_total",
                "palisade_operator_reconcile_duration_seconds",
                "palisade_operator_reconcile_errors_total",
                "palisade_operator_reconciles_total",
                "palisade_operator_trace_spans_dropped_total",
                "palisade_policy_info",
                "palisade_policy_reloads_total",
                "palisade_ready",
                "palisade_requests_shed_total",
                "palisade_trace_spans_dropped_total",
                "palisade_upstream_requests_total",
            ]
            .map(String::from)
        )
    );
}

// --- Versions ------------------------------------------------------------------------------

#[test]
fn the_chart_runs_this_version_of_the_operator_and_server() {
    let chart = yaml_file(&chart_dir().join("Chart.yaml"));
    assert_eq!(chart["appVersion"], env!("CARGO_PKG_VERSION"));
    let objects = render(&default_values()).objects;
    let deployment = find(&objects, "Deployment", "palisade-operator");
    assert_eq!(
        deployment["spec"]["template"]["spec"]["containers"][0]["image"],
        format!("ghcr.io/palisade-dev/palisade-operator:{}", env!("CARGO_PKG_VERSION"))
    );
    // The servers the operator starts run the server of the same version, as the operator's own
    // default (DEFAULT_SERVER_IMAGE) does.
    assert_eq!(
        env_of(deployment, "PALISADE_SERVER_IMAGE").map(|e| e["value"].clone()),
        Some(json!(DEFAULT_SERVER_IMAGE))
    );
}

#[test]
fn the_deprecated_watch_namespace_joins_watch_namespaces() {
    let values = with(
        with(default_values(), "watchNamespaces", json!(["team-b", "team-a"])),
        "watchNamespace",
        json!("team-a"),
    );
    let rendered = render(&values);
    let deployment = find(&rendered.objects, "Deployment", "palisade-operator");
    assert_eq!(
        env_of(deployment, "PALISADE_WATCH_NAMESPACES").map(|e| e["value"].clone()),
        Some(json!("team-a,team-b")),
        "each namespace once, sorted"
    );
    let roles: Vec<&Value> = of_kind(&rendered.objects, "Role")
        .into_iter()
        .filter(|r| r["metadata"]["name"] == "palisade-operator")
        .collect();
    assert_eq!(roles.len(), 2);
    assert!(rendered.notes.contains("watchNamespace is deprecated"));
    // Without either, the operator watches every namespace through its ClusterRole.
    let everywhere = render(&default_values());
    let deployment = find(&everywhere.objects, "Deployment", "palisade-operator");
    assert_eq!(env_of(deployment, "PALISADE_WATCH_NAMESPACES"), None);
    find(&everywhere.objects, "ClusterRoleBinding", "palisade-operator");
}
