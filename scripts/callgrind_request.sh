#!/usr/bin/env bash
# Instructions per request of palisade-server (user space, all threads), counted by callgrind:
# figures that do not depend on machine noise, for finding and checking costs on the request path
# (docs/benchmarks.md, "Where a request's time goes").
#
# Usage: scripts/callgrind_request.sh [SECONDS]   (default 15; needs valgrind and wrk)
#
# Builds palisade-server (release, with line tables) into target/profile, serves the company-info
# sample with an HMAC issuer and the audit log on (to a file), warms up 3 s, then counts while wrk
# (1 thread, 4 connections) posts an HS256 `tools/call` of get_public_info, and then a
# `tools/list`, for SECONDS each; the same for the bench's bare axum ceiling when it is built. Prints instructions per request and the SHA-256 share of them.
# Then the `tools/call` again with trace export on (OTLP gRPC to the OpenTelemetry Collector that
# `make cluster-build` builds, when it is there): with `OTEL_TRACES_SAMPLER=always_off` (every
# request takes the unsampled path), at 1% (`parentbased_traceidratio`) and with every trace
# recorded (`always_on`), against export off.
# The callgrind files stay in target/callgrind/ for callgrind_annotate.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-15}
for tool in valgrind callgrind_control callgrind_annotate wrk; do
  command -v "$tool" >/dev/null || { echo "$tool is missing (Debian: apt-get install valgrind wrk)" >&2; exit 1; }
done
work=target/callgrind
server=target/profile/release/palisade-server
rm -rf "$work" && mkdir -p "$work"
CARGO_PROFILE_RELEASE_DEBUG=line-tables-only CARGO_PROFILE_RELEASE_STRIP=false \
  cargo build -q --release --locked -p palisade-server --target-dir target/profile
"$server" policy compile config/samples/company-info.yaml --secrets-dir "$work/secrets" \
  --documents-dir "$work/documents" > "$work/policy.yaml"
mkdir -p "$work/secrets/company-info-jwt"
head -c 32 /dev/urandom | base64 > "$work/secrets/company-info-jwt/hmac-key"
token=$("$server" token --policy-file "$work/policy.yaml" --scope public:read --exp 1h)

count() { # name body command...
  local name=$1 body=$2 out="$work/callgrind.$1" pid requests total sha
  shift 2
  valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$out" "$@" > "$work/$name.log" 2>&1 &
  pid=$!
  for _ in $(seq 60); do curl -s -o /dev/null http://127.0.0.1:18080/ && break; sleep 0.5; done
  export MCP_BODY=$body MCP_AUTH_HEADER="Authorization: Bearer $token"
  callgrind_control -i on "$pid" >/dev/null 2>&1
  wrk -t1 -c4 -d3s -s bench/wrk_mcp.lua http://127.0.0.1:18080/mcp >/dev/null
  callgrind_control -z "$pid" >/dev/null 2>&1
  requests=$(wrk -t1 -c4 -d"${seconds}s" -s bench/wrk_mcp.lua http://127.0.0.1:18080/mcp | tail -1 |
    python3 -c 'import json, sys; r = json.load(sys.stdin); assert r["non_2xx"] == 0, r; print(r["requests"])')
  callgrind_control -i off "$pid" >/dev/null 2>&1
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" || true
  sum() { callgrind_annotate --inclusive=no --auto=no --threshold=100 "$out" 2>/dev/null |
    grep -v "PROGRAM TOTALS" | { grep -E "$1" || true; } | awk '{gsub(",", "", $1); s += $1} END {printf "%.0f", s}'; }
  total=$(sum '^ *[0-9,]+ +\(')
  sha=$(sum 'compress256')
  per_request=$((total / requests))
  echo "$name: $requests requests, $per_request instructions per request (SHA-256: $((sha / requests)))"
}
call='{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_public_info","arguments":{}}}'
list='{"jsonrpc":"2.0","id":1,"method":"tools/list"}'
serve=("$server" serve --policy-file "$work/policy.yaml" --documents-dir "$work/documents"
  --listen 127.0.0.1:18080 --metrics-listen 127.0.0.1:19090 --audit-log "$work/audit.log")
count palisade-tools-call "$call" "${serve[@]}"
export_off=$per_request
count palisade-tools-list "$list" "${serve[@]}"
# The bare axum ceiling of `make bench`, when it has been built there.
ceiling=target/bench-crates/release/palisade-bench-ceiling
if [[ -x $ceiling ]]; then
  count ceiling-tools-call "$call" "$ceiling" 127.0.0.1:18080 target/bench/ceiling-results.json
else
  echo "ceiling: $ceiling not built (make bench builds it); skipped"
fi
# Trace export on, against a real collector whose file exporter writes to /dev/null.
otelcol=target/otelcol/bin/otelcol
if [[ -x $otelcol ]]; then
  cat > "$work/otelcol.json" <<'JSON'
{"receivers": {"otlp": {"protocols": {"grpc": {"endpoint": "127.0.0.1:14317"}}}},
 "exporters": {"file": {"path": "/dev/null"}},
 "service": {"pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["file"]}},
             "telemetry": {"metrics": {"level": "none"}}}}
JSON
  "$otelcol" --config "$work/otelcol.json" > "$work/otelcol.log" 2>&1 &
  collector=$!
  trap 'kill "$collector" 2>/dev/null || true' EXIT
  traced() { # name sampler [argument]
    local name=$1
    shift
    # In the environment of the server (valgrind would not follow an `env` that execs it).
    OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:14317 OTEL_EXPORTER_OTLP_PROTOCOL=grpc \
      OTEL_TRACES_SAMPLER="$1" OTEL_TRACES_SAMPLER_ARG="${2:-}" count "$name" "$call" "${serve[@]}"
    echo "  $name: $((per_request - export_off)) more than export off" \
      "($(python3 -c "print(f'{($per_request - $export_off) / $export_off:+.1%}')"))"
  }
  traced traces-always-off always_off
  traced traces-1-percent parentbased_traceidratio 0.01
  traced traces-always-on always_on
  kill "$collector" 2>/dev/null || true
else
  echo "trace export: $otelcol not built (make cluster-build builds it); skipped"
fi
