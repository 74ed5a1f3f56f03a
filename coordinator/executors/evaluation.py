"""Evaluate a published adapter (or the bare base model) on a dataset's eval split (plain Python).

    metrics = {"exact_match", "eval_loss", "n", "n_exact"}   (worker.recipe.evaluate_examples)

The adapter is applied with `lori.apply_adapter` (A regenerated from its segments, digest
checked), so any adapter evaluates: single task, sum or concat merge, continual update.
"""

from __future__ import annotations

import math


def evaluate_adapter(store_url: str, payload: dict, device: str = "auto") -> dict:
    import torch

    from lori import apply_adapter
    from worker.datasets import load_dataset
    from worker.publish import load_adapter
    from worker.recipe.evaluate import evaluate_examples
    from worker.recipe.runtime import load_model_and_tokenizer, resolve_device
    from worker.store import open_store

    torch.manual_seed(0)
    store = open_store(store_url)
    ds = load_dataset(store, payload["dataset"])
    examples = ds.eval or ds.train
    if payload.get("limit"):
        examples = examples[: payload["limit"]]
    dev = resolve_device(device)
    model, tokenizer = load_model_and_tokenizer(payload["base_model"], dev)
    if payload.get("adapter_id"):
        apply_adapter(model, load_adapter(store, payload["adapter_id"]))
        model.to(dev)
    out = evaluate_examples(model, tokenizer, examples, max_length=payload.get("max_length") or 256,
                            batch_size=payload.get("batch_size") or 8,
                            max_new_tokens=payload.get("max_new_tokens") or 32, device=dev)
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in out.items()}
