#!/usr/bin/env bash
# Builds the local control plane of the cluster suite from the upstream Go modules pinned in
# tests/cluster/go.mod: kube-apiserver and kube-controller-manager (k8s.io/kubernetes) and etcd
# (go.etcd.io/etcd/server/v3, at the version that Kubernetes release's own go.mod names).
#
# Binaries land in target/cluster/bin; Go's build and module caches live under target/go, so a
# second run (or `cargo clean`-free rebuild) only relinks what changed, and a stamp keyed on
# go.mod + go.sum + this script makes an unchanged tree a no-op.
set -euo pipefail
root="$(cd "$(dirname "$0")/../../.." && pwd)"
module="$root/tests/cluster/controlplane"
out="$root/target/cluster/bin"
stamp="$out/.stamp"

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-modcacherw
export GOCACHE="$root/target/go/cache" GOMODCACHE="$root/target/go/mod"

k8s_version="$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" {print $3}' "$module/go.mod")"
etcd_version="$(awk '$1 == "go.etcd.io/etcd/server/v3" {print $2}' "$module/go.mod")"
want="$(cat "$module/go.mod" "$module/go.sum" "$0" | sha256sum | cut -d' ' -f1)"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]] \
  && [[ -x "$out/kube-apiserver" && -x "$out/kube-controller-manager" && -x "$out/etcd" ]]; then
  echo "control plane $k8s_version (etcd $etcd_version) is up to date in ${out#"$root"/}"
  exit 0
fi

command -v go >/dev/null || { echo "go is required to build the control plane (Go 1.26 or newer)" >&2; exit 1; }
mkdir -p "$out"
echo "building kube-apiserver, kube-controller-manager $k8s_version and etcd $etcd_version (cold: about 20 minutes on 2 cores)"
start=$SECONDS
major="${k8s_version#v}"; major="${major%%.*}"
minor="${k8s_version#v*.}"; minor="${minor%%.*}"
pkg=k8s.io/component-base/version
ldflags="-s -w -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
cd "$module"
go build -trimpath -ldflags "$ldflags" -o "$out/" \
  k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager
go build -trimpath -ldflags "-s -w" -o "$out/etcd" go.etcd.io/etcd/server/v3
echo "$want" > "$stamp"
echo "built in $((SECONDS - start)) s: $("$out/kube-apiserver" --version), etcd $("$out/etcd" --version | head -1)"
