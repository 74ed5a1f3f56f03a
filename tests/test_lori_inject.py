"""Injection into tiny Llama, GPT-2 and BERT models; config validation; mask calibration."""

import pytest
import torch

from lori import LoriConfig, calibrate_masks, find_targets, inject, lori_layers, trainable_parameters
from lori.masks import layer_of, mask_overlap
from tests.lori_models import tiny_bert, tiny_gpt2, tiny_llama


def test_llama_default_targets_and_frozen_base():
    model = tiny_llama()
    layers = inject(model, LoriConfig(rank=4, alpha=8))
    assert len(layers) == 2 * 7
    assert {n.rsplit(".", 1)[-1] for n in layers} == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    # LoRI-D: only B trains, d_out * r per module
    assert trainable_parameters(model) == sum(layer.out_features * 4 for layer in layers.values())
    x = torch.randint(0, 128, (2, 8))
    model(x, labels=x).loss.backward()
    assert all(p.grad is None for n, p in model.named_parameters() if "lori" not in n)


def test_gpt2_conv1d_and_regex_targets():
    model = tiny_gpt2()
    layers = inject(model, LoriConfig(rank=2, alpha=4, target_modules=r"transformer\.h\.\d+\.(attn\.c_attn|mlp\.c_fc)"))
    assert sorted(layers) == [f"transformer.h.{i}.{m}" for i in range(2) for m in ("attn.c_attn", "mlp.c_fc")]
    assert layers["transformer.h.0.attn.c_attn"].out_features == 96


def test_bert_targets():
    model = tiny_bert()
    layers = inject(model, LoriConfig(rank=2, alpha=4, target_modules=("query", "key", "value")))
    assert len(layers) == 6
    out = model(torch.randint(0, 100, (1, 5))).last_hidden_state
    assert out.shape == (1, 5, 32)


def test_nothing_matches_names_the_layers():
    with pytest.raises(ValueError, match=r"matches no module.*c_attn"):
        inject(tiny_gpt2(), LoriConfig())


def test_non_linear_target_is_refused():
    with pytest.raises(TypeError, match="only nn.Linear"):
        find_targets(tiny_llama(), r"model\.layers\.0\.mlp")


def test_double_injection_refused():
    model = tiny_llama()
    inject(model, LoriConfig(rank=2, alpha=2))
    with pytest.raises(ValueError, match="already has LoRI layers"):
        inject(model, LoriConfig(rank=2, alpha=2))


def test_same_seed_same_a_on_fresh_models():
    a = lori_layers(_injected(seed=5))
    b = lori_layers(_injected(seed=5))
    c = lori_layers(_injected(seed=6))
    name = "model.layers.1.mlp.down_proj"
    assert torch.equal(a[name].lori_A, b[name].lori_A)
    assert not torch.equal(a[name].lori_A, c[name].lori_A)


def _injected(seed):
    model = tiny_llama()
    inject(model, LoriConfig(rank=4, alpha=8, projection_seed=seed))
    return model


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"rank": 0}, "rank"),
        ({"alpha": -1.0}, "alpha"),
        ({"sparsity": 1.0}, "sparsity"),
        ({"sparsity": -0.1}, "sparsity"),
        ({"granularity": "row"}, "granularity"),
        ({"distribution": "laplace"}, "distribution"),
        ({"projection_seed": -3}, "projection_seed"),
        ({"target_modules": "("}, "target_modules"),
        ({"target_modules": ()}, "target_modules"),
    ],
)
def test_config_errors_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        LoriConfig(**kwargs)


def _scores():
    g = torch.Generator().manual_seed(0)
    return {
        "model.layers.0.q": torch.randn(8, 4, generator=g),
        "model.layers.0.v": torch.randn(8, 4, generator=g) * 3,
        "model.layers.1.q": torch.randn(16, 4, generator=g) * 0.1,
    }


@pytest.mark.parametrize("granularity", ["model", "layer", "matrix"])
def test_calibration_density_and_topk(granularity):
    b = _scores()
    result = calibrate_masks(b, sparsity=0.75, granularity=granularity)
    assert result.density == pytest.approx(0.25, abs=0.01)
    if granularity == "matrix":
        for name, m in result.masks.items():
            kept = b[name].abs()[m]
            assert kept.min() >= b[name].abs()[~m].max()
            assert int(m.sum()) == round(0.25 * m.numel())
    if granularity == "model":  # the small-magnitude layer loses most of its entries
        assert int(result.masks["model.layers.1.q"].sum()) < 0.25 * 64


def test_calibration_respects_protected_mask():
    b = _scores()
    first = calibrate_masks(b, sparsity=0.8)
    second = calibrate_masks(b, sparsity=0.8, protected=first.masks)
    assert mask_overlap(first.masks, second.masks) == 0.0
    assert second.kept == first.kept
    full = {n: torch.ones_like(m) for n, m in first.masks.items()}
    assert calibrate_masks(b, sparsity=0.8, protected=full).kept == 0


def test_calibration_errors():
    with pytest.raises(ValueError, match="sparsity"):
        calibrate_masks(_scores(), sparsity=1.0)
    with pytest.raises(ValueError, match="granularity"):
        calibrate_masks(_scores(), sparsity=0.5, granularity="row")
    with pytest.raises(ValueError, match="protected mask for 'x'"):
        calibrate_masks(_scores(), sparsity=0.5, protected={"x": torch.ones(2, 2, dtype=torch.bool)})


def test_layer_of():
    assert layer_of("model.layers.12.mlp.up_proj") == "model.layers.12"
    assert layer_of("transformer.h.3.attn.c_attn") == "transformer.h.3"
    assert layer_of("lm_head") == "lm_head"
