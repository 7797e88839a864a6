"""Every command and Python snippet of docs/guides/ runs as written, against real servers.

Each ```sh block runs line by line in a fresh directory, every line must exit 0:
`cargo run --release --` is the built binary, `arbor serve ...` starts a server (on port 0
and a temporary data directory; later lines reach it where the guide says
127.0.0.1:5000), `export` sets the environment, `pip install X` checks that X is there,
`[optional parts]` are left out, `http://old-mlflow:5000` is a second server holding an
experiment, and `./arbor-data` a fresh directory. A ```python block whose first line is
`# NAME.py` is that file of the guide (for `python NAME.py`); any other runs as it is,
with MLFLOW_TRACKING_URI on the server. A block that starts no server runs against one
the test starts."""

import os
import pathlib
import re
import shlex
import subprocess
import sys
import urllib.request

import pytest

from conftest import ROOT, Server, arbor_bin

GUIDES = sorted((ROOT / "docs" / "guides").glob("*.md"))
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)


def blocks(path):
    return [(lang, body) for lang, body in BLOCK.findall(path.read_text()) if lang in ("sh", "python")]


def test_the_guides_have_blocks_to_run():
    """The scan below finds the guides' blocks (a test of the test)."""
    assert len(GUIDES) >= 3
    assert sum(len(blocks(g)) for g in GUIDES) >= 4


def without_comment(line):
    """The command of a line, less a `# comment` outside quotes."""
    try:
        words = shlex.split(line, comments=True)
    except ValueError:
        return line
    return shlex.join(words) if words else ""


class Guide:
    def __init__(self, tmp_path, source_url):
        self.tmp = tmp_path
        self.source_url = source_url
        self.servers = []
        self.env = {**os.environ, "PATH": f"{pathlib.Path(sys.executable).parent}:{os.environ['PATH']}"}
        self.files = {}

    def serve(self, args):
        s = Server(self.tmp / f"data-{len(self.servers)}", *args)
        self.servers.append(s)
        with urllib.request.urlopen(f"http://{s.address}/health", timeout=30) as r:
            assert r.read().startswith(b"OK")
        return s

    def url(self):
        if not self.servers:
            self.serve([])
        return self.servers[-1].address

    def stop(self):
        for s in self.servers:
            if s.proc.poll() is None:
                assert s.stop() == 0
        self.servers = []

    def run_sh(self, body):
        cwd = self.tmp / f"sh-{len(list(self.tmp.iterdir()))}"
        cwd.mkdir()
        for name, text in self.files.items():
            (cwd / name).write_text(text)
        for raw in body.splitlines():
            opens = re.search(r"open (http://127\.0\.0\.1:5000/\S*)", raw)
            line = without_comment(re.sub(r"\s*\[[^\]]*\]", "", raw))
            if not line:
                continue
            line = line.replace("cargo run --release -- ", "arbor ")
            line = line.replace("http://old-mlflow:5000", self.source_url)
            line = line.replace("./arbor-data", str(cwd / "arbor-data"))
            words = shlex.split(line)
            if words[:2] == ["arbor", "serve"]:
                self.serve(words[2:])
                if opens:
                    page = opens.group(1).replace("127.0.0.1:5000", self.url())
                    with urllib.request.urlopen(page, timeout=30) as r:
                        assert r.status == 200
                continue
            if "127.0.0.1:5000" in line:
                line = line.replace("127.0.0.1:5000", self.url())
                words = shlex.split(line)
            if words[0] == "export":
                key, _, value = words[1].partition("=")
                self.env[key] = value
            elif words[:2] == ["pip", "install"]:
                for package in words[2:]:
                    subprocess.run([sys.executable, "-c", f"import {package}"], check=True)
            else:
                if words[0] == "arbor":
                    words[0] = arbor_bin()
                elif words[0] == "python":
                    words[0] = sys.executable
                done = subprocess.run(words, cwd=cwd, env=self.env, capture_output=True, text=True, timeout=300)
                assert done.returncode == 0, f"{raw!r} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"

    def run_python(self, body):
        env = {**self.env, "MLFLOW_TRACKING_URI": f"http://{self.url()}"}
        done = subprocess.run([sys.executable, "-c", body], cwd=self.tmp, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{body}\nexited {done.returncode}:\n{done.stderr}"


@pytest.fixture
def source(tmp_path):
    """The server a guide moves data from: an experiment with a finished run in it."""
    s = Server(tmp_path / "source")
    import mlflow

    client = mlflow.MlflowClient(f"http://{s.address}")
    exp = client.create_experiment("to-move")
    run = client.create_run(exp)
    client.log_metric(run.info.run_id, "loss", 0.5, step=1)
    client.set_terminated(run.info.run_id)
    yield f"http://{s.address}"
    assert s.stop() == 0


@pytest.mark.parametrize("guide", GUIDES, ids=lambda p: p.name)
def test_every_command_and_snippet_of_the_guide_runs(guide, tmp_path, source):
    """Each block of the guide runs, in order, and every command in it succeeds."""
    g = Guide(tmp_path, source)
    found = blocks(guide)
    for lang, body in found:
        first = body.splitlines()[0] if body.strip() else ""
        name = re.fullmatch(r"# (\S+\.py)", first.strip())
        if lang == "python" and name:
            g.files[name.group(1)] = body
    try:
        for lang, body in found:
            if lang == "sh":
                g.run_sh(body)
                g.stop()
            elif not re.fullmatch(r"# (\S+\.py)", body.splitlines()[0].strip()):
                g.run_python(body)
    finally:
        g.stop()
