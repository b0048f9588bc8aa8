//! Argument-level authorization in proxy mode, in front of the real
//! `@modelcontextprotocol/server-filesystem` over stdio.
//!
//! The tree is `ROOT/public/a.txt`, `ROOT/public/sub/b.txt`, `ROOT/secret/s.txt` (`TOPSECRET`)
//! and a symlink `ROOT/public/link -> ../secret`. The policy lets `files:read` call
//! `read_text_file` only with a `path` matching the glob `ROOT/public/**`.
//!
//! Two layers keep the secret, and the test shows each doing its part:
//!
//! - **Palisade's argument rules** judge the *text* of the argument, normalised (`..`, `//`,
//!   `./`, percent-encoding, `\`): a caller holding `files:read` reads `ROOT/public/a.txt` under
//!   several spellings, and every traversal, encoding, case or prefix trick, a relative path, a
//!   missing `path` and a `path` that is not a string is answered 403 `ARGUMENT_DENIED` (naming the
//!   argument and the constraint) before the upstream sees it, audited `argument_denied` without
//!   the value.
//! - **The upstream's own allowed directories**: server-filesystem runs with only `ROOT/public`
//!   allowed. Argument rules cannot see symlinks, so `ROOT/public/link/s.txt` passes Palisade
//!   (its text is under `ROOT/public`); server-filesystem resolves the link and refuses it.
//!
//! With a second rule for `read_text_file` that requires `files:admin` and constrains nothing, a
//! `files:read` caller outside `ROOT/public` is asked to step up (`insufficient_scope`,
//! `scope="files:admin"`), and a `files:admin` caller is let through Palisade, where the upstream's
//! allowed directories still refuse what lies outside `ROOT/public`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use palisade_e2e::{Fixture, Server, TempDir, proxy_fixture};
use serde_json::{Value, json};

const TOOL: &str = "read_text_file";
const PUBLIC_A: &str = "public file a";
const SECRET: &str = "TOPSECRET";

/// The files the upstream serves: `root` (canonical) holds `public/` and `secret/`.
struct Tree {
    _dir: TempDir,
    root: String,
}

impl Tree {
    fn new() -> Self {
        let dir = TempDir::new("argument-rules");
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join("public/sub")).unwrap();
        std::fs::create_dir_all(root.join("secret")).unwrap();
        std::fs::write(root.join("public/a.txt"), PUBLIC_A).unwrap();
        std::fs::write(root.join("public/sub/b.txt"), "public file b").unwrap();
        std::fs::write(root.join("secret/s.txt"), SECRET).unwrap();
        std::os::unix::fs::symlink("../secret", root.join("public/link")).unwrap();
        Self {
            _dir: dir,
            root: root.display().to_string(),
        }
    }

    /// `ROOT` followed by `rest` (which starts with a separator).
    fn at(&self, rest: &str) -> String {
        format!("{}{rest}", self.root)
    }

    /// The rule letting `files:read` read below `ROOT/public`.
    fn public_rule(&self) -> String {
        format!(
            "- {{match: {TOOL}, requiredScopes: [files:read], arguments: {{path: {{glob: ['{}/public/**']}}}}}}",
            self.root
        )
    }

    /// Palisade with `rules`, in front of server-filesystem allowing only `ROOT/public`.
    fn serve(&self, rules: &str) -> (Fixture, Server) {
        let fixture = proxy_fixture(rules);
        let script = palisade_e2e::node_modules().join("@modelcontextprotocol/server-filesystem/dist/index.js");
        let command = [
            palisade_e2e::node22().display().to_string(),
            script.display().to_string(),
            self.at("/public"),
        ];
        let mut extra = vec!["--"];
        extra.extend(command.iter().map(String::as_str));
        let server = Server::start(&fixture, &extra);
        (fixture, server)
    }
}

/// An answer of the proxy, with the request id its audit event carries.
struct Answer {
    status: u16,
    challenge: String,
    body: Value,
    request_id: String,
}

impl Answer {
    fn text(&self) -> String {
        self.body["result"]["content"][0]["text"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

fn rpc(server: &Server, token: &str, method: &str, params: Value) -> Answer {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let request_id = format!("argument-rules-{}", NEXT.fetch_add(1, Ordering::Relaxed));
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string();
    let response = palisade_e2e::mcp_request(server, token, &body)
        .header("x-request-id", &request_id)
        .send()
        .expect("an answer");
    let status = response.status().as_u16();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let text = response.text().expect("a body");
    assert!(!text.contains(SECRET), "the secret was answered: {text}");
    Answer {
        status,
        challenge,
        body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
        request_id,
    }
}

/// Whether each of `instances` is valid against `schema`, by Python's `jsonschema` (Draft 2020-12,
/// the schema itself checked first), every `pattern` compiled as ECMA-262 with the `u` flag.
fn json_schema_verdicts(schema: &Value, instances: &[Value]) -> Vec<bool> {
    const SCRIPT: &str = r#"
import json, sys
import jsonschema, regress
schema = json.loads(sys.argv[1])
jsonschema.Draft202012Validator.check_schema(schema)
def patterns(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "pattern":
                yield value
            else:
                yield from patterns(value)
    elif isinstance(node, list):
        for value in node:
            yield from patterns(value)
for pattern in patterns(schema):
    regress.Regex(pattern, "u")
validator = jsonschema.Draft202012Validator(schema)
print(json.dumps([validator.is_valid(i) for i in json.loads(sys.argv[2])]))
"#;
    let output = std::process::Command::new(palisade_e2e::python())
        .args([
            "-c",
            SCRIPT,
            &schema.to_string(),
            &Value::from(instances.to_vec()).to_string(),
        ])
        .output()
        .expect("python runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("a JSON list of verdicts")
}

fn read(server: &Server, token: &str, arguments: Value) -> Answer {
    rpc(
        server,
        token,
        "tools/call",
        json!({"name": TOOL, "arguments": arguments}),
    )
}

/// The authorization audit event of `request_id`, parsed and as written.
fn audit(server: &Server, request_id: &str) -> (Value, String) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = std::fs::read_to_string(&server.audit_log).unwrap_or_default();
        let found = log.lines().find_map(|line| {
            let event: Value = serde_json::from_str(line).ok()?;
            (event["request_id"] == request_id && event["kind"] == "authorization").then(|| (event, line.to_owned()))
        });
        if let Some(found) = found {
            return found;
        }
        assert!(Instant::now() < deadline, "no audit event for {request_id}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Asserts a 403 `ARGUMENT_DENIED` for `argument` and `constraint`, audited `argument_denied`
/// without the value `path` (when one was sent).
fn assert_argument_denied(server: &Server, answer: &Answer, constraint: &str, path: Option<&str>) {
    let what = format!("{path:?}: {}", answer.body);
    assert_eq!(answer.status, 403, "{what}");
    let data = &answer.body["error"]["data"];
    assert_eq!(data["code"], "ARGUMENT_DENIED", "{what}");
    assert_eq!(data["argument"], "path", "{what}");
    assert_eq!(data["constraint"], constraint, "{what}");
    let (event, line) = audit(server, &answer.request_id);
    assert_eq!(event["decision"], "deny", "{line}");
    assert_eq!(event["reason"], "argument_denied", "{line}");
    assert_eq!(event["argument"], "path", "{line}");
    assert_eq!(event["constraint"], constraint, "{line}");
    assert!(event.get("upstream").is_none(), "it reached the upstream: {line}");
    if let Some(path) = path {
        let escaped = Value::from(path).to_string();
        assert!(
            !line.contains(path) && !line.contains(escaped.trim_matches('"')),
            "the audit line holds the value: {line}"
        );
        assert!(
            !answer.body.to_string().contains(escaped.trim_matches('"')),
            "the answer echoes the value: {what}"
        );
    }
}

#[test]
fn path_globs_keep_a_read_scope_inside_public_and_the_upstream_refuses_symlink_escapes() {
    let tree = Tree::new();
    let (fixture, server) = tree.serve(&tree.public_rule());
    let reader = fixture.token("alice", &["files:read"]);

    // The tool is listed to a caller holding a rule for it.
    let listed = rpc(&server, &reader, "tools/list", json!({}));
    assert_eq!(listed.status, 200, "{}", listed.body);
    let names: Vec<&str> = listed.body["result"]["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(names, [TOOL], "{}", listed.body);

    // The listed input schema is narrowed to what this caller may send, and says so in `_meta`.
    // A third-party validator reads it as JSON Schema 2020-12 (Python `jsonschema`, its patterns
    // compiled as ECMA-262 with the `u` flag by `regress`): a public path in, the others out.
    let tool = &listed.body["result"]["tools"][0];
    assert_eq!(
        tool["_meta"]["palisade.dev/argumentRules"],
        json!({"narrowed": true, "unstated": []}),
        "{tool}"
    );
    let verdicts = json_schema_verdicts(
        &tool["inputSchema"],
        &[
            json!({"path": tree.at("/public/a.txt")}),
            json!({"path": tree.at("/public/sub/b.txt")}),
            json!({"path": tree.at("/public/../secret/s.txt")}),
            json!({"path": tree.at("/secret/s.txt")}),
            json!({}),
        ],
    );
    assert_eq!(verdicts, [true, true, false, false, false], "{}", tool["inputSchema"]);

    // Paths below ROOT/public, however spelled, are served.
    for (path, content) in [
        (tree.at("/public/a.txt"), PUBLIC_A),
        (tree.at("/public/sub/../a.txt"), PUBLIC_A),
        (tree.at("//public/./a.txt"), PUBLIC_A),
        (tree.at("/public/sub/b.txt"), "public file b"),
    ] {
        let answer = read(&server, &reader, json!({"path": path}));
        assert_eq!(answer.status, 200, "{path}: {}", answer.body);
        assert_ne!(answer.body["result"]["isError"], true, "{path}: {}", answer.body);
        assert_eq!(answer.text(), content, "{path}: {}", answer.body);
        let (event, line) = audit(&server, &answer.request_id);
        assert_eq!(
            (&event["decision"], &event["upstream"]),
            (&json!("allow"), &json!("ok")),
            "{line}"
        );
    }

    // Everything else is refused by Palisade before the upstream, naming the glob.
    for path in [
        tree.at("/public/../secret/s.txt"),
        tree.at("/public/%2e%2e/secret/s.txt"),
        tree.at("/public/..%2fsecret/s.txt"),
        tree.at("/public/..\\secret/s.txt"),
        tree.at("/secret/s.txt"),
        "/etc/passwd".to_owned(),
        tree.at("/PUBLIC/a.txt"),
        tree.at("/publicity/x"),
        "public/../secret/s.txt".to_owned(),
    ] {
        let answer = read(&server, &reader, json!({"path": path}));
        assert_argument_denied(&server, &answer, "glob", Some(&path));
    }

    // A constrained argument must be there, and be a string.
    let answer = read(&server, &reader, json!({}));
    assert_argument_denied(&server, &answer, "required", None);
    let answer = read(&server, &reader, json!({"path": 42}));
    assert_argument_denied(&server, &answer, "type", None);

    // Argument rules judge the text of an argument and cannot see symlinks: `public/link/s.txt`
    // is below ROOT/public as written, so Palisade forwards it. server-filesystem resolves the
    // link to ROOT/secret/s.txt, outside its only allowed directory ROOT/public, and refuses it.
    // (Had the upstream been allowed all of ROOT, it would have served the secret.)
    let through_link = tree.at("/public/link/s.txt");
    let answer = read(&server, &reader, json!({"path": through_link}));
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["result"]["isError"], true, "{}", answer.body);
    assert!(
        answer
            .text()
            .contains("Access denied - symlink target outside allowed directories"),
        "{}",
        answer.body
    );
    let (event, line) = audit(&server, &answer.request_id);
    assert_eq!(event["decision"], "allow", "{line}");

    let audit_log = std::fs::read_to_string(&server.audit_log).unwrap();
    assert!(!audit_log.contains(SECRET));

    // mcp_tool_calls_total counts the decisions by tool and reason; a name the upstream does not
    // offer gets no series of its own (a caller could make up names without end).
    let calls = |decision: &str, reason: &str| {
        server.metric(
            "mcp_tool_calls_total",
            &[("tool", TOOL), ("decision", decision), ("reason", reason)],
        )
    };
    assert_eq!(
        calls("allow", "granted"),
        5.0,
        "four spellings of public paths and the symlink"
    );
    assert_eq!(
        calls("deny", "argument_denied"),
        11.0,
        "nine paths, a missing one, a number"
    );
    let answer = rpc(
        &server,
        &reader,
        "tools/call",
        json!({"name": "made_up_tool", "arguments": {}}),
    );
    assert_eq!(answer.body["error"]["code"], -32602, "{}", answer.body);
    assert_eq!(server.metric("mcp_tool_calls_total", &[("tool", "made_up_tool")]), 0.0);
    assert_eq!(
        server.metric("mcp_tool_call_duration_seconds_count", &[("tool", TOOL)]),
        5.0
    );
}

#[test]
fn a_broader_rule_for_the_tool_asks_a_read_scope_to_step_up_and_lets_an_admin_through() {
    let tree = Tree::new();
    let rules = format!(
        "{}\n- {{match: {TOOL}, requiredScopes: [files:admin]}}",
        tree.public_rule()
    );
    let (fixture, server) = tree.serve(&rules);
    let reader = fixture.token("alice", &["files:read"]);
    let admin = fixture.token("root", &["files:admin"]);
    let secret = tree.at("/secret/s.txt");

    // The admin's rule constrains nothing: its list shows the upstream's own schema, unmarked.
    let listed = rpc(&server, &admin, "tools/list", json!({}));
    let tool = &listed.body["result"]["tools"][0];
    assert_eq!(tool["name"], TOOL, "{}", listed.body);
    assert!(tool["_meta"].get("palisade.dev/argumentRules").is_none(), "{tool}");
    assert!(
        tool["inputSchema"]["properties"]["path"].get("allOf").is_none(),
        "{tool}"
    );

    let answer = read(&server, &reader, json!({"path": tree.at("/public/a.txt")}));
    assert_eq!(
        (answer.status, answer.text()),
        (200, PUBLIC_A.to_owned()),
        "{}",
        answer.body
    );

    // Outside the reader's glob, but allowed by the admin rule: step up to its scopes.
    let answer = read(&server, &reader, json!({"path": secret}));
    assert_eq!(answer.status, 403, "{}", answer.body);
    assert_eq!(
        answer.body["error"]["data"]["code"], "INSUFFICIENT_SCOPE",
        "{}",
        answer.body
    );
    assert!(
        answer.challenge.contains(r#"error="insufficient_scope""#)
            && answer.challenge.contains(r#"scope="files:admin""#),
        "{}",
        answer.challenge
    );
    let (event, line) = audit(&server, &answer.request_id);
    assert_eq!(
        (&event["decision"], &event["reason"]),
        (&json!("deny"), &json!("argument_denied")),
        "{line}"
    );
    assert_eq!(event["argument"], "path", "{line}");
    assert!(!line.contains(&secret), "{line}");

    // The admin passes Palisade; the upstream, allowing only ROOT/public, refuses the secret
    // and serves public files.
    let answer = read(&server, &admin, json!({"path": secret}));
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["result"]["isError"], true, "{}", answer.body);
    assert!(
        answer
            .text()
            .contains("Access denied - path outside allowed directories"),
        "{}",
        answer.body
    );
    let (event, line) = audit(&server, &answer.request_id);
    assert_eq!(
        (&event["decision"], &event["upstream"]),
        (&json!("allow"), &json!("ok")),
        "{line}"
    );
    let answer = read(&server, &admin, json!({"path": tree.at("/public/sub/b.txt")}));
    assert_eq!(
        (answer.status, answer.text()),
        (200, "public file b".to_owned()),
        "{}",
        answer.body
    );
}

/// A token claim as a caller value: the `team` claim names the directory a reader may read.
#[test]
fn a_token_claim_names_the_directory_a_reader_may_read() {
    let tree = Tree::new();
    let rules = format!(
        "- {{match: {TOOL}, requiredScopes: [files:read], arguments: {{path: {{glob: ['{}/{{claims.team}}/**']}}}}}}",
        tree.root
    );
    let (fixture, server) = tree.serve(&rules);
    let with_team = |team: Value| {
        let mut claims = fixture.claims("alice", &["files:read"], 3600);
        claims["team"] = team;
        fixture.sign(&claims)
    };
    let public_a = json!({"path": tree.at("/public/a.txt")});

    // The claim's value is substituted: team `public` reads ROOT/public, and its list says so.
    let public = with_team(json!("public"));
    let answer = read(&server, &public, public_a.clone());
    assert_eq!(
        (answer.status, answer.text()),
        (200, PUBLIC_A.to_owned()),
        "{}",
        answer.body
    );
    let listed = rpc(&server, &public, "tools/list", json!({}));
    let tool = &listed.body["result"]["tools"][0];
    assert_eq!(
        json_schema_verdicts(
            &tool["inputSchema"],
            &[public_a.clone(), json!({"path": tree.at("/secret/s.txt")})]
        ),
        [true, false],
        "{tool}"
    );
    // Any one string of an array claim.
    let answer = read(&server, &with_team(json!(["ops", "public"])), public_a.clone());
    assert_eq!(answer.status, 200, "{}", answer.body);

    // Another team, a value that is not one safe segment, no claim: denied before the upstream.
    for token in [
        with_team(json!("secret")),
        with_team(json!("public/../secret")),
        with_team(json!(7)),
        fixture.token("alice", &["files:read"]),
    ] {
        let answer = read(&server, &token, public_a.clone());
        assert_argument_denied(&server, &answer, "glob", Some(public_a["path"].as_str().unwrap()));
    }
    // Without the claim no call could be allowed: the tool is not listed.
    let listed = rpc(
        &server,
        &fixture.token("alice", &["files:read"]),
        "tools/list",
        json!({}),
    );
    assert_eq!(listed.body["result"]["tools"], json!([]), "{}", listed.body);
}
