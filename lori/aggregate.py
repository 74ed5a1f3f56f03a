"""Exact FedAvg of a shared-seed LoRI family.

Clients of one family share A (same seed), so averaging B averages the updates exactly:

    B = Σ_i n_i B_i / Σ_i n_i,     ΔW = s B A = Σ_i n_i ΔW_i / Σ_i n_i

When client masks differ, each coordinate is averaged over the clients whose mask contains it:

    B[c] = Σ_i n_i M_i[c] B_i[c] / Σ_i n_i M_i[c]     (0 where no client holds c)

With identical masks the two formulas agree. (Averaging A and B separately, as LoRA federated
frameworks do, is not the mean of the updates; see ``lori.baselines.lora_fedavg``.)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

import torch

from .adapter import Adapter, masks_of
from .compat import check_compatible, check_counts, check_shared_projection


def _check_clients(
    bs: Sequence[Mapping[str, torch.Tensor]], masks: Sequence[Mapping[str, torch.Tensor] | None] | None
) -> None:
    if len(bs) == 0:
        raise ValueError("bs: at least one client is required")
    ref = bs[0]
    if not ref:
        raise ValueError("client 0: B dict is empty")
    for i, b in enumerate(bs):
        if set(b) != set(ref):
            missing, extra = sorted(set(ref) - set(b)), sorted(set(b) - set(ref))
            raise ValueError(f"client {i}: modules differ from client 0 (lacks {missing}, has extra {extra})")
        for name, t in b.items():
            if t.shape != ref[name].shape:
                raise ValueError(
                    f"client {i}: B of {name!r} has shape {tuple(t.shape)}, client 0 has {tuple(ref[name].shape)}"
                )
            if not bool(torch.isfinite(t).all()):
                raise ValueError(f"client {i}: B of {name!r} has non-finite values")
    if masks is None:
        return
    if len(masks) != len(bs):
        raise ValueError(f"masks: expected {len(bs)} entries (one per client), got {len(masks)}")
    for i, m in enumerate(masks):
        if m is None:
            continue
        if set(m) != set(ref):
            raise ValueError(f"client {i}: masks name modules {sorted(m)}, B names {sorted(ref)}")
        for name, t in m.items():
            if t.dtype != torch.bool or t.shape != ref[name].shape:
                raise ValueError(
                    f"client {i}: mask of {name!r} must be bool {tuple(ref[name].shape)}, "
                    f"got {t.dtype} {tuple(t.shape)}"
                )


def fedavg_b(
    bs: Sequence[Mapping[str, torch.Tensor]],
    counts: Sequence[int],
    masks: Sequence[Mapping[str, torch.Tensor] | None] | None = None,
) -> dict[str, torch.Tensor]:
    """FedAvg of client B dicts (module -> (d_out, r)) weighted by example counts n_i.

        masks None:  B = Σ_i n_i B_i / Σ_i n_i
        masks given: B[c] = Σ_i n_i M_i[c] B_i[c] / Σ_i n_i M_i[c]   (0 where Σ_i n_i M_i[c] = 0)

    A client whose mask entry is None counts as dense (holds every coordinate). Accumulates in
    float64 and returns float32. Raises ValueError naming the client index on bad counts, module
    sets, shapes, mask dtypes or non-finite values.
    """
    n = check_counts(counts, len(bs))
    _check_clients(bs, masks)
    out: dict[str, torch.Tensor] = {}
    total = float(sum(n))
    for name in bs[0]:
        acc = torch.zeros_like(bs[0][name], dtype=torch.float64)
        if masks is None:
            for n_i, b in zip(n, bs, strict=True):
                acc += n_i * b[name].double()
            out[name] = (acc / total).float()
            continue
        den = torch.zeros_like(acc)
        for n_i, b, m in zip(n, bs, masks, strict=True):
            held = torch.ones_like(acc) if m is None else m[name].to(acc.device, torch.float64)
            acc += n_i * held * b[name].double()
            den += n_i * held
        out[name] = torch.where(den > 0, acc / den.clamp(min=1.0), torch.zeros_like(acc)).float()
    return out


def fedavg(
    adapters_or_b_dicts: Sequence[Adapter] | Sequence[Mapping[str, torch.Tensor]],
    example_counts: Sequence[int],
    masks: Sequence[Mapping[str, torch.Tensor] | None] | None = None,
) -> Adapter | dict[str, torch.Tensor]:
    """FedAvg of client adapters (-> Adapter of kind "fedavg") or of raw B dicts (-> dict).

    For adapters, the clients must share one A (same segments, alpha and digest; otherwise
    ValueError naming the client adapter and field) and their masks are taken from the adapters
    (``masks`` must then be None). The result's mask is the union of the clients' masks (None when
    any client is dense); see ``fedavg_b`` for the formula.
    """
    items = list(adapters_or_b_dicts)
    if not items or not all(isinstance(a, Adapter) for a in items):
        if any(isinstance(a, Adapter) for a in items):
            raise ValueError("adapters_or_b_dicts: mix of Adapters and B dicts")
        return fedavg_b(items, example_counts, masks)
    if masks is not None:
        raise ValueError("masks: must be None when aggregating Adapters (their own masks are used)")
    check_compatible(items)
    check_shared_projection(items, hint="FedAvg needs one shared A (same seed family)")
    counts = check_counts(example_counts, len(items))
    client_masks = None if all(a.masks is None for a in items) else [masks_of(a) for a in items]
    b = fedavg_b([a.b for a in items], counts, client_masks)
    ref = items[0]
    union = None
    if all(a.masks is not None for a in items):
        union = {n: torch.stack([a.masks[n] for a in items]).any(dim=0) for n in ref.b}
    meta = replace(
        ref.meta,
        kind="fedavg",
        extra={
            "clients": len(items),
            "example_counts": counts,
            "parent_digests": [a.digest for a in items],
            "parents": [a.meta.task for a in items],
        },
    )
    return Adapter(meta, b, dict(ref.in_features), union, ref.digest)
