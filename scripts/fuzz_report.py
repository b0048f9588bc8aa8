#!/usr/bin/env python3
"""Summarizes fuzz/runs.tsv (one line per target per `make fuzz` run) into the table between the
markers of docs/fuzzing.md: executions per target in total across runs, and open crashes (inputs
in fuzz/regressions/<target>/ are fixed ones: the replay test in `make test` proves it)."""
import collections
import pathlib

root = pathlib.Path(__file__).resolve().parent.parent
totals = collections.OrderedDict()
for line in (root / "fuzz/runs.tsv").read_text().splitlines():
    if not line or line.startswith("#"):
        continue
    date, commit, target, runs, seconds, crashed = line.split("\t")
    entry = totals.setdefault(target, {"runs": 0, "seconds": 0, "sessions": 0, "crashes": 0, "last": ""})
    entry["runs"] += int(runs)
    entry["seconds"] += int(seconds)
    entry["sessions"] += 1
    entry["crashes"] += int(crashed)
    entry["last"] = f"{date} ({commit})"

rows = ["| target | executions (total) | seconds | runs | runs that crashed | regression inputs | last run |",
        "|---|---:|---:|---:|---:|---:|---|"]
for target, e in sorted(totals.items()):
    regressions = [p for p in (root / "fuzz/regressions" / target).glob("*") if p.name != ".gitkeep"]
    rows.append(f"| `{target}` | {e['runs']:,} | {e['seconds']:,} | {e['sessions']} | {e['crashes']} "
                f"| {len(regressions)} | {e['last']} |")
table = "\n".join(rows)

doc = root / "docs/fuzzing.md"
text = doc.read_text()
start, end = "<!-- fuzz-totals:start -->", "<!-- fuzz-totals:end -->"
head, rest = text.split(start, 1)
_, tail = rest.split(end, 1)
doc.write_text(f"{head}{start}\n{table}\n{end}{tail}")
print(table)
