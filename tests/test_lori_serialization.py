"""The LoRI adapter file: exact round trips, mask codes, and refusal of anything not intact."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from lori import Adapter, AdapterMeta, ProjectionMismatch, Segment
from lori.peft_export import WEIGHTS_NAME, export_peft_bytes
from lori.serialization import (
    AdapterFormatError,
    _checksum,
    adapter_from_bytes,
    adapter_to_bytes,
    load_adapter,
    save_adapter,
)
from lori.sparse_codec import CodecError, decode_mask, encode_gaps, encode_mask, gaps_of

SHAPES = {  # module -> (d_out, d_in)
    "model.layers.0.self_attn.q_proj": (48, 32),
    "model.layers.0.mlp.down_proj": (32, 80),
    "model.layers.1.mlp.up_proj": (80, 32),
}


def make_adapter(density: float | None = 0.1, rank: int = 8, seed: int = 7, per_module=None) -> Adapter:
    """Random B (and random masks of ``density``; None = dense adapter) over SHAPES."""
    g = torch.Generator().manual_seed(seed)
    b, masks = {}, {}
    for name, (d_out, _) in SHAPES.items():
        dens = (per_module or {}).get(name, density)
        values = torch.randn(d_out, rank, generator=g)
        if dens is None:
            b[name] = values
        else:
            masks[name] = torch.rand(d_out, rank, generator=g) < dens
            b[name] = values * masks[name]
    meta = AdapterMeta(
        base_model="tiny-llama",
        segments=(Segment(seed, rank),),
        alpha=16.0,
        target_modules=("q_proj", "down_proj", "up_proj"),
        task="demo",
        kind="lori-d" if density is None else "lori-s",
        sparsity=None if density is None else 1 - density,
        granularity="model",
        base_revision="abc123",
        family="fam",
        extra={"steps": 3, "note": "ü"},
    )
    in_features = {n: d_in for n, (_, d_in) in SHAPES.items()}
    return Adapter(meta, b, in_features, None if density is None else masks)


def assert_same(a: Adapter, b: Adapter) -> None:
    assert a.meta == b.meta and a.meta.extra == b.meta.extra
    assert a.digest == b.digest and a.in_features == b.in_features
    assert set(a.b) == set(b.b)
    for n in a.b:
        torch.testing.assert_close(a.b[n], b.b[n], rtol=0, atol=0)
    assert (a.masks is None) == (b.masks is None)
    if a.masks is not None:
        for n in a.masks:
            assert torch.equal(a.masks[n], b.masks[n])


def header_metadata(data: bytes) -> dict[str, str]:
    n = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + n])["__metadata__"]


def resave(data: bytes, edit) -> bytes:
    """Decode, let ``edit(metadata, tensors)`` change things, re-save with a recomputed sha256."""
    metadata, tensors = header_metadata(data), st_load(data)
    edit(metadata, tensors)
    metadata["sha256"] = _checksum(metadata, tensors)
    return st_save(tensors, metadata=metadata)


# ------------------------------------------------------------------ round trips
@pytest.mark.parametrize("density", [0.1, 0.5, 0.01, None])
def test_round_trip_exact(density):
    adapter = make_adapter(density)
    data = adapter_to_bytes(adapter)
    assert_same(adapter, adapter_from_bytes(data))


def test_save_load_file(tmp_path):
    adapter = make_adapter(0.1)
    path = tmp_path / "adapter.safetensors"
    save_adapter(adapter, path)
    assert [p.name for p in tmp_path.iterdir()] == ["adapter.safetensors"]
    assert_same(adapter, load_adapter(path))


def test_metadata_fields():
    meta = header_metadata(adapter_to_bytes(make_adapter(0.1)))
    assert meta["format"] == "lori-adapter" and meta["format_version"] == "1"
    body = json.loads(meta["meta"])
    assert body["segments"] == [{"seed": 7, "rank": 8, "distribution": "uniform"}]
    assert body["rank"] == 8 and body["alpha"] == 16.0 and body["base_revision"] == "abc123"
    modules = {m["name"]: m for m in json.loads(meta["modules"])}
    assert modules["model.layers.0.mlp.down_proj"]["in_features"] == 80
    assert modules["model.layers.0.mlp.down_proj"]["d_out"] == 32


def test_encoding_choice_bitmap_and_gaps():
    per_module = {"model.layers.0.self_attn.q_proj": 0.6, "model.layers.1.mlp.up_proj": 0.05}
    adapter = make_adapter(0.1, per_module=per_module)
    data = adapter_to_bytes(adapter)
    encodings = {m["name"]: m["encoding"] for m in json.loads(header_metadata(data)["modules"])}
    assert encodings["model.layers.0.self_attn.q_proj"] == "bitmap"
    assert encodings["model.layers.1.mlp.up_proj"].startswith("gaps")
    assert_same(adapter, adapter_from_bytes(data))


@pytest.mark.parametrize(
    "density, numel, expected",
    [(0.6, 100_000, "bitmap"), (0.1, 100_000, "gaps4"), (0.004, 100_000, "gaps8"), (3e-6, 1_000_000, "gaps32")],
)
def test_smallest_code_chosen(density, numel, expected):
    flat = np.random.default_rng(0).random(numel) < density
    flat[-1] = True
    encoding, code = encode_mask(flat)
    assert encoding == expected
    assert code.nbytes <= (numel + 7) // 8
    assert np.array_equal(decode_mask(encoding, code, numel, int(flat.sum())), np.flatnonzero(flat))


def test_bfloat16_values():
    adapter = make_adapter(0.1)
    data16, data32 = adapter_to_bytes(adapter, values_dtype="bfloat16"), adapter_to_bytes(adapter)
    assert len(data16) < len(data32)
    loaded = adapter_from_bytes(data16)
    assert header_metadata(data16)["values_dtype"] == "bfloat16"
    for n, b in adapter.b.items():
        assert torch.equal(loaded.b[n], b.to(torch.bfloat16).float())
        assert torch.equal(loaded.masks[n], adapter.masks[n])
    with pytest.raises(ValueError, match="values_dtype"):
        adapter_to_bytes(adapter, values_dtype="float16")


@pytest.mark.parametrize("width", [4, 8, 16, 32])
def test_gap_codes_round_trip(width):
    rng = np.random.default_rng(width)
    numel = 300_000
    index = np.sort(rng.choice(numel, size=500, replace=False))
    index[-1] = numel - 1  # a long final gap forces escapes for narrow widths
    for positions in (index, index[:1], index[:0], np.array([0, 1, 2])):
        code = encode_gaps(gaps_of(positions), width)
        out = decode_mask(f"gaps{width}", code, numel, positions.size)
        assert np.array_equal(out, positions)


def test_codec_rejects_bad_codes():
    flat = np.zeros(64, dtype=bool)
    flat[[3, 9, 40]] = True
    encoding, code = encode_mask(flat)
    with pytest.raises(CodecError, match="expected 4"):
        decode_mask(encoding, code, 64, 4)
    with pytest.raises(CodecError, match="outside"):
        decode_mask("gaps8", np.array([70], dtype=np.uint8), 64, 1)
    with pytest.raises(CodecError, match="padding"):
        decode_mask("bitmap", np.array([0, 0, 0, 0, 0, 0, 0, 0, 1], dtype=np.uint8), 65, 1)
    with pytest.raises(CodecError, match="escape"):
        decode_mask("gaps8", np.array([3, 255], dtype=np.uint8), 64, 1)


# --------------------------------------------------------------------- refusals
def test_digest_mismatch_refused():
    adapter = make_adapter(0.1)
    other = make_adapter(0.1, seed=8)
    forged = Adapter(adapter.meta, adapter.b, adapter.in_features, adapter.masks, other.digest)
    data = adapter_to_bytes(forged)
    with pytest.raises(ProjectionMismatch):
        adapter_from_bytes(data)
    assert adapter_from_bytes(data, check_digest=False).digest == other.digest


def test_truncated_file():
    data = adapter_to_bytes(make_adapter(0.1))
    for cut in sorted({0, 1, 7, 8, 9, 50, len(data) // 2, len(data) - 100, len(data) - 1}):
        with pytest.raises(AdapterFormatError):
            adapter_from_bytes(data[:cut])


def test_flipped_bytes_detected():
    data = adapter_to_bytes(make_adapter(0.1))
    for pos in range(0, len(data), max(1, len(data) // 300)):
        corrupted = bytearray(data)
        corrupted[pos] ^= 0x01
        with pytest.raises(AdapterFormatError):
            adapter_from_bytes(bytes(corrupted))


def test_foreign_files():
    random_st = st_save({"weight": torch.randn(4, 4)}, metadata={"format": "pt"})
    with pytest.raises(AdapterFormatError, match="without LoRI"):
        adapter_from_bytes(random_st)
    peft_file = export_peft_bytes(make_adapter(0.1))[WEIGHTS_NAME]
    with pytest.raises(AdapterFormatError, match="PEFT"):
        adapter_from_bytes(peft_file)
    for garbage in (b"", b"hello", b"\xff" * 100, json.dumps({"a": 1}).encode(), np.random.bytes(4096)):
        with pytest.raises(AdapterFormatError):
            adapter_from_bytes(garbage)
    with pytest.raises(AdapterFormatError):
        adapter_from_bytes("not bytes")  # type: ignore[arg-type]


def _first(tensors, kind):
    return next(k for k in sorted(tensors) if k.startswith(kind + ":"))


def _drop_value(metadata, tensors):
    key = _first(tensors, "values")
    tensors[key] = tensors[key][:-1].clone()


def _nan_value(metadata, tensors):
    key = _first(tensors, "values")
    tensors[key] = tensors[key].clone()
    tensors[key][0] = float("nan")


def _out_of_range(metadata, tensors):
    modules = json.loads(metadata["modules"])
    modules[0]["encoding"] = "gaps32"
    metadata["modules"] = json.dumps(modules)
    nnz = modules[0]["nnz"]
    tensors[f"mask:{modules[0]['name']}"] = torch.from_numpy(np.full(nnz, 10_000, dtype=np.uint32))


def _missing_key(metadata, tensors):
    del tensors[_first(tensors, "mask")]


def _extra_key(metadata, tensors):
    tensors["surprise"] = torch.zeros(3)


def _bad_meta(metadata, tensors):
    body = json.loads(metadata["meta"])
    body["alpha"] = -1
    metadata["meta"] = json.dumps(body)


def _bad_rank(metadata, tensors):
    body = json.loads(metadata["meta"])
    body["segments"][0]["rank"] = 4
    body["rank"] = 4
    metadata["meta"] = json.dumps(body)


def _bad_version(metadata, tensors):
    metadata["format_version"] = "99"


def _wrong_dtype(metadata, tensors):
    key = _first(tensors, "values")
    tensors[key] = tensors[key].to(torch.float64)


@pytest.mark.parametrize(
    "edit",
    [_drop_value, _nan_value, _out_of_range, _missing_key, _extra_key, _bad_meta, _bad_rank, _bad_version, _wrong_dtype],
)
def test_structurally_tampered_files(edit):
    data = resave(adapter_to_bytes(make_adapter(0.1)), edit)
    with pytest.raises(AdapterFormatError):
        adapter_from_bytes(data)


def test_sha256_guards_edits_without_recompute():
    data = adapter_to_bytes(make_adapter(0.1))
    metadata, tensors = header_metadata(data), st_load(data)
    metadata["meta"] = metadata["meta"].replace('"alpha": 16.0', '"alpha": 32.0')
    with pytest.raises(AdapterFormatError, match="sha256"):
        adapter_from_bytes(st_save(tensors, metadata=metadata))


def test_save_rejects_non_finite():
    adapter = make_adapter(None)
    adapter.b["model.layers.0.self_attn.q_proj"][0, 0] = float("inf")
    with pytest.raises(ValueError, match="non-finite"):
        adapter_to_bytes(adapter)
    adapter.b["model.layers.0.self_attn.q_proj"][0, 0] = 3.4e38  # finite in float32, inf in bfloat16
    adapter_to_bytes(adapter)
    with pytest.raises(ValueError, match="non-finite"):
        adapter_to_bytes(adapter, values_dtype="bfloat16")
