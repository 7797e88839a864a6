"""Fixtures: a real `arbor serve` on 127.0.0.1:0 with its own data directory, and
Python stubs generated from the repository's proto with grpc_tools."""

import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def arbor_bin() -> str:
    path = os.environ.get("ARBOR_BIN", str(ROOT / "target" / "debug" / "arbor"))
    if not os.path.exists(path):
        pytest.fail(f"arbor binary not found at {path}; build it with `cargo build` or set ARBOR_BIN")
    return path


@pytest.fixture(scope="session")
def arbor_pb(tmp_path_factory):
    """Generates arbor/v1/*_pb2*.py from proto/ and imports them."""
    out = tmp_path_factory.mktemp("stubs")
    from grpc_tools import protoc

    protos = [str(p.relative_to(ROOT / "proto")) for p in (ROOT / "proto").rglob("*.proto")]
    rc = protoc.main(
        ["protoc", f"-I{ROOT / 'proto'}", f"--python_out={out}", f"--grpc_python_out={out}", *protos]
    )
    assert rc == 0, "grpc_tools.protoc failed"
    sys.path.insert(0, str(out))
    from arbor.v1 import tracking_pb2, tracking_pb2_grpc

    return tracking_pb2, tracking_pb2_grpc


class Server:
    def __init__(self, data_dir: pathlib.Path):
        self.proc = subprocess.Popen(
            [arbor_bin(), "serve", "--listen", "127.0.0.1:0", "--data-dir", str(data_dir)],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "ARBOR_LOG": "warn"},
        )
        line = self.proc.stdout.readline().strip()
        prefix = "arbor listening on "
        if not line.startswith(prefix):
            self.proc.kill()
            raise RuntimeError(f"unexpected first line from arbor: {line!r}")
        self.address = line[len(prefix):]

    def stop(self) -> int:
        self.proc.terminate()
        return self.proc.wait(timeout=30)


@pytest.fixture
def server(tmp_path):
    s = Server(tmp_path / "data")
    yield s
    if s.proc.poll() is None:
        s.stop()
