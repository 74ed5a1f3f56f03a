"""One training job as a plain function (no Ray): the lifecycle the Ray wrapper runs remotely.

    already published?  -> return that result (idempotent re-run of a job id)
    load data (store dataset or local JSONL), base adapter (continual), newest checkpoint
    recipe.setup()      load base model, inject LoRI (the base adapter frozen underneath)
    recipe.run()        LoRI-D -> calibrate -> LoRI-S -> evaluate, checkpointing every N steps,
                        resuming from the newest checkpoint, stopping when ctx.should_stop()
    publish             adapter.safetensors (+ peft/) + manifest, adapter id = job id
    -> JobResult(adapter_id, metrics, timings)

Progress events (the recipe's plain dicts plus a "start" and a "published" event) go to
``ctx.emit``; see docs/worker.md.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from worker.checkpoints import latest_checkpoint, save_checkpoint
from worker.datasets import load_dataset
from worker.publish import adapter_id_for, build_manifest, load_adapter, publish, published_result
from worker.recipe import LoriRecipe
from worker.records import JobResult
from worker.spec import JobSpec
from worker.store import ConflictError, Store

__all__ = ["JobContext", "run_job"]


@dataclass
class JobContext:
    """How a running job talks to its caller: ``emit(event)``, ``should_stop()``, the attempt number.

    The default context drops events and never stops (in-process use, benchmarks).
    """

    emit: callable = field(default=lambda event: None)
    should_stop: callable = field(default=lambda: False)
    attempt: int = 1


def run_job(store: Store, job_id: str, spec: JobSpec, ctx: JobContext | None = None) -> JobResult:
    """Run (or resume, or recognise as done) job ``job_id``; see the module docstring."""
    ctx = ctx or JobContext()
    started = time.perf_counter()
    adapter_id = adapter_id_for(job_id)
    done = published_result(store, adapter_id, job_id)
    if done is not None:
        ctx.emit({"phase": "published", "step": 0, "total_steps": 0, "adapter_id": adapter_id, "already": True})
        return done

    data = load_dataset(store, spec.dataset)
    eval_examples = load_dataset(store, spec.eval_dataset).train if spec.eval_dataset else data.eval
    base = load_adapter(store, spec.base_adapter_id) if spec.base_adapter_id else None
    ckpt = latest_checkpoint(store, job_id)
    ctx.emit({"phase": "start", "step": ckpt[0] if ckpt else 0, "total_steps": spec.recipe.total_steps,
              "attempt": ctx.attempt, "pid": os.getpid(), "resumed_from": ckpt[0] if ckpt else None})
    load_s = time.perf_counter() - started

    recipe = LoriRecipe(spec.recipe, on_event=ctx.emit, base_adapter=base, base_adapter_id=spec.base_adapter_id)
    saver = None
    if spec.checkpoint_every:
        saver = lambda step, blob: save_checkpoint(store, job_id, step, blob)  # noqa: E731
    try:
        recipe.setup()
        result = recipe.run(
            data.train, eval_examples or None, checkpoint_every=spec.checkpoint_every, save_checkpoint=saver,
            resume_from=ckpt[1] if ckpt else None, should_stop=ctx.should_stop,
        )
    finally:
        recipe.cleanup()

    t_pub = time.perf_counter()
    kind = "continual" if base is not None else spec.recipe.method
    adapter = result.adapter.with_meta(kind=kind)
    timings = {**result.timings, "load_s": load_s}
    manifest = build_manifest(
        adapter, job_id=job_id, kind=kind, dataset_digest=data.digest, metrics=result.metrics,
        parents=[spec.base_adapter_id] if spec.base_adapter_id else [], timings=timings,
        extra={"attempt": ctx.attempt, "resumed_from": ckpt[0] if ckpt else None,
               "protect": spec.recipe.protect if base is not None else None},
    )
    try:
        stored = publish(store, adapter_id, adapter, manifest, export_peft=spec.export_peft)
    except ConflictError:  # an earlier attempt of this job published first
        again = published_result(store, adapter_id, job_id)
        if again is None:
            raise
        return again
    timings["publish_s"] = time.perf_counter() - t_pub
    timings["total_s"] = time.perf_counter() - started
    ctx.emit({"phase": "published", "step": spec.recipe.total_steps, "total_steps": spec.recipe.total_steps,
              "adapter_id": adapter_id})
    return JobResult(adapter_id, dict(stored.get("metrics") or {}), timings, stored,
                     {"attempt": ctx.attempt, "resumed_from": ckpt[0] if ckpt else None})
