"""`RayExecutor`: training and federated jobs through `worker.JobRunner`, evaluations as Ray tasks."""

from __future__ import annotations

import threading

from .base import ExecResult, ExecStatus, Executor


def recipe_config(spec: dict, *, protect: bool = True):
    """The worker's `RecipeConfig` for a validated task spec (`coordinator.specs`)."""
    from lori import LoriConfig
    from worker.recipe import RecipeConfig

    lp = dict(spec["lori"])
    targets = lp.pop("target_modules")
    if targets:
        lp["target_modules"] = targets[0] if len(targets) == 1 and not targets[0].isidentifier() else tuple(targets)
    tr = spec["training"]
    return RecipeConfig(base_model=spec["base_model"], task=spec["task"], family=spec["family"],
                        lori=LoriConfig(**lp), method=tr["method"], dense_steps=tr["dense_steps"],
                        sparse_steps=tr["sparse_steps"], dense_lr=tr["dense_lr"], sparse_lr=tr["sparse_lr"],
                        weight_decay=tr["weight_decay"], batch_size=tr["batch_size"], max_length=tr["max_length"],
                        seed=tr["seed"], eval_max_new_tokens=tr["eval_max_new_tokens"], eval_limit=tr["eval_limit"],
                        protect=protect, device=spec.get("device", "auto"))


def job_spec(payload: dict):
    from worker import JobSpec

    spec = payload["spec"]
    return JobSpec(recipe=recipe_config(spec), dataset=spec["dataset"], eval_dataset=spec["eval_dataset"] or None,
                   base_adapter_id=payload.get("base_adapter_id") or None, num_gpus=spec["num_gpus"],
                   num_cpus=spec["num_cpus"], checkpoint_every=spec["checkpoint_every"],
                   max_retries=spec["max_retries"], export_peft=spec["export_peft"])


def federated_spec(fed: dict):
    from worker import FederatedSpec

    spec = fed["spec"]
    q = fed["quorum"]
    return FederatedSpec(recipe=recipe_config(spec), client_datasets=tuple(fed["client_datasets"]),
                         dataset=None if fed["client_datasets"] else spec["dataset"],
                         num_clients=0 if fed["client_datasets"] else fed["num_clients"],
                         eval_dataset=spec["eval_dataset"] or None, dense_rounds=fed["dense_rounds"],
                         sparse_rounds=fed["sparse_rounds"], local_steps=fed["local_steps"],
                         quorum=int(q) if q >= 1 else q, deadline_s=fed["deadline_s"],
                         max_delta_norm=fed["max_delta_norm"], num_cpus=spec["num_cpus"], num_gpus=spec["num_gpus"],
                         max_retries=min(spec["max_retries"], 1), export_peft=spec["export_peft"])


class RayExecutor(Executor):
    def __init__(self, store_url: str, ray_address: str | None = None, *, num_cpus: int | None = None) -> None:
        from worker import JobRunner

        self.store_url = store_url
        self.runner = JobRunner(store_url, ray_address, num_cpus=num_cpus)
        self._evals: dict[str, object] = {}
        self._eval_done: dict[str, ExecStatus] = {}
        self._lock = threading.Lock()

    def submit(self, exec_id: str, kind: str, payload: dict) -> None:
        if kind == "evaluate":
            self._submit_eval(exec_id, payload)
            return
        spec = job_spec(payload) if kind == "train" else federated_spec(payload)
        try:
            self.runner.submit(exec_id, spec)
        except ValueError as exc:
            if "already" not in str(exc):  # already queued/running in this runner: re-attach
                raise

    def _submit_eval(self, exec_id: str, payload: dict) -> None:
        import ray

        from .evaluation import evaluate_adapter

        with self._lock:
            if exec_id in self._evals:
                return
            remote = ray.remote(num_cpus=1, max_retries=1)(evaluate_adapter)
            self._evals[exec_id] = remote.remote(self.store_url, payload)

    def poll(self, exec_id: str) -> ExecStatus:
        with self._lock:
            if exec_id in self._eval_done:
                return self._eval_done[exec_id]
            ref = self._evals.get(exec_id)
        if ref is not None:
            import ray

            ready, _ = ray.wait([ref], timeout=0)
            if not ready:
                return ExecStatus("running")
            try:
                st = ExecStatus("succeeded", result=ExecResult(None, ray.get(ref)))
            except Exception as exc:  # noqa: BLE001
                cause = getattr(exc, "cause", None) or exc
                st = ExecStatus("failed", error=f"{type(cause).__name__}: {cause}")
            with self._lock:
                self._eval_done[exec_id] = st
                self._evals.pop(exec_id, None)
            return st
        try:
            s = self.runner.poll(exec_id)
        except KeyError:
            return ExecStatus("unknown")
        result = None
        if s.result is not None:
            result = ExecResult(s.result.adapter_id, dict(s.result.metrics), dict(s.result.timings),
                                dict(s.result.extra))
        return ExecStatus(s.state, list(s.events), result, s.error)

    def cancel(self, exec_id: str) -> None:
        with self._lock:
            ref = self._evals.get(exec_id)
        if ref is not None:
            import ray

            ray.cancel(ref, force=True)
            return
        try:
            self.runner.cancel(exec_id)
        except KeyError:
            pass

    def shutdown(self) -> None:
        self.runner.shutdown()
