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
  echo "$name: $requests requests, $((total / requests)) instructions per request (SHA-256: $((sha / requests)))"
}
call='{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_public_info","arguments":{}}}'
list='{"jsonrpc":"2.0","id":1,"method":"tools/list"}'
serve=("$server" serve --policy-file "$work/policy.yaml" --documents-dir "$work/documents"
  --listen 127.0.0.1:18080 --metrics-listen 127.0.0.1:19090 --audit-log "$work/audit.log")
count palisade-tools-call "$call" "${serve[@]}"
count palisade-tools-list "$list" "${serve[@]}"
# The bare axum ceiling of `make bench`, when it has been built there.
ceiling=target/bench-crates/release/palisade-bench-ceiling
if [[ -x $ceiling ]]; then
  count ceiling-tools-call "$call" "$ceiling" 127.0.0.1:18080 target/bench/ceiling-results.json
else
  echo "ceiling: $ceiling not built (make bench builds it); skipped"
fi
