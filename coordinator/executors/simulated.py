"""`SimulatedExecutor`: fake training in threads, real (tiny) adapters in the real store.

Training emits `steps` progress events `step_s` seconds apart, writes a checkpoint marker every
`checkpoint_every` steps (`jobs/<id>/checkpoints/step-<n>.json`) and resumes from the last one
when the same id is submitted again (as the worker does), then publishes a small genuine LoRI
adapter (2 modules of 16x16, the spec's rank and projection seed; a continual update keeps the
base adapter's coordinates and adds new ones outside its mask). Evaluation returns
`metrics_fn(adapter_id, dataset)`. Used by tests, the API benchmark and `lori serve --executor simulated`.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone

from worker.store import Registry, Store, publish_adapter, read_manifest
from worker.store.publish import AdapterNotFound

from .base import ExecResult, ExecStatus, Executor

MODULES = {"layers.0.q_proj": 16, "layers.0.v_proj": 16}


def _seed_of(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")


def default_metrics(adapter_id: str, dataset: str) -> dict:
    """Deterministic pseudo-scores in [0.2, 1.0)."""
    return {"exact_match": 0.2 + (_seed_of(f"{adapter_id}|{dataset}") % 800) / 1000.0, "eval_loss": 1.0, "n": 10}


def fake_adapter(spec: dict, base=None):
    """A genuine `lori.Adapter` shaped like MODULES, masked with the spec's sparsity."""
    import torch

    from lori import Adapter, AdapterMeta, Segment

    lori_p = spec["lori"]
    rank = base.rank if base is not None else lori_p["rank"]
    seg = base.meta.segments if base is not None else (Segment(lori_p["projection_seed"], rank, lori_p["distribution"]),)
    gen = torch.Generator().manual_seed(_seed_of(spec["task"]))
    b, masks = {}, {}
    for name, d in MODULES.items():
        free = torch.ones(d, rank, dtype=torch.bool) if base is None else ~base.masks[name]
        keep = (torch.rand(d, rank, generator=gen) >= lori_p["sparsity"]) & free
        vals = torch.randn(d, rank, generator=gen) * keep
        if base is not None:
            vals = vals + base.b[name]
            keep = keep | base.masks[name]
        b[name], masks[name] = vals, keep
    meta = AdapterMeta(base_model=spec["base_model"], segments=seg, alpha=float(lori_p["alpha"]),
                       target_modules=tuple(sorted(MODULES)), task=spec["task"],
                       kind="continual" if base is not None else "lori-s",
                       sparsity=lori_p["sparsity"], family=spec["family"])
    return Adapter(meta, b, dict(MODULES), masks)


class _Run:
    def __init__(self) -> None:
        self.state = "queued"
        self.events: list[dict] = []
        self.result: ExecResult | None = None
        self.error: str | None = None
        self.cancel = threading.Event()


class SimulatedExecutor(Executor):
    def __init__(self, store: Store, *, steps: int = 5, step_s: float = 0.05, checkpoint_every: int = 1,
                 metrics_fn: Callable[[str, str], dict] | None = None, fail_tasks: tuple[str, ...] = ()) -> None:
        self.store = store
        self.registry = Registry(store)
        self.steps, self.step_s, self.checkpoint_every = steps, step_s, checkpoint_every
        self.metrics_fn = metrics_fn or default_metrics
        self.fail_tasks = set(fail_tasks)
        self._runs: dict[str, _Run] = {}
        self._lock = threading.Lock()
        self.publish_count: dict[str, int] = {}

    def submit(self, exec_id: str, kind: str, payload: dict) -> None:
        with self._lock:
            if exec_id in self._runs and self._runs[exec_id].state not in ("failed", "cancelled"):
                return  # re-attach
            run = self._runs[exec_id] = _Run()
        threading.Thread(target=self._run, args=(exec_id, kind, payload, run), daemon=True,
                         name=f"sim-{exec_id}").start()

    def _run(self, exec_id: str, kind: str, payload: dict, run: _Run) -> None:
        try:
            run.state = "running"
            if kind == "evaluate":
                time.sleep(self.step_s)
                run.result = ExecResult(None, dict(self.metrics_fn(payload.get("adapter_id") or "",
                                                                   payload["dataset"])))
            else:
                run.result = self._train(exec_id, kind, payload, run)
            run.state = "cancelled" if run.result is None else "succeeded"
        except Exception as exc:  # noqa: BLE001 - reported through poll
            run.error, run.state = f"{type(exc).__name__}: {exc}", "failed"

    def _train(self, exec_id: str, kind: str, payload: dict, run: _Run) -> ExecResult | None:
        spec = payload["spec"]
        if spec["task"] in self.fail_tasks:
            raise RuntimeError(f"simulated failure of task {spec['task']!r}")
        try:
            m = read_manifest(self.store, exec_id)
            if m.get("job_id") == exec_id:
                return ExecResult(exec_id, dict(m.get("metrics") or {}), extra={"already_published": True})
        except AdapterNotFound:
            pass
        prefix = f"jobs/{exec_id}/checkpoints/"
        done = [int(k[len(prefix) + 5:-5]) for k in self.store.list(prefix) if k.endswith(".json")]
        start = max(done, default=0)
        for step in range(start + 1, self.steps + 1):
            if run.cancel.is_set():
                return None
            time.sleep(self.step_s)
            run.events.append({"phase": "sparse" if step > self.steps // 2 else "dense", "step": step,
                               "total_steps": self.steps, "loss": 1.0 / step, "tokens_per_s": 1000.0,
                               "eta_s": (self.steps - step) * self.step_s})
            if self.checkpoint_every and step % self.checkpoint_every == 0:
                self.store.put_bytes(f"{prefix}step-{step}.json", json.dumps({"step": step}).encode())
        from lori.serialization import adapter_to_bytes
        from worker.publish import ADAPTER_BLOB, load_adapter

        base = load_adapter(self.store, payload["base_adapter_id"]) if payload.get("base_adapter_id") else None
        adapter = fake_adapter(spec, base)
        metrics = dict(self.metrics_fn(exec_id, spec.get("eval_dataset") or spec.get("dataset") or ""))
        manifest = {"family": spec["family"], "task": spec["task"], "kind": adapter.meta.kind,
                    "base_model": spec["base_model"], "projection_seed": adapter.meta.shared_seed,
                    "job_id": exec_id, "metrics": metrics, "digest": adapter.digest,
                    "parents": [payload["base_adapter_id"]] if base is not None else [],
                    "dataset": spec.get("dataset"), "resumed_from": start}
        manifest["created_at"] = datetime.now(timezone.utc).isoformat()
        publish_adapter(self.store, exec_id, {ADAPTER_BLOB: adapter_to_bytes(adapter)}, manifest)
        with self._lock:
            self.publish_count[exec_id] = self.publish_count.get(exec_id, 0) + 1
        return ExecResult(exec_id, metrics, extra={"resumed_from": start})

    def poll(self, exec_id: str) -> ExecStatus:
        with self._lock:
            run = self._runs.get(exec_id)
        if run is None:
            return ExecStatus("unknown", error=f"unknown execution {exec_id!r}")
        events, run.events = run.events, []
        return ExecStatus(run.state, events, run.result, run.error)

    def cancel(self, exec_id: str) -> None:
        with self._lock:
            run = self._runs.get(exec_id)
        if run is not None:
            run.cancel.set()

    def shutdown(self) -> None:
        with self._lock:
            for run in self._runs.values():
                run.cancel.set()
