"""Fixtures: a real `arbor serve` on 127.0.0.1:0 with its own data directory, a real
`mlflow server` (SQLite) to compare with, and Python stubs generated from the
repository's proto with grpc_tools.

With ARBOR_TEST_BACKEND=postgres every server keeps its log in a PostgreSQL database of its
own (`--store`), made beside ARBOR_TEST_POSTGRES (default
postgres://postgres@127.0.0.1:5432/test)."""

import os
import pathlib
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

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


def postgres_base():
    return os.environ.get("ARBOR_TEST_POSTGRES") or "postgres://postgres@127.0.0.1:5432/test"


def on_postgres():
    return os.environ.get("ARBOR_TEST_BACKEND") == "postgres"


def new_database(base: str) -> str:
    """An empty database beside the one `base` names; its URL."""
    name = f"arbor_test_py_{os.getpid()}_{time.time_ns()}"
    subprocess.run(["psql", base, "-qc", f"CREATE DATABASE {name}"], check=True)
    return base.rsplit("/", 1)[0] + "/" + name


# Each data directory's shared log, kept for restarts on the same directory.
_LOGS = {}


class Server:
    def __init__(self, data_dir: pathlib.Path, *extra_args: str):
        if on_postgres() and "--store" not in extra_args:
            if str(data_dir) not in _LOGS:
                _LOGS[str(data_dir)] = new_database(postgres_base())
            extra_args = (*extra_args, "--store", _LOGS[str(data_dir)])
        self.proc = subprocess.Popen(
            [arbor_bin(), "serve", "--listen", "127.0.0.1:0", "--data-dir", str(data_dir), *extra_args],
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


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    mlflow_bin = os.path.join(os.path.dirname(sys.executable), "mlflow")
    proc = subprocess.Popen(
        [mlflow_bin, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{root}/mlflow.db", "--artifacts-destination", str(root / "artifacts")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=root,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail("mlflow server did not start")
        time.sleep(0.2)
    yield url
    proc.terminate()
    proc.wait(timeout=30)


# scripts/test installs Debian's chromium and chromium-driver; without them the browser
# tests fail rather than skip, so CI cannot pass without running them.
CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture
def browser(tmp_path):
    assert CHROMIUM and CHROMEDRIVER, "chromium and chromedriver are needed (scripts/test installs them)"
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'chromium'}", "--window-size=1400,1000",
    ):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    yield driver
    driver.quit()
