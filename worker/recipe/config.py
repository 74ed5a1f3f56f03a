"""Configuration of one training run of the LoRI recipe.

A run trains one task adapter on one base model:

    LoRI-D  (dense_steps optimizer steps, lr dense_lr)   B dense, A frozen
    calibrate                                             M = top-k |B|, density 1 - lori.sparsity
    LoRI-S  (sparse_steps optimizer steps, lr sparse_lr) B reset to 0, only B ⊙ M trained

``method="lori-d"`` stops after the dense phase. Every field is validated in ``__post_init__``;
a bad value raises ``ValueError`` naming the field and showing the value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from lori import LoriConfig

METHODS: tuple[str, ...] = ("lori-s", "lori-d")
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")


def _fail(name: str, value: object, why: str) -> None:
    raise ValueError(f"{name}={value!r}: {why}")


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        _fail(name, value, f"must be an integer >= {minimum}")


def _check_float(name: str, value: object, *, positive: bool) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (value <= 0 if positive else value < 0):
        _fail(name, value, "must be a finite number " + ("> 0" if positive else ">= 0"))


@dataclass(frozen=True)
class RecipeConfig:
    """Hyper-parameters of one recipe run (see the module docstring for the phases).

    ``base_model`` is a Hugging Face model folder (or an id already in the local cache; nothing
    is downloaded). ``eval_limit`` caps the number of evaluation examples (None: all).
    ``protect`` only matters for continual updates: calibrate the new mask outside the base
    adapter's mask, so the earlier tasks' coordinates stay bit-identical.
    """

    base_model: str
    task: str = "task"
    family: str = "default"
    lori: LoriConfig = field(default_factory=LoriConfig)
    method: str = "lori-s"
    dense_steps: int = 100
    sparse_steps: int = 100
    dense_lr: float = 1e-3
    sparse_lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 8
    max_length: int = 256
    seed: int = 0
    eval_max_new_tokens: int = 32
    eval_limit: int | None = None
    protect: bool = True
    device: str = "auto"

    def __post_init__(self) -> None:
        if not isinstance(self.base_model, str) or not self.base_model:
            _fail("base_model", self.base_model, "must be a non-empty path or model id")
        for name in ("task", "family"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                _fail(name, value, "must be a non-empty string")
        if not isinstance(self.lori, LoriConfig):
            _fail("lori", self.lori, "must be a lori.LoriConfig")
        if self.method not in METHODS:
            _fail("method", self.method, f"must be one of {METHODS}")
        _check_int("dense_steps", self.dense_steps, 1)
        _check_int("sparse_steps", self.sparse_steps, 1 if self.method == "lori-s" else 0)
        _check_float("dense_lr", self.dense_lr, positive=True)
        _check_float("sparse_lr", self.sparse_lr, positive=True)
        _check_float("weight_decay", self.weight_decay, positive=False)
        _check_int("batch_size", self.batch_size, 1)
        _check_int("max_length", self.max_length, 2)
        _check_int("seed", self.seed, 0)
        _check_int("eval_max_new_tokens", self.eval_max_new_tokens, 0)
        if self.eval_limit is not None:
            _check_int("eval_limit", self.eval_limit, 1)
        if not isinstance(self.protect, bool):
            _fail("protect", self.protect, "must be a bool")
        if self.device not in DEVICES and not self.device.startswith("cuda:"):
            _fail("device", self.device, f"must be one of {DEVICES} or 'cuda:N'")

    @property
    def total_steps(self) -> int:
        """Optimizer steps of the whole run (dense + sparse when method is lori-s)."""
        return self.dense_steps + (self.sparse_steps if self.method == "lori-s" else 0)
