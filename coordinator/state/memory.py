"""In-memory `StateStore` (tests and throw-away servers); same contract as SQLite, not durable."""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterable
from dataclasses import fields as dc_fields

from ..domain import Job, JobEvent, JobKind, JobState, Schedule, now
from ..errors import AlreadyExists, NotFound
from .base import StateStore

_JOB_FIELDS = {f.name for f in dc_fields(Job)} - {"job_id"}


class MemoryState(StateStore):
    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._jobs: dict[str, tuple[int, Job]] = {}
        self._requests: dict[str, str] = {}
        self._events: dict[str, list[JobEvent]] = {}
        self._steps: dict[tuple[str, str], dict] = {}
        self._schedules: dict[str, Schedule] = {}
        self._seq = 0

    def _job(self, job_id: str) -> Job:
        try:
            return self._jobs[job_id][1]
        except KeyError:
            raise NotFound(f"job {job_id!r} not found") from None

    def _set(self, job_id: str, fields: dict) -> None:
        job = self._job(job_id)
        bad = set(fields) - _JOB_FIELDS
        if bad:
            raise ValueError(f"unknown or read-only job fields: {sorted(bad)}")
        for k, v in fields.items():
            setattr(job, k, copy.deepcopy(v))
        if "updated_at" not in fields:
            job.updated_at = now()

    def create_job(self, job: Job, *, initial_event: bool = False) -> tuple[Job, bool]:
        with self._lock:
            if job.request_id and job.request_id in self._requests:
                return copy.deepcopy(self._job(self._requests[job.request_id])), False
            if job.job_id in self._jobs:
                raise AlreadyExists(f"job {job.job_id!r} already exists")
            self._seq += 1
            self._jobs[job.job_id] = (self._seq, copy.deepcopy(job))
            self._events[job.job_id] = []
            if initial_event:
                stored = self._jobs[job.job_id][1]
                stored.event_count = 1
                self._events[job.job_id].append(JobEvent(job.job_id, 0, job.created_at, "state", job.state))
                job = stored
            if job.request_id:
                self._requests[job.request_id] = job.job_id
            return copy.deepcopy(job), True

    def get_job(self, job_id: str) -> Job:
        with self._lock:
            return copy.deepcopy(self._job(job_id))

    def update_job(self, job_id: str, **fields: object) -> Job:
        with self._lock:
            self._set(job_id, fields)
            return copy.deepcopy(self._job(job_id))

    def list_jobs(self, states: Iterable[JobState] = (), kind: JobKind | None = None, family: str = "",
                  task: str = "", limit: int = 50, cursor: int | None = None) -> tuple[list[Job], int | None]:
        states = {JobState(s) for s in states}
        with self._lock:
            rows = sorted(self._jobs.values(), key=lambda r: -r[0])
            rows = [(seq, j) for seq, j in rows
                    if (not states or j.state in states) and (kind is None or j.kind == kind)
                    and (not family or j.family == family) and (not task or j.task == task)
                    and (cursor is None or seq < cursor)]
            page = rows[:limit]
            nxt = page[-1][0] if len(rows) > limit and page else None
            return [copy.deepcopy(j) for _, j in page], nxt

    def active_jobs(self) -> list[Job]:
        with self._lock:
            rows = sorted(self._jobs.values(), key=lambda r: r[0])
            return [copy.deepcopy(j) for _, j in rows if not j.state.terminal]

    def append_event(self, job_id: str, type: str, *, state: JobState | None = None,
                     progress: dict | None = None, message: str = "", job_fields: dict | None = None) -> JobEvent:
        with self._lock:
            job = self._job(job_id)
            ev = JobEvent(job_id, job.event_count, now(), type, state, copy.deepcopy(progress), message)
            self._set(job_id, {**(job_fields or {}), "event_count": ev.index + 1})
            self._events[job_id].append(ev)
            return ev

    def events(self, job_id: str, from_index: int = 0, limit: int = 1000) -> list[JobEvent]:
        with self._lock:
            self._job(job_id)
            return list(self._events[job_id][max(0, from_index):max(0, from_index) + limit])

    def put_step(self, job_id: str, step: str, result: dict) -> None:
        with self._lock:
            self._steps[(job_id, step)] = copy.deepcopy(result)

    def get_step(self, job_id: str, step: str) -> dict | None:
        with self._lock:
            return copy.deepcopy(self._steps.get((job_id, step)))

    def create_schedule(self, schedule: Schedule) -> Schedule:
        with self._lock:
            if schedule.name in self._schedules:
                raise AlreadyExists(f"schedule {schedule.name!r} already exists")
            self._schedules[schedule.name] = copy.deepcopy(schedule)
            return copy.deepcopy(schedule)

    def get_schedule(self, name: str) -> Schedule:
        with self._lock:
            try:
                return copy.deepcopy(self._schedules[name])
            except KeyError:
                raise NotFound(f"schedule {name!r} not found") from None

    def list_schedules(self, family: str = "") -> list[Schedule]:
        with self._lock:
            return [copy.deepcopy(s) for n, s in sorted(self._schedules.items())
                    if not family or s.family == family]

    def update_schedule(self, name: str, **fields: object) -> Schedule:
        with self._lock:
            s = self._schedules.get(name)
            if s is None:
                raise NotFound(f"schedule {name!r} not found")
            for k, v in fields.items():
                if not hasattr(s, k) or k == "name":
                    raise ValueError(f"unknown or read-only schedule field {k!r}")
                setattr(s, k, copy.deepcopy(v))
            return copy.deepcopy(s)

    def delete_schedule(self, name: str) -> bool:
        with self._lock:
            return self._schedules.pop(name, None) is not None
