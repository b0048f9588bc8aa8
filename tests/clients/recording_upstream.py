"""A stdio MCP server that writes down every message it receives, for tests of what a proxying
palisade-server lets through (tests/tests/proxy.rs). Standard library only.

    python3 recording_upstream.py RECORD_FILE

Each line read from standard input is appended to RECORD_FILE as it came. It offers five tools:
`read_file` and `write_file`, `bad name` (a name no policy rule can govern), and `dup` twice;
`tools/call` answers with the name and arguments it received. Any other request is answered
-32601, notifications are ignored.
"""

import json
import sys

TOOLS = [
    {"name": "read_file", "description": "Read a file", "inputSchema": {"type": "object"}},
    {"name": "write_file", "description": "Write a file", "inputSchema": {"type": "object"}},
    {"name": "bad name", "description": "Not governable", "inputSchema": {"type": "object"}},
    {"name": "dup", "description": "First", "inputSchema": {"type": "object"}},
    {"name": "dup", "description": "Second", "inputSchema": {"type": "object"}},
]


def answer(message: dict) -> dict | None:
    method = message.get("method")
    if "id" not in message:
        return None
    if method == "initialize":
        result = {
            "protocolVersion": "2025-11-25",
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "recording-upstream", "version": "1"},
        }
    elif method == "tools/list":
        result = {"tools": TOOLS}
    elif method == "tools/call":
        params = message.get("params", {})
        text = json.dumps({"called": params.get("name"), "arguments": params.get("arguments")})
        result = {"content": [{"type": "text", "text": text}]}
    else:
        return {
            "jsonrpc": "2.0",
            "id": message["id"],
            "error": {"code": -32601, "message": f"Method not found: {method}"},
        }
    return {"jsonrpc": "2.0", "id": message["id"], "result": result}


def main() -> int:
    with open(sys.argv[1], "a", encoding="utf-8") as record:
        for line in sys.stdin:
            record.write(line)
            record.flush()
            reply = answer(json.loads(line))
            if reply is not None:
                sys.stdout.write(json.dumps(reply) + "\n")
                sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
