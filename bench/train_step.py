"""Training step of LoRI-S versus PEFT LoRA on one small Llama-style model, side by side.

Model (built from a config, random weights, no download): hidden 512, intermediate 1408, 4 layers,
8 heads, vocab 8000; random token batches of 8 x 128. Both adapters: r = 32, alpha = 64, targets
q, k, v, o, gate, up, down. LoRI-S uses masks of density 0.1 (sparsity 0.9, model-granularity
top-k of a random dense B), PEFT LoRA its defaults (lora_dropout 0). One step = forward + loss +
backward + AdamW step + zero_grad; the two are interleaved step by step so drift hits both.

    step_time_ratio   = median step time LoRI-S / median step time LoRA            (goal <= 1.0)
    train_state_ratio = (params + grads + AdamW state bytes of the trainable tensors), LoRI-S / LoRA
                        (goal <= 0.10); ``train_state_ratio_with_index`` also counts LoRI-S's int64
                        flat indices of the mask (the structure, not trainable state)

Run: ``python bench/train_step.py [--steps 10] [--device cpu|cuda] [--json]``; with --json the last
line is one JSON object.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lori import LoriConfig, calibrate_masks, inject  # noqa: E402

TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def build_model(device: torch.device, dtype: torch.dtype):
    """The benchmark's base model (seeded random init)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=8000, hidden_size=512, intermediate_size=1408, num_hidden_layers=4,
        num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=256,
    )
    torch.manual_seed(0)
    return LlamaForCausalLM(config).to(device=device, dtype=dtype)


def lori_s(model, rank: int, sparsity: float):
    """Inject LoRI, calibrate masks on a random dense B, switch every layer to sparse mode."""
    layers = inject(model, LoriConfig(rank=rank, alpha=2 * rank, target_modules=TARGETS, sparsity=sparsity))
    gen = torch.Generator().manual_seed(1)
    b = {n: torch.randn(layer.lori_B.shape, generator=gen) for n, layer in layers.items()}
    masks = calibrate_masks(b, sparsity).masks
    for name, layer in layers.items():
        layer.set_sparse(masks[name])
    index_bytes = sum(layer.lori_index.numel() * layer.lori_index.element_size() for layer in layers.values())
    return model, index_bytes


def lora(model, rank: int):
    """PEFT LoRA on the same targets."""
    from peft import LoraConfig, get_peft_model

    return get_peft_model(model, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=list(TARGETS), lora_dropout=0.0))


def state_bytes(model, optimizer) -> tuple[int, int]:
    """(params + grads + optimizer-state bytes of the trainable tensors, trainable element count)."""
    total = count = 0
    for p in model.parameters():
        if not p.requires_grad:
            continue
        count += p.numel()
        total += p.numel() * p.element_size()
        if p.grad is not None:
            total += p.grad.numel() * p.grad.element_size()
        for value in optimizer.state.get(p, {}).values():
            if torch.is_tensor(value) and value.dim() > 0:
                total += value.numel() * value.element_size()
    return total, count


class Runner:
    """One model + AdamW; ``step()`` returns its wall time in seconds."""

    def __init__(self, model, device: torch.device, batch: dict[str, torch.Tensor]) -> None:
        self.model, self.device, self.batch = model, device, batch
        self.optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        self.times: list[float] = []
        self.state = (0, 0)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def step(self) -> float:
        self._sync()
        start = time.perf_counter()
        ctx = torch.autocast("cuda", dtype=torch.bfloat16) if self.device.type == "cuda" else _null()
        with ctx:
            loss = self.model(input_ids=self.batch["input_ids"], labels=self.batch["input_ids"]).loss
        loss.backward()
        self.optimizer.step()
        self.state = state_bytes(self.model, self.optimizer)  # grads still present here
        self.optimizer.zero_grad(set_to_none=True)
        self._sync()
        return time.perf_counter() - start


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    base = build_model(device, dtype)
    lori_model, index_bytes = lori_s(copy.deepcopy(base), args.rank, args.sparsity)
    lora_model = lora(base, args.rank)
    gen = torch.Generator().manual_seed(2)
    batch = {"input_ids": torch.randint(0, 8000, (args.batch, args.seq), generator=gen).to(device)}
    runners = {"lori-s": Runner(lori_model, device, batch), "lora": Runner(lora_model, device, batch)}
    for i in range(args.warmup + args.steps):
        for runner in (runners.values() if i % 2 == 0 else reversed(list(runners.values()))):
            dt = runner.step()
            if i >= args.warmup:
                runner.times.append(dt)
    med = {k: statistics.median(r.times) for k, r in runners.items()}
    (ls_bytes, ls_count), (lo_bytes, lo_count) = runners["lori-s"].state, runners["lora"].state
    out = {
        "device": str(device), "steps": args.steps, "rank": args.rank, "sparsity": args.sparsity,
        "lori_s_step_s": med["lori-s"], "lora_step_s": med["lora"],
        "lori_s_trainable": ls_count, "lora_trainable": lo_count,
        "lori_s_state_bytes": ls_bytes, "lora_state_bytes": lo_bytes, "lori_s_index_bytes": index_bytes,
        "step_time_ratio": med["lori-s"] / med["lora"],
        "step_time_ratio_min": min(runners["lori-s"].times) / min(runners["lora"].times),
        "train_state_ratio": ls_bytes / lo_bytes,
        "train_state_ratio_with_index": (ls_bytes + index_bytes) / lo_bytes,
    }
    print(f"{'':<10}{'median step s':>15}{'trainable':>12}{'state bytes':>14}")
    print(f"{'LoRI-S':<10}{med['lori-s']:>15.4f}{ls_count:>12,}{ls_bytes:>14,}")
    print(f"{'LoRA':<10}{med['lora']:>15.4f}{lo_count:>12,}{lo_bytes:>14,}")
    print(f"step_time_ratio   {out['step_time_ratio']:.3f}   (goal <= 1.0; ratio of the fastest steps "
          f"{out['step_time_ratio_min']:.3f})")
    print(f"train_state_ratio {out['train_state_ratio']:.4f}  (goal <= 0.10; with mask index "
          f"{out['train_state_ratio_with_index']:.4f})")
    if args.json:
        print(json.dumps(out))


if __name__ == "__main__":
    main()
