//! The kustomize install (`kubectl apply --server-side -k config/default`), rendered with
//! `kubectl kustomize` as the cluster would receive it:
//! - it holds exactly the operator's objects, namespaced into `palisade-system`;
//! - every object, CRDs included, is valid against the Kubernetes API schemas
//!   (`kubernetes-validate --strict`: unknown fields fail) of the oldest Kubernetes the chart
//!   claims (1.29), the one the operator is built for (1.34) and the newest (1.37);
//! - `config/crd` is exactly the generated `crds/palisade.dev_*.yaml`;
//! - the operator's pod meets the restricted Pod Security Standard, finds its namespace for
//!   leader election, and runs the images of this version.
//!
//! Needs `kubectl` (with its built-in kustomize) and `make e2e-deps` (the test virtualenv).

mod support;

use std::collections::BTreeSet;

use palisade_operator::settings::DEFAULT_SERVER_IMAGE;
use serde_json::{Value, json};
use support::{
    find_object as find, kubernetes_validate, kustomize, object_key as key, repo_root, scratch_documents,
    yaml_documents as documents,
};

/// The oldest Kubernetes the chart supports (`kubeVersion` in Chart.yaml), the one the operator
/// is built for (k8s-openapi `v1_34`), and the newest `kubernetes-validate` 1.37.0 ships.
const KUBERNETES_VERSIONS: [&str; 3] = ["1.29.0", "1.34.0", "1.37.0"];

/// Every number as a float: YAML writers differ on `65535.0` against `65535`.
fn normalize(value: &Value) -> Value {
    match value {
        Value::Number(n) => json!(n.as_f64().expect("finite")),
        Value::Array(items) => Value::Array(items.iter().map(normalize).collect()),
        Value::Object(map) => Value::Object(map.iter().map(|(k, v)| (k.clone(), normalize(v))).collect()),
        other => other.clone(),
    }
}

#[test]
fn config_default_installs_the_crds_rbac_and_operator_into_palisade_system() {
    let objects = kustomize("config/default");
    let keys: BTreeSet<String> = objects.iter().map(key).collect();
    let expected: BTreeSet<String> = [
        "Namespace /palisade-system",
        "CustomResourceDefinition /mcpservers.palisade.dev",
        "CustomResourceDefinition /mcpaccesspolicies.palisade.dev",
        "ServiceAccount palisade-system/palisade-operator",
        "ClusterRole /palisade-operator",
        "ClusterRoleBinding /palisade-operator",
        "Role palisade-system/palisade-operator-leader-election",
        "RoleBinding palisade-system/palisade-operator-leader-election",
        "ClusterRole /palisade-edit",
        "ClusterRole /palisade-view",
        "Deployment palisade-system/palisade-operator",
        "Service palisade-system/palisade-operator-metrics",
        "PodDisruptionBudget palisade-system/palisade-operator",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(keys, expected);
    assert_eq!(keys.len(), objects.len(), "an object twice");

    // The bindings name the ServiceAccount the pods run as, where it is.
    let deployment = find(&objects, "Deployment", "palisade-operator");
    let account = deployment["spec"]["template"]["spec"]["serviceAccountName"].clone();
    assert_eq!(account, "palisade-operator");
    for (kind, name) in [
        ("ClusterRoleBinding", "palisade-operator"),
        ("RoleBinding", "palisade-operator-leader-election"),
    ] {
        assert_eq!(
            find(&objects, kind, name)["subjects"],
            json!([{"kind": "ServiceAccount", "name": account, "namespace": "palisade-system"}]),
            "{kind} {name}"
        );
    }
    // The metrics Service reaches the container's port and selects the operator's pods.
    let service = find(&objects, "Service", "palisade-operator-metrics");
    let pod = &deployment["spec"]["template"];
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "metrics");
    assert_eq!(
        pod["spec"]["containers"][0]["ports"],
        json!([{"name": "metrics", "containerPort": 8080, "protocol": "TCP"}])
    );
    for selector in [
        &service["spec"]["selector"],
        &deployment["spec"]["selector"]["matchLabels"],
        &find(&objects, "PodDisruptionBudget", "palisade-operator")["spec"]["selector"]["matchLabels"],
    ] {
        for (label, value) in selector.as_object().expect("a selector") {
            assert_eq!(&pod["metadata"]["labels"][label], value, "{label}");
        }
    }
}

#[test]
fn the_namespaced_overlay_grants_roles_in_the_watched_namespace_and_no_cluster_role() {
    let objects = kustomize("config/overlays/namespaced");
    let keys: BTreeSet<String> = objects.iter().map(key).collect();
    let default: BTreeSet<String> = kustomize("config/default").iter().map(key).collect();
    let removed: BTreeSet<String> = [
        "ClusterRole /palisade-operator",
        "ClusterRoleBinding /palisade-operator",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    let added: BTreeSet<String> = ["Role team-a/palisade-operator", "RoleBinding team-a/palisade-operator"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(default.difference(&keys).cloned().collect::<BTreeSet<_>>(), removed);
    assert_eq!(keys.difference(&default).cloned().collect::<BTreeSet<_>>(), added);

    let deployment = find(&objects, "Deployment", "palisade-operator");
    let env = &deployment["spec"]["template"]["spec"]["containers"][0]["env"];
    assert!(
        env.as_array()
            .expect("env")
            .contains(&json!({"name": "PALISADE_WATCH_NAMESPACES", "value": "team-a"})),
        "{env}"
    );
    let binding = objects
        .iter()
        .find(|o| o["kind"] == "RoleBinding" && o["metadata"]["namespace"] == "team-a")
        .expect("the RoleBinding in team-a");
    assert_eq!(
        binding["roleRef"],
        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "palisade-operator"})
    );
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": "palisade-operator", "namespace": "palisade-system"}])
    );
    let file = scratch_documents("kustomize", "config-overlays-namespaced.yaml", &objects);
    for version in KUBERNETES_VERSIONS {
        if let Err(output) = kubernetes_validate(&file, version, objects.len()) {
            panic!("config/overlays/namespaced against Kubernetes {version}:\n{output}");
        }
    }
}

#[test]
fn every_object_of_config_default_validates_against_the_kubernetes_schemas() {
    let objects = kustomize("config/default");
    let file = scratch_documents("kustomize", "config-default.yaml", &objects);
    for version in KUBERNETES_VERSIONS {
        if let Err(output) = kubernetes_validate(&file, version, objects.len()) {
            panic!("config/default against Kubernetes {version}:\n{output}");
        }
    }
}

#[test]
fn config_crd_is_exactly_the_generated_crds() {
    let rendered: Vec<Value> = kustomize("config/crd").iter().map(normalize).collect();
    let mut generated = Vec::new();
    for file in palisade_crds::CRD_FILES {
        let path = repo_root().join("crds").join(file);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        generated.extend(documents(&text).iter().map(normalize));
    }
    assert_eq!(rendered.len(), generated.len());
    for crd in &generated {
        assert!(rendered.contains(crd), "config/crd lacks or changes {}", key(crd));
    }
}

/// What the restricted Pod Security Standard (Kubernetes "Pod Security Standards", profile
/// `restricted`) forbids in a pod spec, as messages; empty when the pod is admitted.
fn restricted_violations(pod: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for field in ["hostNetwork", "hostPID", "hostIPC"] {
        if pod[field] == true {
            out.push(format!("{field} is true"));
        }
    }
    let pod_context = &pod["securityContext"];
    for volume in pod["volumes"].as_array().into_iter().flatten() {
        if volume.get("hostPath").is_some() {
            out.push(format!("volume {} is a hostPath", volume["name"]));
        }
    }
    let containers = pod["containers"]
        .as_array()
        .into_iter()
        .chain(pod["initContainers"].as_array())
        .flatten();
    for container in containers {
        let name = container["name"].as_str().unwrap_or("?");
        let context = &container["securityContext"];
        let either = |field: &str| {
            if context[field].is_null() {
                pod_context[field].clone()
            } else {
                context[field].clone()
            }
        };
        if context["privileged"] == true {
            out.push(format!("{name}: privileged"));
        }
        if context["allowPrivilegeEscalation"] != false {
            out.push(format!("{name}: allowPrivilegeEscalation is not false"));
        }
        if either("runAsNonRoot") != true {
            out.push(format!("{name}: runAsNonRoot is not true"));
        }
        if either("runAsUser") == 0 {
            out.push(format!("{name}: runAsUser is 0"));
        }
        let seccomp = either("seccompProfile");
        if seccomp["type"] != "RuntimeDefault" && seccomp["type"] != "Localhost" {
            out.push(format!(
                "{name}: seccompProfile.type is neither RuntimeDefault nor Localhost"
            ));
        }
        let capabilities = &context["capabilities"];
        if !capabilities["drop"]
            .as_array()
            .is_some_and(|d| d.contains(&json!("ALL")))
        {
            out.push(format!("{name}: capabilities do not drop ALL"));
        }
        for added in capabilities["add"].as_array().into_iter().flatten() {
            if added != "NET_BIND_SERVICE" {
                out.push(format!("{name}: adds capability {added}"));
            }
        }
        for port in container["ports"].as_array().into_iter().flatten() {
            if port.get("hostPort").is_some_and(|p| p != 0) {
                out.push(format!("{name}: hostPort"));
            }
        }
    }
    out
}

#[test]
fn the_operator_pod_meets_the_restricted_pod_security_standard() {
    let objects = kustomize("config/default");
    let namespace = find(&objects, "Namespace", "palisade-system");
    assert_eq!(
        namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        "restricted"
    );
    let pod = &find(&objects, "Deployment", "palisade-operator")["spec"]["template"]["spec"];
    assert_eq!(restricted_violations(pod), Vec::<String>::new());
    let container = &pod["containers"][0];
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(pod["securityContext"]["runAsUser"], 65532);
    for kind in ["requests", "limits"] {
        for resource in ["cpu", "memory"] {
            assert!(
                container["resources"][kind][resource].is_string(),
                "resources.{kind}.{resource} is missing"
            );
        }
    }

    // The check is no rubber stamp: it names what a weaker pod gets wrong.
    let mut weaker = pod.clone();
    weaker["securityContext"]["seccompProfile"] = Value::Null;
    weaker["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = json!(true);
    weaker["containers"][0]["securityContext"]["capabilities"] = json!({"add": ["NET_ADMIN"]});
    assert_eq!(
        restricted_violations(&weaker),
        [
            "operator: allowPrivilegeEscalation is not false",
            "operator: seccompProfile.type is neither RuntimeDefault nor Localhost",
            "operator: capabilities do not drop ALL",
            "operator: adds capability \"NET_ADMIN\"",
        ]
    );
}

#[test]
fn the_operator_runs_this_version_with_leader_election_in_its_own_namespace() {
    let objects = kustomize("config/default");
    let deployment = find(&objects, "Deployment", "palisade-operator");
    assert_eq!(deployment["spec"]["replicas"], 2);
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        container["image"],
        format!("ghcr.io/palisade-dev/palisade-operator:{}", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(container["args"], json!(["run"]));
    let env = |name: &str| {
        container["env"]
            .as_array()
            .expect("env")
            .iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("no env {name}"))
            .clone()
    };
    // `run` takes the Lease's namespace from POD_NAMESPACE and its identity from POD_NAME.
    assert_eq!(
        env("POD_NAMESPACE")["valueFrom"],
        json!({"fieldRef": {"fieldPath": "metadata.namespace"}})
    );
    assert_eq!(
        env("POD_NAME")["valueFrom"],
        json!({"fieldRef": {"fieldPath": "metadata.name"}})
    );
    assert_eq!(env("PALISADE_DISABLE_LEADER_ELECTION")["value"], "false");
    assert_eq!(env("PALISADE_LEADER_ELECTION_NAME")["value"], "palisade-operator");
    assert_eq!(env("PALISADE_SERVER_IMAGE")["value"], DEFAULT_SERVER_IMAGE);
    assert_eq!(env("PALISADE_METRICS_LISTEN")["value"], "0.0.0.0:8080");
    assert_eq!(
        container["livenessProbe"]["httpGet"],
        json!({"path": "/health", "port": "metrics"})
    );
    assert_eq!(
        container["readinessProbe"]["httpGet"],
        json!({"path": "/ready", "port": "metrics"})
    );
    // The leader-election Role lives where the pods do.
    let role = find(&objects, "Role", "palisade-operator-leader-election");
    assert_eq!(role["metadata"]["namespace"], deployment["metadata"]["namespace"]);
}
