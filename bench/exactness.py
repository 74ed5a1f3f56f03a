"""Exactness of LoRI merges and FedAvg versus LoRA baselines.

For each method, over all modules:

    rel_err = ||ΔW_method - ΔW_true||_F / ||ΔW_true||_F,     ΔW_true = Σ_t w_t ΔW_t  (float64)

Scenarios (n adapters / clients, modules of d x d, rank r, alpha 2r, masks of density 0.1):
- concat: different seeds, weights w_t ∝ (n, n-1, ..., 1) summing to 1 -> lori concat_merge
  (and PEFT linear on the same adapters, for reference).
- B-sum: one shared seed, different task masks, mean weights 1/n -> lori sum_merge next to PEFT
  linear (which returns n x the mean for shared-A adapters).
- FedAvg: one shared seed and mask, example counts n_i -> lori fedavg. LoRA FedAvg (A and B averaged
  separately) runs on LoRA clients whose trained A_i drifted from a common init A_0:
  A_i = A_0 + drift * ||A_0||_F * E_i / ||E_i||_F (E_i Gaussian); LoRI clients never move A.

Run: ``python bench/exactness.py [--json]``; with --json the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lori import (  # noqa: E402
    Adapter,
    AdapterMeta,
    Segment,
    concat_merge,
    fedavg,
    lora_fedavg,
    peft_linear_merge,
    sum_merge,
)


def make_adapter(seed: int, task: str, names: list[str], d: int, r: int, density: float, gen, mask=None):
    """A LoRI-S adapter with random top-k masks (or ``mask``) and Gaussian B (scale 0.01)."""
    b, masks = {}, {}
    for name in names:
        if mask is None:
            scores = torch.rand(d * r, generator=gen)
            m = torch.zeros(d * r, dtype=torch.bool)
            m[torch.topk(scores, round(density * d * r)).indices] = True
            m = m.view(d, r)
        else:
            m = mask[name]
        masks[name] = m
        b[name] = 0.01 * torch.randn(d, r, generator=gen) * m
    meta = AdapterMeta(
        base_model="bench-model",
        segments=(Segment(seed, r),),
        alpha=2.0 * r,
        target_modules=tuple(names),
        task=task,
    )
    return Adapter(meta, b, dict.fromkeys(names, d), masks)


def true_delta(adapter: Adapter, name: str) -> torch.Tensor:
    return adapter.meta.scaling * adapter.b[name].double() @ adapter.projection(name).double()


def rel_err(pred: dict[str, torch.Tensor], true: dict[str, torch.Tensor]) -> float:
    num = sum(float(torch.linalg.matrix_norm(pred[n].double() - true[n])) ** 2 for n in true)
    den = sum(float(torch.linalg.matrix_norm(true[n])) ** 2 for n in true)
    return (num / den) ** 0.5


def weighted(adapters, weights, names):
    return {n: sum(w * true_delta(a, n) for w, a in zip(weights, adapters, strict=True)) for n in names}


def peft_linear_delta(adapters, weights, names):
    out = {}
    for n in names:
        pairs = [(a.projection(n), a.b[n]) for a in adapters]
        a_m, b_m = peft_linear_merge(pairs, weights, [a.meta.scaling for a in adapters])
        out[n] = b_m @ a_m  # PEFT's merged adapter has scaling 1
    return out


def run(modules: int, d: int, r: int, n: int, density: float, drift: float, seed: int) -> dict:
    gen = torch.Generator().manual_seed(seed)
    names = [f"model.layers.{i // 2}.{'q_proj' if i % 2 == 0 else 'o_proj'}" for i in range(modules)]
    figures: dict = {"modules": modules, "d": d, "rank": r, "n": n, "density": density, "drift": drift}
    t0 = time.perf_counter()

    # concat: different seeds
    diff = [make_adapter(100 + t, f"task{t}", names, d, r, density, gen) for t in range(n)]
    w = [float(n - t) for t in range(n)]
    w = [x / sum(w) for x in w]
    true = weighted(diff, w, names)
    merged = concat_merge(diff, w)
    figures["concat_rel_err"] = rel_err({k: merged.delta_weight(k) for k in names}, true)
    figures["concat_rank"] = merged.rank
    figures["peft_linear_diffseed_rel_err"] = rel_err(peft_linear_delta(diff, w, names), true)

    # B-sum: shared seed, different masks, mean weights
    family = [make_adapter(7, f"task{t}", names, d, r, density, gen) for t in range(n)]
    mean_w = [1.0 / n] * n
    true = weighted(family, mean_w, names)
    merged = sum_merge(family, mean_w)
    figures["bsum_rel_err"] = rel_err({k: merged.delta_weight(k) for k in names}, true)
    figures["bsum_rank"] = merged.rank
    figures["peft_linear_rel_err"] = rel_err(peft_linear_delta(family, mean_w, names), true)

    # FedAvg: shared seed and mask, example counts
    counts = [100 * (t + 1) + 37 * t * t for t in range(n)]
    total = sum(counts)
    share = [c / total for c in counts]
    clients = [make_adapter(7, "fed", names, d, r, density, gen, mask=family[0].masks) for _ in range(n)]
    true = weighted(clients, share, names)
    agg = fedavg(clients, counts)
    figures["fedavg_rel_err"] = rel_err({k: agg.delta_weight(k) for k in names}, true)

    # LoRA FedAvg on LoRA clients (dense B, drifted A)
    s = 2.0
    lora_true, lora_pred = {}, {}
    for k in names:
        a0 = clients[0].projection(k)
        pairs = []
        for _ in range(n):
            e = torch.randn(a0.shape, generator=gen)
            pairs.append((a0 + drift * a0.norm() * e / e.norm(), 0.01 * torch.randn(d, r, generator=gen)))
        lora_true[k] = sum(
            c * s * bb.double() @ aa.double() for c, (aa, bb) in zip(share, pairs, strict=True)
        )
        a_avg, b_avg = lora_fedavg(pairs, counts)
        lora_pred[k] = s * b_avg @ a_avg
    figures["lora_fedavg_rel_err"] = rel_err(lora_pred, lora_true)
    figures["seconds"] = round(time.perf_counter() - t0, 2)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modules", type=int, default=4)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--n", type=int, default=4, help="adapters / clients")
    parser.add_argument("--density", type=float, default=0.1)
    parser.add_argument("--drift", type=float, default=0.5, help="LoRA clients' relative A drift")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    figures = run(args.modules, args.dim, args.rank, args.n, args.density, args.drift, args.seed)
    print(
        f"{args.modules} modules {args.dim}x{args.dim}, r={args.rank}, n={args.n}, "
        f"mask density {args.density}, LoRA A drift {args.drift}"
    )
    print(f"{'scenario':<30}{'method':<34}{'rel. error':>12}")
    rows = [
        (
            "different seeds, w ∝ n..1",
            f"lori concat_merge (rank {figures['concat_rank']})",
            "concat_rel_err",
        ),
        ("different seeds, w ∝ n..1", "PEFT linear (baseline)", "peft_linear_diffseed_rel_err"),
        ("shared seed, mean of tasks", f"lori sum_merge (rank {figures['bsum_rank']})", "bsum_rel_err"),
        ("shared seed, mean of tasks", "PEFT linear (baseline)", "peft_linear_rel_err"),
        ("federated, counts n_i", "lori fedavg (B only)", "fedavg_rel_err"),
        ("federated, counts n_i", "LoRA FedAvg, A & B separately", "lora_fedavg_rel_err"),
    ]
    for scenario, method, key in rows:
        print(f"{scenario:<30}{method:<34}{figures[key]:>12.3e}")
    if args.json:
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
