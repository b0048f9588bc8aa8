#!/usr/bin/env bash
# Prints the tokens and client examples of `make run`.
set -euo pipefail
server=$1 policy=$2
public=$("$server" token --policy-file "$policy" --sub alice --scope public:read --exp 8h)
full=$("$server" token --policy-file "$policy" --sub bob --scope public:read confidential:read --exp 8h)
expired=$("$server" token --policy-file "$policy" --sub charlie --scope public:read --exp -1h)
cat <<MSG

Palisade is serving the company-info sample (seed 001) at http://127.0.0.1:8080/mcp
  metrics: http://127.0.0.1:9090/metrics    audit log: target/dev/audit.log

Tokens (HS256, issuer palisade-dev, valid 8 hours):
  public only  (alice): export PUBLIC_TOKEN=$public
  full access  (bob):   export FULL_TOKEN=$full
  expired      (charlie): export EXPIRED_TOKEN=$expired

List the tools a token may see (alice sees get_public_info only):
  curl -s http://127.0.0.1:8080/mcp -H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream' \\
    -H "Authorization: Bearer \$PUBLIC_TOKEN" -d '{"jsonrpc":"2.0","id":1,"method":"tools/list"}'

Call a tool (alice is refused get_confidential_info with 403 insufficient_scope):
  curl -s -i http://127.0.0.1:8080/mcp -H 'Content-Type: application/json' -H "Authorization: Bearer \$PUBLIC_TOKEN" \\
    -d '{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"get_confidential_info","arguments":{}}}'

With an MCP client, e.g. Claude Code:
  claude mcp add --transport http palisade http://127.0.0.1:8080/mcp --header "Authorization: Bearer \$FULL_TOKEN"

Stop with Ctrl-C.
MSG
