-- wrk script: POSTs one MCP request (MCP_BODY) with its headers (MCP_AUTH_HEADER: "Name: value"
-- lines, e.g. one authentication header, or empty for an anonymous caller), and prints one JSON
-- line of results.
local body = os.getenv("MCP_BODY")
local auth = os.getenv("MCP_AUTH_HEADER") or ""

wrk.method = "POST"
wrk.body = body
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"
-- Several headers may be given, one per line.
for line in auth:gmatch("[^\n]+") do
  local name, value = line:match("^([^:]+):%s*(.*)$")
  wrk.headers[name] = value
end

done = function(summary, latency, requests)
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"non_2xx":%d,"connect_errors":%d,"read_errors":%d,"timeouts":%d,"p50_us":%d,"p99_us":%d}\n',
    summary.requests, summary.duration, summary.errors.status, summary.errors.connect,
    summary.errors.read, summary.errors.timeout, latency:percentile(50), latency:percentile(99)))
end
