//! `palisade-server` command line: `serve`, `token`, `policy check`, `policy compile`, `policy explain`.
//! Documents (tokens, policies, reports) go to standard output; logs, warnings and errors to
//! standard error.

#![forbid(unsafe_code)]

use std::io::IsTerminal as _;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use palisade_server::audit::{AuditSink, AuditSinkConfig};
use palisade_server::config::{AuditTarget, ServeArgs};
use palisade_server::mcp::proxy::Proxy;
use palisade_server::metrics::Metrics;
use palisade_server::state::AppState;
use palisade_server::tls::{TlsConfig, TlsFiles};
use palisade_server::upstream::endpoint::{self, Upstream};
use palisade_server::{edge, http, policy_cli, state, tls, token};

#[derive(Parser)]
#[command(name = "palisade-server", version, about = "The Palisade MCP server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve MCP on the mounted policy and documents.
    Serve(Box<ServeArgs>),
    /// Mint an HS256 development token.
    Token(token::TokenArgs),
    /// Check, compile or explain policies: McpServer and McpAccessPolicy manifests, or compiled
    /// PolicyDocuments.
    #[command(subcommand)]
    Policy(policy_cli::PolicyCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(*args),
        Command::Token(args) => match token::mint(&args) {
            Ok(token) => {
                println!("{token}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("error: {error}");
                ExitCode::from(2)
            }
        },
        Command::Policy(command) => policy_cli::run(command),
    }
}

fn init_logging(args: &ServeArgs) {
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log).unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if args.log_format == "text" {
        // Colours only for a person at a terminal, never into a redirected file or a pipe.
        builder.with_ansi(std::io::stderr().is_terminal()).init();
    } else {
        builder.json().flatten_event(true).with_current_span(false).init();
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    init_logging(&args);
    // NB: reqwest is built without a default crypto provider; install ring once, before any client.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "cannot start the runtime");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(args))
}

async fn run(args: ServeArgs) -> ExitCode {
    let audit = match AuditSink::new(match &args.audit_log {
        AuditTarget::Stdout => AuditSinkConfig::Stdout,
        AuditTarget::Stderr => AuditSinkConfig::Stderr,
        AuditTarget::File(path) => AuditSinkConfig::File(path.clone()),
    }) {
        Ok(audit) => audit,
        Err(error) => {
            tracing::error!(%error, target = ?args.audit_log, "cannot open the audit log");
            return ExitCode::FAILURE;
        }
    };
    let http_client = match palisade_server::auth::cluster_issuer::http_client_builder().build() {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(%error, "cannot build the HTTP client");
            return ExitCode::FAILURE;
        }
    };
    let metrics = Arc::new(Metrics::new());
    // Trace export, when the OTEL_* variables ask for it: a value that cannot be honoured stops
    // the start, as an invalid flag would.
    let tracing_export = match palisade_telemetry::TraceSettings::from_env("palisade-server") {
        Ok(None) => None,
        Ok(Some(settings)) => match palisade_telemetry::Tracing::install(&settings, metrics.trace_export.clone()) {
            Ok(export) => {
                tracing::info!(
                    protocol = ?settings.protocol,
                    sampler = ?settings.sampler,
                    service = %settings.service_name,
                    "exporting traces"
                );
                Some(export)
            }
            Err(error) => {
                tracing::error!(%error, "cannot export traces");
                return ExitCode::FAILURE;
            }
        },
        Err(error) => {
            tracing::error!(error = %palisade_telemetry::TelemetryError::from(error), "cannot export traces");
            return ExitCode::FAILURE;
        }
    };
    let upstream = match Upstream::from_args(&args) {
        Ok(upstream) => upstream,
        Err(error) => {
            tracing::error!(%error, "cannot stand in front of the upstream");
            return ExitCode::FAILURE;
        }
    };
    let mut state = AppState::new(args.clone(), metrics.clone(), audit.clone(), http_client);
    // One for the life of the process, shared by every request without a reference count:
    // an atomic counter written by every request on every core costs more than the request's
    // whole unsampled trace.
    state.tracer = tracing_export
        .as_ref()
        .map(|export| &*Box::leak(Box::new(export.deciding_tracer("palisade-server"))));
    state.proxy = upstream.map(|(upstream, peer)| {
        tokio::spawn(endpoint::report_state(upstream.state(), metrics.clone()));
        Proxy::new(upstream, peer, args.upstream_timeout, metrics)
    });
    let state = Arc::new(state);
    {
        let state = state.clone();
        // A missing or invalid policy at start-up is not fatal: /ready says why, and the watcher
        // keeps trying, so a pod whose ConfigMap arrives late becomes ready on its own.
        let _ = tokio::task::spawn_blocking(move || state.reload()).await;
    }
    tokio::spawn(state::watch(state.clone()));

    // Unlike the policy, the TLS files must be valid at start-up: without them there is nothing
    // to serve.
    let tls = match TlsFiles::from_args(&args).map(TlsConfig::load).transpose() {
        Ok(tls) => tls.map(Arc::new),
        Err(error) => {
            tracing::error!(%error, "cannot load the TLS certificate");
            return ExitCode::FAILURE;
        }
    };
    if let Some(tls) = &tls {
        tokio::spawn(tls::watch(tls.clone(), args.reload_interval));
    }

    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!(%error, address = %args.listen, "cannot listen");
            return ExitCode::FAILURE;
        }
    };
    let metrics_listener = match tokio::net::TcpListener::bind(args.metrics_listen).await {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!(%error, address = %args.metrics_listen, "cannot listen for metrics");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(
        listen = %args.listen,
        metrics = %args.metrics_listen,
        tls = tls.is_some(),
        client_ca = args.tls_client_ca.is_some(),
        "serving MCP at /mcp"
    );
    // Concurrency, timeouts and load shedding are per request, in `http`; connections are
    // bounded by `edge`, on the plain and the TLS listener alike.
    let app = http::app(state.clone());
    let connections = edge::Connections::new(edge::EdgeLimits::from_args(&args), state.metrics.clone());
    let mcp = edge::serve(listener, app, connections, tls, shutdown_signal());
    let metrics =
        axum::serve(metrics_listener, http::metrics_app(state.clone())).with_graceful_shutdown(shutdown_signal());
    let result = tokio::try_join!(mcp, metrics.into_future());
    tracing::info!("shutting down");
    let _ = tokio::task::spawn_blocking(move || audit.flush()).await;
    if let Some(export) = tracing_export {
        export.shutdown(Duration::from_secs(5)).await;
    }
    match result {
        Ok(_) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "server error");
            ExitCode::FAILURE
        }
    }
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {}
        _ = terminate => {}
    }
}
