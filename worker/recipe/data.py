"""Training data: JSONL loading and validation, tokenization, padding, and a resumable data order.

Each JSONL line is either ``{"prompt": str, "response": str}`` (instruction data, loss on the
response tokens only) or ``{"text": str}`` (plain language modelling, loss on every token).

Token layout (no chat template: a plain concatenation, the same at training and evaluation):

    prompt/response:  ids = tok(prompt) + tok(response, no special tokens) + [eos]
                      labels = [-100] * len(tok(prompt)) + tok(response) + [eos]
    text:             ids = tok(text) + [eos],  labels = ids

``tok(prompt)`` adds the tokenizer's own special tokens (e.g. BOS) if it has any. Sequences longer
than ``max_length`` are cut on the right. Batches are right-padded with the pad token (eos when the
tokenizer has none); padded positions get label -100 and attention 0.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

IGNORE = -100


def _lines(source: str | os.PathLike | bytes | Iterable[str]) -> list[str]:
    if isinstance(source, (bytes, bytearray)):
        return bytes(source).decode("utf-8").splitlines()
    if isinstance(source, (str, os.PathLike)):
        return Path(source).read_text(encoding="utf-8").splitlines()
    return [line.rstrip("\n") for line in source]


def validate_example(obj: object, where: str) -> dict:
    """One parsed line -> {"prompt", "response"} or {"text"}; ValueError naming ``where`` and the field."""
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    if "text" in obj and "prompt" not in obj and "response" not in obj:
        if not isinstance(obj["text"], str) or not obj["text"]:
            raise ValueError(f"{where}: field 'text' must be a non-empty string, got {obj['text']!r:.60}")
        return {"text": obj["text"]}
    for key in ("prompt", "response"):
        if key not in obj:
            raise ValueError(f"{where}: missing field {key!r} (expected {{'prompt', 'response'}} or {{'text'}})")
        if not isinstance(obj[key], str):
            raise ValueError(f"{where}: field {key!r} must be a string, got {type(obj[key]).__name__}")
    if not obj["response"]:
        raise ValueError(f"{where}: field 'response' must not be empty")
    return {"prompt": obj["prompt"], "response": obj["response"]}


def load_examples(source: str | os.PathLike | bytes | Iterable[str]) -> list[dict]:
    """Parse and validate JSONL from a path, raw bytes or an iterable of lines (blank lines skipped).

    Raises ValueError ``"line N: ..."`` (1-based) for invalid JSON or a bad / missing field, and
    when there is no example at all.
    """
    examples: list[dict] = []
    for number, line in enumerate(_lines(source), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"line {number}: invalid JSON ({exc.msg} at column {exc.colno})") from None
        examples.append(validate_example(obj, f"line {number}"))
    if not examples:
        raise ValueError("data: no examples (empty file)")
    return examples


def eos_id(tokenizer) -> int:
    """The tokenizer's EOS id; ValueError when it has none."""
    if tokenizer.eos_token_id is None:
        raise ValueError("tokenizer has no eos_token; the recipe needs one to end responses")
    return int(tokenizer.eos_token_id)


def pad_id(tokenizer) -> int:
    """The pad id, falling back to EOS."""
    return int(tokenizer.pad_token_id) if tokenizer.pad_token_id is not None else eos_id(tokenizer)


def prompt_ids(tokenizer, prompt: str) -> list[int]:
    """Token ids of a prompt as seen at training and at generation time."""
    return list(tokenizer(prompt, add_special_tokens=True)["input_ids"])


def tokenize_example(tokenizer, example: dict, max_length: int) -> tuple[list[int], list[int]]:
    """(input_ids, labels) of one example; see the module docstring for the layout."""
    eos = eos_id(tokenizer)
    if "text" in example:
        ids = list(tokenizer(example["text"], add_special_tokens=True)["input_ids"]) + [eos]
        labels = list(ids)
    else:
        head = prompt_ids(tokenizer, example["prompt"])
        tail = list(tokenizer(example["response"], add_special_tokens=False)["input_ids"]) + [eos]
        ids = head + tail
        labels = [IGNORE] * len(head) + tail
    return ids[:max_length], labels[:max_length]


def tokenize_all(tokenizer, examples: Sequence[dict], max_length: int) -> list[tuple[list[int], list[int]]]:
    """Tokenize every example once (the recipe keeps these for the whole run)."""
    return [tokenize_example(tokenizer, ex, max_length) for ex in examples]


def collate(items: Sequence[tuple[list[int], list[int]]], pad: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest item: input_ids / attention_mask / labels, each (batch, T) int64."""
    width = max(len(ids) for ids, _ in items)
    input_ids = torch.full((len(items), width), pad, dtype=torch.long)
    labels = torch.full((len(items), width), IGNORE, dtype=torch.long)
    attention = torch.zeros((len(items), width), dtype=torch.long)
    for row, (ids, labs) in enumerate(items):
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        labels[row, : len(labs)] = torch.tensor(labs, dtype=torch.long)
        attention[row, : len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}


class BatchOrder:
    """Endless shuffled order over ``n`` examples: a fresh permutation per epoch from one generator.

    ``state()`` / ``restore()`` capture the generator, the current permutation and the position,
    so a resumed run draws exactly the batches the uninterrupted run would have drawn.
    """

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        if n < 1:
            raise ValueError("examples: at least one training example is required")
        self.n, self.batch_size = n, batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.perm = torch.randperm(n, generator=self.generator)
        self.pos = 0

    def next(self) -> list[int]:
        """Indices of the next batch (wraps into a new permutation at the end of an epoch)."""
        out: list[int] = []
        while len(out) < self.batch_size:
            if self.pos == self.n:
                self.perm = torch.randperm(self.n, generator=self.generator)
                self.pos = 0
            take = min(self.batch_size - len(out), self.n - self.pos)
            out.extend(self.perm[self.pos : self.pos + take].tolist())
            self.pos += take
        return out

    def state(self) -> dict[str, torch.Tensor]:
        return {
            "rng": self.generator.get_state(),
            "perm": self.perm.clone(),
            "pos": torch.tensor([self.pos], dtype=torch.long),
        }

    def restore(self, state: dict[str, torch.Tensor]) -> None:
        if int(state["perm"].numel()) != self.n:
            raise ValueError(f"checkpoint data order covers {state['perm'].numel()} examples, the data has {self.n}")
        self.generator.set_state(state["rng"])
        self.perm = state["perm"].clone()
        self.pos = int(state["pos"][0])
