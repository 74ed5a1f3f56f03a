"""The compared methods, all trained with ``model.train_loop`` at the same rank, targets and step budget.

- ``lora``:   PEFT LoRA (``peft.LoraConfig(r, lora_alpha, target_modules, lora_dropout=0)``):
              A (Kaiming-uniform) and B (zeros) both trained.  ΔW = (alpha / r) B A.
- ``lori-d``: lori.inject with the task's projection seed; dense B trained, A frozen.
- ``lori-s``: masks calibrated from the LoRI-D run's |B| (lori.calibrate_masks), B reset to zero,
              only B ⊙ M trained for the same number of steps (so LoRI-S costs D + S steps).
- continual: training on top of an earlier adapter (the safety one):
    LoRA   - the same PEFT adapter keeps training on the new task;
    LoRI-D - B_base = safety B (frozen), a dense B trained on top;
    LoRI-S - B_base = safety B, a sparse B on the new task's mask, calibrated either freely
             (masks may overlap safety's: the paper's variant) or outside safety's mask
             (``protected``: safety's coordinates stay bit-identical).

Adapters are kept factored (LoRA: (A, B, s) per module; LoRI: a ``lori.Adapter``), and turned
into ΔW one module at a time for evaluation (``deltas``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import torch

from lori import (
    Adapter,
    AdapterMeta,
    LoriConfig,
    ProjectionMismatch,
    Segment,
    calibrate_masks,
    digest_of,
    extract_adapter,
    inject,
    projection,
)

from .model import Base, TrainSpec, train_loop
from .tasks import Example

PEFT_PREFIX = "base_model.model."


@dataclass(frozen=True)
class Setup:
    """What every method shares."""

    rank: int
    alpha: float
    targets: tuple[str, ...]
    sparsity: float
    granularity: str
    train: TrainSpec
    base_model: str

    def lori_config(self, seed: int) -> LoriConfig:
        return LoriConfig(
            rank=self.rank,
            alpha=self.alpha,
            target_modules=self.targets,
            projection_seed=seed,
            sparsity=self.sparsity,
            granularity=self.granularity,
        )


@dataclass
class LoraAdapter:
    """A PEFT LoRA adapter as per-module factor pairs: ΔW_m = scaling * B_m A_m."""

    task: str
    a: dict[str, torch.Tensor]  # (r, d_in)
    b: dict[str, torch.Tensor]  # (d_out, r)
    scaling: float

    def pairs(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        return {n: (self.a[n], self.b[n]) for n in self.a}

    def trainable(self) -> int:
        return sum(t.numel() for t in self.a.values()) + sum(t.numel() for t in self.b.values())


@dataclass
class Trained:
    """One trained adapter plus its training statistics."""

    method: str
    task: str
    adapter: LoraAdapter | Adapter
    stats: dict = field(default_factory=dict)
    model: object = None  # kept only where training continues (LoRA continual)


class ProjectionCache:
    """A_m of every (seed, module) used so far, checked against each adapter's recorded digest."""

    def __init__(self) -> None:
        self._a: dict[tuple[int, str], torch.Tensor] = {}

    def remember(self, seed: int, layers: Mapping[str, torch.nn.Module]) -> None:
        for name, layer in layers.items():
            self._a.setdefault((seed, name), layer.lori_A.detach().float().cpu().clone())

    def stacked(self, adapter: Adapter, name: str) -> torch.Tensor:
        """A_m = [A_1; ...; A_n] over the adapter's segments ((Σ r_t) x d_in)."""
        blocks = []
        for seg in adapter.meta.segments:
            a = self._a.get((seg.seed, name))
            if a is None or a.shape[0] != seg.rank or seg.distribution != "uniform":
                a = projection(seg.seed, name, (seg.rank, adapter.in_features[name]), seg.distribution)
                self._a[(seg.seed, name)] = a
            blocks.append(a)
        return blocks[0] if len(blocks) == 1 else torch.cat(blocks, dim=0)

    def check(self, adapter: Adapter) -> None:
        """The cached A of every module must match the digest the adapter records."""
        if digest_of((n, self.stacked(adapter, n)) for n in adapter.b) != adapter.digest:
            raise ProjectionMismatch(f"cached projections do not match adapter {adapter.meta.task!r}")


def deltas(adapter: LoraAdapter | Adapter, cache: ProjectionCache) -> Iterator[tuple[str, torch.Tensor]]:
    """(module name, ΔW (d_out, d_in) float32) one module at a time."""
    if isinstance(adapter, LoraAdapter):
        for name in adapter.a:
            yield name, adapter.scaling * adapter.b[name].float() @ adapter.a[name].float()
        return
    for name in sorted(adapter.b):
        yield name, adapter.meta.scaling * adapter.b[name].float() @ cache.stacked(adapter, name)


# --------------------------------------------------------------------- LoRA
def _peft_model(base: Base, setup: Setup):
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=setup.rank,
        lora_alpha=setup.alpha,
        target_modules=list(setup.targets),
        lora_dropout=0.0,
        bias="none",
        task_type="CAUSAL_LM",
    )
    torch.manual_seed(setup.train.seed)  # PEFT's Kaiming-uniform A
    return get_peft_model(base.fresh(), config)


def _lora_params(model) -> list[torch.nn.Parameter]:
    return [p for n, p in model.named_parameters() if "lora_A" in n or "lora_B" in n]


def _lora_snapshot(model, task: str, setup: Setup) -> LoraAdapter:
    a: dict[str, torch.Tensor] = {}
    b: dict[str, torch.Tensor] = {}
    for name, module in model.named_modules():
        if hasattr(module, "lora_A") and "default" in getattr(module, "lora_A", {}):
            key = name[len(PEFT_PREFIX) :] if name.startswith(PEFT_PREFIX) else name
            a[key] = module.lora_A["default"].weight.detach().float().cpu().clone()
            b[key] = module.lora_B["default"].weight.detach().float().cpu().clone()
    if not a:
        raise RuntimeError("PEFT model has no LoRA layers")
    return LoraAdapter(task, a, b, setup.alpha / setup.rank)


def train_lora(base: Base, setup: Setup, task: str, data: Sequence[Example], keep_model: bool = False) -> Trained:
    model = _peft_model(base, setup)
    stats = train_loop(model, _lora_params(model), base, data, setup.train)
    adapter = _lora_snapshot(model, task, setup)
    stats["trainable"] = adapter.trainable()
    return Trained("lora", task, adapter, stats, model if keep_model else None)


def continue_lora(base: Base, setup: Setup, previous: Trained, task: str, data: Sequence[Example]) -> Trained:
    """Keep training the previous task's PEFT adapter (A and B) on the new task."""
    if previous.model is None:
        raise ValueError("continue_lora needs the previous run's model (train_lora(..., keep_model=True))")
    model = previous.model
    stats = train_loop(model, _lora_params(model), base, data, setup.train)
    adapter = _lora_snapshot(model, f"{previous.task}>{task}", setup)
    stats["trainable"] = adapter.trainable()
    return Trained("lora", adapter.task, adapter, stats)


# --------------------------------------------------------------------- LoRI
def _meta(setup: Setup, seed: int, task: str, kind: str, sparse: bool) -> AdapterMeta:
    return AdapterMeta(
        base_model=setup.base_model,
        segments=(Segment(seed, setup.rank),),
        alpha=setup.alpha,
        target_modules=setup.targets,
        task=task,
        kind=kind,
        sparsity=setup.sparsity if sparse else None,
        granularity=setup.granularity if sparse else None,
    )


@dataclass
class LoriPair:
    """The LoRI-D run of a task and (optionally) LoRI-S runs calibrated from it."""

    dense: Trained
    sparse: Trained | None = None


def _inject(base: Base, setup: Setup, seed: int, cache: ProjectionCache):
    model = base.fresh()
    layers = inject(model, setup.lori_config(seed))
    cache.remember(seed, layers)
    return model, layers


def train_lori_d(
    base: Base, setup: Setup, task: str, data: Sequence[Example], seed: int, cache: ProjectionCache,
    on_top_of: Adapter | None = None,
) -> Trained:
    """LoRI-D: dense B trained with A frozen (on top of ``on_top_of`` as a frozen B_base, if given)."""
    model, layers = _inject(base, setup, seed, cache)
    if on_top_of is not None:
        for name, layer in layers.items():
            layer.set_base(on_top_of.b[name], None)
    stats = train_loop(model, [layer.lori_B for layer in layers.values()], base, data, setup.train)
    kind = "continual" if on_top_of is not None else "lori-d"
    label = task if on_top_of is None else f"{on_top_of.meta.task}>{task}"
    adapter = extract_adapter(model, _meta(setup, seed, label, kind, sparse=False))
    stats["trainable"] = sum(layer.lori_B.numel() for layer in layers.values())
    return Trained("lori-d", label, adapter, stats)


def calibrate(setup: Setup, dense: Adapter, protected: Mapping[str, torch.Tensor] | None = None) -> dict:
    """Top-k |B| masks of a LoRI-D adapter (outside ``protected`` when given)."""
    return calibrate_masks(dense.b, setup.sparsity, setup.granularity, protected=protected).masks


def train_lori_s(
    base: Base, setup: Setup, task: str, data: Sequence[Example], seed: int, masks: Mapping[str, torch.Tensor],
    cache: ProjectionCache, on_top_of: Adapter | None = None, method: str = "lori-s",
) -> Trained:
    """LoRI-S: B reset to zero, only B ⊙ M trained (on top of ``on_top_of`` as frozen B_base + its mask)."""
    model, layers = _inject(base, setup, seed, cache)
    for name, layer in layers.items():
        if on_top_of is not None:
            layer.set_base(on_top_of.b[name], None if on_top_of.masks is None else on_top_of.masks[name])
        layer.set_sparse(masks[name])
    stats = train_loop(model, [layer.lori_values for layer in layers.values()], base, data, setup.train)
    kind = "continual" if on_top_of is not None else "lori-s"
    label = task if on_top_of is None else f"{on_top_of.meta.task}>{task}"
    adapter = extract_adapter(model, _meta(setup, seed, label, kind, sparse=True))
    stats["trainable"] = sum(layer.lori_values.numel() for layer in layers.values())
    return Trained(method, label, adapter, stats)
