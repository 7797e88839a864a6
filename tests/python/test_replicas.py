"""Two Arbor replicas on one PostgreSQL (`--store`), with the official mlflow client:
what one client writes through replica A, another reads through replica B at once, nested
runs, searches, histories and artifacts (a shared --artifacts-dir) included.

Needs PostgreSQL: ARBOR_TEST_POSTGRES, default postgres://postgres@127.0.0.1:5432/test."""

import subprocess

import pytest
from mlflow.tracking import MlflowClient

from conftest import Server, new_database, postgres_base


@pytest.fixture
def replicas(tmp_path):
    base = postgres_base()
    try:
        url = new_database(base)
    except (subprocess.CalledProcessError, FileNotFoundError) as e:
        pytest.fail(f"these tests need PostgreSQL at {base} and psql: {e}")
    shared = tmp_path / "artifacts"
    a = Server(tmp_path / "a", "--store", url, "--artifacts-dir", str(shared))
    b = Server(tmp_path / "b", "--store", url, "--artifacts-dir", str(shared))
    yield a, b
    for s in (a, b):
        if s.proc.poll() is None:
            assert s.stop() == 0


def test_the_mlflow_client_reads_through_one_replica_what_it_wrote_through_the_other(replicas, tmp_path):
    a, b = replicas
    ca = MlflowClient(tracking_uri=f"http://{a.address}")
    cb = MlflowClient(tracking_uri=f"http://{b.address}")
    exp = ca.create_experiment("replicated")
    assert cb.get_experiment_by_name("replicated").experiment_id == exp
    parent = cb.create_run(exp, run_name="parent")
    child = ca.create_run(exp, run_name="child", tags={"mlflow.parentRunId": parent.info.run_id})
    for step in range(100):
        (ca if step % 2 else cb).log_metric(child.info.run_id, "loss", 1.0 / (step + 1), step=step)
    ca.log_param(child.info.run_id, "lr", "0.01")
    history = cb.get_metric_history(child.info.run_id, "loss")
    assert [m.step for m in history] == list(range(100))
    found = cb.search_runs([exp], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}' and params.lr = '0.01'")
    assert [r.info.run_id for r in found] == [child.info.run_id]
    note = tmp_path / "note.txt"
    note.write_text("hello from A")
    ca.log_artifact(child.info.run_id, str(note))
    assert [f.path for f in cb.list_artifacts(child.info.run_id)] == ["note.txt"]
    got = cb.download_artifacts(child.info.run_id, "note.txt", str(tmp_path / "down"))
    assert open(got).read() == "hello from A"
    ca.set_terminated(child.info.run_id, "FINISHED")
    assert cb.get_run(child.info.run_id).info.status == "FINISHED"
    # An immutable param stays so whichever replica is asked.
    with pytest.raises(Exception) as refused:
        cb.log_param(child.info.run_id, "lr", "0.02")
    assert "INVALID_PARAMETER_VALUE" in str(refused.value)
