"""Model plumbing shared by every method: prompts, one training loop, greedy generation, ΔW patching.

Prompt format: the tokenizer's chat template when it has one (SmolLM2-Instruct: one user turn
with a short fixed system turn, generation prompt appended), else ``prompt + "\\n"``. A training
sequence is ``prompt_ids + response_ids + [eos]`` with the loss on response + eos only.

Every method (PEFT LoRA, LoRI-D, LoRI-S, continual) trains with ``train_loop``: AdamW (no weight
decay), linear warm-up over the first 10 % of steps then linear decay to 0, gradient clipping at
1.0, batches drawn from a fixed-seed permutation — so methods differ only in what is trainable.

Evaluation is method-agnostic: an adapter (or a merge) is reduced to ΔW per module, added into
the weights of one evaluation copy of the base model (``patched``), and restored afterwards.
"""

from __future__ import annotations

import contextlib
import copy
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from worker.recipe.data import IGNORE, collate

from .tasks import Example

SYSTEM = "Answer briefly."


@dataclass
class Base:
    """The frozen base model (kept pristine: training runs deep-copy it) and its tokenizer."""

    model: nn.Module
    tokenizer: object
    chat: bool
    max_length: int

    @classmethod
    def load(cls, path: str, max_length: int, threads: int | None = None) -> Base:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if threads:
            torch.set_num_threads(threads)
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        chat = bool(getattr(tokenizer, "chat_template", None))
        return cls(model, tokenizer, chat, max_length)

    # ------------------------------------------------------------ tokenization
    @property
    def eos(self) -> int:
        return int(self.tokenizer.eos_token_id)

    @property
    def pad(self) -> int:
        pad = self.tokenizer.pad_token_id
        return int(pad) if pad is not None else self.eos

    def prompt_ids(self, prompt: str) -> list[int]:
        tok = self.tokenizer
        if self.chat:
            messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}]
            text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            ids = list(tok(text, add_special_tokens=False)["input_ids"])
        else:
            ids = list(tok(prompt + "\n", add_special_tokens=True)["input_ids"])
        return ids[-(self.max_length // 2) :]  # keep the end of an over-long prompt

    def encode(self, example: Example) -> tuple[list[int], list[int]]:
        """(input_ids, labels): prompt + response + eos, loss on response + eos."""
        head = self.prompt_ids(example.prompt)
        tail = list(self.tokenizer(example.response, add_special_tokens=False)["input_ids"]) + [self.eos]
        ids = (head + tail)[: self.max_length]
        labels = ([IGNORE] * len(head) + tail)[: self.max_length]
        return ids, labels

    def fresh(self) -> nn.Module:
        """A trainable-free deep copy of the base model (for one training run)."""
        return copy.deepcopy(self.model)


@dataclass(frozen=True)
class TrainSpec:
    steps: int
    lr: float
    batch_size: int
    seed: int = 0
    warmup: float = 0.1
    clip: float = 1.0


def _schedule(spec: TrainSpec) -> Callable[[int], float]:
    warm = max(1, round(spec.warmup * spec.steps))

    def factor(step: int) -> float:  # step = number of optimizer steps already taken
        if step < warm:
            return (step + 1) / warm
        return max(0.0, (spec.steps - step) / max(1, spec.steps - warm))

    return factor


def response_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean next-token cross entropy over the label (response + eos) tokens.

    For a causal LM with ``.model`` (decoder) and ``.lm_head`` (Llama-style; PEFT-wrapped too) the
    vocabulary projection is applied only at the positions that predict a label token (about a
    tenth of the sequence here: most of it is prompt), which skips most of the lm_head work; the
    value equals the model's own ``labels=`` loss.
    """
    lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    targets = batch["labels"][:, 1:]  # (B, T-1)
    if not (hasattr(lm, "model") and hasattr(lm, "lm_head")):
        return model(**batch).loss
    hidden = lm.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    keep = targets != IGNORE  # (B, T-1)
    logits = lm.lm_head(hidden[:, :-1][keep])  # (n_label, V)
    return torch.nn.functional.cross_entropy(logits.float(), targets[keep])


def train_loop(
    model: nn.Module,
    params: Sequence[torch.nn.Parameter],
    base: Base,
    examples: Sequence[Example],
    spec: TrainSpec,
) -> dict:
    """Train ``params`` of ``model`` for ``spec.steps`` steps.

    Returns {"loss_first", "loss_last" (mean of the last 5), "seconds" (wall), "cpu_seconds"
    (this process's CPU time: on a shared machine, cpu_seconds / threads estimates the wall time
    on dedicated cores), "losses"}.
    """
    encoded = [base.encode(e) for e in examples]
    params = list(params)
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=spec.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _schedule(spec))
    rng = random.Random(spec.seed)
    order: list[int] = []
    losses: list[float] = []
    model.train()
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(spec.steps):
        batch_idx = []
        while len(batch_idx) < spec.batch_size:
            if not order:
                order = list(range(len(encoded)))
                rng.shuffle(order)
            batch_idx.append(order.pop())
        batch = collate([encoded[i] for i in batch_idx], base.pad)
        loss = response_loss(model, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, spec.clip)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
    model.eval()
    for p in params:
        p.requires_grad_(False)
    return {
        "loss_first": losses[0] if losses else None,
        "loss_last": sum(losses[-5:]) / len(losses[-5:]) if losses else None,
        "seconds": time.perf_counter() - start,
        "cpu_seconds": time.process_time() - cpu_start,
        "losses": losses,
    }


@torch.no_grad()
def generate(model: nn.Module, base: Base, prompts: Sequence[str], max_new_tokens: int, batch_size: int = 16) -> list[str]:
    """Greedy continuations of ``prompts`` (left-padded batches grouped by length, KV cache, stop at eos)."""
    encoded = [base.prompt_ids(p) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    outputs: list[str] = [""] * len(prompts)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        width = max(len(encoded[i]) for i in idx)
        ids = torch.full((len(idx), width), base.pad, dtype=torch.long)
        attn = torch.zeros((len(idx), width), dtype=torch.long)
        for row, i in enumerate(idx):
            ids[row, width - len(encoded[i]) :] = torch.tensor(encoded[i])
            attn[row, width - len(encoded[i]) :] = 1
        out = model.generate(
            input_ids=ids,
            attention_mask=attn,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=base.pad,
            eos_token_id=base.eos,
        )
        for row, i in enumerate(idx):
            outputs[i] = base.tokenizer.decode(out[row, width:], skip_special_tokens=True)
    return outputs


class Patcher:
    """One evaluation copy of the base model whose linear weights get ΔW added temporarily."""

    def __init__(self, base: Base) -> None:
        self.model = base.fresh()
        self.model.eval()
        self._modules = dict(self.model.named_modules())
        self._saved: dict[str, torch.Tensor] = {}

    @contextlib.contextmanager
    def patched(self, deltas: Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]]) -> Iterator[nn.Module]:
        """W_m <- W_m + ΔW_m for every (module, ΔW) in ``deltas`` (a mapping or lazy pairs); W is
        restored bit-exactly on exit."""
        touched = []
        pairs = deltas.items() if isinstance(deltas, Mapping) else deltas
        try:
            with torch.no_grad():
                for name, delta in pairs:
                    weight = self._modules[name].weight
                    if name not in self._saved:
                        self._saved[name] = weight.detach().clone()
                    weight.add_(delta.to(weight.dtype))  # (d_out, d_in)
                    touched.append(name)
            yield self.model
        finally:
            with torch.no_grad():
                for name in touched:
                    self._modules[name].weight.copy_(self._saved[name])
