"""Merging published adapters into a new, registered adapter with lineage.

    sum_b   B = Σ_t w_t B_t at rank r (one shared A: same family seed)          lori.merge.sum_merge
    concat  A = [A_1; ...; A_n], B = [w_1 s_1 B_1, ...] at rank Σ r_t (any seeds) lori.merge.concat_merge
    auto    sum_b when every input shares one projection (same segments), else concat

The result's id is derived from its inputs (`merge-<sha256 of ids, weights, method, task>`), so
repeating a merge returns the same adapter instead of publishing a copy. Its manifest records
`parents`, `merge_weights`, `kind` and `tasks` (every task the merged adapter carries).
"""

from __future__ import annotations

import hashlib
import json

from worker.store import Registry
from worker.store.publish import AdapterNotFound

from .errors import FailedPrecondition, InvalidArgument, NotFound


def load_adapter(registry: Registry, adapter_id: str):
    """`worker.publish.load_adapter`, with an unknown id as NotFound."""
    from worker.publish import load_adapter as load_published

    try:
        return load_published(registry.store, adapter_id)
    except AdapterNotFound:
        raise NotFound(f"adapter {adapter_id!r} not found") from None


def tasks_of(manifest: dict) -> list[str]:
    """The tasks an adapter carries: its manifest's `tasks`, else its own task (+ a continual base's)."""
    tasks = manifest.get("tasks")
    if isinstance(tasks, list) and tasks:
        return [str(t) for t in tasks]
    return [str(manifest.get("task", ""))]


def merge_id(ids: list[str], weights: list[float], method: str, task: str, family: str) -> str:
    key = json.dumps([ids, weights, method, task, family], sort_keys=True).encode()
    return "merge-" + hashlib.sha256(key).hexdigest()[:20]


def merge_adapters(registry: Registry, ids: list[str], weights: list[float] | None, method: str = "auto",
                   task: str = "merged", family: str = "", job_id: str | None = None) -> dict:
    """Merge published adapters; publish and return the result's manifest (idempotent)."""
    from lori.merge import concat_merge, sum_merge
    from lori.serialization import adapter_to_bytes
    from worker.publish import ADAPTER_BLOB

    if len(ids) < 1:
        raise InvalidArgument("adapter_ids", "at least one adapter id is required")
    weights = list(weights) if weights else [1.0] * len(ids)
    if len(weights) != len(ids):
        raise InvalidArgument("weights", f"{len(weights)} weights for {len(ids)} adapters")
    manifests = []
    for i, aid in enumerate(ids):
        try:
            manifests.append(registry.get(aid).manifest)
        except AdapterNotFound:
            raise NotFound(f"adapter {aid!r} (adapter_ids[{i}]) not found") from None
    families = {m.get("family") for m in manifests}
    family = family or (families.pop() if len(families) == 1 else "")
    if not family:
        raise InvalidArgument("family", "inputs belong to several families; name the result's family")
    adapters = [load_adapter(registry, aid) for aid in ids]
    if method == "auto":
        segs = {a.meta.segments for a in adapters}
        method = "sum_b" if len(segs) == 1 and len({a.digest for a in adapters}) == 1 else "concat"
    try:
        merged = (sum_merge if method == "sum_b" else concat_merge)(adapters, weights)
    except ValueError as exc:
        raise FailedPrecondition(f"cannot merge with method {method!r}: {exc}") from None
    merged = merged.with_meta(task=task, family=family)
    tasks: list[str] = []
    for m in manifests:
        tasks += [t for t in tasks_of(m) if t not in tasks]
    adapter_id = merge_id(list(ids), weights, method, task, family)
    manifest = {"family": family, "task": task, "kind": merged.meta.kind, "base_model": merged.meta.base_model,
                "projection_seed": merged.meta.shared_seed, "parents": list(ids), "merge_weights": weights,
                "merge_method": method, "tasks": tasks, "digest": merged.digest, "job_id": job_id,
                "rank": merged.rank, "nnz": merged.nnz()}
    try:
        existing = registry.get(adapter_id)
        return existing.manifest
    except AdapterNotFound:
        pass
    rec = registry.publish(adapter_id, {ADAPTER_BLOB: adapter_to_bytes(merged)}, manifest)
    return rec.manifest
