//! The suite's runner: one control plane for every case (each case works in namespaces of its
//! own), cases run one after another, a summary with the count of passed, failed and skipped.
//!
//! A control plane that cannot start is a failure when `CI` is set, and otherwise a skip with
//! the command that fixes it (`make cluster-build`).

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use futures::FutureExt;
use palisade_cluster::{ControlPlane, Error};

use super::Cluster;

/// A case of the suite.
pub type CaseFn = for<'a> fn(&'a mut Cluster) -> Pin<Box<dyn Future<Output = ()> + 'a>>;

/// How long one case may take.
const CASE_TIMEOUT: Duration = Duration::from_secs(300);

/// Runs `cases` (those whose name contains the first free argument, if any) on a fresh control
/// plane.
pub fn run(cases: &[(&'static str, CaseFn)]) -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        for (name, _) in cases {
            println!("{name}: test");
        }
        return ExitCode::SUCCESS;
    }
    let filter = args.iter().find(|a| !a.starts_with('-')).cloned();
    let selected: Vec<_> = cases
        .iter()
        .filter(|(name, _)| filter.as_deref().is_none_or(|f| name.contains(f)))
        .collect();
    let _ = rustls::crypto::ring::default_provider().install_default();
    // The binaries the cases run (the operator, and the server in pods) are built before the
    // control plane starts: a case never spends its time limits on a build (a cold build of
    // either is minutes on two cores).
    let built = Instant::now();
    crate::support::operator::binary();
    palisade_e2e::server_binary();
    eprintln!(
        "operator and server binaries built in {:.1} s",
        built.elapsed().as_secs_f64()
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async move {
        let dir = palisade_cluster::target_dir()
            .join("cluster")
            .join(format!("suite-{}", std::process::id()));
        let start = Instant::now();
        let plane = match ControlPlane::start(&dir).await {
            Ok(plane) => plane,
            Err(error) => return cannot_start(&error, selected.len()),
        };
        eprintln!(
            "control plane ready in {:.1} s at {} ({})",
            start.elapsed().as_secs_f64(),
            plane.server_url(),
            dir.display()
        );
        let client = plane.admin_client().await.expect("admin client");
        let mut cluster = Cluster { plane, client };
        // Every case needs the CRDs; the `api` cases check how they installed.
        crate::cases::api::crds_install_and_are_established(&mut cluster).await;
        let mut failed = Vec::new();
        for (name, case) in &selected {
            eprintln!("case {name}");
            let started = Instant::now();
            let outcome = tokio::time::timeout(CASE_TIMEOUT, AssertUnwindSafe(case(&mut cluster)).catch_unwind()).await;
            let verdict = match outcome {
                Ok(Ok(())) => "ok",
                Ok(Err(_)) => {
                    failed.push(*name);
                    "FAILED"
                }
                Err(_) => {
                    failed.push(*name);
                    "FAILED (timed out)"
                }
            };
            eprintln!("case {name} ... {verdict} ({:.1} s)", started.elapsed().as_secs_f64());
        }
        let passed = selected.len() - failed.len();
        eprintln!(
            "\ncluster suite: {passed} passed; {} failed; 0 skipped; {:.0} s",
            failed.len(),
            start.elapsed().as_secs_f64()
        );
        drop(cluster);
        if failed.is_empty() {
            let _ = std::fs::remove_dir_all(&dir);
            ExitCode::SUCCESS
        } else {
            eprintln!(
                "failed: {}\nlogs of the control plane: {}/logs",
                failed.join(", "),
                dir.display()
            );
            print_operator_logs(&dir.join("logs"));
            ExitCode::FAILURE
        }
    })
}

fn cannot_start(error: &Error, cases: usize) -> ExitCode {
    if std::env::var_os("CI").is_some() {
        eprintln!("cluster suite: the control plane did not start: {error}");
        ExitCode::FAILURE
    } else {
        eprintln!(
            "cluster suite: {cases} skipped: the control plane did not start ({error}); \
             `make e2e` builds and starts it (with CI=true this is a failure)"
        );
        ExitCode::SUCCESS
    }
}

/// The last lines of every operator's log (CI keeps only the output).
fn print_operator_logs(dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("operator-") {
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        eprintln!("--- the last lines of {name}");
        for line in &lines[lines.len().saturating_sub(20)..] {
            eprintln!("{line}");
        }
    }
}
