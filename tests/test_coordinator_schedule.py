"""Cron schedules with an injected clock: the run fires, publishes a new merged version with
lineage and promotes it; a gate failure leaves `production` unchanged."""

import json

from coordinator.v1 import coordinator_pb2 as pb
from coordinator.v1 import types_pb2 as t
from tests.fixtures.coordinator import AUTH, start_coordinator, task_spec
from worker.store import Registry


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_nightly_merge_fires_promotes_and_gate_blocks(tmp_path):
    import time

    clock = Clock(time.time())
    scores = {"good_merge": None}

    def metrics(adapter_id: str, dataset: str) -> dict:
        em = 0.9
        good = scores["good_merge"]
        if good and adapter_id.startswith("merge-") and adapter_id != good and dataset == "arith":
            em = 0.5  # the second merge hurts arith by 0.4 > max_drop
        return {"exact_match": em, "eval_loss": 1.0, "n": 8}

    rc = start_coordinator(tmp_path, clock=clock, metrics_fn=metrics)
    try:
        s, sched = rc.stub, rc.coord.scheduler
        reg = Registry(rc.store)
        ids = []
        for task in ("arith", "copy"):
            rc.upload(task)
            ids.append(rc.wait_job(s.SubmitTask(pb.SubmitTaskRequest(spec=task_spec(task)), metadata=AUTH).job_id).adapter_id)
        created = s.CreateSchedule(pb.CreateScheduleRequest(
            name="nightly", cron="0 2 * * *", family="fam", mode=t.SCHEDULE_MODE_MERGE, method="sum_b",
            gate=t.Gate(enabled=True, max_drop=0.05)), metadata=AUTH)
        assert created.next_run_at.endswith("02:00:00.000Z")
        assert sched.tick() == []  # not due yet
        first_fire = rc.coord.engine.state.get_schedule("nightly").next_run_at
        clock.now = first_fire + 1
        fired = sched.tick()
        assert len(fired) == 1 and sched.tick() == []  # fires once
        job = rc.wait_job(fired[0].job_id)
        assert job.state == t.JOB_STATE_SUCCEEDED, job.error
        res = json.loads(job.result_json)
        assert res["promoted"] and sorted(res["inputs"]) == sorted(ids)
        first = reg.get(res["adapter_id"])
        assert first.version == 1 and sorted(first.parents) == sorted(ids)
        assert reg.get_pointer("fam", "production") == first.adapter_id

        # A new task arrives; the next night's merge hurts arith: gate fails, production unchanged.
        rc.upload("capital")
        new = rc.wait_job(s.SubmitTask(pb.SubmitTaskRequest(spec=task_spec("capital")), metadata=AUTH).job_id)
        scores["good_merge"] = first.adapter_id
        clock.now = rc.coord.engine.state.get_schedule("nightly").next_run_at + 1
        fired = sched.tick()
        assert len(fired) == 1
        job2 = rc.wait_job(fired[0].job_id)
        assert job2.state == t.JOB_STATE_SUCCEEDED, job2.error
        res2 = json.loads(job2.result_json)
        assert res2["inputs"] == [first.adapter_id, new.adapter_id]
        assert not res2["promoted"] and res2["gate"]["failed_tasks"] == ["arith"]
        second = reg.get(res2["adapter_id"])
        assert second.version == 2 and list(second.parents) == [first.adapter_id, new.adapter_id]
        lineage = {e.adapter_id for e in reg.lineage(second.adapter_id)}
        assert lineage >= set(ids) | {first.adapter_id, new.adapter_id}
        assert reg.get_pointer("fam", "production") == first.adapter_id  # unchanged
        listed = s.ListSchedules(pb.ListSchedulesRequest(family="fam"), metadata=AUTH).schedules
        assert listed[0].last_job_id == job2.job_id

        # Nothing new: a manual trigger is a no-op run; delete works.
        job3 = rc.wait_job(s.TriggerSchedule(pb.TriggerScheduleRequest(name="nightly"), metadata=AUTH).job_id)
        assert json.loads(job3.result_json).get("skipped")
        assert s.DeleteSchedule(pb.DeleteScheduleRequest(name="nightly"), metadata=AUTH).deleted
    finally:
        rc.channel.close()
        rc.coord.stop(grace=0.5)
