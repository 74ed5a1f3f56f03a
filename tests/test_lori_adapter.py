"""Adapter snapshots: extract from a trained model, apply to a fresh one, refuse a different A."""

import pytest
import torch

from lori import (
    AdapterMeta,
    LoriConfig,
    ProjectionMismatch,
    Segment,
    apply_adapter,
    calibrate_masks,
    extract_adapter,
    inject,
)
from tests.lori_models import tiny_llama


def _trained(seed=3):
    model = tiny_llama()
    config = LoriConfig(rank=4, alpha=8, projection_seed=seed, sparsity=0.5)
    layers = inject(model, config)
    torch.manual_seed(1)
    for layer in layers.values():
        layer.lori_B.data.normal_()
    masks = calibrate_masks({n: la.lori_B for n, la in layers.items()}, 0.5).masks
    for name, layer in layers.items():
        layer.set_sparse(masks[name], init=layer.lori_B.detach())
    meta = AdapterMeta(base_model="tiny-llama", segments=(Segment(seed, 4),), alpha=8, target_modules=config.target_modules)
    return model, extract_adapter(model, meta), masks


def test_extract_apply_reproduces_logits():
    model, adapter, masks = _trained()
    assert adapter.masks is not None and adapter.nnz() == sum(int(m.sum()) for m in masks.values())
    x = torch.randint(0, 128, (2, 8))
    with torch.no_grad():
        expected = model(x).logits
        fresh = tiny_llama()
        apply_adapter(fresh, adapter)
        torch.testing.assert_close(fresh(x).logits, expected)
    name = "model.layers.0.self_attn.q_proj"
    torch.testing.assert_close(
        adapter.delta_weight(name), 2.0 * adapter.b[name] @ adapter.projection(name)
    )


def test_different_seed_is_refused():
    _, adapter, _ = _trained(seed=3)
    forged = adapter.with_meta(segments=(Segment(4, 4),))  # keeps the digest of seed 3
    with pytest.raises(ProjectionMismatch, match="refusing"):
        apply_adapter(tiny_llama(), forged)


def test_invalid_adapter_contents():
    _, adapter, _ = _trained()
    name = next(iter(adapter.b))
    bad_b = dict(adapter.b)
    bad_b[name] = torch.ones_like(bad_b[name])
    with pytest.raises(ValueError, match="outside its mask"):
        type(adapter)(adapter.meta, bad_b, adapter.in_features, adapter.masks)
    with pytest.raises(ValueError, match="base_model"):
        AdapterMeta(base_model="", segments=(Segment(0, 4),), alpha=8, target_modules=("q_proj",))
    with pytest.raises(ValueError, match="kind"):
        AdapterMeta(base_model="m", segments=(Segment(0, 4),), alpha=8, target_modules=("q_proj",), kind="x")
