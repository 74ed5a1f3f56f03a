"""Mask calibration: magnitude top-k of |B| after LoRI-D.

For a group G of B matrices (the whole model, one decoder layer, or one matrix):

    k_G = round((1 - sparsity) * |G|)                    entries kept
    M   = top-k_G of |B| over the eligible entries of G   (ties broken by position)

With a *protected* mask P (earlier tasks of a continual update) only entries outside P are
eligible, so the new mask is disjoint from P; k_G is still measured against the whole group and
capped by the number of eligible entries.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from .config import GRANULARITIES

_LAYER_INDEX = re.compile(r"(^|\.)(\d+)(\.|$)")


def layer_of(module_name: str) -> str:
    """The decoder-layer group of a module: the name up to its first numeric component."""
    match = _LAYER_INDEX.search(module_name)
    return module_name if match is None else module_name[: match.end(2)]


@dataclass(frozen=True)
class MaskResult:
    """Calibrated masks plus the achieved density kept / total."""

    masks: dict[str, torch.Tensor]
    kept: int
    total: int

    @property
    def density(self) -> float:
        return self.kept / self.total if self.total else 0.0


def _groups(names: list[str], granularity: str) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for name in names:
        key = {"model": "", "layer": layer_of(name), "matrix": name}[granularity]
        groups.setdefault(key, []).append(name)
    return groups


def calibrate_masks(
    b: Mapping[str, torch.Tensor],
    sparsity: float,
    granularity: str = "model",
    protected: Mapping[str, torch.Tensor] | None = None,
) -> MaskResult:
    """Top-k |B| masks (see module docstring); ``b`` and ``protected`` map module name -> (d_out, r)."""
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity={sparsity!r}: must be in [0, 1)")
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity={granularity!r}: must be one of {GRANULARITIES}")
    if not b:
        raise ValueError("b: no matrices to calibrate")
    protected = protected or {}
    for name, p in protected.items():
        if name not in b:
            raise ValueError(f"protected mask for {name!r} has no matching B matrix")
        if tuple(p.shape) != tuple(b[name].shape) or p.dtype != torch.bool:
            raise ValueError(f"protected mask for {name!r}: expected bool {tuple(b[name].shape)}, got {p.dtype} {tuple(p.shape)}")
    masks: dict[str, torch.Tensor] = {}
    kept = total = 0
    for names in _groups(sorted(b), granularity).values():
        scores = torch.cat([b[n].detach().float().abs().reshape(-1).cpu() for n in names])
        eligible = torch.cat(
            [
                ~protected[n].reshape(-1).cpu() if n in protected else torch.ones(b[n].numel(), dtype=torch.bool)
                for n in names
            ]
        )
        k = min(round((1.0 - sparsity) * scores.numel()), int(eligible.sum()))
        scores = torch.where(eligible, scores, torch.full_like(scores, -1.0))
        order = torch.sort(scores, descending=True, stable=True).indices
        flat = torch.zeros(scores.numel(), dtype=torch.bool)
        flat[order[:k]] = True
        kept += k
        total += scores.numel()
        offset = 0
        for n in names:
            size = b[n].numel()
            masks[n] = flat[offset : offset + size].view(b[n].shape).to(b[n].device)
            offset += size
    return MaskResult(masks=masks, kept=kept, total=total)


def mask_overlap(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> float:
    """|M_a ∩ M_b| / |M_a ∪ M_b| over the modules the two mask sets share (0 when disjoint)."""
    inter = union = 0
    for name in set(a) & set(b):
        inter += int((a[name] & b[name]).sum())
        union += int((a[name] | b[name]).sum())
    return inter / union if union else 0.0
