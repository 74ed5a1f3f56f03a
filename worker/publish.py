"""Publishing a trained adapter: adapter.safetensors (+ peft/) + manifest, idempotent per job.

    adapters/<adapter_id>/adapter.safetensors          lori.serialization (sparse B + metadata)
    adapters/<adapter_id>/peft/adapter_config.json     optional dense PEFT export
    adapters/<adapter_id>/peft/adapter_model.safetensors
    adapters/<adapter_id>/manifest.json                written last (worker.store.publish_adapter)

The adapter id of a job is the job id itself (``adapter_id_for``), so a retried or resumed job
publishes under the same id; a job that finds its adapter already published (by an earlier
attempt that died after publishing) returns that result instead of training again.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone

from lori import Adapter
from lori.peft_export import export_peft_bytes
from lori.serialization import adapter_from_bytes, adapter_to_bytes
from worker.records import JobResult
from worker.store import AdapterNotFound, Store, publish_adapter, read_adapter_blob, read_manifest
from worker.store.publish import check_id

__all__ = ["ADAPTER_BLOB", "adapter_id_for", "build_manifest", "load_adapter", "published_result", "publish"]

ADAPTER_BLOB = "adapter.safetensors"


def adapter_id_for(job_id: str) -> str:
    """The id a job publishes its adapter under (the job id; validated as a store path segment)."""
    return check_id(job_id, "job_id")


def _jsonable(metrics: dict) -> dict:
    out = {}
    for k, v in metrics.items():
        if isinstance(v, bool) or v is None or isinstance(v, str):
            out[k] = v
        elif isinstance(v, (int, float)):
            out[k] = float(v) if isinstance(v, float) or not isinstance(v, int) else v
            if isinstance(out[k], float) and not math.isfinite(out[k]):
                out[k] = None
        elif isinstance(v, dict):
            out[k] = _jsonable(v)
        elif isinstance(v, (list, tuple)):
            out[k] = [x if isinstance(x, (str, int, float, bool)) or x is None else str(x) for x in v]
        else:
            out[k] = str(v)
    return out


def build_manifest(
    adapter: Adapter,
    *,
    job_id: str,
    kind: str,
    dataset_digest: str | None,
    metrics: dict,
    parents: list[str] | None = None,
    merge_weights: list[float] | None = None,
    timings: dict | None = None,
    extra: dict | None = None,
) -> dict:
    """The manifest fields of docs/contracts.md (``blobs`` is added by publish_adapter)."""
    meta = adapter.meta
    manifest = {
        "family": meta.family or "default",
        "task": meta.task or "task",
        "base_model": meta.base_model,
        "base_revision": meta.base_revision,
        "projection_seed": meta.shared_seed,
        "segments": [{"seed": s.seed, "rank": s.rank, "distribution": s.distribution} for s in meta.segments],
        "rank": meta.rank,
        "alpha": meta.alpha,
        "sparsity": meta.sparsity,
        "nnz": adapter.nnz(),
        "digest": adapter.digest,
        "created_at": datetime.now(timezone.utc).isoformat(),
        "job_id": job_id,
        "parents": list(parents or []),
        "merge_weights": merge_weights,
        "dataset_digest": dataset_digest,
        "metrics": _jsonable(metrics),
        "timings": _jsonable(timings or {}),
        "kind": kind,
    }
    if extra:
        manifest["extra"] = _jsonable(extra)
    return manifest


def publish(store: Store, adapter_id: str, adapter: Adapter, manifest: dict, export_peft: bool = False) -> dict:
    """Upload the adapter's blobs and its manifest (last); returns the stored manifest."""
    blobs = {ADAPTER_BLOB: adapter_to_bytes(adapter)}
    if export_peft:
        for name, data in export_peft_bytes(adapter, adapter.meta.base_model).items():
            blobs[f"peft/{name}"] = data
    return publish_adapter(store, adapter_id, blobs, manifest)


def published_result(store: Store, adapter_id: str, job_id: str) -> JobResult | None:
    """The result of ``job_id`` if its adapter is already published (by this job), else None.

    Raises ValueError when the id is taken by an adapter of a different job.
    """
    try:
        manifest = read_manifest(store, adapter_id)
    except AdapterNotFound:
        return None
    if manifest.get("job_id") != job_id:
        raise ValueError(f"adapter id {adapter_id!r} is already published by job {manifest.get('job_id')!r}")
    return JobResult(adapter_id, dict(manifest.get("metrics") or {}), dict(manifest.get("timings") or {}),
                     manifest, {"already_published": True})


def load_adapter(store: Store, adapter_id: str) -> Adapter:
    """A published adapter (sha256-verified blob, A digest checked on use)."""
    return adapter_from_bytes(read_adapter_blob(store, adapter_id, ADAPTER_BLOB))
