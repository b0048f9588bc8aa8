//! A local Kubernetes control plane for tests and development: `etcd`, `kube-apiserver` and
//! `kube-controller-manager`, built from the upstream Go modules pinned in
//! `tests/cluster/controlplane/` (see its README), started on loopback with certificates made
//! afresh, RBAC authorization, a service-account issuer and signing key, and an admin kubeconfig.
//!
//! There is no kubelet, scheduler or container runtime: Pods are created (by the controller
//! manager's ReplicaSet controller) but never run. Tests that need a pod's process run it
//! themselves (see the cluster suite's `kubelet` module).

#![forbid(unsafe_code)]

mod control_plane;
mod kubeconfig;
mod pki;

use std::path::{Path, PathBuf};

pub use control_plane::{Component, ControlPlane, Ports, client_for};
pub use kubeconfig::{Credentials, write_kubeconfig};
pub use pki::{Pair, Pki};

/// What can go wrong starting or driving the control plane.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A binary of the control plane has not been built.
    #[error("{0} is missing: build the control plane with `make cluster-build` (tests/cluster/controlplane/build.sh)")]
    NotBuilt(PathBuf),
    /// A certificate could not be generated.
    #[error("certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    /// A process of the control plane exited or never became ready.
    #[error("{component} {problem}; the last lines of {log}:\n{tail}")]
    NotReady {
        /// Which process.
        component: &'static str,
        /// What happened.
        problem: String,
        /// Its log file.
        log: String,
        /// The end of that log.
        tail: String,
    },
    /// The kubeconfig gave no client.
    #[error("kubeconfig {path}: {message}")]
    Kubeconfig {
        /// The kubeconfig.
        path: PathBuf,
        /// Why.
        message: String,
    },
}

impl Error {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_owned(),
            source,
        }
    }
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("repository root")
        .to_path_buf()
}

/// The cargo target directory.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| repo_root().join("target"), PathBuf::from)
}

/// Where `controlplane/build.sh` puts the binaries.
pub fn bin_dir() -> PathBuf {
    target_dir().join("cluster/bin")
}
