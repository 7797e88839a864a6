"""Another language through the contract: a Python client built from proto/ with
grpcio drives a real Arbor server, including health and reflection (v1alpha, the
only version Python's reflection client speaks)."""

import math

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc


def test_tracking_round_trip(server, arbor_pb):
    pb, pb_grpc = arbor_pb
    with grpc.insecure_channel(server.address) as channel:
        grpc.channel_ready_future(channel).result(timeout=10)
        stub = pb_grpc.TrackingServiceStub(channel)

        exp_id = stub.CreateExperiment(pb.CreateExperimentRequest(name="from-python"), timeout=10).experiment_id
        parent = stub.CreateRun(pb.CreateRunRequest(experiment_id=exp_id, run_name="parent"), timeout=10).run
        child = stub.CreateRun(
            pb.CreateRunRequest(
                experiment_id=exp_id,
                tags=[pb.RunTag(key="mlflow.parentRunId", value=parent.info.run_id)],
            ),
            timeout=10,
        ).run
        assert child.info.parent_run_id == parent.info.run_id
        assert child.info.root_run_id == parent.info.run_id
        assert child.info.depth == 1

        metrics = [pb.Metric(key="loss", value=1.0 / (i + 1), timestamp=1000 + i, step=i) for i in range(300)]
        metrics.append(pb.Metric(key="odd", value=float("nan"), timestamp=1, step=-1))
        stub.LogBatch(
            pb.LogBatchRequest(
                run_id=child.info.run_id,
                metrics=metrics,
                params=[pb.Param(key="lr", value="0.01")],
                tags=[pb.RunTag(key="team", value="py")],
            ),
            timeout=10,
        )
        run = stub.GetRun(pb.GetRunRequest(run_id=child.info.run_id), timeout=10).run
        latest = {m.key: m for m in run.data.metrics}
        assert latest["loss"].step == 299
        assert math.isnan(latest["odd"].value)
        assert {p.key: p.value for p in run.data.params} == {"lr": "0.01"}

        points, token = [], ""
        while True:
            page = stub.GetMetricHistory(
                pb.GetMetricHistoryRequest(
                    run_id=child.info.run_id, metric_key="loss", page_token=token, max_results=128
                ),
                timeout=10,
            )
            points.extend(page.metrics)
            token = page.next_page_token
            if not token:
                break
        assert [p.step for p in points] == list(range(300))

        with pytest.raises(grpc.RpcError) as err:
            stub.LogParam(pb.LogParamRequest(run_id=child.info.run_id, key="lr", value="0.02"), timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "Changing param values is not allowed" in err.value.details()

        with pytest.raises(grpc.RpcError) as err:
            stub.GetRun(pb.GetRunRequest(run_id="0" * 32), timeout=10)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND

        with pytest.raises(grpc.RpcError) as err:
            stub.CreateExperiment(pb.CreateExperimentRequest(name="from-python"), timeout=10)
        assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS

        stub.UpdateRun(
            pb.UpdateRunRequest(run_id=child.info.run_id, status=pb.FINISHED, end_time=2000), timeout=10
        )
        stub.DeleteRun(pb.DeleteRunRequest(run_id=child.info.run_id), timeout=10)
        with pytest.raises(grpc.RpcError) as err:
            stub.SetTag(pb.SetTagRequest(run_id=child.info.run_id, key="k", value="v"), timeout=10)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION

        listed = stub.SearchRuns(
            pb.SearchRunsRequest(experiment_ids=[exp_id], run_view_type=pb.ALL), timeout=10
        ).runs
        assert {r.info.run_id for r in listed} == {parent.info.run_id, child.info.run_id}
    assert server.stop() == 0


def test_health_and_reflection(server):
    with grpc.insecure_channel(server.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        resp = health.Check(health_pb2.HealthCheckRequest(service="arbor.v1.TrackingService"), timeout=10)
        assert resp.status == health_pb2.HealthCheckResponse.SERVING

        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        responses = reflection.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10
        )
        names = {s.name for r in responses for s in r.list_services_response.service}
        assert "arbor.v1.TrackingService" in names
        assert "grpc.health.v1.Health" in names
