//! The Argo CD side of GitOps (config/argocd/, docs/gitops.md): the Lua health checks of McpServer
//! and McpAccessPolicy, run with `lua5.4` against statuses of the shape the operator writes (built
//! from the CRD types, and for McpAccessPolicy by the operator's own `policy_status`); the
//! argocd-cm patch, which must embed the Lua files verbatim; and the sample Application.
//!
//! The Lua cases need `lua5.4` on PATH (Debian/Ubuntu: `apt-get install lua5.4`); without it they
//! fail, unless `PALISADE_SKIP_LUA=1`.

mod support;

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::Resource;
use kube::core::DeserializeGuard;
use palisade_crds::conditions::{self, reason};
use palisade_crds::{McpAccessPolicy, McpAccessPolicyStatus, McpServer, McpServerStatus};
use palisade_operator::Settings;
use palisade_operator::controller::policy_status::policy_status;
use serde::Deserialize;
use serde_json::{Value, json};
use support::{read_repo_file as read, repo_root};

const LUA: &str = "lua5.4";
const SERVER_CHECK: &str = "config/argocd/health/mcpserver.lua";
const POLICY_CHECK: &str = "config/argocd/health/mcpaccesspolicy.lua";
const GENERATION: i64 = 3;

/// The documents of a (multi-document) YAML file, as JSON.
fn yaml_documents(relative: &str) -> Vec<Value> {
    let text = read(relative);
    yaml_serde::Deserializer::from_str(&text)
        .map(|document| {
            let value = yaml_serde::Value::deserialize(document).unwrap_or_else(|e| panic!("{relative}: {e}"));
            serde_json::to_value(value).unwrap_or_else(|e| panic!("{relative}: {e}"))
        })
        .filter(|value| !value.is_null())
        .collect()
}

fn document_of_kind(documents: &[Value], kind: &str) -> Value {
    let mut found = documents.iter().filter(|d| d["kind"] == kind);
    let document = found.next().unwrap_or_else(|| panic!("no {kind}"));
    assert!(found.next().is_none(), "more than one {kind}");
    document.clone()
}

/// The interpreter, or `None` when `PALISADE_SKIP_LUA=1`. A missing interpreter fails the test.
fn lua() -> Option<&'static str> {
    if std::env::var_os("PALISADE_SKIP_LUA").is_some_and(|v| v == "1") {
        eprintln!("PALISADE_SKIP_LUA=1: the Argo CD health checks were not run");
        return None;
    }
    match Command::new(LUA).arg("-v").output() {
        Ok(output) if output.status.success() => Some(LUA),
        Ok(output) => panic!("`{LUA} -v` failed: {output:?}"),
        Err(error) => panic!(
            "cannot run `{LUA}` ({error}). The Argo CD health checks in config/argocd/health/ are Lua: \
             install it with `apt-get install lua5.4`, or set PALISADE_SKIP_LUA=1 to skip these tests"
        ),
    }
}

/// A Lua expression that evaluates to `value` (objects and arrays become tables, as Argo CD
/// hands a resource to a health check; integers stay integers).
fn lua_literal(value: &Value) -> String {
    match value {
        Value::Null => "nil".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) if n.is_i64() || n.is_u64() => n.to_string(),
        Value::Number(n) => format!("{:?}", n.as_f64().expect("a JSON number is finite")),
        Value::String(s) => lua_string(s),
        Value::Array(items) => format!("{{{}}}", items.iter().map(lua_literal).collect::<Vec<_>>().join(", ")),
        Value::Object(fields) => format!(
            "{{{}}}",
            fields
                .iter()
                .map(|(k, v)| format!("[{}] = {}", lua_string(k), lua_literal(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// A quoted Lua string: printable ASCII as is, every other byte as a decimal escape.
fn lua_string(s: &str) -> String {
    let mut quoted = String::from("\"");
    for byte in s.bytes() {
        match byte {
            b'"' | b'\\' => {
                quoted.push('\\');
                quoted.push(char::from(byte));
            }
            0x20..=0x7e => quoted.push(char::from(byte)),
            _ => quoted.push_str(&format!("\\{byte:03}")),
        }
    }
    quoted.push('"');
    quoted
}

/// `text` as a Lua long string, with a bracket level that does not occur in it.
fn lua_long_string(text: &str) -> String {
    let level = (0..)
        .map(|n| "=".repeat(n))
        .find(|eq| !text.contains(&format!("]{eq}]")))
        .expect("some level is free");
    // NB: a newline right after the opening bracket is not part of the string.
    format!("[{level}[\n{text}]{level}]")
}

/// `(hs.status, hs.message)` of the health check `script` for `object`. The script runs as Argo
/// CD runs it: `obj` is the resource, and only the base, string, table and math functions exist
/// (no io, os or require).
fn health(lua: &str, script: &str, object: &Value) -> (String, String) {
    let harness = format!(
        "local source = {source}\n\
         local env = {{obj = {object}, ipairs = ipairs, pairs = pairs, next = next, type = type, \
         tostring = tostring, tonumber = tonumber, string = string, table = table, math = math}}\n\
         local check = assert(load(source, \"={script}\", \"t\", env))\n\
         local hs = check()\n\
         io.write(tostring(hs.status), \"\\n\", tostring(hs.message))\n",
        source = lua_long_string(&read(script)),
        object = lua_literal(object),
    );
    let mut child = Command::new(lua)
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{lua}: {e}"));
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(harness.as_bytes())
        .expect("write the harness");
    let output = child.wait_with_output().expect("lua runs");
    let stdout = String::from_utf8(output.stdout).expect("UTF-8 output");
    assert!(
        output.status.success(),
        "{script} failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    let (status, message) = stdout.split_once('\n').expect("status and message");
    (status.to_owned(), message.to_owned())
}

fn condition(type_: &str, status: &str, reason: &str, message: &str) -> Condition {
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        observed_generation: Some(GENERATION),
        last_transition_time: Time(Timestamp::UNIX_EPOCH),
    }
}

/// The company-info sample's McpServer or McpAccessPolicy in team-a at `GENERATION`.
fn sample<K: serde::de::DeserializeOwned + Resource>(kind: &str) -> K {
    let documents = yaml_documents("config/samples/company-info.yaml");
    let mut object: K = serde_json::from_value(document_of_kind(&documents, kind)).expect("a valid sample");
    object.meta_mut().namespace = Some("team-a".into());
    object.meta_mut().generation = Some(GENERATION);
    object
}

/// The sample McpServer as the API server returns it, with `status`.
fn server(status: Option<McpServerStatus>) -> Value {
    let mut server: McpServer = sample("McpServer");
    server.status = status;
    serde_json::to_value(server).expect("serializable")
}

fn server_status(conditions: Vec<Condition>) -> McpServerStatus {
    McpServerStatus {
        conditions,
        observed_generation: Some(GENERATION),
        ..McpServerStatus::default()
    }
}

/// A status whose Ready condition is `ready` (and whose other conditions are of no concern).
fn ready(status: &str, reason: &str, message: &str) -> Option<McpServerStatus> {
    Some(server_status(vec![
        condition(conditions::READY, status, reason, message),
        condition(conditions::POLICY_VALID, "True", reason::AS_EXPECTED, "policy in force"),
    ]))
}

fn policy(status: Option<McpAccessPolicyStatus>) -> Value {
    let mut policy: McpAccessPolicy = sample("McpAccessPolicy");
    policy.status = status;
    serde_json::to_value(policy).expect("serializable")
}

fn accepted(status: &str, reason: &str, message: &str) -> Option<McpAccessPolicyStatus> {
    Some(McpAccessPolicyStatus {
        conditions: vec![condition(conditions::ACCEPTED, status, reason, message)],
        observed_generation: Some(GENERATION),
        ..McpAccessPolicyStatus::default()
    })
}

/// The values of `crds/src/conditions.rs`'s `mod reason`: every reason the operator can write.
fn every_reason() -> BTreeSet<String> {
    let source = read("crds/src/conditions.rs");
    let (_, module) = source.split_once("pub mod reason {").expect("mod reason");
    module
        .lines()
        .filter_map(|line| line.trim().strip_prefix("pub const "))
        .map(|rest| {
            let (_, value) = rest.split_once("= \"").expect("a string constant");
            value.trim_end_matches("\";").to_owned()
        })
        .collect()
}

/// How an McpServer with `Ready=False` and each reason is reported: "Progressing" where the
/// cluster gets there by itself, "Degraded" where someone has to act.
const SERVER_NOT_READY: [(&str, &str); 9] = [
    (reason::PODS_NOT_READY, "Progressing"),
    (reason::EXTERNAL_SECRET_NOT_READY, "Progressing"),
    (reason::EXTERNAL_SECRET_SYNC_FAILED, "Degraded"),
    (reason::POLICY_INVALID, "Degraded"),
    (reason::POLICY_TEST_FAILED, "Degraded"),
    (reason::CONFIG_MAP_NOT_FOUND, "Degraded"),
    (reason::SECRET_NOT_FOUND, "Degraded"),
    (reason::EXTERNAL_SECRETS_NOT_INSTALLED, "Degraded"),
    (reason::APPLY_FAILED, "Degraded"),
];

/// Reasons an McpServer's Ready condition never has with status False: AsExpected and NoPolicy
/// are reasons of True conditions; CrossNamespaceRef and NoTargets are McpAccessPolicy's;
/// RollingOut and NoReadyPods are PolicyRolledOut's (see [`ROLLED_OUT_WHILE_READY`]);
/// ToolsChanged (Degraded), ToolsUnpinned and NoInventory (both Healthy) are ToolsPinned's;
/// UpstreamRunsAsRoot is PodSecurityRestricted's (Healthy: a choice spelled out in the spec; a
/// namespace that enforces the standard refuses the pods, and Ready says so).
const NEVER_SERVER_NOT_READY: [&str; 10] = [
    reason::UPSTREAM_RUNS_AS_ROOT,
    reason::AS_EXPECTED,
    reason::NO_POLICY,
    reason::CROSS_NAMESPACE_REF,
    reason::NO_TARGETS,
    reason::ROLLING_OUT,
    reason::NO_READY_PODS,
    reason::TOOLS_CHANGED,
    reason::TOOLS_UNPINNED,
    reason::NO_INVENTORY,
];

/// How an McpServer with `Ready=True` and `PolicyRolledOut=False` with each reason is reported:
/// ready pods that still serve an older policy are on their way (kubelet projects the changed
/// ConfigMap by itself); no ready pod with Ready=True is a server scaled to zero, which is healthy.
const ROLLED_OUT_WHILE_READY: [(&str, &str); 2] =
    [(reason::ROLLING_OUT, "Progressing"), (reason::NO_READY_PODS, "Healthy")];

/// The reasons of `Accepted=False` (operator/src/controller/policy_status.rs).
const POLICY_NOT_ACCEPTED: [&str; 4] = [
    reason::POLICY_INVALID,
    reason::POLICY_TEST_FAILED,
    reason::CROSS_NAMESPACE_REF,
    reason::NO_TARGETS,
];

#[test]
fn every_reason_the_operator_writes_is_classified() {
    let classified: BTreeSet<String> = SERVER_NOT_READY
        .iter()
        .map(|(reason, _)| *reason)
        .chain(NEVER_SERVER_NOT_READY)
        .map(str::to_owned)
        .collect();
    assert_eq!(
        classified,
        every_reason(),
        "crds/src/conditions.rs and this test disagree: decide whether a new reason means \
         Progressing or Degraded in config/argocd/health/mcpserver.lua, then list it here"
    );
}

#[test]
fn mcp_server_health_follows_ready_for_the_current_generation() {
    let Some(lua) = lua() else { return };
    let stale = Some(McpServerStatus {
        observed_generation: Some(GENERATION - 1),
        ..ready("True", reason::AS_EXPECTED, "2 of 2 pods ready").unwrap()
    });
    let mut stale_ready = ready("True", reason::AS_EXPECTED, "2 of 2 pods ready").unwrap();
    stale_ready.conditions[0].observed_generation = Some(GENERATION - 1);
    let only_policy_valid = Some(server_status(vec![condition(
        conditions::POLICY_VALID,
        "True",
        reason::AS_EXPECTED,
        "policy in force",
    )]));
    let no_policy = Some(server_status(vec![
        condition(conditions::READY, "True", reason::AS_EXPECTED, "1 of 1 pods ready"),
        condition(
            conditions::POLICY_VALID,
            "True",
            reason::NO_POLICY,
            "no McpAccessPolicy in this namespace targets the server, so every call is denied",
        ),
    ]));
    let waiting = "Waiting for the Palisade operator to reconcile generation 3";
    let cases: Vec<(&str, Option<McpServerStatus>, &str, &str)> = vec![
        (
            "no status yet",
            None,
            "Progressing",
            "Waiting for the Palisade operator to reconcile the McpServer",
        ),
        (
            "a status without observedGeneration",
            Some(McpServerStatus::default()),
            "Progressing",
            waiting,
        ),
        ("a status of the previous generation", stale, "Progressing", waiting),
        (
            "a Ready condition of the previous generation",
            Some(stale_ready),
            "Progressing",
            waiting,
        ),
        (
            "no conditions",
            Some(server_status(Vec::new())),
            "Progressing",
            "Waiting for the Palisade operator to report the Ready condition",
        ),
        (
            "no Ready condition",
            only_policy_valid,
            "Progressing",
            "Waiting for the Palisade operator to report the Ready condition",
        ),
        (
            "ready",
            ready("True", reason::AS_EXPECTED, "2 of 2 pods ready"),
            "Healthy",
            "2 of 2 pods ready",
        ),
        (
            "ready without any policy (every call denied, as intended)",
            no_policy,
            "Healthy",
            "1 of 1 pods ready",
        ),
        (
            "pods rolling out",
            ready(
                "False",
                reason::PODS_NOT_READY,
                "1 of 3 pods ready (3 updated, 1 available)",
            ),
            "Progressing",
            "1 of 3 pods ready (3 updated, 1 available)",
        ),
        (
            "a policy test failed",
            ready(
                "False",
                reason::POLICY_TEST_FAILED,
                "PolicyValid is False: test \"a\" failed. Fix the spec",
            ),
            "Degraded",
            "PolicyValid is False: test \"a\" failed. Fix the spec",
        ),
        (
            "Ready=Unknown",
            ready("Unknown", "Reconciling", "checking"),
            "Progressing",
            "checking",
        ),
        (
            "a reason this check does not know",
            ready("False", "SomethingNew", "a new kind of failure"),
            "Degraded",
            "a new kind of failure",
        ),
        (
            "a condition without a message",
            ready("False", reason::SECRET_NOT_FOUND, ""),
            "Degraded",
            "Ready is False (SecretNotFound)",
        ),
    ];
    for (case, status, expected_status, expected_message) in cases {
        assert_eq!(
            health(lua, SERVER_CHECK, &server(status)),
            (expected_status.to_owned(), expected_message.to_owned()),
            "{case}"
        );
    }
    for (reason, expected) in SERVER_NOT_READY {
        let message = format!("Ready is False because of {reason}; see the other conditions");
        assert_eq!(
            health(lua, SERVER_CHECK, &server(ready("False", reason, &message))),
            (expected.to_owned(), message),
            "Ready=False with reason {reason}"
        );
    }
}

#[test]
fn mcp_server_health_waits_for_the_pods_to_serve_the_current_policy() {
    let Some(lua) = lua() else { return };
    let ready_and = |rolled_out: Condition| {
        let mut status = ready("True", reason::AS_EXPECTED, "2 of 2 pods ready").unwrap();
        status.conditions.push(rolled_out);
        Some(status)
    };
    let rolling = "1 of 2 ready pods serve policy sha256:new; 1 on sha256:old";
    let cases = [
        (
            "all ready pods serve the current policy",
            ready_and(condition(
                conditions::POLICY_ROLLED_OUT,
                "True",
                reason::AS_EXPECTED,
                "all 2 ready pods serve policy sha256:new",
            )),
            ("Healthy", "2 of 2 pods ready"),
        ),
        (
            "a ready pod still serves the previous policy",
            ready_and(condition(
                conditions::POLICY_ROLLED_OUT,
                "False",
                reason::ROLLING_OUT,
                rolling,
            )),
            ("Progressing", rolling),
        ),
        (
            "rolling out, without a message",
            ready_and(condition(
                conditions::POLICY_ROLLED_OUT,
                "False",
                reason::ROLLING_OUT,
                "",
            )),
            (
                "Progressing",
                "The ready pods do not all serve the current policy yet (RollingOut)",
            ),
        ),
        (
            "scaled to zero",
            ready_and(condition(
                conditions::POLICY_ROLLED_OUT,
                "False",
                reason::NO_READY_PODS,
                "no pod is ready, so no pod enforces policy sha256:new yet",
            )),
            ("Healthy", "2 of 2 pods ready"),
        ),
        (
            "an upstream tool differs from its pin",
            ready_and(condition(
                conditions::TOOLS_PINNED,
                "False",
                reason::TOOLS_CHANGED,
                "1 upstream tool(s) differ from their pins: weather",
            )),
            ("Degraded", "1 upstream tool(s) differ from their pins: weather"),
        ),
        (
            "upstream tools without pins",
            ready_and(condition(
                conditions::TOOLS_PINNED,
                "False",
                reason::TOOLS_UNPINNED,
                "2 upstream tool(s) have no pin",
            )),
            ("Healthy", "2 of 2 pods ready"),
        ),
        (
            "no inventory yet",
            ready_and(condition(
                conditions::TOOLS_PINNED,
                "False",
                reason::NO_INVENTORY,
                "no pod is ready",
            )),
            ("Healthy", "2 of 2 pods ready"),
        ),
    ];
    for (case, status, (expected_status, expected_message)) in cases {
        assert_eq!(
            health(lua, SERVER_CHECK, &server(status)),
            (expected_status.to_owned(), expected_message.to_owned()),
            "{case}"
        );
    }
    for (reason, expected) in ROLLED_OUT_WHILE_READY {
        let status = ready_and(condition(conditions::POLICY_ROLLED_OUT, "False", reason, "m"));
        assert_eq!(
            health(lua, SERVER_CHECK, &server(status)).0,
            expected,
            "Ready=True, PolicyRolledOut=False with reason {reason}"
        );
    }
}

#[test]
fn mcp_access_policy_health_follows_accepted_as_the_operator_computes_it() {
    let Some(lua) = lua() else { return };
    let now = Time(Timestamp::UNIX_EPOCH);
    let sample_server: McpServer = sample("McpServer");
    let servers = [Arc::new(DeserializeGuard(Ok(sample_server)))];
    // The operator's own status for the sample, and for the sample with a test that fails.
    let computed = |policy: &McpAccessPolicy| {
        let policies = [Arc::new(DeserializeGuard(Ok(policy.clone())))];
        policy_status(policy, &servers, &policies, &Settings::default(), None, &now)
    };
    let good: McpAccessPolicy = sample("McpAccessPolicy");
    let accepted_status = computed(&good);
    let mut failing = good.clone();
    // "a public token sees only public information" now also expects the confidential tool.
    failing.spec.tests[0]
        .visible_tools
        .as_mut()
        .expect("the first sample test lists visible tools")
        .push("get_confidential_info".into());
    let failing_status = computed(&failing);
    assert_eq!(failing_status.conditions[0].reason, reason::POLICY_TEST_FAILED);
    let failing_message = failing_status.conditions[0].message.clone();
    let mut lonely = good.clone();
    lonely.spec.target_refs[0].name = "nobody".into();
    let lonely_status = computed(&lonely);
    assert_eq!(lonely_status.conditions[0].reason, reason::NO_TARGETS);
    let lonely_message = lonely_status.conditions[0].message.clone();

    let stale = McpAccessPolicyStatus {
        observed_generation: Some(GENERATION - 1),
        ..accepted_status.clone()
    };
    let waiting = "Waiting for the Palisade operator to check generation 3";
    let cases: Vec<(&str, Option<McpAccessPolicyStatus>, &str, &str)> = vec![
        (
            "no status yet",
            None,
            "Progressing",
            "Waiting for the Palisade operator to check the McpAccessPolicy",
        ),
        (
            "a status of the previous generation",
            Some(stale),
            "Progressing",
            waiting,
        ),
        (
            "no conditions",
            Some(McpAccessPolicyStatus {
                observed_generation: Some(GENERATION),
                ..McpAccessPolicyStatus::default()
            }),
            "Progressing",
            "Waiting for the Palisade operator to report the Accepted condition",
        ),
        (
            "accepted (the operator's status for the sample)",
            Some(accepted_status),
            "Healthy",
            "in force on McpServer company-info",
        ),
        (
            "a failing test (the operator's status)",
            Some(failing_status),
            "Degraded",
            &failing_message,
        ),
        (
            "no target (the operator's status)",
            Some(lonely_status),
            "Degraded",
            &lonely_message,
        ),
        (
            "Accepted=Unknown",
            accepted("Unknown", "Checking", "checking"),
            "Progressing",
            "checking",
        ),
        (
            "a reason this check does not know",
            accepted("False", "SomethingNew", "a new kind of refusal"),
            "Degraded",
            "a new kind of refusal",
        ),
    ];
    for (case, status, expected_status, expected_message) in cases {
        assert_eq!(
            health(lua, POLICY_CHECK, &policy(status)),
            (expected_status.to_owned(), expected_message.to_owned()),
            "{case}"
        );
    }
    for reason in POLICY_NOT_ACCEPTED {
        let message = format!("refused: {reason}; the last valid policy stays in force");
        assert_eq!(
            health(lua, POLICY_CHECK, &policy(accepted("False", reason, &message))),
            ("Degraded".to_owned(), message),
            "Accepted=False with reason {reason}"
        );
    }
}

#[test]
fn the_lua_literal_survives_quotes_newlines_and_non_ascii() {
    let Some(lua) = lua() else { return };
    let message = "line 1\nline \"2\" \\ ]] ]=] é ✓";
    let object = server(ready("True", reason::AS_EXPECTED, message));
    assert_eq!(
        health(lua, SERVER_CHECK, &object),
        ("Healthy".to_owned(), message.to_owned())
    );
}

#[test]
fn argocd_cm_patch_embeds_the_lua_files_verbatim() {
    let documents = yaml_documents("config/argocd/argocd-cm-patch.yaml");
    let config_map = document_of_kind(&documents, "ConfigMap");
    assert_eq!(config_map["metadata"]["name"], "argocd-cm");
    let data = config_map["data"].as_object().expect("data");
    let key = |group: &str, kind: &str| format!("resource.customizations.health.{group}_{kind}");
    let expected = [
        (key(&McpServer::group(&()), &McpServer::kind(&())), SERVER_CHECK),
        (
            key(&McpAccessPolicy::group(&()), &McpAccessPolicy::kind(&())),
            POLICY_CHECK,
        ),
    ];
    let keys: BTreeSet<&str> = data.keys().map(String::as_str).collect();
    assert_eq!(keys, expected.iter().map(|(key, _)| key.as_str()).collect());
    for (key, file) in expected {
        let embedded = data[&key].as_str().expect("a string");
        let original = read(file);
        if let Some((number, (embedded, original))) = embedded
            .split('\n')
            .zip(original.split('\n'))
            .enumerate()
            .find(|(_, (a, b))| a != b)
        {
            panic!(
                "{key} differs from {file} at line {}:\n  embedded: {embedded:?}\n  file:     {original:?}\n\
                 copy the file into config/argocd/argocd-cm-patch.yaml",
                number + 1
            );
        }
        assert_eq!(embedded, original, "{key} and {file} differ in length");
    }
}

#[test]
fn the_sample_application_syncs_company_info_into_team_a_within_its_project() {
    let documents = yaml_documents("config/argocd/samples-application.yaml");
    let project = document_of_kind(&documents, "AppProject");
    let application = document_of_kind(&documents, "Application");
    assert_eq!(application["spec"]["project"], project["metadata"]["name"]);
    let destination = &application["spec"]["destination"];
    assert_eq!(destination["namespace"], "team-a");
    assert!(
        project["spec"]["destinations"]
            .as_array()
            .expect("destinations")
            .contains(destination),
        "the project allows the Application's destination"
    );
    let options = &application["spec"]["syncPolicy"]["syncOptions"];
    assert_eq!(options, &json!(["ServerSideApply=true", "CreateNamespace=true"]));
    let source = &application["spec"]["source"];
    assert_eq!(source["repoURL"], project["spec"]["sourceRepos"][0]);
    let path = source["path"].as_str().expect("source.path");
    let include = source["directory"]["include"].as_str().expect("directory.include");
    let synced = yaml_documents(&format!("{path}/{include}"));

    // Every object the Application syncs is of a kind the project allows (so no Secret), and
    // names no namespace of its own (it lands in the destination).
    let allowed: BTreeSet<(String, String)> = project["spec"]["namespaceResourceWhitelist"]
        .as_array()
        .expect("namespaceResourceWhitelist")
        .iter()
        .map(|gk| {
            (
                gk["group"].as_str().unwrap().to_owned(),
                gk["kind"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let mut kinds = BTreeSet::new();
    for object in &synced {
        let api_version = object["apiVersion"].as_str().expect("apiVersion");
        let group = api_version.rsplit_once('/').map_or("", |(group, _)| group);
        let kind = object["kind"].as_str().expect("kind");
        assert!(
            allowed.contains(&(group.to_owned(), kind.to_owned())),
            "{kind} of {group:?} is not in the project's namespaceResourceWhitelist"
        );
        assert!(object["metadata"]["namespace"].is_null(), "{kind} names a namespace");
        kinds.insert(kind.to_owned());
    }
    assert_eq!(
        kinds,
        BTreeSet::from(["ConfigMap".to_owned(), "McpServer".into(), "McpAccessPolicy".into()])
    );

    let operator = document_of_kind(
        &yaml_documents("config/argocd/operator-application.yaml"),
        "Application",
    );
    let path = operator["spec"]["source"]["path"].as_str().expect("source.path");
    assert!(
        repo_root().join(path).join("kustomization.yaml").is_file(),
        "{path} is a kustomize base"
    );
}
