"""A second language on the gRPC API: the Node.js client in tests/node (@grpc/grpc-js,
protos loaded at run time) creates a three-level tree, streams points with
LogMetricStream, watches the subtree, resumes by sequence number after dropping the
stream, and checks that every point arrived once. scripts/test installs its packages."""

import pathlib
import shutil
import subprocess

import pytest

NODE_DIR = pathlib.Path(__file__).resolve().parents[1] / "node"


def test_node_client_streams_watches_and_resumes(server):
    node = shutil.which("node")
    if node is None or not (NODE_DIR / "node_modules" / "@grpc" / "grpc-js").exists():
        pytest.fail("Node.js and the packages of tests/node are needed: scripts/test installs them")
    done = subprocess.run(
        [node, str(NODE_DIR / "client.mjs"), server.address],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "none lost or repeated" in done.stdout
