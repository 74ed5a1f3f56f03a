"""Trainable parameters of LoRA, LoRI-D and LoRI-S on Llama-3-8B (all seven projections).

For every adapted module with weight d_out x d_in and rank r:

    LoRA   = r * (d_in + d_out)        (A and B trained)
    LoRI-D = r * d_out                 (B only; A frozen) -- counted by lori.inject + trainable_parameters
    LoRI-S = round(0.1 * LoRI-D)       (mask nnz at sparsity 0.9, model-level top-k)

The model is built on the meta device from Llama-3-8B's config (no weights, no download).
Run: ``python bench/params.py [--json]``; with --json the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lori import LoriConfig, find_targets, inject, trainable_parameters  # noqa: E402
from lori.layer import linear_shape  # noqa: E402

RANKS = (32, 64)
SPARSITY = 0.9


def llama3_8b() -> torch.nn.Module:
    """Llama-3-8B's architecture on the meta device (shapes only)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=128256,
        max_position_embeddings=8192,
    )
    with torch.device("meta"):
        return LlamaForCausalLM(config)


def count(rank: int) -> dict[str, int]:
    model = llama3_8b()
    config = LoriConfig(rank=rank, alpha=2.0 * rank, sparsity=SPARSITY)
    shapes = [linear_shape(model.get_submodule(n)) for n in find_targets(model, config.target_modules)]
    lora = sum(rank * (d_in + d_out) for d_out, d_in in shapes)
    inject(model, config)
    lori_d = trainable_parameters(model)
    return {"modules": len(shapes), "lora": lora, "lori_d": lori_d, "lori_s": round((1 - SPARSITY) * lori_d)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = parser.parse_args()
    figures: dict[str, float] = {}
    print(f"{'rank':>4}  {'modules':>7}  {'LoRA':>12}  {'LoRI-D':>12}  {'LoRI-S':>12}  {'S/LoRA':>7}  {'D/LoRA':>7}")
    for rank in RANKS:
        c = count(rank)
        figures.update({f"lora_r{rank}": c["lora"], f"lori_d_r{rank}": c["lori_d"], f"lori_s_r{rank}": c["lori_s"]})
        figures[f"lori_s_over_lora_r{rank}"] = c["lori_s"] / c["lora"]
        print(
            f"{rank:>4}  {c['modules']:>7}  {c['lora']:>12,}  {c['lori_d']:>12,}  {c['lori_s']:>12,}  "
            f"{c['lori_s'] / c['lora']:>7.2%}  {c['lori_d'] / c['lora']:>7.2%}"
        )
    if args.json:
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
