"""JSONL datasets in the store: `datasets/<name>/{train,eval}.jsonl` + `manifest.json` (last).

Every line must be a JSON object with string `prompt` and `response` (instruction data, loss on
the response) or a string `text` (plain language modelling). Validation happens before anything
is written, so a bad file stores nothing. The manifest records each split's sha256, size and
record count, and a dataset `digest` (sha256 over the splits' digests) used as lineage.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path

from .base import ConflictError, IntegrityError, ObjectNotFound, Store, StoreError
from .publish import check_id

__all__ = ["DATASETS", "DatasetError", "DatasetNotFound", "read_dataset", "read_dataset_bytes",
           "read_dataset_manifest",
           "upload_dataset", "validate_jsonl"]

DATASETS = "datasets/"
SPLITS = ("train", "eval")


class DatasetError(StoreError, ValueError):
    """A dataset file is malformed; the message names the file and line."""


class DatasetNotFound(ObjectNotFound):
    """No dataset (manifest) of this name exists."""


def validate_jsonl(data: bytes, filename: str) -> int:
    """Check every line; return the number of records. Raise `DatasetError("<file> line N: ...")`.

    A final newline is allowed; blank lines elsewhere are errors, as is a file without records.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DatasetError(f"{filename} line {line}: not valid UTF-8 ({exc.reason})") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not lines:
        raise DatasetError(f"{filename}: empty, no records")
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            raise DatasetError(f"{filename} line {n}: blank line")
        try:
            rec = json.loads(line)
        except ValueError as exc:
            raise DatasetError(f"{filename} line {n}: invalid JSON: {exc}") from None
        if not isinstance(rec, dict):
            raise DatasetError(f"{filename} line {n}: expected a JSON object, got {type(rec).__name__}")
        if "text" in rec and not {"prompt", "response"} & rec.keys():
            if not isinstance(rec["text"], str):
                raise DatasetError(f"{filename} line {n}: field 'text' must be a string")
            continue
        for fld in ("prompt", "response"):
            if fld not in rec:
                raise DatasetError(
                    f"{filename} line {n}: missing field {fld!r} (need 'prompt' and 'response', or 'text')"
                )
            if not isinstance(rec[fld], str):
                raise DatasetError(f"{filename} line {n}: field {fld!r} must be a string, "
                                   f"got {type(rec[fld]).__name__}")
    return len(lines)


def _load(src: bytes | str | Path, split: str) -> bytes:
    if isinstance(src, (bytes, bytearray, memoryview)):
        return bytes(src)
    try:
        return Path(src).read_bytes()
    except OSError as exc:
        raise DatasetError(f"{split}.jsonl: cannot read {str(src)!r}: {exc}") from exc


def _manifest_key(name: str) -> str:
    return f"{DATASETS}{check_id(name, 'dataset name')}/manifest.json"


def upload_dataset(store: Store, name: str, train: bytes | str | Path,
                   eval: bytes | str | Path | None = None) -> dict:
    """Validate and store a dataset; return its manifest.

    Re-uploading identical content returns the existing manifest; different content under an
    existing name raises `ConflictError`.
    """
    key = _manifest_key(name)
    payload = {"train": _load(train, "train")}
    if eval is not None:
        payload["eval"] = _load(eval, "eval")
    splits = {}
    for split, data in payload.items():
        records = validate_jsonl(data, f"{split}.jsonl")
        splits[split] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "records": records}
    digest = hashlib.sha256(
        "".join(f"{s}:{splits[s]['sha256']};" for s in sorted(splits)).encode()
    ).hexdigest()
    manifest = {"name": name, "splits": splits, "digest": digest,
                "created_at": datetime.now(timezone.utc).isoformat()}
    try:
        existing = read_dataset_manifest(store, name)
    except DatasetNotFound:
        existing = None
    if existing is None:
        for split, data in payload.items():
            store.put_bytes(f"{DATASETS}{name}/{split}.jsonl", data)
        try:
            store.put_if(key, json.dumps(manifest, sort_keys=True, indent=1).encode(), None)
            return manifest
        except ConflictError:
            existing = read_dataset_manifest(store, name)
    if existing.get("digest") == digest:
        return existing
    raise ConflictError(f"dataset {name!r} already exists in {store.url} with different content")


def read_dataset_manifest(store: Store, name: str) -> dict:
    """The dataset's manifest; `DatasetNotFound` naming it if absent."""
    key = _manifest_key(name)
    try:
        return json.loads(store.get_bytes(key))
    except ObjectNotFound:
        raise DatasetNotFound(f"dataset {name!r} not found in {store.url} (no {key})") from None


def read_dataset_bytes(store: Store, name: str, split: str = "train") -> bytes:
    """The raw JSONL of one split, verified against the manifest's sha256."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    manifest = read_dataset_manifest(store, name)
    if split not in manifest["splits"]:
        raise DatasetNotFound(f"dataset {name!r} has no {split!r} split")
    data = store.get_bytes(f"{DATASETS}{name}/{split}.jsonl")
    if hashlib.sha256(data).hexdigest() != manifest["splits"][split]["sha256"]:
        raise IntegrityError(f"dataset {name!r}: {split}.jsonl fails sha256 verification")
    return data


def read_dataset(store: Store, name: str, split: str = "train") -> list[dict]:
    """The records of one split, verified against the manifest."""
    return [json.loads(line) for line in read_dataset_bytes(store, name, split).decode().splitlines()]


