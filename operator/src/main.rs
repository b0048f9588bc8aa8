//! `palisade-operator`: the Palisade Kubernetes operator.
//!
//! Subcommands:
//! - `run`: the controllers, against the cluster of the kubeconfig or the pod's service account,
//!   with leader election, `/health`, `/ready` and `/metrics`.
//! - `crds`: print the CustomResourceDefinitions (`kubectl apply -f -` ready), or write them into a
//!   directory, one file per CRD; `--reference FILE` also writes their Markdown reference
//!   (see [`palisade_operator::crd_reference`]).
//! - `render`: offline, no cluster: every child object of the McpServers in some YAML files, as
//!   the operator would apply them (see [`palisade_operator::render`]).

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use palisade_crds::mcp_server::ImagePullPolicy;
use palisade_crds::telemetry::{OtlpProtocol, TelemetrySpec, TraceSampler};
use palisade_operator::render::{Inputs, render};
use palisade_operator::settings::{DEFAULT_CLUSTER_DOMAIN, DEFAULT_SERVER_IMAGE, OperatorPods, Settings};

#[derive(Parser)]
#[command(name = "palisade-operator", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controllers (in a cluster, or against the cluster of KUBECONFIG).
    Run(RunArgs),
    /// Print the CustomResourceDefinitions as multi-document YAML.
    Crds {
        /// Write one file per CRD into this directory instead of printing them.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
        /// Also write the Markdown reference of the CRDs to this file (docs/crd-reference.md).
        #[arg(long, value_name = "FILE")]
        reference: Option<PathBuf>,
    },
    /// Print every child object of the McpServers in FILEs and DIRs as multi-document YAML,
    /// offline (the preview of what the operator applies). Exits 1, printing nothing, when a
    /// server or a policy is invalid or a policy's tests fail.
    Render(RenderArgs),
}

#[derive(clap::Args)]
struct RenderArgs {
    /// YAML file, directory (every *.yaml / *.yml below it) or `-` for standard input. Repeatable.
    #[arg(short = 'f', long = "filename", value_name = "FILE|DIR", required = true, num_args = 1..)]
    filenames: Vec<PathBuf>,
    /// Namespace of objects that name none.
    #[arg(short = 'n', long, default_value = "default")]
    namespace: String,
    #[command(flatten)]
    settings: SettingsArgs,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Watch only these namespaces (comma-separated, or the flag repeated): McpServers,
    /// McpAccessPolicies and every child, ConfigMap, Secret and pod the operator reads. The
    /// operator then needs a Role in each of them, and no ClusterRole (config/overlays/namespaced,
    /// Helm value `watchNamespaces`). Default: every namespace.
    #[arg(
        long,
        env = "PALISADE_WATCH_NAMESPACES",
        value_delimiter = ',',
        value_name = "NAMESPACE"
    )]
    watch_namespaces: Vec<String>,
    /// Deprecated: one namespace to watch, the same as `--watch-namespaces NAMESPACE` (added to
    /// that list).
    #[arg(long, env = "PALISADE_NAMESPACE", hide = true)]
    namespace: Option<String>,
    /// Namespace of the leader-election Lease (default: the pod's namespace, else `default`).
    #[arg(long, env = "PALISADE_LEADER_ELECTION_NAMESPACE")]
    leader_election_namespace: Option<String>,
    /// Name of the leader-election Lease.
    #[arg(long, env = "PALISADE_LEADER_ELECTION_NAME", default_value = "palisade-operator")]
    leader_election_name: String,
    /// Run without leader election (one replica only).
    #[arg(long, env = "PALISADE_DISABLE_LEADER_ELECTION")]
    disable_leader_election: bool,
    /// Address of /health, /ready and /metrics.
    #[arg(long, env = "PALISADE_METRICS_LISTEN", default_value = "0.0.0.0:8080")]
    metrics_listen: SocketAddr,
    /// Log format.
    #[arg(long, env = "PALISADE_LOG_FORMAT", value_enum, default_value = "json")]
    log_format: LogFormatArg,
    #[command(flatten)]
    settings: SettingsArgs,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormatArg {
    Json,
    Text,
}

/// Operator-wide settings, shared with `run`.
#[derive(clap::Args)]
struct SettingsArgs {
    /// Server image for McpServers that do not set spec.image.
    #[arg(long, env = "PALISADE_SERVER_IMAGE", default_value = DEFAULT_SERVER_IMAGE)]
    server_image: String,
    /// Image pull policy for McpServers that do not set spec.imagePullPolicy.
    #[arg(long, env = "PALISADE_SERVER_IMAGE_PULL_POLICY", value_enum)]
    server_image_pull_policy: Option<PullPolicy>,
    /// The cluster's DNS domain.
    #[arg(long, env = "PALISADE_CLUSTER_DOMAIN", default_value = DEFAULT_CLUSTER_DOMAIN)]
    cluster_domain: String,
    /// Namespace of the operator's own pods (the Deployment sets POD_NAMESPACE from the downward
    /// API). With --operator-pod-selector, every McpServer's NetworkPolicy lets the operator's
    /// pods reach the server pods' MCP port, whose `GET /ready` reports the policy they serve.
    #[arg(long, env = "POD_NAMESPACE")]
    operator_namespace: Option<String>,
    /// Labels of the operator's own pods, `key=value` items, comma-separated.
    #[arg(
        long,
        env = "PALISADE_OPERATOR_POD_SELECTOR",
        value_delimiter = ',',
        value_name = "KEY=VALUE"
    )]
    operator_pod_selector: Vec<String>,
    /// OTLP endpoint the server pods export traces to, for McpServers whose spec.telemetry sets
    /// none (`http://` or `https://`).
    #[arg(long, env = "PALISADE_SERVER_OTLP_ENDPOINT")]
    server_otlp_endpoint: Option<String>,
    /// OTLP protocol of the server pods' trace export, for McpServers whose spec.telemetry sets
    /// none.
    #[arg(long, env = "PALISADE_SERVER_OTLP_PROTOCOL", value_parser = ["grpc", "http/protobuf"])]
    server_otlp_protocol: Option<String>,
    /// Share of the traces starting at a server pod that are recorded ("0" to "1"), for
    /// McpServers whose spec.telemetry sets none.
    #[arg(long, env = "PALISADE_SERVER_TRACE_SAMPLING_RATIO")]
    server_trace_sampling_ratio: Option<String>,
    /// Sampler of the server pods (`parentbased_traceidratio`: follow a caller's trace context;
    /// `traceidratio`: the ratio alone), for McpServers whose spec.telemetry sets none.
    #[arg(long, env = "PALISADE_SERVER_TRACE_SAMPLER", value_parser = ["parentbased_traceidratio", "traceidratio"])]
    server_trace_sampler: Option<String>,
    /// Resource attributes of every server pod's spans, `key=value` items, comma-separated;
    /// an McpServer's spec.telemetry.resourceAttributes win key by key.
    #[arg(
        long,
        env = "PALISADE_SERVER_OTLP_RESOURCE_ATTRIBUTES",
        value_delimiter = ',',
        value_name = "KEY=VALUE"
    )]
    server_otlp_resource_attributes: Vec<String>,
}

#[derive(Clone, Copy, ValueEnum)]
#[value(rename_all = "PascalCase")]
enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl TryFrom<SettingsArgs> for Settings {
    type Error = String;

    fn try_from(args: SettingsArgs) -> Result<Self, String> {
        Ok(Self {
            server_image: args.server_image,
            image_pull_policy: args.server_image_pull_policy.map(|p| match p {
                PullPolicy::Always => ImagePullPolicy::Always,
                PullPolicy::IfNotPresent => ImagePullPolicy::IfNotPresent,
                PullPolicy::Never => ImagePullPolicy::Never,
            }),
            operator_pods: OperatorPods::from_parts(args.operator_namespace.as_deref(), &args.operator_pod_selector)?,
            cluster_domain: args.cluster_domain,
            server_telemetry: {
                let mut resource_attributes = BTreeMap::new();
                for item in args.server_otlp_resource_attributes.iter().filter(|i| !i.is_empty()) {
                    let Some((key, value)) = item.split_once('=') else {
                        return Err(format!(
                            "the server pods' trace export (--server-otlp-resource-attributes): {item:?} is not KEY=VALUE"
                        ));
                    };
                    resource_attributes.insert(key.to_owned(), value.to_owned());
                }
                let telemetry = TelemetrySpec {
                    enabled: None,
                    endpoint: args.server_otlp_endpoint.filter(|e| !e.is_empty()),
                    protocol: match args.server_otlp_protocol.as_deref() {
                        Some("grpc") => Some(OtlpProtocol::Grpc),
                        Some("http/protobuf") => Some(OtlpProtocol::HttpProtobuf),
                        _ => None,
                    },
                    sampling_ratio: args.server_trace_sampling_ratio.filter(|r| !r.is_empty()),
                    sampler: args.server_trace_sampler.as_deref().and_then(TraceSampler::parse),
                    service_name: None,
                    resource_attributes,
                };
                if let Some(problem) = telemetry.problem() {
                    return Err(format!("the server pods' trace export (--server-otlp-*): {problem}"));
                }
                telemetry
            },
        })
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crds { out_dir, reference } => crds(out_dir, reference),
        Command::Render(args) => render_command(args),
        Command::Run(args) => run::run(args),
    }
}

mod run {
    //! `palisade-operator run`.

    use std::future::Future;
    use std::process::ExitCode;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use futures::FutureExt;
    use palisade_operator::controller::scope::WatchScope;
    use palisade_operator::controller::{self, RunOptions};
    use palisade_operator::http::{AppState, app};
    use palisade_operator::leader::{LeaderElector, Timing};
    use palisade_operator::metrics::Metrics;
    use palisade_operator::settings::Settings;
    use palisade_operator::telemetry::{self, LogFormat};
    use palisade_telemetry::{ExportMetrics, TelemetryError, TraceSettings, Tracing};
    use prometheus_client::registry::Registry;
    use tokio::sync::watch;

    use super::{LogFormatArg, RunArgs};

    /// How long in-flight reconciles may take to finish after a shutdown signal.
    const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

    pub fn run(args: RunArgs) -> ExitCode {
        // NB: kube's rustls needs a process-wide crypto provider; install ring's before any
        // client exists. It fails only when one is installed already, which is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let format = match args.log_format {
            LogFormatArg::Json => LogFormat::Json,
            LogFormatArg::Text => LogFormat::Text,
        };
        let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
            Ok(runtime) => runtime,
            Err(error) => {
                telemetry::init(format, None);
                tracing::error!(%error, "cannot start the runtime");
                return ExitCode::FAILURE;
            }
        };
        // Trace export (when the OTEL_* variables ask for it) starts its task on the runtime,
        // before the subscriber that feeds it is installed.
        let export_metrics = ExportMetrics::default();
        let export = {
            let _runtime = runtime.enter();
            TraceSettings::from_env("palisade-operator")
                .map_err(TelemetryError::from)
                .and_then(|settings| {
                    settings
                        .map(|settings| Tracing::install(&settings, export_metrics.clone()).map(|t| (t, settings)))
                        .transpose()
                })
        };
        let export = match export {
            Ok(export) => {
                telemetry::init(format, export.as_ref().map(|(t, _)| t.tracer("palisade-operator")));
                if let Some((_, settings)) = &export {
                    tracing::info!(
                        protocol = ?settings.protocol,
                        sampler = ?settings.sampler,
                        service = %settings.service_name,
                        "exporting traces"
                    );
                }
                export.map(|(tracing, _)| tracing)
            }
            Err(error) => {
                telemetry::init(format, None);
                tracing::error!(%error, "cannot export traces");
                return ExitCode::FAILURE;
            }
        };
        let stopped = runtime.block_on(async {
            let stopped = serve(args, export_metrics).await;
            if let Some(export) = export {
                export.shutdown(Duration::from_secs(5)).await;
            }
            stopped
        });
        match stopped {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                tracing::error!(error = %error, "palisade-operator stopped");
                ExitCode::FAILURE
            }
        }
    }

    async fn serve(args: RunArgs, export_metrics: ExportMetrics) -> Result<(), String> {
        if args.namespace.is_some() {
            tracing::warn!(
                "--namespace (PALISADE_NAMESPACE) is deprecated; use --watch-namespaces (PALISADE_WATCH_NAMESPACES)"
            );
        }
        let scope = WatchScope::from_list(args.watch_namespaces.iter().chain(args.namespace.iter()))
            .map_err(|e| e.to_string())?;
        let settings = Settings::try_from(args.settings)?;
        let mut registry = Registry::default();
        let metrics = Arc::new(Metrics::new(&mut registry));
        export_metrics.register(registry.sub_registry_with_prefix("palisade_operator"));
        let clients = controller::Clients::infer(Some(metrics.clone()))
            .await
            .map_err(|e| format!("no Kubernetes client (in-cluster config or KUBECONFIG): {e}"))?;
        let client = clients.calls.clone();
        let ready = Arc::new(AtomicBool::new(false));

        // One shutdown signal for everything: SIGTERM/SIGINT, or a lost Lease.
        let (stop_tx, stop_rx) = watch::channel(false);
        let stop_signal = stop_tx.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            tracing::info!("shutting down");
            let _ = stop_signal.send(true);
        });
        let stopped = {
            let rx = stop_rx.clone();
            async move {
                let mut rx = rx;
                let _ = rx.wait_for(|stop| *stop).await;
            }
            .shared()
        };

        let listener = tokio::net::TcpListener::bind(args.metrics_listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", args.metrics_listen))?;
        tracing::info!(address = %args.metrics_listen, "serving /health, /ready and /metrics");
        let router = app(AppState {
            registry: Arc::new(registry),
            ready: ready.clone(),
        });
        let http = tokio::spawn(
            axum::serve(listener, router)
                .with_graceful_shutdown(stopped.clone())
                .into_future(),
        );

        let elector = (!args.disable_leader_election).then(|| {
            let namespace = args
                .leader_election_namespace
                .clone()
                .or_else(|| std::env::var("POD_NAMESPACE").ok())
                .unwrap_or_else(|| "default".into());
            let identity = std::env::var("POD_NAME")
                .or_else(|_| std::env::var("HOSTNAME"))
                .unwrap_or_else(|_| format!("palisade-operator-{}", std::process::id()));
            LeaderElector::with_timing(
                client.clone(),
                &namespace,
                &args.leader_election_name,
                &identity,
                Timing::default(),
            )
        });
        let lost = Arc::new(AtomicBool::new(false));
        if let Some(elector) = &elector {
            // A follower is ready: it stands by.
            ready.store(true, Ordering::Relaxed);
            if !acquire(elector, stopped.clone()).await {
                let _ = http.await;
                return Ok(());
            }
            tracing::info!("leading; starting the controllers");
            let renewer = elector.clone();
            let lose = stop_tx.clone();
            let lost = lost.clone();
            let renewing = tokio::spawn(async move { keep_renewing(&renewer).await });
            tokio::spawn(async move {
                // NB: a renewer that panics is a lost Lease too: leading on without renewing
                // would let a second replica take the Lease and lead at the same time.
                if !renewing.await.unwrap_or(false) {
                    // Exit at once: a graceful stop would let in-flight reconciles write on
                    // after another replica may have taken the Lease.
                    tracing::error!("lost the leader Lease; exiting");
                    lost.store(true, Ordering::Relaxed);
                    let _ = lose.send(true);
                    std::process::exit(1);
                }
            });
        }
        ready.store(true, Ordering::Relaxed);
        let options = RunOptions { scope: scope.clone() };
        let controllers = controller::run(clients, settings, options, metrics, stopped.clone());
        // NB: kube holds a controller's runner until its cache is ready, and a graceful shutdown
        // waits for it; without an API server that is forever. Bound the wait (well within the
        // pod's default 30 s termination grace period).
        let deadline = {
            let stopped = stopped.clone();
            async move {
                stopped.await;
                tokio::time::sleep(SHUTDOWN_GRACE).await;
            }
        };
        tokio::select! {
            () = controllers => {}
            () = deadline => tracing::warn!(grace = ?SHUTDOWN_GRACE, "the controllers did not stop in time; exiting"),
        }
        if let Some(elector) = &elector
            && !lost.load(Ordering::Relaxed)
            && let Err(error) = elector.release().await
        {
            tracing::warn!(%error, "cannot release the leader Lease");
        }
        let _ = http.await;
        if lost.load(Ordering::Relaxed) {
            Err("lost the leader Lease".into())
        } else {
            Ok(())
        }
    }

    /// Waits until this replica leads; `false` when shut down first.
    async fn acquire(elector: &LeaderElector, stopped: impl Future<Output = ()>) -> bool {
        let attempt = async {
            loop {
                match elector.try_acquire_or_renew().await {
                    Ok(true) => return true,
                    Ok(false) => tracing::debug!("another replica leads; standing by"),
                    Err(error) => tracing::warn!(%error, "cannot read the leader Lease"),
                }
                tokio::time::sleep(elector.timing().retry_period).await;
            }
        };
        tokio::select! {
            leads = attempt => leads,
            () = stopped => false,
        }
    }

    /// Renews the Lease every retry period; returns `false` (step down) when no renewal has
    /// succeeded within the renew deadline. Each attempt is bounded by the time left, so a hung
    /// call cannot carry the holder past the point where others may take over.
    async fn keep_renewing(elector: &LeaderElector) -> bool {
        let timing = elector.timing();
        let mut last_renewal = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(timing.retry_period).await;
            loop {
                let left = timing.renew_deadline.saturating_sub(last_renewal.elapsed());
                if left.is_zero() {
                    return false;
                }
                match tokio::time::timeout(left, elector.try_acquire_or_renew()).await {
                    Ok(Ok(true)) => {
                        last_renewal = tokio::time::Instant::now();
                        break;
                    }
                    Ok(Ok(false)) => return false,
                    Ok(Err(error)) => tracing::warn!(%error, "cannot renew the leader Lease"),
                    Err(_) => tracing::warn!("renewing the leader Lease timed out"),
                }
                tokio::time::sleep(timing.retry_period.min(left)).await;
            }
        }
    }

    async fn shutdown_signal() {
        let interrupt = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(_) => {
                    let _ = interrupt.await;
                    return;
                }
            };
            tokio::select! {
                _ = interrupt => {}
                _ = terminate.recv() => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = interrupt.await;
        }
    }
}

fn render_command(args: RenderArgs) -> ExitCode {
    let settings = match Settings::try_from(args.settings) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    let rendered = Inputs::read(&args.filenames, &args.namespace).and_then(|inputs| render(&inputs, &settings));
    match rendered {
        Ok(rendered) => {
            for warning in &rendered.warnings {
                eprintln!("warning: {warning}");
            }
            print!("{}", rendered.yaml);
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

fn crds(out_dir: Option<PathBuf>, reference: Option<PathBuf>) -> ExitCode {
    if let Some(path) = reference
        && let Err(error) = std::fs::write(&path, palisade_operator::crd_reference::reference())
    {
        eprintln!("error: cannot write {}: {error}", path.display());
        return ExitCode::FAILURE;
    }
    let yamls = palisade_crds::crd_yamls();
    match out_dir {
        None => {
            let documents: Vec<&str> = yamls.iter().map(String::as_str).collect();
            print!("---\n{}", documents.join("---\n"));
            ExitCode::SUCCESS
        }
        Some(dir) => {
            for (file, yaml) in palisade_crds::CRD_FILES.iter().zip(&yamls) {
                let path = dir.join(file);
                if let Err(error) = std::fs::write(&path, yaml) {
                    eprintln!("error: cannot write {}: {error}", path.display());
                    return ExitCode::FAILURE;
                }
            }
            ExitCode::SUCCESS
        }
    }
}
