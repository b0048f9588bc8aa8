//! Hot reload under load: the policy file is replaced (written to a temporary file and renamed
//! over the old one, as a ConfigMap update swaps its files) while client threads keep calling
//! `get_confidential_info` with a token that carries only `confidential:read`.
//!
//! The sequence, each step waited for through `/ready`:
//! 1. the sample policy: the call is allowed (hash H1);
//! 2. a valid policy whose rule requires `confidential:admin`: denied (hash H2);
//! 3. broken YAML: refused, logged (`reload refused`, with the error) and counted
//!    (`palisade_policy_reloads_total{result="failure"}`); `/ready` still says ready with H2
//!    and nothing more, and the call stays denied;
//! 4. well-formed YAML that `Policy::new` rejects (a binding to an undefined role, on top of the
//!    allowing policy): refused and reported the same way; still denied under H2;
//! 5. a valid allowing policy (the sample plus one more role, hash H3): allowed again.
//!
//! Every request carries its own `X-Request-Id`, so each response is matched to its audit event:
//! the test checks that not one request failed (every answer is 200 or 403, never 5xx or a
//! connection error), that each answer agrees with the decision and policy hash of its audit
//! event, and that every client thread saw the hashes in order H1 → H2 → H3.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use palisade_e2e::{Fixture, Server, http_client};
use serde_json::{Value, json};

const THREADS: usize = 4;
/// Upper bound of requests per thread (the run is also bounded in time).
const MAX_PER_THREAD: usize = 1500;
/// Least time between two requests of one thread: about 4 × 200 requests per second.
const PACE: Duration = Duration::from_millis(5);
/// Hard bound on the whole load phase.
const LOAD_LIMIT: Duration = Duration::from_secs(20);
const TOOL: &str = "get_confidential_info";

/// The answer to one request of the load.
#[derive(Debug, Clone)]
struct Outcome {
    thread: usize,
    request_id: String,
    sent: Instant,
    done: Instant,
    /// HTTP status, or the transport error.
    result: Result<u16, String>,
    /// For 200: whether the body is a successful result with the confidential text.
    served_document: bool,
}

/// Replaces the policy file atomically: write a temporary file next to it, then rename.
fn swap_policy(fixture: &Fixture, text: &str) {
    let temporary = fixture.policy_file.with_extension("yaml.tmp");
    std::fs::write(&temporary, text).expect("write temporary policy");
    std::fs::rename(&temporary, &fixture.policy_file).expect("rename policy into place");
}

fn ready(server: &Server) -> (u16, Value) {
    let response = http_client()
        .get(format!("{}/ready", server.base_url))
        .send()
        .expect("GET /ready");
    let status = response.status().as_u16();
    (status, response.json().expect("/ready JSON"))
}

/// Polls `/ready` until `done` holds (at most 10 s); returns that answer.
fn wait_for(server: &Server, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = ready(server);
        assert_eq!(status, 200, "/ready while waiting for {what}: {body}");
        if done(&body) {
            return body;
        }
        assert!(Instant::now() < deadline, "{what} did not happen within 10 s: {body}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn metric(server: &Server, name: &str, labels: &[(&str, &str)]) -> f64 {
    server.metric(name, labels)
}

/// Refused reloads counted so far.
fn refusals(server: &Server) -> u64 {
    metric(
        server,
        "palisade_policy_reloads_total",
        &[("file", "policy"), ("result", "failure")],
    ) as u64
}

/// Waits (at most 10 s) until `refusals` passes `before`; returns the error of the newest
/// `reload refused` log line.
fn wait_refused(server: &Server, what: &str, before: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    while refusals(server) <= before {
        assert!(Instant::now() < deadline, "{what} was not refused within 10 s");
        std::thread::sleep(Duration::from_millis(25));
    }
    let logs = server.logs();
    let line = logs
        .iter()
        .rev()
        .find(|l| l.contains("reload refused"))
        .unwrap_or_else(|| panic!("{what}: no `reload refused` log line in {logs:#?}"));
    let parsed: Value = serde_json::from_str(line).expect("JSON log line");
    parsed["error"].as_str().expect("error field").to_owned()
}

/// `/ready` says exactly ready and the policy hash: no reload error, no counts.
fn assert_ready_only(body: &Value) {
    let fields: Vec<&String> = body.as_object().expect("object").keys().collect();
    assert_eq!(fields, ["policyHash", "status"], "{body}");
}

/// One client thread: calls the tool until `stop`, the request bound or the time bound.
fn client_loop(server: &Server, token: &str, thread: usize, stop: &AtomicBool, started: Instant) -> Vec<Outcome> {
    let client = http_client();
    let mut outcomes = Vec::new();
    for n in 0..MAX_PER_THREAD {
        if stop.load(Ordering::Relaxed) || started.elapsed() > LOAD_LIMIT {
            break;
        }
        let request_id = format!("reload-{thread}-{n}");
        let sent = Instant::now();
        let response = client
            .post(server.mcp_url())
            .bearer_auth(token)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("x-request-id", &request_id)
            .body(
                json!({"jsonrpc": "2.0", "id": n, "method": "tools/call", "params": {"name": TOOL, "arguments": {}}})
                    .to_string(),
            )
            .send();
        let (result, served_document) = match response {
            Ok(response) => {
                let status = response.status().as_u16();
                match response.text() {
                    Ok(body) => {
                        let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                        let served = body["result"]["isError"] == false
                            && body["result"]["content"][0]["text"]
                                .as_str()
                                .is_some_and(|t| t.contains("strategy 2027"));
                        (Ok(status), served)
                    }
                    Err(error) => (Err(format!("reading the body: {error}")), false),
                }
            }
            Err(error) => (Err(error.to_string()), false),
        };
        let done = Instant::now();
        outcomes.push(Outcome {
            thread,
            request_id,
            sent,
            done,
            result,
            served_document,
        });
        std::thread::sleep(PACE.saturating_sub(sent.elapsed()));
    }
    outcomes
}

#[test]
fn policy_swaps_under_load_fail_no_request() {
    let fixture = Fixture::sample("company-info.yaml");
    let allow = std::fs::read_to_string(&fixture.policy_file).expect("read policy");

    // The variants, as text edits of the compiled sample.
    let rule = "- match: get_confidential_info\n  requiredScopes:\n  - confidential:read\n";
    assert!(allow.contains(rule), "the sample's rule:\n{allow}");
    let deny = allow.replace(
        rule,
        "- match: get_confidential_info\n  requiredScopes:\n  - confidential:admin\n",
    );
    let broken_yaml = format!("{allow}\n{{{{ this is not YAML\n");
    assert!(
        allow.trim_end().ends_with("source: default/company-info-access"),
        "bindings come last"
    );
    let undefined_role = format!("{allow}- role: no-such-role\n  subjects:\n  - mallory\n");
    assert!(allow.contains("\nbindings:\n"));
    let allow_again = allow.replace(
        "\nbindings:\n",
        "\n- name: viewer\n  scopes:\n  - confidential:read\n  sources:\n  - default/company-info-access\nbindings:\n",
    );

    let server = Server::start(&fixture, &[]);
    let token = fixture.token("reload-client", &["confidential:read"]);
    let (_, first) = ready(&server);
    let h1 = first["policyHash"].as_str().expect("policyHash").to_owned();
    assert_ready_only(&first);
    let reloads = |result: &str| {
        metric(
            &server,
            "palisade_policy_reloads_total",
            &[("file", "policy"), ("result", result)],
        ) as u64
    };
    assert_eq!((reloads("success"), reloads("failure")), (1, 0));

    let stop = AtomicBool::new(false);
    let started = Instant::now();
    let (outcomes, marks) = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..THREADS)
            .map(|thread| {
                let (server, token, stop) = (&server, &token, &stop);
                scope.spawn(move || client_loop(server, token, thread, stop, started))
            })
            .collect();
        let hold = || std::thread::sleep(Duration::from_millis(500));
        let mut marks: HashMap<&str, (Instant, Value)> = HashMap::new();

        hold();
        let written = Instant::now();
        swap_policy(&fixture, &deny);
        let body = wait_for(&server, "the denying policy", |b| b["policyHash"] != h1.as_str());
        marks.insert("deny written", (written, Value::Null));
        marks.insert("deny loaded", (Instant::now(), body));

        hold();
        let before = refusals(&server);
        swap_policy(&fixture, &broken_yaml);
        let error = wait_refused(&server, "broken YAML", before);
        let (_, body) = ready(&server);
        marks.insert(
            "broken refused",
            (Instant::now(), json!({"ready": body, "error": error})),
        );

        hold();
        let before = refusals(&server);
        swap_policy(&fixture, &undefined_role);
        let error = wait_refused(&server, "the undefined role", before);
        let (_, body) = ready(&server);
        marks.insert(
            "invalid refused",
            (Instant::now(), json!({"ready": body, "error": error})),
        );

        hold();
        let written = Instant::now();
        let h2 = marks["deny loaded"].1["policyHash"].clone();
        swap_policy(&fixture, &allow_again);
        let body = wait_for(&server, "the allowing policy", |b| b["policyHash"] != h2);
        marks.insert("allow written", (written, Value::Null));
        marks.insert("allow loaded", (Instant::now(), body));

        hold();
        stop.store(true, Ordering::Relaxed);
        let outcomes: Vec<Outcome> = workers
            .into_iter()
            .flat_map(|w| w.join().expect("client thread"))
            .collect();
        (outcomes, marks)
    });
    let elapsed = started.elapsed();

    let h2 = marks["deny loaded"].1["policyHash"].as_str().expect("H2").to_owned();
    let h3 = marks["allow loaded"].1["policyHash"].as_str().expect("H3").to_owned();
    assert!(
        h1 != h2 && h2 != h3 && h1 != h3,
        "three distinct hashes: {h1} {h2} {h3}"
    );

    // The refused files were reported while the last good policy stayed in force.
    for (mark, mentions) in [("broken refused", "policy file"), ("invalid refused", "no-such-role")] {
        let body = &marks[mark].1["ready"];
        assert_eq!(body["status"], "ready", "{mark}: {body}");
        assert_eq!(
            body["policyHash"],
            h2.as_str(),
            "{mark}: the denying policy stays: {body}"
        );
        assert_ready_only(body);
        let error = marks[mark].1["error"].as_str().expect("error");
        assert!(
            error.contains(mentions),
            "{mark}: the logged error mentions {mentions:?}: {error}"
        );
    }
    assert_ready_only(&marks["allow loaded"].1);
    assert_eq!(reloads("success"), 3, "initial load and two valid swaps");
    assert!(
        reloads("failure") >= 2,
        "both refused files are counted: {}",
        reloads("failure")
    );

    // Not one request failed.
    let failures: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| !matches!(o.result, Ok(200) | Ok(403)))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} requests failed, e.g. {:?}",
        failures.len(),
        outcomes.len(),
        failures.first()
    );
    assert!(
        outcomes.iter().all(|o| o.result != Ok(200) || o.served_document),
        "every 200 serves the document"
    );

    // Decisions by phase (by time, where the phase is certain).
    let deny_written = marks["deny written"].0;
    let deny_loaded = marks["deny loaded"].0;
    let broken_refused = marks["broken refused"].0;
    let allow_written = marks["allow written"].0;
    let allow_loaded = marks["allow loaded"].0;
    let phase = |from: Option<Instant>, to: Option<Instant>| -> Vec<&Outcome> {
        outcomes
            .iter()
            .filter(|o| from.is_none_or(|f| o.sent >= f) && to.is_none_or(|t| o.done <= t))
            .collect()
    };
    let before = phase(None, Some(deny_written));
    let denied = phase(Some(deny_loaded), Some(allow_written));
    let while_invalid = phase(Some(broken_refused), Some(allow_written));
    let after = phase(Some(allow_loaded), None);
    for (name, requests, status) in [
        ("before the swap", &before, 200),
        ("under the denying policy", &denied, 403),
        ("while an invalid file is present", &while_invalid, 403),
        ("after the allowing policy", &after, 200),
    ] {
        assert!(requests.len() >= THREADS, "{name}: only {} requests", requests.len());
        let wrong: Vec<_> = requests.iter().filter(|o| o.result != Ok(status)).collect();
        assert!(
            wrong.is_empty(),
            "{name}: {} of {} requests not {status}, e.g. {:?}",
            wrong.len(),
            requests.len(),
            wrong.first()
        );
    }

    // Each answer agrees with its audit event, and every thread saw H1 → H2 → H3 in order.
    let by_request = |events: Vec<Value>| -> HashMap<String, Value> {
        events
            .into_iter()
            .filter(|e| e["kind"] == "authorization" && e["tool"] == TOOL)
            .filter_map(|e| Some((e["request_id"].as_str()?.to_owned(), e)))
            .collect()
    };
    let events = by_request(server.audit_events_until("for every request", |events| {
        let events = by_request(events.to_vec());
        outcomes.iter().all(|o| events.contains_key(&o.request_id))
    }));
    let rank = |hash: &str| [h1.as_str(), h2.as_str(), h3.as_str()].iter().position(|h| *h == hash);
    let mut last_rank = [0; THREADS];
    let mut by_hash: HashMap<&str, usize> = HashMap::new();
    for outcome in &outcomes {
        let event = events
            .get(&outcome.request_id)
            .unwrap_or_else(|| panic!("no audit event for {}", outcome.request_id));
        let hash = event["policy_hash"].as_str().expect("policy_hash");
        let expected = match outcome.result {
            Ok(200) => ("allow", "granted"),
            _ => ("deny", "missing_scopes"),
        };
        assert_eq!(
            (event["decision"].as_str(), event["reason"].as_str()),
            (Some(expected.0), Some(expected.1)),
            "{event}"
        );
        let rank = rank(hash).unwrap_or_else(|| panic!("unknown policy hash {hash}"));
        assert_eq!(
            rank == 1,
            outcome.result == Ok(403),
            "H2 denies, H1 and H3 allow: {event}"
        );
        assert!(
            rank >= last_rank[outcome.thread],
            "thread {} went back from hash #{} to #{rank}",
            outcome.thread,
            last_rank[outcome.thread]
        );
        last_rank[outcome.thread] = rank;
        *by_hash.entry(hash).or_default() += 1;
    }
    assert!(last_rank.iter().all(|&r| r == 2), "every thread ended under H3");
    let count = |status| outcomes.iter().filter(|o| o.result == Ok(status)).count();
    eprintln!(
        "reload: {} requests in {elapsed:.1?} ({} × 200, {} × 403, 0 failed); by hash: H1 {} / H2 {} / H3 {}; \
         {} during invalid files; policy reloads success={} failure={}",
        outcomes.len(),
        count(200),
        count(403),
        by_hash.get(h1.as_str()).copied().unwrap_or(0),
        by_hash.get(h2.as_str()).copied().unwrap_or(0),
        by_hash.get(h3.as_str()).copied().unwrap_or(0),
        while_invalid.len(),
        reloads("success"),
        reloads("failure"),
    );
    for mark in ["broken refused", "invalid refused"] {
        eprintln!("reload: {mark}: logged error = {}", marks[mark].1["error"]);
    }
}

/// The usual fix for a bad ConfigMap edit is to revert it: the file goes back to exactly the
/// policy in force. The refusal was logged and counted; once the file is good again, the error is
/// cleared (and logged so), and a later bad edit must be logged and counted again.
#[test]
fn reverting_a_refused_file_clears_the_reload_error() {
    let fixture = Fixture::sample("company-info.yaml");
    let good = std::fs::read_to_string(&fixture.policy_file).expect("read policy");
    let server = Server::start(&fixture, &[]);
    let (_, first) = ready(&server);
    let hash = first["policyHash"].clone();

    swap_policy(&fixture, &format!("{good}\n{{{{ this is not YAML\n"));
    wait_refused(&server, "broken YAML", 0);
    assert_eq!(refusals(&server), 1);

    // Revert: the very file in force.
    swap_policy(&fixture, &good);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.logs().iter().any(|l| l.contains("the reload error is cleared")) {
        assert!(Instant::now() < deadline, "the revert was not noticed within 10 s");
        std::thread::sleep(Duration::from_millis(25));
    }
    let (status, body) = ready(&server);
    assert_eq!((status, &body["policyHash"]), (200, &hash), "{body}");
    assert_ready_only(&body);

    // The same bad edit again is a new refusal: logged and counted.
    swap_policy(&fixture, &format!("{good}\n{{{{ this is not YAML\n"));
    wait_refused(&server, "broken YAML again", 1);
    assert_eq!(refusals(&server), 2);
}
