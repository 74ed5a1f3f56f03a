"""Adapter registry: the store is the source of truth.

The registry holds no state of its own: records are read from `adapters/<id>/manifest.json`
(only published adapters have one), and named pointers from `pointers/<family>/<name>.json`.
A database (the coordinator's SQLite) may cache this, but can always be rebuilt from the store.

Pointers are moved atomically with the store's compare-and-set (`put_if`): S3 conditional
writes (`If-Match` on the pointer's ETag, `If-None-Match: *` when creating it) or an exclusive
file lock on `LocalStore`. Each pointer document carries a `generation` that increases by one
per move, plus the previous target, so every move is distinct and auditable.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from .base import ConflictError, ObjectNotFound, Store
from .publish import adapter_ids, check_id, publish_adapter, read_manifest

__all__ = ["ANY", "AdapterRecord", "LineageEntry", "POINTERS", "Registry"]

POINTERS = "pointers/"


class _Any:
    def __repr__(self) -> str:
        return "ANY"


ANY: Any = _Any()
"""Sentinel for `Registry.set_pointer(expected=ANY)`: move regardless of the current target."""


@dataclass(frozen=True)
class AdapterRecord:
    """One published adapter, as described by its manifest."""

    adapter_id: str
    family: str
    task: str
    version: int
    kind: str | None = None
    base_model: str | None = None
    projection_seed: int | None = None
    created_at: str | None = None
    job_id: str | None = None
    parents: tuple[str, ...] = ()
    merge_weights: tuple[float, ...] | None = None
    dataset_digest: str | None = None
    metrics: dict = field(default_factory=dict, compare=False, hash=False)
    manifest: dict = field(default_factory=dict, compare=False, hash=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.version, int) or self.version < 1:
            raise ValueError(f"AdapterRecord.version must be an int >= 1, got {self.version!r}")
        if self.merge_weights is not None and len(self.merge_weights) != len(self.parents):
            raise ValueError(
                f"AdapterRecord.merge_weights has {len(self.merge_weights)} entries for "
                f"{len(self.parents)} parents in adapter {self.adapter_id!r}"
            )


@dataclass(frozen=True)
class LineageEntry:
    """One ancestor (or the adapter itself) in a lineage walk; `depth` 0 is the adapter."""

    adapter_id: str
    depth: int
    parents: tuple[str, ...]
    merge_weights: tuple[float, ...] | None
    job_id: str | None
    dataset_digest: str | None
    kind: str | None
    missing: bool = False


def _record(manifest: dict, version: int) -> AdapterRecord:
    mw = manifest.get("merge_weights")
    return AdapterRecord(
        adapter_id=manifest["adapter_id"],
        family=str(manifest.get("family", "")),
        task=str(manifest.get("task", "")),
        version=version,
        kind=manifest.get("kind"),
        base_model=manifest.get("base_model"),
        projection_seed=manifest.get("projection_seed"),
        created_at=manifest.get("created_at"),
        job_id=manifest.get("job_id"),
        parents=tuple(manifest.get("parents") or ()),
        merge_weights=None if mw is None else tuple(float(w) for w in mw),
        dataset_digest=manifest.get("dataset_digest"),
        metrics=dict(manifest.get("metrics") or {}),
        manifest=manifest,
    )


def _assign_versions(manifests: Iterable[dict]) -> list[AdapterRecord]:
    """Explicit `version`s are kept; the others are numbered after the largest explicit one
    of their (family, task), in (created_at, adapter_id) order."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for m in manifests:
        groups.setdefault((str(m.get("family", "")), str(m.get("task", ""))), []).append(m)
    out: list[AdapterRecord] = []
    for group in groups.values():
        explicit = [m for m in group if isinstance(m.get("version"), int) and m["version"] >= 1]
        implicit = sorted((m for m in group if m not in explicit),
                          key=lambda m: (str(m.get("created_at") or ""), m["adapter_id"]))
        nxt = max((m["version"] for m in explicit), default=0) + 1
        out += [_record(m, m["version"]) for m in explicit]
        out += [_record(m, nxt + i) for i, m in enumerate(implicit)]
    return out


class Registry:
    """List and look up adapters by family, task and version; lineage; named pointers."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # -- adapters ---------------------------------------------------------------------------
    def _all(self) -> list[AdapterRecord]:
        manifests = []
        for aid in adapter_ids(self.store):
            try:
                manifests.append(read_manifest(self.store, aid))
            except ObjectNotFound:  # deleted between list and read
                continue
        return _assign_versions(manifests)

    def list(self, family: str | None = None, task: str | None = None) -> list[AdapterRecord]:
        """Published adapters, optionally filtered, sorted by (family, task, version)."""
        recs = [r for r in self._all()
                if (family is None or r.family == family) and (task is None or r.task == task)]
        return sorted(recs, key=lambda r: (r.family, r.task, r.version, r.adapter_id))

    def get(self, adapter_id: str) -> AdapterRecord:
        """The record of one adapter; `AdapterNotFound` naming the id if it is not published."""
        manifest = read_manifest(self.store, adapter_id)  # raises AdapterNotFound
        if isinstance(manifest.get("version"), int) and manifest["version"] >= 1:
            return _record(manifest, manifest["version"])
        return next(r for r in self._all() if r.adapter_id == adapter_id)

    def versions(self, family: str, task: str) -> list[AdapterRecord]:
        """All versions of one task in one family, oldest first."""
        return self.list(family=family, task=task)

    def latest(self, family: str, task: str) -> AdapterRecord | None:
        """The highest version of a task, or None."""
        vs = self.versions(family, task)
        return vs[-1] if vs else None

    def next_version(self, family: str, task: str) -> int:
        """The version number a new adapter of (family, task) should take."""
        latest = self.latest(family, task)
        return 1 if latest is None else latest.version + 1

    def publish(self, adapter_id: str, blobs: dict[str, bytes], manifest: dict) -> AdapterRecord:
        """`publish_adapter` with `version` assigned (next free) when the manifest has none,
        and `created_at` set when missing. Version numbers are unique when one process
        (the coordinator) assigns them; concurrent publishers should pass explicit versions."""
        for name in ("family", "task"):
            check_id(manifest.get(name), name)
        m = dict(manifest)
        m.setdefault("created_at", datetime.now(timezone.utc).isoformat())
        if "version" not in m:
            m["version"] = self.next_version(m["family"], m["task"])
        stored = publish_adapter(self.store, adapter_id, blobs, m)
        return _record(stored, stored["version"])

    def lineage(self, adapter_id: str, max_depth: int = 64) -> list[LineageEntry]:
        """The adapter and its ancestors, breadth first (each once); missing parents are marked."""
        out: list[LineageEntry] = []
        seen: set[str] = set()
        frontier = [(adapter_id, 0)]
        while frontier:
            aid, depth = frontier.pop(0)
            if aid in seen or depth > max_depth:
                continue
            seen.add(aid)
            try:
                rec = _record(read_manifest(self.store, aid), 1)
            except ObjectNotFound:
                if depth == 0:
                    raise
                out.append(LineageEntry(aid, depth, (), None, None, None, None, missing=True))
                continue
            out.append(LineageEntry(aid, depth, rec.parents, rec.merge_weights, rec.job_id,
                                    rec.dataset_digest, rec.kind))
            frontier += [(p, depth + 1) for p in rec.parents]
        return out

    # -- pointers ---------------------------------------------------------------------------
    @staticmethod
    def _pointer_key(family: str, name: str) -> str:
        return f"{POINTERS}{check_id(family, 'family')}/{check_id(name, 'pointer name')}.json"

    def _read_pointer(self, family: str, name: str) -> tuple[dict | None, str | None]:
        try:
            raw, tag = self.store.read_versioned(self._pointer_key(family, name))
        except ObjectNotFound:
            return None, None
        return json.loads(raw), tag

    def get_pointer(self, family: str, name: str) -> str | None:
        """The adapter id a named pointer (e.g. `production`) targets, or None if unset."""
        doc, _ = self._read_pointer(family, name)
        return None if doc is None else doc["adapter_id"]

    def pointer_info(self, family: str, name: str) -> dict | None:
        """The whole pointer document (adapter_id, generation, previous, updated_at)."""
        return self._read_pointer(family, name)[0]

    def set_pointer(self, family: str, name: str, adapter_id: str, expected: str | None = ANY,
                    attempts: int = 5) -> int:
        """Atomically point `family/name` at `adapter_id`; return the new generation.

        With `expected` given (an adapter id, or None for "not set yet"), the move happens only
        if the pointer is still there; otherwise `ConflictError`. A concurrent mover between our
        read and our write also yields `ConflictError` (or, with `expected=ANY`, a re-read and
        retry, up to `attempts` times). The target must be a published adapter of `family`.
        """
        key = self._pointer_key(family, name)
        rec = self.get(adapter_id)
        if rec.family != family:
            raise ValueError(f"adapter {adapter_id!r} belongs to family {rec.family!r}, not {family!r}")
        for _ in range(max(1, attempts)):
            doc, tag = self._read_pointer(family, name)
            current = None if doc is None else doc["adapter_id"]
            if expected is not ANY and current != expected:
                raise ConflictError(
                    f"pointer {family}/{name} is at {current!r}, expected {expected!r}; not moved"
                )
            generation = 1 if doc is None else int(doc["generation"]) + 1
            new = {"family": family, "name": name, "adapter_id": adapter_id, "generation": generation,
                   "previous": current, "updated_at": datetime.now(timezone.utc).isoformat()}
            try:
                self.store.put_if(key, json.dumps(new, sort_keys=True).encode(), tag)
                return generation
            except ConflictError:
                if expected is not ANY:
                    raise ConflictError(
                        f"pointer {family}/{name} was moved concurrently; expected {expected!r}"
                    ) from None
        raise ConflictError(f"pointer {family}/{name}: gave up after {attempts} concurrent moves")

    def pointers(self, family: str) -> dict[str, str]:
        """All named pointers of a family: {name: adapter_id}."""
        prefix = f"{POINTERS}{check_id(family, 'family')}/"
        out = {}
        for key in self.store.list(prefix):
            name = key[len(prefix):]
            if name.endswith(".json") and "/" not in name:
                target = self.get_pointer(family, name[:-5])
                if target is not None:
                    out[name[:-5]] = target
        return out

