#!/usr/bin/env python3
"""The peer of the load benchmark: seed 001 (MCPAuthPrototype) on FastMCP 4.1.2.

The two document tools of the company-info sample, each behind the scope it needs
(`get_public_info`: public:read, `get_confidential_info`: confidential:read), enforced by FastMCP's
own per-component authorization (`require_scopes`), which both filters `tools/list` and checks
`tools/call`. Bearer tokens are verified by `JWTVerifier` on HS256 with the same key, issuer and
audience as Palisade's development issuer, so the load benchmark sends both servers the same
tokens and the same requests.

Fastest configuration FastMCP offers: Streamable HTTP in stateless mode (no session, no
`initialize` needed) with JSON responses instead of SSE (`http_app(stateless_http=True,
json_response=True)`); uvicorn with uvloop and httptools (installed, so uvicorn's "auto" picks
them), its access log off and only warnings logged; FastMCP's banner and update check off; async
tools. `--workers N` runs N uvicorn worker processes (stateless mode makes that safe); the load
benchmark runs one per core, which served about twice the requests of one worker on 2 cores.

Run with target/bench-venv/bin/python (bench/requirements-peer.txt), started by
scripts/load_bench.py:

    fastmcp_peer.py --port P --hmac-key-file F --issuer I --audience A --public-dir D1 --confidential-dir D2
"""
import argparse
import json
import os
import pathlib

# Before fastmcp is imported: no banner, no update check, quiet logs.
os.environ.setdefault("FASTMCP_LOG_LEVEL", "WARNING")
os.environ.setdefault("FASTMCP_SHOW_SERVER_BANNER", "false")
os.environ.setdefault("FASTMCP_CHECK_FOR_UPDATES", "off")

from fastmcp import FastMCP  # noqa: E402
from fastmcp.server.auth import require_scopes  # noqa: E402
from fastmcp.server.auth.providers.jwt import JWTVerifier  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--hmac-key-file", required=True)
    parser.add_argument("--issuer", required=True)
    parser.add_argument("--audience", required=True)
    parser.add_argument("--public-dir", required=True, help="the public collection (one file per document)")
    parser.add_argument("--confidential-dir", required=True, help="the confidential collection")
    parser.add_argument("--workers", type=int, default=1)
    return parser.parse_args(argv)


def read_all(folder: str) -> str:
    """A collection as Palisade's `readAll` tools return it, read once."""
    return "\n\n".join(f'<document name="{path.name}">\n{path.read_text().rstrip()}\n</document>'
                       for path in sorted(pathlib.Path(folder).iterdir()) if path.is_file())


def build(args: argparse.Namespace) -> FastMCP:
    verifier = JWTVerifier(
        public_key=pathlib.Path(args.hmac_key_file).read_bytes(),
        algorithm="HS256",
        issuer=args.issuer,
        audience=args.audience,
    )
    mcp = FastMCP("company-info", auth=verifier)
    public, confidential = read_all(args.public_dir), read_all(args.confidential_dir)

    # async: FastMCP runs a synchronous tool in a worker thread, which costs more than the tool.
    @mcp.tool(description="Public company information", auth=require_scopes("public:read"))
    async def get_public_info() -> str:
        return public

    @mcp.tool(description="Confidential strategy", auth=require_scopes("confidential:read"))
    async def get_confidential_info() -> str:
        return confidential

    return mcp


def app():
    """uvicorn factory (one per worker process); reads its arguments from BENCH_PEER_ARGV."""
    args = parse_args(json.loads(os.environ["BENCH_PEER_ARGV"]))
    return build(args).http_app(path="/mcp", stateless_http=True, json_response=True)


def main() -> None:
    import sys

    import uvicorn

    args = parse_args()
    os.environ["BENCH_PEER_ARGV"] = json.dumps(sys.argv[1:])
    uvicorn.run(
        "fastmcp_peer:app", factory=True, host=args.host, port=args.port, workers=args.workers,
        log_level="warning", access_log=False, app_dir=str(pathlib.Path(__file__).resolve().parent),
        timeout_keep_alive=60)


if __name__ == "__main__":
    main()
