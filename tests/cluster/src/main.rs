//! `palisade-cluster`: start and stop the local control plane for development (`make cluster`,
//! `make cluster-down`).
//!
//! - `up [DIR]`: starts etcd, kube-apiserver and kube-controller-manager in DIR (default
//!   `target/cluster/run`), waits until the API server is ready, installs the Palisade CRDs, and
//!   prints how to use it; the processes keep running after the command exits.
//! - `down [DIR]`: stops the processes `up` started.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::Instant;

use palisade_cluster::{ControlPlane, target_dir};

fn default_dir() -> PathBuf {
    target_dir().join("cluster/run")
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let command = args.next().unwrap_or_default();
    let dir = args.next().map_or_else(default_dir, PathBuf::from);
    let result = match command.as_str() {
        "up" => up(dir),
        "down" => down(&dir),
        _ => Err("usage: palisade-cluster up|down [DIR]".to_owned()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("palisade-cluster: {message}");
            ExitCode::FAILURE
        }
    }
}

fn up(dir: PathBuf) -> Result<(), String> {
    down(&dir)?;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let start = Instant::now();
    let plane = runtime.block_on(ControlPlane::start(&dir)).map_err(|e| e.to_string())?;
    let kubeconfig = plane.admin_kubeconfig().to_owned();
    let server = plane.server_url();
    let elapsed = start.elapsed();
    plane.detach().map_err(|e| e.to_string())?;
    let crds = palisade_cluster::repo_root().join("crds");
    let status = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["apply", "--server-side", "-k"])
        .arg(&crds)
        .status()
        .map_err(|e| format!("kubectl: {e}"))?;
    if !status.success() {
        return Err(format!("kubectl apply -k {} failed", crds.display()));
    }
    println!(
        "control plane ready in {:.1} s at {server} (etcd, kube-apiserver, kube-controller-manager; no kubelet)\n\
         \n  export KUBECONFIG={}\n  kubectl get mcpservers,mcpaccesspolicies -A\n  \
         kubectl apply -f config/samples/company-info.yaml\n  \
         cargo run -p palisade-operator -- run --disable-leader-election --metrics-listen 127.0.0.1:8081\n\
         \nlogs: {}/logs; stop with `make cluster-down`",
        elapsed.as_secs_f64(),
        kubeconfig.display(),
        dir.display()
    );
    Ok(())
}

fn down(dir: &std::path::Path) -> Result<(), String> {
    let pids = dir.join("pids");
    let Ok(text) = std::fs::read_to_string(&pids) else {
        return Ok(());
    };
    // Reverse start order: the controller manager, the API server, then etcd.
    for line in text.lines().rev() {
        let Some((pid, name)) = line.split_once(' ') else {
            continue;
        };
        // Only a process that still runs the binary we started (pids get reused).
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
        if exe.file_name().and_then(|n| n.to_str()) == Some(name) {
            let _ = Command::new("kill").arg(pid).status();
            println!("stopped {name} ({pid})");
        }
    }
    std::fs::remove_file(&pids).map_err(|e| format!("{}: {e}", pids.display()))
}
