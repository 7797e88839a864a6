"""The official `mlflow` client, unmodified, against a real Arbor server: what a user
coming from `mlflow server` does, end to end."""

import math
import os

import numpy as np
import pandas as pd
import pytest

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag, ViewType
from mlflow.exceptions import MlflowException, RestException


@pytest.fixture
def tracking(server, monkeypatch, tmp_path):
    uri = f"http://{server.address}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    mlflow.set_tracking_uri(uri)
    monkeypatch.chdir(tmp_path)
    yield MlflowClient(uri)
    while mlflow.active_run():
        mlflow.end_run()


def error_code(exc):
    return getattr(exc, "error_code", None)


def test_experiments_by_name_and_missing(tracking):
    assert mlflow.get_experiment_by_name("does-not-exist") is None
    exp = mlflow.set_experiment("by-name")
    assert exp.name == "by-name" and exp.lifecycle_stage == "active"
    again = mlflow.set_experiment("by-name")
    assert again.experiment_id == exp.experiment_id
    assert mlflow.get_experiment_by_name("by-name").experiment_id == exp.experiment_id
    with pytest.raises(MlflowException) as err:
        tracking.create_experiment("by-name")
    assert error_code(err.value) == "RESOURCE_ALREADY_EXISTS"


def test_nested_runs_three_levels_and_parent_run_id(tracking):
    mlflow.set_experiment("nested")
    with mlflow.start_run(run_name="root") as root:
        with mlflow.start_run(run_name="child", nested=True) as child:
            with mlflow.start_run(run_name="grandchild", nested=True) as grandchild:
                mlflow.log_metric("depth", 2)
    other = mlflow.start_run(run_name="adopted", parent_run_id=child.info.run_id)
    mlflow.end_run()
    got = {r.info.run_name: r for r in (tracking.get_run(x.info.run_id) for x in (root, child, grandchild, other))}
    assert got["child"].data.tags["mlflow.parentRunId"] == root.info.run_id
    assert got["grandchild"].data.tags["mlflow.parentRunId"] == child.info.run_id
    assert got["adopted"].data.tags["mlflow.parentRunId"] == child.info.run_id
    for r in got.values():
        assert r.data.tags["mlflow.rootRunId"] == root.info.run_id
        assert r.info.status == "FINISHED" and r.info.end_time is not None
    exp = mlflow.get_experiment_by_name("nested").experiment_id
    tree = mlflow.search_runs([exp], filter_string=f"tags.mlflow.rootRunId = '{root.info.run_id}'", output_format="list")
    assert {r.info.run_name for r in tree} == {"root", "child", "grandchild", "adopted"}
    kids = mlflow.search_runs([exp], filter_string=f"tags.mlflow.parentRunId = '{child.info.run_id}'", output_format="list")
    assert {r.info.run_name for r in kids} == {"grandchild", "adopted"}


def test_logging_params_metrics_tags_and_batches(tracking):
    mlflow.set_experiment("logging")
    with mlflow.start_run() as run:
        mlflow.log_param("lr", 0.01)
        mlflow.log_params({"batch": 32, "opt": "adam"})
        mlflow.log_metric("loss", 0.5, step=1)
        mlflow.log_metrics({"loss": 0.25, "acc": float("nan")}, step=2)
        mlflow.log_metric("neg", -1.0, step=-3)
        mlflow.set_tag("team", "vision")
        mlflow.set_tags({"a": "1", "b": "2"})
        tracking.log_batch(run.info.run_id, metrics=[Metric("inf", float("inf"), 1, 0)], params=[Param("x", "y")], tags=[RunTag("c", "3")])
    r = tracking.get_run(run.info.run_id)
    assert r.data.params == {"lr": "0.01", "batch": "32", "opt": "adam", "x": "y"}
    assert r.data.metrics["loss"] == 0.25
    assert math.isnan(r.data.metrics["acc"])
    assert r.data.metrics["inf"] >= 1.7976931348623157e308
    assert r.data.metrics["neg"] == -1.0
    assert {k: r.data.tags[k] for k in ("team", "a", "b", "c")} == {"team": "vision", "a": "1", "b": "2", "c": "3"}
    assert [m.step for m in tracking.get_metric_history(run.info.run_id, "loss")] == [1, 2]


def test_async_logging(tracking):
    mlflow.set_experiment("async")
    with mlflow.start_run() as run:
        for step in range(50):
            mlflow.log_metrics({"loss": 1 / (step + 1)}, step=step, synchronous=False)
        mlflow.log_params({"p": "v"}, synchronous=False)
        mlflow.flush_async_logging()
    history = tracking.get_metric_history(run.info.run_id, "loss")
    assert [m.step for m in history] == list(range(50))
    assert tracking.get_run(run.info.run_id).data.params["p"] == "v"


def test_metric_history_across_pages(tracking):
    mlflow.set_experiment("history")
    with mlflow.start_run() as run:
        total = 30_500  # more than the client's 25,000-point page
        for start in range(0, total, 1000):
            tracking.log_batch(run.info.run_id, metrics=[Metric("m", float(i), 1_700_000_000_000 + i, i) for i in range(start, min(start + 1000, total))])
    history = tracking.get_metric_history(run.info.run_id, "m")
    assert len(history) == total
    assert [m.step for m in history] == list(range(total))


def test_search_runs_filters_order_paging_and_pandas(tracking):
    exp = mlflow.set_experiment("search").experiment_id
    ids = {}
    for i, (lr, loss) in enumerate([("0.1", 0.9), ("0.01", 0.3), ("0.01", 0.1), ("0.001", 0.5)]):
        with mlflow.start_run(run_name=f"run-{i}") as run:
            mlflow.log_param("lr", lr)
            mlflow.log_metric("loss", loss)
            mlflow.set_tag("idx", str(i))
        ids[i] = run.info.run_id
    def names(**kw):
        return [r.info.run_name for r in tracking.search_runs([exp], **kw)]
    assert names(filter_string="params.lr = '0.01'", order_by=["metrics.loss ASC"]) == ["run-2", "run-1"]
    assert names(filter_string="metrics.loss < 0.6", order_by=["metrics.loss DESC"]) == ["run-3", "run-1", "run-2"]
    assert names(filter_string="tags.idx = '3'") == ["run-3"]
    assert names(filter_string="attributes.run_name LIKE 'run-%' and attributes.status = 'FINISHED'", order_by=["attributes.run_name"]) == ["run-0", "run-1", "run-2", "run-3"]
    assert names(filter_string=f"attributes.run_id IN ('{ids[0]}', '{ids[3]}')", order_by=["attributes.start_time ASC"]) == ["run-0", "run-3"]
    # Paging with page tokens.
    page1 = tracking.search_runs([exp], max_results=3, order_by=["metrics.loss ASC"])
    assert len(page1) == 3 and page1.token
    page2 = tracking.search_runs([exp], max_results=3, order_by=["metrics.loss ASC"], page_token=page1.token)
    assert [r.info.run_name for r in page2] == ["run-0"] and not page2.token
    # The pandas output of the fluent API.
    df = mlflow.search_runs([exp], filter_string="params.lr = '0.01'", order_by=["metrics.loss ASC"])
    assert isinstance(df, pd.DataFrame)
    assert list(df["tags.mlflow.runName"]) == ["run-2", "run-1"]
    assert list(df["metrics.loss"]) == [0.1, 0.3]
    assert list(df["params.lr"]) == ["0.01", "0.01"]
    with pytest.raises(MlflowException) as err:
        tracking.search_runs([exp], filter_string="params.lr = '0.01' OR params.lr = '0.1'")
    assert error_code(err.value) == "INVALID_PARAMETER_VALUE"


def test_search_experiments_and_lifecycle_with_view_types(tracking):
    a = tracking.create_experiment("life-a", tags={"team": "x"})
    b = tracking.create_experiment("life-b")
    names = [e.name for e in tracking.search_experiments(filter_string="name LIKE 'life-%'", order_by=["name ASC"])]
    assert names == ["life-a", "life-b"]
    assert [e.name for e in tracking.search_experiments(filter_string="tags.team = 'x'")] == ["life-a"]
    run = tracking.create_run(b)
    tracking.delete_run(run.info.run_id)
    assert tracking.search_runs([b]) == []
    assert [r.info.run_id for r in tracking.search_runs([b], run_view_type=ViewType.DELETED_ONLY)] == [run.info.run_id]
    with pytest.raises(MlflowException) as err:
        tracking.log_param(run.info.run_id, "k", "v")
    assert error_code(err.value) == "INVALID_PARAMETER_VALUE"
    tracking.restore_run(run.info.run_id)
    assert len(tracking.search_runs([b])) == 1
    tracking.delete_experiment(b)
    assert tracking.get_experiment(b).lifecycle_stage == "deleted"
    assert tracking.get_run(run.info.run_id).info.lifecycle_stage == "deleted"
    deleted = [e.name for e in tracking.search_experiments(view_type=ViewType.DELETED_ONLY)]
    assert deleted == ["life-b"]
    tracking.restore_experiment(b)
    assert tracking.get_run(run.info.run_id).info.lifecycle_stage == "active"
    tracking.rename_experiment(a, "life-a2")
    assert tracking.get_experiment(a).name == "life-a2"


def test_artifacts_round_trip(tracking, tmp_path):
    mlflow.set_experiment("artifacts")
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("alpha")
    (src / "sub" / "b.bin").write_bytes(os.urandom(3 << 20))
    with mlflow.start_run() as run:
        mlflow.log_artifact(str(src / "a.txt"))
        mlflow.log_artifacts(str(src), artifact_path="tree")
        mlflow.log_text("hello", "notes/hello.txt")
        mlflow.log_dict({"k": 1}, "conf.json")
    assert run.info.artifact_uri == f"mlflow-artifacts:/{run.info.experiment_id}/{run.info.run_id}/artifacts"
    top = sorted(f.path for f in tracking.list_artifacts(run.info.run_id))
    assert top == ["a.txt", "conf.json", "notes", "tree"]
    tree = {f.path: f for f in tracking.list_artifacts(run.info.run_id, "tree/sub")}
    assert tree["tree/sub/b.bin"].file_size == 3 << 20
    out = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="tree", dst_path=str(tmp_path / "dl"))
    assert open(os.path.join(out, "a.txt")).read() == "alpha"
    assert open(os.path.join(out, "sub", "b.bin"), "rb").read() == (src / "sub" / "b.bin").read_bytes()
    assert mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/notes/hello.txt") == "hello"


def test_log_input_with_a_dataset(tracking):
    mlflow.set_experiment("datasets")
    df = pd.DataFrame({"x": [1, 2, 3], "y": [0, 1, 0]})
    dataset = mlflow.data.from_pandas(df, name="toy", targets="y")
    with mlflow.start_run() as run:
        mlflow.log_input(dataset, context="training")
    r = tracking.get_run(run.info.run_id)
    (inp,) = r.inputs.dataset_inputs
    assert inp.dataset.name == "toy" and inp.dataset.digest == dataset.digest
    assert {t.key: t.value for t in inp.tags}["mlflow.data.context"] == "training"
    exp = run.info.experiment_id
    assert [x.info.run_id for x in tracking.search_runs([exp], filter_string="dataset.name = 'toy' AND dataset.context = 'training'")] == [run.info.run_id]
    assert tracking.search_runs([exp], filter_string="dataset.name = 'other'") == []


def test_sklearn_log_model_and_load_through_runs_uri(tracking):
    from sklearn.linear_model import LogisticRegression

    mlflow.set_experiment("models")
    X = np.array([[0.0], [1.0], [2.0], [3.0]])
    y = np.array([0, 0, 1, 1])
    clf = LogisticRegression().fit(X, y)
    with mlflow.start_run() as run:
        mlflow.log_param("C", clf.C)
        info = mlflow.sklearn.log_model(clf, name="model")
    assert info.model_id.startswith("m-")
    model = tracking.get_logged_model(info.model_id)
    assert model.status.to_proto() == 2 or str(model.status).endswith("READY")
    assert model.source_run_id == run.info.run_id
    loaded = mlflow.sklearn.load_model(f"runs:/{run.info.run_id}/model")
    assert list(loaded.predict(X)) == list(clf.predict(X))
    pyfunc = mlflow.pyfunc.load_model(f"models:/{info.model_id}")
    assert list(pyfunc.predict(X)) == list(clf.predict(X))
    found = mlflow.search_logged_models(experiment_ids=[run.info.experiment_id], output_format="list")
    assert [m.model_id for m in found] == [info.model_id]


def test_errors_carry_mlflows_codes(tracking):
    mlflow.set_experiment("errors")
    with mlflow.start_run() as run:
        mlflow.log_param("p", "1")
        with pytest.raises(MlflowException) as err:
            mlflow.log_param("p", "2")
        assert error_code(err.value) == "INVALID_PARAMETER_VALUE"
        assert "Changing param values is not allowed" in str(err.value)
        with pytest.raises(MlflowException) as err:
            tracking.log_metric(run.info.run_id, "bad?name", 1.0)
        assert error_code(err.value) == "INVALID_PARAMETER_VALUE"
        with pytest.raises(MlflowException) as err:
            tracking.set_tag(run.info.run_id, "a//b", "v")
        assert error_code(err.value) == "INVALID_PARAMETER_VALUE"
    with pytest.raises(MlflowException) as err:
        tracking.get_run("0" * 32)
    assert error_code(err.value) == "RESOURCE_DOES_NOT_EXIST"


def test_a_parent_tag_that_would_make_a_cycle_is_refused(tracking):
    """A deliberate difference: MLflow stores any parent tag; Arbor keeps a tree, so a
    parent below the run itself is refused (trees may still span experiments)."""
    exp = tracking.create_experiment("cycles")
    top = tracking.create_run(exp).info.run_id
    below = tracking.create_run(exp, tags={"mlflow.parentRunId": top}).info.run_id
    with pytest.raises(MlflowException) as err:
        tracking.set_tag(top, "mlflow.parentRunId", below)
    assert error_code(err.value) == "INVALID_PARAMETER_VALUE"
    assert "cycle" in err.value.message
    assert "mlflow.parentRunId" not in tracking.get_run(top).data.tags


def test_a_metric_for_an_unknown_logged_model_is_refused_whole(tracking):
    """A deliberate difference: MLflow answers a raw database error (400); Arbor says
    which model is missing (404). Either way nothing of the call is stored."""
    run = tracking.create_run("0").info.run_id
    with pytest.raises(MlflowException) as err:
        tracking.log_metric(run, "x", 1.0, model_id="m-" + "0" * 32)
    assert error_code(err.value) == "RESOURCE_DOES_NOT_EXIST"
    assert "m-" + "0" * 32 in err.value.message
    assert tracking.get_run(run).data.metrics == {}


def test_traced_code_runs_on_although_traces_are_not_served(tracking):
    """With the version it was built for, the client sends traces the way 3.17.2 does;
    Arbor does not serve them yet and answers ENDPOINT_NOT_FOUND, which the client's
    exporter logs: the traced code itself runs and returns as without tracing."""
    mlflow.set_experiment("traced")

    @mlflow.trace
    def add(x):
        return x + 1

    assert add(1) == 2
    with mlflow.start_span("outer") as span:
        span.set_inputs({"a": 1})
    mlflow.flush_trace_async_logging()
