#!/usr/bin/env python3
"""Write the latest criterion figures into docs/benchmarks.md.

Reads target/criterion/<benchmark>/new/estimates.json for every criterion benchmark and replaces
the block between the `evaluator` markers in docs/benchmarks.md (the evaluator of palisade-crds)
and the block between the `operator` markers (benchmarks whose id starts with "operator ", from
operator/benches/reconcile.rs, and, if target/operator-cache-memory.json exists, the cache memory
and resync figures of operator/examples/cache_memory.rs), so that the document always shows the
figures of the last `make bench`, with the machine facts and the date.
"""
import datetime
import json
import os
import pathlib
import platform
import re
import subprocess

ROOT = pathlib.Path(__file__).resolve().parent.parent
CRITERION = ROOT / "target" / "criterion"
DOC = ROOT / "docs" / "benchmarks.md"
MEMORY = ROOT / "target" / "operator-cache-memory.json"
BEGIN, END = "<!-- evaluator:begin -->", "<!-- evaluator:end -->"
OPERATOR_BEGIN, OPERATOR_END = "<!-- operator:begin -->", "<!-- operator:end -->"
OPERATOR_PREFIX = "operator "


def fmt(ns: float) -> str:
    if ns < 1_000:
        return f"{ns:.0f} ns"
    if ns < 1_000_000:
        return f"{ns / 1_000:.2f} µs"
    return f"{ns / 1_000_000:.2f} ms"


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def replace_block(text: str, begin: str, end: str, block: str) -> str:
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        raise SystemExit(f"{DOC} has no {begin} ... {end} block")
    return pattern.sub(lambda _: block, text)


def table(rows: list) -> list:
    lines = ["| benchmark | median | 95% interval |", "|---|---|---|"]
    return lines + [f"| {name} | {median} | {low} – {high} |" for name, median, low, high in rows]


def main() -> None:
    rows = []
    for estimates in sorted(CRITERION.glob("*/new/estimates.json")):
        benchmark = json.loads((estimates.parent / "benchmark.json").read_text())
        data = json.loads(estimates.read_text())
        median = data["median"]
        rows.append(
            (
                benchmark["full_id"],
                fmt(median["point_estimate"]),
                fmt(median["confidence_interval"]["lower_bound"]),
                fmt(median["confidence_interval"]["upper_bound"]),
            )
        )
    if not rows:
        raise SystemExit("no criterion results under target/criterion: run `make bench`")
    evaluator = [row for row in rows if not row[0].startswith(OPERATOR_PREFIX)]
    operator = [(name[len(OPERATOR_PREFIX) :], *rest) for name, *rest in rows if name.startswith(OPERATOR_PREFIX)]
    rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()
    machine = f"Measured {datetime.date.today().isoformat()} on {os.cpu_count()} cores ({cpu_model()}), {rustc}."
    criterion_command = "Command: `make bench` (criterion, release profile, median of the samples with its 95% interval)."
    text = DOC.read_text(encoding="utf-8")
    blocks = []

    lines = [BEGIN, machine, criterion_command, ""] + table(evaluator) + [END]
    blocks.append("\n".join(lines))
    text = replace_block(text, BEGIN, END, blocks[-1])

    if operator or MEMORY.exists():
        lines = [OPERATOR_BEGIN, machine]
        if operator:
            lines += [criterion_command, ""] + table(operator)
        if MEMORY.exists():
            m = json.loads(MEMORY.read_text(encoding="utf-8"))
            lines += [
                "",
                "Caches and resync (`cargo run --release --example cache_memory`, one run):",
                "",
                "| figure | value |",
                "|---|---|",
                f"| objects in the reflector stores | {m['servers']:,} McpServers, {m['policies']:,} McpAccessPolicies |",
                f"| resident memory (VmRSS) before / after filling the stores | {m['rss_before_mib']} MiB / {m['rss_after_mib']} MiB |",
                f"| per cached object | {m['per_object_kib']} KiB |",
                f"| full resync: bind + validate + build_children of every server | {m['resync_ms']} ms ({m['resync_per_server_us']:.0f} µs per server, {m['resync_children']:,} child objects) |",
            ]
        lines.append(OPERATOR_END)
        blocks.append("\n".join(lines))
        text = replace_block(text, OPERATOR_BEGIN, OPERATOR_END, blocks[-1])

    DOC.write_text(text, encoding="utf-8")
    print("\n\n".join(blocks))


if __name__ == "__main__":
    main()
