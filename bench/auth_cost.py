"""What `--auth` costs: single log-metric latency and log-batch throughput over MLflow
REST with one keep-alive Python client (requests), against the same binary with auth
off, with HTTP Basic (a password checked once, then remembered), and with a bearer
token. Each round starts a fresh server on its own data directory.

    python bench/auth_cost.py [--bin target/release/arbor] [--rounds 2]
"""

import argparse
import os
import statistics
import subprocess
import tempfile
import time

import requests

ADMIN = ("admin", "bench-admin-pass")


def start(binary, data_dir, auth):
    args = [binary, "serve", "--listen", "127.0.0.1:0", "--data-dir", data_dir]
    if auth:
        args += ["--auth", "--admin-password", ADMIN[1]]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, env={**os.environ, "ARBOR_LOG": "warn"})
    line = proc.stdout.readline().strip()
    return proc, "http://" + line.rsplit(" ", 1)[1]


def measure(url, session, single=3000, batches=200):
    api = url + "/api/2.0/mlflow"
    exp = session.post(api + "/experiments/create", json={"name": f"bench-{time.time_ns()}"}).json()["experiment_id"]
    run = session.post(api + "/runs/create", json={"experiment_id": exp}).json()["run"]["info"]["run_id"]
    for i in range(200):  # warm-up
        session.post(api + "/runs/log-metric", json={"run_id": run, "key": "w", "value": i, "timestamp": 1, "step": i})
    lat = []
    for i in range(single):
        t = time.perf_counter()
        r = session.post(api + "/runs/log-metric",
                         json={"run_id": run, "key": "loss", "value": 1.0 / (i + 1), "timestamp": 1, "step": i})
        lat.append(time.perf_counter() - t)
        assert r.status_code == 200, r.text
    lat.sort()
    bodies = [
        {"run_id": run, "metrics": [{"key": "b", "value": float(j), "timestamp": 1, "step": b * 1000 + j}
                                    for j in range(1000)]}
        for b in range(batches)
    ]
    t = time.perf_counter()
    for body in bodies:
        r = session.post(api + "/runs/log-batch", json=body)
        assert r.status_code == 200, r.text
    rate = batches * 1000 / (time.perf_counter() - t)
    return statistics.median(lat) * 1e3, lat[int(len(lat) * 0.99)] * 1e3, rate


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bin", default="target/release/arbor")
    p.add_argument("--rounds", type=int, default=2)
    a = p.parse_args()
    print(f"{'mode':<8} {'round':>5} {'log-metric p50 ms':>18} {'p99 ms':>8} {'log-batch points/s':>19}")
    for rnd in range(1, a.rounds + 1):
        for mode in ("off", "basic", "token"):
            with tempfile.TemporaryDirectory() as d:
                proc, url = start(a.bin, d, mode != "off")
                try:
                    s = requests.Session()
                    s.trust_env = False
                    # A user, not an admin: each write looks up the run and the user's grant.
                    user = ("bench", "bench-user-pass")
                    if mode != "off":
                        r = requests.post(url + "/api/2.0/mlflow/users/create", auth=ADMIN,
                                          json={"username": user[0], "password": user[1]})
                        assert r.status_code == 200, r.text
                    if mode == "basic":
                        s.auth = user
                    elif mode == "token":
                        tok = requests.post(url + "/api/arbor/v1/tokens/create", auth=ADMIN,
                                            json={"username": user[0]}).json()["token"]
                        s.headers["Authorization"] = f"Bearer {tok}"
                    p50, p99, rate = measure(url, s)
                    print(f"{mode:<8} {rnd:>5} {p50:>18.3f} {p99:>8.3f} {rate:>19,.0f}")
                finally:
                    proc.terminate()
                    proc.wait()


if __name__ == "__main__":
    main()
