//! The cluster suite: Palisade against a real Kubernetes control plane (etcd, kube-apiserver,
//! kube-controller-manager built from the upstream Go modules; see `tests/cluster/README.md`).
//!
//! `make e2e` runs it (and `make test`, after building the control plane). Every case works in
//! namespaces of its own on one control plane started for the run.

mod cases;
mod support;

use std::process::ExitCode;

fn main() -> ExitCode {
    support::harness::run(cases::ALL)
}
