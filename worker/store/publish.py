"""Adapter publish / read protocol over any `Store`.

Layout (DESIGN.md §3):

    adapters/<adapter_id>/<blob name>      e.g. adapter.safetensors, peft/adapter_config.json
    adapters/<adapter_id>/manifest.json    caller's fields + {"blobs": {name: {sha256, size}}}

Protocol: blobs first, manifest last, the manifest written with a conditional create
(`put_if(..., None)`). An adapter exists only once its manifest exists, so a crashed or failed
upload leaves at most orphan blobs that no reader lists or returns; re-publishing overwrites
them. Every read verifies size and sha256 against the manifest.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from .base import ConflictError, IntegrityError, ObjectNotFound, Store, validate_key

__all__ = [
    "ADAPTERS",
    "AdapterNotFound",
    "MANIFEST",
    "adapter_ids",
    "check_id",
    "publish_adapter",
    "read_adapter_blob",
    "read_adapter_file",
    "read_manifest",
]

ADAPTERS = "adapters/"
MANIFEST = "manifest.json"
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
# Fields that may legitimately differ between two publishes of the same content (a retry).
_VOLATILE = frozenset({"created_at"})


class AdapterNotFound(ObjectNotFound):
    """No manifest exists for this adapter id (it was never published, or only partly)."""


def check_id(adapter_id: object, what: str = "adapter_id") -> str:
    """Validate an id usable as one path segment: [A-Za-z0-9][A-Za-z0-9._-]{0,127}."""
    if not isinstance(adapter_id, str) or not _ID_RE.match(adapter_id):
        raise ValueError(
            f"invalid {what} {adapter_id!r}: use 1-128 characters from [A-Za-z0-9._-], "
            "starting with a letter or digit"
        )
    return adapter_id


def _manifest_key(adapter_id: str) -> str:
    return f"{ADAPTERS}{check_id(adapter_id)}/{MANIFEST}"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _same_content(a: dict[str, Any], b: dict[str, Any]) -> bool:
    strip = lambda m: {k: v for k, v in m.items() if k not in _VOLATILE}  # noqa: E731
    return strip(a) == strip(b)


def publish_adapter(store: Store, adapter_id: str, blobs: dict[str, bytes], manifest: dict) -> dict:
    """Publish an adapter: upload `blobs`, then write the manifest last; return the stored manifest.

    `blobs` maps names (relative paths, e.g. `adapter.safetensors`, `peft/adapter_config.json`)
    to bytes. The stored manifest is `manifest` plus `adapter_id` and
    `blobs = {name: {"sha256": hex, "size": n}}`. Publishing identical content again (ignoring
    `created_at`) returns the existing manifest; different content raises `ConflictError`.
    """
    check_id(adapter_id)
    if not isinstance(manifest, dict):
        raise ValueError(f"manifest must be a dict, got {type(manifest).__name__}")
    if not blobs:
        raise ValueError(f"adapter {adapter_id!r}: no blobs to publish")
    if manifest.get("adapter_id", adapter_id) != adapter_id:
        raise ValueError(f"manifest adapter_id {manifest['adapter_id']!r} differs from {adapter_id!r}")
    if "blobs" in manifest:
        raise ValueError("manifest field 'blobs' is reserved (computed by publish_adapter)")
    for name, data in blobs.items():
        if name == MANIFEST or not isinstance(name, str):
            raise ValueError(f"adapter {adapter_id!r}: invalid blob name {name!r}")
        validate_key(f"{ADAPTERS}{adapter_id}/{name}")
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise ValueError(f"adapter {adapter_id!r}: blob {name!r} must be bytes, got {type(data).__name__}")
    stored = dict(manifest)
    stored["adapter_id"] = adapter_id
    stored["blobs"] = {n: {"sha256": _sha256(bytes(d)), "size": len(d)} for n, d in sorted(blobs.items())}
    try:
        encoded = json.dumps(stored, sort_keys=True, indent=1).encode()
    except (TypeError, ValueError) as exc:
        raise ValueError(f"adapter {adapter_id!r}: manifest is not JSON-serialisable: {exc}") from exc
    stored = json.loads(encoded)  # normalised (tuples -> lists), as a reader will see it

    existing = _existing(store, adapter_id, stored)
    if existing is not None:
        return existing
    for name in sorted(blobs):
        store.put_bytes(f"{ADAPTERS}{adapter_id}/{name}", bytes(blobs[name]))
    try:
        store.put_if(_manifest_key(adapter_id), encoded, None)
    except ConflictError:
        existing = _existing(store, adapter_id, stored)  # lost a race: same content is fine
        if existing is None:  # pragma: no cover - manifest vanished again
            raise
        return existing
    return stored


def _existing(store: Store, adapter_id: str, stored: dict) -> dict | None:
    try:
        current = read_manifest(store, adapter_id)
    except AdapterNotFound:
        return None
    if _same_content(current, stored):
        return current
    raise ConflictError(
        f"adapter {adapter_id!r} already exists in {store.url} with different content; "
        "publish under a new adapter_id"
    )


def read_manifest(store: Store, adapter_id: str) -> dict:
    """Return the stored manifest; `AdapterNotFound` if the adapter was never (fully) published."""
    key = _manifest_key(adapter_id)
    try:
        raw = store.get_bytes(key)
    except ObjectNotFound:
        raise AdapterNotFound(f"adapter {adapter_id!r} not found in {store.url} (no {key})") from None
    try:
        manifest = json.loads(raw)
    except ValueError as exc:
        raise IntegrityError(f"adapter {adapter_id!r}: {key} is not valid JSON: {exc}") from exc
    if not isinstance(manifest, dict) or not isinstance(manifest.get("blobs"), dict):
        raise IntegrityError(f"adapter {adapter_id!r}: {key} lacks a 'blobs' table")
    return manifest


def _entry(manifest: dict, adapter_id: str, name: str) -> dict:
    try:
        return manifest["blobs"][name]
    except KeyError:
        have = sorted(manifest["blobs"])
        raise ObjectNotFound(f"adapter {adapter_id!r} has no blob {name!r} (it has {have})") from None


def read_adapter_blob(store: Store, adapter_id: str, name: str) -> bytes:
    """Return one blob of a published adapter after checking its size and sha256."""
    entry = _entry(read_manifest(store, adapter_id), adapter_id, name)
    key = f"{ADAPTERS}{adapter_id}/{name}"
    try:
        data = store.get_bytes(key)
    except ObjectNotFound:
        raise IntegrityError(f"adapter {adapter_id!r}: blob {name!r} is listed in the manifest but missing") from None
    if len(data) != entry["size"] or _sha256(data) != entry["sha256"]:
        raise IntegrityError(
            f"adapter {adapter_id!r}: blob {name!r} fails verification (sha256 {_sha256(data)[:16]}..., "
            f"{len(data)} bytes; manifest says {entry['sha256'][:16]}..., {entry['size']} bytes)"
        )
    return data


def read_adapter_file(store: Store, adapter_id: str, name: str, path: str | Path) -> Path:
    """Download one blob to `path`, verified; on mismatch nothing is left at `path`."""
    entry = _entry(read_manifest(store, adapter_id), adapter_id, name)
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
    os.close(fd)
    try:
        try:
            store.get_file(f"{ADAPTERS}{adapter_id}/{name}", tmp)
        except ObjectNotFound:
            raise IntegrityError(f"adapter {adapter_id!r}: blob {name!r} listed but missing") from None
        h = hashlib.sha256()
        with open(tmp, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        if os.path.getsize(tmp) != entry["size"] or h.hexdigest() != entry["sha256"]:
            raise IntegrityError(f"adapter {adapter_id!r}: blob {name!r} fails sha256/size verification")
        os.replace(tmp, dest)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return dest


def adapter_ids(store: Store) -> list[str]:
    """Ids of every published adapter (those whose manifest exists), sorted."""
    ids = []
    for key in store.list(ADAPTERS):
        parts = key.split("/")
        if len(parts) == 3 and parts[2] == MANIFEST:
            ids.append(parts[1])
    return ids

