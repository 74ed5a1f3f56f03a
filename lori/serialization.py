"""The LoRI adapter file: one safetensors file, all metadata in its header.

Tensors, for every adapted module ``m`` (B_m is d_out x r, flattened row-major):

    dense adapter (masks None):   ``b:<m>``       (d_out, r)  float32 | bfloat16
    sparse adapter:               ``values:<m>``  (nnz,)      float32 | bfloat16   B_m.flat[i_0 < i_1 < ...]
                                  ``mask:<m>``    (bytes,)    uint8 | uint16 | uint32
                                                  the positions i_j as a packed bitmap or escape-coded
                                                  gaps, whichever is smaller (see ``lori.sparse_codec``)

Header metadata (string -> string):

    format = "lori-adapter", format_version = "1", values_dtype, digest (sha256 of every A)
    meta    JSON: base_model, base_revision, segments [{seed, rank, distribution}], rank, alpha,
                  target_modules, sparsity, granularity, task, kind, family, extra
    modules JSON: [{name, in_features, d_out, encoding ("dense" | "bitmap" | "gapsW"), nnz}]
    sha256  = sha256(canonical JSON of the other metadata || for each tensor in key order:
                     key, dtype, shape, raw little-endian bytes) -- an integrity check, not a signature.

A is never stored: loading regenerates it from the segments and refuses a digest mismatch
(``ProjectionMismatch``). Anything malformed, tampered, truncated or foreign raises
``AdapterFormatError``; non-finite B values are rejected on save and on load.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .adapter import Adapter, AdapterMeta, ProjectionMismatch
from .projection import Segment, projection_digest
from .sparse_codec import CodecError, decode_mask, encode_mask

FORMAT = "lori-adapter"
FORMAT_VERSION = "1"
VALUES_DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16}
_MAX_HEADER = 100 * 1024 * 1024


class AdapterFormatError(ValueError):
    """The bytes are not a valid LoRI adapter file (foreign, truncated, tampered or malformed)."""


# ------------------------------------------------------------------ helpers
def _dtype_name(values_dtype: str | torch.dtype) -> str:
    for name, dtype in VALUES_DTYPES.items():
        if values_dtype in (name, dtype):
            return name
    raise ValueError(f"values_dtype={values_dtype!r}: must be one of {list(VALUES_DTYPES)}")


def _checksum(metadata: dict[str, str], tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({k: v for k, v in metadata.items() if k != "sha256"}, sort_keys=True).encode())
    for key in sorted(tensors):
        t = tensors[key].detach().cpu().contiguous()
        h.update(f"|{key}|{str(t.dtype)}|{list(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _meta_to_json(meta: AdapterMeta) -> str:
    body = {
        "base_model": meta.base_model,
        "base_revision": meta.base_revision,
        "segments": [{"seed": s.seed, "rank": s.rank, "distribution": s.distribution} for s in meta.segments],
        "rank": meta.rank,
        "alpha": meta.alpha,
        "target_modules": meta.target_modules if isinstance(meta.target_modules, str) else list(meta.target_modules),
        "sparsity": meta.sparsity,
        "granularity": meta.granularity,
        "task": meta.task,
        "kind": meta.kind,
        "family": meta.family,
        "extra": meta.extra,
    }
    try:
        return json.dumps(body, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"adapter metadata is not JSON-serializable ({exc}); check meta.extra") from exc


def _meta_from_json(text: str) -> AdapterMeta:
    body = json.loads(text)
    if not isinstance(body, dict):
        raise ValueError("meta is not a JSON object")
    segments = tuple(Segment(**s) for s in body["segments"])
    meta = AdapterMeta(
        base_model=body["base_model"],
        segments=segments,
        alpha=body["alpha"],
        target_modules=body["target_modules"],
        task=body["task"],
        kind=body["kind"],
        sparsity=body["sparsity"],
        granularity=body["granularity"],
        base_revision=body["base_revision"],
        family=body["family"],
        extra=body["extra"],
    )
    if body["rank"] != meta.rank:
        raise ValueError(f"rank {body['rank']!r} differs from the segments' total {meta.rank}")
    return meta


# --------------------------------------------------------------------- save
def encode_module(
    name: str, b: torch.Tensor, in_features: int, mask: torch.Tensor | None, values_dtype: str | torch.dtype
) -> tuple[dict, dict[str, torch.Tensor]]:
    """(module entry, tensors) of one module: dense ``b:<m>`` or ``values:<m>`` + smallest ``mask:<m>`` code."""
    dtype_name = _dtype_name(values_dtype)
    b = b.detach().to("cpu", torch.float32)  # (d_out, r)
    entry = {"name": name, "in_features": int(in_features), "d_out": int(b.shape[0])}
    if mask is None:
        stored = b.to(VALUES_DTYPES[dtype_name]).contiguous()
        tensors = {f"b:{name}": stored}
        entry.update(encoding="dense", nnz=stored.numel())
    else:
        flat_mask = mask.detach().cpu().reshape(-1).numpy()
        encoding, code = encode_mask(flat_mask)
        index = torch.from_numpy(np.flatnonzero(flat_mask))
        stored = b.reshape(-1)[index].to(VALUES_DTYPES[dtype_name]).contiguous()  # (nnz,)
        tensors = {f"values:{name}": stored, f"mask:{name}": torch.from_numpy(code)}
        entry.update(encoding=encoding, nnz=int(index.numel()))
    if not bool(torch.isfinite(stored).all()):
        raise ValueError(f"B of {name!r} has non-finite values (in {dtype_name}); refusing to save")
    return entry, tensors


def assemble(
    meta: AdapterMeta,
    digest: str,
    encoded: list[tuple[dict, dict[str, torch.Tensor]]],
    values_dtype: str | torch.dtype = "float32",
) -> bytes:
    """The file from ``encode_module`` outputs (lets a caller stream modules without a dense Adapter)."""
    modules = sorted((entry for entry, _ in encoded), key=lambda e: e["name"])
    tensors = {k: t for _, ts in encoded for k, t in ts.items()}
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "values_dtype": _dtype_name(values_dtype),
        "digest": digest,
        "meta": _meta_to_json(meta),
        "modules": json.dumps(modules),
    }
    metadata["sha256"] = _checksum(metadata, tensors)
    return st_save(tensors, metadata=metadata)


def adapter_to_bytes(adapter: Adapter, values_dtype: str | torch.dtype = "float32") -> bytes:
    """The adapter as a safetensors file (see the module docstring); ``values_dtype`` float32 | bfloat16."""
    _dtype_name(values_dtype)
    encoded = [
        encode_module(
            name,
            adapter.b[name],
            adapter.in_features[name],
            None if adapter.masks is None else adapter.masks[name],
            values_dtype,
        )
        for name in sorted(adapter.b)
    ]
    return assemble(adapter.meta, adapter.digest, encoded, values_dtype)


def save_adapter(adapter: Adapter, path: str | os.PathLike, values_dtype: str | torch.dtype = "float32") -> None:
    """Write ``adapter_to_bytes(adapter)`` to ``path`` atomically (temp file + rename)."""
    path = Path(path)
    data = adapter_to_bytes(adapter, values_dtype)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


# --------------------------------------------------------------------- load
def _read_metadata(data: bytes) -> tuple[dict, dict[str, str]]:
    if len(data) < 8:
        raise AdapterFormatError(f"not a safetensors file: {len(data)} bytes, too short for a header")
    n = int.from_bytes(data[:8], "little")
    if n < 2 or n > _MAX_HEADER or 8 + n > len(data):
        raise AdapterFormatError(f"not a safetensors file (or truncated): header length {n}, file size {len(data)}")
    try:
        header = json.loads(data[8 : 8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AdapterFormatError(f"not a safetensors file: unreadable header ({exc})") from None
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(header, dict) or not isinstance(metadata or {}, dict):
        raise AdapterFormatError("not a safetensors file: header is not a JSON object")
    metadata = metadata or {}
    if metadata.get("format") != FORMAT:
        names = [k for k in header if k != "__metadata__"]
        if any("lora_A" in k or "lora_B" in k for k in names):
            raise AdapterFormatError("this is a PEFT LoRA file, not a LoRI adapter file (no 'lori-adapter' metadata)")
        raise AdapterFormatError(f"safetensors file without LoRI adapter metadata (tensors: {names[:3]}…)")
    if not all(isinstance(v, str) for v in metadata.values()):
        raise AdapterFormatError("header metadata values must be strings")
    return header, metadata


def _float_tensor(t: torch.Tensor, shape: tuple[int, ...], what: str) -> torch.Tensor:
    if t.dtype not in VALUES_DTYPES.values() or tuple(t.shape) != shape:
        raise AdapterFormatError(f"{what}: expected float32/bfloat16 {shape}, got {t.dtype} {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()):
        raise AdapterFormatError(f"{what}: non-finite values")
    return t.to(torch.float32)


def _module_b(entry: dict, r: int, tensors: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
    name, d_out, encoding, nnz = entry["name"], entry["d_out"], entry["encoding"], entry["nnz"]
    if encoding == "dense":
        return _float_tensor(tensors[f"b:{name}"], (d_out, r), f"B of {name!r}"), None
    values = _float_tensor(tensors[f"values:{name}"], (nnz,), f"values of {name!r}")
    code = tensors[f"mask:{name}"]
    try:
        index = decode_mask(encoding, code.numpy(), d_out * r, nnz)
    except (CodecError, TypeError) as exc:
        raise AdapterFormatError(f"mask of {name!r}: {exc}") from None
    index_t = torch.from_numpy(index)
    b = torch.zeros(d_out * r, dtype=torch.float32).index_put_((index_t,), values)
    mask = torch.zeros(d_out * r, dtype=torch.bool).index_fill_(0, index_t, True)
    return b.view(d_out, r), mask.view(d_out, r)


def _check_modules(modules: object) -> list[dict]:
    if not isinstance(modules, list) or not modules:
        raise AdapterFormatError("modules: expected a non-empty list")
    for e in modules:
        ok = (
            isinstance(e, dict)
            and isinstance(e.get("name"), str)
            and e["name"]
            and all(type(e.get(k)) is int and e[k] >= 0 for k in ("in_features", "d_out", "nnz"))
            and isinstance(e.get("encoding"), str)
        )
        if not ok or e["in_features"] < 1 or e["d_out"] < 1:
            raise AdapterFormatError(f"modules: malformed entry {str(e)[:200]}")
    if len({e["name"] for e in modules}) != len(modules):
        raise AdapterFormatError("modules: duplicate module names")
    if len({e["encoding"] == "dense" for e in modules}) != 1:
        raise AdapterFormatError("modules: dense and sparse modules mixed in one adapter")
    return modules


def adapter_from_bytes(data: bytes | bytearray | memoryview, check_digest: bool = True) -> Adapter:
    """Parse and validate an adapter file; with ``check_digest`` regenerate A and compare digests.

    Raises AdapterFormatError for anything that is not an intact LoRI adapter file, and
    ProjectionMismatch when the A regenerated here differs from the recorded digest.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise AdapterFormatError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    _, metadata = _read_metadata(data)
    if metadata.get("format_version") != FORMAT_VERSION:
        raise AdapterFormatError(f"unsupported format_version {metadata.get('format_version')!r} (this reader: 1)")
    missing = {"values_dtype", "digest", "meta", "modules", "sha256"} - set(metadata)
    if missing:
        raise AdapterFormatError(f"header metadata lacks {sorted(missing)}")
    try:
        tensors = st_load(data)
    except Exception as exc:  # safetensors raises its own error types for malformed payloads
        raise AdapterFormatError(f"malformed safetensors payload: {exc}") from None
    if _checksum(metadata, tensors) != metadata["sha256"]:
        raise AdapterFormatError("sha256 mismatch: the file's metadata or tensor bytes were modified or corrupted")
    try:
        meta = _meta_from_json(metadata["meta"])
        modules = json.loads(metadata["modules"])
    except (ValueError, TypeError, KeyError) as exc:
        raise AdapterFormatError(f"malformed adapter metadata: {exc!r}") from None
    modules = _check_modules(modules)
    dense = modules[0]["encoding"] == "dense"
    expected = {f"{kind}:{e['name']}" for e in modules for kind in (("b",) if dense else ("values", "mask"))}
    if expected != set(tensors):
        raise AdapterFormatError(
            f"tensor names do not match the module list: missing {sorted(expected - set(tensors))[:3]}, "
            f"unexpected {sorted(set(tensors) - expected)[:3]}"
        )
    b: dict[str, torch.Tensor] = {}
    masks: dict[str, torch.Tensor] = {}
    for entry in modules:
        b[entry["name"]], mask = _module_b(entry, meta.rank, tensors)
        if mask is not None:
            masks[entry["name"]] = mask
    digest = metadata["digest"]
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise AdapterFormatError(f"digest {digest[:80]!r} is not a sha256 hex string")
    in_features = {e["name"]: e["in_features"] for e in modules}
    try:
        adapter = Adapter(meta, b, in_features, None if dense else masks, digest)
    except ValueError as exc:
        raise AdapterFormatError(f"inconsistent adapter: {exc}") from None
    if check_digest:
        regenerated = projection_digest(meta.segments, in_features)
        if regenerated != digest:
            raise ProjectionMismatch(
                f"A regenerated from seeds {[s.seed for s in meta.segments]} has digest {regenerated[:16]}…, "
                f"the file records {digest[:16]}…; refusing to load"
            )
    return adapter


def load_adapter(path: str | os.PathLike, check_digest: bool = True) -> Adapter:
    """``adapter_from_bytes`` of the file at ``path``."""
    return adapter_from_bytes(Path(path).read_bytes(), check_digest=check_digest)
