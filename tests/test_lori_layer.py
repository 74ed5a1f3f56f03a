"""LoriLinear: the formula, the three modes, dtypes, and GPT-2 Conv1D."""

import pytest
import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from lori.layer import LoriLinear
from lori.projection import projection


def _layer(d_out=6, d_in=5, r=3, alpha=6.0, seed=0):
    torch.manual_seed(seed)
    base = nn.Linear(d_in, d_out)
    return LoriLinear(base, projection(seed, "m", (r, d_in)), alpha)


def test_formula_dense():
    layer = _layer()
    b = torch.randn(6, 3)
    layer.set_dense(b)
    x = torch.randn(4, 5)
    expected = layer.base(x) + 2.0 * (x @ layer.lori_A.T) @ b.T
    torch.testing.assert_close(layer(x), expected)
    torch.testing.assert_close(layer.delta_weight(), 2.0 * b @ layer.lori_A)


def test_zero_init_is_identity_and_base_frozen():
    layer = _layer()
    x = torch.randn(2, 5)
    torch.testing.assert_close(layer(x), layer.base(x))
    assert not any(p.requires_grad for p in layer.base.parameters())
    assert "lori_A" not in layer.state_dict()  # non-persistent: never saved


def test_sparse_trainable_state_is_mask_nnz():
    layer = _layer()
    mask = torch.rand(6, 3, generator=torch.Generator().manual_seed(1)) < 0.3
    init = torch.randn(6, 3)
    layer.set_sparse(mask, init)
    trainable = [p for p in layer.parameters() if p.requires_grad]
    assert sum(p.numel() for p in trainable) == int(mask.sum())
    torch.testing.assert_close(layer.effective_b(), init * mask)
    opt = torch.optim.AdamW(trainable, lr=0.1)
    for _ in range(3):
        layer(torch.randn(8, 5)).pow(2).sum().backward()
        opt.step()
        opt.zero_grad()
    assert torch.all(layer.effective_b()[~mask] == 0)
    state = opt.state[trainable[0]]
    assert state["exp_avg"].numel() == int(mask.sum())


def test_base_contribution_is_untouched_by_training():
    layer = _layer()
    base_b = torch.randn(6, 3)
    base_mask = torch.zeros(6, 3, dtype=torch.bool)
    base_mask[:2] = True
    base_b = base_b * base_mask
    layer.set_base(base_b, base_mask)
    new_mask = ~base_mask
    layer.set_sparse(new_mask)
    opt = torch.optim.SGD([layer.lori_values], lr=0.5)
    layer(torch.randn(8, 5)).sum().backward()
    opt.step()
    eff = layer.effective_b()
    assert torch.equal(eff[base_mask], base_b[base_mask])
    assert torch.equal(layer.support_mask(), torch.ones(6, 3, dtype=torch.bool))
    layer.freeze()
    assert layer.mode == "frozen" and not any(p.requires_grad for p in layer.parameters())
    torch.testing.assert_close(layer.effective_b(), eff.detach())


def test_bf16_forward():
    layer = _layer()
    layer.set_dense(torch.randn(6, 3))
    layer.base.to(torch.bfloat16)
    x = torch.randn(4, 5)
    out = layer(x.to(torch.bfloat16))
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), layer.base(x.bfloat16()).float() + 2.0 * (x @ layer.lori_A.T) @ layer.lori_B.T, atol=0.1, rtol=0.05)


def test_conv1d_matches_linear_formula():
    torch.manual_seed(0)
    conv = Conv1D(7, 5)  # d_out=7, d_in=5, weight (5, 7)
    layer = LoriLinear(conv, projection(0, "c", (2, 5)), 4.0)
    assert (layer.out_features, layer.in_features) == (7, 5)
    b = torch.randn(7, 2)
    layer.set_dense(b)
    x = torch.randn(3, 5)
    torch.testing.assert_close(layer(x), x @ conv.weight + conv.bias + 2.0 * (x @ layer.lori_A.T) @ b.T)


def test_shape_errors():
    layer = _layer()
    with pytest.raises(ValueError, match="init has shape"):
        layer.set_dense(torch.zeros(2, 2))
    with pytest.raises(ValueError, match="mask must be bool"):
        layer.set_sparse(torch.ones(6, 3))
    with pytest.raises(TypeError, match="not a linear layer"):
        LoriLinear(nn.Conv2d(1, 1, 1), torch.zeros(1, 1), 1.0)
