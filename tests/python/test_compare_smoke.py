"""The comparison harness (bench/compare.py) runs end to end against Arbor alone:
the same code path a full comparison takes, with quick workloads and debug binaries."""

import json
import os
import subprocess
import sys

from conftest import ROOT, arbor_bin


def test_compare_harness_against_arbor_alone(tmp_path):
    bench = os.path.join(os.path.dirname(arbor_bin()), "arbor-bench")
    out = tmp_path / "results"
    r = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "compare.py"), "--quick", "--peers", "none", "--no-grpc",
         "--arbor-bin", arbor_bin(), "--bench-bin", bench, "--out", str(out)],
        capture_output=True, text=True, timeout=600,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    results = json.loads((out / "results.json").read_text())
    arbor = results["results"]["arbor"]
    assert arbor["status"] == "ok"
    assert arbor["search_a_runs"] == 100 and arbor["search_b_runs"] == 100
    assert arbor["search_d_runs"] == 1000
    assert arbor["history_points"] == 20000
    assert arbor["server_rss_mib"] > 0 and arbor["disk_mib"] > 0
    assert "| single log-metric calls (req/s) |" in (out / "table.md").read_text()
    assert "result counts: identical" in r.stdout
