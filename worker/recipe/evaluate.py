"""Evaluation: token loss and exact match by greedy generation.

    eval_loss   = sum over label tokens of -log p(token | prefix) / number of label tokens
                  (response tokens + eos for prompt/response examples, every token for text)
    exact_match = mean over prompt/response examples of
                  [first_line(strip(generated)) == first_line(strip(response))]

Generation is greedy, batched (prompts left-padded, grouped by length) with the KV cache, at most
``max_new_tokens`` new tokens, stopping at eos.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .data import IGNORE, collate, eos_id, pad_id, prompt_ids, tokenize_all
from .runtime import autocast


def token_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """(summed next-token cross entropy over label tokens, number of label tokens) of one batch."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits  # (B, T, V)
    targets = batch["labels"][:, 1:]  # (B, T-1)
    loss = F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), ignore_index=IGNORE, reduction="sum"
    )
    return loss, int((targets != IGNORE).sum())


def first_line(text: str) -> str:
    """The first line of the stripped text, stripped."""
    stripped = text.strip()
    return stripped.split("\n", 1)[0].strip() if stripped else ""


@torch.no_grad()
def eval_loss(
    model: nn.Module, tokenizer, examples: Sequence[dict], max_length: int, batch_size: int, device: torch.device
) -> float:
    """Mean token loss over ``examples`` (NaN when they have no label token)."""
    items = tokenize_all(tokenizer, examples, max_length)
    total, count = 0.0, 0
    for start in range(0, len(items), batch_size):
        batch = {k: v.to(device) for k, v in collate(items[start : start + batch_size], pad_id(tokenizer)).items()}
        with autocast(device):
            loss, n = token_loss(model, batch)
        total += float(loss)
        count += n
    return total / count if count else float("nan")


@torch.no_grad()
def greedy_generate(
    model: nn.Module, tokenizer, prompts: Sequence[str], max_new_tokens: int, batch_size: int, device: torch.device
) -> list[str]:
    """Decoded continuations of ``prompts`` (greedy, KV cache, left-padded batches by length)."""
    from transformers import GenerationConfig

    encoded = [prompt_ids(tokenizer, p) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    outputs: list[str] = [""] * len(prompts)
    pad, eos = pad_id(tokenizer), eos_id(tokenizer)
    config = GenerationConfig(
        max_new_tokens=max_new_tokens, do_sample=False, use_cache=True, pad_token_id=pad, eos_token_id=eos
    )
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        width = max(len(encoded[i]) for i in rows)
        input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        for r, i in enumerate(rows):  # left padding: generation continues from the last column
            ids = encoded[i]
            input_ids[r, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            attention[r, width - len(ids) :] = 1
        with autocast(device):
            out = model.generate(
                input_ids=input_ids.to(device), attention_mask=attention.to(device), generation_config=config
            )  # (rows, width + new)
        for r, i in enumerate(rows):
            outputs[i] = tokenizer.decode(out[r, width:].tolist(), skip_special_tokens=True)
    return outputs


def evaluate_examples(
    model: nn.Module,
    tokenizer,
    examples: Sequence[dict],
    *,
    max_length: int,
    batch_size: int,
    max_new_tokens: int,
    device: torch.device,
) -> dict:
    """{"eval_loss", "exact_match", "n", "n_exact"}; exact match over prompt/response examples only
    (NaN when there is none or max_new_tokens is 0)."""
    was_training = model.training
    model.eval()
    try:
        loss = eval_loss(model, tokenizer, examples, max_length, batch_size, device)
        qa = [ex for ex in examples if "prompt" in ex]
        exact = float("nan")
        if qa and max_new_tokens > 0:
            generated = greedy_generate(model, tokenizer, [ex["prompt"] for ex in qa], max_new_tokens, batch_size, device)
            hits = sum(first_line(g) == first_line(ex["response"]) for g, ex in zip(generated, qa, strict=True))
            exact = hits / len(qa)
    finally:
        model.train(was_training)
    return {"eval_loss": loss, "exact_match": exact, "n": len(examples), "n_exact": len(qa)}
