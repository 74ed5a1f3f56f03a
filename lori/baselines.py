"""LoRA baselines — for comparison only.

Pure tensor re-implementations of what other tools do with classic LoRA factor pairs, so that
benchmarks and tests can measure them next to the exact LoRI merges (``lori.merge``,
``lori.aggregate``). Do not use them to merge LoRI adapters.

Conventions, per adapted module: a pair is (A_t (r_t x d_in), B_t (d_out x r_t)) with scaling s_t,
so ΔW_t = s_t B_t A_t. Functions returning a pair (A, B) return it at scaling 1 (PEFT sets
``lora_alpha = r`` on the adapter created by ``add_weighted_adapter``): ΔW = B A.
Functions on ΔW ("task tensors", PEFT ``merge_utils`` sense) return the merged ΔW.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch

Pair = tuple[torch.Tensor, torch.Tensor]


def _scalings(scalings: Sequence[float] | None, n: int) -> list[float]:
    out = [1.0] * n if scalings is None else [float(s) for s in scalings]
    if len(out) != n:
        raise ValueError(f"scalings: expected {n} values, got {len(out)}")
    return out


def _check_len(items: Sequence, weights: Sequence[float], what: str) -> None:
    if len(items) == 0:
        raise ValueError(f"{what}: at least one is required")
    if len(weights) != len(items):
        raise ValueError(f"weights: expected {len(items)} values (one per {what[:-1]}), got {len(weights)}")


def peft_linear_merge(
    pairs: Sequence[Pair], weights: Sequence[float], scalings: Sequence[float] | None = None
) -> Pair:
    """PEFT ``add_weighted_adapter(combination_type="linear")`` (same-rank adapters).

    With c_t = w_t s_t, PEFT scales the two factors separately and sums them:

        A = Σ_t sign(c_t) sqrt(|c_t|) A_t,     B = Σ_t sqrt(|c_t|) B_t,     ΔW = B A  (scaling 1)

    which is Σ_t c_t B_t A_t only when the cross terms B_t A_u (t != u) vanish. For adapters sharing
    one A (a LoRI family) with w = 0.5/0.5 it returns s (B_1 + B_2) A: the sum, not the mean.
    """
    _check_len(pairs, weights, "pairs")
    s = _scalings(scalings, len(pairs))
    if len({a.shape[0] for a, _ in pairs}) != 1:
        raise ValueError("pairs: the linear scheme needs adapters of equal rank")
    a_sum = torch.zeros_like(pairs[0][0], dtype=torch.float32)
    b_sum = torch.zeros_like(pairs[0][1], dtype=torch.float32)
    for (a, b), w, s_t in zip(pairs, weights, s, strict=True):
        c = float(w) * s_t
        root = math.sqrt(abs(c))
        a_sum = a_sum + (root if c >= 0 else -root) * a.float()  # sign on A only
        b_sum = b_sum + root * b.float()
    return a_sum, b_sum


def cat_merge(
    pairs: Sequence[Pair], weights: Sequence[float], scalings: Sequence[float] | None = None
) -> Pair:
    """PEFT ``add_weighted_adapter(combination_type="cat")``: exact, rank Σ_t r_t.

    A = [w_1 s_1 A_1; ...; w_n s_n A_n],   B = [B_1, ..., B_n],   ΔW = B A = Σ_t w_t s_t B_t A_t
    """
    _check_len(pairs, weights, "pairs")
    s = _scalings(scalings, len(pairs))
    a = torch.cat([float(w) * s_t * p[0].float() for p, w, s_t in zip(pairs, weights, s, strict=True)], dim=0)
    b = torch.cat([p[1].float() for p in pairs], dim=1)
    return a, b


def lora_fedavg(pairs: Sequence[Pair], counts: Sequence[int]) -> Pair:
    """FedAvg as LoRA federated frameworks do it: A and B averaged separately.

        A = Σ_i n_i A_i / N,   B = Σ_i n_i B_i / N,   N = Σ_i n_i   (scaling unchanged)

    s B A differs from the true mean Σ_i n_i s B_i A_i / N whenever the clients' A_i differ.
    """
    _check_len(pairs, counts, "pairs")
    if any(isinstance(c, bool) or int(c) != c or c < 1 for c in counts):
        raise ValueError(f"counts={list(counts)!r}: must be positive integers")
    total = float(sum(counts))
    a = sum(c * p[0].double() for p, c in zip(pairs, counts, strict=True)) / total
    b = sum(c * p[1].double() for p, c in zip(pairs, counts, strict=True)) / total
    return a.float(), b.float()


def task_arithmetic(deltas: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """Σ_t w_t ΔW_t (PEFT ``task_arithmetic``; the exact reference)."""
    _check_len(deltas, weights, "deltas")
    return sum(float(w) * d.float() for d, w in zip(deltas, weights, strict=True))


def _check_density(density: float) -> None:
    if not 0.0 <= density <= 1.0:
        raise ValueError(f"density={density!r}: must be in [0, 1]")


def magnitude_prune(delta: torch.Tensor, density: float) -> torch.Tensor:
    """Keep the k = floor(density * numel) largest |entries| of ``delta``, zero the rest."""
    _check_density(density)
    if density >= 1.0:
        return delta
    k = int(density * delta.numel())
    keep = torch.zeros(delta.numel(), dtype=torch.bool, device=delta.device)
    keep[torch.topk(delta.abs().reshape(-1), k).indices] = True
    return delta * keep.view_as(delta)


def _sign_elect(stacked: torch.Tensor, weighted: torch.Tensor, method: str) -> torch.Tensor:
    """Disjoint mean of ``weighted`` (n, ...) over the tasks agreeing with the elected sign."""
    if method == "total":
        elected = torch.where(stacked.sum(dim=0) >= 0, 1.0, -1.0)
    elif method == "frequency":
        elected = torch.where(stacked.sign().sum(dim=0) >= 0, 1.0, -1.0)
    else:
        raise ValueError(f"majority_sign_method={method!r}: must be 'total' or 'frequency'")
    agree = stacked.sign() == elected  # (n, ...)
    return (weighted * agree).sum(dim=0) / agree.sum(dim=0).clamp(min=1)


def _weighted(stacked: torch.Tensor, weights: Sequence[float]) -> torch.Tensor:
    w = torch.tensor([float(x) for x in weights], dtype=stacked.dtype, device=stacked.device)
    return stacked * w.view(-1, *([1] * (stacked.dim() - 1)))


def ties_merge(
    deltas: Sequence[torch.Tensor],
    weights: Sequence[float],
    density: float,
    majority_sign_method: Literal["total", "frequency"] = "total",
) -> torch.Tensor:
    """TIES (PEFT ``ties``): trim each ΔW_t to its top-``density`` magnitudes, elect a sign per entry
    (sign of Σ_t trimmed_t, or of the sign count for "frequency"), and average w_t trimmed_t over
    the tasks whose sign agrees (divisor = number of agreeing tasks, at least 1)."""
    _check_len(deltas, weights, "deltas")
    stacked = torch.stack([magnitude_prune(d.float(), density) for d in deltas])  # (n, d_out, d_in)
    return _sign_elect(stacked, _weighted(stacked, weights), majority_sign_method)


def dare_merge(
    deltas: Sequence[torch.Tensor],
    weights: Sequence[float],
    density: float,
    seed: int,
    sign_election: bool = False,
    majority_sign_method: Literal["total", "frequency"] = "total",
) -> torch.Tensor:
    """DARE (PEFT ``dare_linear``; ``dare_ties`` with ``sign_election``): drop each entry of every ΔW_t
    independently with probability 1 - density (Bernoulli from ``torch.Generator`` seeded with
    ``seed``), rescale the survivors by 1 / density, then Σ_t w_t ΔW_t (or the TIES sign election)."""
    _check_len(deltas, weights, "deltas")
    _check_density(density)
    if density == 0.0:
        return torch.zeros_like(deltas[0], dtype=torch.float32)
    gen = torch.Generator().manual_seed(int(seed))
    pruned = []
    for d in deltas:
        keep = torch.bernoulli(torch.full(d.shape, float(density)), generator=gen).to(d.device)
        pruned.append(d.float() * keep / density)
    stacked = torch.stack(pruned)  # (n, d_out, d_in)
    weighted = _weighted(stacked, weights)
    return _sign_elect(stacked, weighted, majority_sign_method) if sign_election else weighted.sum(dim=0)
