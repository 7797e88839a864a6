"""MLflow's own server is the reference: the same runs are logged to `mlflow server`
(SQLite) and to Arbor through the same client, and every search must return the same
runs in the same order from both, or be refused by both."""

import pytest

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException

NAN = float("nan")
RUNS = [
    # name, start, params, metrics, tags, parent index
    ("alpha", 1000, {"lr": "0.01", "batch": "32"}, {"loss": 0.3, "acc": 0.9}, {"team": "vision", "a.b": "x"}, None),
    ("beta-child_1", 2000, {"lr": "0.1"}, {"loss": 0.7, "acc": NAN}, {"team": "nlp"}, 0),
    ("gamma-child_10", 3000, {"lr": "0.01"}, {"my metric": 5.0}, {"my tag": "spaced"}, 1),
    ("Delta", 4000, {}, {"loss": NAN}, {}, None),
    ("eps", 5000, {"lr": "0.001", "batch": "64"}, {"loss": 0.3, "acc": 0.1}, {"team": "vision"}, None),
    ("zeta", 6000, {"lr": "0.01"}, {"loss": -1.5, "acc": float("inf")}, {"team": "Vision"}, 4),
]

FILTERS = [
    "",
    "params.lr = '0.01'",
    "params.lr != '0.01'",
    "params.lr LIKE '0.0%'",
    "params.lr ILIKE '0.1'",
    "params.batch IS NULL",
    "params.batch IS NOT NULL",
    "metrics.loss < 0.5",
    "metrics.loss <= 0.3",
    "metrics.loss > 0.3",
    "metrics.loss != 0.3",
    "metrics.loss = 0",
    "metrics.acc > 0.5",
    "metrics.acc >= 1e308",
    "metrics.`my metric` = 5",
    "tags.team = 'vision'",
    "tags.team LIKE 'v%'",
    "tags.team ILIKE 'v%'",
    "tags.team != 'vision'",
    "tags.`a.b` = 'x'",
    "tags.\"my tag\" = 'spaced'",
    "tags.mlflow.runName ILIKE '%child_1%'",
    "attributes.run_name = 'alpha'",
    "run_name LIKE '%a'",
    "attributes.status = 'FINISHED'",
    "attributes.start_time > 2500",
    "created >= 2000 AND params.lr = '0.01'",
    "params.lr = '0.01' and metrics.loss < 0.5",
]

ORDERS = [
    [],
    ["metrics.loss ASC"],
    ["metrics.loss DESC"],
    ["metrics.acc DESC"],
    ["params.lr DESC"],
    ["params.lr ASC", "start_time ASC"],
    ["attributes.run_name"],
    ["tags.team ASC"],
    ["metrics.loss ASC", "params.batch DESC"],
]

REFUSED = [
    "params.lr = '0.01' OR params.lr = '0.1'",
    "metrics.loss LIKE '0.5'",
    "params.lr < '1'",
    "status IN ('RUNNING')",
    "params.lr = 0.01",
    "attributes.lifecycle_stage = 'active'",
]


def populate(client):
    exp = client.create_experiment("reference")
    ids = []
    for name, start, params, metrics, tags, parent in RUNS:
        run_tags = dict(tags)
        if parent is not None:
            run_tags["mlflow.parentRunId"] = ids[parent]
        run = client.create_run(exp, start_time=start, tags=run_tags, run_name=name)
        client.log_batch(
            run.info.run_id,
            metrics=[Metric(k, v, 1, 0) for k, v in metrics.items()],
            params=[Param(k, v) for k, v in params.items()],
        )
        if name in ("alpha", "gamma-child_10"):
            client.set_terminated(run.info.run_id, "FINISHED")
        ids.append(run.info.run_id)
    return exp


def names(client, exp, filter_string, order_by):
    return [r.info.run_name for r in client.search_runs([exp], filter_string=filter_string, order_by=order_by, max_results=1000)]


def test_search_results_match_mlflow_server(server, mlflow_server, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    ours = MlflowClient(f"http://{server.address}")
    theirs = MlflowClient(mlflow_server)
    exp_ours, exp_theirs = populate(ours), populate(theirs)
    mismatches = []
    for f in FILTERS:
        for order in ORDERS:
            want = names(theirs, exp_theirs, f, order)
            got = names(ours, exp_ours, f, order)
            if got != want:
                mismatches.append(f"filter={f!r} order_by={order}: mlflow {want}, arbor {got}")
    assert not mismatches, "\n".join(mismatches)
    for f in REFUSED:
        for client, exp in ((theirs, exp_theirs), (ours, exp_ours)):
            with pytest.raises(MlflowException) as err:
                names(client, exp, f, [])
            assert err.value.error_code == "INVALID_PARAMETER_VALUE", f


GET_RUN = """query GetRun($data: MlflowGetRunInput!) {
  mlflowGetRun(input: $data) {
    __typename
    apiError { __typename code message }
    run {
      __typename
      info { __typename runName status experimentId endTime lifecycleStage startTime userId }
      experiment { __typename name lifecycleStage tags { __typename key value } }
      data {
        __typename
        metrics { __typename key value step timestamp }
        params { __typename key value }
      }
      inputs { __typename datasetInputs { __typename dataset { __typename name } } }
    }
  }
}"""


def project(ours, theirs):
    """Our answer cut down to the fields the reference answered (Arbor answers whole
    objects; a GraphQL engine answers only what was selected)."""
    if isinstance(theirs, dict) and isinstance(ours, dict):
        return {k: project(ours.get(k), v) for k, v in theirs.items()}
    if isinstance(theirs, list) and isinstance(ours, list) and len(ours) == len(theirs):
        return [project(o, t) for o, t in zip(ours, theirs)]
    return ours


def test_graphql_get_run_matches_mlflow_server(server, mlflow_server, monkeypatch):
    import requests

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    answers = []
    for url in (mlflow_server, f"http://{server.address}"):
        client = MlflowClient(url)
        exp = client.create_experiment(f"graphql-{len(answers)}-{url.rsplit(':', 1)[1]}")
        run = client.create_run(exp, start_time=1234, run_name="gql", tags={"team": "t"}).info.run_id
        client.log_batch(run, metrics=[Metric("loss", 0.5, 7, 3), Metric("nan", NAN, 7, 3)], params=[Param("lr", "0.1")])
        client.set_terminated(run, "FINISHED", end_time=5678)
        for variables in ({"data": {"runId": run}}, {"data": {"runId": "0" * 32}}):
            got = requests.post(f"{url}/graphql", json={"query": GET_RUN, "variables": variables, "operationName": "GetRun"})
            assert got.status_code == 200, got.text
            answers.append(got.json())
    theirs_ok, theirs_missing, ours_ok, ours_missing = answers
    for a in (ours_ok, theirs_ok):
        run = a["data"]["mlflowGetRun"]["run"]
        run["info"].pop("experimentId")
        run["experiment"].pop("name")
        run["data"]["metrics"].sort(key=lambda m: m["key"])
    assert project(ours_ok, theirs_ok) == theirs_ok
    # A missing run: the field is null and `errors` holds the message, on both.
    assert ours_missing == theirs_missing
