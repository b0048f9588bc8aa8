#!/usr/bin/env python3
"""Write the latest criterion figures into docs/benchmarks.md.

Reads target/criterion/<benchmark>/new/estimates.json for every benchmark of the evaluator bench
and replaces the block between the `evaluator` markers in docs/benchmarks.md, so that the document
always shows the figures of the last `make bench`, with the machine facts and the date.
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
BEGIN, END = "<!-- evaluator:begin -->", "<!-- evaluator:end -->"


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
    rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()
    lines = [
        BEGIN,
        f"Measured {datetime.date.today().isoformat()} on {os.cpu_count()} cores ({cpu_model()}), {rustc}.",
        "Command: `make bench` (criterion, release profile, median of the samples with its 95% interval).",
        "",
        "| benchmark | median | 95% interval |",
        "|---|---|---|",
    ]
    lines += [f"| {name} | {median} | {low} – {high} |" for name, median, low, high in rows]
    lines.append(END)
    block = "\n".join(lines)
    text = DOC.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
    if not pattern.search(text):
        raise SystemExit(f"{DOC} has no {BEGIN} ... {END} block")
    DOC.write_text(pattern.sub(lambda _: block, text), encoding="utf-8")
    print(block)


if __name__ == "__main__":
    main()
