"""Worker side of the LoRI service: training jobs and federated tasks on Ray (see docs/worker.md).

    from worker import JobSpec, FederatedSpec, JobRunner, JobStatus, JobResult

Ray stays at the edge (``worker.ray_runtime``); the lifecycle itself is plain Python
(``worker.jobs.run_job``, ``worker.federated.run_federated``). Submodules ``worker.recipe`` (the
training recipe) and ``worker.store`` (object store, publish protocol, registry) are importable
on their own; importing ``worker`` does not import Ray until ``JobRunner`` is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .records import STATES, JobResult, JobStatus

if TYPE_CHECKING:  # pragma: no cover
    from .ray_runtime import JobRunner
    from .spec import FederatedSpec, JobSpec

__all__ = ["STATES", "FederatedSpec", "JobResult", "JobRunner", "JobSpec", "JobStatus"]

_LAZY = {"JobRunner": "ray_runtime", "JobSpec": "spec", "FederatedSpec": "spec"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'worker' has no attribute {name!r}")
