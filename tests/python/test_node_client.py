"""A second language on the gRPC API: the Node.js client in tests/node (@grpc/grpc-js,
protos loaded at run time) creates a three-level tree, streams points with
LogMetricStream, watches the subtree, resumes by sequence number after dropping the
stream, and checks that every point arrived once; then again over TLS with a bearer
token against a server with --auth. scripts/test installs its packages."""

import os
import pathlib
import shutil
import subprocess

import pytest
import requests

from conftest import Server
from test_tls import make_certs

NODE_DIR = pathlib.Path(__file__).resolve().parents[1] / "node"


def run_node(address, env=None):
    node = shutil.which("node")
    if node is None or not (NODE_DIR / "node_modules" / "@grpc" / "grpc-js").exists():
        pytest.fail("Node.js and the packages of tests/node are needed: scripts/test installs them")
    done = subprocess.run(
        [node, str(NODE_DIR / "client.mjs"), address],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "none lost or repeated" in done.stdout


def test_node_client_streams_watches_and_resumes(server):
    run_node(server.address)


def test_node_client_over_tls_with_a_token(tmp_path):
    """The same client over TLS (trusting a CA made here) with a bearer token, against a
    server with --auth; without the token the server refuses it."""
    paths = make_certs(tmp_path)
    s = Server(tmp_path / "data", "--tls-cert", str(paths["server.pem"]), "--tls-key", str(paths["server.key"]),
               "--auth", "--admin-password", "admin-pass-1")
    try:
        http = requests.Session()
        http.trust_env = False
        http.verify = str(paths["ca.pem"])
        r = http.post(f"https://{s.address}/api/arbor/v1/tokens/create", auth=("admin", "admin-pass-1"),
                      json={"description": "node"})
        assert r.status_code == 200, r.text
        run_node(s.address, {"ARBOR_CA": str(paths["ca.pem"]), "ARBOR_TOKEN": r.json()["token"]})
        with pytest.raises(AssertionError) as refused:
            run_node(s.address, {"ARBOR_CA": str(paths["ca.pem"])})
        assert "UNAUTHENTICATED" in str(refused.value)
    finally:
        s.stop()
