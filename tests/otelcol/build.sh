#!/usr/bin/env bash
# Builds the OpenTelemetry Collector the tests run (main.go: the OTLP and filelog receivers and the
# file exporter, from the collector's own Go modules at the release pinned in go.mod; contrib
# v0.165.1 with core v0.165.0 / v1.71.0). The binary lands in target/otelcol/bin/otelcol, Go's build
# and module caches are the control plane's (target/go), and a stamp keyed on go.mod, go.sum,
# main.go and this script makes an unchanged tree a no-op.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
module="$root/tests/otelcol"
out="$root/target/otelcol/bin"
binary="$out/otelcol"
stamp="$out/.stamp-otelcol"

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-modcacherw
export GOCACHE="$root/target/go/cache" GOMODCACHE="$root/target/go/mod"

want="$(cat "$module/go.mod" "$module/go.sum" "$module/main.go" "$0" | sha256sum | cut -d' ' -f1)"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" && -x "$binary" ]]; then
  echo "the OpenTelemetry Collector is up to date in ${binary#"$root"/}"
  exit 0
fi

command -v go >/dev/null || { echo "go is required to build the OpenTelemetry Collector (Go 1.26 or newer)" >&2; exit 1; }
mkdir -p "$out"
echo "building the OpenTelemetry Collector (cold: a few minutes on 2 cores)"
start=$SECONDS
cd "$module"
go build -trimpath -ldflags "-s -w" -o "$binary" .
echo "$want" > "$stamp"
echo "built the OpenTelemetry Collector in $((SECONDS - start)) s ($(du -h "$binary" | cut -f1))"
