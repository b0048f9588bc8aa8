#!/usr/bin/env python3
"""Where trace export's time goes: the share of palisade-server's CPU samples (perf, cpu-clock) in
the code of tracing, with export off, on with no trace sampled, at 1% and at 100%.

The trace bench (scripts/trace_bench.py) says what export costs a request as a ratio of CPU time,
to within a few percent; callgrind (scripts/callgrind_request.sh) counts the instructions, which
are not the time. This samples the time itself, per function: a release build with symbols
(target/profile, as `make profile` builds it) serves the trace bench's anonymous `tools/call`
while wrk loads it at 16 connections, and `perf record -e cpu-clock` samples the server for
SECONDS. The functions of tracing are those whose names are in the modules of the request's trace
(`palisade_server::trace`), the export (`palisade_telemetry`, `opentelemetry*`) and its transport
(`tonic`, `h2`, `prost`: the server answers its clients over HTTP/1.1 in this bench, so only the
export uses them). A flat profile charges a function its own samples only: the allocator, the
clock and the copies a traced request causes are counted where they run (libc, the vDSO), so the
shares are a floor of what tracing costs (the clock's share is given on its own: a traced request
reads it twice more); the export-off row shows what the patterns catch with no tracing at all
(nothing).

    python3 scripts/perf_trace_share.py [--seconds 20]   (needs perf, wrk, target/otelcol)
"""
import argparse
import collections
import os
import re
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import load_bench as lb  # noqa: E402
import trace_bench as tb  # noqa: E402

PROFILE_SERVER = lb.ROOT / "target/profile/release/palisade-server"
TRACING = re.compile(r"palisade_server::trace::|palisade_telemetry::|opentelemetry|tonic::|\bh2::|prost::")
CLOCK = re.compile(r"clock_gettime")
CASES = ["off", "on, 0%", "on, 1%", "on, 100%"]


def build() -> None:
    """The release build with symbols and line tables that `make profile` uses."""
    env = dict(os.environ, CARGO_PROFILE_RELEASE_DEBUG="line-tables-only", CARGO_PROFILE_RELEASE_STRIP="false")
    subprocess.run(["cargo", "build", "-q", "--release", "--locked", "-p", "palisade-server",
                    "--target-dir", "target/profile"], check=True, cwd=lb.ROOT, env=env)


def shares(data: str) -> tuple[int, dict]:
    """The samples of a perf.data file, and each symbol's count of them."""
    out = subprocess.run(["perf", "report", "-i", data, "--no-children", "--sort", "symbol", "--stdio",
                          "--show-nr-samples", "--percent-limit", "0"],
                         check=True, capture_output=True, text=True).stdout
    symbols = collections.Counter()
    for line in out.splitlines():
        match = re.match(r"\s*[\d.]+%\s+(\d+)\s+\[.\]\s+(.*?)(\s+-\s+-)?\s*$", line)
        if match:
            symbols[match.group(2)] += int(match.group(1))
        elif re.match(r"\s*[\d.]+%\s+(\d+)\s+\[k\]", line):
            symbols["[kernel]"] += int(line.split()[1])
    return sum(symbols.values()), symbols


def profile(case: str, seconds: int, policy, documents, grpc: int) -> dict:
    """One server of `case`, warmed up, sampled while wrk loads it."""
    audit = lb.WORK / "perf-audit.log"
    server = tb.start(case, tb.CASES[case], policy, documents, audit, grpc)
    try:
        tb.warm_up(server, 3)
        os.truncate(audit, 0)
        data = lb.WORK / f"perf-{CASES.index(case)}.data"
        perf = subprocess.Popen(["perf", "record", "-q", "-e", "cpu-clock", "-F", "2000", "-p",
                                 str(server.process.pid), "-o", str(data), "--", "sleep", str(seconds + 1)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        result = lb.wrk(server.url, 16, seconds, tb.CALL, "")
        lb.check(perf.wait() == 0 and data.exists(),
                 "perf record failed (is /proc/sys/kernel/perf_event_paranoid above 1? run as root or lower it)")
    finally:
        server.stop()
        audit.unlink(missing_ok=True)
    samples, symbols = shares(str(data))
    tracing = {name: 100 * count / samples for name, count in symbols.items() if TRACING.search(name)}
    return {"case": case, "requests": result["requests"], "samples": samples,
            "tracing": sum(tracing.values()),
            "clock": sum(100 * count / samples for name, count in symbols.items() if CLOCK.search(name)),
            "top": sorted(tracing.items(), key=lambda kv: -kv[1])[:5]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=20)
    args = parser.parse_args()
    for tool in ("perf", "wrk"):
        lb.check(shutil.which(tool) is not None, f"{tool} is missing (Debian: apt-get install linux-perf wrk)")
    lb.check(tb.OTELCOL.exists(), f"{tb.OTELCOL} is missing (make cluster-build builds it)")
    build()
    lb.SERVER = PROFILE_SERVER
    policy, documents = tb.served_files()
    grpc = lb.free_port()
    collector = tb.otelcol(grpc)
    try:
        collector.wait_listening()
        rows = [profile(case, args.seconds, policy, documents, grpc) for case in CASES]
    finally:
        collector.stop()
    print(f"perf cpu-clock samples of palisade-server, {args.seconds} s at 16 connections "
          "(scripts/perf_trace_share.py):\n")
    print("| case | requests | samples | in tracing code | reading the clock | tracing's largest functions |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        top = ", ".join(f"`{short(name)}` {share:.2f}%" for name, share in row["top"]) or "–"
        print(f"| {row['case']} | {row['requests']:,} | {row['samples']:,} | {row['tracing']:.2f}% "
              f"| {row['clock']:.2f}% | {top} |")


def short(symbol: str) -> str:
    """A symbol's type (or module) and function, for a table: `<a::B as c::D>::f` is `B::f`."""
    impl = re.match(r"<([\w:]+)(?:<.*>)? as .*>::(\w+)", symbol)
    if impl:
        return f"{impl.group(1).split('::')[-1]}::{impl.group(2)}"
    while re.search(r"<[^<>]*>", symbol):
        symbol = re.sub(r"<[^<>]*>", "", symbol)
    return "::".join(symbol.split("::")[-2:])


if __name__ == "__main__":
    main()
