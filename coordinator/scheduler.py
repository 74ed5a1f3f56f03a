"""Cron schedules of continual-update runs, with an injectable clock.

A due schedule becomes one SCHEDULED job whose request id is `schedule:<name>:<fire time>`, so a
tick repeated after a crash never starts the same run twice. The job's window is
(`last_run_at`, fire time]; `last_run_at` moves to the fire time only when the run succeeds, so a
failed run's adapters are picked up again by the next one. Cron expressions are evaluated in UTC.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone

from croniter import croniter

from .domain import Job, JobKind, JobState, Schedule
from .engine import Engine
from .errors import InvalidArgument

log = logging.getLogger("coordinator.scheduler")


def check_cron(expr: object, field: str = "cron") -> str:
    if not isinstance(expr, str) or not expr.strip() or len(expr) > 256:
        raise InvalidArgument(field, f"must be a five-field cron expression, got {expr!r}")
    if len(expr.split()) != 5 or not croniter.is_valid(expr):
        raise InvalidArgument(field, f"{expr!r} is not a valid five-field cron expression")
    return expr


def next_fire(expr: str, after: float) -> float:
    return croniter(expr, datetime.fromtimestamp(after, timezone.utc)).get_next(float)


class Scheduler:
    """Fires due schedules into the engine. `tick()` is the whole logic; `start()` loops it."""

    def __init__(self, engine: Engine, clock: Callable[[], float] = time.time, max_sleep_s: float = 30.0) -> None:
        self.engine, self.state, self.clock = engine, engine.state, clock
        self.max_sleep_s = max_sleep_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()

    def create(self, schedule: Schedule) -> Schedule:
        check_cron(schedule.cron)
        schedule.next_run_at = next_fire(schedule.cron, self.clock())
        out = self.state.create_schedule(schedule)
        self._wake.set()
        return out

    def job_spec(self, s: Schedule, fire_at: float) -> dict:
        return {"schedule": s.name, "family": s.family, "mode": s.mode.value, "method": s.method,
                "spec": s.spec, "gate": {"enabled": s.gate.enabled, "max_drop": s.gate.max_drop,
                                         "metric": s.gate.metric},
                "pointer": s.pointer, "since": s.last_run_at or 0.0, "until": fire_at}

    def trigger(self, name: str, fire_at: float | None = None) -> Job:
        """Start one run of schedule `name` now (or for the cron time `fire_at`)."""
        self._sync_last_run(self.state.get_schedule(name))
        s = self.state.get_schedule(name)
        manual = fire_at is None
        fire_at = self.clock() if fire_at is None else fire_at
        rid = f"schedule:{name}:{'manual:' if manual else ''}{fire_at:.3f}"
        job = self.engine.submit(JobKind.SCHEDULED, self.job_spec(s, fire_at), family=s.family,
                                 task=s.name, request_id=rid)
        self.state.update_schedule(name, last_job_id=job.job_id)
        return job

    def _sync_last_run(self, s: Schedule) -> None:
        """Move `last_run_at` to the window end of the schedule's last successful run."""
        if not s.last_job_id:
            return
        try:
            job = self.state.get_job(s.last_job_id)
        except KeyError:
            return
        if job.state is JobState.SUCCEEDED:
            until = float(job.spec.get("until") or 0.0)
            if until > (s.last_run_at or 0.0):
                self.state.update_schedule(s.name, last_run_at=until)

    def tick(self) -> list[Job]:
        """Fire every due schedule once; return the jobs started."""
        now = self.clock()
        fired = []
        for s in self.state.list_schedules():
            self._sync_last_run(s)
            if s.next_run_at is None or s.next_run_at > now:
                continue
            try:
                fired.append(self.trigger(s.name, fire_at=s.next_run_at))
            except Exception:  # noqa: BLE001 - one bad schedule must not stop the others
                log.exception("schedule %s could not fire", s.name)
            self.state.update_schedule(s.name, next_run_at=next_fire(s.cron, now))
        return fired

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, daemon=True, name="scheduler")
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # noqa: BLE001
                log.exception("scheduler tick failed")
            due = [s.next_run_at for s in self.state.list_schedules() if s.next_run_at]
            sleep = min([self.max_sleep_s] + [max(0.05, d - self.clock()) for d in due])
            self._wake.wait(sleep)
            self._wake.clear()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(2.0)
