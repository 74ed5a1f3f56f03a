"""Plain records a worker hands back: the result of a job and its status as seen by a poller."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["STATES", "JobResult", "JobStatus"]

STATES = ("queued", "running", "succeeded", "failed", "cancelled")


@dataclass(frozen=True)
class JobResult:
    """What a finished job produced: the published adapter's id, its metrics and phase timings.

    ``manifest``: the adapter manifest as stored; ``extra``: e.g. attempts, resumed_from,
    and for federated tasks the per-round reports.
    """

    adapter_id: str
    metrics: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    manifest: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class JobStatus:
    """``state`` in STATES; ``events``: progress events since the previous poll (oldest first)."""

    job_id: str
    state: str
    events: list = field(default_factory=list)
    result: JobResult | None = None
    error: str | None = None

    @property
    def done(self) -> bool:
        return self.state in ("succeeded", "failed", "cancelled")
