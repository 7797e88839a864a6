"""`arbor serve --auth`: every surface refuses anonymous callers, permissions per
experiment are enforced (searches and streams included), the official mlflow client
works with a username and password and with a token, and mlflow's AuthServiceClient
manages users and permissions unmodified."""

import base64
import json
import os
import subprocess

import grpc
import pytest
import requests

from conftest import Server, arbor_bin

ADMIN_PASSWORD = "admin-pass-123"


def start(tmp_path, *extra):
    return Server(tmp_path / "data", "--auth", "--admin-password", ADMIN_PASSWORD, *extra)


@pytest.fixture
def auth_server(tmp_path):
    s = start(tmp_path)
    yield s
    if s.proc.poll() is None:
        s.stop()


@pytest.fixture
def closed_server(tmp_path):
    """Auth on, and users see nothing they were not granted."""
    s = start(tmp_path, "--auth-default-permission", "NO_PERMISSIONS")
    yield s
    if s.proc.poll() is None:
        s.stop()


def url(server, path):
    return f"http://{server.address}{path}"


def session(user=None, password=None, token=None):
    s = requests.Session()
    s.trust_env = False
    if token:
        s.headers["Authorization"] = f"Bearer {token}"
    elif user:
        s.auth = (user, password)
    return s


ADMIN = lambda: session("admin", ADMIN_PASSWORD)  # noqa: E731


def create_user(server, name, password):
    r = ADMIN().post(url(server, "/api/2.0/mlflow/users/create"), json={"username": name, "password": password})
    assert r.status_code == 200, r.text
    return r.json()["user"]


def as_user(monkeypatch, server, user=None, password=None, token=None):
    """An mlflow client that sends these credentials, as a user would configure it."""
    from mlflow.tracking import MlflowClient

    for var in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    if token:
        monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", token)
    elif user:
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user)
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    return MlflowClient(tracking_uri=f"http://{server.address}")


def error_code(exc):
    return getattr(exc, "error_code", None) or str(exc)


def test_every_surface_refuses_anonymous_callers(auth_server, arbor_pb):
    """No credentials: 401 with a Basic challenge on REST, the artifact proxy, the SSE
    stream, the change feed and the pages; UNAUTHENTICATED on gRPC; probes stay open."""
    anon = session()
    for method, path in [
        ("GET", "/api/2.0/mlflow/experiments/search?max_results=10"),
        ("POST", "/api/2.0/mlflow/runs/create"),
        ("GET", "/api/2.0/mlflow-artifacts/artifacts?path=0"),
        ("PUT", "/api/2.0/mlflow-artifacts/artifacts/0/x.txt"),
        ("GET", "/api/arbor/v1/stream?experiment_id=0"),
        ("GET", "/api/arbor/v1/backup"),
        ("GET", "/ajax-api/2.0/mlflow/experiments/search"),
        ("GET", "/"),
        ("GET", "/metrics"),
        ("GET", "/version"),
    ]:
        r = anon.request(method, url(auth_server, path))
        assert r.status_code == 401, (path, r.status_code, r.text)
        assert r.headers["WWW-Authenticate"].startswith("Basic"), path
    r = anon.get(url(auth_server, "/api/2.0/mlflow/experiments/search"))
    assert r.json()["error_code"] == "UNAUTHENTICATED"
    wrong = session("admin", "not-the-password").get(url(auth_server, "/api/2.0/mlflow/experiments/search"))
    assert wrong.status_code == 401
    assert anon.get(url(auth_server, "/health")).status_code == 200

    pb, pb_grpc = arbor_pb
    from arbor.v1 import watch_pb2, watch_pb2_grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(auth_server.address) as channel:
        stub = pb_grpc.TrackingServiceStub(channel)
        with pytest.raises(grpc.RpcError) as e:
            stub.SearchExperiments(pb.SearchExperimentsRequest(), timeout=10)
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as e:
            stub.GetRun(pb.GetRunRequest(run_id="x"), timeout=10, metadata=[("authorization", "Bearer arbor_nope_nope")])
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
        feed = watch_pb2_grpc.WatchServiceStub(channel).WatchEvents(watch_pb2.WatchEventsRequest(from_seq=1), timeout=10)
        with pytest.raises(grpc.RpcError) as e:
            next(iter(feed))
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        basic = base64.b64encode(f"admin:{ADMIN_PASSWORD}".encode()).decode()
        found = stub.SearchExperiments(
            pb.SearchExperimentsRequest(), timeout=10, metadata=[("authorization", f"Basic {basic}")]
        )
        assert [e.name for e in found.experiments] == ["Default"]


def test_mlflow_client_with_password_and_with_token(auth_server, monkeypatch, tmp_path):
    """The official client logs a run with MLFLOW_TRACKING_USERNAME/PASSWORD and with
    MLFLOW_TRACKING_TOKEN; a revoked token stops working at once."""
    create_user(auth_server, "alice", "alice-pass-1")
    client = as_user(monkeypatch, auth_server, "alice", "alice-pass-1")
    exp = client.create_experiment("alice-exp")
    run = client.create_run(exp)
    client.log_metric(run.info.run_id, "loss", 0.5, step=1)
    client.log_param(run.info.run_id, "lr", "0.1")
    artifact = tmp_path / "notes.txt"
    artifact.write_text("hello")
    client.log_artifact(run.info.run_id, str(artifact))
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["notes.txt"]

    r = session("alice", "alice-pass-1").post(
        url(auth_server, "/api/arbor/v1/tokens/create"), json={"description": "ci"}
    )
    assert r.status_code == 200, r.text
    token, token_id = r.json()["token"], r.json()["token_id"]
    assert token.startswith("arbor_")
    # Clients that speak only Basic may send the token as the password.
    assert session("alice", token).get(url(auth_server, "/api/2.0/mlflow/users/current")).status_code == 200
    assert session("admin", token).get(url(auth_server, "/api/2.0/mlflow/users/current")).status_code == 401
    listed = session("alice", "alice-pass-1").get(url(auth_server, "/api/arbor/v1/tokens/list")).json()["tokens"]
    assert [t["token_id"] for t in listed] == [token_id]
    assert "token" not in listed[0] and "secret_hash" not in listed[0]

    by_token = as_user(monkeypatch, auth_server, token=token)
    by_token.log_metric(run.info.run_id, "loss", 0.25, step=2)
    history = by_token.get_metric_history(run.info.run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(1, 0.5), (2, 0.25)]

    r = session(token=token).post(url(auth_server, "/api/arbor/v1/tokens/revoke"), json={"token_id": token_id})
    assert r.status_code == 200, r.text
    r = session(token=token).get(url(auth_server, "/api/2.0/mlflow/runs/get"), params={"run_id": run.info.run_id})
    assert r.status_code == 401


def test_auth_service_client_manages_users_and_permissions(auth_server, monkeypatch):
    """mlflow's AuthServiceClient, unmodified: users, passwords, admin flags, and a user's
    permission on an experiment (grant, get, revoke)."""
    from mlflow.exceptions import MlflowException
    from mlflow.server import get_app_client

    as_user(monkeypatch, auth_server, "admin", ADMIN_PASSWORD)
    auth = get_app_client("basic-auth", tracking_uri=f"http://{auth_server.address}")
    user = auth.create_user("bob", "bob-pass-1")
    assert user.username == "bob" and user.is_admin is False
    assert auth.get_user("bob").id == user.id
    with pytest.raises(MlflowException) as e:
        auth.create_user("bob", "again")
    assert "RESOURCE_ALREADY_EXISTS" in str(e.value)

    auth.update_user_password("bob", "bob-pass-2")
    assert session("bob", "bob-pass-1").get(url(auth_server, "/api/2.0/mlflow/users/current")).status_code == 401
    assert session("bob", "bob-pass-2").get(url(auth_server, "/api/2.0/mlflow/users/current")).status_code == 200

    exp = ADMIN().post(url(auth_server, "/api/2.0/mlflow/experiments/create"), json={"name": "shared"}).json()[
        "experiment_id"
    ]
    assert auth.get_user_permission("bob", "experiment", exp).permission == "READ"  # the default
    auth.grant_user_permission("bob", "experiment", exp, "EDIT")
    got = auth.get_user_permission("bob", "experiment", exp)
    assert (got.permission, got.allowed) == ("EDIT", True)
    with pytest.raises(MlflowException):
        auth.grant_user_permission("bob", "experiment", exp, "MANAGE")  # exists: update instead
    with pytest.raises(MlflowException):
        auth.grant_user_permission("bob", "experiment", exp, "SUPERUSER")
    auth.revoke_user_permission("bob", "experiment", exp)
    assert auth.get_user_permission("bob", "experiment", exp).permission == "READ"

    # The 2.0 endpoints of earlier clients answer too.
    s = ADMIN()
    r = s.post(url(auth_server, "/api/2.0/mlflow/experiments/permissions/create"),
               json={"experiment_id": exp, "username": "bob", "permission": "MANAGE"})
    assert r.status_code == 200, r.text
    assert r.json()["experiment_permission"] == {"experiment_id": exp, "user_id": user.id, "permission": "MANAGE"}
    r = s.patch(url(auth_server, "/api/2.0/mlflow/experiments/permissions/update"),
                json={"experiment_id": exp, "username": "bob", "permission": "READ"})
    assert r.status_code == 200, r.text
    r = s.get(url(auth_server, "/api/2.0/mlflow/experiments/permissions/get"),
              params={"experiment_id": exp, "username": "bob"})
    assert r.json()["experiment_permission"]["permission"] == "READ"

    auth.update_user_admin("bob", True)
    assert auth.get_user("bob").is_admin is True
    # A non-admin may not manage users.
    auth.update_user_admin("bob", False)
    r = session("bob", "bob-pass-2").post(url(auth_server, "/api/2.0/mlflow/users/create"),
                                          json={"username": "eve", "password": "x"})
    assert (r.status_code, r.json()["error_code"]) == (403, "PERMISSION_DENIED")
    auth.delete_user("bob")
    with pytest.raises(MlflowException) as e:
        auth.get_user("bob")
    assert "RESOURCE_DOES_NOT_EXIST" in str(e.value)
    assert session("bob", "bob-pass-2").get(url(auth_server, "/api/2.0/mlflow/users/current")).status_code == 401


def test_permission_levels_per_experiment(closed_server, monkeypatch):
    """NO_PERMISSIONS by default: bob sees nothing of alice's experiment; READ lets him
    read but not write; EDIT lets him log but not delete; MANAGE lets him delete and
    grant. The creator manages what they create."""
    create_user(closed_server, "alice", "alice-pass-1")
    create_user(closed_server, "bob", "bob-pass-1")
    alice = as_user(monkeypatch, closed_server, "alice", "alice-pass-1")
    exp = alice.create_experiment("alice-private")
    run = alice.create_run(exp)
    alice.log_metric(run.info.run_id, "acc", 0.9)
    rid = run.info.run_id

    bob = session("bob", "bob-pass-1")
    api = lambda p: url(closed_server, "/api/2.0/mlflow" + p)  # noqa: E731

    def status(r):
        return r.status_code, (r.json().get("error_code") if r.status_code != 200 else None)

    denied = (403, "PERMISSION_DENIED")
    # Nothing leaks: searches leave the experiment out, direct reads are refused.
    names = [e["name"] for e in bob.get(api("/experiments/search")).json().get("experiments", [])]
    assert "alice-private" not in names
    assert status(bob.get(api("/experiments/get"), params={"experiment_id": exp})) == denied
    assert status(bob.get(api("/runs/get"), params={"run_id": rid})) == denied
    assert status(bob.post(api("/runs/search"), json={"experiment_ids": [exp]})) == denied
    assert status(bob.get(api("/metrics/get-history"), params={"run_id": rid, "metric_key": "acc"})) == denied
    assert status(bob.get(url(closed_server, f"/api/2.0/mlflow-artifacts/artifacts?path={exp}"))) == denied
    r = bob.get(url(closed_server, "/api/arbor/v1/stream"), params={"run_id": rid}, stream=True)
    assert status(r) == denied
    # Not his to grant.
    r = bob.post(url(closed_server, "/api/3.0/mlflow/users/permissions/grant"),
                 json={"username": "bob", "resource_type": "experiment", "resource_id": exp, "permission": "READ"})
    assert status(r) == denied

    grant = lambda level: alice_grant(closed_server, exp, "bob", level)  # noqa: E731
    grant("READ")
    assert "alice-private" in [e["name"] for e in bob.get(api("/experiments/search")).json()["experiments"]]
    assert bob.get(api("/runs/get"), params={"run_id": rid}).json()["run"]["info"]["run_id"] == rid
    log = {"run_id": rid, "key": "acc", "value": 0.1, "timestamp": 1, "step": 5}
    assert status(bob.post(api("/runs/log-metric"), json=log)) == denied
    assert status(bob.post(api("/runs/create"), json={"experiment_id": exp})) == denied

    update_grant(closed_server, exp, "bob", "USE")  # reads like READ
    assert bob.get(api("/runs/get"), params={"run_id": rid}).status_code == 200
    assert status(bob.post(api("/runs/log-metric"), json=log)) == denied

    update_grant(closed_server, exp, "bob", "EDIT")
    assert status(bob.post(api("/runs/log-metric"), json=log)) == (200, None)
    assert status(bob.post(api("/runs/create"), json={"experiment_id": exp})) == (200, None)
    assert status(bob.post(api("/runs/delete"), json={"run_id": rid})) == denied
    assert status(bob.post(api("/experiments/delete"), json={"experiment_id": exp})) == denied

    update_grant(closed_server, exp, "bob", "MANAGE")
    assert status(bob.post(api("/runs/delete"), json={"run_id": rid})) == (200, None)
    assert status(bob.post(api("/runs/restore"), json={"run_id": rid})) == (200, None)

    # Bob creates his own experiment and manages it; alice (no grant) cannot see it.
    mine = bob.post(api("/experiments/create"), json={"name": "bob-own"}).json()["experiment_id"]
    a = session("alice", "alice-pass-1")
    assert status(a.get(api("/experiments/get"), params={"experiment_id": mine})) == denied
    r = bob.get(url(closed_server, "/api/3.0/mlflow/users/permissions/get"),
                params={"username": "bob", "resource_type": "experiment", "resource_id": mine})
    assert r.json() == {"allowed": True, "permission": "MANAGE"}


def alice_grant(server, exp, user, level):
    r = session("alice", "alice-pass-1").post(
        url(server, "/api/3.0/mlflow/users/permissions/grant"),
        json={"username": user, "resource_type": "experiment", "resource_id": exp, "permission": level},
    )
    assert r.status_code == 200, r.text


def update_grant(server, exp, user, level):
    r = session("alice", "alice-pass-1").patch(
        url(server, "/api/2.0/mlflow/experiments/permissions/update"),
        json={"experiment_id": exp, "username": user, "permission": level},
    )
    assert r.status_code == 200, r.text


def test_streams_deliver_only_what_the_watcher_may_read(closed_server, arbor_pb):
    """The change feed (gRPC WatchEvents) of a user without grants carries only their
    own experiment's events: not alice's, not users or tokens; an admin's carries
    everything with the actor of each event and without password hashes."""
    pb, pb_grpc = arbor_pb
    from arbor.v1 import watch_pb2, watch_pb2_grpc

    create_user(closed_server, "alice", "alice-pass-1")
    create_user(closed_server, "bob", "bob-pass-1")

    def meta(user, password):
        return [("authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())]

    alice, bob = meta("alice", "alice-pass-1"), meta("bob", "bob-pass-1")
    with grpc.insecure_channel(closed_server.address) as channel:
        stub = pb_grpc.TrackingServiceStub(channel)
        a_exp = stub.CreateExperiment(pb.CreateExperimentRequest(name="a"), timeout=10, metadata=alice).experiment_id
        a_run = stub.CreateRun(pb.CreateRunRequest(experiment_id=a_exp), timeout=10, metadata=alice).run.info.run_id
        stub.LogMetric(pb.LogMetricRequest(run_id=a_run, key="secret", value=1.0, timestamp=1), timeout=10, metadata=alice)
        b_exp = stub.CreateExperiment(pb.CreateExperimentRequest(name="b"), timeout=10, metadata=bob).experiment_id
        b_run = stub.CreateRun(pb.CreateRunRequest(experiment_id=b_exp), timeout=10, metadata=bob).run.info.run_id
        stub.SetTag(pb.SetTagRequest(run_id=b_run, key="last", value="1"), timeout=10, metadata=bob)

        watch = watch_pb2_grpc.WatchServiceStub(channel)
        with pytest.raises(grpc.RpcError) as e:
            next(iter(watch.WatchMetrics(watch_pb2.WatchMetricsRequest(run_id=a_run, from_seq=1), timeout=10, metadata=bob)))
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED

        def read_until_last(metadata):
            seen = []
            for ev in watch.WatchEvents(watch_pb2.WatchEventsRequest(from_seq=1), timeout=30, metadata=metadata):
                seen.append(ev)
                if ev.WhichOneof("payload") == "tag_set" and ev.tag_set.run_id == b_run:
                    return seen
            raise AssertionError("the feed ended early")

        bob_feed = read_until_last(bob)
        kinds = {ev.WhichOneof("payload") for ev in bob_feed}
        assert not kinds & {"user_created", "token_issued", "user_password_changed"}
        text = " ".join(str(ev) for ev in bob_feed)
        assert a_run not in text and f'experiment_id: "{a_exp}"' not in text
        assert b_run in text

        admin_feed = read_until_last(meta("admin", ADMIN_PASSWORD))
        users = [ev.user_created for ev in admin_feed if ev.WhichOneof("payload") == "user_created"]
        assert [u.username for u in users] == ["admin", "alice", "bob"]
        assert all(u.password_hash == "" for u in users)
        actors = {ev.WhichOneof("payload") + ":" + ev.actor for ev in admin_feed
                  if ev.WhichOneof("payload") in ("metrics_logged", "tag_set")}
        assert actors == {"metrics_logged:alice", "tag_set:bob"}
        grants = [ev.experiment_permission_set for ev in admin_feed
                  if ev.WhichOneof("payload") == "experiment_permission_set"]
        assert {(g.experiment_id, g.username, g.permission) for g in grants} == {(a_exp, "alice", "MANAGE"), (b_exp, "bob", "MANAGE")}


def test_users_survive_restart_rebuild_and_admin_cli(tmp_path):
    """Users, tokens and grants are events: they survive a restart and `arbor rebuild`;
    `arbor admin` creates users on a stopped store and issues tokens online; a server
    with --auth and no way to make an admin refuses to start."""
    data = tmp_path / "data"
    refused = subprocess.run([arbor_bin(), "serve", "--auth", "--listen", "127.0.0.1:0", "--data-dir", str(data)],
                             capture_output=True, text=True, timeout=60,
                             env={k: v for k, v in os.environ.items() if not k.startswith("ARBOR_ADMIN")})
    assert refused.returncode != 0
    assert "ARBOR_ADMIN_PASSWORD" in refused.stderr

    s = Server(data, "--auth", "--admin-password", ADMIN_PASSWORD)
    create_user(s, "carol", "carol-pass-1")
    assert s.stop() == 0

    env = {**os.environ, "ARBOR_NEW_PASSWORD": "dave-pass-1"}
    out = subprocess.run([arbor_bin(), "admin", "--data-dir", str(data), "create-user", "dave"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    rebuilt = subprocess.run([arbor_bin(), "rebuild", "--data-dir", str(data)], capture_output=True, text=True, timeout=120)
    assert rebuilt.returncode == 0, rebuilt.stderr
    checked = subprocess.run([arbor_bin(), "check", "--data-dir", str(data)], capture_output=True, text=True, timeout=120)
    assert checked.returncode == 0, checked.stdout + checked.stderr

    s = Server(data, "--auth")  # no admin password needed now
    try:
        for user, password in [("admin", ADMIN_PASSWORD), ("carol", "carol-pass-1"), ("dave", "dave-pass-1")]:
            r = session(user, password).get(url(s, "/api/2.0/mlflow/users/current"))
            assert r.status_code == 200 and r.json()["user"]["username"] == user
        env = {**os.environ, "ARBOR_USERNAME": "admin", "ARBOR_PASSWORD": ADMIN_PASSWORD}
        issued = subprocess.run([arbor_bin(), "admin", "--server", f"http://{s.address}", "issue-token", "dave",
                                 "--description", "cli"], capture_output=True, text=True, env=env, timeout=60)
        assert issued.returncode == 0, issued.stderr
        token = issued.stdout.strip()
        r = session(token=token).get(url(s, "/api/2.0/mlflow/users/current"))
        assert r.json()["user"]["username"] == "dave"
        listed = subprocess.run([arbor_bin(), "admin", "--server", f"http://{s.address}", "list-users"],
                                capture_output=True, text=True, env=env, timeout=60)
        assert listed.stdout.split() == ["admin", "admin", "carol", "user", "dave", "user"]
    finally:
        s.stop()
