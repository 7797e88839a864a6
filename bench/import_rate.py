"""How fast `arbor import` copies from a real `mlflow server` (SQLite, one worker),
against how fast that server can serve the same histories to one plain client.

    python bench/import_rate.py [--runs 100] [--points 1000] [--bin target/release/arbor]
"""

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import requests


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait(url, proc):
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(url + "/health", timeout=2):
                return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.2)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--points", type=int, default=1000)
    ap.add_argument("--jobs", type=int, default=4)
    ap.add_argument("--bin", default="target/release/arbor")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        port = free_port()
        mlflow_bin = os.path.join(os.path.dirname(sys.executable), "mlflow")
        src = subprocess.Popen([mlflow_bin, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                                "--backend-store-uri", f"sqlite:///{d}/mlflow.db", "--artifacts-destination", f"{d}/art"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=d)
        url = f"http://127.0.0.1:{port}"
        try:
            wait(url, src)
            s = requests.Session()
            s.trust_env = False
            api = url + "/api/2.0/mlflow"
            exp = s.post(api + "/experiments/create", json={"name": "rate"}).json()["experiment_id"]
            runs = []
            for r in range(a.runs):
                run = s.post(api + "/runs/create", json={"experiment_id": exp, "start_time": 1000 + r}).json()["run"]["info"]["run_id"]
                runs.append(run)
                for start in range(0, a.points, 1000):
                    n = min(1000, a.points - start)
                    s.post(api + "/runs/log-batch", json={"run_id": run, "metrics": [
                        {"key": "loss", "value": 1.0 / (i + 1), "timestamp": 1 + i, "step": i} for i in range(start, start + n)]})
            total = a.runs * a.points
            t = time.perf_counter()
            got = 0
            for run in runs:
                got += len(s.get(api + "/metrics/get-history", params={"run_id": run, "metric_key": "loss"}).json()["metrics"])
            serve = time.perf_counter() - t
            assert got == total
            print(f"source: {a.runs} runs, {total} points; one client reads every history in {serve:.2f} s ({total / serve:,.0f} points/s)")
            # What any copier must read: the run search, every history, every run's files.
            t = time.perf_counter()
            s.post(api + "/runs/search", json={"experiment_ids": [exp], "max_results": 1000})
            for run in runs:
                s.get(api + "/metrics/get-history", params={"run_id": run, "metric_key": "loss"})
                s.get(url + "/api/2.0/mlflow-artifacts/artifacts", params={"path": f"{exp}/{run}/artifacts"})
            serve_all = time.perf_counter() - t
            print(f"source: the search, every history and every run's file listing in {serve_all:.2f} s")
            with tempfile.TemporaryDirectory() as target:
                t = time.perf_counter()
                out = subprocess.run([a.bin, "import", "--from", url, "--data-dir", target, "--experiments", "rate",
                                      "--jobs", str(a.jobs)], capture_output=True, text=True, check=True)
                took = time.perf_counter() - t
                print(out.stdout.strip())
                print(f"arbor import --jobs {a.jobs}: {took:.2f} s wall ({a.runs / took:,.1f} runs/s, {total / took:,.0f} points/s)")
        finally:
            src.terminate()
            src.wait()


if __name__ == "__main__":
    main()
