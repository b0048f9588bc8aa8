#!/usr/bin/env python3
"""Soak test of palisade-server: mixed load for a fixed time, then memory, file descriptors,
statuses and the audit trail are checked (`make soak`: 30 minutes on the release build; `make
test`: 2 minutes on the debug build). docs/soak.md describes it and holds recorded figures.

The script starts the server itself, on free loopback ports, with a PolicyDocument compiled from
config/samples/company-info.yaml into a temporary directory, an audit log file, and three identity
sources of its own: an HMAC issuer (key file), a JWKS issuer whose keys this script serves over
loopback HTTP (`allowInsecureHttp: true`) and an API-key table. Nothing leaves loopback.

For --duration seconds, concurrently:

- valid `tools/list` and `tools/call` (allowed and denied by the policy; HS256, RS256, API key,
  legacy and 2026-07-28 requests, one denied from the routing headers alone);
- every kind of bad credential: none, Basic, a token in the query string only, malformed, bad
  signatures (HS256 and RS256), expired, wrong audience, wrong issuer, unknown kid, `alg: none`,
  HS256 for the RS256 issuer, an oversize token, an unknown API key, two credentials, and a key
  the IdP has withdrawn;
- oversize and slow clients: bodies over --max-body-bytes (declared and chunked), a head over
  --max-header-bytes, a request trickled in within the limits, bodies too slow (408), heads too
  slow (closed by the header-read timeout), and clients that hang up in the middle of a body;
- a chaos thread, in cycles: policy reloads valid → invalid → valid (checked through `/ready`'s
  policy hash and `palisade_policy_reloads_total`), an IdP outage (the JWKS endpoint answers 503,
  then resets connections, then hangs), and a key rotation (new kid published, signing switched,
  the old key withdrawn).

Every answer must have the status (and error code) of its kind's row in KINDS; the server's
resident memory must stay within ±10 % of its post-warm-up median; its file descriptors must come
back to what they were before the load and stay below that plus the connections the generator can
hold; and after a graceful stop (SIGTERM) the audit log must hold exactly one closing event per
request that reached the router (each request carries its own X-Request-Id), with the status the
client saw. Exit status 0 only if every check passes.
"""
import argparse
import collections
import datetime
import hashlib
import http.client
import http.server
import json
import os
import pathlib
import platform
import random
import secrets
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parent.parent
VENV_PYTHON = ROOT / "target" / "e2e-deps" / "venv" / "bin" / "python"

try:
    import jwt
    import yaml
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
except ImportError:
    # Run by another Python: use the test virtualenv of `make e2e-deps`, which has all three.
    if VENV_PYTHON.exists() and not os.environ.get("PALISADE_SOAK_REEXEC"):
        os.environ["PALISADE_SOAK_REEXEC"] = "1"
        os.execv(VENV_PYTHON, [str(VENV_PYTHON), __file__, *sys.argv[1:]])
    raise SystemExit("scripts/soak.py needs PyJWT, cryptography and PyYAML: `make e2e-deps` installs them "
                     "into target/e2e-deps/venv")

SAMPLE = ROOT / "config" / "samples" / "company-info.yaml"
HS_ISSUER = "palisade-dev"  # the sample's HMAC issuer
RS_ISSUER = "https://idp.soak.test"  # served by this script (jwksUri on loopback)
PUBLIC_TOOL, CONFIDENTIAL_TOOL = "get_public_info", "get_confidential_info"
MODERN = "2026-07-28"
T0 = time.monotonic()

# The server's limits (its defaults; the flags below do not change them) that the kinds rely on.
MAX_BODY = 1 << 20  # --max-body-bytes
MAX_HEAD = 16 << 10  # --max-header-bytes
MAX_TOKEN = 8 << 10  # --max-token-bytes
HEADER_READ_TIMEOUT = 10  # --header-read-timeout (s)
BODY_READ_TIMEOUT = 10  # --body-read-timeout (s)
RELOAD_INTERVAL = 2  # --reload-interval (s)
JWKS_REFETCH_INTERVAL = 10  # --jwks-refetch-interval (s): an unknown kid refetches at most this often
JWKS_TTL = 30  # jwksCacheTtlSeconds of the RS256 issuer: background refreshes every 24 s


def log(message: str) -> None:
    print(f"[{time.monotonic() - T0:7.1f} s] {message}", flush=True)


# ----------------------------------------------------------------------------------------------
# The kinds of request and what each must get


class Kind:
    def __init__(self, group, status, code=None, reasons=None, reaches=True, text=""):
        self.group = group  # which worker sends it
        self.status = status  # expected HTTP status; None: the connection ends without an answer
        self.code = code  # expected error code: data.code, or the JSON-RPC code
        self.reasons = reasons  # expected `reason` of the closing audit event (None: not checked)
        self.reaches = reaches  # whether the request reaches the router (so writes one closing event)
        self.text = text


INVALID = "INVALID_TOKEN"
EMPTY = "(empty body)"
KINDS = {
    # Valid callers (group "valid"), on kept-alive connections.
    "list_hs256": Kind("valid", 200, reasons={"filtered"},
                       text="tools/list, HS256, public:read: sees get_public_info only"),
    "list_strategist": Kind("valid", 200, reasons={"filtered"},
                            text="tools/list, HS256, group strategy-team: sees both tools"),
    "list_rs256": Kind("valid", 200, reasons={"filtered"}, text="tools/list, RS256 (JWKS), public:read"),
    "list_api_key": Kind("valid", 200, reasons={"filtered"}, text="tools/list, API key, public:read"),
    "call_hs256": Kind("valid", 200, reasons={"granted"}, text="tools/call get_public_info, HS256"),
    "call_rs256": Kind("valid", 200, reasons={"granted"}, text="tools/call get_public_info, RS256"),
    "call_api_key": Kind("valid", 200, reasons={"granted"}, text="tools/call get_public_info, API key"),
    "call_strategist": Kind("valid", 200, reasons={"granted"},
                            text="tools/call get_confidential_info, group strategy-team"),
    "call_modern": Kind("valid", 200, reasons={"granted"},
                        text="tools/call get_public_info, 2026-07-28 (_meta and routing headers)"),
    "denied_hs256": Kind("valid", 403, "INSUFFICIENT_SCOPE", {"missing_scopes"},
                         text="tools/call get_confidential_info, HS256 public:read"),
    "denied_rs256": Kind("valid", 403, "INSUFFICIENT_SCOPE", {"missing_scopes"},
                         text="tools/call get_confidential_info, RS256 public:read"),
    "denied_headers": Kind("valid", 403, "INSUFFICIENT_SCOPE", {"missing_scopes"},
                           text="2026-07-28 tools/call denied from the routing headers (body not read)"),
    # Bad credentials (group "bad"), one connection each.
    "no_credential": Kind("bad", 401, "MISSING_AUTHORIZATION", {"missing_authorization"}, text="no credential"),
    "basic": Kind("bad", 401, "UNSUPPORTED_CREDENTIALS", {"unsupported_scheme"}, text="Authorization: Basic"),
    "query_token": Kind("bad", 401, "UNSUPPORTED_CREDENTIALS", {"token_in_query"},
                        text="valid token only in the query string (?access_token=)"),
    "malformed": Kind("bad", 401, INVALID, {"malformed"}, text="Bearer token that is not a JWT's shape"),
    "bad_signature_hs256": Kind("bad", 401, "INVALID_SIGNATURE", {"invalid_signature"},
                                text="HS256 signed with another key"),
    "bad_signature_rs256": Kind("bad", 401, "INVALID_SIGNATURE", {"invalid_signature"},
                                text="RS256 with the current kid, signed by another key"),
    "expired": Kind("bad", 401, "TOKEN_EXPIRED", {"token_expired"}, text="exp an hour ago"),
    "wrong_audience": Kind("bad", 401, "INVALID_AUDIENCE", {"invalid_audience"}, text="aud of another server"),
    "wrong_issuer": Kind("bad", 401, "INVALID_ISSUER", {"invalid_issuer"}, text="iss the server does not know"),
    "unknown_kid": Kind("bad", 401, INVALID, {"unknown_kid"}, text="RS256 with a kid the IdP never published"),
    "retired_kid": Kind("bad", 401, INVALID, {"unknown_kid"},
                        text="RS256 signed by a key the IdP withdrew at a rotation (tokens verified before too)"),
    "alg_none": Kind("bad", 401, INVALID, {"alg_not_allowed"}, text="alg: none"),
    "alg_confusion": Kind("bad", 401, INVALID, {"alg_not_allowed"},
                          text="HS256 for the RS256 issuer, keyed with its public key"),
    "oversize_token": Kind("bad", 401, INVALID, {"too_large"}, text="bearer token over --max-token-bytes"),
    "unknown_api_key": Kind("bad", 401, INVALID, {"unknown_api_key"}, text="X-API-Key not in the table"),
    "two_credentials": Kind("bad", 400, "INVALID_REQUEST", {"duplicate_authorization"},
                            text="Authorization and X-API-Key together"),
    # Oversize and slow clients (group "edge": one at a time; "slow_headers"/"slow_body": own threads).
    "oversize_declared": Kind("edge", 413, -32600, {"body_too_large"},
                              text="authenticated, Content-Length over --max-body-bytes"),
    "oversize_chunked": Kind("edge", 413, -32600, {"body_too_large"},
                             text="authenticated, chunked body over --max-body-bytes"),
    "oversize_head": Kind("edge", 431, -32600, {"headers_too_large"},
                          text="17 KiB head: over --max-header-bytes, within the read buffer (refused by the router)"),
    "oversize_head_edge": Kind("edge", 431, EMPTY, reaches=False,
                               text="64 KiB head: over the HTTP/1.1 read buffer, refused by hyper before the router"),
    "trickled": Kind("edge", 200, reasons={"granted"},
                     text="whole request sent in small pieces over about 2 s (within the limits)"),
    "abandoned": Kind("edge", None, reasons={"body_unreadable", "client_disconnected"},
                      text="authenticated, client hangs up in the middle of its body"),
    "slow_body": Kind("slow_body", 408, -32603, {"body_timeout"},
                      text="authenticated, body dribbled slower than --body-read-timeout"),
    "slow_headers": Kind("slow_headers", None, reaches=False,
                         text="head dribbled slower than --header-read-timeout: closed before the router"),
}
BAD_KINDS = [k for k, v in KINDS.items() if v.group == "bad" and k != "retired_kid"]
EDGE_KINDS = [k for k, v in KINDS.items() if v.group == "edge"]
# Weights of the valid kinds: mostly calls and lists, some denials.
VALID_WEIGHTS = {"list_hs256": 3, "list_strategist": 1, "list_rs256": 2, "list_api_key": 1, "call_hs256": 4,
                 "call_rs256": 3, "call_api_key": 2, "call_strategist": 2, "call_modern": 2, "denied_hs256": 2,
                 "denied_rs256": 1, "denied_headers": 1}


class Record:
    __slots__ = ("rid", "kind", "start", "end", "status", "code", "problem")

    def __init__(self, rid, kind):
        self.rid, self.kind, self.start = rid, kind, time.monotonic()
        self.end = self.status = self.code = self.problem = None


class Ledger:
    """Every request the generator sent."""

    def __init__(self):
        self.records = []
        self.lock = threading.Lock()
        self.seq = 0

    def new(self, kind: str) -> Record:
        with self.lock:
            self.seq += 1
            record = Record(f"soak-{kind}-{self.seq:07d}", kind)
            self.records.append(record)
        return record


# ----------------------------------------------------------------------------------------------
# The IdP: a JWKS on loopback, with outages and rotations


def new_rsa_key(kid: str) -> tuple:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))
    jwk.update({"kid": kid, "use": "sig", "alg": "RS256"})
    return private, jwk


class Idp:
    """The JWKS the server fetches. `mode`: up, 503, reset (connections closed unanswered) or hang
    (no answer for longer than the server's 5 s fetch timeout). Counts what it served."""

    def __init__(self):
        self.lock = threading.Lock()
        self.mode = "up"
        self.version = 0
        self.keys = []
        self.served_version = 0  # the newest version answered completely
        self.served_at = 0.0
        self.counts = collections.Counter()  # by mode
        self.server = None

    def publish(self, jwks_keys: list) -> int:
        with self.lock:
            self.version += 1
            self.keys = list(jwks_keys)
            return self.version

    def set_mode(self, mode: str) -> None:
        with self.lock:
            self.mode = mode

    def start(self) -> int:
        idp = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server naming)
                with idp.lock:
                    mode, version = idp.mode, idp.version
                    body = json.dumps({"keys": idp.keys}).encode()
                    idp.counts[mode] += 1
                try:
                    if mode == "reset":
                        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
                        self.close_connection = True
                        return
                    if mode == "hang":
                        time.sleep(8)
                        self.close_connection = True
                        return
                    status = 503 if mode == "503" else 200
                    payload = b'{"error":"temporarily_unavailable"}' if status == 503 else body
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    self.wfile.flush()
                    if status == 200:
                        with idp.lock:
                            if version >= idp.served_version:
                                idp.served_version, idp.served_at = version, time.monotonic()
                except OSError:
                    pass

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self.server.server_address[1]

    def served(self) -> tuple:
        with self.lock:
            return self.served_version, self.served_at


# ----------------------------------------------------------------------------------------------
# Identities and tokens


class Credentials:
    """Keys and pools of valid tokens; pools are re-minted a token at a time (so the server's
    verified-token cache sees new tokens all the time) and at each key rotation."""

    POOL = 16

    def __init__(self, resource: str, hmac_key: bytes, api_key: str):
        self.resource, self.hmac_key, self.api_key = resource, hmac_key, api_key
        self.lock = threading.Lock()
        self.generation = 0
        self.rsa_private, self.rsa_jwk = new_rsa_key("soak-k0")
        self.retired = []  # (private key, kid, a token it signed that was valid before)
        self.other_rsa, _ = new_rsa_key("other")
        self.pools = {}
        for name in ("hs_public", "hs_strategist", "rs_public"):
            self.pools[name] = [self.mint(name) for _ in range(self.POOL)]

    def claims(self, **extra) -> dict:
        now = int(time.time())
        base = {"sub": "soak", "aud": self.resource, "iat": now, "exp": now + 900, "jti": secrets.token_hex(8)}
        base.update(extra)
        return base

    def mint(self, name: str) -> str:
        if name == "hs_public":
            return jwt.encode(self.claims(iss=HS_ISSUER, scope="public:read", sub="alice"), self.hmac_key, "HS256")
        if name == "hs_strategist":
            return jwt.encode(self.claims(iss=HS_ISSUER, sub="dana", groups=["strategy-team"]), self.hmac_key, "HS256")
        with self.lock:
            private, kid = self.rsa_private, self.rsa_jwk["kid"]
        return jwt.encode(self.claims(iss=RS_ISSUER, scope="public:read", sub="rita"), private, "RS256",
                          headers={"kid": kid})

    def token(self, name: str) -> str:
        with self.lock:
            return random.choice(self.pools[name])

    def refresh_one(self) -> None:
        name = random.choice(list(self.pools))
        token = self.mint(name)
        with self.lock:
            self.pools[name][random.randrange(self.POOL)] = token

    def switch_signing_key(self, private, jwk, old_token: str) -> tuple:
        """Signs with the new key from now on; returns the old key with `old_token`, a token it
        signed that the server has verified, for `retired_kid` once the key is withdrawn."""
        with self.lock:
            old = (self.rsa_private, self.rsa_jwk["kid"], old_token)
            self.rsa_private, self.rsa_jwk = private, jwk
        fresh = [self.mint("rs_public") for _ in range(self.POOL)]
        with self.lock:
            self.pools["rs_public"] = fresh
        return old

    def retire(self, old: tuple) -> None:
        """The server no longer has this key: its tokens may be sent as `retired_kid`."""
        with self.lock:
            self.retired.append(old)

    def bad(self, kind: str) -> dict:
        """Headers (and query) of a bad-credential kind."""
        if kind == "no_credential":
            return {}
        if kind == "basic":
            return {"Authorization": "Basic c29hazpzb2Fr"}
        if kind == "query_token":
            return {"query": "access_token=" + self.token("hs_public")}
        if kind == "malformed":
            return {"Authorization": "Bearer eyJhbGciOiJIUzI1NiJ9.not-base64!.x"}
        if kind == "bad_signature_hs256":
            return bearer(jwt.encode(self.claims(iss=HS_ISSUER, scope="public:read"), b"x" * 32, "HS256"))
        if kind == "bad_signature_rs256":
            with self.lock:
                kid = self.rsa_jwk["kid"]
            return bearer(jwt.encode(self.claims(iss=RS_ISSUER, scope="public:read"), self.other_rsa, "RS256",
                                     headers={"kid": kid}))
        if kind == "expired":
            now = int(time.time())
            return bearer(jwt.encode(self.claims(iss=HS_ISSUER, scope="public:read", iat=now - 7200, exp=now - 3600),
                                     self.hmac_key, "HS256"))
        if kind == "wrong_audience":
            return bearer(jwt.encode(self.claims(iss=HS_ISSUER, aud="https://other.example/mcp"), self.hmac_key,
                                     "HS256"))
        if kind == "wrong_issuer":
            return bearer(jwt.encode(self.claims(iss="https://evil.example"), self.hmac_key, "HS256"))
        if kind == "unknown_kid":
            return bearer(jwt.encode(self.claims(iss=RS_ISSUER), self.other_rsa, "RS256",
                                     headers={"kid": "never-published-" + secrets.token_hex(4)}))
        if kind == "retired_kid":
            with self.lock:
                private, kid, old_token = random.choice(self.retired)
            if random.random() < 0.5:
                return bearer(old_token)  # verified (and cached) while its key was published
            return bearer(jwt.encode(self.claims(iss=RS_ISSUER, scope="public:read"), private, "RS256",
                                     headers={"kid": kid}))
        if kind == "alg_none":
            return bearer(jwt.encode(self.claims(iss=HS_ISSUER, scope="public:read"), None, "none"))
        if kind == "alg_confusion":
            pem = self.rsa_private.public_key().public_bytes(serialization.Encoding.PEM,
                                                             serialization.PublicFormat.SubjectPublicKeyInfo)
            return bearer(hs256_raw(self.claims(iss=RS_ISSUER, scope="public:read"), pem))
        if kind == "oversize_token":
            return bearer(jwt.encode(self.claims(iss=HS_ISSUER, pad="x" * (MAX_TOKEN + 100)), self.hmac_key,
                                     "HS256"))
        if kind == "unknown_api_key":
            return {"X-API-Key": "pk_unknown_" + secrets.token_hex(16)}
        if kind == "two_credentials":
            return {"Authorization": "Bearer " + self.token("hs_public"), "X-API-Key": self.api_key}
        raise ValueError(kind)


def bearer(token: str) -> dict:
    return {"Authorization": "Bearer " + token}


def hs256_raw(claims: dict, key: bytes) -> str:
    """HS256 by hand: PyJWT refuses to use a PEM public key as an HMAC secret (the very attack)."""
    import base64
    import hmac as hmac_module

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()) + "." + b64(json.dumps(claims).encode())
    signature = hmac_module.new(key, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64(signature)


# ----------------------------------------------------------------------------------------------
# Requests


def call_body(tool: str, modern: bool = False) -> bytes:
    params = {"name": tool, "arguments": {}}
    if modern:
        params["_meta"] = {"io.modelcontextprotocol/protocolVersion": MODERN,
                           "io.modelcontextprotocol/clientCapabilities": {}}
    return json.dumps({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": params}).encode()


LIST_BODY = json.dumps({"jsonrpc": "2.0", "id": 3, "method": "tools/list"}).encode()
BASE_HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}


def error_code(body: dict):
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return None
    data = error.get("data")
    if isinstance(data, dict) and "code" in data:
        return data["code"]
    return error.get("code")


def head_bytes(port: int, method: str, path: str, headers: dict) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_response(sock: socket.socket, deadline: float):
    """(status, headers, body) of one HTTP/1.1 response, or None if the connection ended first.
    Reads what the peer sent even if it then reset the connection."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = recv(sock, deadline)
        if not chunk:
            return None
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        length = int(headers["content-length"])
        while len(rest) < length:
            chunk = recv(sock, deadline)
            if not chunk:
                break
            rest += chunk
        return status, headers, rest[:length]
    if headers.get("transfer-encoding", "").lower() == "chunked":
        while not rest.endswith(b"0\r\n\r\n"):
            chunk = recv(sock, deadline)
            if not chunk:
                break
            rest += chunk
        body, cursor = b"", rest
        while cursor:
            size_line, _, cursor = cursor.partition(b"\r\n")
            size = int(size_line.split(b";")[0] or b"0", 16)
            if size == 0:
                break
            body, cursor = body + cursor[:size], cursor[size + 2:]
        return status, headers, body
    while True:
        chunk = recv(sock, deadline)
        if not chunk:
            return status, headers, rest
        rest += chunk


def recv(sock: socket.socket, deadline: float) -> bytes:
    sock.settimeout(max(0.05, deadline - time.monotonic()))
    try:
        return sock.recv(65536)
    except (ConnectionResetError, BrokenPipeError):
        return b""


def send_all(sock: socket.socket, data: bytes) -> bool:
    try:
        sock.sendall(data)
        return True
    except (ConnectionResetError, BrokenPipeError):
        return False


def settle(record: Record, response, *, expect_tools=None) -> None:
    """Stores the answer of a raw exchange in the record."""
    record.end = time.monotonic()
    if response is None:
        return
    status, _headers, body = response
    record.status = status
    if not body:
        record.code = EMPTY
        return
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = {}
        record.problem = f"body is not JSON: {body[:120]!r}"
    record.code = error_code(parsed)
    check_result(record, parsed, expect_tools)


def check_result(record: Record, parsed, expect_tools) -> None:
    if record.status != 200:
        return
    if not isinstance(parsed, dict) or "result" not in parsed:
        record.problem = f"200 without a result: {str(parsed)[:160]}"
        return
    result = parsed["result"]
    if expect_tools is not None:
        names = sorted(t.get("name") for t in result.get("tools", []))
        if names != sorted(expect_tools):
            record.problem = f"tools/list shows {names}, expected {sorted(expect_tools)}"
    elif result.get("isError") or not result.get("content"):
        record.problem = f"tools/call result is an error or empty: {str(result)[:160]}"


class Target:
    def __init__(self, port: int, metrics_port: int):
        self.port, self.metrics_port = port, metrics_port

    def connect(self, timeout: float = 30) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=timeout)

    def one_shot(self, record: Record, headers: dict, body: bytes, *, query: str = "", timeout: float = 30,
                 expect_tools=None) -> None:
        """One request on its own connection, whole; then the answer."""
        headers = {**BASE_HEADERS, **headers, "X-Request-Id": record.rid, "Content-Length": str(len(body)),
                   "Connection": "close"}
        deadline = time.monotonic() + timeout
        try:
            with self.connect() as sock:
                send_all(sock, head_bytes(self.port, "POST", "/mcp" + (f"?{query}" if query else ""), headers) + body)
                settle(record, read_response(sock, deadline), expect_tools=expect_tools)
        except OSError as error:
            record.end = time.monotonic()
            record.problem = f"transport error: {error!r}"

    def get_json(self, path: str, *, metrics: bool = False):
        port = self.metrics_port if metrics else self.port
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, response.read()

    def ready(self) -> tuple:
        try:
            status, body = self.get_json("/ready")
            return status, json.loads(body)
        except urllib.error.HTTPError as error:
            return error.code, {}

    def metric(self, name: str, labels: dict | None = None) -> float:
        _, text = self.get_json("/metrics", metrics=True)
        total = 0.0
        for line in text.decode().splitlines():
            if not line.startswith(name):
                continue
            series, _, value = line.rpartition(" ")
            if not (series == name or series.startswith(name + "{")):
                continue
            if labels and not all(f'{k}="{v}"' in series for k, v in labels.items()):
                continue
            total += float(value)
        return total


class KeptAlive:
    """A client of valid requests on one kept-alive connection (http.client reconnects after an
    answer with Connection: close)."""

    def __init__(self, target: Target):
        self.target = target
        self.conn = http.client.HTTPConnection("127.0.0.1", target.port, timeout=30)

    def send(self, record: Record, headers: dict, body: bytes, expect_tools=None) -> None:
        headers = {**BASE_HEADERS, **headers, "X-Request-Id": record.rid}
        try:
            self.conn.request("POST", "/mcp", body=body, headers=headers)
            response = self.conn.getresponse()
            data = response.read()
            record.end = time.monotonic()
            record.status = response.status
            try:
                parsed = json.loads(data) if data else {}
            except ValueError:
                parsed = {}
                record.problem = f"body is not JSON: {data[:120]!r}"
            record.code = error_code(parsed)
            check_result(record, parsed, expect_tools)
        except (OSError, http.client.HTTPException) as error:
            record.end = time.monotonic()
            record.problem = f"transport error: {error!r}"
            self.conn.close()

    def close(self) -> None:
        self.conn.close()


# ----------------------------------------------------------------------------------------------
# Workers


class Soak:
    def __init__(self, args, target: Target, creds: Credentials, idp: Idp, policy: "PolicyFiles"):
        self.args, self.target, self.creds, self.idp, self.policy = args, target, creds, idp, policy
        self.ledger = Ledger()
        self.stop = threading.Event()
        self.chaos_log = []  # (time, what)
        self.chaos_failures = []
        self.retired_ready = threading.Event()
        self.threads = []
        self.windows = collections.defaultdict(list)  # what → [(start, end)] in monotonic time

    def note(self, what: str) -> None:
        self.chaos_log.append((time.monotonic() - self.load_start, what))
        log(f"chaos: {what}")

    def fail(self, what: str) -> None:
        self.chaos_failures.append(what)
        self.note("FAILED: " + what)

    def pace(self, started: float, interval: float) -> None:
        left = interval - (time.monotonic() - started)
        if left > 0:
            self.stop.wait(left)

    # -- valid ----------------------------------------------------------------------------------

    def valid_request(self, client: KeptAlive, kind: str) -> None:
        record = self.ledger.new(kind)
        c = self.creds
        if kind == "list_hs256":
            client.send(record, bearer(c.token("hs_public")), LIST_BODY, expect_tools=[PUBLIC_TOOL])
        elif kind == "list_strategist":
            client.send(record, bearer(c.token("hs_strategist")), LIST_BODY,
                        expect_tools=[PUBLIC_TOOL, CONFIDENTIAL_TOOL])
        elif kind == "list_rs256":
            client.send(record, bearer(c.token("rs_public")), LIST_BODY, expect_tools=[PUBLIC_TOOL])
        elif kind == "list_api_key":
            client.send(record, {"X-API-Key": c.api_key}, LIST_BODY, expect_tools=[PUBLIC_TOOL])
        elif kind == "call_hs256":
            client.send(record, bearer(c.token("hs_public")), call_body(PUBLIC_TOOL))
        elif kind == "call_rs256":
            client.send(record, bearer(c.token("rs_public")), call_body(PUBLIC_TOOL))
        elif kind == "call_api_key":
            client.send(record, {"X-API-Key": c.api_key}, call_body(PUBLIC_TOOL))
        elif kind == "call_strategist":
            client.send(record, bearer(c.token("hs_strategist")), call_body(CONFIDENTIAL_TOOL))
        elif kind == "call_modern":
            headers = {**bearer(c.token("hs_public")), "MCP-Protocol-Version": MODERN, "Mcp-Method": "tools/call",
                       "Mcp-Name": PUBLIC_TOOL}
            client.send(record, headers, call_body(PUBLIC_TOOL, modern=True))
        elif kind == "denied_hs256":
            client.send(record, bearer(c.token("hs_public")), call_body(CONFIDENTIAL_TOOL))
        elif kind == "denied_rs256":
            client.send(record, bearer(c.token("rs_public")), call_body(CONFIDENTIAL_TOOL))
        elif kind == "denied_headers":
            headers = {**bearer(c.token("hs_public")), "MCP-Protocol-Version": MODERN, "Mcp-Method": "tools/call",
                       "Mcp-Name": CONFIDENTIAL_TOOL}
            client.send(record, headers, call_body(CONFIDENTIAL_TOOL, modern=True))
        else:
            raise ValueError(kind)

    def valid_worker(self, rate: float) -> None:
        client = KeptAlive(self.target)
        kinds, weights = zip(*VALID_WEIGHTS.items())
        rng = random.Random()
        while not self.stop.is_set():
            started = time.monotonic()
            self.valid_request(client, rng.choices(kinds, weights)[0])
            self.pace(started, 1 / rate)
        client.close()

    # -- bad credentials -----------------------------------------------------------------------

    def bad_request(self, kind: str) -> None:
        record = self.ledger.new(kind)
        headers = self.creds.bad(kind)
        query = headers.pop("query", "")
        self.target.one_shot(record, headers, call_body(PUBLIC_TOOL), query=query)

    def bad_worker(self, rate: float, offset: int) -> None:
        kinds = BAD_KINDS[offset:] + BAD_KINDS[:offset]
        i = 0
        while not self.stop.is_set():
            started = time.monotonic()
            kind = kinds[i % len(kinds)]
            i += 1
            if kind == "unknown_kid" and self.retired_ready.is_set() and i % 2:
                kind = "retired_kid"
            self.bad_request(kind)
            self.pace(started, 1 / rate)

    # -- oversize and slow ---------------------------------------------------------------------

    def edge_request(self, kind: str) -> None:
        record = self.ledger.new(kind)
        port, rid = self.target.port, record.rid
        auth = bearer(self.creds.token("hs_public"))
        deadline = time.monotonic() + 30
        try:
            with self.target.connect() as sock:
                if kind == "oversize_declared":
                    head = {**BASE_HEADERS, **auth, "X-Request-Id": rid, "Content-Length": str(MAX_BODY + 4096)}
                    send_all(sock, head_bytes(port, "POST", "/mcp", head))
                    settle(record, read_response(sock, deadline))
                elif kind == "oversize_chunked":
                    head = {**BASE_HEADERS, **auth, "X-Request-Id": rid, "Transfer-Encoding": "chunked"}
                    send_all(sock, head_bytes(port, "POST", "/mcp", head))
                    piece = b"[" + b" " * (64 * 1024 - 1)
                    sent, ok = 0, True
                    while ok and sent <= MAX_BODY:
                        last = sent + len(piece) > MAX_BODY
                        chunk = f"{len(piece):x}\r\n".encode() + piece + b"\r\n" + (b"0\r\n\r\n" if last else b"")
                        ok = send_all(sock, chunk)
                        sent += len(piece)
                        piece = b" " * (64 * 1024)
                    settle(record, read_response(sock, deadline))
                elif kind in ("oversize_head", "oversize_head_edge"):
                    padding = MAX_HEAD + 1024 if kind == "oversize_head" else 64 * 1024
                    head = {**BASE_HEADERS, **auth, "X-Request-Id": rid, "X-Padding": "p" * padding}
                    body = call_body(PUBLIC_TOOL)
                    head["Content-Length"] = str(len(body))
                    send_all(sock, head_bytes(port, "POST", "/mcp", head) + body)
                    settle(record, read_response(sock, deadline))
                elif kind == "trickled":
                    body = call_body(PUBLIC_TOOL)
                    head = {**BASE_HEADERS, **auth, "X-Request-Id": rid, "Content-Length": str(len(body)),
                            "Connection": "close"}
                    data = head_bytes(port, "POST", "/mcp", head) + body
                    pieces = 10
                    step = -(-len(data) // pieces)
                    for i in range(0, len(data), step):
                        send_all(sock, data[i:i + step])
                        time.sleep(0.2)
                    settle(record, read_response(sock, deadline))
                elif kind == "abandoned":
                    head = {**BASE_HEADERS, **auth, "X-Request-Id": rid, "Content-Length": "4000"}
                    send_all(sock, head_bytes(port, "POST", "/mcp", head) + b'{"jsonrpc":"2.0",')
                    time.sleep(0.3)
                    record.end = time.monotonic()
                else:
                    raise ValueError(kind)
        except OSError as error:
            record.end = time.monotonic()
            record.problem = f"transport error: {error!r}"

    def edge_worker(self, rate: float) -> None:
        i = 0
        while not self.stop.is_set():
            started = time.monotonic()
            self.edge_request(EDGE_KINDS[i % len(EDGE_KINDS)])
            i += 1
            self.pace(started, 1 / rate)

    def slow_headers_worker(self) -> None:
        """A head dribbled a byte a second: the server must close the connection at its header-read
        timeout, without an answer, before the router (so no audit event)."""
        port = self.target.port
        while not self.stop.is_set():
            record = self.ledger.new("slow_headers")
            head = head_bytes(port, "POST", "/mcp", {**BASE_HEADERS, "X-Request-Id": record.rid,
                                                      **bearer(self.creds.token("hs_public"))})
            try:
                with self.target.connect() as sock:
                    sock.settimeout(1)
                    for i in range(len(head) - 4):
                        if not send_all(sock, head[i:i + 1]):
                            break
                        try:
                            if sock.recv(65536) == b"":
                                break  # closed by the server
                            record.problem = "the server answered a head that never completed"
                            break
                        except socket.timeout:
                            pass
                        except ConnectionResetError:
                            break
                        if time.monotonic() - record.start > HEADER_READ_TIMEOUT + 15:
                            record.problem = "the connection stayed open past the header-read timeout"
                            break
                    else:
                        record.problem = "the whole head was sent before the server closed the connection"
            except OSError as error:
                record.problem = f"transport error: {error!r}"
            record.end = time.monotonic()
            waited = record.end - record.start
            if record.problem is None and not HEADER_READ_TIMEOUT - 1 <= waited <= HEADER_READ_TIMEOUT + 6:
                record.problem = f"closed after {waited:.1f} s, expected about {HEADER_READ_TIMEOUT} s"
            self.stop.wait(1)

    def slow_body_worker(self) -> None:
        """A body dribbled a byte every 2 s: 408 at the body-read timeout."""
        port = self.target.port
        while not self.stop.is_set():
            record = self.ledger.new("slow_body")
            body = call_body(PUBLIC_TOOL)
            head = head_bytes(port, "POST", "/mcp", {**BASE_HEADERS, "X-Request-Id": record.rid,
                                                      "Content-Length": str(len(body)),
                                                      **bearer(self.creds.token("hs_public"))})
            deadline = time.monotonic() + BODY_READ_TIMEOUT + 20
            try:
                with self.target.connect() as sock:
                    send_all(sock, head)
                    sock.settimeout(2)
                    for i in range(len(body) - 1):
                        if not send_all(sock, body[i:i + 1]):
                            break
                        try:
                            sock.recv(1, socket.MSG_PEEK)  # an answer (or the end) has come
                            break
                        except socket.timeout:
                            continue
                        except ConnectionResetError:
                            break
                    response = read_response(sock, deadline)
                    settle(record, response)
            except OSError as error:
                record.end = time.monotonic()
                record.problem = f"transport error: {error!r}"
            self.stop.wait(0.5)

    # -- chaos ---------------------------------------------------------------------------------

    def wait(self, seconds: float) -> bool:
        """Sleeps; False if the run is stopping."""
        return not self.stop.wait(seconds)

    def wait_for_hash(self, old: str, what: str, timeout: float = 20) -> str | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status, body = self.target.ready()
            if status != 200:
                self.fail(f"/ready answered {status} while waiting for {what}")
                return None
            if body.get("policyHash") != old:
                return body.get("policyHash")
            if self.stop.wait(0.2):
                return None
        self.fail(f"{what}: /ready still shows {old} after {timeout:.0f} s")
        return None

    def policy_cycle(self) -> None:
        status, body = self.target.ready()
        before = body.get("policyHash")
        if status != 200 or not before:
            self.fail(f"/ready answered {status} {body}")
            return
        self.policy.write_valid()
        after = self.wait_for_hash(before, "a valid policy")
        if after is None:
            return
        self.note(f"policy reload: valid generation {self.policy.generation}, "
                  f"hash {before[7:19]}… → {after[7:19]}…")
        failures = self.target.metric("palisade_policy_reloads_total", {"file": "policy", "result": "failure"})
        variant = self.policy.write_invalid()
        window_start = time.monotonic()
        if not self.wait(3 * RELOAD_INTERVAL + 1):
            self.policy.write_valid()
            return
        status, body = self.target.ready()
        failures_after = self.target.metric("palisade_policy_reloads_total", {"file": "policy", "result": "failure"})
        if status != 200 or body.get("policyHash") != after:
            self.fail(f"invalid policy ({variant}): /ready answered {status} {body}, expected 200 and {after}")
        elif failures_after <= failures:
            self.fail(f"invalid policy ({variant}): palisade_policy_reloads_total{{result=failure}} did not grow")
        else:
            self.note(f"policy reload: invalid ({variant}) refused, {after[7:19]}… stays in force "
                      f"(reload failures {failures:.0f} → {failures_after:.0f})")
        self.policy.write_valid()
        final = self.wait_for_hash(after, "the valid policy after the invalid one")
        self.windows["an invalid policy file in place"].append((window_start, time.monotonic()))
        if final:
            self.note(f"policy reload: valid generation {self.policy.generation}, hash → {final[7:19]}…")

    def outage(self, seconds: float) -> None:
        window_start = time.monotonic()
        self.outage_modes(seconds)
        self.windows["the IdP out"].append((window_start, time.monotonic()))

    def outage_modes(self, seconds: float) -> None:
        for mode in ("503", "reset", "hang"):
            before = self.idp.counts[mode]
            self.idp.set_mode(mode)
            doing = {"503": "answers 503", "reset": "resets connections",
                     "hang": "hangs (no answer within the 5 s fetch timeout)"}[mode]
            self.note(f"IdP outage: the JWKS endpoint {doing} for {seconds:.0f} s")
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline and not self.stop.is_set():
                self.bad_request("unknown_kid")  # makes the server try the IdP (at most every 10 s)
                self.stop.wait(1)
            self.idp.set_mode("up")
            self.note(f"IdP back: {self.idp.counts[mode] - before} fetches met the outage")

    def wait_served(self, version: int, what: str, timeout: float = 30) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            served, at = self.idp.served()
            if served >= version:
                # The server installs the keys right after reading them.
                return self.wait(max(0.0, at + 2 - time.monotonic()))
            if self.stop.is_set():
                return False
            self.bad_request("unknown_kid")  # an unknown kid makes the server refetch
            self.stop.wait(1)
        self.fail(f"key rotation: the server did not fetch {what} within {timeout:.0f} s")
        return False

    def rotation(self) -> None:
        window_start = time.monotonic()
        self.rotate()
        self.windows["a key rotation"].append((window_start, time.monotonic()))

    def rotate(self) -> None:
        c = self.creds
        old_jwk = c.rsa_jwk
        number = int(old_jwk["kid"].rsplit("k", 1)[1]) + 1
        private, jwk = new_rsa_key(f"soak-k{number}")
        version = self.idp.publish([old_jwk, jwk])
        self.note(f"key rotation: {jwk['kid']} published next to {old_jwk['kid']}")
        if not self.wait_served(version, f"the JWKS with {jwk['kid']}"):
            return
        # A token of the old key that the server verifies (and caches) now: once the key is
        # withdrawn, it must be refused too.
        old_token = c.token("rs_public")
        self.target.one_shot(self.ledger.new("call_rs256"), bearer(old_token), call_body(PUBLIC_TOOL))
        old = c.switch_signing_key(private, jwk, old_token)
        self.note(f"key rotation: tokens are signed with {jwk['kid']}")
        if not self.wait(3):
            return
        version = self.idp.publish([jwk])
        self.note(f"key rotation: {old_jwk['kid']} withdrawn")
        if not self.wait_served(version, f"the JWKS without {old_jwk['kid']}"):
            return
        c.retire(old)
        self.retired_ready.set()
        self.note(f"key rotation: done; tokens of {old_jwk['kid']} are now sent as retired_kid")

    def chaos(self) -> None:
        outage = 10 if self.args.duration <= 300 else 30
        while not self.stop.is_set():
            for step in (self.policy_cycle, lambda: self.outage(outage), self.rotation):
                if self.stop.is_set():
                    break
                step()
                self.wait(5)

    def token_refresher(self) -> None:
        while not self.stop.wait(2):
            self.creds.refresh_one()

    # -- run -----------------------------------------------------------------------------------

    def run(self, duration: float) -> None:
        a = self.args
        self.load_start = time.monotonic()
        plan = [(self.valid_worker, (a.rate / a.valid_workers,)) for _ in range(a.valid_workers)]
        plan += [(self.bad_worker, (a.bad_rate / 2, i * len(BAD_KINDS) // 2)) for i in range(2)]
        plan += [(self.edge_worker, (a.edge_rate,)), (self.slow_headers_worker, ()), (self.slow_body_worker, ()),
                 (self.chaos, ()), (self.token_refresher, ())]
        for target, args in plan:
            thread = threading.Thread(target=target, args=args, daemon=True)
            thread.start()
            self.threads.append(thread)
        self.stop.wait(duration)
        self.stop.set()
        self.idp.set_mode("up")
        for thread in self.threads:
            thread.join(timeout=60)
            if thread.is_alive():
                self.chaos_failures.append(f"a load thread ({thread.name}) did not stop within 60 s")
        self.load_end = time.monotonic()

    def connections(self) -> int:
        """The most connections the generator holds at once: one per thread that sends (valid
        workers, 2 bad-credential workers, the edge worker, the slow-head and slow-body workers,
        the chaos thread's requests and its /ready or /metrics polls)."""
        return self.args.valid_workers + 2 + 1 + 2 + 2

    def fd_allowance(self) -> int:
        """The most file descriptors the load can add to the server's at rest: twice the
        generator's connections (a connection its client has closed keeps its descriptor until the
        server's task for it runs, so a thread may briefly account for its current and its
        previous connection), the server's own connection to the JWKS, and the 2 files a reload
        may hold open at once (a documents directory and a file in it)."""
        return 2 * self.connections() + 1 + 2


# ----------------------------------------------------------------------------------------------
# Policy files


class PolicyFiles:
    def __init__(self, path: pathlib.Path, base: dict):
        self.path, self.base = path, base
        self.generation = 0
        self.invalid_count = 0

    def valid_text(self, generation: int) -> str:
        policy = json.loads(json.dumps(self.base))
        # A role nobody holds: the policy (and its hash) changes, what callers may do does not.
        policy["roles"].append({"name": f"soak-generation-{generation}", "scopes": ["public:read"],
                                "sources": policy["roles"][0]["sources"]})
        return yaml.safe_dump(policy, sort_keys=False)

    def invalid_text(self, variant: str) -> str:
        if variant == "broken YAML":
            return self.valid_text(self.generation)[:200] + "\n  - {unclosed: [\n"
        policy = json.loads(json.dumps(self.base))
        policy["bindings"].append({"role": "no-such-role", "subjects": ["mallory"], "from": {"issuer": HS_ISSUER},
                                   "source": policy["bindings"][0]["source"]})
        return yaml.safe_dump(policy, sort_keys=False)

    def swap(self, text: str) -> None:
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(text)
        os.replace(temporary, self.path)

    def write_valid(self) -> None:
        self.generation += 1
        self.swap(self.valid_text(self.generation))

    def write_invalid(self) -> str:
        variant = ("broken YAML", "binding to an undefined role")[self.invalid_count % 2]
        self.invalid_count += 1
        self.swap(self.invalid_text(variant))
        return variant


def prepare(server: pathlib.Path, work: pathlib.Path, jwks_port: int):
    out = subprocess.run(
        [server, "policy", "compile", SAMPLE, "--secrets-dir", work / "secrets",
         "--documents-dir", work / "documents"],
        check=True, capture_output=True, text=True).stdout
    policy = yaml.safe_load(out)
    auth = policy["authentication"]
    resource = auth["resource"]
    # Loopback only: drop the issuers whose keys would be discovered on the network (Google).
    auth["issuers"] = [i for i in auth["issuers"] if "hmacKeyFile" in i["keys"]]
    hmac_key = secrets.token_hex(32).encode()
    for issuer in auth["issuers"]:
        key_file = pathlib.Path(issuer["keys"]["hmacKeyFile"])
        key_file.parent.mkdir(parents=True, exist_ok=True)
        key_file.write_bytes(hmac_key)
    auth["issuers"].append({
        "issuer": RS_ISSUER, "audiences": [resource], "algorithms": ["RS256"],
        "keys": {"jwksUri": f"http://127.0.0.1:{jwks_port}/jwks.json"},
        "jwksCacheTtlSeconds": JWKS_TTL, "allowInsecureHttp": True,
    })
    api_key = "pk_soak_" + secrets.token_hex(16)
    table = work / "secrets" / "api-keys.yaml"
    table.write_text(yaml.safe_dump({
        "apiVersion": "palisade.dev/v1alpha1", "kind": "ApiKeyTable",
        "keys": [{"id": "soak", "sha256": hashlib.sha256(api_key.encode()).hexdigest(), "scopes": ["public:read"]}]}))
    auth["apiKeysFile"] = str(table)
    return policy, resource, hmac_key, api_key


def check_policy_files(server: pathlib.Path, files: PolicyFiles, work: pathlib.Path) -> None:
    """The valid variant must pass `policy check` and each invalid one fail it, so that the
    reloads test what they claim to."""
    probe = work / "probe.yaml"
    probe.write_text(files.valid_text(0))
    result = subprocess.run([server, "policy", "check", probe], capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"the soak's valid policy does not pass `policy check`:\n{result.stdout}{result.stderr}")
    for variant in ("broken YAML", "binding to an undefined role"):
        probe.write_text(files.invalid_text(variant))
        if subprocess.run([server, "policy", "check", probe], capture_output=True).returncode == 0:
            raise SystemExit(f"the soak's invalid policy ({variant}) passes `policy check`")
    probe.unlink()


# ----------------------------------------------------------------------------------------------
# The server process and its resources


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_status(pid: int) -> dict:
    fields = {}
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        fields[name] = value.strip()
    return fields


def cpu_time(pid: int) -> float:
    """User + system CPU seconds of the process."""
    text = pathlib.Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def sample(pid: int) -> tuple:
    """(RSS KiB, open file descriptors, threads) of the process."""
    status = proc_status(pid)
    return (int(status["VmRSS"].split()[0]), len(os.listdir(f"/proc/{pid}/fd")), int(status["Threads"]))


def at_rest(pid: int, target: Target) -> tuple:
    """A sample once no connection is open (the server has seen every client connection end,
    including this script's own /ready and /metrics requests) and the fd count has settled."""
    deadline = time.monotonic() + 30
    while True:
        open_connections = target.metric("palisade_connections_open")
        time.sleep(1)
        samples = []
        for _ in range(3):
            samples.append(sample(pid))
            time.sleep(0.5)
        settled = len({s[1] for s in samples}) == 1
        if open_connections == 0 and settled or time.monotonic() > deadline:
            return samples[-1]


class Sampler:
    def __init__(self, pid: int, interval: float):
        self.pid, self.interval = pid, interval
        self.samples = []  # (seconds since the load began, rss KiB, fds, threads)
        self.stop = threading.Event()
        self.thread = None

    def start(self, origin: float) -> None:
        def loop():
            while not self.stop.is_set():
                try:
                    self.samples.append((time.monotonic() - origin,) + sample(self.pid))
                except (OSError, KeyError):
                    pass
                self.stop.wait(self.interval)

        self.thread = threading.Thread(target=loop, daemon=True)
        self.thread.start()

    def finish(self) -> None:
        self.stop.set()
        self.thread.join()


# ----------------------------------------------------------------------------------------------
# Checks and report


def audit_check(records: list, audit_file: pathlib.Path) -> dict:
    """Matches the audit log with the ledger by request id."""
    closing = collections.defaultdict(list)
    lines = unparsable = authentication_ok = 0
    by_kind_of_event = collections.Counter()
    for raw in audit_file.read_bytes().splitlines():
        lines += 1
        try:
            event = json.loads(raw)
        except ValueError:
            unparsable += 1
            continue
        by_kind_of_event[(event.get("kind"), event.get("decision"))] += 1
        if "http_status" in event or event.get("decision") == "abandoned":
            closing[event.get("request_id")].append(event)
        elif event.get("kind") == "authentication" and event.get("decision") == "success":
            authentication_ok += 1
    problems = []
    reached = matched = 0
    known = set()
    for record in records:
        known.add(record.rid)
        kind = KINDS[record.kind]
        events = closing.get(record.rid, [])
        if not kind.reaches:
            if events:
                problems.append(f"{record.rid}: {len(events)} closing event(s) for a request that never "
                                "reached the router")
            continue
        reached += 1
        if len(events) != 1:
            problems.append(f"{record.rid}: {len(events)} closing events, expected 1")
            continue
        matched += 1
        event = events[0]
        if record.status is not None and event.get("http_status") != record.status:
            problems.append(f"{record.rid}: audited http_status {event.get('http_status')}, "
                            f"the client got {record.status}")
        if kind.reasons and event.get("reason") not in kind.reasons:
            problems.append(f"{record.rid}: audited reason {event.get('reason')!r}, "
                            f"expected one of {sorted(kind.reasons)}")
    strays = sum(len(v) for rid, v in closing.items() if rid not in known)
    if strays:
        problems.append(f"{strays} closing event(s) with a request id the generator never sent")
    if unparsable:
        problems.append(f"{unparsable} audit line(s) are not JSON")
    closing_total = sum(len(v) for v in closing.values())
    other = lines - unparsable - closing_total - authentication_ok
    if other:
        problems.append(f"{other} audit line(s) are neither closing events nor successful authentications")
    return {"lines": lines, "closing": closing_total, "authentication_ok": authentication_ok, "reached": reached,
            "matched": matched, "strays": strays, "problems": problems, "events": by_kind_of_event}


def status_check(records: list) -> tuple:
    per_kind = collections.defaultdict(collections.Counter)
    unexpected = []
    for record in records:
        kind = KINDS[record.kind]
        per_kind[record.kind]["none" if record.status is None else record.status] += 1
        wrong = record.problem
        if wrong is None and record.status != kind.status:
            wrong = f"status {record.status}, expected {kind.status or 'no answer'}"
        if wrong is None and kind.code is not None and record.code != kind.code:
            wrong = f"code {record.code!r}, expected {kind.code!r}"
        if wrong is None and kind.code is None and record.status is not None and record.status >= 400:
            wrong = f"code {record.code!r}"
        if wrong:
            unexpected.append((record, wrong))
    return per_kind, unexpected


def quantiles(values: list) -> tuple:
    return min(values), statistics.median(values), max(values)


def git_revision() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
        return head + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def write_report(path: pathlib.Path, duration: int, text: str) -> None:
    begin, end = f"<!-- soak-{duration}s:begin -->", f"<!-- soak-{duration}s:end -->"
    block = f"{begin}\n{text.rstrip()}\n{end}"
    current = path.read_text() if path.exists() else "# Soak\n"
    if begin in current and end in current:
        before, rest = current.split(begin, 1)
        after = rest.split(end, 1)[1]
        current = before + block + after
    else:
        current = current.rstrip() + "\n\n" + block + "\n"
    path.write_text(current)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", default=os.environ.get("PALISADE_SOAK_SERVER",
                                                            str(ROOT / "target" / "release" / "palisade-server")),
                        help="the palisade-server binary (env PALISADE_SOAK_SERVER; default target/release/...)")
    parser.add_argument("--duration", type=int, default=1800, help="seconds of load (default 1800)")
    parser.add_argument("--warmup", type=float, default=0.2, help="share of the run before memory is judged (0.2)")
    parser.add_argument("--rate", type=float, default=40, help="valid requests per second, all workers (40)")
    parser.add_argument("--bad-rate", type=float, default=10, help="bad-credential requests per second (10)")
    parser.add_argument("--edge-rate", type=float, default=1,
                        help="oversize/trickled/abandoned requests per second (1)")
    parser.add_argument("--valid-workers", type=int, default=4, help="threads sending valid requests (4)")
    parser.add_argument("--sample-interval", type=float, default=2, help="seconds between RSS/fd samples (2)")
    parser.add_argument("--rss-tolerance", type=float, default=0.10, help="allowed RSS deviation from the median")
    parser.add_argument("--report", type=pathlib.Path, help="write the figures into this Markdown file")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (kept anyway on failure)")
    args = parser.parse_args()
    server = pathlib.Path(args.server).resolve()
    if not server.exists():
        raise SystemExit(f"{server} does not exist: build it first (cargo build [--release] -p palisade-server)")
    work = pathlib.Path(tempfile.mkdtemp(prefix="palisade-soak-"))
    log(f"work directory {work}; server {server}")

    idp = Idp()
    jwks_port = idp.start()
    base, resource, hmac_key, api_key = prepare(server, work, jwks_port)
    policy_file = work / "policy.yaml"
    files = PolicyFiles(policy_file, base)
    check_policy_files(server, files, work)
    files.write_valid()
    creds = Credentials(resource, hmac_key, api_key)
    idp.publish([creds.rsa_jwk])

    port, metrics_port = free_port(), free_port()
    audit_file, server_log = work / "audit.log", work / "server.log"
    argv = [server, "serve", "--policy-file", policy_file, "--documents-dir", work / "documents",
            "--listen", f"127.0.0.1:{port}", "--metrics-listen", f"127.0.0.1:{metrics_port}",
            "--audit-log", audit_file, "--log-format", "json"]
    with open(server_log, "wb") as stderr:
        process = subprocess.Popen([str(a) for a in argv], stdout=subprocess.DEVNULL, stderr=stderr,
                                   start_new_session=True)
    target = Target(port, metrics_port)
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise SystemExit(f"the server exited ({process.returncode}): {server_log.read_text()[-2000:]}")
            try:
                if target.ready()[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("the server is not ready within 60 s")
            time.sleep(0.2)
        rest_before = at_rest(process.pid, target)
        log(f"server ready (pid {process.pid}): RSS {rest_before[0] / 1024:.1f} MiB, {rest_before[1]} fds, "
            f"{rest_before[2]} threads; load for {args.duration} s")

        soak = Soak(args, target, creds, idp, files)
        sampler = Sampler(process.pid, args.sample_interval)
        origin = time.monotonic()
        sampler.start(origin)
        soak.run(args.duration)
        sampler.finish()
        load_seconds = soak.load_end - origin

        rest_after = at_rest(process.pid, target)
        cpu_seconds = cpu_time(process.pid)
        metric_lines = {
            "policy reloads (success / failure)": (
                target.metric("palisade_policy_reloads_total", {"file": "policy", "result": "success"}),
                target.metric("palisade_policy_reloads_total", {"file": "policy", "result": "failure"})),
            "JWKS fetches (success / failure / rate-limited)": (
                target.metric("palisade_jwks_fetches_total", {"result": "success"}),
                target.metric("palisade_jwks_fetches_total", {"result": "failure"}),
                target.metric("palisade_jwks_fetches_total", {"result": "rate_limited"})),
            "connections refused": (target.metric("palisade_connections_refused_total"),),
            "requests shed": (target.metric("palisade_requests_shed_total"),),
        }
    finally:
        # Graceful stop: SIGTERM, then the server drains its connections and flushes the audit log.
        stopped_at = time.monotonic()
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            exit_code = process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            exit_code = f"killed after 60 s ({process.wait()})"
        stop_seconds = time.monotonic() - stopped_at
        if idp.server:
            idp.server.shutdown()

    # ---- checks ----
    records = soak.ledger.records
    failures = []
    per_kind, unexpected = status_check(records)
    if unexpected:
        failures.append(f"{len(unexpected)} unexpected answers")
    audit = audit_check(records, audit_file)
    if audit["problems"]:
        failures.append(f"audit: {len(audit['problems'])} problems")
    if audit["closing"] != audit["reached"] or audit["matched"] != audit["reached"]:
        failures.append(f"audit: {audit['closing']} closing events for {audit['reached']} requests "
                        "that reached the router")
    failures += [f"chaos: {f}" for f in soak.chaos_failures]
    if exit_code != 0:
        failures.append(f"the server's exit status after SIGTERM is {exit_code}")
    log_text = server_log.read_text(errors="replace")
    for needle in ("audit events dropped", "panicked"):
        if needle in log_text:
            failures.append(f"the server's log says {needle!r}")

    warm = args.duration * args.warmup
    # The load's samples after the warm-up (not those of its stop, while the slow clients finish).
    after_warmup = [s for s in sampler.samples if warm <= s[0] <= args.duration]
    rss = [s[1] for s in after_warmup]
    fds = [s[2] for s in after_warmup]
    threads = [s[3] for s in after_warmup]
    if len(rss) < 5:
        failures.append(f"only {len(rss)} memory samples after the warm-up")
        rss = rss or [0]
        fds = fds or [0]
        threads = threads or [0]
    rss_min, rss_median, rss_max = quantiles(rss)
    rss_spread = (rss_min / rss_median - 1, rss_max / rss_median - 1) if rss_median else (0, 0)
    if max(abs(rss_spread[0]), abs(rss_spread[1])) > args.rss_tolerance:
        failures.append(f"RSS after the warm-up spans {rss_spread[0]:+.1%} .. {rss_spread[1]:+.1%} of its median "
                        f"(allowed ±{args.rss_tolerance:.0%})")
    fd_bound = rest_before[1] + soak.fd_allowance()
    if max(fds) > fd_bound:
        failures.append(f"{max(fds)} file descriptors under load, more than the {rest_before[1]} at rest plus "
                        f"the {soak.fd_allowance()} the load can add")
    if rest_after[1] != rest_before[1]:
        failures.append(f"file descriptors at rest: {rest_before[1]} before the load, {rest_after[1]} after")

    # ---- summary ----
    sent = len(records)
    not_reaching = sent - audit["reached"]
    out = []
    out.append(f"Soak of `{server.relative_to(ROOT) if server.is_relative_to(ROOT) else server}` for "
               f"{args.duration} s ({load_seconds:.0f} s with the stop of the load), "
               f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, commit {git_revision()}, "
               f"{os.cpu_count()} × {cpu_model()}.")
    out.append("")
    out.append("| kind | expected | sent | answers | latency median / max (ms) |")
    out.append("|---|---|---:|---|---:|")
    for name, kind in KINDS.items():
        counts = per_kind.get(name, collections.Counter())
        expected = "no answer" if kind.status is None else str(kind.status)
        if kind.code is not None:
            expected += f" `{kind.code}`"
        answers = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items(), key=lambda kv: str(kv[0])))
        times = [(r.end - r.start) * 1000 for r in records if r.kind == name and r.end is not None]
        latency = f"{statistics.median(times):.0f} / {max(times):.0f}" if times else ""
        out.append(f"| `{name}` | {expected} | {sum(counts.values())} | {answers} | {latency} |")
    out.append(f"| **total** | | **{sent}** | {sent / max(load_seconds, 1):.1f} requests/s; "
               f"**{len(unexpected)} unexpected** | |")
    out.append("")
    out.append(f"- **Unexpected answers: {len(unexpected)}.**")
    for record, wrong in unexpected[:20]:
        out.append(f"  - `{record.rid}` at {record.start - origin:.1f} s: {wrong}")
    outside = " ".join(f"− {sum(per_kind[k].values())} `{k}`" for k, v in KINDS.items() if not v.reaches)
    out.append(f"- **Nothing lost**: {sent} requests sent {outside} (these never reach the router: "
               f"closed by the header-read timeout before a request exists, or refused by hyper's head limit) "
               f"= {audit['reached']} requests that reached it. The audit log holds {audit['closing']} closing "
               f"events (one per request id, with the status the client saw) + {audit['authentication_ok']} "
               f"`authentication`/`success` events of requests that went on = {audit['lines']} lines. "
               f"{audit['matched']} of {audit['reached']} requests have exactly one closing event, the "
               f"{not_reaching} others none; {audit['strays']} events name a request the generator did not send; "
               f"{len(audit['problems'])} mismatches.")
    for problem in audit["problems"][:20]:
        out.append(f"  - {problem}")
    out.append(f"- **Resident memory** after the {warm:.0f} s warm-up ({len(rss)} samples every "
               f"{args.sample_interval:g} s): min {rss_min / 1024:.1f} MiB, median {rss_median / 1024:.1f} MiB, "
               f"max {rss_max / 1024:.1f} MiB ({rss_spread[0]:+.1%} / {rss_spread[1]:+.1%} of the median; "
               f"allowed ±{args.rss_tolerance:.0%}); {rest_before[0] / 1024:.1f} MiB at rest before the load, "
               f"{rest_after[0] / 1024:.1f} MiB after.")
    fd_min, fd_median, fd_max = quantiles(fds)
    out.append(f"- **File descriptors**: {rest_before[1]} at rest before the load, {rest_after[1]} at rest after it; "
               f"under load min {fd_min}, median {fd_median:g}, max {fd_max} (bound: {rest_before[1]} at rest + "
               f"2 × {soak.connections()} connections of the generator + 3 of the server's own = {fd_bound}). "
               f"Threads: "
               f"{min(threads)}–{max(threads)}.")
    tenths = []
    for i in range(10):
        part = [s for s in sampler.samples if args.duration * i / 10 <= s[0] < args.duration * (i + 1) / 10]
        if part:
            tenths.append(f"{statistics.median(x[1] for x in part) / 1024:.1f}/{max(x[2] for x in part)}")
    out.append(f"- **By tenth of the run** (median RSS MiB / most fds): {', '.join(tenths)}.")
    out.append("- **Chaos** (seconds since the load began):")
    for at, what in soak.chaos_log:
        out.append(f"  - {at:6.1f} s: {what}")
    for what, spans in soak.windows.items():
        inside = [r for r in records if any(a <= r.start <= b for a, b in spans)]
        wrong = sum(1 for r, _ in unexpected if any(a <= r.start <= b for a, b in spans))
        jwks = sum(1 for r in inside if r.kind in ("list_rs256", "call_rs256", "denied_rs256"))
        out.append(f"- **With {what}** ({len(spans)} × {sum(b - a for a, b in spans):.0f} s in all): {len(inside)} "
                   f"requests sent, {jwks} of them valid RS256 calls and lists; {wrong} unexpected answers.")
    out.append("- **Server metrics** at the end: " + "; ".join(
        f"{name}: {' / '.join(f'{v:.0f}' for v in values)}" for name, values in metric_lines.items()) +
        f". JWKS requests the IdP saw, by its mode: {dict(idp.counts)}.")
    out.append(f"- **CPU** of the server: {cpu_seconds:.0f} s over {load_seconds:.0f} s of load "
               f"({cpu_seconds / max(load_seconds, 1):.0%} of one core).")
    out.append(f"- **Graceful stop**: SIGTERM → exit status {exit_code} in {stop_seconds:.1f} s.")
    out.append(f"- **Result: {'PASS' if not failures else 'FAIL: ' + '; '.join(failures)}**")
    summary = "\n".join(out)
    print()
    print(summary, flush=True)

    if args.report:
        relative_server = server.relative_to(ROOT) if server.is_relative_to(ROOT) else server
        command = ["scripts/soak.py", "--server", str(relative_server), "--duration", str(args.duration)]
        for flag, value, default in [("--rate", args.rate, 40), ("--bad-rate", args.bad_rate, 10),
                                     ("--edge-rate", args.edge_rate, 1), ("--valid-workers", args.valid_workers, 4)]:
            if value != default:
                command += [flag, f"{value:g}"]
        command += ["--report", str(args.report)]
        text = f"Reproduce with `{shlex.join(command)}`"
        if command[1:5] == ["--server", "target/release/palisade-server", "--duration", "1800"] and len(command) == 7:
            text += " (what `make soak` runs)"
        text += ".\n\n"
        write_report(args.report if args.report.is_absolute() else ROOT / args.report, args.duration, text + summary)
        log(f"figures written to {args.report}")

    if failures or args.keep:
        log(f"work directory kept: {work} (audit.log, server.log, policy.yaml)")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
