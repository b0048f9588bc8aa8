#!/usr/bin/env bash
# Builds External Secrets Operator's controller (the module's own `main` package, unmodified) from
# the Go module pinned in tests/cluster/eso/go.mod, for the cluster suite's External Secrets case.
#
# A module of its own: External Secrets Operator pins other k8s.io versions (v0.32) than the
# control plane's module (v0.37). The binary lands in target/cluster/bin/external-secrets, Go's
# build and module caches are the control plane's (target/go), and a stamp keyed on go.mod,
# go.sum and this script makes an unchanged tree a no-op. It also checks that the CRDs vendored
# in crds/ are byte for byte those of the module it built (SHA256SUMS).
set -euo pipefail
root="$(cd "$(dirname "$0")/../../.." && pwd)"
module="$root/tests/cluster/eso"
out="$root/target/cluster/bin"
binary="$out/external-secrets"
stamp="$out/.stamp-external-secrets"
package=github.com/external-secrets/external-secrets

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-modcacherw
export GOCACHE="$root/target/go/cache" GOMODCACHE="$root/target/go/mod"

version="$(awk '$1 == "require" && $2 == "'"$package"'" {print $3}' "$module/go.mod")"
want="$(cat "$module/go.mod" "$module/go.sum" "$module/crds/SHA256SUMS" "$0" | sha256sum | cut -d' ' -f1)"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" && -x "$binary" ]]; then
  echo "External Secrets Operator $version is up to date in ${binary#"$root"/}"
  exit 0
fi

command -v go >/dev/null || { echo "go is required to build External Secrets Operator (Go 1.26 or newer)" >&2; exit 1; }
mkdir -p "$out"
echo "building External Secrets Operator $version (cold: about 12 minutes on 2 cores)"
start=$SECONDS
cd "$module"
go build -trimpath -ldflags "-s -w" -o "$binary" "$package"
# The vendored CRDs must be the built version's own (config/crds/bases of the module).
source_dir="$(go list -m -f '{{.Dir}}' "$package")/config/crds/bases"
(cd "$source_dir" && sha256sum --quiet -c "$module/crds/SHA256SUMS") \
  || { echo "tests/cluster/eso/crds/ differ from $package $version's config/crds/bases" >&2; exit 1; }
echo "$want" > "$stamp"
echo "built External Secrets Operator $version in $((SECONDS - start)) s ($(du -h "$binary" | cut -f1))"
