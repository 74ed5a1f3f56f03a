"""Checks on a federated client's update before it may be aggregated.

A client update is its locally trained B_k (module -> (d_out, r)) and its example count n_k. It is
rejected — recorded with the reasons, never aggregated — when

    - its modules or shapes differ from the global B's,
    - it holds a non-finite value,
    - its support leaves the task mask:  any(B_k != 0 where M = 0),
    - its distance to the global B exceeds the bound:  ||B_k - B_global||_F > max_delta_norm
      (Frobenius norm over every module together),
    - its example count is not a positive integer.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

__all__ = ["delta_norm", "validate_update"]


def delta_norm(b: Mapping[str, torch.Tensor], global_b: Mapping[str, torch.Tensor] | None) -> float:
    """||B_k - B_global||_F over all modules (B_global None: zeros)."""
    total = 0.0
    for name, t in b.items():
        d = t.double() if global_b is None else t.double() - global_b[name].double()
        total += float((d * d).sum())
    return math.sqrt(total)


def validate_update(
    b: Mapping[str, torch.Tensor],
    count: object,
    shapes: Mapping[str, tuple[int, int]],
    global_b: Mapping[str, torch.Tensor] | None = None,
    mask: Mapping[str, torch.Tensor] | None = None,
    max_delta_norm: float | None = None,
) -> list[str]:
    """Reasons to reject the update (empty list: accepted); see the module docstring."""
    reasons: list[str] = []
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        reasons.append(f"example count {count!r} is not a positive integer")
    if set(b) != set(shapes):
        missing, extra = sorted(set(shapes) - set(b)), sorted(set(b) - set(shapes))
        return reasons + [f"modules differ (missing {missing[:3]}, unexpected {extra[:3]})"]
    for name, t in b.items():
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != tuple(shapes[name]):
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            reasons.append(f"wrong shape for {name}: {shape}, expected {tuple(shapes[name])}")
        elif not t.is_floating_point():
            reasons.append(f"{name}: dtype {t.dtype} is not floating point")
    if reasons:
        return reasons
    bad = [n for n, t in b.items() if not bool(torch.isfinite(t).all())]
    if bad:
        return [f"non-finite values in {len(bad)} module(s), e.g. {bad[0]}"]
    if mask is not None:
        outside = {n: int(((t != 0) & ~mask[n].to(t.device)).sum()) for n, t in b.items()}
        leaked = {n: c for n, c in outside.items() if c}
        if leaked:
            first = next(iter(leaked))
            reasons.append(f"support outside the task mask: {sum(leaked.values())} entries (e.g. {first})")
    if max_delta_norm is not None:
        norm = delta_norm(b, global_b)
        if norm > max_delta_norm:
            reasons.append(f"update norm {norm:.4g} exceeds the bound {max_delta_norm:.4g}")
    return reasons
