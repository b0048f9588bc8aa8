#!/usr/bin/env python3
"""What trace export costs a request: the same server with export off, on at 100% and on at 1%,
same run.

Five release palisade-server processes serve the same document tool to an anonymous caller (the
policy below), audit to a file; three export over OTLP gRPC to a real OpenTelemetry Collector
(target/otelcol/bin/otelcol, `make cluster-build`; its file exporter writes protobuf to /dev/null): one
records every trace (`parentbased_always_on`), one 1% of the traces that start at the server
(`parentbased_traceidratio` 0.01, the requests bring no trace context), and one none
(`always_off`: what every request pays once export is on, whatever the ratio); two have export off: the
second one ("off, again") measures the bench's own noise, the difference between two identical
servers in the same run, against which the cost at 1% is judged. wrk sends the same `tools/call`
to each (bench/wrk_mcp.lua).

Every repetition starts the five servers afresh, in a shuffled order (two identical processes
can differ by a few percent for as long as they live, so the process is what a repetition draws
anew), warms each up, and for each connection count (1, 16) runs the cases once each in a
shuffled order; the report gives medians over repetitions and the ratios to export off, and writes them between the
`traces` markers of docs/benchmarks.md (raw results in target/bench/trace-results.json). The
spans the collector accepted and the dropped ones are read from each server's /metrics.

With `--layout pinned` (the default) the servers run on the first CPU and wrk and the collector
(SCHED_IDLE) on the others, so a server's CPU is its own; `--layout shared` lets the scheduler put
everything on every CPU.

    python3 scripts/trace_bench.py [--seconds 10] [--repetitions 5] [--layout pinned|shared] [--no-write]
"""
import json
import math
import os
import pathlib
import random
import re
import statistics
import sys
import time
import urllib.request

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import load_bench as lb  # noqa: E402  (its Server and wrk helpers)

OTELCOL = lb.ROOT / "target/otelcol/bin/otelcol"
BEGIN, END = "<!-- traces:begin -->", "<!-- traces:end -->"
CALL = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                   "params": {"name": "read_notes", "arguments": {}}})
POLICY = """apiVersion: palisade.dev/v1alpha1
kind: PolicyDocument
metadata:
  server: bench/notes
mode: Enforce
authentication:
  resource: http://127.0.0.1/mcp
  allowAnonymous: true
collections: [{name: notes}]
tools: [{name: read_notes, collection: notes, action: readAll}]
rules: [{match: read_notes, requiredScopes: [notes:read]}]
roles: [{name: reader, scopes: [notes:read]}]
bindings: [{role: reader, anonymous: true}]
"""
CASES = {
    "off": {},
    "off, again": {},
    "on, 100%": {"OTEL_TRACES_SAMPLER": "parentbased_always_on"},
    "on, 1%": {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.01"},
    "on, 0%": {"OTEL_TRACES_SAMPLER": "always_off"},
}


LAYOUTS = {
    "pinned": "Layout `pinned` (the default): every server on one CPU (its runtime has one worker "
              "thread, as in a pod limited to one CPU), wrk and the collector on the other CPUs, the "
              "collector under SCHED_IDLE (it runs on the time wrk leaves, and never preempts wrk); "
              "in a cluster the collector runs in pods of its own, so the server's CPU is what it "
              "pays. The server's throughput is then its own CPU per request.",
    "shared": "Layout `shared`: servers, wrk and the collector on both CPUs, as the scheduler puts "
              "them.",
}


def metric(port: int, name: str, labels: str = "") -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    match = re.search(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def layout_argument(parser) -> None:
    parser.add_argument(
        "--layout", choices=("pinned", "shared"), default="pinned",
        help="pinned (default): every server on the first CPU, wrk and the collector on the others; "
             "shared: all of them on all CPUs")


def main() -> None:
    args = lb.side_by_side_arguments(__doc__.splitlines()[0], "trace-results.json", 5, "1,16",
                                     layout_argument)
    connections = [int(c) for c in args.connections.split(",")]
    if args.from_results:
        saved = json.loads((lb.WORK / "trace-results.json").read_text())
        args.layout = saved.get("layout", "shared")
        write(report(saved["runs"], saved["spans"], connections, args), args)
        return
    for path in (lb.SERVER, OTELCOL):
        lb.check(path.exists(), f"{path} is missing (make bench builds it)")
    server_cpus = pin(args.layout)
    policy, documents = served_files()
    grpc = lb.free_port()
    collector = otelcol(grpc, idle=server_cpus is not None)
    results = []
    spans = {name: {"exported": 0.0, "dropped": 0.0} for name in CASES}
    # The audit logs are load, not results: each point starts from an empty file (the same page
    # cache work for every server; a file that grew by gigabytes over earlier points or runs
    # costs its server more per line) and they are removed at the end.
    audit_logs = {name: lb.WORK / f"trace-audit-{i}.log" for i, name in enumerate(CASES)}
    for log in audit_logs.values():
        log.unlink(missing_ok=True)
    rng = random.Random(args.seed)
    servers = {}
    try:
        collector.wait_listening()
        for repetition in range(args.repetitions):
            # Fresh processes in every repetition, started in a shuffled order: two identical
            # processes can differ by a few percent for as long as they live (where their memory
            # and threads landed), so a process is what a repetition must draw anew, or that
            # difference passes for the cost of the case it happened to serve.
            order = list(CASES)
            rng.shuffle(order)
            servers = {name: start(name, CASES[name], policy, documents, audit_logs[name], grpc,
                                   server_cpus)
                       for name in order}
            for name in order:
                warm_up(servers[name], args.warmup)
            for c in connections:
                rng.shuffle(order)
                for name in order:
                    for log in audit_logs.values():
                        os.truncate(log, 0)
                    cpu, collector_cpu = servers[name].cpu_seconds(), collector.cpu_seconds()
                    result = lb.wrk(servers[name].url, c, args.seconds, CALL, "")
                    result["cpu_us"] = (servers[name].cpu_seconds() - cpu) * 1e6 / result["requests"]
                    # The collector's work for this server's spans, on the same two cores.
                    result["collector_cpu_us"] = ((collector.cpu_seconds() - collector_cpu) * 1e6
                                                  / result["requests"])
                    lb.check(result["errors"] == 0, f"{name} at {c}: {result}")
                    results.append({"case": name, "connections": c, "repetition": repetition, **result})
                    lb.log(f"{name:10} c={c:<3} rps={result['rps']:.0f} p50={result['p50_us']} us "
                           f"p99={result['p99_us']} us cpu={result['cpu_us']:.1f} us/request")
            time.sleep(7)  # the last batches leave within the schedule delay (5 s)
            for name, server in servers.items():
                spans[name]["exported"] += metric(server.metrics_port, "palisade_trace_spans_exported_total")
                spans[name]["dropped"] += sum(
                    metric(server.metrics_port, "palisade_trace_spans_dropped_total", f'{{reason="{r}"}}')
                    for r in ("queue_full", "export_failed"))
                server.stop()
            servers = {}
    finally:
        for server in [*servers.values(), collector]:
            server.stop()
        for log in audit_logs.values():
            log.unlink(missing_ok=True)
    (lb.WORK / "trace-results.json").write_text(
        json.dumps({"layout": args.layout, "runs": results, "spans": spans}, indent=1))
    write(report(results, spans, connections, args), args)


def pin(layout: str):
    """The CPUs of the servers under `layout`; with `pinned`, this script (and so wrk and the
    collector it starts) moves to the other CPUs. A server's cost is then its own: in a cluster
    the collector runs in pods of its own, not on the server's CPU, and on a shared machine the
    collector's CPU for the spans it receives would pass for the server's (about 0.2 µs per
    request at 1%)."""
    if layout == "shared":
        return None
    cpus = sorted(os.sched_getaffinity(0))
    lb.check(len(cpus) >= 2, f"--layout pinned needs two CPUs, this process may use {cpus}")
    os.sched_setaffinity(0, set(cpus[1:]))
    return {cpus[0]}


def served_files() -> tuple:
    """The policy and the document folder every server of the bench serves."""
    lb.WORK.mkdir(parents=True, exist_ok=True)
    policy = lb.WORK / "trace-policy.yaml"
    policy.write_text(POLICY)
    documents = lb.WORK / "trace-documents"
    (documents / "notes").mkdir(parents=True, exist_ok=True)
    (documents / "notes/welcome.md").write_text("Welcome.\n")
    return policy, documents


def otelcol(grpc: int, idle: bool) -> "lb.Server":
    """The OpenTelemetry Collector, receiving OTLP over gRPC on `grpc` (not yet listening)."""
    config = lb.WORK / "trace-otelcol.json"
    config.write_text(json.dumps({
        "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": f"127.0.0.1:{grpc}"}}}},
        # Binary protobuf to /dev/null: the collector receives and decodes every batch and writes
        # it the cheapest way it can (it shares the servers' cores; its CPU per request is
        # reported).
        "exporters": {"file": {"path": "/dev/null", "format": "proto"}},
        "service": {"pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["file"]}},
                    "telemetry": {"metrics": {"level": "none"}}},
    }))
    return lb.Server("otelcol", [OTELCOL, "--config", config], grpc, idle=idle)


def start(name: str, sampler: dict, policy, documents, audit_log, grpc: int,
          cpus) -> "lb.Server":
    """A server of case `name`, listening. `sampler`'s `OTEL_*` variables turn export on (to the
    collector at `grpc`); its others are passed as they are."""
    port, metrics_port = lb.free_port(), lb.free_port()
    env = {"PATH": "/usr/bin:/bin", **sampler}
    if any(key.startswith("OTEL_") for key in sampler):
        env.update(OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{grpc}",
                   OTEL_EXPORTER_OTLP_PROTOCOL="grpc", OTEL_SERVICE_NAME="trace-bench")
    server = lb.Server(f"traces {name}", [
        lb.SERVER, "serve", "--policy-file", policy, "--documents-dir", documents,
        "--listen", f"127.0.0.1:{port}", "--metrics-listen", f"127.0.0.1:{metrics_port}",
        "--audit-log", audit_log, "--max-concurrency", "256"],
        port, env=env, cpus=cpus)
    server.metrics_port = metrics_port
    server.wait_listening()
    return server


def warm_up(server: "lb.Server", seconds: int) -> None:
    """Waits (up to 30 s) for the server to answer the call, then loads it for `seconds`."""
    lb.answer(server, CALL, "", retries=150)
    lb.wrk(server.url, 16, seconds, CALL, "")


def write(text: str, args) -> None:
    print(text)
    if not args.no_write:
        lb.write_section(BEGIN, END, text)


def interval(ratios: list) -> tuple:
    """The mean of `ratios` (geometric) and its two-sided 95% confidence interval (Student's t on
    the logarithms)."""
    logs = [math.log(r) for r in ratios]
    mean = statistics.mean(logs)
    if len(logs) < 2:
        return math.exp(mean), 0.0, math.inf
    # The 97.5% quantile of Student's t for 1 to 30 degrees of freedom; the normal one beyond.
    quantiles = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
                 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
                 2.060, 2.056, 2.052, 2.048, 2.045, 2.042]
    freedom = len(logs) - 1
    t = quantiles[freedom - 1] if freedom <= len(quantiles) else statistics.NormalDist().inv_cdf(0.975)
    half = t * statistics.stdev(logs) / math.sqrt(len(logs))
    return math.exp(mean), math.exp(mean - half), math.exp(mean + half)


def report(results: list, spans: dict, connections: list, args) -> str:
    def median(case: str, c: int, field: str) -> float:
        return statistics.median(r[field] for r in results if r["case"] == case and r["connections"] == c)

    lines = [
        "### Trace export: off, on at 100%, 1% and 0%",
        "",
        f"`python3 scripts/trace_bench.py` (part of `make bench`), {time.strftime('%Y-%m-%d')}: five "
        f"release palisade-server processes, the same anonymous `tools/call` of a document tool, audit "
        f"to a file (emptied before each point); three export over OTLP gRPC to a real OpenTelemetry Collector on the same machine "
        f"(file exporter writing protobuf to /dev/null), sampling every trace, 1% or none; two have export off, the second "
        f"to show the noise between identical servers; wrk, {args.seconds} s per point, "
        f"median of {args.repetitions} interleaved repetitions, each with five fresh processes. "
        + LAYOUTS[args.layout],
        "",
        "| connections | case | req/s | ratio to off | p50 | p99 | server CPU per request | ratio to off |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in connections:
        off, off_cpu = median("off", c, "rps"), median("off", c, "cpu_us")
        for name in CASES:
            rps, cpu = median(name, c, "rps"), median(name, c, "cpu_us")
            lines.append(
                f"| {c} | {name} | {rps:,.0f} | {rps / off:.2f} | {median(name, c, 'p50_us') / 1000:.2f} ms "
                f"| {median(name, c, 'p99_us') / 1000:.2f} ms | {cpu:.1f} µs | {cpu / off_cpu:.2f} |")
    def ratios(case: str, c: int, field: str, against: tuple = ("off", "off, again")) -> list:
        """The case's ratio, in each repetition, to the geometric mean of `against` there."""
        def value(name: str, repetition: int) -> float:
            return next(r[field] for r in results
                        if r["case"] == name and r["connections"] == c and r["repetition"] == repetition)
        return [value(case, rep) / math.prod(value(a, rep) for a in against) ** (1 / len(against))
                for rep in sorted({r["repetition"] for r in results})]

    def verdict(case: str, c: int, against: tuple = ("off", "off, again")) -> str:
        parts = []
        for field, label in (("rps", "throughput"), ("cpu_us", "CPU per request")):
            each = ratios(case, c, field, against)
            mean, low, high = interval(each)
            measurable = not low <= 1 <= high
            seen = "measurable" if measurable else f"not measurable at this run's resolution, ±{(high / mean - 1) * 100:.0f}%"
            parts.append(f"{label} {mean:.3f} ({low:.3f}–{high:.3f}: {seen}; "
                         f"above 1 in {sum(r > 1 for r in each)} of {len(each)} repetitions: "
                         f"{', '.join(f'{r:.3f}' for r in each)})")
        return f"{case} at {c} connection{'s' if c != 1 else ''}: " + ", ".join(parts)

    last = connections[-1]
    collector = ", ".join(
        f"{name}: {median(name, last, 'collector_cpu_us'):.2f} µs"
        for name in CASES if not name.startswith("off")
        and all("collector_cpu_us" in r for r in results if r["case"] == name))
    exported = ", ".join(f"{name}: {v['exported']:,.0f} exported, {v['dropped']:,.0f} dropped"
                         for name, v in spans.items() if not name.startswith("off"))
    lines += [
        "",
        f"Spans over the whole run, warm-up included ({exported}). A traced request is 4 spans "
        "(request, authenticate, authorize, execute_tool). Server CPU per request is the process's "
        "CPU time over the requests wrk completed: the cost that does not depend on where the "
        "scheduler put the threads (1-connection latency moves by several percent between "
        "identical processes on this 2-core machine, and a server whose export task keeps its "
        "worker threads awake can answer one connection sooner than one whose threads park between "
        "requests: the 100% row at 1 connection has been both faster and slower than off between "
        "runs). "
        + ("At 100% the collector on the same 2 cores takes CPU from the servers too"
           if args.layout == "shared" else "The collector works on the other CPUs")
        + (f"; its CPU time per request of the server it received from, at {last} connections "
           f"(median): {collector}. In a cluster the collector runs in pods of its own." if collector
           else ".") ,
        "",
        "Aim: no measurable cost at 1%. Judged on paired repetitions: in each, a case's ratio to the "
        "geometric mean of the two export-off servers measured in the same repetition; the mean ratio "
        f"over the {args.repetitions} repetitions with its 95% confidence interval (Student's t on the "
        "logarithms); a difference is measurable when the interval leaves out 1, and the narrower "
        "the interval, the smaller the difference the run could have seen. Each repetition starts "
        "fresh processes: two identical processes can differ by a few percent for as long as they "
        "live, a difference the interval of a run that reuses them would not see. The method's own "
        "check, the second export-off server against the first: "
        + "; ".join(verdict("off, again", c, ("off",)) for c in connections) + ". "
        + "; ".join(verdict("on, 1%", c) for c in connections) + ". "
        f"With export on and no trace sampled (0%, what every request pays whatever the ratio): "
        f"{verdict('on, 0%', last)}; at 100%: {verdict('on, 100%', last)}. "
        "The instruction counts below resolve what this cannot.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
