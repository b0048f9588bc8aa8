//! The command line: `token`, `policy check`, `policy compile` and `policy explain`, run as the
//! real binary, with the exact output, the stream it goes to (documents and reports on standard
//! output, warnings and errors on standard error) and the exit status a person sees.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_palisade-server")
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root")
        .to_path_buf()
}

fn run(args: &[&str]) -> Output {
    Command::new(binary()).args(args).output().expect("run palisade-server")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("palisade-cli-{name}-{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[test]
fn policy_check_compiles_the_samples_and_runs_their_tests() {
    let samples = repo().join("config/samples");
    let output = run(&[
        "policy",
        "check",
        samples.join("company-info.yaml").to_str().unwrap(),
        samples.join("sso-docs.yaml").to_str().unwrap(),
    ]);
    let text = stdout(&output);
    assert!(output.status.success(), "{text}{}", stderr(&output));
    assert_eq!(stderr(&output), "");
    assert!(
        text.contains("ok      McpServer default/company-info: 1 policies, sha256:"),
        "{text}"
    );
    assert!(
        text.contains("pass    default/company-info-access: a public token sees only public information"),
        "{text}"
    );
    assert_eq!(
        text.matches("\npass    ").count() + usize::from(text.starts_with("pass")),
        11,
        "{text}"
    );
}

#[test]
fn policy_check_reports_problems_with_field_paths_on_stderr_and_exits_1() {
    let dir = temp_dir("check");
    let sample = std::fs::read_to_string(repo().join("config/samples/company-info.yaml")).unwrap();
    let broken = sample.replace(
        r#"scopes: ["public:*", "confidential:read"]"#,
        r#"scopes: ["pub*:read"]"#,
    );
    let file = dir.join("broken.yaml");
    std::fs::write(&file, broken).unwrap();
    let output = run(&["policy", "check", file.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(stdout(&output), "");
    assert_eq!(
        stderr(&output),
        "error: McpServer default/company-info is invalid:\n  McpAccessPolicy default/company-info-access: \
         spec.roles[1].scopes[0]: malformed wildcard: '*' must stand for a whole ':'-separated segment, e.g. \
         'docs:*'\n"
    );

    let failing = sample.replace(
        "      allowed: [get_public_info]\n      denied: [get_confidential_info]\n    - name: a token with both",
        "      allowed: [get_public_info, get_confidential_info]\n    - name: a token with both",
    );
    std::fs::write(&file, failing).unwrap();
    let output = run(&["policy", "check", file.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert_eq!(stdout(&output), "");
    assert_eq!(
        stderr(&output),
        "error: McpServer default/company-info fails its policy tests:\n  McpAccessPolicy \
         default/company-info-access: spec.tests[0]: test \"a public token sees only public information\" failed: \
         call to get_confidential_info is denied (missing scopes: confidential:read)\n"
    );
    std::fs::remove_dir_all(dir).ok();
}

/// The company-info sample with the third test case's `denied:` misspelt `deny:`.
fn misspelt_sample(dir: &Path) -> PathBuf {
    let sample = std::fs::read_to_string(repo().join("config/samples/company-info.yaml")).unwrap();
    let misspelt = sample.replace(
        "      denied: [get_public_info, get_confidential_info]",
        "      deny: [get_public_info, get_confidential_info]",
    );
    assert_ne!(misspelt, sample);
    let file = dir.join("misspelt.yaml");
    std::fs::write(&file, misspelt).unwrap();
    file
}

#[test]
fn unknown_fields_are_errors_in_every_policy_command() {
    // Before, `policy check` passed this file: the case checked nothing, and "pass" was printed.
    let dir = temp_dir("misspelt");
    let file = misspelt_sample(&dir);
    let file = file.to_str().unwrap();
    let expected = format!(
        "error: {file} (document 4): McpAccessPolicy default/company-info-access: unknown field(s): \
         spec.tests[2].deny\n"
    );
    for args in [
        vec!["policy", "check", file],
        vec!["policy", "compile", file],
        vec!["policy", "explain", file, "--tool", "get_public_info"],
    ] {
        let output = run(&args);
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        assert_eq!(stdout(&output), "", "{args:?}");
        assert_eq!(stderr(&output), expected, "{args:?}");
    }
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn policy_compile_writes_only_the_document_to_stdout() {
    let dir = temp_dir("streams");
    let file = misspelt_sample(&dir);
    // `policy compile x.yaml > policy.yaml`: the error goes to the terminal, not into the file.
    let output = run(&["policy", "compile", file.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty());
    assert!(stderr(&output).starts_with("error: "), "{}", stderr(&output));

    let output = run(&[
        "policy",
        "compile",
        repo().join("config/samples/company-info.yaml").to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stderr(&output), "");
    let document = palisade_crds::PolicyDocument::from_yaml(&stdout(&output)).expect("stdout is the PolicyDocument");
    assert_eq!(document.metadata.server.as_deref(), Some("default/company-info"));

    // Warnings go to standard error too, beside a document on standard output.
    let unbound = format!(
        "{SELECTOR_BOUND}---\napiVersion: palisade.dev/v1alpha1\nkind: McpAccessPolicy\nmetadata: {{name: other}}\n\
         spec: {{targetRefs: [{{name: nothing}}]}}\n"
    )
    .replace("allowed: [read_public]", "denied: [read_public]");
    let file = dir.join("unbound.yaml");
    std::fs::write(&file, unbound).unwrap();
    let output = run(&["policy", "compile", file.to_str().unwrap()]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).starts_with("apiVersion: palisade.dev/v1alpha1\nkind: PolicyDocument\n"));
    assert_eq!(
        stderr(&output),
        "warning: McpAccessPolicy default/other binds no McpServer among the inputs; its tests did not run\n"
    );

    // Two servers: one command compiles one.
    let server = SELECTOR_BOUND
        .split("---")
        .next()
        .unwrap()
        .replace("name: docs,", "name: more,");
    let two = dir.join("two.yaml");
    std::fs::write(&two, format!("{SELECTOR_BOUND}---{server}")).unwrap();
    let output = run(&["policy", "compile", two.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty());
    assert_eq!(
        stderr(&output),
        "error: expected exactly one McpServer among the files, found 2\n"
    );

    let missing = run(&["policy", "check", dir.join("absent.yaml").to_str().unwrap()]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(missing.stdout.is_empty());
    assert_eq!(
        stderr(&missing),
        format!(
            "error: cannot read {}: No such file or directory (os error 2)\n",
            dir.join("absent.yaml").display()
        )
    );
    std::fs::remove_dir_all(dir).ok();
}

/// An McpServer labelled `team: docs` and a policy that binds it by `targetSelector` only, with
/// one test case that fails (anonymous callers have no role).
const SELECTOR_BOUND: &str = r#"
apiVersion: palisade.dev/v1alpha1
kind: McpServer
metadata: {name: docs, labels: {team: docs}}
spec:
  documents: [{collection: public, inline: [{name: a.md, content: A}]}]
  tools: [{name: read_public, collection: public, action: readAll}]
  auth: {allowAnonymous: true}
---
apiVersion: palisade.dev/v1alpha1
kind: McpAccessPolicy
metadata: {name: by-label}
spec:
  targetSelector: {matchLabels: {team: docs}}
  roles: [{name: reader, scopes: ["public:read"]}]
  tools: [{match: read_public, requiredScopes: ["public:read"]}]
  tests:
    - name: anonymous callers read
      identity: {anonymous: true}
      allowed: [read_public]
"#;

#[test]
fn policy_check_binds_by_target_selector_like_the_operator() {
    // Before, only targetRefs names bound: "0 policies", the test never ran, exit 0.
    let dir = temp_dir("selector");
    let file = dir.join("selector.yaml");
    std::fs::write(&file, SELECTOR_BOUND).unwrap();
    let failed = "error: McpServer default/docs fails its policy tests:\n  McpAccessPolicy default/by-label: \
                  spec.tests[0]: test \"anonymous callers read\" failed: call to read_public is denied (missing \
                  scopes: public:read)\n";
    let output = run(&["policy", "check", file.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(stdout(&output), "");
    assert_eq!(stderr(&output), failed);

    // `policy compile` binds the same way: the selector-bound policy is compiled in, and its
    // failing test refuses the compile, with the same message.
    let output = run(&["policy", "compile", file.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(stdout(&output), "");
    assert_eq!(stderr(&output), failed);

    // Fixed, it passes; a selector that matches nothing, a cross-namespace reference and a policy
    // that binds no server are reported as warnings, as `palisade-operator render` does.
    let fixed = SELECTOR_BOUND.replace(
        "roles: [{name: reader, scopes: [\"public:read\"]}]",
        "roles: [{name: reader, scopes: [\"public:read\"]}]\n  bindings: [{role: reader, anonymous: true}]",
    );
    let others = r#"
---
apiVersion: palisade.dev/v1alpha1
kind: McpAccessPolicy
metadata: {name: elsewhere, namespace: team-b}
spec:
  targetRefs: [{name: docs, namespace: default}]
---
apiVersion: palisade.dev/v1alpha1
kind: McpAccessPolicy
metadata: {name: other-team}
spec:
  targetSelector: {matchLabels: {team: other}}
"#;
    std::fs::write(&file, format!("{fixed}{others}")).unwrap();
    let output = run(&["policy", "check", file.to_str().unwrap()]);
    let text = stdout(&output);
    assert!(output.status.success(), "{text}");
    let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with("ok ")).collect();
    assert_eq!(lines, ["pass    default/by-label: anonymous callers read"], "{text}");
    assert_eq!(
        stderr(&output).lines().collect::<Vec<_>>(),
        [
            "warning: McpAccessPolicy team-b/elsewhere: spec.targetRefs[0].namespace: refers to McpServer \
             default/docs in another namespace (CrossNamespaceRef); a policy binds only servers in its own namespace",
            "warning: McpAccessPolicy team-b/elsewhere binds no McpServer among the inputs; its tests did not run",
            "warning: McpAccessPolicy default/other-team binds no McpServer among the inputs; its tests did not run",
        ]
    );
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn policy_compile_takes_the_cluster_domain_for_the_default_audience() {
    let dir = temp_dir("domain");
    let file = dir.join("server.yaml");
    std::fs::write(&file, SELECTOR_BOUND).unwrap();
    let resource = |output: &Output| -> String {
        let document: serde_json::Value = yaml_serde::from_slice(&output.stdout).unwrap();
        document["authentication"]["resource"].as_str().unwrap().to_owned()
    };
    let fixed = SELECTOR_BOUND.replace("allowed: [read_public]", "denied: [read_public]");
    std::fs::write(&file, fixed).unwrap();
    let default = run(&["policy", "compile", file.to_str().unwrap()]);
    assert!(default.status.success(), "{}", stdout(&default));
    assert_eq!(resource(&default), "http://docs.default.svc.cluster.local/mcp");
    let flag = run(&[
        "policy",
        "compile",
        file.to_str().unwrap(),
        "--cluster-domain",
        "corp.internal",
    ]);
    assert_eq!(resource(&flag), "http://docs.default.svc.corp.internal/mcp");
    let env = Command::new(binary())
        .args(["policy", "compile", file.to_str().unwrap()])
        .env("PALISADE_CLUSTER_DOMAIN", "corp.internal")
        .output()
        .unwrap();
    assert_eq!(resource(&env), "http://docs.default.svc.corp.internal/mcp");

    let bad = run(&[
        "policy",
        "check",
        file.to_str().unwrap(),
        "--cluster-domain",
        "corp internal",
    ]);
    assert_eq!(bad.status.code(), Some(1));
    assert_eq!(stdout(&bad), "");
    assert_eq!(
        stderr(&bad),
        "error: McpServer default/docs is invalid:\n  the cluster domain \"corp internal\" is not a DNS subdomain \
         (e.g. cluster.local)\n"
    );
    std::fs::remove_dir_all(dir).ok();
}

fn compiled_policy(dir: &Path) -> PathBuf {
    let output = run(&[
        "policy",
        "compile",
        repo().join("config/samples/company-info.yaml").to_str().unwrap(),
        "--secrets-dir",
        dir.join("secrets").to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let policy = dir.join("policy.yaml");
    std::fs::write(&policy, &output.stdout).unwrap();
    let key = dir.join("secrets/company-info-jwt/hmac-key");
    std::fs::create_dir_all(key.parent().unwrap()).unwrap();
    std::fs::write(&key, "development-key\n").unwrap();
    policy
}

#[test]
fn policy_explain_says_what_granted_and_what_is_missing() {
    let dir = temp_dir("explain");
    let policy = compiled_policy(&dir);
    let policy = policy.to_str().unwrap();
    let denied = run(&[
        "policy",
        "explain",
        "--policy-file",
        policy,
        "--tool",
        "get_confidential_info",
        "--scope",
        "public:read",
    ]);
    assert_eq!(denied.status.code(), Some(1));
    assert_eq!(
        stdout(&denied),
        "get_confidential_info: deny (missing_scopes)\nroles held: none\n\
         rule: \"get_confidential_info\" requires [confidential:read] (default/company-info-access)\n\
         missing: confidential:read\n"
    );
    let allowed = run(&[
        "policy",
        "explain",
        "--policy-file",
        policy,
        "--tool",
        "get_confidential_info",
        "--issuer",
        "palisade-dev",
        "--group",
        "strategy-team",
    ]);
    assert!(allowed.status.success());
    assert_eq!(
        stdout(&allowed),
        "get_confidential_info: allow (granted)\nidentity source: issuer \"palisade-dev\"\nroles held: strategist\n\
         rule: \"get_confidential_info\" requires [confidential:read] (default/company-info-access)\n\
         granted: confidential:read (from role strategist)\n"
    );

    // With a token: its claims are read (not verified), and the output says so.
    let token = run(&[
        "token",
        "--policy-file",
        policy,
        "--sub",
        "alice",
        "--scope",
        "public:read",
    ]);
    assert!(token.status.success());
    let token = stdout(&token).trim().to_owned();
    let explained = run(&[
        "policy",
        "explain",
        "--policy-file",
        policy,
        "--tool",
        "get_public_info",
        "--token",
        &token,
    ]);
    let text = stdout(&explained);
    assert!(explained.status.success(), "{text}");
    assert!(
        text.starts_with("get_public_info: allow (granted)\nnote: the token's signature was not verified\n"),
        "{text}"
    );
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn policy_explain_takes_the_callers_identity_source() {
    let sample = repo().join("config/samples/company-info.yaml");
    let sample = sample.to_str().unwrap();
    let explain = |extra: &[&str]| {
        let mut args = vec!["policy", "explain", sample, "--tool", "get_confidential_info"];
        args.extend_from_slice(extra);
        run(&args)
    };
    // Two issuers: a group alone does not say whose it is.
    let unqualified = explain(&["--group", "strategy-team"]);
    assert_eq!(unqualified.status.code(), Some(1));
    assert!(unqualified.stdout.is_empty());
    assert_eq!(
        stderr(&unqualified),
        "error: the caller's source: the server accepts identities from 2 sources (issuer \
         \"https://accounts.google.com\", issuer \"palisade-dev\"), so subjects and groups must say which one \
         they belong to: set --issuer <one of the server's issuers>, or --source api-keys (or client-certificates)\n"
    );
    // The same group from Google is another group: it grants nothing.
    let google = explain(&["--issuer", "https://accounts.google.com", "--group", "strategy-team"]);
    assert_eq!(google.status.code(), Some(1));
    assert_eq!(
        stdout(&google),
        "get_confidential_info: deny (missing_scopes)\nidentity source: issuer \"https://accounts.google.com\"\n\
         roles held: none\nrule: \"get_confidential_info\" requires [confidential:read] (default/company-info-access)\n\
         missing: confidential:read\n"
    );
    // A source the server does not have is an error.
    let keys = explain(&["--source", "api-keys", "--subject", "alice"]);
    assert_eq!(keys.status.code(), Some(1));
    assert_eq!(
        stderr(&keys),
        "error: the caller's source: the server has no API-key table, so no caller comes from API keys\n"
    );
}

#[test]
fn policy_explain_reads_manifests_as_policy_compile_does() {
    let sample = repo().join("config/samples/company-info.yaml");
    let sample = sample.to_str().unwrap();
    let denied = run(&[
        "policy",
        "explain",
        sample,
        "--tool",
        "get_confidential_info",
        "--scope",
        "public:read",
    ]);
    assert_eq!(denied.status.code(), Some(1));
    assert_eq!(stderr(&denied), "");
    assert_eq!(
        stdout(&denied),
        "get_confidential_info: deny (missing_scopes)\nroles held: none\n\
         rule: \"get_confidential_info\" requires [confidential:read] (default/company-info-access)\n\
         missing: confidential:read\n"
    );
    let allowed = run(&[
        "policy",
        "explain",
        sample,
        "-n",
        "team-a",
        "--tool",
        "get_confidential_info",
        "--issuer",
        "palisade-dev",
        "--group",
        "strategy-team",
    ]);
    assert!(allowed.status.success(), "{}", stderr(&allowed));
    assert_eq!(stderr(&allowed), "");
    assert_eq!(
        stdout(&allowed),
        "get_confidential_info: allow (granted)\nidentity source: issuer \"palisade-dev\"\nroles held: strategist\n\
         rule: \"get_confidential_info\" requires [confidential:read] (team-a/company-info-access)\n\
         granted: confidential:read (from role strategist)\n"
    );

    // The same answer as from the compiled PolicyDocument; a PALISADE_POLICY_FILE in the
    // environment does not stand in the way of manifests.
    let dir = temp_dir("explain-manifests");
    let policy = compiled_policy(&dir);
    let from_document = run(&[
        "policy",
        "explain",
        "--policy-file",
        policy.to_str().unwrap(),
        "--tool",
        "get_confidential_info",
        "--scope",
        "public:read",
    ]);
    assert_eq!(stdout(&from_document), stdout(&denied));
    let with_env = Command::new(binary())
        .args([
            "policy",
            "explain",
            sample,
            "--tool",
            "get_confidential_info",
            "--scope",
            "public:read",
        ])
        .env("PALISADE_POLICY_FILE", "/nonexistent/policy.yaml")
        .output()
        .unwrap();
    assert_eq!(stdout(&with_env), stdout(&denied));

    // Both a file and --policy-file: which one is meant is unclear, so it is a usage error.
    let both = run(&[
        "policy",
        "explain",
        sample,
        "--policy-file",
        policy.to_str().unwrap(),
        "--tool",
        "x",
    ]);
    assert_eq!(both.status.code(), Some(2));
    assert!(both.stdout.is_empty());
    assert!(
        stderr(&both).starts_with("error: the argument '[FILES]...' cannot be used with '--policy-file <POLICY_FILE>'"),
        "{}",
        stderr(&both)
    );
    let absent = run(&[
        "policy",
        "explain",
        "--policy-file",
        dir.join("absent.yaml").to_str().unwrap(),
        "--tool",
        "x",
    ]);
    assert_eq!(absent.status.code(), Some(1));
    assert!(absent.stdout.is_empty());
    assert_eq!(
        stderr(&absent),
        format!(
            "error: cannot read {}: No such file or directory (os error 2)\n",
            dir.join("absent.yaml").display()
        )
    );
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn token_mints_expired_tokens_and_explains_bad_arguments() {
    let dir = temp_dir("token");
    let policy = compiled_policy(&dir);
    let policy = policy.to_str().unwrap();
    let expired = run(&[
        "token",
        "--policy-file",
        policy,
        "--sub",
        "charlie",
        "--scope",
        "public:read",
        "--exp",
        "-1h",
    ]);
    assert!(expired.status.success());
    let token = stdout(&expired);
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            token.trim().split('.').nth(1).unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    assert!(claims["exp"].as_i64().unwrap() < claims["iat"].as_i64().unwrap() + 1);
    assert_eq!(claims["sub"], "charlie");
    assert_eq!(claims["scope"], "public:read");

    let bad = run(&["token", "--policy-file", policy, "--exp", "soon"]);
    assert_eq!(bad.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&bad.stderr),
        "error: \"soon\" is not a lifetime like 3600, 1h, 30m or -1h\n"
    );
    let unknown = run(&["token", "--policy-file", policy, "--iss", "nobody"]);
    assert_eq!(unknown.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&unknown.stderr),
        "error: the policy has no issuer \"nobody\"\n"
    );
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn policy_explain_decides_an_upstream_tool_for_a_proxys_policy() {
    let dir = temp_dir("explain-proxy");
    let policy = dir.join("proxy.yaml");
    std::fs::write(
        &policy,
        r#"apiVersion: palisade.dev/v1alpha1
kind: PolicyDocument
metadata: {server: team-a/files}
authentication: {resource: "http://files.team-a.svc.cluster.local/mcp", allowAnonymous: true}
rules:
- {match: "read_*", requiredScopes: ["files:read"]}
- {match: write_file, requiredScopes: ["files:write"]}
roles: [{name: reader, scopes: ["files:read"]}]
bindings: [{role: reader, anonymous: true}]
"#,
    )
    .unwrap();
    let policy = policy.to_str().unwrap();
    let explain = |tool: &str| {
        run(&[
            "policy",
            "explain",
            "--policy-file",
            policy,
            "--tool",
            tool,
            "--anonymous",
        ])
    };
    let allowed = explain("read_text_file");
    assert!(allowed.status.success(), "{}", stderr(&allowed));
    assert_eq!(
        stdout(&allowed),
        "read_text_file: allow (granted)\n\
         note: decided as a tool of the upstream (the policy defines no tools of its own)\n\
         roles held: reader\n\
         rule: \"read_*\" requires [files:read]\n\
         granted: files:read (from role reader)\n"
    );
    let denied = explain("write_file");
    assert_eq!(denied.status.code(), Some(1));
    assert!(
        stdout(&denied).ends_with("missing: files:write\n"),
        "{}",
        stdout(&denied)
    );
    let unruled = explain("delete_file");
    assert_eq!(unruled.status.code(), Some(1));
    assert!(stdout(&unruled).starts_with("delete_file: deny (no_matching_rule)\n"));
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn policy_explain_decides_a_call_with_its_arguments() {
    let proxy = repo().join("config/samples/filesystem-proxy.yaml");
    let proxy = proxy.to_str().unwrap();
    let reader = ["--issuer", "https://sso.example.com", "--group", "team-d"];
    let explain = |args: &str| {
        let mut command = vec!["policy", "explain", proxy, "--tool", "read_text_file", "--args", args];
        command.extend(reader);
        run(&command)
    };
    let allowed = explain(r#"{"path": "/data/public/handbook.md"}"#);
    assert!(allowed.status.success(), "{}", stderr(&allowed));
    assert!(
        stdout(&allowed).starts_with("read_text_file: allow (granted)\n"),
        "{}",
        stdout(&allowed)
    );
    assert!(
        stdout(&allowed).ends_with(
            "rule: \"read_*\" requires [files:read] (default/files-access)\n\
             granted: files:read (from role reader)\n\
             arguments: accepted by the rule\n"
        ),
        "{}",
        stdout(&allowed)
    );

    // A path that climbs out of /data/public: the argument and the constraint are named, never
    // the value, and the rule that would allow it with more scopes is shown.
    let denied = explain(r#"{"path": "/data/public/%2e%2e/private/salaries.csv"}"#);
    assert_eq!(denied.status.code(), Some(1), "{}", stderr(&denied));
    let text = stdout(&denied);
    assert!(text.starts_with("read_text_file: deny (argument_denied)\n"), "{text}");
    assert!(
        text.ends_with(
            "arguments: argument \"path\" matches none of the allowed globs (constraint glob)\n\
             step-up: rule \"read_*\" would allow these arguments with [files:write]\n"
        ),
        "{text}"
    );
    assert!(!text.contains("salaries"), "the value is not echoed: {text}");

    // Not an object: a clear error, no decision.
    let bad = explain("[\"/data/public/a.md\"]");
    assert_eq!(bad.status.code(), Some(1));
    assert_eq!(stdout(&bad), "");
    assert_eq!(
        stderr(&bad),
        "error: --args must be a JSON object of the call's arguments, e.g. '{\"path\": \"/data/a.txt\"}': found an array\n"
    );
    // Only for tools.
    let prompt = run(&["policy", "explain", proxy, "--prompt", "p", "--args", "{}"]);
    assert_eq!(prompt.status.code(), Some(2), "{}", stderr(&prompt));
}

#[test]
fn policy_explain_shows_the_broader_scope_that_implies_a_required_one() {
    let proxy = repo().join("config/samples/filesystem-proxy.yaml");
    let proxy = proxy.to_str().unwrap();
    let broad = run(&["policy", "explain", proxy, "--tool", "write_file", "--scope", "files"]);
    assert!(broad.status.success(), "{}", stderr(&broad));
    assert!(
        stdout(&broad).ends_with("granted: files:write (from files in the token)\n"),
        "{}",
        stdout(&broad)
    );
    // Implications go from broad to narrow only.
    let narrow = run(&[
        "policy",
        "explain",
        proxy,
        "--tool",
        "write_file",
        "--scope",
        "files:read",
    ]);
    assert_eq!(narrow.status.code(), Some(1));
    assert!(
        stdout(&narrow).ends_with("missing: files:write\n"),
        "{}",
        stdout(&narrow)
    );
}

#[test]
fn policy_explain_decides_a_proxy_s_prompts_and_resources_by_their_rules() {
    let proxy = repo().join("config/samples/filesystem-proxy.yaml");
    let proxy = proxy.to_str().unwrap();
    let reader = ["--issuer", "https://sso.example.com", "--group", "team-d"];
    let mut args = vec![
        "policy",
        "explain",
        proxy,
        "--resource",
        "file:///data/public/handbook.md",
    ];
    args.extend_from_slice(&reader);
    let allowed = run(&args);
    assert_eq!(allowed.status.code(), Some(0), "{}", stderr(&allowed));
    let text = stdout(&allowed);
    assert!(
        text.starts_with(
            "resource file:///data/public/handbook.md: allow (granted)\nnote: decided as a resource of the upstream"
        ),
        "{text}"
    );
    assert!(
        text.contains("rule: \"file:///data/public/*\" requires [files:read]"),
        "{text}"
    );
    // No prompt rule: denied, whatever the tool rules say.
    let mut args = vec!["policy", "explain", proxy, "--prompt", "read_everything"];
    args.extend_from_slice(&reader);
    let denied = run(&args);
    assert_eq!(denied.status.code(), Some(1));
    assert!(
        stdout(&denied).starts_with("prompt read_everything: deny (no_matching_rule)\n"),
        "{}",
        stdout(&denied)
    );
    // A document server has no prompts or resources to decide this way.
    let documents = repo().join("config/samples/company-info.yaml");
    let refused = run(&[
        "policy",
        "explain",
        documents.to_str().unwrap(),
        "--prompt",
        "p",
        "--anonymous",
    ]);
    assert_eq!(refused.status.code(), Some(1));
    assert_eq!(
        stderr(&refused),
        "error: prompts and resources are decided only on a server in front of an upstream; this policy serves documents\n"
    );
    // One target at a time.
    let both = run(&["policy", "explain", proxy, "--tool", "t", "--prompt", "p"]);
    assert_eq!(both.status.code(), Some(2), "{}", stderr(&both));
}

#[test]
fn policy_explain_takes_the_claims_argument_rules_name() {
    let dir = temp_dir("explain-claims");
    let policy = dir.join("proxy.yaml");
    std::fs::write(
        &policy,
        r#"apiVersion: palisade.dev/v1alpha1
kind: PolicyDocument
metadata: {server: team-a/files}
authentication: {resource: "http://files.team-a.svc.cluster.local/mcp", allowAnonymous: true}
rules:
- {match: read_file, requiredScopes: [], arguments: {path: {glob: ["/data/{claims.team}/**"]}}}
"#,
    )
    .unwrap();
    let policy = policy.to_str().unwrap();
    let explain = |extra: &[&str]| {
        let mut args = vec![
            "policy",
            "explain",
            "--policy-file",
            policy,
            "--tool",
            "read_file",
            "--args",
            r#"{"path": "/data/ops/runbook.md"}"#,
        ];
        args.extend(extra);
        run(&args)
    };
    let ops = explain(&["--claim", "team=ops"]);
    assert!(ops.status.success(), "{}{}", stdout(&ops), stderr(&ops));
    let other = explain(&["--claim", "team=finance", "--claim", "team=hr"]);
    assert_eq!(other.status.code(), Some(1));
    assert!(
        stdout(&other).contains("arguments: argument \"path\" matches none of the allowed globs (constraint glob)\n"),
        "{}",
        stdout(&other)
    );
    let bad = explain(&["--claim", "team"]);
    assert_eq!(bad.status.code(), Some(1));
    assert_eq!(
        stderr(&bad),
        "error: --claim \"team\": expected NAME=VALUE, NAME of 1 to 128 ASCII letters, digits and _-.:\n"
    );
    std::fs::remove_dir_all(dir).ok();
}
