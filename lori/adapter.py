"""The in-memory adapter: metadata, B matrices and masks, detached from any model.

For every adapted module ``m`` with input width d_in(m):

    ΔW_m = s * B_m A_m,     s = alpha / r,     A_m = [A_1; ...; A_n] from the segments' seeds

``B_m`` (d_out x r, float32) is the *effective* B (zeros outside the mask). ``masks`` is None for a
dense (LoRI-D or LoRA-like) adapter. ``digest`` is the sha256 of every A the adapter was trained
against; applying the adapter regenerates A and refuses a mismatch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import torch
from torch import nn

from .config import LoriConfig
from .inject import inject, lori_layers
from .layer import LoriLinear
from .projection import Segment, digest_of, projection_digest, stacked_projection

KINDS = ("lori-d", "lori-s", "continual", "merge-sum", "merge-concat", "fedavg", "lora")


class ProjectionMismatch(ValueError):
    """The A regenerated on this machine differs from the A an adapter was trained against."""


@dataclass(frozen=True)
class AdapterMeta:
    """Everything needed to rebuild the adapter's A and to check compatibility."""

    base_model: str
    segments: tuple[Segment, ...]
    alpha: float
    target_modules: tuple[str, ...] | str
    task: str = ""
    kind: str = "lori-s"
    sparsity: float | None = None
    granularity: str | None = None
    base_revision: str | None = None
    family: str = ""
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if not isinstance(self.base_model, str) or not self.base_model:
            raise ValueError(f"base_model={self.base_model!r}: must be a non-empty string")
        if isinstance(self.target_modules, list):
            object.__setattr__(self, "target_modules", tuple(self.target_modules))
        segments = tuple(Segment(**s) if isinstance(s, dict) else s for s in self.segments)
        object.__setattr__(self, "segments", segments)
        if not segments or not all(isinstance(s, Segment) for s in segments):
            raise ValueError(f"segments={self.segments!r}: at least one Segment is required")
        if not isinstance(self.alpha, (int, float)) or not self.alpha > 0:
            raise ValueError(f"alpha={self.alpha!r}: must be positive")
        if self.kind not in KINDS:
            raise ValueError(f"kind={self.kind!r}: must be one of {KINDS}")

    @property
    def rank(self) -> int:
        return sum(s.rank for s in self.segments)

    @property
    def scaling(self) -> float:
        """s = alpha / r (r = total rank over segments)."""
        return self.alpha / self.rank

    @property
    def shared_seed(self) -> int | None:
        """The projection seed when A comes from a single seed, else None."""
        seeds = {s.seed for s in self.segments}
        return seeds.pop() if len(seeds) == 1 and len(self.segments) == 1 else None

    def config(self) -> LoriConfig:
        """A LoriConfig equivalent to this adapter (for the first segment's seed and distribution)."""
        first = self.segments[0]
        return LoriConfig(
            rank=self.rank,
            alpha=float(self.alpha),
            target_modules=self.target_modules,
            projection_seed=first.seed,
            distribution=first.distribution,
            sparsity=self.sparsity if self.sparsity is not None else 0.9,
            granularity=self.granularity or "model",
        )


@dataclass
class Adapter:
    """B matrices (and masks) of one adapter; see the module docstring."""

    meta: AdapterMeta
    b: dict[str, torch.Tensor]
    in_features: dict[str, int]
    masks: dict[str, torch.Tensor] | None = None
    digest: str = ""

    def __post_init__(self) -> None:
        if not self.b:
            raise ValueError("b: an adapter needs at least one module")
        if set(self.b) != set(self.in_features):
            raise ValueError("b and in_features must name the same modules")
        r = self.meta.rank
        for name, b in self.b.items():
            if b.dim() != 2 or b.shape[1] != r:
                raise ValueError(f"B of {name!r} has shape {tuple(b.shape)}, expected (d_out, {r})")
        if self.masks is not None:
            if set(self.masks) != set(self.b):
                raise ValueError("masks and b must name the same modules")
            for name, m in self.masks.items():
                if m.dtype != torch.bool or m.shape != self.b[name].shape:
                    raise ValueError(f"mask of {name!r} must be bool {tuple(self.b[name].shape)}")
                if bool((self.b[name][~m] != 0).any()):
                    raise ValueError(f"B of {name!r} has non-zero entries outside its mask")
        if not self.digest:
            self.digest = projection_digest(self.meta.segments, self.in_features)

    @property
    def rank(self) -> int:
        return self.meta.rank

    def projection(self, name: str) -> torch.Tensor:
        """A_m ((r, d_in), float32) regenerated from the segments."""
        return stacked_projection(self.meta.segments, name, self.in_features[name])

    def delta_weight(self, name: str) -> torch.Tensor:
        """ΔW_m = s * B_m A_m, (d_out, d_in) float32."""
        return self.meta.scaling * self.b[name].float() @ self.projection(name)

    def nnz(self) -> int:
        """Stored B entries: mask nnz (sparse) or every entry (dense)."""
        if self.masks is None:
            return sum(b.numel() for b in self.b.values())
        return sum(int(m.sum()) for m in self.masks.values())

    def with_meta(self, **changes) -> Adapter:
        """A copy with some metadata fields replaced (B and masks shared)."""
        return Adapter(replace(self.meta, **changes), self.b, self.in_features, self.masks, self.digest)


def extract_adapter(model: nn.Module, meta: AdapterMeta) -> Adapter:
    """Snapshot the LoRI layers of ``model`` as an Adapter (effective B, support masks)."""
    layers = lori_layers(model)
    if not layers:
        raise ValueError("model has no LoRI layers")
    b: dict[str, torch.Tensor] = {}
    masks: dict[str, torch.Tensor] = {}
    dense = False
    with torch.no_grad():
        for name, layer in layers.items():
            b[name] = layer.effective_b().detach().float().cpu().clone()
            support = layer.support_mask()
            if support is None:
                dense = True
            else:
                masks[name] = support.cpu().clone()
    digest = digest_of((n, layer.lori_A) for n, layer in layers.items())
    in_features = {n: layer.in_features for n, layer in layers.items()}
    return Adapter(meta, b, in_features, None if dense else masks, digest)


def apply_adapter(model: nn.Module, adapter: Adapter) -> dict[str, LoriLinear]:
    """Inject ``adapter`` into a fresh ``model`` (frozen), regenerating A and checking its digest.

    Raises ProjectionMismatch when the regenerated A differs from the adapter's recorded digest.
    """
    config = replace(adapter.meta.config(), target_modules=tuple(adapter.b))
    layers = inject(model, config, segments=adapter.meta.segments, module_names=sorted(adapter.b))
    for name, layer in layers.items():
        if layer.in_features != adapter.in_features[name]:
            raise ValueError(
                f"module {name!r}: the model has d_in={layer.in_features}, the adapter {adapter.in_features[name]}"
            )
    digest = digest_of((n, layer.lori_A) for n, layer in layers.items())
    if digest != adapter.digest:
        raise ProjectionMismatch(
            f"regenerated A has digest {digest[:16]}…, the adapter was trained against {adapter.digest[:16]}… "
            f"(seeds {[s.seed for s in adapter.meta.segments]}); refusing to run"
        )
    for name, layer in layers.items():
        layer.set_base(adapter.b[name], None if adapter.masks is None else adapter.masks[name])
        layer.drop_trainable()
    return layers


def masks_of(adapter: Adapter) -> Mapping[str, torch.Tensor]:
    """The adapter's masks; a dense adapter's mask is every coordinate."""
    if adapter.masks is not None:
        return adapter.masks
    return {n: torch.ones_like(b, dtype=torch.bool) for n, b in adapter.b.items()}
