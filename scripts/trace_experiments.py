#!/usr/bin/env python3
"""Where 1%'s cost goes: the experiments of docs/benchmarks.md ("The server on one CPU"), run the
way the trace bench runs its servers (scripts/trace_bench.py, layout `pinned`: each server on the
first CPU, wrk and the collector, SCHED_IDLE, on the others), one fresh server per point, 16
connections, 10 s. Not part of `make bench`: it prints requests per second and server CPU per
request for each named case and repetition, and writes nothing.

Cases: off, 0%, 0.1%, 1%, 10%; 1%-batch-of-one (every span exported on its own), 1%-batch-of-8;
1%-no-collector (export to a port nobody listens on); 0%-no-trim and 1%-no-trim (glibc keeps its
memory);
off-jemalloc, 0%-jemalloc, 1%-jemalloc (Debian's libjemalloc2 preloaded); and, with
`--document-bytes N`, the same cases serving an N-byte document.

    python3 scripts/trace_experiments.py [--repetitions 3] [--document-bytes 0] CASE...
"""
import argparse
import os
import pathlib
import random
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import load_bench as lb  # noqa: E402
import trace_bench as tb  # noqa: E402

JEMALLOC = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"
NO_TRIM = "glibc.malloc.trim_threshold=268435456:glibc.malloc.top_pad=67108864:glibc.malloc.mmap_threshold=4194304"


def ratio(value: str) -> dict:
    return {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": value}


CASES = {
    "off": {},
    "0%": tb.CASES["on, 0%"],
    "0.1%": ratio("0.001"),
    "1%": ratio("0.01"),
    "10%": ratio("0.1"),
    "1%-batch-of-one": {**ratio("0.01"), "OTEL_BSP_MAX_QUEUE_SIZE": "1", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "1"},
    "1%-batch-of-8": {**ratio("0.01"), "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "8"},
    "1%-no-collector": ratio("0.01"),
    "0%-no-trim": {**tb.CASES["on, 0%"], "GLIBC_TUNABLES": NO_TRIM},
    "1%-no-trim": {**ratio("0.01"), "GLIBC_TUNABLES": NO_TRIM},
    "off-jemalloc": {"LD_PRELOAD": JEMALLOC},
    "0%-jemalloc": {**tb.CASES["on, 0%"], "LD_PRELOAD": JEMALLOC},
    "1%-jemalloc": {**ratio("0.01"), "LD_PRELOAD": JEMALLOC},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--document-bytes", type=int, default=0,
                        help="serve a document of this many bytes instead of the bench's one line")
    parser.add_argument("cases", nargs="+", choices=list(CASES))
    args = parser.parse_args()
    lb.check(lb.SERVER.exists() and tb.OTELCOL.exists(), "make bench builds the server and the collector")
    if any("jemalloc" in c for c in args.cases):
        lb.check(os.path.exists(JEMALLOC), f"{JEMALLOC} is missing (Debian: apt-get install libjemalloc2)")
    server_cpus = tb.pin("pinned")
    policy, documents = tb.served_files()
    if args.document_bytes:
        words, rng, text = "alpha beta gamma delta epsilon zeta".split(), random.Random(1), ""
        while len(text) < args.document_bytes:
            text += " ".join(rng.choice(words) for _ in range(12)) + ".\n"
        documents = lb.WORK / "trace-experiment-documents"
        (documents / "notes").mkdir(parents=True, exist_ok=True)
        (documents / "notes/welcome.md").write_text(text[:args.document_bytes])
    grpc = lb.free_port()
    collector = tb.otelcol(grpc, idle=True)
    audit = lb.WORK / "trace-experiment-audit.log"
    try:
        collector.wait_listening()
        for repetition in range(args.repetitions):
            for name in args.cases:
                # The case without a collector exports to a port nobody listens on.
                collector_port = lb.free_port() if name == "1%-no-collector" else grpc
                server = tb.start(name, CASES[name], policy, documents, audit, collector_port, server_cpus)
                try:
                    tb.warm_up(server, 2)
                    cpu = server.cpu_seconds()
                    result = lb.wrk(server.url, 16, 10, tb.CALL, "")
                    cpu_us = (server.cpu_seconds() - cpu) * 1e6 / result["requests"]
                    lb.check(result["errors"] == 0, f"{name}: {result}")
                    print(f"repetition {repetition + 1} {name:16} {result['rps']:8,.0f} req/s "
                          f"{cpu_us:5.1f} µs CPU per request", flush=True)
                finally:
                    server.stop()
                    audit.unlink(missing_ok=True)
    finally:
        collector.stop()


if __name__ == "__main__":
    main()
