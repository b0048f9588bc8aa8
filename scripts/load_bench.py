#!/usr/bin/env python3
"""Side-by-side load benchmark of palisade-server over loopback, with wrk.

Servers, all on 127.0.0.1, started once and kept running; only the one under load is busy (the
CPU the idle ones use during each point is measured and reported):

- **Palisade** (target/release/palisade-server), the company-info sample, one server that accepts
  every way of authenticating at once: HS256 tokens, RS256 tokens verified through a JWKS served
  on loopback, an API key, and anonymous callers bound to the same role; so rows differ only in
  how the caller authenticates. The audit log is on and goes where production sends it: standard
  output, which the container runtime writes to a file (here target/bench/audit.log).
- **peer**: the same two tools and scopes on FastMCP 4.1.2 (bench/fastmcp_peer.py, JWTVerifier on
  HS256, per-tool `require_scopes`), in its fastest configuration, in target/bench-venv.
- **ceiling**: a minimal axum endpoint that parses the JSON-RPC body and answers Palisade's own
  results, no auth (bench/ceiling): the limit of HTTP + JSON on the machine.
- **rmcp baseline**: the two tools on the official Rust SDK (rmcp 3.9), stateless Streamable HTTP,
  JSON responses, no auth (bench/rmcp-baseline): what the SDK would cost against Palisade's own
  JSON-RPC layer.
- **Palisade at the baseline commit** (with `--baseline-commit`; `make bench` names the last
  commit before the server's hardening): the release palisade-server of that commit
  (scripts/build_baseline.sh), its own company-info sample compiled by itself, the same issuers,
  keys and tokens, loaded with HS256 `tools/call` and `tools/list` in the same shuffled rounds, so
  that a regression shows as a same-run ratio.

Every server gets the same requests (a legacy-revision `tools/call` of `get_public_info` and a
`tools/list`, no `MCP-Protocol-Version` header) and, where it authenticates, the same HS256 token.
For each repetition, for each connection count, every case runs once, in a shuffled order
(interleaved repetitions); the report gives the median over repetitions. Repetitions are cut to
fit `--budget-minutes`, counted from the start of the enclosing `make` (or of this script).

Writes the figures between the `load` markers of docs/benchmarks.md, the plot
docs/benchmarks-rps.png, and the raw results to target/bench/results.json.
"""
import argparse
import datetime
import hashlib
import http.client
import http.server
import json
import os
import pathlib
import platform
import random
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
PNG = ROOT / "docs" / "benchmarks-rps.png"
LUA = ROOT / "bench" / "wrk_mcp.lua"
PEER = ROOT / "bench" / "fastmcp_peer.py"
PLOT = ROOT / "bench" / "plot_rps.py"
PEER_REQUIREMENTS = ROOT / "bench" / "requirements-peer.txt"
VENV = ROOT / "target" / "bench-venv"
CRATES_TARGET = ROOT / "target" / "bench-crates"
CRATES = {"ceiling": ("bench/ceiling", "palisade-bench-ceiling"),
          "rmcp": ("bench/rmcp-baseline", "palisade-bench-rmcp")}
BEGIN, END = "<!-- load:begin -->", "<!-- load:end -->"
RS_ISSUER = "palisade-bench-rs256"
HS_ISSUER = "palisade-dev"
CALL = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                   "params": {"name": "get_public_info", "arguments": {}}})
LIST = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
METHODS = {"tools/call": CALL, "tools/list": LIST}
# Display order of the rows: (server, authentication).
ORDER = [("Palisade", "anonymous"), ("Palisade", "HS256"), ("Palisade", "RS256"), ("Palisade", "API key"),
         ("Palisade baseline", "HS256"), ("rmcp baseline", "none"), ("FastMCP peer", "HS256"), ("ceiling", "none")]
BASELINE_WORK = WORK / "baseline"
T0 = time.time()


def log(message: str) -> None:
    print(f"[{time.time() - T0:6.1f} s] {message}", flush=True)


# ----------------------------------------------------------------------------------------------
# Time budget


def session_start() -> tuple[float, str]:
    """Start of the enclosing `make` (so that the budget covers the criterion part and the builds
    before this script), or of this script when it runs alone."""
    try:
        ticks = os.sysconf("SC_CLK_TCK")
        boot = next(int(l.split()[1]) for l in open("/proc/stat") if l.startswith("btime "))
        pid = os.getppid()
        while pid > 1:
            stat = proc_stat(pid)
            if pathlib.Path(f"/proc/{pid}/comm").read_text().strip() in ("make", "gmake"):
                return boot + stat[19] / ticks, "the start of `make`"
            pid = stat[1]
    except (OSError, StopIteration, ValueError, IndexError):
        pass
    return T0, "the start of the script"


# ----------------------------------------------------------------------------------------------
# Set-up: the peer's virtual environment and the two bench crates


def ensure_peer_venv() -> None:
    marker = VENV / ".installed"
    digest = hashlib.sha256(PEER_REQUIREMENTS.read_bytes()).hexdigest()
    if marker.exists() and marker.read_text() == digest:
        return
    log(f"installing the peer into {VENV.relative_to(ROOT)} ({PEER_REQUIREMENTS.relative_to(ROOT)})")
    shutil.rmtree(VENV, ignore_errors=True)
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", VENV], check=True)
    subprocess.run([VENV / "bin" / "pip", "install", "--quiet", "--disable-pip-version-check",
                    "-r", PEER_REQUIREMENTS], check=True)
    marker.write_text(digest)


def build_crates() -> dict:
    env = dict(os.environ, CARGO_TARGET_DIR=str(CRATES_TARGET))
    binaries = {}
    for name, (folder, binary) in CRATES.items():
        log(f"cargo build --release --locked --manifest-path {folder}/Cargo.toml")
        subprocess.run([os.environ.get("CARGO", "cargo"), "build", "--release", "--locked", "--quiet",
                        "--manifest-path", ROOT / folder / "Cargo.toml"], check=True, env=env)
        binaries[name] = CRATES_TARGET / "release" / binary
    return binaries


# ----------------------------------------------------------------------------------------------
# Policy, keys and tokens


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


def prepare(baseline: pathlib.Path | None = None) -> dict:
    """Compiles the sample, adds the bench issuers, keys and anonymous binding; returns tokens.
    With `baseline` (a palisade-server of another commit), also compiles that commit's own sample
    with it into BASELINE_WORK, with the same issuers, keys and binding."""
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    out = subprocess.run(
        [SERVER, "policy", "compile", ROOT / "config/samples/company-info.yaml",
         "--secrets-dir", WORK / "secrets", "--documents-dir", WORK / "documents"],
        check=True, capture_output=True, text=True).stdout
    policy = yaml.safe_load(out)
    auth = policy["authentication"]
    resource = auth["resource"]
    # Loopback only: drop issuers whose keys would be discovered on the network (Google).
    auth["issuers"] = [i for i in auth["issuers"] if "hmacKeyFile" in i["keys"]]

    # ASCII, so that Palisade (raw bytes of the file) and the peer (PyJWT/joserfc) use the same key.
    hmac_key = secrets.token_hex(32).encode()
    hmac_key_file = None
    for issuer in auth["issuers"]:
        if issuer["issuer"] == HS_ISSUER:
            hmac_key_file = pathlib.Path(issuer["keys"]["hmacKeyFile"])
            hmac_key_file.parent.mkdir(parents=True, exist_ok=True)
            hmac_key_file.write_bytes(hmac_key)
    if hmac_key_file is None:
        raise SystemExit(f"the sample has no {HS_ISSUER} issuer")

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))
    public_jwk.update({"kid": "bench-1", "use": "sig", "alg": "RS256"})
    jwks_port = serve_jwks({"keys": [public_jwk]})
    auth["issuers"].append({
        "issuer": RS_ISSUER, "audiences": [resource], "algorithms": ["RS256"],
        "keys": {"jwksUri": f"http://127.0.0.1:{jwks_port}/jwks.json"},
        # Plain HTTP on loopback: the server refuses http:// key URLs unless told so.
        "allowInsecureHttp": True,
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
    if baseline is not None:
        prepare_baseline(baseline, resource, hmac_key)

    now = int(time.time())
    claims = {"sub": "bench", "aud": resource, "iat": now, "exp": now + 3 * 3600, "scope": "public:read"}
    both = {**claims, "iss": HS_ISSUER, "scope": "public:read confidential:read"}
    return {
        "resource": resource,
        "hmac_key_file": hmac_key_file,
        "public_dir": WORK / "documents" / "public",
        "confidential_dir": WORK / "documents" / "confidential",
        "headers": {
            "anonymous": "",
            "HS256": "Authorization: Bearer " + jwt.encode({**claims, "iss": HS_ISSUER}, hmac_key, "HS256"),
            "RS256": "Authorization: Bearer " + jwt.encode({**claims, "iss": RS_ISSUER}, private, "RS256",
                                                           headers={"kid": "bench-1"}),
            "API key": "X-API-Key: " + api_key,
        },
        "both_scopes": "Authorization: Bearer " + jwt.encode(both, hmac_key, "HS256"),
    }


def prepare_baseline(binary: pathlib.Path, resource: str, hmac_key: bytes) -> None:
    """The baseline's policy: its own sample (target/baseline/<commit>/src), compiled by itself,
    loopback issuers only, the same HMAC key; it must accept the same HS256 tokens."""
    BASELINE_WORK.mkdir(parents=True)
    sample = binary.parent / "src" / "config" / "samples" / "company-info.yaml"
    out = subprocess.run(
        [binary, "policy", "compile", sample,
         "--secrets-dir", BASELINE_WORK / "secrets", "--documents-dir", BASELINE_WORK / "documents"],
        check=True, capture_output=True, text=True).stdout
    policy = yaml.safe_load(out)
    auth = policy["authentication"]
    if auth["resource"] != resource:
        raise SystemExit(f"the baseline's sample has resource {auth['resource']}, not {resource}")
    auth["issuers"] = [i for i in auth["issuers"] if "hmacKeyFile" in i["keys"]]
    for issuer in auth["issuers"]:
        if issuer["issuer"] == HS_ISSUER:
            key_file = pathlib.Path(issuer["keys"]["hmacKeyFile"])
            key_file.parent.mkdir(parents=True, exist_ok=True)
            key_file.write_bytes(hmac_key)
    (BASELINE_WORK / "policy.yaml").write_text(yaml.safe_dump(policy, sort_keys=False))


# ----------------------------------------------------------------------------------------------
# Processes


def proc_stat(pid: int) -> list:
    """Fields of /proc/PID/stat after the command name: [state, ppid, ...] (field 3 is index 0)."""
    text = pathlib.Path(f"/proc/{pid}/stat").read_text()
    return [text[text.rindex(")") + 2:].split()[0]] + [int(f) for f in text[text.rindex(")") + 2:].split()[1:]]


def process_tree(root: int) -> list[int]:
    parents = {}
    for entry in pathlib.Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = proc_stat(int(entry.name))[1]
            except (OSError, ValueError, IndexError):
                pass
    tree, frontier = [root], [root]
    while frontier:
        frontier = [pid for pid, parent in parents.items() if parent in frontier]
        tree += frontier
    return tree


class Server:
    def __init__(self, name: str, argv: list, port: int, *, stdout=subprocess.DEVNULL, env=None,
                 cpus: set = None, idle: bool = False):
        """`cpus`: the CPUs the process may run on (default: those of this script); `idle`: it
        runs only on CPU time nothing else wants (SCHED_IDLE), never preempting what is measured."""
        self.name, self.port = name, port
        self.url = f"http://127.0.0.1:{port}/mcp"
        # Standard error to a file (a pipe nobody reads could fill up and stall the server).
        self.stderr = WORK / f"{name.replace(' ', '-').lower()}.stderr.log"

        def pin():
            if cpus:
                os.sched_setaffinity(0, cpus)
            if idle:
                os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        with open(self.stderr, "wb") as stderr:
            self.process = subprocess.Popen([str(a) for a in argv], stdout=stdout, stderr=stderr,
                                            env=env, start_new_session=True,
                                            preexec_fn=pin if cpus or idle else None)
        self.pids = [self.process.pid]

    def wait_listening(self, timeout: float = 60) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"{self.name} exited: {self.stderr.read_text(errors='replace')}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    break
            except OSError:
                time.sleep(0.1)
        else:
            raise SystemExit(f"{self.name} does not listen on {self.port}")
        self.refresh()

    def refresh(self) -> None:
        """The server's processes (the peer's uvicorn workers start after the port listens)."""
        self.pids = process_tree(self.process.pid)

    def cpu_seconds(self) -> float:
        ticks = 0
        for pid in self.pids:
            try:
                stat = proc_stat(pid)
                ticks += stat[11] + stat[12]
            except (OSError, ValueError, IndexError):
                pass
        return ticks / os.sysconf("SC_CLK_TCK")

    def rss_mib(self) -> float:
        kib = 0
        for pid in self.pids:
            try:
                kib += int(re.search(r"VmRSS:\s+(\d+)", pathlib.Path(f"/proc/{pid}/status").read_text()).group(1))
            except (OSError, AttributeError):
                pass
        return kib / 1024

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, 15)  # its own session: the peer's workers too
            except ProcessLookupError:
                pass
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)
                self.process.wait()


# ----------------------------------------------------------------------------------------------
# Checks: every server answers every case with the same document, and the peer enforces scopes


def post(url: str, body: str, header: str) -> tuple[int, dict | None]:
    port = int(url.split(":")[2].split("/")[0])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    if header:
        name, value = header.split(":", 1)
        headers[name] = value.strip()
    conn.request("POST", "/mcp", body=body, headers=headers)
    response = conn.getresponse()
    data = response.read()
    conn.close()
    try:
        return response.status, json.loads(data)
    except ValueError:
        return response.status, None


def read_all(folder: pathlib.Path) -> str:
    """What a `readAll` tool returns for a collection (documents.rs, `ToolAction::ReadAll`)."""
    return "\n\n".join(f'<document name="{path.name}">\n{path.read_text().rstrip()}\n</document>'
                       for path in sorted(folder.iterdir()) if path.is_file())


def check(condition: bool, message: str) -> None:
    if not condition:
        raise SystemExit(f"check failed: {message}")


def answer(server: Server, body: str, header: str, retries: int = 50) -> dict:
    for _ in range(retries):
        status, reply = post(server.url, body, header)
        if status == 200 and reply and "result" in reply:
            return reply["result"]
        time.sleep(0.2)  # Palisade loads its policy after it starts listening
    raise SystemExit(f"{server.name} does not answer {body} ({header[:20]}…): {status} {reply}")


def verify(server: Server, header: str, document: str, listed: list[str]) -> dict:
    """The document comes back whole and the list is what the caller may see."""
    call = answer(server, CALL, header)
    check(call.get("isError") is not True and call["content"][0]["text"] == document,
          f"{server.name}: tools/call does not return the public document: {call}")
    listing = answer(server, LIST, header)
    check(sorted(t["name"] for t in listing["tools"]) == sorted(listed),
          f"{server.name}: tools/list shows {[t['name'] for t in listing['tools']]}, expected {listed}")
    return {"tools/call": call, "tools/list": listing}


def verify_enforcement(server: Server, tokens: dict, anonymous: bool) -> str:
    """The public token may not call the confidential tool; both scopes see both; no token: 401
    (unless the server lets anonymous callers in, as the bench policy of Palisade does)."""
    confidential = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                               "params": {"name": "get_confidential_info", "arguments": {}}})
    status, reply = post(server.url, confidential, tokens["headers"]["HS256"])
    secret = read_all(tokens["confidential_dir"])
    texts = [c.get("text", "") for c in ((reply or {}).get("result") or {}).get("content", [])]
    check(status != 200 or "error" in reply or (reply["result"].get("isError") and secret not in "".join(texts)),
          f"{server.name} lets the public token call get_confidential_info: {status} {reply}")
    denials = f"{status} " + json.dumps((reply or {}).get("error") or texts)[:120]
    both = answer(server, LIST, tokens["both_scopes"])
    check(sorted(t["name"] for t in both["tools"]) == ["get_confidential_info", "get_public_info"],
          f"{server.name}: a token with both scopes does not see both tools: {both}")
    status, _ = post(server.url, CALL, "")
    check(anonymous or status == 401, f"{server.name} answers a request without a token with {status}, expected 401")
    return denials


# ----------------------------------------------------------------------------------------------
# Load


def write_section(begin: str, end: str, text: str) -> None:
    """Puts `text` between the markers `begin` and `end` of docs/benchmarks.md (appended, with
    the markers, when they are not there yet)."""
    doc = DOC.read_text()
    if begin in doc:
        head, rest = doc.split(begin, 1)
        doc = head + begin + "\n" + text + "\n" + end + rest.split(end, 1)[1]
    else:
        doc = doc.rstrip() + "\n\n" + begin + "\n" + text + "\n" + end + "\n"
    DOC.write_text(doc)


def side_by_side_arguments(description: str, results: str, repetitions: int,
                           connections: str, extra=None) -> argparse.Namespace:
    """The command line of a side-by-side bench (proxy_bench, trace_bench): its defaults, and
    `--from-results` to write the report of target/bench/`results` without measuring; `extra`
    adds a bench's own arguments to the parser."""
    parser = argparse.ArgumentParser(description=description)
    if extra:
        extra(parser)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repetitions", type=int, default=repetitions)
    parser.add_argument("--connections", default=connections)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--from-results", action="store_true",
                        help=f"write the report of target/bench/{results} without measuring")
    return parser.parse_args()


def wrk(url: str, connections: int, seconds: float, body: str, header: str) -> dict:
    env = dict(os.environ, MCP_BODY=body, MCP_AUTH_HEADER=header)
    threads = min(2, connections)  # wrk needs a connection per thread
    out = subprocess.run(
        ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s", "--timeout", "10s",
         "--latency", "-s", str(LUA), url],
        check=True, capture_output=True, text=True, env=env).stdout
    result = json.loads(out.strip().splitlines()[-1])
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    result["errors"] = result["non_2xx"] + result["connect_errors"] + result["read_errors"] + result["timeouts"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10, help="duration of one point")
    parser.add_argument("--warmup", type=int, default=2, help="warm-up per case, seconds")
    parser.add_argument("--repetitions", type=int, default=3, help="at most this many; fewer if over budget")
    parser.add_argument("--budget-minutes", type=float, default=15,
                        help="time limit from the start of `make` (or of this script); 0: none")
    parser.add_argument("--connections", default="1,16,64")
    parser.add_argument("--peer-workers", type=int, default=len(os.sched_getaffinity(0)),
                        help="uvicorn worker processes of the peer (default: one per core, its fastest)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the shuffled order")
    parser.add_argument("--baseline-commit",
                        help="also load palisade-server built at this commit (scripts/build_baseline.sh), same run")
    parser.add_argument("--only", help="comma-separated servers to load (Palisade, rmcp, FastMCP, ceiling)")
    parser.add_argument("--no-write", action="store_true", help="print the report, leave docs/ alone")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed: apt-get install wrk")
    if not SERVER.exists():
        raise SystemExit(f"{SERVER} is missing: cargo build --release -p palisade-server")
    start, start_what = session_start()
    setup = {}

    # The peer's install (mostly downloads) runs while cargo builds (mostly CPU).
    venv_error = []

    def install() -> None:
        t = time.time()
        try:
            ensure_peer_venv()
        except BaseException as error:  # noqa: BLE001 (re-raised below)
            venv_error.append(error)
        setup["peer venv"] = time.time() - t

    installer = threading.Thread(target=install)
    installer.start()
    t = time.time()
    try:
        binaries = build_crates()
    finally:
        installer.join()
    setup["ceiling + rmcp builds"] = time.time() - t
    if venv_error:
        raise SystemExit(f"cannot install the peer: {venv_error[0]}")

    baseline = None
    if args.baseline_commit:
        t = time.time()
        baseline = pathlib.Path(subprocess.run(
            [ROOT / "scripts" / "build_baseline.sh", args.baseline_commit],
            check=True, capture_output=True, text=True).stdout.strip())
        setup["baseline build"] = time.time() - t
        log(f"baseline: {baseline}")
    tokens = prepare(baseline)
    headers = tokens["headers"]
    document = read_all(tokens["public_dir"])
    audit_path = WORK / "audit.log"
    audit = open(audit_path, "ab")  # appended, so that it can be truncated between points
    servers: dict[str, Server] = {}
    try:
        port = free_port()
        servers["Palisade"] = Server("Palisade", [
            SERVER, "serve", "--policy-file", WORK / "policy.yaml", "--documents-dir", WORK / "documents",
            "--listen", f"127.0.0.1:{port}", "--metrics-listen", f"127.0.0.1:{free_port()}",
            "--audit-log", "stdout", "--log", "warn"], port, stdout=audit)
        port = free_port()
        servers["FastMCP peer"] = Server("FastMCP peer", [
            VENV / "bin" / "python", PEER, "--port", port, "--workers", args.peer_workers,
            "--hmac-key-file", tokens["hmac_key_file"], "--issuer", HS_ISSUER, "--audience", tokens["resource"],
            "--public-dir", tokens["public_dir"], "--confidential-dir", tokens["confidential_dir"]], port)
        port = free_port()
        servers["rmcp baseline"] = Server("rmcp baseline", [
            binaries["rmcp"], f"127.0.0.1:{port}", tokens["public_dir"], tokens["confidential_dir"]], port)
        if baseline is not None:
            port = free_port()
            servers["Palisade baseline"] = Server("Palisade baseline", [
                baseline, "serve", "--policy-file", BASELINE_WORK / "policy.yaml",
                "--documents-dir", BASELINE_WORK / "documents",
                "--listen", f"127.0.0.1:{port}", "--metrics-listen", f"127.0.0.1:{free_port()}",
                "--audit-log", "stdout", "--log", "warn"], port, stdout=audit)
        for server in servers.values():
            server.wait_listening()

        log("checking every server and variant")
        if baseline is not None:
            verify(servers["Palisade baseline"], headers["HS256"], document, ["get_public_info"])
        results_of = verify(servers["Palisade"], headers["HS256"], document, ["get_public_info"])
        for variant in ("anonymous", "RS256", "API key"):
            verify(servers["Palisade"], headers[variant], document, ["get_public_info"])
        log("Palisade denies: " + verify_enforcement(servers["Palisade"], tokens, anonymous=True))
        verify(servers["FastMCP peer"], headers["HS256"], document, ["get_public_info"])
        log("peer denies: " + verify_enforcement(servers["FastMCP peer"], tokens, anonymous=False))
        verify(servers["rmcp baseline"], "", document, ["get_confidential_info", "get_public_info"])
        # The ceiling answers Palisade's own results, byte for byte the same documents.
        (WORK / "ceiling-results.json").write_text(json.dumps(results_of))
        port = free_port()
        servers["ceiling"] = Server("ceiling", [binaries["ceiling"], f"127.0.0.1:{port}",
                                                WORK / "ceiling-results.json"], port)
        servers["ceiling"].wait_listening()
        verify(servers["ceiling"], "", document, ["get_public_info"])

        # tools/call with every way of authenticating; tools/list with HS256 (the list is filtered
        # by the same evaluator whatever the authentication, and the budget is tight).
        cases = [("Palisade", variant, method) for method in METHODS
                 for variant in ("anonymous", "HS256", "RS256", "API key")
                 if method == "tools/call" or variant == "HS256"]
        cases += [(name, auth, method) for method in METHODS
                  for name, auth in (("rmcp baseline", "none"), ("FastMCP peer", "HS256"), ("ceiling", "none"))]
        if baseline is not None:
            cases += [("Palisade baseline", "HS256", method) for method in METHODS]
        if args.only:
            cases = [case for case in cases if any(o.strip() and o.strip().lower() in case[0].lower()
                                                   for o in args.only.split(","))]
            if not cases:
                raise SystemExit(f"--only {args.only}: no such server")
        connections = [int(c) for c in args.connections.split(",")]

        log(f"warm-up: {len(cases)} cases, {args.warmup:g} s each")
        t = time.time()
        for name, auth, method in cases:
            result = wrk(servers[name].url, max(connections), args.warmup, METHODS[method],
                         headers.get(auth, ""))
            if result["errors"] or result["requests"] == 0:
                raise SystemExit(f"warm-up of {name} {auth} {method} failed: {result}")
        overhead = (time.time() - t) / len(cases) - args.warmup
        for server in servers.values():
            server.refresh()

        points = len(cases) * len(connections)
        per_rep = points * (args.seconds + max(overhead, 0.2))
        budget_left = start + args.budget_minutes * 60 - time.time() - 30  # report, plot, shutdown
        repetitions = args.repetitions
        if args.budget_minutes > 0:
            repetitions = max(1, min(args.repetitions, int(budget_left // per_rep)))
        log(f"{points} points of {args.seconds:g} s per repetition (~{per_rep / 60:.1f} min); "
            f"{repetitions} of {args.repetitions} repetition(s) "
            + (f"fit the {args.budget_minutes:g} min budget counted from {start_what}" if args.budget_minutes > 0
               else "(no budget)"))

        rng = random.Random(args.seed)
        results: dict = {}
        interference = []
        for rep in range(repetitions):
            for c in connections:
                order = cases[:]
                rng.shuffle(order)
                for name, auth, method in order:
                    audit.truncate(0)
                    idle = {n: s.cpu_seconds() for n, s in servers.items() if n != name}
                    t = time.time()
                    r = wrk(servers[name].url, c, args.seconds, METHODS[method], headers.get(auth, ""))
                    wall = time.time() - t
                    r["idle_cpu"] = {n: (servers[n].cpu_seconds() - v) / wall for n, v in idle.items()}
                    r["idle_cpu_share"] = sum(r["idle_cpu"].values())
                    r["rss_mib"] = servers[name].rss_mib()
                    if name == "Palisade":
                        r["audit_bytes"] = audit_path.stat().st_size
                    interference.append(r["idle_cpu"])
                    if r["errors"]:
                        log(f"warning: {r['errors']} errors (non-2xx {r['non_2xx']}, timeouts {r['timeouts']})")
                    results.setdefault((name, auth, method, c), []).append(r)
                    log(f"rep {rep + 1}/{repetitions} c={c:<2} {method:10} {name:13} {auth:9}: "
                        f"{r['rps']:9.0f} req/s p50 {r['p50_us']:7} µs p99 {r['p99_us']:7} µs "
                        f"RSS {r['rss_mib']:5.1f} MiB errors {r['errors']}")
    finally:
        for server in servers.values():
            server.stop()
        audit.close()

    facts = machine_facts(args, repetitions, start_what, setup, interference,
                          [r for k, v in results.items() if k[0] == "Palisade" for r in v])
    facts["baseline_commit"] = (subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", args.baseline_commit],
                                               capture_output=True, text=True).stdout.strip()
                                if args.baseline_commit else None)
    (WORK / "results.json").write_text(json.dumps(
        {"facts": facts, "results": [{"server": k[0], "auth": k[1], "method": k[2], "connections": k[3],
                                      "runs": v} for k, v in results.items()]}, indent=1))
    block = report(results, connections, facts)
    print(block)
    if args.no_write:
        return
    plot(results, connections, facts)
    text = DOC.read_text()
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
    if not pattern.search(text):
        raise SystemExit(f"{DOC} has no {BEGIN} block")
    DOC.write_text(pattern.sub(lambda _: block, text))
    log(f"wrote {DOC.relative_to(ROOT)} and {PNG.relative_to(ROOT)}")


# ----------------------------------------------------------------------------------------------
# Report


def command_output(argv: list, pattern: str = r"(.*)") -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=20)
        match = re.search(pattern, (out.stdout + out.stderr).strip())
        return match.group(1).strip() if match else "?"
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def machine_facts(args, repetitions: int, start_what: str, setup: dict, interference: list, runs: list) -> dict:
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    return {
        "date": datetime.date.today().isoformat(),
        "command": ("`make bench` (`scripts/load_bench.py`)" if start_what.endswith("`make`") and len(sys.argv) == 1
                    else "`" + " ".join(["scripts/load_bench.py"] + sys.argv[1:]) + "`"),
        "nproc": command_output(["nproc"]),
        "cpu": cpu,
        "kernel": platform.release(),
        "memory": command_output(["free", "-g"], r"Mem:\s+(\d+)") + " GiB",
        "loadavg": pathlib.Path("/proc/loadavg").read_text().split()[:3],
        "rustc": command_output(["rustc", "--version"]),
        "wrk": command_output(["wrk", "--version"], r"^(wrk \S+)"),
        "python": command_output([VENV / "bin" / "python", "--version"]),
        "fastmcp": command_output([VENV / "bin" / "python", "-c", "import fastmcp; print(fastmcp.__version__)"]),
        "uvicorn": command_output([VENV / "bin" / "python", "-c",
                                   "import uvicorn, importlib.util as u; print(uvicorn.__version__, "
                                   "'uvloop' if u.find_spec('uvloop') else 'asyncio', "
                                   "'httptools' if u.find_spec('httptools') else 'h11')"]),
        "binary_mb": SERVER.stat().st_size / 1e6,
        "rmcp": re.search(r'name = "rmcp"\nversion = "([^"]+)"',
                          (ROOT / CRATES["rmcp"][0] / "Cargo.lock").read_text()).group(1),
        "audit_bytes_per_request": statistics.median(
            r["audit_bytes"] / r["requests"] for r in runs if "audit_bytes" in r and r["requests"]) if runs else 0,
        "seconds": args.seconds, "warmup": args.warmup, "repetitions": repetitions,
        "requested_repetitions": args.repetitions, "budget_minutes": args.budget_minutes,
        "budget_from": start_what, "peer_workers": args.peer_workers, "seed": args.seed,
        "setup_seconds": {k: round(v, 1) for k, v in setup.items()},
        "elapsed_minutes": (time.time() - session_start()[0]) / 60,
        "idle_cpu_share_max": max((sum(i.values()) for i in interference), default=0),
        "idle_cpu_share_median": statistics.median(sum(i.values()) for i in interference) if interference else 0,
        "idle_cpu_share_max_by_server": {n: max((i[n] for i in interference if n in i), default=0)
                                         for n in {n for i in interference for n in i}},
    }


def med(results, key, field):
    return statistics.median(r[field] for r in results[key]) if key in results else None


def fmt_ms(us) -> str:
    return "–" if us is None else f"{us / 1000:.2f} ms" if us < 100_000 else f"{us / 1000:.0f} ms"


def ratio(a, b, digits=2) -> str:
    return "–" if a is None or b is None or b == 0 else f"{a / b:.{digits}f}"


def report(results: dict, connections: list, f: dict) -> str:
    def rps(server, auth, method, c):
        return med(results, (server, auth, method, c), "rps")

    def p99(server, auth, method, c):
        return med(results, (server, auth, method, c), "p99_us")

    reps = f"{f['repetitions']} interleaved repetition(s)"
    if f["repetitions"] < f["requested_repetitions"]:
        reps += (f" ({f['requested_repetitions']} requested; cut to fit the {f['budget_minutes']:g}-minute "
                 f"budget counted from {f['budget_from']})")
    lines = [BEGIN,
             f"Measured {f['date']} on {f['nproc']} cores ({f['cpu']}, {f['memory']} RAM, Linux {f['kernel']}); "
             f"load average {' / '.join(f['loadavg'])} (1 / 5 / 15 min) at the end. "
             f"Command: {f['command']}; it took {f['elapsed_minutes']:.1f} min from {f['budget_from']} "
             f"(ceiling and rmcp builds {f['setup_seconds'].get('ceiling + rmcp builds', 0):.0f} s, the peer's "
             f"install {f['setup_seconds'].get('peer venv', 0):.0f} s alongside).",
             "",
             f"- Load: {f['wrk']}, 2 threads (1 at 1 connection: wrk needs a connection per thread), "
             f"{f['warmup']:g} s warm-up per case, then {f['seconds']:g} s per point; {reps}: every case once "
             f"per repetition and connection count, in a shuffled order (seed {f['seed']}); medians reported.",
             f"- Palisade: release build ({f['binary_mb']:.1f} MB, {f['rustc']}), audit log on, written to "
             f"standard output and from there to a file ({f['audit_bytes_per_request']:.0f} bytes per request)"
             ".",
             f"- FastMCP peer: FastMCP {f['fastmcp']} ({f['python']}), Streamable HTTP in stateless mode with JSON "
             f"responses (`http_app(stateless_http=True, json_response=True)`), uvicorn {f['uvicorn']}, "
             f"{f['peer_workers']} worker process(es); JWTVerifier on HS256, `require_scopes` per tool. "
             "RSS: the sum over its processes.",
             f"- rmcp baseline: rmcp {f['rmcp']}, `StreamableHttpService` stateless "
             "(`legacy_session_mode: false`) with `json_response: true`, no authentication.",
             "- ceiling: axum, parses the JSON-RPC body, answers Palisade's own result for the method, no "
             "authentication.",
             "- Sharing the machine: servers and wrk run on the same cores. All four servers stay up; only "
             "the one under load is busy: the idle ones used at most "
             f"{f['idle_cpu_share_max'] * 100:.1f}% of a core during a point (median "
             f"{f['idle_cpu_share_median'] * 100:.2f}%; largest by server: "
             + ", ".join(f"{n} {v * 100:.1f}%" for n, v in sorted(f["idle_cpu_share_max_by_server"].items()))
             + ").",
             "",
             "| request | server | authentication | connections | requests/s | p50 | p99 | RSS after | errors |",
             "|---|---|---|---|---|---|---|---|---|"]
    for method in METHODS:
        for server, auth in ORDER:
            for c in connections:
                key = (server, auth, method, c)
                if key not in results:
                    continue
                errors = sum(r["errors"] for r in results[key])
                lines.append(f"| `{method}` | {server} | {auth} | {c} | {med(results, key, 'rps'):,.0f} | "
                             f"{fmt_ms(med(results, key, 'p50_us'))} | {fmt_ms(med(results, key, 'p99_us'))} | "
                             f"{med(results, key, 'rss_mib'):.1f} MiB | {errors} |")
    lines += ["", f"![requests/s by connections]({PNG.name})", "",
              "Ratios of the medians (requests/s unless named; peer p99 / HS256 p99 is how many times lower "
              "Palisade's p99 is; ceiling / peer bounds what any server could reach against the peer on "
              "this machine):", "",
              "| request | connections | HS256 / peer | peer p99 / HS256 p99 | ceiling / peer | HS256 / ceiling | "
              "anonymous / ceiling | rmcp / ceiling | anonymous / rmcp | HS256 / anonymous | RS256 / HS256 | "
              "API key / HS256 |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for method in METHODS:
        for c in connections:
            hs, anon = rps("Palisade", "HS256", method, c), rps("Palisade", "anonymous", method, c)
            lines.append(
                f"| `{method}` | {c} | {ratio(hs, rps('FastMCP peer', 'HS256', method, c), 0)} | "
                f"{ratio(p99('FastMCP peer', 'HS256', method, c), p99('Palisade', 'HS256', method, c), 0)} | "
                f"{ratio(rps('ceiling', 'none', method, c), rps('FastMCP peer', 'HS256', method, c), 0)} | "
                f"{ratio(hs, rps('ceiling', 'none', method, c))} | {ratio(anon, rps('ceiling', 'none', method, c))} | "
                f"{ratio(rps('rmcp baseline', 'none', method, c), rps('ceiling', 'none', method, c))} | "
                f"{ratio(anon, rps('rmcp baseline', 'none', method, c))} | {ratio(hs, anon)} | "
                f"{ratio(rps('Palisade', 'RS256', method, c), hs)} | {ratio(rps('Palisade', 'API key', method, c), hs)} |")

    if f.get("baseline_commit"):
        lines += ["", f"Palisade now against Palisade at commit {f['baseline_commit']} (the last commit before the "
                  "server's bounded edge, issuer-qualified identities and the sharded rate limiter), HS256, "
                  "same run, same rounds; a ratio of 1.00 is no change:", "",
                  "| request | connections | requests/s now / baseline | p50 now / baseline | p99 now / baseline |",
                  "|---|---|---|---|---|"]
        for method in METHODS:
            for c in connections:
                now, base = ("Palisade", "HS256", method, c), ("Palisade baseline", "HS256", method, c)
                if now in results and base in results:
                    lines.append(
                        f"| `{method}` | {c} | {ratio(med(results, now, 'rps'), med(results, base, 'rps'))} | "
                        f"{ratio(med(results, now, 'p50_us'), med(results, base, 'p50_us'))} | "
                        f"{ratio(med(results, now, 'p99_us'), med(results, base, 'p99_us'))} |")

    aims = []

    def aim(text, values, ok):
        aims.append(f"- {'met' if ok else '**not met**'}: {text} ({values})")

    judged = [c for c in (16, 64) if c in connections]
    call = "tools/call"
    for c in judged:
        hs = rps("Palisade", "HS256", call, c)
        peer = rps("FastMCP peer", "HS256", call, c)
        ceiling = rps("ceiling", "none", call, c)
        hs99, peer99 = p99("Palisade", "HS256", call, c), p99("FastMCP peer", "HS256", call, c)
        if hs and peer:
            aim(f"HS256 `tools/call` at {c} connections ≥ 100× the peer's requests/s",
                f"{hs / peer:.0f}×", hs / peer >= 100)
            aim(f"HS256 `tools/call` at {c} connections: p99 ≥ 50× lower than the peer's",
                f"{peer99 / hs99:.0f}×", peer99 / hs99 >= 50)
        if hs and ceiling:
            share = hs / ceiling
            aim(f"HS256 `tools/call` at {c} connections ≥ 60% of the ceiling (stretch 75%)",
                f"{share * 100:.0f}%{', stretch met' if share >= 0.75 else ''}", share >= 0.6)
        for variant in ("RS256", "API key"):
            v = rps("Palisade", variant, call, c)
            if v and hs:
                aim(f"{variant} `tools/call` at {c} connections within 10% of HS256 (at most 10% slower)",
                    f"{v / hs:.2f}", v / hs >= 0.9)
        anon = rps("Palisade", "anonymous", call, c)
        if anon and hs:
            aim(f"authentication (HS256) costs under 10% of anonymous throughput at {c} connections "
                "(issue #3)", f"HS256 / anonymous {hs / anon:.2f}", hs / anon >= 0.9)
    if max(connections) == 64:
        rss = max(med(results, (s, a, m, 64), "rss_mib") for (s, a, m, c) in results
                  if s == "Palisade" and c == 64)
        aim("Palisade's resident memory < 32 MiB after the 64-connection runs", f"{rss:.1f} MiB", rss < 32)
    aim("release binary < 25 MB", f"{f['binary_mb']:.1f} MB", f["binary_mb"] < 25)
    lines += ["", f"Aims (judged on the median at {' and '.join(map(str, judged))} connections):", ""] + aims
    lines.append(END)
    return "\n".join(lines)


def plot(results: dict, connections: list, facts: dict) -> None:
    series = {}
    for method in METHODS:
        series[method] = {}
        for label, server, auth in (("Palisade (HS256)", "Palisade", "HS256"),
                                    ("Palisade (anonymous)", "Palisade", "anonymous"),
                                    ("rmcp baseline (no auth)", "rmcp baseline", "none"),
                                    ("FastMCP peer (HS256)", "FastMCP peer", "HS256"),
                                    ("ceiling (no auth)", "ceiling", "none")):
            values = [med(results, (server, auth, method, c), "rps") for c in connections]
            if all(v is not None for v in values):
                series[method][label] = values
    data = {"connections": connections, "series": series,
            "title": f"{facts['date']}, {facts['nproc']} cores ({facts['cpu']}), median of "
                     f"{facts['repetitions']} × {facts['seconds']:g} s"}
    subprocess.run([VENV / "bin" / "python", PLOT, PNG], input=json.dumps(data), text=True, check=True)


if __name__ == "__main__":
    sys.exit(main())
