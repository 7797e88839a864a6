#!/usr/bin/env python3
"""Plots `arbor-bench --workloads scaling --json FILE` on log-log axes (PNG) and prints
the figures as Markdown tables for BENCHMARKS.md.

    bench/scaling_plot.py FILE [--out docs/scaling.png]

Each panel has a dashed line that grows in proportion to its x axis: a curve flatter
than it grows slower than the work, one steeper grows faster."""

import argparse
import json
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def proportional(ax, xs, y0, label="∝ size"):
    ax.plot(xs, [y0 * x / xs[0] for x in xs], linestyle="--", color="#999", label=label)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("file")
    p.add_argument("--out", default="docs/scaling.png")
    args = p.parse_args()
    data = json.load(open(args.file))
    runs, history, ingest = data["runs"], data["history"], data["ingest"]

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    ax = axes[0]
    xs = [r["runs"] for r in runs]
    for key, label in [("search_a_ms", "(a) rootRunId = root"), ("search_b_ms", "(b) param and metric, by metric, 100"),
                       ("search_c_ms", "(c) runName ILIKE, first 1000"), ("search_d_ms", "(d) page through all runs"),
                       ("run_tree_ms", "GetRunTree of a 100-run root")]:
        ax.plot(xs, [r[key] for r in runs], marker="o", label=label)
    proportional(ax, xs, runs[0]["search_d_ms"])
    ax.set(xscale="log", yscale="log", xlabel="runs in the experiment", ylabel="ms", title="Searches as runs grow")
    ax.legend(fontsize=8)

    ax = axes[1]
    xs = [h["points"] for h in history]
    ax.plot(xs, [h["grpc_ms"] for h in history], marker="o", label="GetMetricHistory, gRPC, 25,000 a page")
    ax.plot(xs, [h["rest_ms"] for h in history], marker="o", label="get-history, REST, 25,000 a page")
    proportional(ax, xs, history[0]["grpc_ms"])
    ax.set(xscale="log", yscale="log", xlabel="points in the metric", ylabel="ms for the whole history",
           title="Reading one metric's history")
    ax.legend(fontsize=8)

    ax = axes[2]
    pts = [s for s in ingest if s["points"] > 0]
    xs = [s["points"] for s in pts]
    sized = [s for s in pts if s["store_bytes"]]
    ax.plot([s["points"] for s in sized], [s["store_bytes"] / s["points"] for s in sized], marker=".",
            label="disk bytes per point")
    ax.plot(xs, [s["rss_mib"] for s in pts], marker=".", label="server RSS (MiB)")
    ax.plot(xs, [s["p99_ms"] if s["p99_ms"] is not None else math.nan for s in pts], marker=".",
            label="p99 LogBatch latency (ms)")
    moving = [s for s in pts if s["points_per_s"] > 0]
    ax.plot([s["points"] for s in moving], [s["points_per_s"] / 1e4 for s in moving], marker=".",
            label="ingest rate (10k points/s)")
    ax.set(xscale="log", yscale="log", xlabel="points ingested (8 clients, 1,000-point LogBatch)",
           title="Sustained ingest")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")

    print("\n| runs | create (runs/s) | (a) ms | (b) ms | (c) ms | (d) all pages, ms | GetRunTree ms |")
    print("|---|---|---|---|---|---|---|")
    for r in runs:
        print(f"| {r['runs']:,} | {r['create_runs_per_s']:,.0f} | {r['search_a_ms']:.2f} | {r['search_b_ms']:.2f} | "
              f"{r['search_c_ms']:.1f} | {r['search_d_ms']:,.0f} | {r['run_tree_ms']:.2f} |")
    print("\n| points in one metric | gRPC, ms | REST, ms |")
    print("|---|---|---|")
    for h in history:
        print(f"| {h['points']:,} | {h['grpc_ms']:,.0f} | {h['rest_ms']:,.0f} |")
    print("\n| points ingested | points/s in the interval | p99 ms | disk bytes/point | RSS MiB |")
    print("|---|---|---|---|---|")
    step = max(1, len(moving) // 8)
    for s in moving[::step] + ([moving[-1]] if (len(moving) - 1) % step else []):
        p99 = "" if s["p99_ms"] is None else f"{s['p99_ms']:.1f}"
        per = "" if not s["store_bytes"] else f"{s['store_bytes'] / s['points']:.0f}"
        print(f"| {s['points']:,.0f} | {s['points_per_s']:,.0f} | {p99} | {per} | "
              f"{s['rss_mib']:.0f} |")


if __name__ == "__main__":
    main()
