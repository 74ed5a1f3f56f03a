"""Where the coordinator's jobs actually run.

`Executor` is the coordinator's view of the worker's `JobRunner` (submit / poll / cancel /
shutdown), extended with evaluation. `RayExecutor` runs on Ray through `worker.JobRunner`;
`SimulatedExecutor` fakes training in threads (tests, API benchmarks, `--executor simulated`).
"""

from .base import ExecResult, ExecStatus, Executor

__all__ = ["ExecResult", "ExecStatus", "Executor"]
