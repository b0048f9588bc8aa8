// Drives a Palisade server with the official TypeScript MCP SDK (pinned
// `@modelcontextprotocol/sdk@1.32.2`), on Node 20 or later.
//
// Environment:
//   MCP_URL       the server's MCP endpoint, e.g. http://127.0.0.1:8080/mcp
//   MCP_TOKEN     the bearer token, sent as a static `Authorization: Bearer` header through
//                 `requestInit`; no `authProvider`, so the SDK never starts an OAuth flow on 401/403
//   NODE_MODULES  the node_modules holding the SDK (target/e2e-deps/node/node_modules)
//   MCP_TOOLS     space-separated tools to call (default: get_public_info get_confidential_info)
//   MCP_URIS      space-separated resource URIs to read (default: the two seed-001 documents)
//   MCP_PROMPTS   space-separated prompts to get; when set (even empty), prompts are listed too
//
// Prints ONE JSON object on stdout: what the client saw. Every HTTP exchange is recorded too
// (JSON-RPC method, status, `WWW-Authenticate`) through the transport's `fetch` option.
// Exits 0 whenever it could report, whatever the server answered.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const TEXT_PREFIX = 80;
const STEP_TIMEOUT_MS = 20_000;
const TOTAL_TIMEOUT_MS = 45_000;

const report = { client: null };
let printed = false;

function print() {
    if (!printed) {
        printed = true;
        process.stdout.write(JSON.stringify(report) + '\n');
    }
}

function describeError(error, exchange) {
    const message = String(error?.message ?? error);
    const out = { ok: false, errorClass: error?.constructor?.name ?? typeof error, message: message.slice(0, 300) };
    // StreamableHTTPError carries the HTTP status as `code` and the response body in its message.
    const body = message.split('Error POSTing to endpoint: ')[1];
    if (body !== undefined) {
        try {
            out.body = JSON.parse(body);
        } catch {
            // not JSON: the message says it all
        }
    }
    if (error && typeof error === 'object' && 'code' in error) out.code = error.code;
    if (error && typeof error === 'object' && error.data !== undefined) out.data = error.data;
    if (exchange) {
        out.httpStatus = exchange.status;
        if (exchange.wwwAuthenticate) out.wwwAuthenticate = exchange.wwwAuthenticate;
    }
    return out;
}

function firstText(contents) {
    for (const item of contents ?? []) {
        if (typeof item?.text === 'string') return item.text.slice(0, TEXT_PREFIX);
    }
    return '';
}

async function main() {
    const url = process.env.MCP_URL;
    const token = process.env.MCP_TOKEN;
    const modules = process.env.NODE_MODULES;
    const tools = (process.env.MCP_TOOLS ?? 'get_public_info get_confidential_info').split(/\s+/).filter(Boolean);
    // Arguments per tool name (JSON object); a tool not named is called without arguments.
    const toolArguments = JSON.parse(process.env.MCP_ARGUMENTS ?? '{}');
    const uris = (process.env.MCP_URIS ?? 'palisade://public/public.md palisade://confidential/confidential.md')
        .split(/\s+/)
        .filter(Boolean);

    const sdk = join(modules, '@modelcontextprotocol/sdk');
    const version = JSON.parse(readFileSync(join(sdk, 'package.json'), 'utf8')).version;
    report.client = `typescript @modelcontextprotocol/sdk ${version}`;
    const { Client } = await import(pathToFileURL(join(sdk, 'dist/esm/client/index.js')).href);
    const { StreamableHTTPClientTransport } = await import(
        pathToFileURL(join(sdk, 'dist/esm/client/streamableHttp.js')).href
    );

    const exchanges = [];
    report.exchanges = exchanges;
    const last = (rpc, target) =>
        [...exchanges].reverse().find(e => e.rpc === rpc && (target === undefined || e.target === target));

    // Records every exchange; the SDK's errors carry the status only for non-2xx answers.
    const recordingFetch = async (input, init) => {
        const response = await fetch(input, init);
        const target = new URL(input instanceof Request ? input.url : String(input));
        target.search = '';
        const entry = { http: init?.method ?? 'GET', url: target.href, status: response.status };
        try {
            const body = typeof init?.body === 'string' ? JSON.parse(init.body) : undefined;
            if (body && typeof body === 'object' && !Array.isArray(body)) {
                entry.rpc = body.method;
                const name = body.params?.name ?? body.params?.uri;
                if (name) entry.target = name;
            }
        } catch {
            // not JSON: recorded without a method
        }
        const headers = new Headers(init?.headers);
        if (headers.get('mcp-protocol-version')) entry.protocolVersion = headers.get('mcp-protocol-version');
        const challenge = response.headers.get('www-authenticate');
        if (challenge) entry.wwwAuthenticate = challenge;
        entry.contentType = response.headers.get('content-type');
        exchanges.push(entry);
        return response;
    };

    const transport = new StreamableHTTPClientTransport(new URL(url), {
        requestInit: { headers: { Authorization: `Bearer ${token}` } },
        fetch: recordingFetch,
    });
    const transportErrors = [];
    const client = new Client({ name: 'palisade-e2e', version: '0.0.0' });
    client.onerror = error => transportErrors.push(String(error?.message ?? error).slice(0, 200));
    report.transportErrors = transportErrors;
    const options = { timeout: STEP_TIMEOUT_MS };

    report.connected = false;
    try {
        await client.connect(transport, options);
    } catch (error) {
        report.connectError = describeError(error, last('initialize'));
        await client.close().catch(() => {});
        return;
    }
    report.connected = true;
    try {
        report.protocolVersion = transport.protocolVersion ?? null;
        report.serverInfo = client.getServerVersion()?.name ?? null;

        try {
            const listing = await client.listTools(undefined, options);
            report.tools = listing.tools.map(t => t.name);
        } catch (error) {
            report.tools = null;
            report.toolsError = describeError(error, last('tools/list'));
        }

        report.calls = {};
        for (const name of tools) {
            try {
                const result = await client.callTool({ name, arguments: toolArguments[name] ?? {} }, undefined, options);
                report.calls[name] = {
                    ok: !result.isError,
                    isError: Boolean(result.isError),
                    text: firstText(result.content),
                };
            } catch (error) {
                report.calls[name] = describeError(error, last('tools/call', name));
            }
        }

        try {
            const resources = await client.listResources(undefined, options);
            report.resources = resources.resources.map(r => r.uri);
        } catch (error) {
            report.resources = null;
            report.resourcesError = describeError(error, last('resources/list'));
        }

        report.reads = {};
        for (const uri of uris) {
            try {
                const read = await client.readResource({ uri }, options);
                report.reads[uri] = { ok: true, text: firstText(read.contents) };
            } catch (error) {
                report.reads[uri] = describeError(error, last('resources/read', uri));
            }
        }

        if (process.env.MCP_PROMPTS !== undefined) {
            try {
                const prompts = await client.listPrompts(undefined, options);
                report.prompts = prompts.prompts.map(p => p.name);
            } catch (error) {
                report.prompts = null;
                report.promptsError = describeError(error, last('prompts/list'));
            }
            report.gets = {};
            for (const name of process.env.MCP_PROMPTS.split(/\s+/).filter(Boolean)) {
                try {
                    const got = await client.getPrompt({ name }, options);
                    report.gets[name] = { ok: true, text: firstText(got.messages.map(m => m.content)) };
                } catch (error) {
                    report.gets[name] = describeError(error, last('prompts/get', name));
                }
            }
        }
    } finally {
        await client.close().catch(() => {});
    }
}

const deadline = setTimeout(() => {
    report.fatal = { ok: false, errorClass: 'Timeout', message: `no report within ${TOTAL_TIMEOUT_MS} ms` };
    print();
    process.exit(0);
}, TOTAL_TIMEOUT_MS);

main()
    .catch(error => {
        report.fatal = describeError(error);
        report.stack = String(error?.stack ?? '').slice(0, 2000);
    })
    .finally(() => {
        clearTimeout(deadline);
        print();
        // The SDK may leave a reconnect timer or socket behind; the report is all that matters.
        process.exit(0);
    });
