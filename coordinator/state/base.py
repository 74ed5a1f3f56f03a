"""The coordinator's durable state, behind one interface (`StateStore`).

Every implementation passes the same contract test (`tests/test_coordinator_state.py`). The
implementations are thread-safe; every method is one atomic transaction.

- Jobs: created once (a repeated `request_id` returns the first job: idempotent submission),
  updated by the engine, listed newest-first with filters and an opaque cursor.
- Events: an append-only log per job, indexed 0, 1, 2, ...; `Job.event_count` is its length.
- Steps: the memoised results of a job's sub-steps, so a resumed job never redoes finished work.
- Schedules: cron definitions with their last/next run.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable

from ..domain import Job, JobEvent, JobKind, JobState, Schedule


class StateStore(ABC):
    """Durable jobs, job events, job steps and schedules."""

    # -- jobs ------------------------------------------------------------------------------
    @abstractmethod
    def create_job(self, job: Job, *, initial_event: bool = False) -> tuple[Job, bool]:
        """Insert `job`; return (stored job, created). With a `request_id` already used, return
        the existing job and False. A duplicate `job_id` raises `AlreadyExists`. With
        `initial_event`, the job's first event (a "state" event of its state) is written in the
        same transaction."""

    @abstractmethod
    def get_job(self, job_id: str) -> Job:
        """The job; `NotFound` naming the id."""

    @abstractmethod
    def update_job(self, job_id: str, **fields: object) -> Job:
        """Set some fields (any `Job` attribute but `job_id`); bumps `updated_at`; return the job."""

    @abstractmethod
    def list_jobs(self, states: Iterable[JobState] = (), kind: JobKind | None = None, family: str = "",
                  task: str = "", limit: int = 50, cursor: int | None = None) -> tuple[list[Job], int | None]:
        """Jobs newest first matching every filter given; at most `limit`. Returns the page and
        the cursor of the next page (None at the end)."""

    @abstractmethod
    def active_jobs(self) -> list[Job]:
        """Jobs not in a terminal state, oldest first (what a restarted coordinator resumes)."""

    # -- events ----------------------------------------------------------------------------
    @abstractmethod
    def append_event(self, job_id: str, type: str, *, state: JobState | None = None,
                     progress: dict | None = None, message: str = "", job_fields: dict | None = None) -> JobEvent:
        """Append one event (index = current event_count) and, in the same transaction, apply
        `job_fields` to the job as `update_job` would."""

    @abstractmethod
    def events(self, job_id: str, from_index: int = 0, limit: int = 1000) -> list[JobEvent]:
        """Events with index >= from_index, in order; `NotFound` for an unknown job."""

    # -- steps -----------------------------------------------------------------------------
    @abstractmethod
    def put_step(self, job_id: str, step: str, result: dict) -> None:
        """Record a finished sub-step's result (overwrites)."""

    @abstractmethod
    def get_step(self, job_id: str, step: str) -> dict | None:
        """A recorded sub-step result, or None."""

    # -- schedules -------------------------------------------------------------------------
    @abstractmethod
    def create_schedule(self, schedule: Schedule) -> Schedule:
        """Insert; `AlreadyExists` if the name is taken."""

    @abstractmethod
    def get_schedule(self, name: str) -> Schedule:
        """The schedule; `NotFound` naming it."""

    @abstractmethod
    def list_schedules(self, family: str = "") -> list[Schedule]:
        """Schedules by name, optionally of one family."""

    @abstractmethod
    def update_schedule(self, name: str, **fields: object) -> Schedule:
        """Set some fields; `NotFound` if absent."""

    @abstractmethod
    def delete_schedule(self, name: str) -> bool:
        """Remove; False if it did not exist."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources."""
