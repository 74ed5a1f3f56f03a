"""Training jobs on a real local Ray cluster (2 CPUs): parallel jobs, continual update, cancel, kill + resume."""

from __future__ import annotations

import os
import signal
import time

import pytest
import ray
import torch

from worker import JobRunner, JobSpec
from worker.checkpoints import list_checkpoints
from worker.publish import load_adapter
from worker.store import LocalStore, read_manifest, upload_dataset

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def env(ray_cluster, tiny_task_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("worker-store")
    store = LocalStore(root)
    upload_dataset(store, "copy", tiny_task_data.train_path, tiny_task_data.eval_path)
    runner = JobRunner(str(root), ray_address=ray_cluster.address)
    yield store, runner
    runner.shutdown()


def _wait_for(runner, job_id, predicate, timeout=120):
    """Poll until an event satisfies ``predicate``; returns (that event, all events so far)."""
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = runner.poll(job_id)
        seen += status.events
        for e in status.events:
            if predicate(e):
                return e, seen
        assert not status.done, f"job ended early: {status.state} {status.error}"
        time.sleep(0.05)
    raise TimeoutError(f"no matching event for {job_id}")


def test_two_tasks_in_parallel_then_continual(env, tiny_recipe_config):
    store, runner = env
    specs = {
        # long enough dense phases that both overlap even when a worker process must start first
        "job-copy-a": JobSpec(recipe=tiny_recipe_config(task="copy-a", dense_steps=150), dataset="copy",
                              checkpoint_every=50),
        "job-copy-b": JobSpec(recipe=tiny_recipe_config(task="copy-b", seed=1, dense_steps=150), dataset="copy",
                              export_peft=True),
    }
    for job_id, spec in specs.items():
        runner.submit(job_id, spec)
    results = {j: runner.wait(j, timeout=240) for j in specs}
    for job_id, st in results.items():
        assert st.state == "succeeded", st.error
        assert st.result.adapter_id == job_id
        phases = [e["phase"] for e in st.events]
        for phase in ("start", "setup", "dense", "calibrate", "sparse", "eval", "published"):
            assert phase in phases, (job_id, phases)
        steps = [e for e in st.events if e["phase"] == "dense" and e.get("loss") is not None]
        assert steps and all(e["tokens_per_s"] > 0 and e["eta_s"] is not None for e in steps)
        manifest = read_manifest(store, job_id)
        assert manifest["job_id"] == job_id and manifest["kind"] == "lori-s"
        assert manifest["task"] == specs[job_id].recipe.task and manifest["projection_seed"] == 7
        assert manifest["dataset_digest"].startswith("sha256:") and "eval_loss" in manifest["metrics"]
        assert load_adapter(store, job_id).masks is not None
    assert "peft/adapter_config.json" in read_manifest(store, "job-copy-b")["blobs"]
    # both ran at the same time: each started before the other published
    t = {j: {e["phase"]: e["time"] for e in st.events} for j, st in results.items()}
    assert t["job-copy-a"]["start"] < t["job-copy-b"]["published"]
    assert t["job-copy-b"]["start"] < t["job-copy-a"]["published"]

    # continual update on top of copy-a: its coordinates stay bit-identical, lineage recorded
    runner.submit("job-copy-c", JobSpec(recipe=tiny_recipe_config(task="copy-c", seed=2), dataset="copy",
                                        base_adapter_id="job-copy-a"))
    st = runner.wait("job-copy-c", timeout=240)
    assert st.state == "succeeded", st.error
    base, combined = load_adapter(store, "job-copy-a"), load_adapter(store, "job-copy-c")
    manifest = read_manifest(store, "job-copy-c")
    assert manifest["kind"] == "continual" and manifest["parents"] == ["job-copy-a"]
    grew = False
    for name, m in base.masks.items():
        assert torch.equal(combined.b[name][m], base.b[name][m])
        assert bool((combined.masks[name] & m).eq(m).all())
        grew |= bool((combined.masks[name] & ~m).any())
    assert grew

    # re-submitting a finished job id is idempotent: same adapter, no training
    runner.submit("job-copy-a", specs["job-copy-a"])
    again = runner.wait("job-copy-a", timeout=120)
    assert again.state == "succeeded" and again.result.extra.get("already_published")


def test_cancel_stops_promptly_and_frees_cpus(env, tiny_recipe_config):
    _, runner = env
    spec = JobSpec(recipe=tiny_recipe_config(task="long", dense_steps=5000, sparse_steps=1), dataset="copy",
                   num_cpus=2)
    runner.submit("job-cancel", spec)
    _wait_for(runner, "job-cancel", lambda e: e["phase"] == "dense" and e["step"] >= 2)
    t0 = time.monotonic()
    runner.cancel("job-cancel")
    st = runner.wait("job-cancel", timeout=60)
    assert st.state == "cancelled"
    assert time.monotonic() - t0 < 30
    deadline = time.monotonic() + 30
    while ray.available_resources().get("CPU", 0) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ray.available_resources().get("CPU", 0) >= 2


def test_killed_worker_resumes_from_checkpoint(env, tiny_recipe_config):
    store, runner = env
    spec = JobSpec(recipe=tiny_recipe_config(task="resume", dense_steps=80, sparse_steps=20), dataset="copy",
                   checkpoint_every=10, max_retries=2)
    runner.submit("job-resume", spec)
    start, seen = _wait_for(runner, "job-resume", lambda e: e["phase"] == "start")
    _wait_for(runner, "job-resume", lambda e: e["phase"] == "dense" and e["step"] >= 12)
    assert list_checkpoints(store, "job-resume"), "no checkpoint before the kill"
    os.kill(start["pid"], signal.SIGKILL)  # the Ray worker process running the job
    st = runner.wait("job-resume", timeout=240)
    assert st.state == "succeeded", st.error
    starts = [e for e in st.events if e["phase"] == "start"]
    assert starts and starts[-1]["attempt"] == 2 and starts[-1]["resumed_from"] >= 10
    assert starts[-1]["pid"] != start["pid"]
    assert st.result.extra["attempt"] == 2 and st.result.extra["resumed_from"] >= 10
    manifest = read_manifest(store, "job-resume")
    assert manifest["extra"]["resumed_from"] >= 10
    assert load_adapter(store, "job-resume").nnz() > 0
