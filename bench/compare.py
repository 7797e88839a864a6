#!/usr/bin/env python3
"""Side-by-side comparison of Arbor with the servers users would otherwise run.

Starts each server in turn on its own loopback port and data directory (Arbor,
`mlflow server` with SQLite, FastTrackML's `fml server` with SQLite), runs the same
MLflow-REST workloads against each with the same client (`arbor-bench --protocol rest`),
records server memory and disk use, checks that every server returned the same result
counts, prints a table of every figure with Arbor's ratio to each peer, writes the raw
results as JSON and a bar chart of the ratios as PNG, and stops every server it started.
Arbor's gRPC-only workloads (ingest, stream ingest, watch latency) run last.

A peer that cannot be installed or started is reported as such, not dropped silently.
"""

import argparse
import datetime
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (key, label, better): "higher" or "lower"
FIGURES = [
    ("hierarchy_seconds", "hierarchy: 1 root, 10 children, 100 grandchildren (s)", "lower"),
    ("log_metric_per_s", "single log-metric calls (req/s)", "higher"),
    ("log_metric_p50_ms", "single log-metric p50 (ms)", "lower"),
    ("log_metric_p99_ms", "single log-metric p99 (ms)", "lower"),
    ("log_batch_points_per_s_1", "log-batch ingest, 1 client (points/s)", "higher"),
    ("log_batch_points_per_s_8", "log-batch ingest, 8 clients (points/s)", "higher"),
    ("search_a_ms", "search (a) tags.mlflow.rootRunId = <root> (ms)", "lower"),
    ("search_b_ms", "search (b) params.lr and metrics.loss, by loss, 100 (ms)", "lower"),
    ("search_c_ms", "search (c) tags.mlflow.runName ILIKE (ms)", "lower"),
    ("search_d_ms", "search (d) all runs, 1000 a page (ms)", "lower"),
    ("history_ms", "get-history of a long metric (ms)", "lower"),
    ("server_rss_mib", "server RSS after the workloads (MiB)", "lower"),
    ("disk_mib", "data on disk after the workloads (MiB)", "lower"),
]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tree_rss_mib(pid):
    """RSS of a process and all its descendants (mlflow server runs workers)."""
    pids, total = [pid], 0
    while pids:
        p = pids.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            with open(f"/proc/{p}/task/{p}/children") as f:
                pids.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return total / 1024


def disk_mib(path):
    total = 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(dirpath, name))
            except OSError:
                pass
    return total / (1 << 20)


def wait_ready(url, proc, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(f"{url}/api/2.0/mlflow/experiments/search?max_results=1", timeout=2) as r:
                if r.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.2)
    return False


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def new_database(base):
    """A new database beside the one `base` names (--postgres); its URL."""
    name = f"compare_{os.getpid()}_{time.time_ns()}"
    subprocess.run(["psql", base, "-qc", f"CREATE DATABASE {name}"], check=True)
    return base.rsplit("/", 1)[0] + "/" + name


def database_mib(url):
    name = url.rsplit("/", 1)[1]
    base = url.rsplit("/", 1)[0] + "/postgres"
    r = subprocess.run(["psql", base, "-qtAc", f"SELECT pg_database_size('{name}')"], capture_output=True, text=True)
    return int(r.stdout.strip()) / (1 << 20) if r.returncode == 0 and r.stdout.strip() else None


def drop_database(url):
    name = url.rsplit("/", 1)[1]
    base = url.rsplit("/", 1)[0] + "/postgres"
    subprocess.run(["psql", base, "-qc", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"], capture_output=True)


def server_commands(args, port, data, db=None):
    """Each server's command; with `db` (a PostgreSQL URL, --postgres) on that database."""
    arbor_store = ["--store", db] if db else []
    mlflow_store = db.replace("postgres://", "postgresql+psycopg2://", 1) if db else f"sqlite:///{data}/mlflow.db"
    fml_store = db if db else f"sqlite://{data}/fasttrackml.db"
    return {
        "arbor": [args.arbor_bin, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", data] + arbor_store,
        "mlflow": [os.path.join(args.venv, "bin", "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                   "--backend-store-uri", mlflow_store, "--artifacts-destination", f"{data}/artifacts"],
        "fasttrackml": [os.path.join(args.venv, "bin", "fml"), "server", "--listen-address", f"127.0.0.1:{port}",
                        "--database-uri", fml_store, "--default-artifact-root", f"{data}/artifacts"],
    }


def run_server(name, args, out_dir):
    data = tempfile.mkdtemp(prefix=f"compare-{name}-")
    port = free_port()
    db = new_database(args.postgres) if args.postgres else None
    cmd = server_commands(args, port, data, db)[name]
    if not os.path.exists(cmd[0]):
        return {"status": f"not installed ({cmd[0]} missing)"}
    log = open(os.path.join(out_dir, f"{name}-server.log"), "w")
    try:
        proc = subprocess.Popen(cmd, cwd=data, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    except OSError as e:
        log.close()
        return {"status": f"could not start: {e}"}
    url = f"http://127.0.0.1:{port}"
    try:
        if not wait_ready(url, proc):
            return {"status": f"did not start (see {name}-server.log)"}
        result_file = os.path.join(out_dir, f"{name}.json")
        bench = [args.bench_bin, "--protocol", "rest", "--server", url, "--json", result_file] + (["--quick"] if args.quick else []) \
            + (["--search-trees", str(args.search_trees)] if args.search_trees else [])
        print(f"== {name} ({url})", flush=True)
        r = subprocess.run(bench, capture_output=True, text=True)
        print(r.stdout, end="", flush=True)
        if r.returncode != 0:
            return {"status": f"workloads failed: {r.stderr.strip()[-500:]}"}
        with open(result_file) as f:
            result = json.load(f)
        result["server_rss_mib"] = tree_rss_mib(proc.pid)
        result["disk_mib"] = disk_mib(data) + ((database_mib(db) or 0) if db else 0)
        for key, s in zip("abcd", result.get("searches", [])):
            result[f"search_{key}_ms"] = s["ms"]
            result[f"search_{key}_runs"] = s["runs"]
        result["status"] = "ok" if not result.get("errors") else "partly failed: " + "; ".join(result["errors"])[:500]
        return result
    finally:
        stop(proc)
        log.close()
        shutil.rmtree(data, ignore_errors=True)
        if db:
            drop_database(db)


def replicas_workloads(args, out_dir):
    """Two Arbor replicas on one new database: arbor-bench's replicas workload."""
    db = new_database(args.postgres)
    procs, urls, logs = [], [], []
    try:
        for name in ("a", "b"):
            data = tempfile.mkdtemp(prefix=f"compare-replica-{name}-")
            port = free_port()
            log = open(os.path.join(out_dir, f"arbor-replica-{name}.log"), "w")
            logs.append(log)
            procs.append(subprocess.Popen(server_commands(args, port, data, db)["arbor"], cwd=data, stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True))
            urls.append(f"http://127.0.0.1:{port}")
            if not wait_ready(urls[-1], procs[-1]):
                return f"replica {name} did not start (see arbor-replica-{name}.log)"
        cmd = [args.bench_bin, "--workloads", "replicas", "--server", urls[0], "--server-b", urls[1]] \
            + (["--points-per-client", "200000", "--watch-seconds", "2"] if args.quick else [])
        r = subprocess.run(cmd, capture_output=True, text=True)
        return r.stdout if r.returncode == 0 else f"failed: {r.stderr.strip()[-500:]}"
    finally:
        for p in procs:
            stop(p)
        for log in logs:
            log.close()
        drop_database(db)


def versions(args):
    out = {"arbor": subprocess.run([args.arbor_bin, "--version"], capture_output=True, text=True).stdout.strip()}
    for name, cmd in (("mlflow", ["mlflow", "--version"]), ("fasttrackml", ["fml", "--version"])):
        path = os.path.join(args.venv, "bin", cmd[0])
        if os.path.exists(path):
            out[name] = subprocess.run([path] + cmd[1:], capture_output=True, text=True).stdout.strip()
    return out


def ratio(arbor, peer, better):
    if not isinstance(arbor, (int, float)) or not isinstance(peer, (int, float)) or not arbor or not peer:
        return None
    return arbor / peer if better == "higher" else peer / arbor


def fmt(v):
    if v is None:
        return "-"
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:,.2f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small workloads (about 3 minutes in all)")
    ap.add_argument("--peers", default="mlflow,fasttrackml", help="comma-separated; 'none' for Arbor alone")
    ap.add_argument("--venv", default=os.path.join(ROOT, "bench", ".venv"))
    ap.add_argument("--arbor-bin", default=os.path.join(ROOT, "target", "release", "arbor"))
    ap.add_argument("--bench-bin", default=os.path.join(ROOT, "target", "release", "arbor-bench"))
    ap.add_argument("--out", default=None, help="results directory (default bench/results/<time>)")
    ap.add_argument("--no-chart", action="store_true")
    ap.add_argument("--no-grpc", action="store_true", help="skip Arbor's gRPC-only workloads")
    ap.add_argument("--postgres", default=None, metavar="URL",
                    help="every server on PostgreSQL (a new database beside URL each); Arbor's gRPC workloads then "
                         "run on two replicas of one store (ingest on one and both, cross-replica delivery)")
    ap.add_argument("--search-trees", type=int, default=None, help="trees of 111 runs in the searches (default 100)")
    args = ap.parse_args()
    # Servers start in their own data directories: every path must be absolute.
    args.venv, args.arbor_bin, args.bench_bin = (os.path.abspath(p) for p in (args.venv, args.arbor_bin, args.bench_bin))
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out_dir = args.out or os.path.join(ROOT, "bench", "results", stamp)
    os.makedirs(out_dir, exist_ok=True)
    peers = [] if args.peers == "none" else [p for p in args.peers.split(",") if p]
    started = time.monotonic()

    results = {name: run_server(name, args, out_dir) for name in ["arbor"] + peers}
    grpc = None
    if not args.no_grpc and args.postgres:
        grpc = replicas_workloads(args, out_dir)
    elif not args.no_grpc:
        cmd = [args.bench_bin, "--workloads", "core,streams"] + (["--points-per-client", "200000", "--watch-seconds", "2", "--history-points", "20000"] if args.quick else [])
        r = subprocess.run(cmd, capture_output=True, text=True)
        grpc = r.stdout if r.returncode == 0 else f"failed: {r.stderr.strip()[-500:]}"

    # Same queries, same data: the result counts must agree.
    count_keys = [f"search_{k}_runs" for k in "abcd"] + ["history_points"]
    # The figure each count belongs to, to mark figures whose answers differ.
    counted = {f"search_{k}_runs": f"search_{k}_ms" for k in "abcd"} | {"history_points": "history_ms"}
    differs = set()
    mismatches = []
    for peer in peers:
        if "search_a_runs" not in results[peer] or "search_a_runs" not in results["arbor"]:
            continue
        for k in count_keys:
            if results[peer].get(k) != results["arbor"].get(k):
                differs.add((counted[k], peer))
                mismatches.append(f"{k}: arbor {results['arbor'].get(k)}, {peer} {results[peer].get(k)}")

    meta = {
        "date": stamp, "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        "versions": versions(args), "quick": args.quick, "seconds": round(time.monotonic() - started, 1),
    }
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump({"meta": meta, "results": results, "count_mismatches": mismatches, "grpc": grpc}, f, indent=2)

    names = ["arbor"] + peers
    lines = [f"| figure | {' | '.join(names)} | " + " | ".join(f"Arbor vs {p}" for p in peers) + " |",
             "|---|" + "---|" * (len(names) + len(peers))]
    for key, label, better in FIGURES:
        vals = [results[n].get(key) for n in names]
        ratios = [ratio(vals[0], results[p].get(key), better) for p in peers]
        cells = []
        for p, r in zip(peers, ratios):
            mark = " (results differ)" if (key, p) in differs else ""
            cells.append("-" if r is None else f"{r:,.1f}x{mark}")
        lines.append(f"| {label} | " + " | ".join(fmt(v) for v in vals) + " | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    print()
    print(f"{meta['date']}; {meta['machine']}; versions: {meta['versions']}; {'quick' if args.quick else 'full'} run in {meta['seconds']} s")
    for n in names:
        if results[n].get("status") != "ok":
            print(f"{n}: {results[n]['status']}")
    print(table)
    print("Ratios are Arbor's advantage: above 1x Arbor is ahead, below 1x it is behind.")
    print("result counts: " + ("identical on every server" if not mismatches else "DIFFER: " + "; ".join(mismatches)))
    with open(os.path.join(out_dir, "table.md"), "w") as f:
        f.write(table + "\n")
    if grpc:
        print("\nArbor over gRPC:\n" + grpc)

    if not args.no_chart and peers:
        try:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            print("matplotlib is not installed: no chart")
            return
        labels = [label + (" [results differ]" if any((k, p) in differs for p in peers) else "") for k, label, _ in FIGURES]
        fig, ax = plt.subplots(figsize=(11, 7))
        height = 0.8 / len(peers)
        for i, p in enumerate(peers):
            rs = [ratio(results["arbor"].get(k), results[p].get(k), b) or 0 for k, _, b in FIGURES]
            ax.barh([y + i * height for y in range(len(FIGURES))], rs, height=height, label=f"vs {p}")
        ax.axvline(1, color="black", linewidth=1)
        ax.set_xscale("log")
        ax.set_yticks([y + height * (len(peers) - 1) / 2 for y in range(len(FIGURES))])
        ax.set_yticklabels(labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("Arbor's advantage (x, log scale; right of 1 = Arbor ahead)")
        ax.set_title(f"Arbor vs MLflow-compatible servers, {meta['date']} ({'quick' if args.quick else 'full'})")
        ax.legend()
        fig.tight_layout()
        chart = os.path.join(out_dir, "ratios.png")
        fig.savefig(chart, dpi=110)
        print(f"chart: {chart}")
    print(f"results: {out_dir}")


if __name__ == "__main__":
    sys.exit(main())
