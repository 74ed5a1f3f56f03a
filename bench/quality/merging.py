"""Merging all task adapters into one: glue to ``lori.merge`` (LoRI) and ``lori.baselines`` (LoRA).

LoRA baselines (per module, task t: ΔW_t = s_t B_t A_t, weights w_t):
- ``lora-linear``: PEFT ``add_weighted_adapter(combination_type="linear")``: A = Σ sqrt(w_t s_t) A_t,
  B = Σ sqrt(w_t s_t) B_t, ΔW = B A (cross terms B_t A_u included, as PEFT does).
- ``lora-cat``:    PEFT ``cat``: exact Σ_t w_t ΔW_t at rank Σ r_t (= task arithmetic).
- ``lora-ties``:   TIES on the ΔW_t (trim to ``ties_density``, sign election, disjoint mean).
- ``lora-dare``:   DARE on the ΔW_t (Bernoulli drop with keep probability ``dare_density``,
                   rescale by 1 / density, weighted sum).
LoRI:
- ``lori-concat``: ``lori.merge.concat_merge`` of adapters with per-task seeds: exact Σ_t w_t ΔW_t.
- ``lori-bsum``:   ``lori.merge.sum_merge`` of adapters sharing one seed with disjoint masks:
                   B = Σ_t w_t B_t at rank r.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from lori import Adapter
from lori.baselines import cat_merge, dare_merge, peft_linear_merge, ties_merge
from lori.merge import concat_merge, sum_merge

from .methods import LoraAdapter, ProjectionCache, deltas

LORA_MERGES: tuple[str, ...] = ("lora-linear", "lora-ties", "lora-dare", "lora-cat")
LORI_MERGES: tuple[str, ...] = ("lori-concat", "lori-bsum")


@dataclass(frozen=True)
class MergeSpec:
    weight: float = 1.0
    ties_density: float = 0.5
    dare_density: float = 0.5
    dare_seed: int = 0


def lora_merged_deltas(method: str, adapters: Sequence[LoraAdapter], spec: MergeSpec) -> Iterator[tuple[str, torch.Tensor]]:
    """(module, merged ΔW) one module at a time for a LoRA baseline merge."""
    weights = [spec.weight] * len(adapters)
    scalings = [a.scaling for a in adapters]
    for name in adapters[0].a:
        pairs = [(a.a[name], a.b[name]) for a in adapters]
        if method == "lora-linear":
            a_m, b_m = peft_linear_merge(pairs, weights, scalings)
            yield name, b_m @ a_m
        elif method == "lora-cat":
            a_m, b_m = cat_merge(pairs, weights, scalings)
            yield name, b_m @ a_m
        else:
            task_deltas = [s * b.float() @ a.float() for (a, b), s in zip(pairs, scalings, strict=True)]
            if method == "lora-ties":
                yield name, ties_merge(task_deltas, weights, spec.ties_density)
            elif method == "lora-dare":
                seed = spec.dare_seed + zlib.crc32(name.encode())  # a fixed mask per module
                yield name, dare_merge(task_deltas, weights, spec.dare_density, seed)
            else:
                raise ValueError(f"method={method!r}: must be one of {LORA_MERGES}")


def lori_merge(method: str, adapters: Sequence[Adapter], spec: MergeSpec) -> Adapter:
    """The merged LoRI adapter (``lori.merge``)."""
    weights = [spec.weight] * len(adapters)
    if method == "lori-concat":
        return concat_merge(adapters, weights)
    if method == "lori-bsum":
        return sum_merge(adapters, weights)
    raise ValueError(f"method={method!r}: must be one of {LORI_MERGES}")


def lori_merged_deltas(merged: Adapter, cache: ProjectionCache) -> Iterator[tuple[str, torch.Tensor]]:
    return deltas(merged, cache)
