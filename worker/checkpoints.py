"""Job checkpoints in the store: ``jobs/<job_id>/checkpoints/step-<n>.safetensors``.

The bytes are the recipe's own checkpoint blob (``save_checkpoint(step, data)``); ``n`` is the
job's global optimizer step (zero-padded, so the keys sort in step order). Only the newest
``keep`` checkpoints are kept. A (re)started job resumes from the newest one.
"""

from __future__ import annotations

import re

from worker.store import Store

__all__ = ["checkpoint_key", "latest_checkpoint", "list_checkpoints", "save_checkpoint"]

_STEP = re.compile(r"step-(\d+)\.safetensors$")


def _prefix(job_id: str) -> str:
    return f"jobs/{job_id}/checkpoints/"


def checkpoint_key(job_id: str, step: int) -> str:
    return f"{_prefix(job_id)}step-{step:08d}.safetensors"


def list_checkpoints(store: Store, job_id: str) -> list[tuple[int, str]]:
    """(step, key) of every checkpoint of the job, oldest first."""
    found = []
    for key in store.list(_prefix(job_id)):
        m = _STEP.search(key)
        if m:
            found.append((int(m.group(1)), key))
    return sorted(found)


def save_checkpoint(store: Store, job_id: str, step: int, data: bytes, keep: int = 2) -> str:
    """Write one checkpoint, then drop all but the newest ``keep``; returns its key."""
    key = checkpoint_key(job_id, step)
    store.put_bytes(key, data)
    for _, old in list_checkpoints(store, job_id)[:-keep]:
        store.delete(old)
    return key


def latest_checkpoint(store: Store, job_id: str) -> tuple[int, bytes] | None:
    """(step, bytes) of the newest checkpoint, or None."""
    found = list_checkpoints(store, job_id)
    if not found:
        return None
    step, key = found[-1]
    return step, store.get_bytes(key)
