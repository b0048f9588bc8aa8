#!/usr/bin/env python3
"""Plot of requests/s by connections, one panel per request, for scripts/load_bench.py.

Reads {"connections": [...], "series": {request: {label: [rps per connections]}}, "title": str} on
standard input and writes the PNG named on the command line. Run with target/bench-venv/bin/python
(matplotlib is pinned in bench/requirements-peer.txt).
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

STYLE = {
    "Palisade (HS256)": {"color": "#1f5fa8", "marker": "o", "linewidth": 2.2},
    "Palisade (anonymous)": {"color": "#1f5fa8", "marker": "o", "linestyle": ":", "linewidth": 1.2},
    "rmcp baseline (no auth)": {"color": "#7a4fb0", "marker": "s", "linestyle": "--", "linewidth": 1.2},
    "FastMCP peer (HS256)": {"color": "#d1495b", "marker": "^", "linewidth": 2.2},
    "ceiling (no auth)": {"color": "#444444", "marker": "D", "linestyle": "--", "linewidth": 1.5},
}


def main() -> None:
    data = json.load(sys.stdin)
    connections = data["connections"]
    panels = list(data["series"].items())
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.2), sharey=True, squeeze=False)
    for ax, (request, series) in zip(axes[0], panels):
        for label, values in series.items():
            ax.plot(connections, values, label=label, **STYLE.get(label, {}))
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(connections, [str(c) for c in connections])
        ax.minorticks_off()
        ax.set_xlabel("connections")
        ax.set_title(request)
        ax.grid(True, which="major", alpha=0.3)
    axes[0][0].set_ylabel("requests/s (log scale)")
    handles, labels = {}, []
    for ax in axes[0]:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if label not in handles:
                handles[label] = handle
                labels.append(label)
    fig.legend([handles[l] for l in labels], labels, loc="lower center", ncol=len(labels), fontsize=8,
               frameon=False)
    fig.suptitle(data.get("title", ""), fontsize=9)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(sys.argv[1], dpi=110)


if __name__ == "__main__":
    main()
