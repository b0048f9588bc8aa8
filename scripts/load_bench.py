#!/usr/bin/env python3
"""Load benchmark of palisade-server over loopback, with wrk.

One release server, one policy (the company-info sample) that accepts every way of authenticating
at once: HS256 tokens, RS256 tokens verified through a JWKS served on loopback, an API key, and
anonymous callers bound to the same role. Every variant posts the same MCP request, so the
differences between rows are the cost of each way of authenticating. The audit log is on and goes
where production sends it: standard output, which the container runtime writes to a file (here a
file under target/bench/).

Writes the figures between the `load` markers of docs/benchmarks.md.
"""
import argparse
import datetime
import hashlib
import http.server
import json
import os
import pathlib
import re
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time

import jwt
import yaml
from cryptography.hazmat.primitives.asymmetric import rsa

ROOT = pathlib.Path(__file__).resolve().parent.parent
WORK = ROOT / "target" / "bench"
SERVER = ROOT / "target" / "release" / "palisade-server"
DOC = ROOT / "docs" / "benchmarks.md"
LUA = ROOT / "bench" / "wrk_mcp.lua"
BEGIN, END = "<!-- load:begin -->", "<!-- load:end -->"
RS_ISSUER = "palisade-bench-rs256"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_jwks(jwks: dict) -> int:
    body = json.dumps(jwks).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server naming)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    port = free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return port


def prepare() -> dict:
    """Compiles the sample, adds the bench issuers, keys and anonymous binding; returns tokens."""
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    out = subprocess.run(
        [SERVER, "policy", "compile", ROOT / "config/samples/company-info.yaml",
         "--secrets-dir", WORK / "secrets", "--documents-dir", WORK / "documents"],
        check=True, capture_output=True, text=True).stdout
    policy = yaml.safe_load(out)
    auth = policy["authentication"]
    resource = auth["resource"]

    hmac_key = secrets.token_bytes(32)
    for issuer in auth["issuers"]:
        if "hmacKeyFile" in issuer["keys"]:
            path = pathlib.Path(issuer["keys"]["hmacKeyFile"])
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(hmac_key)

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))
    public_jwk.update({"kid": "bench-1", "use": "sig", "alg": "RS256"})
    jwks_port = serve_jwks({"keys": [public_jwk]})
    auth["issuers"].append({
        "issuer": RS_ISSUER, "audiences": [resource], "algorithms": ["RS256"],
        "keys": {"jwksUri": f"http://127.0.0.1:{jwks_port}/jwks.json"},
    })

    api_key = "pk_bench_" + secrets.token_hex(16)
    table = WORK / "secrets" / "api-keys.yaml"
    table.write_text(yaml.safe_dump({
        "apiVersion": "palisade.dev/v1alpha1", "kind": "ApiKeyTable",
        "keys": [{"id": "bench", "sha256": hashlib.sha256(api_key.encode()).hexdigest(),
                  "scopes": ["public:read"]}]}))
    auth["apiKeysFile"] = str(table)
    auth["allowAnonymous"] = True
    policy["bindings"].append({"role": "employee", "anonymous": True})
    (WORK / "policy.yaml").write_text(yaml.safe_dump(policy, sort_keys=False))

    now = int(time.time())
    claims = {"sub": "bench", "aud": resource, "iat": now, "exp": now + 3600, "scope": "public:read"}
    return {
        "anonymous": "",
        "HS256": "Authorization: Bearer " + jwt.encode({**claims, "iss": "palisade-dev"}, hmac_key, "HS256"),
        "RS256": "Authorization: Bearer " + jwt.encode({**claims, "iss": RS_ISSUER}, private, "RS256",
                                                       headers={"kid": "bench-1"}),
        "API key": "X-API-Key: " + api_key,
    }


def wrk(url: str, connections: int, seconds: int, body: str, header: str) -> dict:
    env = dict(os.environ, MCP_BODY=body, MCP_AUTH_HEADER=header)
    out = subprocess.run(
        ["wrk", "-t", "2", "-c", str(connections), "-d", f"{seconds}s", "--latency", "-s", str(LUA), url],
        check=True, capture_output=True, text=True, env=env).stdout
    result = json.loads(out.strip().splitlines()[-1])
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    return result


def rss_mib(pid: int) -> float:
    status = pathlib.Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--repetitions", type=int, default=1)
    parser.add_argument("--connections", default="1,16,64")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed: apt-get install wrk")

    tokens = prepare()
    port, metrics_port = free_port(), free_port()
    audit = open(WORK / "audit.log", "wb")
    server = subprocess.Popen(
        [SERVER, "serve", "--policy-file", WORK / "policy.yaml", "--documents-dir", WORK / "documents",
         "--listen", f"127.0.0.1:{port}", "--metrics-listen", f"127.0.0.1:{metrics_port}",
         "--audit-log", "stdout", "--log", "warn"],
        stdout=audit, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/mcp"
    try:
        for _ in range(100):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                time.sleep(0.1)
        call = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                           "params": {"name": "get_public_info", "arguments": {}}})
        listing = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
        cases = [(name, "tools/call", call, header) for name, header in tokens.items()]
        cases.append(("HS256", "tools/list", listing, tokens["HS256"]))
        for _, _, body, header in cases:  # warm-up, and a check that every variant answers 200
            result = wrk(url, 4, 2, body, header)
            if result["non_2xx"] or result["requests"] == 0:
                raise SystemExit(f"warm-up failed: {result}")
        results = {}
        for rep in range(args.repetitions):
            for connections in [int(c) for c in args.connections.split(",")]:
                for name, method, body, header in cases:
                    r = wrk(url, connections, args.seconds, body, header)
                    results.setdefault((name, method, connections), []).append(r)
                    print(f"rep {rep + 1} {method:10} {name:9} c={connections:2}: {r['rps']:9.0f} req/s "
                          f"p50 {r['p50_us']} µs p99 {r['p99_us']} µs errors {r['non_2xx']}", flush=True)
        rss = rss_mib(server.pid)
    finally:
        server.terminate()
        server.wait()
        audit.close()
    write_report(results, rss, args)


def write_report(results: dict, rss: float, args) -> None:
    def med(key, field):
        return statistics.median(r[field] for r in results[key])

    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    lines = [BEGIN,
             f"Measured {datetime.date.today().isoformat()} on {os.cpu_count()} cores ({cpu}); "
             f"wrk 2 threads, {args.seconds} s per point, median of {args.repetitions} run(s); "
             "server and load generator share the machine.",
             "Command: `make bench` (`scripts/load_bench.py`).", "",
             "| request | authentication | connections | requests/s | p50 | p99 | non-2xx |",
             "|---|---|---|---|---|---|---|"]
    for (name, method, connections) in results:
        key = (name, method, connections)
        errors = sum(r["non_2xx"] + r["connect_errors"] + r["read_errors"] + r["timeouts"] for r in results[key])
        lines.append(f"| `{method}` | {name} | {connections} | {med(key, 'rps'):,.0f} | "
                     f"{med(key, 'p50_us') / 1000:.2f} ms | {med(key, 'p99_us') / 1000:.2f} ms | {errors} |")
    lines += ["", "Ratios of requests/s for `tools/call` (same server, same run):", ""]
    for connections in sorted({c for (_, _, c) in results}):
        rps = {name: med((name, "tools/call", connections), "rps") for name in ("anonymous", "HS256", "RS256", "API key")}
        lines.append(f"- {connections} connections: HS256 / anonymous = {rps['HS256'] / rps['anonymous']:.2f}; "
                     f"RS256 / HS256 = {rps['RS256'] / rps['HS256']:.2f}; API key / HS256 = {rps['API key'] / rps['HS256']:.2f}")
    lines += ["", f"Resident memory of the server after the run: {rss:.1f} MiB.", END]
    block = "\n".join(lines)
    text = DOC.read_text()
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
    if not pattern.search(text):
        raise SystemExit(f"{DOC} has no {BEGIN} block")
    DOC.write_text(pattern.sub(lambda _: block, text))
    print(block)


if __name__ == "__main__":
    sys.exit(main())
