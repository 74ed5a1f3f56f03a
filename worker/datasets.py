"""Resolve a job's dataset reference to examples: a store dataset name or a local JSONL path.

    "arith"                  -> store datasets/arith/{train,eval}.jsonl (sha256-verified)
    "/data/arith.jsonl"      -> that file (train); no eval split
    "/data/arith/"           -> train.jsonl and, if present, eval.jsonl in that folder

Every dataset also yields a digest (the store manifest's digest, or the sha256 of the local
files) recorded in the adapter manifest as lineage.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from worker.recipe import load_examples
from worker.store import DatasetNotFound, Store, read_dataset_bytes, read_dataset_manifest

__all__ = ["Dataset", "load_dataset", "shard"]


@dataclass(frozen=True)
class Dataset:
    """Examples of a dataset: ``train`` and ``eval`` (possibly empty) plus a lineage digest."""

    ref: str
    train: list
    eval: list
    digest: str


def _local(path: Path) -> tuple[bytes, bytes | None] | None:
    if path.is_file():
        return path.read_bytes(), None
    if path.is_dir() and (path / "train.jsonl").is_file():
        ev = path / "eval.jsonl"
        return (path / "train.jsonl").read_bytes(), ev.read_bytes() if ev.is_file() else None
    return None


def load_dataset(store: Store, ref: str) -> Dataset:
    """Load ``ref`` (see the module docstring); local paths win over store names.

    Raises ``DatasetNotFound`` when neither a local path nor a store dataset of that name exists.
    """
    local = _local(Path(ref)) if ("/" in ref or ref.endswith(".jsonl")) else None
    if local is not None:
        train_bytes, eval_bytes = local
        h = hashlib.sha256(train_bytes)
        if eval_bytes is not None:
            h.update(b"|eval|" + eval_bytes)
        return Dataset(
            ref,
            load_examples(train_bytes),
            load_examples(eval_bytes) if eval_bytes else [],
            "sha256:" + h.hexdigest(),
        )
    try:
        manifest = read_dataset_manifest(store, ref)
    except (DatasetNotFound, ValueError):
        raise DatasetNotFound(f"dataset {ref!r}: no local file/folder and no dataset of that name in {store.url}") from None
    train = load_examples(read_dataset_bytes(store, ref, "train"))
    ev = load_examples(read_dataset_bytes(store, ref, "eval")) if "eval" in manifest.get("splits", {}) else []
    return Dataset(ref, train, ev, "sha256:" + manifest["digest"])


def shard(examples: list, k: int, num: int) -> list:
    """Client ``k``'s shard of ``num``: examples[k::num]."""
    return examples[k::num]
