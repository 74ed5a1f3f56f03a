"""LoRI merges: exact combinations of adapters, per adapted module m.

Every adapter t contributes ΔW_t = s_t B_t A_t (s_t = alpha_t / r_t). Both merges below return an
adapter whose ΔW is exactly the weighted sum

    ΔW = Σ_t w_t ΔW_t                                                   (up to fp32 rounding)

- ``concat_merge`` (any seeds): A_cat = [A_1; ...; A_n], B_cat = [w_1 s_1 B_1, ..., w_n s_n B_n],
  rank Σ_t r_t, scaling 1.
- ``sum_merge`` (one shared A): B = Σ_t w_t B_t, rank r, same alpha.

Interference metrics: ``overlap_report`` (pairwise mask overlap) and ``subspace_overlap``
(||A_i A_j^T||_F of two adapters' projections).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch

from .adapter import Adapter, AdapterMeta, masks_of
from .compat import check_compatible, check_shared_projection, check_weights


def _common(adapters: Sequence[Adapter], attr: str, fallback):
    values = [getattr(a.meta, attr) for a in adapters]
    return values[0] if all(v == values[0] for v in values) else fallback


def _lineage(adapters: Sequence[Adapter], weights: list[float]) -> dict:
    return {
        "parents": [a.meta.task for a in adapters],
        "weights": weights,
        "parent_digests": [a.digest for a in adapters],
    }


def concat_merge(adapters: Sequence[Adapter], weights: Sequence[float] | None = None) -> Adapter:
    """Rank-growing exact merge of adapters with any seeds.

        A_cat = [A_1; ...; A_n]                          ((Σ r_t) x d_in)
        B_cat = [w_1 s_1 B_1, ..., w_n s_n B_n]           (d_out x Σ r_t)
        alpha = Σ r_t, so s = alpha / r = 1 and ΔW = B_cat A_cat = Σ_t w_t s_t B_t A_t

    The scales s_t are folded into B so that the merged adapter needs no per-block scaling; its
    segments are the inputs' segments in order (so A_cat regenerates from the seeds). Masks are
    concatenated along the rank axis (None when any input is dense). ``weights`` default to 1.0.
    Raises ValueError (naming adapter index, task and field) when base model, module set or
    shapes differ.
    """
    check_compatible(adapters)
    w = check_weights(weights, len(adapters))
    ref = adapters[0]
    rank = sum(a.rank for a in adapters)
    b = {
        name: torch.cat(
            [wt * a.meta.scaling * a.b[name].float() for wt, a in zip(w, adapters, strict=True)], dim=1
        )
        for name in ref.b
    }  # (d_out, Σ r_t)
    dense = any(a.masks is None for a in adapters)
    masks = None if dense else {n: torch.cat([a.masks[n] for a in adapters], dim=1) for n in ref.b}
    revisions = [a.meta.base_revision for a in adapters if a.meta.base_revision is not None]
    meta = AdapterMeta(
        base_model=ref.meta.base_model,
        segments=tuple(s for a in adapters for s in a.meta.segments),
        alpha=float(rank),
        target_modules=_common(adapters, "target_modules", tuple(sorted(ref.b))),
        task="+".join(a.meta.task for a in adapters),
        kind="merge-concat",
        base_revision=revisions[0] if revisions else None,
        family=_common(adapters, "family", ""),
        extra=_lineage(adapters, w),
    )
    return Adapter(meta, b, dict(ref.in_features), masks)


def sum_merge(adapters: Sequence[Adapter], weights: Sequence[float] | None = None) -> Adapter:
    """Rank-preserving exact merge ("B-sum") of adapters sharing one A.

        B = Σ_t w_t B_t,   ΔW = s B A = Σ_t w_t ΔW_t,   rank r,   mask = ∪_t M_t

    Requires identical segments (seed, rank, distribution), equal alpha and equal A digest; a
    mismatch raises ValueError naming the adapter and field and suggesting ``concat_merge``.
    ``weights`` default to 1.0 (plain sum). With disjoint masks and unit weights every task's
    coordinates are bit-identical in the result (x + 0 = x).
    """
    check_compatible(adapters)
    check_shared_projection(adapters, hint="use concat_merge")
    w = check_weights(weights, len(adapters))
    ref = adapters[0]
    b: dict[str, torch.Tensor] = {}
    for name in ref.b:
        total = torch.zeros_like(ref.b[name], dtype=torch.float32)
        for wt, a in zip(w, adapters, strict=True):
            total = total + wt * a.b[name].float()
        b[name] = total
    masks = None
    if all(a.masks is not None for a in adapters):
        masks = {n: torch.stack([a.masks[n] for a in adapters]).any(dim=0) for n in ref.b}
    meta = replace(
        ref.meta,
        task="+".join(a.meta.task for a in adapters),
        kind="merge-sum",
        sparsity=None,
        granularity=None,
        target_modules=_common(adapters, "target_modules", tuple(sorted(ref.b))),
        extra=_lineage(adapters, w),
    )
    return Adapter(meta, b, dict(ref.in_features), masks, ref.digest)


@dataclass(frozen=True)
class PairOverlap:
    """Mask overlap of adapters i < j: |M_i ∩ M_j|, |M_i ∪ M_j| and Jaccard = ∩ / ∪."""

    i: int
    j: int
    task_i: str
    task_j: str
    intersection: int
    union: int

    @property
    def jaccard(self) -> float:
        return self.intersection / self.union if self.union else 0.0


def overlap_report(adapters: Sequence[Adapter]) -> list[PairOverlap]:
    """Pairwise mask overlap over all modules (a dense adapter's mask is every coordinate)."""
    check_compatible(adapters)
    masks = [masks_of(a) for a in adapters]
    report = []
    for i in range(len(adapters)):
        for j in range(i + 1, len(adapters)):
            inter = sum(int((masks[i][n] & masks[j][n]).sum()) for n in masks[i])
            union = sum(int((masks[i][n] | masks[j][n]).sum()) for n in masks[i])
            report.append(PairOverlap(i, j, adapters[i].meta.task, adapters[j].meta.task, inter, union))
    return report


@dataclass(frozen=True)
class SubspaceOverlap:
    """||A_i A_j^T||_F per module, its normalized form and their means over modules.

    normalized = ||A_i A_j^T||_F / sqrt(||A_i A_i^T||_F ||A_j A_j^T||_F) in [0, 1] (Cauchy-Schwarz on
    the Gram matrices A^T A); 1 for identical A, about sqrt(r / d_in) for independent seeds.
    """

    per_module: dict[str, float]
    normalized: dict[str, float]

    @property
    def mean(self) -> float:
        return sum(self.per_module.values()) / len(self.per_module)

    @property
    def mean_normalized(self) -> float:
        return sum(self.normalized.values()) / len(self.normalized)


def subspace_overlap(adapter_i: Adapter, adapter_j: Adapter) -> SubspaceOverlap:
    """Interference of two adapters' random subspaces: ||A_i A_j^T||_F per module (see SubspaceOverlap)."""
    check_compatible([adapter_i, adapter_j])
    raw: dict[str, float] = {}
    norm: dict[str, float] = {}
    for name in sorted(adapter_i.b):
        a_i = adapter_i.projection(name).double()  # (r_i, d_in)
        a_j = adapter_j.projection(name).double()  # (r_j, d_in)
        cross = float(torch.linalg.matrix_norm(a_i @ a_j.T))
        self_i = float(torch.linalg.matrix_norm(a_i @ a_i.T))
        self_j = float(torch.linalg.matrix_norm(a_j @ a_j.T))
        raw[name] = cross
        norm[name] = cross / (self_i * self_j) ** 0.5 if self_i > 0 and self_j > 0 else 0.0
    return SubspaceOverlap(raw, norm)
