"""Bytes of a LoRI-S adapter file vs a PEFT LoRA adapter file, Llama-3-8B shapes, r = 32, bf16.

- LoRA file: PEFT's adapter_model.safetensors, lora_A (r, d_in) and lora_B (d_out, r) in bf16 for the
  seven projections of all 32 layers (written for real; sizes do not depend on the values).
- LoRI-S file: ``lori.serialization`` format (bf16 values at the mask + the smaller of packed
  bitmap / escape-coded gaps per module), written module by module with synthetic B, sparsity 0.9:
    * ``random``: every module's mask is a uniformly random 10 % of its entries;
    * ``topk``: B_m[i, j] ~ N(0, (σ_m ρ_i κ_j)^2) with log-normal module, row and column scales
      (sd 0.5, 0.5, 0.3 in ln), then ONE model-level magnitude threshold keeping 10 % of all entries
      (the paper's default granularity), so densities differ between modules and rows.
- values_only = 2 * nnz bytes (bf16 values alone: the delta when the mask is already known).

ratio = lori_s_bytes / lora_bytes. The headline keys use the ``random`` masks; ``topk_*`` keys the
structured ones. Run: ``python bench/sizes.py [--json]``; with --json the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lori import AdapterMeta, Segment  # noqa: E402
from lori.serialization import assemble, encode_module  # noqa: E402

RANK, SPARSITY, LAYERS = 32, 0.9, 32
HIDDEN, INTER, KV = 4096, 14336, 1024
PROJ = {  # name -> (d_out, d_in)
    "self_attn.q_proj": (HIDDEN, HIDDEN),
    "self_attn.k_proj": (KV, HIDDEN),
    "self_attn.v_proj": (KV, HIDDEN),
    "self_attn.o_proj": (HIDDEN, HIDDEN),
    "mlp.gate_proj": (INTER, HIDDEN),
    "mlp.up_proj": (INTER, HIDDEN),
    "mlp.down_proj": (HIDDEN, INTER),
}
MODULES = {f"model.layers.{i}.{p}": shape for i in range(LAYERS) for p, shape in PROJ.items()}


def lora_bytes(directory: Path) -> int:
    """Size of a real PEFT LoRA adapter_model.safetensors (bf16 A and B)."""
    tensors = {}
    for name, (d_out, d_in) in MODULES.items():
        tensors[f"base_model.model.{name}.lora_A.weight"] = torch.zeros(RANK, d_in, dtype=torch.bfloat16)
        tensors[f"base_model.model.{name}.lora_B.weight"] = torch.zeros(d_out, RANK, dtype=torch.bfloat16)
    path = directory / "adapter_model.safetensors"
    save_file(tensors, str(path), metadata={"format": "pt"})
    return path.stat().st_size


def structured_b(index: int, d_out: int) -> torch.Tensor:
    """Synthetic B (d_out, r) with log-normal module / row / column scales (module ``index``'s seed)."""
    g = torch.Generator().manual_seed(1000 + index)
    sigma = torch.exp(0.5 * torch.randn((), generator=g))
    rows = torch.exp(0.5 * torch.randn(d_out, 1, generator=g))
    cols = torch.exp(0.3 * torch.randn(1, RANK, generator=g))
    return torch.randn(d_out, RANK, generator=g) * sigma * rows * cols


def topk_threshold() -> float:
    """|B| threshold keeping (1 - SPARSITY) of all entries: histogram of log2|B| (2^20 bins, 2 passes)."""
    edges = np.linspace(-60.0, 20.0, 2**20 + 1)
    hist = np.zeros(2**20, dtype=np.int64)
    for i, (d_out, _) in enumerate(MODULES.values()):
        hist += np.histogram(np.log2(structured_b(i, d_out).abs().numpy() + 1e-30), bins=edges)[0]
    keep = round((1 - SPARSITY) * hist.sum())
    above = np.cumsum(hist[::-1])[::-1]  # entries in bins >= j
    j = int(np.nonzero(above >= keep)[0][-1])
    return float(2.0 ** edges[j])


def lori_file(directory: Path, scenario: str) -> dict:
    """Write the LoRI-S file of ``scenario`` (see module docstring); returns its figures."""
    threshold = topk_threshold() if scenario == "topk" else None
    g = torch.Generator().manual_seed(0)
    encoded, nnz, mix = [], 0, Counter()
    for i, (name, (d_out, d_in)) in enumerate(MODULES.items()):
        if threshold is None:
            b = torch.randn(d_out, RANK, generator=g)
            mask = torch.zeros(d_out * RANK, dtype=torch.bool)
            mask[torch.randperm(d_out * RANK, generator=g)[: round((1 - SPARSITY) * d_out * RANK)]] = True
            mask = mask.view(d_out, RANK)
        else:
            b = structured_b(i, d_out)
            mask = b.abs() >= threshold
        entry, tensors = encode_module(name, b * mask, d_in, mask, "bfloat16")
        encoded.append((entry, tensors))
        nnz += entry["nnz"]
        mix[entry["encoding"]] += 1
    meta = AdapterMeta(
        base_model="meta-llama/Meta-Llama-3-8B", segments=(Segment(0, RANK),), alpha=64.0,
        target_modules=tuple(PROJ), sparsity=SPARSITY, granularity="model", task="synthetic",
    )
    path = directory / f"lori-{scenario}.safetensors"
    path.write_bytes(assemble(meta, "0" * 64, encoded, "bfloat16"))
    index_bytes = sum(t.nbytes for _, ts in encoded for k, t in ts.items() if k.startswith("mask:"))
    return {"bytes": path.stat().st_size, "nnz": nnz, "index_bytes": index_bytes, "mix": dict(mix)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        lora = lora_bytes(directory)
        results = {s: lori_file(directory, s) for s in ("random", "topk")}
    print(f"PEFT LoRA file (r={RANK}, bf16 A+B): {lora:,} bytes")
    print(f"{'masks':>7}  {'nnz':>10}  {'file bytes':>12}  {'index bits/nnz':>14}  {'ratio':>7}  {'values-only':>11}  codes")
    figures: dict[str, object] = {"lora_bytes": lora}
    for scenario, r in results.items():
        ratio, values_ratio = r["bytes"] / lora, 2 * r["nnz"] / lora
        print(
            f"{scenario:>7}  {r['nnz']:>10,}  {r['bytes']:>12,}  {8 * r['index_bytes'] / r['nnz']:>14.2f}  "
            f"{ratio:>7.4f}  {values_ratio:>11.4f}  {r['mix']}"
        )
        prefix = "" if scenario == "random" else "topk_"
        figures.update(
            {
                f"{prefix}lori_s_bytes": r["bytes"],
                f"{prefix}nnz": r["nnz"],
                f"{prefix}ratio": ratio,
                f"{prefix}values_only_ratio": values_ratio,
                f"{prefix}index_bits_per_nnz": 8 * r["index_bytes"] / r["nnz"],
                f"{prefix}encodings": r["mix"],
            }
        )
    if args.json:
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
