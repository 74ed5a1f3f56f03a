"""Contract test of `StateStore`, run against every implementation."""

import threading
import time

import pytest

from coordinator.domain import Gate, Job, JobKind, JobState, Schedule, ScheduleMode
from coordinator.errors import AlreadyExists, NotFound
from coordinator.state import MemoryState, SqliteState


@pytest.fixture(params=["sqlite", "memory"])
def state(request, tmp_path):
    s = SqliteState(tmp_path / "state.db") if request.param == "sqlite" else MemoryState()
    yield s
    s.close()


def _job(i: int, **kw) -> Job:
    return Job(job_id=f"job-{i}", kind=kw.pop("kind", JobKind.TRAIN), family=kw.pop("family", "f"),
               task=kw.pop("task", f"t{i % 3}"), spec={"n": i}, **kw)


def test_jobs_roundtrip_update_and_idempotent_create(state):
    job, created = state.create_job(_job(1, request_id="r1"))
    assert created and job.state is JobState.QUEUED
    again, created = state.create_job(_job(2, request_id="r1"))
    assert not created and again.job_id == "job-1"
    with pytest.raises(AlreadyExists):
        state.create_job(_job(1))
    got = state.get_job("job-1")
    assert got.spec == {"n": 1} and got.kind is JobKind.TRAIN
    upd = state.update_job("job-1", state=JobState.RUNNING, progress={"step": 3}, metrics={"m": 1.5}, attempts=1)
    assert upd.state is JobState.RUNNING and upd.progress == {"step": 3} and upd.attempts == 1
    assert state.get_job("job-1").metrics == {"m": 1.5}
    with pytest.raises(NotFound):
        state.get_job("nope")
    with pytest.raises(NotFound):
        state.update_job("nope", error="x")


def test_list_filters_and_pagination(state):
    for i in range(25):
        state.create_job(_job(i, kind=JobKind.EVALUATE if i % 5 == 0 else JobKind.TRAIN))
    state.update_job("job-3", state=JobState.SUCCEEDED)
    seen, cursor = [], None
    while True:
        page, cursor = state.list_jobs(limit=7, cursor=cursor)
        seen += [j.job_id for j in page]
        if cursor is None:
            break
    assert seen == [f"job-{i}" for i in reversed(range(25))]
    assert [j.job_id for j in state.list_jobs(states=[JobState.SUCCEEDED])[0]] == ["job-3"]
    assert len(state.list_jobs(kind=JobKind.EVALUATE)[0]) == 5
    assert {j.task for j in state.list_jobs(task="t1", limit=100)[0]} == {"t1"}
    assert state.list_jobs(family="other")[0] == []
    assert [j.job_id for j in state.active_jobs()][:3] == ["job-0", "job-1", "job-2"]
    assert "job-3" not in {j.job_id for j in state.active_jobs()}


def test_events_are_indexed_and_concurrent_appends_are_atomic(state):
    state.create_job(_job(1))
    ev = state.append_event("job-1", "state", state=JobState.RUNNING, job_fields={"state": JobState.RUNNING})
    assert ev.index == 0 and state.get_job("job-1").state is JobState.RUNNING

    def work():
        for k in range(20):
            state.append_event("job-1", "progress", progress={"step": k})

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    evs = state.events("job-1")
    assert [e.index for e in evs] == list(range(81)) and state.get_job("job-1").event_count == 81
    assert [e.index for e in state.events("job-1", from_index=79)] == [79, 80]
    assert evs[0].state is JobState.RUNNING and evs[1].progress["step"] >= 0
    with pytest.raises(NotFound):
        state.events("nope")


def test_steps_and_schedules(state):
    state.create_job(_job(1))
    assert state.get_step("job-1", "train") is None
    state.put_step("job-1", "train", {"adapter_id": "a"})
    assert state.get_step("job-1", "train") == {"adapter_id": "a"}
    s = Schedule("nightly", "0 2 * * *", "f", ScheduleMode.MERGE, gate=Gate(True, 0.1))
    state.create_schedule(s)
    with pytest.raises(AlreadyExists):
        state.create_schedule(s)
    assert state.get_schedule("nightly").gate == Gate(True, 0.1)
    state.update_schedule("nightly", last_run_at=5.0, last_job_id="job-1")
    assert state.get_schedule("nightly").last_run_at == 5.0
    assert [x.name for x in state.list_schedules("f")] == ["nightly"] and state.list_schedules("g") == []
    assert state.delete_schedule("nightly") and not state.delete_schedule("nightly")
    with pytest.raises(NotFound):
        state.get_schedule("nightly")


def test_sqlite_survives_reopen(tmp_path):
    s = SqliteState(tmp_path / "db.sqlite")
    s.create_job(_job(1))
    s.append_event("job-1", "log", message="hello")
    s.close()
    s2 = SqliteState(tmp_path / "db.sqlite")
    assert s2.get_job("job-1").event_count == 1 and s2.events("job-1")[0].message == "hello"
    s2.close()


def test_sqlite_checkpoints_the_wal_in_the_background(tmp_path):
    """Commits never run SQLite's auto-checkpoint (an fsync stall); a background thread does it."""
    s = SqliteState(tmp_path / "db.sqlite", checkpoint_s=0.05)
    assert s._db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    for i in range(200):
        s.create_job(_job(i))
    deadline = time.monotonic() + 10
    while not (s.last_checkpoint and s.last_checkpoint[1] > 0 and s.last_checkpoint[1] == s.last_checkpoint[2]):
        assert time.monotonic() < deadline, s.last_checkpoint
        time.sleep(0.02)
    s.close()
    assert not (tmp_path / "db.sqlite-wal").exists()  # fully checkpointed on close
    s2 = SqliteState(tmp_path / "db.sqlite")
    assert len(s2.list_jobs(limit=500)[0]) == 200
    s2.close()
