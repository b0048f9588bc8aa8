"""Drives a Palisade server with the official Python MCP SDK (pinned `mcp==2.3.0`).

Environment:
  MCP_URL    the server's MCP endpoint, e.g. http://127.0.0.1:8080/mcp
  MCP_TOKEN  the bearer token, sent as a static `Authorization: Bearer` header (no OAuth provider:
             the SDK must not try to obtain or upgrade tokens)
  MCP_MODE   the SDK's connect mode: `auto` (default: probes `server/discover` at 2026-07-28 and
             falls back to `initialize`) or `legacy` (the `initialize` handshake)
  MCP_TOOLS  space-separated tools to call (default: get_public_info get_confidential_info)
  MCP_URIS   space-separated resource URIs to read (default: the two seed-001 documents)
  MCP_PROMPTS  space-separated prompts to get; when set (even empty), prompts are listed too

Prints ONE JSON object on stdout: what the client saw. Every HTTP exchange is recorded too
(JSON-RPC method, status, `WWW-Authenticate`), since the SDK's exceptions do not carry the status.
Exits 0 whenever it could report, whatever the server answered.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from typing import Any

import anyio
import httpx2
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError

TEXT_PREFIX = 80
STEP_TIMEOUT = 20
TOTAL_TIMEOUT = 45


def sdk_version() -> str:
    from importlib.metadata import version

    return version("mcp")


class Exchanges:
    """Every HTTP exchange of the httpx2 client: request method/target, status, challenge."""

    def __init__(self) -> None:
        self.log: list[dict[str, Any]] = []

    async def on_response(self, response: httpx2.Response) -> None:
        request = response.request
        entry: dict[str, Any] = {
            "http": request.method,
            "url": str(request.url.copy_with(query=None)),
            "status": response.status_code,
        }
        try:
            body = json.loads(request.content or b"null")
        except (ValueError, httpx2.RequestNotRead):
            body = None
        if isinstance(body, dict):
            entry["rpc"] = body.get("method")
            params = body.get("params") or {}
            target = params.get("name") or params.get("uri")
            if target:
                entry["target"] = target
        if request.headers.get("mcp-protocol-version"):
            entry["protocolVersion"] = request.headers["mcp-protocol-version"]
        challenge = response.headers.get("www-authenticate")
        if challenge:
            entry["wwwAuthenticate"] = challenge
        entry["contentType"] = response.headers.get("content-type")
        self.log.append(entry)

    def last(self, rpc: str, target: str | None = None) -> dict[str, Any] | None:
        for entry in reversed(self.log):
            if entry.get("rpc") == rpc and (target is None or entry.get("target") == target):
                return entry
        return None


def describe_error(error: BaseException, exchange: dict[str, Any] | None) -> dict[str, Any]:
    """The error as the SDK raised it, plus the HTTP status of the exchange behind it."""
    if isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        return describe_error(error.exceptions[0], exchange)
    out: dict[str, Any] = {
        "ok": False,
        "errorClass": f"{type(error).__module__}.{type(error).__qualname__}",
        "message": str(error)[:300],
    }
    if isinstance(error, MCPError):
        out["code"] = error.code
        out["message"] = error.message[:300]
        if error.data is not None:
            out["data"] = error.data
    if exchange is not None:
        out["httpStatus"] = exchange["status"]
        if "wwwAuthenticate" in exchange:
            out["wwwAuthenticate"] = exchange["wwwAuthenticate"]
    return out


def first_text(contents: list[Any]) -> str:
    for item in contents:
        text = getattr(item, "text", None)
        if isinstance(text, str):
            return text[:TEXT_PREFIX]
    return ""


async def run(report: dict[str, Any]) -> None:
    url = os.environ["MCP_URL"]
    token = os.environ["MCP_TOKEN"]
    mode = os.environ.get("MCP_MODE", "auto")
    tools = os.environ.get("MCP_TOOLS", "get_public_info get_confidential_info").split()
    # Arguments per tool name (JSON object); a tool not named is called without arguments.
    arguments = json.loads(os.environ.get("MCP_ARGUMENTS", "{}"))
    uris = os.environ.get(
        "MCP_URIS", "palisade://public/public.md palisade://confidential/confidential.md"
    ).split()
    report["mode"] = mode

    exchanges = Exchanges()
    report["exchanges"] = exchanges.log
    http = create_mcp_http_client(
        headers={"Authorization": f"Bearer {token}"},
        timeout=httpx2.Timeout(STEP_TIMEOUT),
    )
    http.event_hooks["response"].append(exchanges.on_response)

    async with http:
        client = Client(
            streamable_http_client(url, http_client=http),
            mode=mode,
            read_timeout_seconds=STEP_TIMEOUT,
            # Every listing reaches the server: the test is about what the server answers.
            cache=None,
        )
        report["connected"] = False
        try:
            async with client:
                report["connected"] = True
                await explore(client, exchanges, report, tools, uris, arguments)
        except Exception as error:  # noqa: BLE001 - reported, not handled
            if report["connected"]:
                raise
            connect = exchanges.last("initialize") or exchanges.last("server/discover")
            report["connectError"] = describe_error(error, connect)


async def explore(
    client: Client,
    exchanges: Exchanges,
    report: dict[str, Any],
    tools: list[str],
    uris: list[str],
    arguments: dict[str, Any],
) -> None:
    report["protocolVersion"] = client.protocol_version
    info = client.server_info
    report["serverInfo"] = info.name if info is not None else None

    try:
        listing = await client.list_tools()
        report["tools"] = [tool.name for tool in listing.tools]
    except Exception as error:  # noqa: BLE001
        report["tools"] = None
        report["toolsError"] = describe_error(error, exchanges.last("tools/list"))

    report["calls"] = {}
    for name in tools:
        try:
            result = await client.call_tool(name, arguments.get(name, {}))
            report["calls"][name] = {
                "ok": not result.is_error,
                "isError": bool(result.is_error),
                "text": first_text(result.content),
            }
        except Exception as error:  # noqa: BLE001 - reported per call
            report["calls"][name] = describe_error(error, exchanges.last("tools/call", name))

    try:
        resources = await client.list_resources()
        report["resources"] = [str(resource.uri) for resource in resources.resources]
    except Exception as error:  # noqa: BLE001
        report["resources"] = None
        report["resourcesError"] = describe_error(error, exchanges.last("resources/list"))

    report["reads"] = {}
    for uri in uris:
        try:
            read = await client.read_resource(uri)
            report["reads"][uri] = {"ok": True, "text": first_text(read.contents)}
        except Exception as error:  # noqa: BLE001
            report["reads"][uri] = describe_error(error, exchanges.last("resources/read", uri))

    prompts = os.environ.get("MCP_PROMPTS")
    if prompts is not None:
        try:
            listed = await client.list_prompts()
            report["prompts"] = [prompt.name for prompt in listed.prompts]
        except Exception as error:  # noqa: BLE001
            report["prompts"] = None
            report["promptsError"] = describe_error(error, exchanges.last("prompts/list"))
        report["gets"] = {}
        for name in prompts.split():
            try:
                got = await client.get_prompt(name)
                report["gets"][name] = {"ok": True, "text": first_text([m.content for m in got.messages])}
            except Exception as error:  # noqa: BLE001
                report["gets"][name] = describe_error(error, exchanges.last("prompts/get", name))


async def run_bounded(report: dict[str, Any]) -> None:
    with anyio.fail_after(TOTAL_TIMEOUT):
        await run(report)


def main() -> int:
    report: dict[str, Any] = {"client": f"python mcp {sdk_version()}"}
    try:
        anyio.run(run_bounded, report)
    except BaseException as error:  # noqa: BLE001 - the report says what went wrong
        report["fatal"] = describe_error(error, None)
        report["traceback"] = traceback.format_exc()[-2000:]
    print(json.dumps(report, default=str))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
