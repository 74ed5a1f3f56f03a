"""Domain records of the coordinator (plain dataclasses; protobuf stays in `coordinator.serde`)."""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone


class JobState(str, enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})


class JobKind(str, enum.Enum):
    TRAIN = "train"
    FEDERATED = "federated"
    CONTINUAL = "continual"
    EVALUATE = "evaluate"
    SCHEDULED = "scheduled"


class ScheduleMode(str, enum.Enum):
    MERGE = "merge"
    CONTINUAL = "continual"


def now() -> float:
    return time.time()


def iso(ts: float | None) -> str:
    """RFC 3339 UTC timestamp ('' for None)."""
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Job:
    """One job as stored. `spec` is the validated request (JSON-able); `result` kind-specific."""

    job_id: str
    kind: JobKind
    state: JobState = JobState.QUEUED
    spec: dict = field(default_factory=dict)
    family: str = ""
    task: str = ""
    created_at: float = field(default_factory=now)
    updated_at: float = field(default_factory=now)
    started_at: float | None = None
    finished_at: float | None = None
    progress: dict = field(default_factory=dict)
    adapter_id: str = ""
    metrics: dict = field(default_factory=dict)
    error: str = ""
    attempts: int = 0
    event_count: int = 0
    result: dict = field(default_factory=dict)
    request_id: str = ""
    cancel_requested: bool = False


@dataclass(frozen=True)
class JobEvent:
    """One entry of a job's event log; `index` counts from 0 per job."""

    job_id: str
    index: int
    time: float
    type: str  # "state" | "progress" | "log"
    state: JobState | None = None
    progress: dict | None = None
    message: str = ""


@dataclass(frozen=True)
class Gate:
    """Promotion gate: refuse if any protected task's `metric` drops by more than `max_drop`."""

    enabled: bool = False
    max_drop: float = 0.0
    metric: str = "exact_match"


@dataclass
class Schedule:
    """A cron-scheduled continual-update run for one family."""

    name: str
    cron: str
    family: str
    mode: ScheduleMode = ScheduleMode.MERGE
    method: str = "auto"
    spec: dict | None = None
    gate: Gate = field(default_factory=Gate)
    pointer: str = "production"
    created_at: float = field(default_factory=now)
    last_run_at: float | None = None
    next_run_at: float | None = None
    last_job_id: str = ""
