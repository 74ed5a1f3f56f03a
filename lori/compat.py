"""Compatibility checks for merging and aggregating adapters.

Every check raises ``ValueError`` whose message names the field, the offending adapter (index and
task) and the reference adapter 0, e.g.

    projection_seed differs: adapter 1 (task 'b') has 7, adapter 0 (task 'a') has 3; use concat_merge
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

from .adapter import Adapter


def describe(index: int, adapter: Adapter) -> str:
    """``adapter <index> (task '<task>')`` for error messages."""
    return f"adapter {index} (task {adapter.meta.task!r})"


def _differs(
    field: str, i: int, adapters: Sequence[Adapter], value: object, ref: object, hint: str = ""
) -> None:
    tail = f"; {hint}" if hint else ""
    raise ValueError(
        f"{field} differs: {describe(i, adapters[i])} has {value!r}, {describe(0, adapters[0])} has {ref!r}{tail}"
    )


def check_adapters(adapters: Sequence[Adapter]) -> None:
    """Non-empty sequence of Adapter instances."""
    if len(adapters) == 0:
        raise ValueError("adapters: at least one adapter is required")
    for i, a in enumerate(adapters):
        if not isinstance(a, Adapter):
            raise ValueError(f"adapter {i}: expected an Adapter, got {type(a).__name__}")


def check_compatible(adapters: Sequence[Adapter]) -> None:
    """Same base model (and revision when both record one), same module set, same d_in and d_out.

    These are the conditions under which Σ_t ΔW_t is defined module by module.
    """
    check_adapters(adapters)
    ref = adapters[0]
    for i, a in enumerate(adapters[1:], start=1):
        if a.meta.base_model != ref.meta.base_model:
            _differs("base_model", i, adapters, a.meta.base_model, ref.meta.base_model)
        rev, ref_rev = a.meta.base_revision, ref.meta.base_revision
        if rev is not None and ref_rev is not None and rev != ref_rev:
            _differs("base_revision", i, adapters, rev, ref_rev)
        if set(a.b) != set(ref.b):
            missing = sorted(set(ref.b) - set(a.b))
            extra = sorted(set(a.b) - set(ref.b))
            raise ValueError(
                f"modules differ: {describe(i, a)} lacks {missing} and has extra {extra} "
                f"compared with {describe(0, ref)}"
            )
        for name in sorted(ref.b):
            if a.in_features[name] != ref.in_features[name]:
                _differs(f"in_features[{name!r}]", i, adapters, a.in_features[name], ref.in_features[name])
            if a.b[name].shape[0] != ref.b[name].shape[0]:
                _differs(f"out_features[{name!r}]", i, adapters, a.b[name].shape[0], ref.b[name].shape[0])


def check_shared_projection(adapters: Sequence[Adapter], hint: str = "use concat_merge") -> None:
    """Identical segments (seed, rank, distribution), equal alpha and equal A digest.

    Required by rank-preserving operations (B-sum merge, FedAvg), which rely on one shared A.
    """
    check_adapters(adapters)
    ref = adapters[0].meta
    for i, a in enumerate(adapters[1:], start=1):
        meta = a.meta
        if len(meta.segments) != len(ref.segments):
            _differs("segments", i, adapters, len(meta.segments), len(ref.segments), hint)
        for seg, ref_seg in zip(meta.segments, ref.segments, strict=True):
            if seg.seed != ref_seg.seed:
                _differs("projection_seed", i, adapters, seg.seed, ref_seg.seed, hint)
            if seg.rank != ref_seg.rank:
                _differs("rank", i, adapters, seg.rank, ref_seg.rank, hint)
            if seg.distribution != ref_seg.distribution:
                _differs("distribution", i, adapters, seg.distribution, ref_seg.distribution, hint)
        if float(meta.alpha) != float(ref.alpha):
            _differs("alpha", i, adapters, meta.alpha, ref.alpha, hint)
        if a.digest != adapters[0].digest:
            _differs("digest", i, adapters, a.digest[:16], adapters[0].digest[:16], hint)


def check_weights(weights: Sequence[float] | None, n: int, default: float = 1.0) -> list[float]:
    """``weights`` as n finite floats (``default`` each when None)."""
    if weights is None:
        return [default] * n
    weights = list(weights)
    if len(weights) != n:
        raise ValueError(f"weights: expected {n} values (one per adapter), got {len(weights)}")
    out = []
    for i, w in enumerate(weights):
        if isinstance(w, bool) or not isinstance(w, numbers.Real) or not math.isfinite(w):
            raise ValueError(f"weights[{i}]={w!r}: must be a finite number")
        out.append(float(w))
    return out


def check_counts(counts: Sequence[int], n: int) -> list[int]:
    """Example counts: n positive integers (one per client)."""
    counts = list(counts)
    if len(counts) != n:
        raise ValueError(f"counts: expected {n} values (one per client), got {len(counts)}")
    for i, c in enumerate(counts):
        if isinstance(c, bool) or not isinstance(c, numbers.Integral) or c < 1:
            raise ValueError(f"counts[{i}]={c!r}: client {i} must report a positive integer example count")
    return [int(c) for c in counts]
