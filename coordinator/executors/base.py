"""The executor interface the engine codes against (mirrors `worker.JobRunner`)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

EXEC_KINDS = ("train", "federated", "evaluate")


@dataclass(frozen=True)
class ExecResult:
    """`adapter_id`: the published adapter (None for evaluations); `metrics`: scalar results."""

    adapter_id: str | None
    metrics: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ExecStatus:
    """`state`: queued|running|succeeded|failed|cancelled; `events`: progress dicts since the last poll."""

    state: str
    events: list = field(default_factory=list)
    result: ExecResult | None = None
    error: str | None = None

    @property
    def done(self) -> bool:
        return self.state in ("succeeded", "failed", "cancelled")


class Executor(ABC):
    """Runs executions named by an id. Submitting an id again resumes or re-attaches it (the
    published adapter id derives from the execution id, so a re-run publishes the same adapter).

    Payloads (validated dicts, see `coordinator.specs`):
      train      {"spec": task spec, "base_adapter_id": str | None}
      federated  validated federated request
      evaluate   {"adapter_id": str | "", "dataset": str, "base_model": str, "limit": int | None,
                  "max_new_tokens": int, "max_length": int, "batch_size": int}
    """

    @abstractmethod
    def submit(self, exec_id: str, kind: str, payload: dict) -> None: ...

    @abstractmethod
    def poll(self, exec_id: str) -> ExecStatus:
        """Status; an unknown id answers state 'unknown' (e.g. after a coordinator restart)."""

    @abstractmethod
    def cancel(self, exec_id: str) -> None: ...

    @abstractmethod
    def shutdown(self) -> None: ...
