"""Injection of LoRI layers into a transformers (or any torch) model.

``inject(model, config)`` replaces every targeted linear layer ``W`` by ``LoriLinear(W, A, alpha)``
with ``A`` regenerated from the config's seed, and freezes every base parameter.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
from torch import nn

from .config import LoriConfig
from .layer import LoriLinear, is_conv1d, linear_shape
from .projection import Segment, stacked_projection


def _is_linear(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or is_conv1d(module)


def _matches(name: str, targets: Sequence[str] | str) -> bool:
    if isinstance(targets, str):
        return re.fullmatch(targets, name) is not None
    return any(name == t or name.endswith("." + t) for t in targets)


def find_targets(model: nn.Module, targets: Sequence[str] | str) -> list[str]:
    """Names of the modules selected by ``targets``.

    Raises ValueError when nothing matches (listing the model's linear layers) and TypeError
    when a selected module is not linear.
    """
    names: list[str] = []
    for name, module in model.named_modules():
        if not name or isinstance(module, LoriLinear):
            continue
        if _matches(name, targets):
            if not _is_linear(module):
                raise TypeError(
                    f"target_modules selects {name!r}, a {type(module).__name__}; only nn.Linear and "
                    "transformers Conv1D layers can be adapted"
                )
            names.append(name)
    if not names:
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if _is_linear(m)})
        raise ValueError(f"target_modules={targets!r} matches no module; the model's linear layers are named {linear}")
    return names


def lori_layers(model: nn.Module) -> dict[str, LoriLinear]:
    """Every LoRI layer of ``model``, by the name of the module it replaced."""
    return {name: m for name, m in model.named_modules() if isinstance(m, LoriLinear)}


def inject(
    model: nn.Module,
    config: LoriConfig,
    segments: Sequence[Segment] | None = None,
    module_names: Sequence[str] | None = None,
) -> dict[str, LoriLinear]:
    """Wrap the targeted linear layers of ``model`` in place; returns the new layers by name.

    ``segments`` overrides the single segment (config.projection_seed, config.rank,
    config.distribution), e.g. for a concat-merged adapter (their ranks must add up to
    config.rank; the scaling is config.alpha / config.rank); ``module_names`` overrides the
    selection by ``config.target_modules`` with an exact list. Every base parameter is frozen.
    """
    if lori_layers(model):
        raise ValueError("model already has LoRI layers; inject into a fresh model")
    segs = list(segments) if segments else [Segment(config.projection_seed, config.rank, config.distribution)]
    if sum(s.rank for s in segs) != config.rank:
        raise ValueError(f"rank={config.rank}: the segments' ranks add up to {sum(s.rank for s in segs)}")
    if module_names is None:
        names = find_targets(model, config.target_modules)
    else:
        known = dict(model.named_modules())
        missing = [n for n in module_names if n not in known]
        if missing:
            raise ValueError(f"module_names: the model has no module(s) {missing[:5]}")
        names = list(module_names)
    for p in model.parameters():
        p.requires_grad_(False)
    layers: dict[str, LoriLinear] = {}
    for name in names:
        base = model.get_submodule(name)
        _, d_in = linear_shape(base)
        if base.weight.device.type == "meta":  # shapes only (parameter counting), no values
            a = torch.empty(config.rank, d_in, device="meta")
        else:
            a = stacked_projection(segs, name, d_in)
        layer = LoriLinear(base, a, config.alpha)
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, layer)
        layers[name] = layer
    return layers


def trainable_parameters(model: nn.Module) -> int:
    """Number of parameters with requires_grad (the trainable state of the adapter)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
