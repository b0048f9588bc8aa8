//! TLS termination and client-certificate authentication (mTLS), over real sockets.
//!
//! Every certificate is made at test time with rcgen: a CA, a server certificate for `localhost`
//! and `127.0.0.1`, client certificates from that CA (valid, expired, named only by a DNS name) and
//! from a CA the server does not trust. The accept loop runs in-process over the router of the
//! attack tests' fixture (so the audit events and metrics can be read); one test runs the real
//! binary configured through the `PALISADE_TLS_*` variables. Clients are rustls (through
//! tokio-rustls, to see the negotiated version, the ALPN protocol and the alert a refusal carries)
//! and reqwest, as an MCP client would use it. TLS 1.1 is offered by a hand-made ClientHello, since
//! no client library here can offer it any more.

mod support;

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use palisade_crds::IdentitySource;
use palisade_crds::document::Binding;
use palisade_server::config::{ClientAuth, ServeArgs};
use palisade_server::tls::{self, TlsConfig, TlsFiles};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{AlertDescription, ClientConfig, ProtocolVersion, RootCertStore, SupportedProtocolVersion};
use serde_json::{Value, json};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;

// -------------------------------------------------------------------------------------------------
// Certificates

/// A certificate authority made for one test.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
    der: CertificateDer<'static>,
}

/// A certificate and its private key.
#[derive(Clone)]
struct Leaf {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
}

impl Leaf {
    fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).expect("key PEM")
    }

    /// The PEM bundle reqwest takes as an identity.
    fn identity(&self) -> reqwest::Identity {
        reqwest::Identity::from_pem(format!("{}{}", self.cert_pem, self.key_pem).as_bytes()).expect("identity")
    }
}

/// What a leaf certificate is for and whom it names.
struct LeafSpec<'a> {
    common_name: Option<&'a str>,
    alt_names: &'a [&'a str],
    usage: ExtendedKeyUsagePurpose,
    expired: bool,
}

impl Ca {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("CA certificate");
        Self {
            pem: cert.pem(),
            der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    fn leaf(&self, spec: LeafSpec<'_>) -> Leaf {
        let alt_names: Vec<String> = spec.alt_names.iter().map(|s| (*s).to_owned()).collect();
        let mut params = CertificateParams::new(alt_names).expect("leaf params");
        params.distinguished_name = DistinguishedName::new();
        if let Some(common_name) = spec.common_name {
            params.distinguished_name.push(DnType::CommonName, common_name);
        }
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Palisade tests");
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![spec.usage];
        if spec.expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("leaf certificate");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }

    /// A server certificate for `localhost` and `127.0.0.1`.
    fn server(&self) -> Leaf {
        self.leaf(LeafSpec {
            common_name: Some("palisade test server"),
            alt_names: &["localhost", "127.0.0.1"],
            usage: ExtendedKeyUsagePurpose::ServerAuth,
            expired: false,
        })
    }

    /// A valid client certificate whose Common Name is `name`.
    fn client(&self, name: &str) -> Leaf {
        self.leaf(LeafSpec {
            common_name: Some(name),
            alt_names: &[],
            usage: ExtendedKeyUsagePurpose::ClientAuth,
            expired: false,
        })
    }

    fn reqwest_root(&self) -> reqwest::Certificate {
        reqwest::Certificate::from_pem(self.pem.as_bytes()).expect("CA PEM")
    }
}

/// A temporary directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Self {
        let path = std::env::temp_dir().join(format!(
            "palisade-tls-{}-{}",
            std::process::id(),
            hex::encode(rand::random::<[u8; 8]>())
        ));
        std::fs::create_dir_all(&path).expect("create temporary directory");
        Self(path)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).expect("write file");
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A server CA and certificate, a client CA, and the files the server reads.
struct Pki {
    scratch: Scratch,
    server_ca: Ca,
    client_ca: Ca,
    server: Leaf,
    cert_file: PathBuf,
    key_file: PathBuf,
    client_ca_file: PathBuf,
}

impl Pki {
    fn new() -> Self {
        install_provider();
        let scratch = Scratch::new();
        let server_ca = Ca::new("palisade test server CA");
        let client_ca = Ca::new("palisade test client CA");
        let server = server_ca.server();
        let cert_file = scratch.write("tls.crt", &server.cert_pem);
        let key_file = scratch.write("tls.key", &server.key_pem);
        let client_ca_file = scratch.write("client-ca.crt", &client_ca.pem);
        Self {
            scratch,
            server_ca,
            client_ca,
            server,
            cert_file,
            key_file,
            client_ca_file,
        }
    }

    /// The server's TLS settings: without client certificates, or with the client CA in `mode`.
    fn files(&self, client_auth: Option<ClientAuth>) -> TlsFiles {
        TlsFiles {
            cert: self.cert_file.clone(),
            key: self.key_file.clone(),
            client_ca: client_auth.map(|_| self.client_ca_file.clone()),
            client_auth: client_auth.unwrap_or_default(),
        }
    }

    /// Replaces the server certificate and key files (as a Secret rotation does).
    fn rotate(&self, leaf: &Leaf) {
        self.scratch.write("tls.crt", &leaf.cert_pem);
        self.scratch.write("tls.key", &leaf.key_pem);
    }
}

fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

// -------------------------------------------------------------------------------------------------
// The server

/// The TLS accept loop, running in-process.
struct Running {
    addr: SocketAddr,
    tls: Arc<TlsConfig>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<io::Result<()>>>,
}

impl Running {
    async fn start(fx: &Fixture, files: TlsFiles) -> Self {
        let tls = Arc::new(TlsConfig::load(files).expect("the TLS files load"));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(tls::serve(listener, fx.router.clone(), tls.clone(), async move {
            let _ = stopped.await;
        }));
        Self {
            addr,
            tls,
            stop: Some(stop),
            task: Some(task),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.addr.port())
    }

    /// Triggers the graceful shutdown and waits for the loop to return.
    async fn stop(mut self) -> io::Result<()> {
        let _ = self.stop.take().expect("running").send(());
        let task = self.task.take().expect("running");
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the server stops within 10 s")
            .expect("the server task does not panic")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// The company-info sample, with subject bindings for client-certificate identities.
fn fixture() -> Fixture {
    Fixture::build(Sample::CompanyInfo, |policy, _| {
        for (role, subject) in [
            ("strategist", "agent-strategist"),
            ("employee", "agent-employee"),
            ("employee", "robot.agents.example.com"),
        ] {
            policy.bindings.push(Binding {
                role: role.into(),
                subjects: vec![subject.into()],
                groups: Vec::new(),
                service_accounts: Vec::new(),
                anonymous: false,
                source: None,
                from: Some(IdentitySource::ClientCertificates),
            });
        }
        policy.bindings.sort();
    })
}

// -------------------------------------------------------------------------------------------------
// Clients

/// A rustls client trusting `ca`, offering `versions` and `alpn`, presenting `identity`.
fn rustls_client(
    ca: &Ca,
    versions: &[&'static SupportedProtocolVersion],
    identity: Option<&Leaf>,
    alpn: &[&[u8]],
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.der.clone()).expect("root");
    let builder = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(versions)
        .expect("versions")
        .with_root_certificates(roots);
    let mut config = match identity {
        Some(leaf) => builder
            .with_client_auth_cert(vec![leaf.der.clone()], leaf.key_der())
            .expect("client certificate"),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// What one request over a raw TLS connection saw.
#[derive(Debug)]
struct Exchange {
    version: Option<ProtocolVersion>,
    alpn: Option<Vec<u8>>,
    server_certificate: Option<CertificateDer<'static>>,
    response: String,
}

/// Connects to `addr` as `localhost`, sends `GET path` (HTTP/1.1, `Connection: close`) and reads
/// the whole answer.
async fn exchange(addr: SocketAddr, config: Arc<ClientConfig>, path: &str) -> io::Result<Exchange> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").expect("server name").to_owned();
    let mut stream = tokio::time::timeout(Duration::from_secs(10), TlsConnector::from(config).connect(name, tcp))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "handshake timed out"))??;
    let (_, connection) = stream.get_ref();
    let version = connection.protocol_version();
    let alpn = connection.alpn_protocol().map(<[u8]>::to_vec);
    let server_certificate = connection
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.clone().into_owned());
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost:{}\r\nConnection: close\r\n\r\n",
        addr.port()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no answer"))??;
    Ok(Exchange {
        version,
        alpn,
        server_certificate,
        response: String::from_utf8_lossy(&response).into_owned(),
    })
}

/// The TLS alert a failed exchange received from the server.
fn alert(error: &io::Error) -> Option<AlertDescription> {
    match error.get_ref()?.downcast_ref::<rustls::Error>()? {
        rustls::Error::AlertReceived(alert) => Some(*alert),
        _ => None,
    }
}

/// Asserts that the exchange failed because the server sent `expected`.
fn assert_alert(result: io::Result<Exchange>, expected: AlertDescription) {
    match result {
        Ok(exchange) => panic!("the server answered instead of refusing: {exchange:?}"),
        Err(error) => assert_eq!(alert(&error), Some(expected), "{error:?}"),
    }
}

/// A reqwest client trusting `ca`, pinned to `addr` for `localhost`, presenting `identity`.
fn https(ca: &Ca, addr: SocketAddr, identity: Option<&Leaf>) -> reqwest::ClientBuilder {
    let mut builder = reqwest::Client::builder()
        .tls_certs_only([ca.reqwest_root()])
        .resolve("localhost", addr)
        .timeout(Duration::from_secs(10));
    if let Some(leaf) = identity {
        builder = builder.identity(leaf.identity());
    }
    builder
}

/// `tools/list` over HTTPS; `token` as a bearer token when given. Status and body.
async fn tools_list(client: &reqwest::Client, url: &str, token: Option<&str>) -> reqwest::Result<(u16, Value)> {
    let mut request = client
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .json(&request("tools/list", json!({})));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    let body = response.json().await?;
    Ok((status, body))
}

fn tool_names(body: &Value) -> Vec<String> {
    let mut names: Vec<String> = body["result"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("a tools/list result: {body}"))
        .iter()
        .map(|t| t["name"].as_str().expect("tool name").to_owned())
        .collect();
    names.sort();
    names
}

/// The authentication event among `events`.
fn authentication(events: &[Value]) -> &Value {
    events
        .iter()
        .find(|e| e["kind"] == "authentication")
        .unwrap_or_else(|| panic!("an authentication event: {events:#?}"))
}

// -------------------------------------------------------------------------------------------------
// Versions, ALPN, plain HTTP

#[tokio::test]
async fn tls_1_2_and_1_3_handshakes_serve_requests() {
    let fx = fixture();
    let pki = Pki::new();
    let server = Running::start(&fx, pki.files(None)).await;
    for (version, expected) in [
        (&rustls::version::TLS12, ProtocolVersion::TLSv1_2),
        (&rustls::version::TLS13, ProtocolVersion::TLSv1_3),
    ] {
        let client = rustls_client(&pki.server_ca, &[version], None, &[b"http/1.1"]);
        let exchange = exchange(server.addr, client, "/health")
            .await
            .expect("handshake and answer");
        assert_eq!(exchange.version, Some(expected));
        assert_eq!(exchange.alpn.as_deref(), Some(&b"http/1.1"[..]));
        assert_eq!(exchange.server_certificate.as_ref(), Some(&pki.server.der));
        assert!(exchange.response.starts_with("HTTP/1.1 200"), "{}", exchange.response);
        assert!(
            exchange.response.contains(r#"{"status":"ok"}"#),
            "{}",
            exchange.response
        );
    }
    // reqwest limited to each version, through MCP with a token.
    let token = fx.token(&["public:read"]);
    for version in [reqwest::tls::Version::TLS_1_2, reqwest::tls::Version::TLS_1_3] {
        let client = https(&pki.server_ca, server.addr, None)
            .tls_version_min(version)
            .tls_version_max(version)
            .build()
            .expect("client");
        let (status, body) = tools_list(&client, &server.url("/mcp"), Some(&token))
            .await
            .expect("request");
        assert_eq!(status, 200, "{body}");
        assert_eq!(tool_names(&body), ["get_public_info"]);
    }
    // The audit keeps the client address, as on the plain listener.
    let events = fx.take_events();
    assert_eq!(authentication(&events)["client_address"], "127.0.0.1", "{events:#?}");
    assert_eq!(authentication(&events)["auth_method"], "jwt");
    server.stop().await.expect("clean shutdown");
}

#[tokio::test]
async fn alpn_negotiates_http2() {
    let fx = fixture();
    let pki = Pki::new();
    let server = Running::start(&fx, pki.files(None)).await;
    let client = rustls_client(&pki.server_ca, &[&rustls::version::TLS13], None, &[b"h2", b"http/1.1"]);
    let tcp = TcpStream::connect(server.addr).await.expect("connect");
    let name = ServerName::try_from("localhost").expect("name").to_owned();
    let stream = TlsConnector::from(client).connect(name, tcp).await.expect("handshake");
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    drop(stream);

    let client = https(&pki.server_ca, server.addr, None).build().expect("client");
    let response = client.get(server.url("/health")).send().await.expect("request");
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    let token = fx.token(&["public:read", "confidential:read"]);
    let (status, body) = tools_list(&client, &server.url("/mcp"), Some(&token))
        .await
        .expect("request");
    assert_eq!(status, 200, "{body}");
    assert_eq!(tool_names(&body), ["get_confidential_info", "get_public_info"]);
}

/// A TLS 1.1 ClientHello (TLS 1.0 record layer, `client_version` 3.2, CBC suites of that era).
/// With `signature_algorithms` (which rustls requires before it looks at versions) and, when
/// `supported_versions`, that extension listing TLS 1.1 and 1.0 only (as a TLS 1.3-aware client
/// limited to them would send). Without extensions when `bare`.
fn tls11_client_hello(supported_versions: bool, bare: bool) -> Vec<u8> {
    let mut extensions = Vec::new();
    if !bare {
        // signature_algorithms (13): ecdsa_secp256r1_sha256, rsa_pkcs1_sha256, rsa_pkcs1_sha1.
        extensions.extend_from_slice(&[0x00, 0x0d, 0x00, 0x08, 0x00, 0x06, 0x04, 0x03, 0x04, 0x01, 0x02, 0x01]);
    }
    if supported_versions {
        // supported_versions (43): list of 2 versions.
        extensions.extend_from_slice(&[0x00, 0x2b, 0x00, 0x05, 0x04, 0x03, 0x02, 0x03, 0x01]);
    }
    let mut body = vec![0x03, 0x02];
    body.extend_from_slice(&rand::random::<[u8; 32]>());
    body.push(0); // session id
    body.extend_from_slice(&[0x00, 0x06, 0xc0, 0x13, 0xc0, 0x14, 0x00, 0x2f]); // cipher suites
    body.extend_from_slice(&[0x01, 0x00]); // compression: null
    body.extend_from_slice(&u16::try_from(extensions.len()).expect("short").to_be_bytes());
    body.extend_from_slice(&extensions);
    let mut handshake = vec![0x01];
    handshake.extend_from_slice(&u32::try_from(body.len()).expect("short").to_be_bytes()[1..]);
    handshake.extend_from_slice(&body);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend_from_slice(&u16::try_from(handshake.len()).expect("short").to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}

#[tokio::test]
async fn tls_1_1_is_refused_with_a_protocol_version_alert() {
    assert_eq!(
        tls::PROTOCOL_VERSIONS.iter().map(|v| v.version).collect::<Vec<_>>(),
        [ProtocolVersion::TLSv1_3, ProtocolVersion::TLSv1_2],
        "the server offers TLS 1.3 and 1.2 only"
    );
    let fx = fixture();
    let pki = Pki::new();
    let server = Running::start(&fx, pki.files(None)).await;
    for (supported_versions, bare) in [(false, false), (true, false), (false, true)] {
        let mut tcp = TcpStream::connect(server.addr).await.expect("connect");
        tcp.write_all(&tls11_client_hello(supported_versions, bare))
            .await
            .expect("send ClientHello");
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut answer))
            .await
            .expect("the server answers at once")
            .expect("read");
        // One alert record: content type 21, level fatal (2), description protocol_version (70)
        // (handshake_failure (40) for the bare hello, refused before its version is looked at).
        assert!(answer.len() >= 7, "an alert: {answer:02x?}");
        assert_eq!(answer[0], 21, "an alert record, not a ServerHello: {answer:02x?}");
        let description = if bare { 40 } else { 70 };
        assert_eq!(&answer[5..7], &[2, description], "fatal alert: {answer:02x?}");
    }
    // The loop goes on serving.
    let client = rustls_client(&pki.server_ca, &[&rustls::version::TLS12], None, &[]);
    let exchange = exchange(server.addr, client, "/health").await.expect("served");
    assert!(exchange.response.starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn plain_http_to_the_tls_port_fails() {
    let fx = fixture();
    let pki = Pki::new();
    let server = Running::start(&fx, pki.files(None)).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let url = format!("http://127.0.0.1:{}/health", server.addr.port());
    let result = client.get(&url).send().await;
    assert!(result.is_err(), "plain HTTP must not be served: {result:?}");

    // By hand: what comes back is never an HTTP answer.
    let mut tcp = TcpStream::connect(server.addr).await.expect("connect");
    tcp.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .expect("send");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut answer))
        .await
        .expect("the server closes the connection");
    assert!(!answer.starts_with(b"HTTP/"), "{}", String::from_utf8_lossy(&answer));
    assert!(fx.take_events().is_empty(), "nothing reached the router");

    // TLS still works.
    let client = https(&pki.server_ca, server.addr, None).build().expect("client");
    assert_eq!(
        client.get(server.url("/health")).send().await.expect("TLS").status(),
        200
    );
}

// -------------------------------------------------------------------------------------------------
// Client certificates

#[tokio::test]
async fn a_client_certificate_from_the_trusted_ca_authenticates_as_its_subject() {
    let fx = fixture();
    let pki = Pki::new();
    let server = Running::start(&fx, pki.files(Some(ClientAuth::Optional))).await;
    let url = server.url("/mcp");
    let cases: [(Leaf, &str, &[&str]); 4] = [
        (
            pki.client_ca.client("agent-strategist"),
            "agent-strategist",
            &["get_confidential_info", "get_public_info"],
        ),
        (
            pki.client_ca.client("agent-employee"),
            "agent-employee",
            &["get_public_info"],
        ),
        // No Common Name: the first DNS name.
        (
            pki.client_ca.leaf(LeafSpec {
                common_name: None,
                alt_names: &["robot.agents.example.com", "other.example.com"],
                usage: ExtendedKeyUsagePurpose::ClientAuth,
                expired: false,
            }),
            "robot.agents.example.com",
            &["get_public_info"],
        ),
        // Verified, but bound to nothing: authenticated, and sees no tool (default deny).
        (pki.client_ca.client("agent-unbound"), "agent-unbound", &[]),
    ];
    for (leaf, subject, tools) in cases {
        let client = https(&pki.server_ca, server.addr, Some(&leaf)).build().expect("client");
        let (status, body) = tools_list(&client, &url, None).await.expect("request");
        assert_eq!(status, 200, "{subject}: {body}");
        assert_eq!(tool_names(&body), tools, "{subject}");

        let events = fx.take_events();
        assert_eq!(events.len(), 2, "{events:#?}");
        for event in &events {
            assert_eq!(event["auth_method"], "client_certificate", "{event}");
            assert_eq!(event["subject"], subject, "{event}");
            assert_eq!(event["client_address"], "127.0.0.1", "{event}");
        }
        assert_eq!(authentication(&events)["decision"], "success");
        assert_eq!(events[1]["kind"], "authorization");
    }
    assert_eq!(fx.auth_attempts("client_certificate", "success", "ok"), 4.0);

    // The identity is the certificate's: a call the subject may make is allowed, one it may not
    // is refused with 403, as for a token.
    let employee = https(
        &pki.server_ca,
        server.addr,
        Some(&pki.client_ca.client("agent-employee")),
    )
    .build()
    .expect("client");
    let call = |tool: &str| {
        employee
            .post(&url)
            .header("content-type", "application/json")
            .header("accept", "application/json")
            .json(&request("tools/call", json!({"name": tool, "arguments": {}})))
            .send()
    };
    assert_eq!(call("get_public_info").await.expect("call").status(), 200);
    assert_eq!(call("get_confidential_info").await.expect("call").status(), 403);
}

#[tokio::test]
async fn a_bearer_token_wins_over_the_client_certificate() {
    let fx = fixture();
    let pki = Pki::new();
    let server = Running::start(&fx, pki.files(Some(ClientAuth::Optional))).await;
    let leaf = pki.client_ca.client("agent-strategist");
    let client = https(&pki.server_ca, server.addr, Some(&leaf)).build().expect("client");
    let token = fx.token(&["public:read"]);
    let (status, body) = tools_list(&client, &server.url("/mcp"), Some(&token))
        .await
        .expect("request");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        tool_names(&body),
        ["get_public_info"],
        "the token's scopes, not the strategist's"
    );
    let events = fx.take_events();
    assert_eq!(authentication(&events)["auth_method"], "jwt");
    assert_eq!(authentication(&events)["subject"], "alice");

    // An invalid token is refused even with a good certificate: no silent fallback.
    let (status, body) = tools_list(&client, &server.url("/mcp"), Some("not-a-key"))
        .await
        .expect("request");
    assert_eq!(status, 401, "{body}");
}

#[tokio::test]
async fn optional_mode_lets_clients_without_a_certificate_use_a_token() {
    let fx = fixture();
    let pki = Pki::new();
    let server = Running::start(&fx, pki.files(Some(ClientAuth::Optional))).await;
    let client = https(&pki.server_ca, server.addr, None).build().expect("client");
    let token = fx.token(&["public:read"]);
    let (status, body) = tools_list(&client, &server.url("/mcp"), Some(&token))
        .await
        .expect("request");
    assert_eq!(status, 200, "{body}");
    assert_eq!(tool_names(&body), ["get_public_info"]);
    // Neither certificate nor token: 401, as without TLS.
    let (status, body) = tools_list(&client, &server.url("/mcp"), None).await.expect("request");
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["data"]["code"], "MISSING_AUTHORIZATION");
}

#[tokio::test]
async fn a_client_certificate_from_another_ca_is_refused_at_handshake() {
    let fx = fixture();
    let pki = Pki::new();
    let server = Running::start(&fx, pki.files(Some(ClientAuth::Optional))).await;
    let stranger = Ca::new("someone else's CA").client("agent-strategist");
    // The server's own CA signs no client certificate either.
    let server_ca_client = pki.server_ca.client("agent-strategist");
    for leaf in [&stranger, &server_ca_client] {
        for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
            let client = rustls_client(&pki.server_ca, &[version], Some(leaf), &[]);
            assert_alert(
                exchange(server.addr, client, "/health").await,
                AlertDescription::UnknownCA,
            );
        }
        let client = https(&pki.server_ca, server.addr, Some(leaf)).build().expect("client");
        let result = tools_list(&client, &server.url("/mcp"), None).await;
        assert!(result.is_err(), "{result:?}");
    }
    assert!(fx.take_events().is_empty(), "no request reached the router");
    // Failed handshakes do not stop the loop.
    let client = rustls_client(
        &pki.server_ca,
        &[&rustls::version::TLS13],
        Some(&pki.client_ca.client("agent-employee")),
        &[],
    );
    let exchange = exchange(server.addr, client, "/health").await.expect("served");
    assert!(exchange.response.starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn an_expired_client_certificate_is_refused_at_handshake() {
    let fx = fixture();
    let pki = Pki::new();
    let server = Running::start(&fx, pki.files(Some(ClientAuth::Optional))).await;
    let expired = pki.client_ca.leaf(LeafSpec {
        common_name: Some("agent-strategist"),
        alt_names: &[],
        usage: ExtendedKeyUsagePurpose::ClientAuth,
        expired: true,
    });
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let client = rustls_client(&pki.server_ca, &[version], Some(&expired), &[]);
        assert_alert(
            exchange(server.addr, client, "/health").await,
            AlertDescription::CertificateExpired,
        );
    }
    let client = https(&pki.server_ca, server.addr, Some(&expired))
        .build()
        .expect("client");
    assert!(tools_list(&client, &server.url("/mcp"), None).await.is_err());
    assert!(fx.take_events().is_empty());
}

#[tokio::test]
async fn a_certificate_not_meant_for_client_authentication_is_refused() {
    let fx = fixture();
    let pki = Pki::new();
    let server = Running::start(&fx, pki.files(Some(ClientAuth::Optional))).await;
    // Signed by the client CA, but its extended key usage is serverAuth only.
    let server_only = pki.client_ca.leaf(LeafSpec {
        common_name: Some("agent-strategist"),
        alt_names: &["agent.example.com"],
        usage: ExtendedKeyUsagePurpose::ServerAuth,
        expired: false,
    });
    let client = rustls_client(&pki.server_ca, &[&rustls::version::TLS13], Some(&server_only), &[]);
    assert_alert(
        exchange(server.addr, client, "/health").await,
        AlertDescription::UnsupportedCertificate,
    );
    assert!(fx.take_events().is_empty());
}

#[tokio::test]
async fn required_mode_refuses_clients_without_a_certificate() {
    let fx = fixture();
    let pki = Pki::new();
    let server = Running::start(&fx, pki.files(Some(ClientAuth::Required))).await;
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let client = rustls_client(&pki.server_ca, &[version], None, &[]);
        assert_alert(
            exchange(server.addr, client, "/health").await,
            AlertDescription::CertificateRequired,
        );
    }
    // Not even with a valid token.
    let token = fx.token(&["public:read"]);
    let client = https(&pki.server_ca, server.addr, None).build().expect("client");
    assert!(tools_list(&client, &server.url("/mcp"), Some(&token)).await.is_err());
    assert!(fx.take_events().is_empty());

    let leaf = pki.client_ca.client("agent-employee");
    let client = https(&pki.server_ca, server.addr, Some(&leaf)).build().expect("client");
    let (status, body) = tools_list(&client, &server.url("/mcp"), None).await.expect("request");
    assert_eq!(status, 200, "{body}");
    assert_eq!(tool_names(&body), ["get_public_info"]);
}

#[test]
fn the_subject_is_the_common_name_else_the_first_dns_name() {
    let ca = Ca::new("subjects");
    let subject = |common_name, alt_names| {
        tls::certificate_subject(
            &ca.leaf(LeafSpec {
                common_name,
                alt_names,
                usage: ExtendedKeyUsagePurpose::ClientAuth,
                expired: false,
            })
            .der,
        )
    };
    assert_eq!(subject(Some("agent-1"), &["a.example.com"]).as_deref(), Some("agent-1"));
    assert_eq!(
        subject(None, &["192.0.2.1", "a.example.com", "b.example.com"]).as_deref(),
        Some("a.example.com")
    );
    assert_eq!(subject(None, &["192.0.2.1"]), None, "an IP address is not a name");
    assert_eq!(subject(Some("line\nbreak"), &[]), None, "control characters");
    assert_eq!(tls::certificate_subject(b"not a certificate"), None);
}

// -------------------------------------------------------------------------------------------------
// Files, rotation, shutdown

#[tokio::test]
async fn rotated_certificate_files_are_served_to_new_connections() {
    let fx = fixture();
    let pki = Pki::new();
    let server = Running::start(&fx, pki.files(None)).await;
    let client = || rustls_client(&pki.server_ca, &[&rustls::version::TLS13], None, &[]);
    let served = |exchange: Exchange| exchange.server_certificate.expect("a server certificate");
    assert_eq!(
        served(exchange(server.addr, client(), "/health").await.expect("served")),
        pki.server.der
    );
    assert!(!server.tls.reload().expect("files readable"), "nothing changed");

    let renewed = pki.server_ca.server();
    pki.rotate(&renewed);
    assert!(server.tls.reload().expect("the new files load"));
    assert_eq!(
        served(exchange(server.addr, client(), "/health").await.expect("served")),
        renewed.der
    );

    // Half a rotation (a new certificate, the old key): refused, the last good pair stays.
    let next = pki.server_ca.server();
    pki.scratch.write("tls.crt", &next.cert_pem);
    let error = server.tls.reload().expect_err("a key that does not match is refused");
    assert!(error.to_string().contains("tls.crt"), "{error}");
    assert!(
        !server.tls.reload().expect("reported once"),
        "the same bad files are not retried"
    );
    assert_eq!(
        served(exchange(server.addr, client(), "/health").await.expect("served")),
        renewed.der
    );
    pki.scratch.write("tls.key", &next.key_pem);
    assert!(server.tls.reload().expect("the completed rotation loads"));
    assert_eq!(
        served(exchange(server.addr, client(), "/health").await.expect("served")),
        next.der
    );
}

#[test]
fn invalid_tls_files_are_refused() {
    let pki = Pki::new();
    let other = pki.server_ca.server();
    let mismatched_key = pki.scratch.write("other.key", &other.key_pem);
    let empty = pki.scratch.write("empty.pem", "");
    let missing = pki.scratch.0.join("missing.pem");
    let cases = [
        (
            TlsFiles {
                key: mismatched_key,
                ..pki.files(None)
            },
            "certificate",
        ),
        (
            TlsFiles {
                cert: empty.clone(),
                ..pki.files(None)
            },
            "no CERTIFICATE",
        ),
        (
            TlsFiles {
                key: pki.cert_file.clone(),
                ..pki.files(None)
            },
            "no usable PRIVATE KEY",
        ),
        (
            TlsFiles {
                client_ca: Some(empty),
                ..pki.files(Some(ClientAuth::Required))
            },
            "no CERTIFICATE",
        ),
        (
            TlsFiles {
                cert: missing,
                ..pki.files(None)
            },
            "cannot read",
        ),
    ];
    for (files, expected) in cases {
        match TlsConfig::load(files.clone()) {
            Ok(_) => panic!("{files:?} must be refused"),
            Err(error) => assert!(error.to_string().contains(expected), "{files:?}: {error}"),
        }
    }
    let config = TlsConfig::load(pki.files(Some(ClientAuth::Required))).expect("valid files");
    assert_eq!(config.current().alpn_protocols, [b"h2".to_vec(), b"http/1.1".to_vec()]);
}

#[tokio::test]
async fn shutdown_closes_idle_connections_and_returns() {
    let fx = fixture();
    let pki = Pki::new();
    let server = Running::start(&fx, pki.files(None)).await;
    // An idle keep-alive connection.
    let client = https(&pki.server_ca, server.addr, None).build().expect("client");
    assert_eq!(
        client.get(server.url("/health")).send().await.expect("TLS").status(),
        200
    );
    // A connection stuck before its handshake.
    let _silent = TcpStream::connect(server.addr).await.expect("connect");
    let addr = server.addr;
    server.stop().await.expect("clean shutdown");
    assert!(TcpStream::connect(addr).await.is_err(), "no longer listening");
}

#[test]
fn tls_flags_come_in_consistent_sets() {
    #[derive(clap::Parser, Debug)]
    struct Parser {
        #[command(flatten)]
        serve: ServeArgs,
    }
    use clap::Parser as _;
    let parse = |args: &[&str]| Parser::try_parse_from(std::iter::once("palisade-server").chain(args.iter().copied()));
    let parsed = parse(&["--tls-cert", "c.pem", "--tls-key", "k.pem"]).expect("cert and key");
    let files = TlsFiles::from_args(&parsed.serve).expect("TLS on");
    assert_eq!(files.cert, Path::new("c.pem"));
    assert_eq!(files.client_ca, None);
    let parsed =
        parse(&["--tls-cert", "c.pem", "--tls-key", "k.pem", "--tls-client-ca", "ca.pem"]).expect("with a client CA");
    let files = TlsFiles::from_args(&parsed.serve).expect("TLS on");
    assert_eq!(files.client_auth, ClientAuth::Optional, "optional by default");
    let parsed = parse(&[
        "--tls-cert",
        "c.pem",
        "--tls-key",
        "k.pem",
        "--tls-client-ca",
        "ca.pem",
        "--tls-client-auth",
        "required",
    ])
    .expect("required");
    assert_eq!(
        TlsFiles::from_args(&parsed.serve).expect("TLS on").client_auth,
        ClientAuth::Required
    );
    assert_eq!(TlsFiles::from_args(&parse(&[]).expect("no TLS").serve), None);
    for invalid in [
        &["--tls-cert", "c.pem"][..],
        &["--tls-key", "k.pem"],
        &["--tls-client-ca", "ca.pem"],
        &[
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
            "--tls-client-auth",
            "required",
        ],
        &[
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
            "--tls-client-ca",
            "ca.pem",
            "--tls-client-auth",
            "sometimes",
        ],
    ] {
        assert!(parse(invalid).is_err(), "{invalid:?} must be refused");
    }
}

// -------------------------------------------------------------------------------------------------
// The real binary

/// A port free at the time of asking.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("address")
        .port()
}

/// The server process, killed on drop if still running.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn eventually<T, F: Future<Output = Option<T>>>(what: &str, mut probe: impl FnMut() -> F) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_binary_serves_tls_and_mtls_from_its_environment() {
    let fx = fixture();
    let pki = Pki::new();
    let (port, metrics_port) = (free_port(), free_port());
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
    let audit_file = pki.scratch.0.join("audit.log");
    let log_file = std::fs::File::create(pki.scratch.0.join("server.log")).expect("log file");
    let mut process = Process(
        Command::new(env!("CARGO_BIN_EXE_palisade-server"))
            .arg("serve")
            .env_clear()
            .env("PALISADE_POLICY_FILE", fx.dir.path().join("policy.yaml"))
            .env("PALISADE_DOCUMENTS_DIR", &fx.documents_dir)
            .env("PALISADE_LISTEN", addr.to_string())
            .env("PALISADE_METRICS_LISTEN", format!("127.0.0.1:{metrics_port}"))
            .env("PALISADE_AUDIT_LOG", &audit_file)
            .env("PALISADE_RELOAD_INTERVAL", "1s")
            .env("PALISADE_LOG", "debug")
            .env("PALISADE_TLS_CERT", &pki.cert_file)
            .env("PALISADE_TLS_KEY", &pki.key_file)
            .env("PALISADE_TLS_CLIENT_CA", &pki.client_ca_file)
            .env("PALISADE_TLS_CLIENT_AUTH", "optional")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("start palisade-server"),
    );
    let log = || std::fs::read_to_string(pki.scratch.0.join("server.log")).unwrap_or_default();

    let leaf = pki.client_ca.client("agent-strategist");
    let client = https(&pki.server_ca, addr, Some(&leaf)).build().expect("client");
    let ready = server_url(port, "/ready");
    eventually("readiness over TLS", || async {
        let response = client.get(&ready).send().await.ok()?;
        (response.status() == 200).then_some(())
    })
    .await;

    let (status, body) = tools_list(&client, &server_url(port, "/mcp"), None)
        .await
        .expect("request");
    assert_eq!(status, 200, "{body}\n{}", log());
    assert_eq!(tool_names(&body), ["get_confidential_info", "get_public_info"]);
    let audit = std::fs::read_to_string(&audit_file).expect("audit file");
    let events: Vec<Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    let event = authentication(&events);
    assert_eq!(event["auth_method"], "client_certificate", "{audit}");
    assert_eq!(event["subject"], "agent-strategist");
    assert_eq!(event["client_address"], "127.0.0.1");

    // Plain HTTP on the MCP port fails; metrics stay plain HTTP.
    let plain = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    assert!(
        plain
            .get(format!("http://127.0.0.1:{port}/health"))
            .send()
            .await
            .is_err()
    );
    let metrics = plain
        .get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .send()
        .await
        .expect("metrics over plain HTTP")
        .text()
        .await
        .expect("metrics");
    assert!(
        metrics.contains(
            r#"mcp_authentication_attempts_total{method="client_certificate",result="success",reason="ok"} 1"#
        ),
        "{metrics}"
    );

    // A handshake failure is logged at debug level and the server goes on.
    let stranger = Ca::new("stranger").client("agent-strategist");
    let refused = rustls_client(&pki.server_ca, &[&rustls::version::TLS13], Some(&stranger), &[]);
    assert_alert(exchange(addr, refused, "/health").await, AlertDescription::UnknownCA);

    // Rotation: the watcher picks up new files within the reload interval.
    let renewed = pki.server_ca.server();
    pki.rotate(&renewed);
    let probe = rustls_client(&pki.server_ca, &[&rustls::version::TLS13], None, &[]);
    eventually("the rotated certificate", || {
        let probe = probe.clone();
        let renewed = renewed.der.clone();
        async move {
            let exchange = exchange(addr, probe, "/health").await.ok()?;
            (exchange.server_certificate? == renewed).then_some(())
        }
    })
    .await;
    let text = log();
    assert!(text.contains("TLS handshake failed"), "{text}");
    assert!(text.contains("TLS certificate reloaded"), "{text}");

    // SIGTERM: graceful shutdown, exit status 0.
    let pid = process.0.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = process.0.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "the server did not stop\n{}", log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success(), "{status:?}\n{}", log());
}

fn server_url(port: u16, path: &str) -> String {
    format!("https://localhost:{port}{path}")
}

#[test]
fn the_binary_refuses_to_start_without_usable_tls_files() {
    let fx = fixture();
    let pki = Pki::new();
    let output = Command::new(env!("CARGO_BIN_EXE_palisade-server"))
        .arg("serve")
        .env_clear()
        .args(["--policy-file".as_ref(), fx.dir.path().join("policy.yaml").as_os_str()])
        .args(["--documents-dir".as_ref(), fx.documents_dir.as_os_str()])
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--metrics-listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--tls-cert".as_ref(), pki.scratch.0.join("missing.crt").as_os_str()])
        .args(["--tls-key".as_ref(), pki.key_file.as_os_str()])
        .stdin(Stdio::null())
        .output()
        .expect("run palisade-server");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot load the TLS certificate"), "{stderr}");

    // A certificate without its key (here from the environment) is a usage error.
    let output = Command::new(env!("CARGO_BIN_EXE_palisade-server"))
        .arg("serve")
        .env_clear()
        .env("PALISADE_TLS_CERT", &pki.cert_file)
        .stdin(Stdio::null())
        .output()
        .expect("run palisade-server");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--tls-key"), "{stderr}");
}
