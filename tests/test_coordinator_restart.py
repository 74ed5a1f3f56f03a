"""Kill the coordinator process mid-job and restart it: the job completes exactly once, its adapter
is published once (resumed from its checkpoint), and a job still queued at the crash runs.

Two variants: the simulated executor (fast; also covers a job still queued at the crash), and a
real `lori serve` process training the tiny model through the worker's JobRunner on the
`ray_cluster` fixture's Ray (checkpoints in a LocalStore).
"""

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from coordinator.v1 import coordinator_pb2 as pb
from coordinator.v1 import coordinator_pb2_grpc
from coordinator.v1 import types_pb2 as t
from tests.fixtures.coordinator import AUTH, TOKEN, task_spec
from worker.checkpoints import list_checkpoints
from worker.store import adapter_ids, open_store, read_manifest

TERMINAL = (t.JOB_STATE_SUCCEEDED, t.JOB_STATE_FAILED, t.JOB_STATE_CANCELLED)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(tmp_path, port, config: str = "executor: simulated\nsim_steps: 12\nsim_step_s: 0.25\n"):
    cfg = tmp_path / "coordinator.yaml"
    cfg.write_text(f"{config}max_active_jobs: 1\nstore_url: {tmp_path / 'store'}\ndb: {tmp_path / 'state.db'}\n")
    root = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "LORI_AUTH_TOKENS": f"other,{TOKEN}", "RAY_AUTH_MODE": "disabled",
           "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
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


def _start_events(db: Path, job_id: str) -> list[dict]:
    """The worker's "start" progress events of a job, read from the coordinator's SQLite database."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        rows = con.execute("SELECT progress FROM events WHERE job_id=? AND type='progress' ORDER BY idx",
                           (job_id,)).fetchall()
    return [p for (raw,) in rows if raw and (p := json.loads(raw)).get("phase") == "start"]


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] not in "ZX"
    except (FileNotFoundError, IndexError):
        return False


def test_killed_coordinator_resumes_a_real_ray_job_from_its_checkpoint(tmp_path, ray_cluster, tiny_model_dir,
                                                                       tiny_task_data):
    """SIGKILL a real coordinator (Ray executor) while the tiny model trains, after a checkpoint.

    What happens (and is asserted): the killed coordinator was the Ray driver that owned the job's
    task, so Ray kills that worker with it (the old worker process is gone); the restarted
    coordinator re-submits the job under the same id, the worker resumes from the newest
    checkpoint in the store (not step 0), publishes adapter id = job id once, and the job reaches
    SUCCEEDED exactly once.
    """
    port = _free_port()
    config = f"executor: ray\nray_address: {ray_cluster.address}\n"
    proc, channel, stub = _start(tmp_path, port, config)
    store = open_store(str(tmp_path / "store"))
    dense = sparse = 60
    try:
        data = Path(tiny_task_data.train_path).read_bytes()
        stub.UploadDataset(iter([pb.UploadDatasetRequest(name="copy", split=t.DATASET_SPLIT_TRAIN, data=data),
                                 pb.UploadDatasetRequest(split=t.DATASET_SPLIT_EVAL,
                                                         data=Path(tiny_task_data.eval_path).read_bytes())]),
                           metadata=AUTH)
        spec = t.TaskSpec(base_model=tiny_model_dir, task="copy", family="fam", dataset="copy",
                          lori=t.LoriParams(rank=4, projection_seed=7, sparsity=0.5),
                          training=t.TrainingParams(dense_steps=dense, sparse_steps=sparse, batch_size=4,
                                                    dense_lr=1e-2, sparse_lr=1e-2, max_length=32,
                                                    eval_max_new_tokens=4),
                          checkpoint_every=5, num_cpus=1)
        job = stub.SubmitTask(pb.SubmitTaskRequest(spec=spec, request_id="real-restart"), metadata=AUTH)
        deadline = time.monotonic() + 60
        while not list_checkpoints(store, job.job_id):  # mid-run: at least one checkpoint written
            assert time.monotonic() < deadline, (tmp_path / "server.log").read_text()[-3000:]
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        channel.close()
        first_ckpt = list_checkpoints(store, job.job_id)[0][0]
        assert 0 < first_ckpt < dense + sparse and not adapter_ids(store)  # killed mid-run, nothing published
        (old_start,) = _start_events(tmp_path / "state.db", job.job_id)
        assert old_start["resumed_from"] is None

        proc, channel, stub = _start(tmp_path, port, config)
        again = stub.SubmitTask(pb.SubmitTaskRequest(spec=spec, request_id="real-restart"), metadata=AUTH)
        assert again.job_id == job.job_id  # the request id still maps to the same job
        deadline = time.monotonic() + 90
        while (final := stub.GetJob(pb.GetJobRequest(job_id=job.job_id), metadata=AUTH)).state not in TERMINAL:
            assert time.monotonic() < deadline, (tmp_path / "server.log").read_text()[-3000:]
            time.sleep(0.1)
        assert final.state == t.JOB_STATE_SUCCEEDED, final.error
        assert final.adapter_id == job.job_id and final.attempts == 2
        assert not _alive(old_start["pid"])  # the killed driver's task died with it: no second writer

        events = list(stub.WatchJob(pb.WatchJobRequest(job_id=job.job_id), metadata=AUTH, timeout=10))
        assert [e.state for e in events if e.type == "state" and e.state in TERMINAL] == [t.JOB_STATE_SUCCEEDED]
        assert any("restarted" in e.message for e in events)
        starts = _start_events(tmp_path / "state.db", job.job_id)
        assert len(starts) == 2 and starts[1]["pid"] != old_start["pid"]
        assert first_ckpt <= starts[1]["resumed_from"] < dense + sparse  # resumed, not rerun from step 0

        assert adapter_ids(store) == [job.job_id]  # published once, under the idempotent id
        manifest = read_manifest(store, job.job_id)
        assert manifest["job_id"] == job.job_id and manifest["extra"]["resumed_from"] == starts[1]["resumed_from"]
        assert list(stub.ListJobs(pb.ListJobsRequest(), metadata=AUTH).jobs) == [final]  # one job, one result
    finally:
        channel.close()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
