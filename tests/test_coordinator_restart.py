"""Kill the coordinator process mid-job and restart it: the job completes exactly once, its adapter
is published once (resumed from its checkpoint), and a job still queued at the crash runs."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from coordinator.v1 import coordinator_pb2 as pb
from coordinator.v1 import coordinator_pb2_grpc
from coordinator.v1 import types_pb2 as t
from tests.fixtures.coordinator import AUTH, TOKEN, task_spec
from worker.store import adapter_ids, open_store, read_manifest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(tmp_path, port):
    cfg = tmp_path / "coordinator.yaml"
    cfg.write_text(f"executor: simulated\nsim_steps: 12\nsim_step_s: 0.25\nmax_active_jobs: 1\n"
                   f"store_url: {tmp_path / 'store'}\ndb: {tmp_path / 'state.db'}\n")
    env = {**os.environ, "LORI_AUTH_TOKENS": f"other,{TOKEN}"}
    log = open(tmp_path / "server.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "coordinator.cli", "serve", "--config", str(cfg),
                             "--port", str(port)], env=env, stdout=log, stderr=log)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            r = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
            if r.status == health_pb2.HealthCheckResponse.SERVING:
                return proc, channel, coordinator_pb2_grpc.CoordinatorStub(channel)
        except grpc.RpcError:
            time.sleep(0.2)
    proc.kill()
    raise TimeoutError((tmp_path / "server.log").read_text())


def test_killed_coordinator_resumes_every_job_exactly_once(tmp_path):
    port = _free_port()
    proc, channel, stub = _start(tmp_path, port)
    try:
        rows = "".join(json.dumps({"prompt": f"{i}", "response": f"{i}"}) + "\n" for i in range(4)).encode()
        stub.UploadDataset(iter([pb.UploadDatasetRequest(name="arith", data=rows)]), metadata=AUTH)
        first = stub.SubmitTask(pb.SubmitTaskRequest(spec=task_spec("arith")), metadata=AUTH)
        second = stub.SubmitTask(pb.SubmitTaskRequest(spec=task_spec("arith")), metadata=AUTH)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # mid-job: a few steps (and checkpoints) done
            job = stub.GetJob(pb.GetJobRequest(job_id=first.job_id), metadata=AUTH)
            if job.progress.step >= 4:
                break
            time.sleep(0.05)
        assert job.state == t.JOB_STATE_RUNNING and job.progress.step < 12
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        channel.close()

        proc, channel, stub = _start(tmp_path, port)
        finals = {}
        deadline = time.monotonic() + 90
        while len(finals) < 2 and time.monotonic() < deadline:
            for j in (first, second):
                job = stub.GetJob(pb.GetJobRequest(job_id=j.job_id), metadata=AUTH)
                if job.state in (t.JOB_STATE_SUCCEEDED, t.JOB_STATE_FAILED, t.JOB_STATE_CANCELLED):
                    finals[j.job_id] = job
            time.sleep(0.1)
        assert all(f.state == t.JOB_STATE_SUCCEEDED for f in finals.values()), finals
        events = list(stub.WatchJob(pb.WatchJobRequest(job_id=first.job_id), metadata=AUTH, timeout=10))
        terminal = [e for e in events if e.type == "state" and e.state == t.JOB_STATE_SUCCEEDED]
        assert len(terminal) == 1  # completed exactly once
        assert any("restarted" in e.message for e in events)
        assert finals[first.job_id].attempts == 2 and finals[second.job_id].attempts == 1
        store = open_store(str(tmp_path / "store"))
        assert sorted(adapter_ids(store)) == sorted([first.job_id, second.job_id])  # published once each
        assert read_manifest(store, first.job_id)["resumed_from"] >= 4  # resumed, not restarted
        assert read_manifest(store, second.job_id)["resumed_from"] == 0
    finally:
        channel.close()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
