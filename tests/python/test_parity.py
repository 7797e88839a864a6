"""Behaviours a user of the official client can tell apart between servers. Each test
runs twice with the same client code: against `mlflow server` 3.17.2 (SQLite), which
shows the expectation is MLflow's own, and against Arbor, which must match it."""

import uuid

import pytest

from mlflow import MlflowClient
from mlflow.entities import Dataset, DatasetInput, InputTag, Param
from mlflow.exceptions import MlflowException

MAX = 1.7976931348623157e308


@pytest.fixture(params=["mlflow", "arbor"])
def client(request, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    if request.param == "mlflow":
        url = request.getfixturevalue("mlflow_server")
    else:
        url = f"http://{request.getfixturevalue('server').address}"
    c = MlflowClient(url)
    c.url = url
    return c


def experiment(client):
    return client.create_experiment(f"parity-{uuid.uuid4().hex[:12]}")


def ids(runs):
    return [r.info.run_id for r in runs]


def test_infinite_metrics_read_back_as_the_largest_double(client):
    exp = experiment(client)
    run = client.create_run(exp).info.run_id
    client.log_metric(run, "up", float("inf"), step=0)
    client.log_metric(run, "down", float("-inf"), step=0)
    metrics = client.get_run(run).data.metrics
    assert (metrics["up"], metrics["down"]) == (MAX, -MAX)
    assert [m.value for m in client.get_metric_history(run, "up")] == [MAX]
    assert client.search_runs([exp])[0].data.metrics["down"] == -MAX
    # Filters compare against the stored value.
    assert ids(client.search_runs([exp], "metrics.up = 1.7976931348623157e308")) == [run]
    assert ids(client.search_runs([exp], "metrics.up >= 1e308")) == [run]
    assert ids(client.search_runs([exp], "metrics.down < -1e308")) == [run]
    assert ids(client.search_runs([exp], "metrics.up < 1e308")) == []


def test_a_dataset_is_one_record_per_experiment(client):
    exp = experiment(client)
    first, second = (client.create_run(exp).info.run_id for _ in range(2))

    def dataset(schema, profile):
        return Dataset(name="ds", digest="d1", source_type="local", source="/data", schema=schema, profile=profile)

    def role(value):
        return [InputTag("mlflow.data.context", value)]

    client.log_inputs(first, datasets=[DatasetInput(dataset('{"v": 1}', "p1"), role("training"))])
    # Another run of the experiment links to the first record: its schema and profile.
    client.log_inputs(second, datasets=[DatasetInput(dataset('{"v": 2}', "p2"), role("eval"))])
    (linked,) = client.get_run(second).inputs.dataset_inputs
    assert (linked.dataset.schema, linked.dataset.profile) == ('{"v": 1}', "p1")
    assert [(t.key, t.value) for t in linked.tags] == [("mlflow.data.context", "eval")]
    # The same dataset again on the same run changes nothing, new input tags included.
    client.log_inputs(first, datasets=[DatasetInput(dataset('{"v": 3}', "p3"), role("test"))])
    (only,) = client.get_run(first).inputs.dataset_inputs
    assert [t.value for t in only.tags] == ["training"]
    assert only.dataset.schema == '{"v": 1}'


def test_a_batch_that_repeats_a_param_key_is_refused(client):
    run = client.create_run(experiment(client)).info.run_id
    with pytest.raises(MlflowException) as err:
        client.log_batch(run, params=[Param("p", "v"), Param("p", "v")])
    assert err.value.error_code == "INVALID_PARAMETER_VALUE"
    assert "Duplicate parameter keys have been submitted: ['p']" in err.value.message
    assert client.get_run(run).data.params == {}


def test_parents_in_other_experiments_and_deleted_parents_are_accepted(client):
    here, there = experiment(client), experiment(client)
    parent = client.create_run(there).info.run_id
    child = client.create_run(here, tags={"mlflow.parentRunId": parent}).info.run_id
    assert client.get_run(child).data.tags["mlflow.parentRunId"] == parent
    # An experiment-scoped search still returns only that experiment's runs.
    assert ids(client.search_runs([here], f"tags.mlflow.parentRunId = '{parent}'")) == [child]
    assert ids(client.search_runs([there])) == [parent]
    # A deleted parent, at creation and later.
    gone = client.create_run(here).info.run_id
    client.delete_run(gone)
    orphan = client.create_run(here, tags={"mlflow.parentRunId": gone}).info.run_id
    assert client.get_run(orphan).data.tags["mlflow.parentRunId"] == gone
    client.set_tag(child, "mlflow.parentRunId", gone)
    assert client.get_run(child).data.tags["mlflow.parentRunId"] == gone


def test_run_name_filters_read_the_run_name_tag(client):
    exp = experiment(client)
    alpha = client.create_run(exp, run_name="alpha").info.run_id
    beta = client.create_run(exp, run_name="beta").info.run_id
    client.delete_tag(alpha, "mlflow.runName")
    for f in [
        "attributes.run_name = 'alpha'",
        "attributes.run_name != 'zzz'",
        "attributes.run_name LIKE 'al%'",
        "attributes.run_name ILIKE 'AL%'",
    ]:
        assert alpha not in ids(client.search_runs([exp], f)), f
    assert ids(client.search_runs([exp], "attributes.run_name != 'zzz'")) == [beta]
    assert client.get_run(alpha).info.run_name == "alpha"


def test_an_empty_run_name_tag_changes_nothing(client):
    run = client.create_run(experiment(client), run_name="keep").info.run_id
    client.set_tag(run, "mlflow.runName", "")
    got = client.get_run(run)
    assert got.info.run_name == "keep"
    assert got.data.tags["mlflow.runName"] == "keep"


def test_downloading_everything_with_a_dot_path(client, tmp_path):
    run = client.create_run(experiment(client)).info.run_id
    src = tmp_path / "notes.txt"
    src.write_text("hello")
    client.log_artifact(run, str(src), artifact_path="docs")
    out = client.download_artifacts(run, ".", dst_path=str(tmp_path / "out"))
    assert (tmp_path / "out" / "docs" / "notes.txt").read_text() == "hello", out
    # `..` stays refused (the client raises the proxy's 400 as an HTTP error).
    import requests

    with pytest.raises(requests.exceptions.HTTPError) as err:
        client.list_artifacts(run, "../escape")
    assert err.value.response.status_code == 400
    assert err.value.response.json()["message"] == "Invalid path"


def test_a_logged_model_source_run_is_not_looked_up(client):
    missing = "0" * 32
    model = client.create_logged_model(experiment(client), source_run_id=missing)
    assert client.get_logged_model(model.model_id).source_run_id == missing


def test_keys_are_checked_before_the_run_and_long_values_after_it(client):
    missing = "0" * 32
    for call in (
        lambda: client.log_param(missing, "a//b", "v"),
        lambda: client.set_tag(missing, "a//b", "v"),
    ):
        with pytest.raises(MlflowException) as err:
            call()
        assert err.value.error_code == "INVALID_PARAMETER_VALUE"
    # Over-long values are truncated, not refused, so the missing run is what is reported.
    for call in (
        lambda: client.log_param(missing, "k", "x" * 7000),
        lambda: client.set_tag(missing, "k", "x" * 9000),
    ):
        with pytest.raises(MlflowException) as err:
            call()
        assert err.value.error_code == "RESOURCE_DOES_NOT_EXIST"


def test_search_datasets_says_how_many_experiments_it_takes(client):
    import requests

    url = f"{client.url}/ajax-api/2.0/mlflow/experiments/search-datasets"
    none = requests.post(url, json={"experiment_ids": []}).json()
    assert (none["error_code"], none["message"]) == (
        "INVALID_PARAMETER_VALUE",
        "SearchDatasets request must specify at least one experiment_id.",
    )
    many = requests.post(url, json={"experiment_ids": [str(i) for i in range(21)]}).json()
    assert many["message"] == (
        "SearchDatasets request cannot specify more than 20 experiment_ids. Received 21 experiment_ids."
    )


def test_a_relative_artifact_location_is_made_absolute(client):
    exp = client.create_experiment(f"parity-{uuid.uuid4().hex[:12]}", artifact_location="rel/./dir")
    location = client.get_experiment(exp).artifact_location
    assert location.startswith("/") and location.endswith("/rel/dir"), location


def test_metrics_logged_for_a_logged_model_belong_to_it(client):
    from mlflow.entities import Metric

    exp = experiment(client)
    run = client.create_run(exp).info.run_id
    model = client.create_logged_model(exp, source_run_id=run)
    other = client.create_logged_model(exp, source_run_id=run)
    client.log_metric(run, "acc", 0.5, step=1, timestamp=10, model_id=model.model_id, dataset_name="ds", dataset_digest="d1")
    client.log_batch(
        run,
        metrics=[
            Metric("acc", 0.7, 20, 2, model_id=model.model_id),
            Metric("loss", 0.1, 20, 2, model_id=model.model_id, dataset_name="ds2", dataset_digest="d2"),
        ],
    )
    got = client.get_logged_model(model.model_id).metrics
    assert [(m.key, m.value, m.step, m.dataset_name, m.dataset_digest, m.run_id) for m in got] == [
        ("acc", 0.5, 1, "ds", "d1", run),
        ("acc", 0.7, 2, None, None, run),
        ("loss", 0.1, 2, "ds2", "d2", run),
    ]
    assert client.get_run(run).data.metrics == {"acc": 0.7, "loss": 0.1}
    assert client.get_logged_model(other.model_id).metrics == []

    def found(datasets):
        return [m.model_id for m in client.search_logged_models([exp], datasets=datasets)]

    assert found([{"dataset_name": "ds", "dataset_digest": "d1"}]) == [model.model_id]
    assert found([{"dataset_name": "ds2", "dataset_digest": "d2"}, {"dataset_name": "nope", "dataset_digest": "x"}]) == [model.model_id]
    assert found([{"dataset_name": "ds", "dataset_digest": "zz"}]) == []
    # A name without its digest matches only metrics logged without a digest.
    assert found([{"dataset_name": "ds"}]) == []


def test_a_parent_that_does_not_exist_is_kept_as_given(client):
    exp = experiment(client)
    missing = "f" * 32
    orphan = client.create_run(exp, tags={"mlflow.parentRunId": missing}).info.run_id
    assert client.get_run(orphan).data.tags["mlflow.parentRunId"] == missing
    top = client.create_run(exp).info.run_id
    child = client.create_run(exp, tags={"mlflow.parentRunId": top}).info.run_id
    client.set_tag(child, "mlflow.parentRunId", missing)
    assert client.get_run(child).data.tags["mlflow.parentRunId"] == missing
    # Newest first: the child, then the orphan.
    assert ids(client.search_runs([exp], f"tags.mlflow.parentRunId = '{missing}'")) == [child, orphan]


def test_logged_models_are_ordered_as_asked(client):
    exp = experiment(client)
    run = client.create_run(exp).info.run_id
    models = {}
    for name, acc in (("bravo", 0.2), ("alpha", 0.9), ("charlie", None)):
        m = client.create_logged_model(exp, name=name, source_run_id=run)
        models[m.model_id] = name
        if acc is not None:
            client.log_metric(run, "acc", acc, timestamp=1, model_id=m.model_id, dataset_name="ds", dataset_digest="d")

    def names(order_by):
        return [models[m.model_id] for m in client.search_logged_models([exp], order_by=order_by)]

    assert names([{"field_name": "name", "ascending": True}]) == ["alpha", "bravo", "charlie"]
    assert names([{"field_name": "name", "ascending": False}]) == ["charlie", "bravo", "alpha"]
    # By a metric's latest value, models without it last, in both directions.
    assert names([{"field_name": "metrics.acc", "ascending": False}]) == ["alpha", "bravo", "charlie"]
    assert names([{"field_name": "metrics.acc", "ascending": True}]) == ["bravo", "alpha", "charlie"]
    # No model has the metric on that dataset: the default order (newest first) decides.
    assert names([{"field_name": "metrics.acc", "ascending": True, "dataset_name": "other"}]) == names([])
    with pytest.raises(MlflowException) as err:
        names([{"field_name": "params.x"}])
    assert err.value.error_code == "INVALID_PARAMETER_VALUE"


def test_the_client_sees_the_version_it_was_built_for(client):
    """`/version` is the MLflow version whose API the server serves; the client gates its
    code paths on it (spans over OTLP need 3.4 or later), so Arbor reports the one it
    matches, as `mlflow server` reports its own."""
    import mlflow
    from mlflow.store.tracking.rest_store import RestStore
    from mlflow.utils.rest_utils import MlflowHostCreds
    from packaging.version import Version

    RestStore._get_server_version.cache_clear()
    seen = RestStore._get_server_version(MlflowHostCreds(client.url))
    assert seen == Version(mlflow.__version__)
    assert seen >= Version("3.4")


def test_values_of_the_wrong_type_are_refused_in_mlflows_words(mlflow_server, server):
    """Each JSON type (string, integer, float, bool, list, object) in a field of each
    kind (string, int64, double, enum, list of strings, list of objects): wherever
    `mlflow server` refuses the value's type, Arbor refuses it with the same status and
    message, and Arbor never answers a type error with a 5xx (MLflow does for some
    lists and objects, and takes some values it cannot use; see docs/reference/mlflow-compatibility.md)."""
    import json
    import urllib.error
    import urllib.request

    def post(base, path, body):
        req = urllib.request.Request(
            base + path,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(req) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            text = e.read()
            try:
                return e.code, json.loads(text)
            except ValueError:
                return e.code, text.decode(errors="replace")

    def run_in(base):
        _, created = post(base, "/api/2.0/mlflow/experiments/create", {"name": f"types-{uuid.uuid4().hex[:8]}"})
        _, run = post(base, "/api/2.0/mlflow/runs/create", {"experiment_id": created["experiment_id"]})
        return run["run"]["info"]["run_id"]

    bases = {"mlflow": mlflow_server, "arbor": f"http://{server.address}"}
    runs = {name: run_in(base) for name, base in bases.items()}
    values = {"string": "foo", "int": 9, "float": 9.0, "bool": True, "list": [1, "a"], "object": {"b": 1, "a": [2.5]}}
    fields = [
        ("/api/2.0/mlflow/experiments/create", "artifact_location", lambda run: {"name": f"t-{uuid.uuid4().hex[:8]}"}),
        ("/api/2.0/mlflow/runs/set-tag", "value", lambda run: {"run_id": run, "key": "k"}),
        ("/api/2.0/mlflow/runs/log-metric", "step", lambda run: {"run_id": run, "key": "k", "value": 1, "timestamp": 1}),
        ("/api/2.0/mlflow/runs/search", "max_results", lambda run: {"experiment_ids": ["0"]}),
        ("/api/2.0/mlflow/runs/log-metric", "value", lambda run: {"run_id": run, "key": "k", "timestamp": 1}),
        ("/api/2.0/mlflow/runs/update", "status", lambda run: {"run_id": run}),
        ("/api/2.0/mlflow/runs/search", "order_by", lambda run: {"experiment_ids": ["0"]}),
        ("/api/2.0/mlflow/runs/log-batch", "metrics", lambda run: {"run_id": run}),
        ("/api/2.0/mlflow/experiments/create", "tags", lambda run: {"name": f"t-{uuid.uuid4().hex[:8]}"}),
    ]
    compared = 0
    for path, field, body in fields:
        for kind, value in values.items():
            answers = {}
            for name, base in bases.items():
                b = body(runs[name])
                b[field] = value
                answers[name] = post(base, path, b)
            theirs, ours = answers["mlflow"], answers["arbor"]
            assert ours[0] < 500, (path, field, kind, ours)
            if theirs[0] == 400 and "Hint: Value was of type" in str(theirs[1]):
                assert ours == (400, theirs[1] | {"error_code": "INVALID_PARAMETER_VALUE"}) or (
                    ours[0] == 400 and ours[1]["message"] == theirs[1]["message"]
                ), (path, field, kind, theirs, ours)
                compared += 1
    assert compared >= 30, compared
