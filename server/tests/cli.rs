//! The command line: `token`, `policy check`, `policy compile` and `policy explain`, run as the
//! real binary, with the exact output and exit status a person sees.

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
    assert!(output.status.success(), "{text}");
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
fn policy_check_reports_problems_with_field_paths_and_exits_1() {
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
    assert_eq!(
        stdout(&output),
        "invalid McpAccessPolicy default/company-info-access: spec.roles[1].scopes[0]: malformed wildcard: \
         '*' must stand for a whole ':'-separated segment, e.g. 'docs:*'\n"
    );

    let failing = sample.replace(
        "denied: [get_confidential_info]\n    - name: a token with both",
        "allowed: [get_confidential_info]\n    - name: a token with both",
    );
    std::fs::write(&file, failing).unwrap();
    let output = run(&["policy", "check", file.to_str().unwrap()]);
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(
        text.contains(
            "FAIL    default/company-info-access: a public token sees only public information: call to \
             get_confidential_info is denied (missing scopes: confidential:read)"
        ),
        "{text}"
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
        "--group",
        "strategy-team",
    ]);
    assert!(allowed.status.success());
    assert_eq!(
        stdout(&allowed),
        "get_confidential_info: allow (granted)\nroles held: strategist\n\
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
