"""Plain result and error types of the recipe (no torch state beyond the adapter)."""

from __future__ import annotations

from dataclasses import dataclass, field

from lori import Adapter


class Cancelled(Exception):
    """Raised by the recipe when ``should_stop()`` returned True; carries where it stopped."""

    def __init__(self, phase: str, step: int) -> None:
        super().__init__(f"cancelled in phase {phase!r} at step {step}")
        self.phase = phase
        self.step = step


@dataclass
class RecipeResult:
    """The trained adapter plus what happened on the way.

    ``metrics``: eval_loss, exact_match, eval_n (when eval examples were given), train_loss_first,
    train_loss_last, dense_loss_last, trainable_params, nnz, mask_density.
    ``timings``: setup_s, dense_s, calibrate_s, sparse_s, eval_s (seconds).
    ``history``: one dict per optimizer step: phase, step, global_step, loss, lr, tokens, step_s.
    """

    adapter: Adapter
    metrics: dict[str, float] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
