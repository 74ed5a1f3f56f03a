"""Configuration of a LoRI adapter.

A LoRI adapter on a linear layer ``W`` (d_out x d_in) computes

    y = W x + s * (B ⊙ M) (A x),      s = alpha / r

with ``A`` (r x d_in) frozen and regenerated from ``projection_seed``, ``B`` (d_out x r) trained
from zero and ``M`` a boolean task mask of density ``1 - sparsity``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

DEFAULT_TARGETS: tuple[str, ...] = (
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
)
DISTRIBUTIONS: tuple[str, ...] = ("uniform", "gaussian")
GRANULARITIES: tuple[str, ...] = ("model", "layer", "matrix")
MAX_SEED = 2**63 - 1


def _fail(name: str, value: object, why: str) -> None:
    raise ValueError(f"{name}={value!r}: {why}")


@dataclass(frozen=True)
class LoriConfig:
    """Hyper-parameters shared by every adapter of a family.

    ``target_modules`` is either a sequence of module-name suffixes (``"q_proj"`` matches
    ``model.layers.0.self_attn.q_proj``) or one regular expression matched against the full
    module name with ``re.fullmatch``.
    """

    rank: int = 32
    alpha: float = 64.0
    target_modules: tuple[str, ...] | str = DEFAULT_TARGETS
    projection_seed: int = 0
    distribution: str = "uniform"
    sparsity: float = 0.9
    granularity: str = "model"
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1:
            _fail("rank", self.rank, "must be a positive integer")
        if not isinstance(self.alpha, (int, float)) or not math.isfinite(self.alpha) or self.alpha <= 0:
            _fail("alpha", self.alpha, "must be a finite positive number")
        if isinstance(self.target_modules, list):
            object.__setattr__(self, "target_modules", tuple(self.target_modules))
        targets = self.target_modules
        if isinstance(targets, str):
            if not targets:
                _fail("target_modules", targets, "an empty regex matches nothing")
            import re

            try:
                re.compile(targets)
            except re.error as exc:
                _fail("target_modules", targets, f"invalid regular expression ({exc})")
        elif not targets or not all(isinstance(t, str) and t for t in targets):
            _fail("target_modules", targets, "must be a non-empty list of module names or a regex string")
        if (
            isinstance(self.projection_seed, bool)
            or not isinstance(self.projection_seed, int)
            or not 0 <= self.projection_seed <= MAX_SEED
        ):
            _fail("projection_seed", self.projection_seed, f"must be an integer in [0, {MAX_SEED}]")
        if self.distribution not in DISTRIBUTIONS:
            _fail("distribution", self.distribution, f"must be one of {DISTRIBUTIONS}")
        if not isinstance(self.sparsity, (int, float)) or not 0.0 <= self.sparsity < 1.0:
            _fail("sparsity", self.sparsity, "must be in [0, 1)")
        if self.granularity not in GRANULARITIES:
            _fail("granularity", self.granularity, f"must be one of {GRANULARITIES}")

    @property
    def scaling(self) -> float:
        """s = alpha / r."""
        return self.alpha / self.rank
