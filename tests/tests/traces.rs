//! Traces of `palisade-server` in a real OpenTelemetry Collector (`tests/otelcol`, built by
//! `make cluster-build`), over both OTLP protocols: the span tree of a request, the caller's
//! trace context from the `traceparent` header and from `_meta`, the trace id in the audit
//! events, no secret in any span, the trace carried to the upstream in proxy mode, and a stopped
//! collector costing nothing but dropped spans.

use palisade_e2e::collector::{ExportedSpan, TraceCollector};
use palisade_e2e::{Fixture, Server, mcp_request_as};
use serde_json::{Value, json};

const SERVER: i64 = 2;
const CLIENT: i64 = 3;
const INTERNAL: i64 = 1;
const ERROR: i64 = 2;

/// The OTLP settings of a server exporting to `endpoint` over `protocol`.
fn otel_env<'a>(endpoint: &'a str, protocol: &'a str, service: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
        ("OTEL_SERVICE_NAME", service),
        ("OTEL_RESOURCE_ATTRIBUTES", "k8s.namespace.name=team-a"),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("OTEL_BSP_EXPORT_TIMEOUT", "2000"),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "2000"),
    ]
}

fn tool_call(tool: &str, meta: Option<Value>) -> String {
    let mut params = json!({"name": tool, "arguments": {}});
    if let Some(meta) = meta {
        params["_meta"] = meta;
    }
    json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": params}).to_string()
}

/// Sends `body` with `token` and extra headers; the status.
fn send(server: &Server, token: Option<&str>, headers: &[(&str, &str)], body: &str) -> u16 {
    let mut request = mcp_request_as(server, token, body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().expect("request").status().as_u16()
}

fn of_trace<'a>(spans: &'a [ExportedSpan], trace_id: &str, service: &str) -> Vec<&'a ExportedSpan> {
    spans
        .iter()
        .filter(|s| s.trace_id == trace_id && s.resource.get("service.name") == Some(&json!(service)))
        .collect()
}

fn named<'a>(spans: &[&'a ExportedSpan], name: &str) -> &'a ExportedSpan {
    spans
        .iter()
        .find(|s| s.name == name)
        .copied()
        .unwrap_or_else(|| panic!("no span {name} in {spans:#?}"))
}

/// Every span of `spans` but `root` is a child of `root` and lies within it.
fn assert_children_within(root: &ExportedSpan, children: &[&ExportedSpan]) {
    for child in children {
        assert_eq!(child.parent_span_id, root.span_id, "{child:#?}");
        assert!(
            child.start >= root.start && child.end <= root.end && child.start <= child.end,
            "{child:#?} outside {root:#?}"
        );
    }
}

/// The event of the audit log that closes the request with `request_id` (the one with a status).
fn closing_event(server: &Server, request_id: &str) -> Value {
    server
        .audit_events()
        .into_iter()
        .find(|e| e["request_id"] == request_id && e.get("http_status").is_some())
        .unwrap_or_else(|| panic!("no closing audit event for {request_id}"))
}

#[test]
fn a_request_s_spans_join_the_caller_s_trace_over_both_protocols() {
    let mut collector = TraceCollector::start();
    for (protocol, endpoint) in [
        ("grpc", collector.grpc_endpoint.clone()),
        ("http/protobuf", collector.http_endpoint.clone()),
    ] {
        let service = format!("palisade-{}", protocol.replace('/', "-"));
        let fixture = Fixture::sample("company-info.yaml");
        let server = Server::start_with_env(&fixture, &[], &otel_env(&endpoint, protocol, &service));
        let employee = fixture.token("erin", &["public:read"]);
        // Distinct trace ids per protocol.
        let digit = if protocol == "grpc" { "1" } else { "2" };
        let (header_trace, header_parent) = (format!("{digit}af7651916cd43dd8448eb211c80319c"), "b7ad6b7169203331");
        let (meta_trace, meta_parent) = (format!("{digit}bf7651916cd43dd8448eb211c80319c"), "c7ad6b7169203331");
        let (denied_trace, denied_parent) = (format!("{digit}cf7651916cd43dd8448eb211c80319c"), "d7ad6b7169203331");

        // 1. Context in the headers.
        let traceparent = format!("00-{header_trace}-{header_parent}-01");
        let headers = [
            ("traceparent", traceparent.as_str()),
            ("tracestate", "vendor=opaque"),
            ("x-request-id", "trace-header"),
        ];
        assert_eq!(
            send(&server, Some(&employee), &headers, &tool_call("get_public_info", None)),
            200
        );
        // 2. Context in `_meta` only.
        let meta = json!({"traceparent": format!("00-{meta_trace}-{meta_parent}-01")});
        let headers = [("x-request-id", "trace-meta")];
        assert_eq!(
            send(
                &server,
                Some(&employee),
                &headers,
                &tool_call("get_public_info", Some(meta))
            ),
            200
        );
        // 3. A denial.
        let traceparent = format!("00-{denied_trace}-{denied_parent}-01");
        let headers = [("traceparent", traceparent.as_str()), ("x-request-id", "trace-denied")];
        assert_eq!(
            send(
                &server,
                Some(&employee),
                &headers,
                &tool_call("get_confidential_info", None)
            ),
            403
        );
        // 4. A token that does not verify, and no context: a trace of its own.
        let headers = [("x-request-id", "trace-refused")];
        assert_eq!(
            send(
                &server,
                Some("not-a-token"),
                &headers,
                &tool_call("get_public_info", None)
            ),
            401
        );

        let spans = collector.wait_for(&format!("the spans of {protocol}"), |spans| {
            of_trace(spans, &header_trace, &service).len() >= 4
                && of_trace(spans, &meta_trace, &service).len() >= 4
                && of_trace(spans, &denied_trace, &service).len() >= 3
                && spans.iter().any(|s| {
                    s.attribute("palisade.request_id") == Some(&json!("trace-refused"))
                        && s.resource.get("service.name") == Some(&json!(service))
                })
        });

        // 1: the request span is the caller's child; authentication, authorization and the tool
        // are its children, within it.
        let trace = of_trace(&spans, &header_trace, &service);
        let request = named(&trace, "tools/call get_public_info");
        assert_eq!((request.kind, request.parent_span_id.as_str()), (SERVER, header_parent));
        for (key, value) in [
            ("http.request.method", json!("POST")),
            ("http.route", json!("/mcp")),
            ("http.response.status_code", json!(200)),
            ("network.protocol.version", json!("1.1")),
            ("url.scheme", json!("http")),
            ("mcp.method.name", json!("tools/call")),
            ("gen_ai.tool.name", json!("get_public_info")),
            ("gen_ai.operation.name", json!("execute_tool")),
            ("jsonrpc.request.id", json!("7")),
            ("palisade.decision", json!("allow")),
            ("palisade.request_id", json!("trace-header")),
            ("user.id", json!("erin")),
            ("client.address", json!("127.0.0.1")),
        ] {
            assert_eq!(request.attribute(key), Some(&value), "{key} of {request:#?}");
        }
        assert!(request.attribute("palisade.policy.hash").is_some(), "{request:#?}");
        assert_eq!(request.resource.get("service.name"), Some(&json!(service)));
        assert_eq!(request.resource.get("k8s.namespace.name"), Some(&json!("team-a")));
        assert_eq!(request.scope, "palisade-server");
        // The caller's `tracestate` stays with its trace, on every span of it.
        assert!(trace.iter().all(|s| s.trace_state == "vendor=opaque"), "{trace:#?}");
        let authenticate = named(&trace, "authenticate");
        let authorize = named(&trace, "authorize");
        let work = named(&trace, "execute_tool get_public_info");
        assert_children_within(request, &[authenticate, authorize, work]);
        assert_eq!(authenticate.kind, INTERNAL);
        assert_eq!(authenticate.attribute("palisade.auth.method"), Some(&json!("jwt")));
        assert_eq!(authenticate.attribute("palisade.auth.outcome"), Some(&json!("success")));
        assert_eq!(authorize.attribute("palisade.decision"), Some(&json!("allow")));
        assert_eq!(authorize.attribute("palisade.authz.kind"), Some(&json!("tool")));
        assert_eq!(
            authorize.attribute("palisade.granted_by"),
            Some(&json!(["token"])),
            "{authorize:#?}"
        );
        assert!(authorize.attribute("palisade.rule").is_some(), "{authorize:#?}");
        assert!(authorize.end <= work.start, "the tool runs after the decision");
        assert_eq!(work.attribute("gen_ai.tool.name"), Some(&json!("get_public_info")));
        // Its audit events carry the trace: the closing one, and (the context came in the
        // headers) the authentication event too.
        let closing = closing_event(&server, "trace-header");
        assert_eq!(
            (&closing["trace_id"], &closing["span_id"]),
            (&json!(header_trace), &json!(request.span_id)),
            "{closing}"
        );
        let events: Vec<Value> = server
            .audit_events()
            .into_iter()
            .filter(|e| e["request_id"] == "trace-header")
            .collect();
        assert!(
            events.len() >= 2 && events.iter().all(|e| e["trace_id"] == json!(header_trace)),
            "{events:?}"
        );

        // 2: the `_meta` context is the parent, found after the body was read; authentication,
        // which ran before, is in the same tree.
        let trace = of_trace(&spans, &meta_trace, &service);
        let request = named(&trace, "tools/call get_public_info");
        assert_eq!((request.kind, request.parent_span_id.as_str()), (SERVER, meta_parent));
        assert_children_within(
            request,
            &[
                named(&trace, "authenticate"),
                named(&trace, "authorize"),
                named(&trace, "execute_tool get_public_info"),
            ],
        );
        let closing = closing_event(&server, "trace-meta");
        assert_eq!(
            (&closing["trace_id"], &closing["span_id"]),
            (&json!(meta_trace), &json!(request.span_id))
        );

        // 3: the denial's decision and reason; no tool span.
        let trace = of_trace(&spans, &denied_trace, &service);
        let request = named(&trace, "tools/call get_confidential_info");
        assert_eq!(request.attribute("http.response.status_code"), Some(&json!(403)));
        assert_eq!(request.status_code, 0, "a 4xx is not a server error");
        let authorize = named(&trace, "authorize");
        assert_eq!(authorize.attribute("palisade.decision"), Some(&json!("deny")));
        assert_eq!(authorize.attribute("palisade.reason"), Some(&json!("missing_scopes")));
        assert_eq!(
            authorize.attribute("palisade.missing_scopes"),
            Some(&json!(["confidential:read"])),
            "{authorize:#?}"
        );
        assert!(trace.iter().all(|s| !s.name.starts_with("execute_tool")), "{trace:#?}");

        // 4: a refused token: a new trace, POST /mcp, the failed authentication.
        let request = spans
            .iter()
            .find(|s| {
                s.attribute("palisade.request_id") == Some(&json!("trace-refused"))
                    && s.resource.get("service.name") == Some(&json!(service))
            })
            .unwrap();
        assert_eq!(
            (request.name.as_str(), request.parent_span_id.as_str()),
            ("POST /mcp", "")
        );
        assert_eq!(request.attribute("http.response.status_code"), Some(&json!(401)));
        let refused: Vec<&ExportedSpan> = of_trace(&spans, &request.trace_id, &service);
        let authenticate = named(&refused, "authenticate");
        assert_eq!(authenticate.status_code, ERROR);
        assert_eq!(
            authenticate.attribute("error.type"),
            Some(&json!("malformed")),
            "{authenticate:#?}"
        );
        let closing = closing_event(&server, "trace-refused");
        assert_eq!(closing["trace_id"], json!(request.trace_id));

        // No credential anywhere.
        let raw = collector.raw();
        assert!(
            !raw.contains(&employee) && !raw.contains("not-a-token"),
            "a token was exported"
        );
        assert!(!raw.to_ascii_lowercase().contains("bearer"), "{raw}");
        // 4 + 4 + 3 + 2 spans; counted once the collector answered the export.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while server.metric("palisade_trace_spans_exported_total", &[]) < 13.0 {
            assert!(std::time::Instant::now() < deadline, "exported spans not counted");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert_eq!(
            server.metric("palisade_trace_spans_dropped_total", &[("reason", "queue_full")]),
            0.0
        );
    }
}

#[test]
fn a_stopped_collector_costs_only_dropped_spans() {
    for protocol in ["grpc", "http/protobuf"] {
        let mut collector = TraceCollector::start();
        let endpoint = match protocol {
            "grpc" => collector.grpc_endpoint.clone(),
            _ => collector.http_endpoint.clone(),
        };
        let fixture = Fixture::sample("company-info.yaml");
        let server = Server::start_with_env(&fixture, &[], &otel_env(&endpoint, protocol, "palisade-down"));
        let employee = fixture.token("erin", &["public:read"]);
        let body = tool_call("get_public_info", None);
        assert_eq!(send(&server, Some(&employee), &[], &body), 200);
        collector.wait_for("the first request's spans", |spans| !spans.is_empty());
        collector.collector.stop();

        for _ in 0..20 {
            assert_eq!(send(&server, Some(&employee), &[], &body), 200, "{protocol}");
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let dropped = server.metric("palisade_trace_spans_dropped_total", &[("reason", "export_failed")]);
            if dropped >= 80.0 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{protocol}: {dropped} spans counted as dropped; logs: {:?}",
                server.logs()
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        // Said once per outage in the log, not once per batch.
        let warnings = server
            .logs()
            .iter()
            .filter(|l| l.contains("cannot export spans") || l.contains("span export timed out"))
            .count();
        assert_eq!(warnings, 1, "{protocol}: {:?}", server.logs());
    }
}

/// A collector that accepts connections and never answers (hung, or a black hole on the path)
/// holds no request: exports wait out their 30 s timeout on the export task while every call is
/// answered, and what the bounded queue cannot hold is dropped and counted.
#[test]
fn a_collector_that_never_answers_holds_no_request() {
    let hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", hole.local_addr().unwrap());
    // Accepted and held open, never read from or answered.
    std::thread::spawn(move || {
        let held: Vec<std::net::TcpStream> = hole.incoming().flatten().collect();
        drop(held);
    });
    for protocol in ["grpc", "http/protobuf"] {
        let fixture = Fixture::sample("company-info.yaml");
        let mut env = otel_env(&endpoint, protocol, "palisade-hung");
        env.retain(|(name, _)| !name.ends_with("_TIMEOUT"));
        env.extend([
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "30000"),
            ("OTEL_BSP_EXPORT_TIMEOUT", "30000"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "8"),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "4"),
        ]);
        let server = Server::start_with_env(&fixture, &[], &env);
        let employee = fixture.token("erin", &["public:read"]);
        let body = tool_call("get_public_info", None);
        let started = std::time::Instant::now();
        for _ in 0..20 {
            assert_eq!(send(&server, Some(&employee), &[], &body), 200, "{protocol}");
        }
        // Not a speed check: a request that waited for an export would wait its 30 s.
        assert!(
            started.elapsed() < std::time::Duration::from_secs(15),
            "{protocol}: 20 requests took {:?}",
            started.elapsed()
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while server.metric("palisade_trace_spans_dropped_total", &[("reason", "queue_full")]) < 1.0 {
            assert!(
                std::time::Instant::now() < deadline,
                "{protocol}: nothing dropped from a full queue"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert_eq!(
            server.metric("palisade_trace_spans_exported_total", &[]),
            0.0,
            "{protocol}"
        );
    }
}

#[test]
fn the_upstream_call_carries_the_trace_to_an_http_upstream_and_a_stdio_one() {
    let mut collector = TraceCollector::start();
    let endpoint = collector.grpc_endpoint.clone();
    // An HTTP upstream that is itself a traced palisade-server: its request span must be the
    // child of the proxy's client span, which only the propagated header can make it.
    let (_upstream_fixture, upstream) = palisade_e2e::api_key_upstream::start_with_env(
        "the-proxy-s-key",
        &otel_env(&endpoint, "grpc", "palisade-upstream"),
    );
    let fixture = palisade_e2e::proxy_fixture(
        "- {match: read_notes, requiredScopes: [notes:read]}\n\
         - {match: '*_file', requiredScopes: [files:read], arguments: {path: {glob: ['/a']}}}",
    );
    let key_file = fixture.dir.path().join("secrets/upstream-key");
    std::fs::write(&key_file, "the-proxy-s-key\n").unwrap();
    let header = format!("X-API-Key={}", key_file.display());
    let proxy = Server::start_with_env(
        &fixture,
        &["--upstream-url", &upstream.mcp_url(), "--upstream-header", &header],
        &otel_env(&endpoint, "grpc", "palisade-proxy"),
    );
    let token = fixture.token("alice", &["notes:read", "files:read"]);
    let trace_id = "3af7651916cd43dd8448eb211c80319c";
    let traceparent = format!("00-{trace_id}-b7ad6b7169203331-01");
    let headers = [("traceparent", traceparent.as_str()), ("tracestate", "vendor=opaque")];
    assert_eq!(
        send(&proxy, Some(&token), &headers, &tool_call("read_notes", None)),
        200
    );

    let spans = collector.wait_for("the proxy's and the upstream's spans", |spans| {
        of_trace(spans, trace_id, "palisade-proxy")
            .iter()
            .any(|s| s.kind == CLIENT)
            && !of_trace(spans, trace_id, "palisade-upstream").is_empty()
    });
    let proxied = of_trace(&spans, trace_id, "palisade-proxy");
    // The request span and the client span share the name `{method} {tool}` (MCP conventions).
    let request = proxied.iter().find(|s| s.kind == SERVER).unwrap();
    let call = proxied.iter().find(|s| s.kind == CLIENT).unwrap();
    assert_eq!(call.name, "tools/call read_notes");
    assert_eq!(call.parent_span_id, request.span_id);
    assert_eq!(call.attribute("palisade.upstream.outcome"), Some(&json!("ok")));
    let upstream_url = reqwest::Url::parse(&upstream.mcp_url()).unwrap();
    for (key, value) in [
        ("network.transport", json!("tcp")),
        ("server.address", json!(upstream_url.host_str().unwrap())),
        ("server.port", json!(upstream_url.port().unwrap())),
    ] {
        assert_eq!(call.attribute(key), Some(&value), "{key} of {call:#?}");
    }
    assert!(
        proxied.iter().all(|s| !s.name.starts_with("execute_tool")),
        "the work ran upstream"
    );
    let upstream_request = of_trace(&spans, trace_id, "palisade-upstream")
        .into_iter()
        .find(|s| s.kind == SERVER)
        .expect("the upstream's request span");
    assert_eq!(
        upstream_request.parent_span_id, call.span_id,
        "{upstream_request:#?} {proxied:#?}"
    );
    assert_eq!(
        upstream_request.trace_state, "vendor=opaque",
        "the caller's tracestate travels with the context"
    );
    // The upstream's key went to the upstream, never into a span.
    assert!(!collector.raw().contains("the-proxy-s-key"));
    drop(proxy);

    // A stdio upstream learns the trace from `_meta`.
    let record = fixture.dir.path().join("received.jsonl");
    let script = palisade_e2e::repo_root().join("tests/clients/recording_upstream.py");
    let argv = [palisade_e2e::python(), script, record.clone()].map(|p| p.display().to_string());
    let mut extra = vec!["--"];
    extra.extend(argv.iter().map(String::as_str));
    let proxy = Server::start_with_env(&fixture, &extra, &otel_env(&endpoint, "grpc", "palisade-stdio-proxy"));
    let trace_id = "4af7651916cd43dd8448eb211c80319c";
    let traceparent = format!("00-{trace_id}-b7ad6b7169203331-01");
    let headers = [("traceparent", traceparent.as_str())];
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "read_file", "arguments": {"path": "/a"}, "_meta": {"progressToken": "p"}}});
    assert_eq!(send(&proxy, Some(&token), &headers, &body.to_string()), 200);
    let spans = collector.wait_for("the stdio proxy's client span", |spans| {
        of_trace(spans, trace_id, "palisade-stdio-proxy")
            .iter()
            .any(|s| s.kind == CLIENT)
    });
    let call = of_trace(&spans, trace_id, "palisade-stdio-proxy")
        .into_iter()
        .find(|s| s.kind == CLIENT)
        .unwrap()
        .clone();
    assert_eq!(call.attribute("network.transport"), Some(&json!("pipe")), "{call:#?}");
    assert_eq!(call.attribute("server.address"), None);
    let received = std::fs::read_to_string(&record).unwrap();
    let forwarded: Value = received
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|m| m["method"] == "tools/call")
        .expect("the call reached the upstream");
    assert_eq!(
        forwarded["params"]["_meta"],
        json!({"traceparent": format!("00-{trace_id}-{}-01", call.span_id)}),
        "{forwarded}"
    );

    // A call whose argument the policy refuses: the decision names the argument and the
    // constraint, never the value, and no span carries the value of any call's argument.
    let trace_id = "5bf7651916cd43dd8448eb211c80319c";
    let traceparent = format!("00-{trace_id}-b7ad6b7169203331-01");
    let headers = [("traceparent", traceparent.as_str())];
    let body = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "read_file", "arguments": {"path": "/secret/argument-value-5e1d"}}});
    assert_eq!(send(&proxy, Some(&token), &headers, &body.to_string()), 403);
    let spans = collector.wait_for("the refused call's decision", |spans| {
        of_trace(spans, trace_id, "palisade-stdio-proxy")
            .iter()
            .any(|s| s.name == "authorize")
    });
    let trace = of_trace(&spans, trace_id, "palisade-stdio-proxy");
    let authorize = named(&trace, "authorize");
    for (key, value) in [
        ("palisade.decision", "deny"),
        ("palisade.reason", "argument_denied"),
        ("palisade.argument", "path"),
        ("palisade.constraint", "glob"),
    ] {
        assert_eq!(authorize.attribute(key), Some(&json!(value)), "{key} of {authorize:#?}");
    }
    let raw = collector.raw();
    assert!(
        !raw.contains("argument-value-5e1d") && !raw.contains("\"/a\""),
        "an argument value was exported"
    );
}

/// A test CA and what it signed, all PEM.
struct Pki {
    ca: String,
    /// The collector's certificate and key, for 127.0.0.1.
    collector: (String, String),
    /// A client certificate and key (for a collector that asks for one).
    client: (String, String),
}

fn pki() -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name.push(DnType::CommonName, "traces test CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca, ca_key);
    let signed = |names: Vec<String>| {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(names).unwrap().signed_by(&key, &issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    Pki {
        ca: ca_pem,
        collector: signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]),
        client: signed(vec!["palisade-server".to_owned()]),
    }
}

/// A server started with `env` (whose service name is `service`) answers a call, and its spans
/// reach `collector`.
fn exported_to(collector: &mut TraceCollector, env: &[(&str, &str)], service: &str, what: &str) {
    let fixture = Fixture::sample("company-info.yaml");
    let server = Server::start_with_env(&fixture, &[], env);
    let employee = fixture.token("erin", &["public:read"]);
    assert_eq!(
        send(&server, Some(&employee), &[], &tool_call("get_public_info", None)),
        200
    );
    collector.wait_for(what, |spans| {
        spans
            .iter()
            .any(|s| s.resource.get("service.name") == Some(&json!(service)))
    });
}

/// A server started with `env` (whose service name is `service`) answers three calls while their
/// 12 spans never reach `collector`: they are counted as failed exports.
fn refused_by(collector: &TraceCollector, env: &[(&str, &str)], service: &str, what: &str) {
    let fixture = Fixture::sample("company-info.yaml");
    let server = Server::start_with_env(&fixture, &[], env);
    let employee = fixture.token("erin", &["public:read"]);
    for _ in 0..3 {
        assert_eq!(
            send(&server, Some(&employee), &[], &tool_call("get_public_info", None)),
            200
        );
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while server.metric("palisade_trace_spans_dropped_total", &[("reason", "export_failed")]) < 12.0 {
        assert!(std::time::Instant::now() < deadline, "{what}: {:?}", server.logs());
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(
        collector
            .spans()
            .iter()
            .all(|s| s.resource.get("service.name") != Some(&json!(service))),
        "{what}: spans reached the collector"
    );
}

#[test]
fn a_collector_behind_tls_is_verified_over_both_protocols() {
    let Pki {
        ca,
        collector: (cert, key),
        ..
    } = pki();
    let mut collector = TraceCollector::start_with_tls(Some((&cert, &key)));
    let ca_file = collector.collector.dir().join("ca.pem");
    std::fs::write(&ca_file, &ca).unwrap();
    let ca_file = ca_file.display().to_string();
    for (protocol, endpoint) in [
        ("grpc", collector.grpc_endpoint.clone()),
        ("http/protobuf", collector.http_endpoint.clone()),
    ] {
        assert!(endpoint.starts_with("https://"));
        // Trusted (the CA in OTEL_EXPORTER_OTLP_CERTIFICATE): exported.
        let service = format!("palisade-tls-{}", protocol.replace('/', "-"));
        let mut env = otel_env(&endpoint, protocol, &service);
        env.push(("OTEL_EXPORTER_OTLP_CERTIFICATE", &ca_file));
        exported_to(&mut collector, &env, &service, &format!("{protocol} over TLS"));

        // Not trusted (the system roots do not hold the test CA): nothing is sent, the requests
        // are served, the spans are counted as dropped.
        let untrusted = format!("palisade-untrusted-{}", protocol.replace('/', "-"));
        let env = otel_env(&endpoint, protocol, &untrusted);
        refused_by(
            &collector,
            &env,
            &untrusted,
            &format!("{protocol}, collector not trusted"),
        );
    }
}

#[test]
fn a_collector_that_requires_a_client_certificate_gets_one_over_both_protocols() {
    let pki = pki();
    let mut collector = TraceCollector::start_with_mutual_tls(&pki.collector.0, &pki.collector.1, &pki.ca);
    let file = |name: &str, pem: &str| {
        let path = collector.collector.dir().join(name);
        std::fs::write(&path, pem).unwrap();
        path.display().to_string()
    };
    let (ca_file, cert_file, key_file) = (
        file("ca.pem", &pki.ca),
        file("client.pem", &pki.client.0),
        file("client-key.pem", &pki.client.1),
    );
    for (protocol, endpoint) in [
        ("grpc", collector.grpc_endpoint.clone()),
        ("http/protobuf", collector.http_endpoint.clone()),
    ] {
        // With the client certificate: exported.
        let service = format!("palisade-mtls-{}", protocol.replace('/', "-"));
        let mut env = otel_env(&endpoint, protocol, &service);
        env.extend([
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", ca_file.as_str()),
            ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", cert_file.as_str()),
            ("OTEL_EXPORTER_OTLP_CLIENT_KEY", key_file.as_str()),
        ]);
        exported_to(
            &mut collector,
            &env,
            &service,
            &format!("{protocol} with a client certificate"),
        );

        // Without one: the collector refuses the connection, the requests are served, the spans
        // are counted as dropped.
        let anonymous = format!("palisade-no-client-certificate-{}", protocol.replace('/', "-"));
        let mut env = otel_env(&endpoint, protocol, &anonymous);
        env.push(("OTEL_EXPORTER_OTLP_CERTIFICATE", &ca_file));
        refused_by(
            &collector,
            &env,
            &anonymous,
            &format!("{protocol} without a client certificate"),
        );
    }
}

/// `palisade-server serve` with `env` does not start, and says `expected` on standard error.
fn refuses_to_start(fixture: &Fixture, env: &[(&str, &str)], expected: &str) {
    let output = std::process::Command::new(palisade_e2e::server_binary())
        .args(["serve", "--policy-file"])
        .arg(&fixture.policy_file)
        .arg("--documents-dir")
        .arg(&fixture.documents_dir)
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(!output.status.success(), "started with {env:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(expected), "{env:?}: {stderr}");
}

#[test]
fn a_collector_ca_file_that_cannot_be_read_stops_the_start_with_the_file_named() {
    let fixture = Fixture::sample("company-info.yaml");
    let missing = fixture.dir.path().join("no-such-ca.pem");
    let missing_text = missing.display().to_string();
    refuses_to_start(
        &fixture,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://127.0.0.1:4317"),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", &missing_text),
        ],
        &format!("trace export: the collector's CA certificate {missing_text}: No such file or directory"),
    );
    // A CA file that holds no certificate stops it too (over either protocol).
    let not_pem = fixture.dir.path().join("not-a-certificate.txt");
    std::fs::write(&not_pem, "not a certificate\n").unwrap();
    let not_pem_text = not_pem.display().to_string();
    for protocol in ["grpc", "http/protobuf"] {
        refuses_to_start(
            &fixture,
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://127.0.0.1:4317"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
                ("OTEL_EXPORTER_OTLP_CERTIFICATE", &not_pem_text),
            ],
            &format!("trace export: the collector's CA certificate {not_pem_text}: no PEM certificate in it"),
        );
    }
    // Files that do not make a client certificate and key stop it, with both named.
    refuses_to_start(
        &fixture,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://127.0.0.1:4317"),
            ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", &not_pem_text),
            ("OTEL_EXPORTER_OTLP_CLIENT_KEY", &not_pem_text),
        ],
        &format!(
            "trace export: the client certificate {not_pem_text} and key {not_pem_text}: builder error: \
             unexpected error: private key or certificate not found"
        ),
    );
    // A client key that cannot be read stops it too, with both files named.
    let certificate = fixture.dir.path().join("client.pem");
    std::fs::write(&certificate, pki().client.0).unwrap();
    let certificate_text = certificate.display().to_string();
    refuses_to_start(
        &fixture,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://127.0.0.1:4317"),
            ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", &certificate_text),
            ("OTEL_EXPORTER_OTLP_CLIENT_KEY", &missing_text),
        ],
        &format!(
            "trace export: the client certificate {certificate_text} and key {missing_text}: No such file or directory"
        ),
    );
    // An unknown protocol is refused the same way, naming the variable.
    refuses_to_start(
        &fixture,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ],
        "OTEL_EXPORTER_OTLP_PROTOCOL=\\\"http/json\\\": the protocols are `grpc` and `http/protobuf`",
    );
}
