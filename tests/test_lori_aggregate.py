"""FedAvg of a shared-seed family is exact; per-coordinate averaging with differing masks; validation."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from lori import fedavg, fedavg_b, lora_fedavg
from tests.test_lori_merge import RANK, SHAPES, make_adapter

COUNTS = [10, 30, 60]


def _clients(same_mask: bool = True):
    first = make_adapter(5, "task", 0)
    if not same_mask:
        return [first, make_adapter(5, "task", 1), make_adapter(5, "task", 2)]
    gen = torch.Generator().manual_seed(9)
    clients = [first]
    for _ in range(2):
        b = {n: torch.randn(first.b[n].shape, generator=gen) * first.masks[n] for n in SHAPES}
        clients.append(type(first)(first.meta, b, first.in_features, first.masks, first.digest))
    return clients


def test_fedavg_equals_weighted_mean_of_deltas():
    clients = _clients()
    merged = fedavg(clients, COUNTS)
    assert merged.meta.kind == "fedavg" and merged.rank == RANK
    assert merged.meta.extra["example_counts"] == COUNTS
    total = sum(COUNTS)
    for name in SHAPES:
        mean = sum(n * c.delta_weight(name) for n, c in zip(COUNTS, clients, strict=True)) / total
        assert_close(merged.delta_weight(name), mean, rtol=1e-5, atol=1e-6)
        assert torch.equal(merged.masks[name], clients[0].masks[name])


def test_fedavg_b_plain_mean():
    clients = _clients()
    out = fedavg_b([c.b for c in clients], COUNTS)
    for name in SHAPES:
        expected = sum(n * c.b[name] for n, c in zip(COUNTS, clients, strict=True)) / sum(COUNTS)
        assert_close(out[name], expected)


def test_fedavg_per_coordinate_with_differing_masks():
    clients = _clients(same_mask=False)
    merged = fedavg(clients, COUNTS)
    for name in SHAPES:
        held = torch.stack([c.masks[name].double() * n for c, n in zip(clients, COUNTS, strict=True)])
        values = torch.stack([c.b[name].double() for c in clients])
        den = held.sum(0)
        for i in range(den.shape[0]):
            for j in range(den.shape[1]):
                if den[i, j] == 0:
                    assert merged.b[name][i, j] == 0
                else:
                    expected = float((held[:, i, j] * values[:, i, j]).sum() / den[i, j])
                    assert float(merged.b[name][i, j]) == pytest.approx(expected, rel=1e-6, abs=1e-7)
        union = clients[0].masks[name] | clients[1].masks[name] | clients[2].masks[name]
        assert torch.equal(merged.masks[name], union)
    # a coordinate held by one client only keeps that client's value
    only = (
        clients[0].masks["layers.0.q_proj"]
        & ~clients[1].masks["layers.0.q_proj"]
        & ~clients[2].masks["layers.0.q_proj"]
    )
    assert bool(only.any())
    assert_close(merged.b["layers.0.q_proj"][only], clients[0].b["layers.0.q_proj"][only])


def test_fedavg_b_masks_and_dense_clients():
    bs = [{"m": torch.tensor([[1.0, 0.0]])}, {"m": torch.tensor([[3.0, 5.0]])}]
    masks = [{"m": torch.tensor([[True, False]])}, None]  # client 1 is dense
    assert_close(fedavg_b(bs, [1, 3], masks)["m"], torch.tensor([[2.5, 5.0]]))
    assert_close(fedavg_b(bs, [1, 3])["m"], torch.tensor([[2.5, 3.75]]))


@pytest.mark.parametrize(
    ("counts", "message"),
    [
        ([10, 30], r"counts: expected 3 values"),
        ([10, 0, 5], r"counts\[1\]=0: client 1"),
        ([10, 2.5, 5], r"counts\[1\]=2.5: client 1"),
        ([10, True, 5], r"counts\[1\]=True"),
    ],
)
def test_fedavg_validates_counts(counts, message):
    with pytest.raises(ValueError, match=message):
        fedavg(_clients(), counts)


def test_fedavg_validates_shapes_and_finiteness():
    bs = [{"m": torch.zeros(2, 3)}, {"m": torch.zeros(2, 3)}, {"m": torch.zeros(2, 4)}]
    with pytest.raises(ValueError, match=r"client 2: B of 'm' has shape \(2, 4\)"):
        fedavg_b(bs, [1, 1, 1])
    bs[2] = {"m": torch.tensor([[0.0, float("inf"), 0.0], [0.0, 0.0, 0.0]])}
    with pytest.raises(ValueError, match="client 2: B of 'm' has non-finite values"):
        fedavg_b(bs, [1, 1, 1])
    with pytest.raises(ValueError, match="client 1: modules differ"):
        fedavg_b([{"m": torch.zeros(1, 1)}, {"n": torch.zeros(1, 1)}], [1, 1])
    with pytest.raises(ValueError, match="client 0: mask of 'm' must be bool"):
        fedavg_b([{"m": torch.zeros(1, 1)}], [1], [{"m": torch.ones(1, 1)}])


def test_fedavg_refuses_different_seed_clients():
    with pytest.raises(ValueError, match=r"projection_seed differs: adapter 1 \(task 'x'\) has 6"):
        fedavg([make_adapter(5, "x", 0), make_adapter(6, "x", 1)], [1, 1])
    with pytest.raises(ValueError, match=r"base_model differs: adapter 1"):
        fedavg([make_adapter(5, "x", 0), make_adapter(5, "x", 1, base_model="other")], [1, 1])


def test_lora_fedavg_is_not_the_true_mean_when_a_differs():
    gen = torch.Generator().manual_seed(0)
    pairs = [(torch.randn(RANK, 16, generator=gen), torch.randn(6, RANK, generator=gen)) for _ in range(3)]
    a, b = lora_fedavg(pairs, COUNTS)
    true_mean = sum(n * (bb @ aa) for n, (aa, bb) in zip(COUNTS, pairs, strict=True)) / sum(COUNTS)
    assert not torch.allclose(b @ a, true_mean, rtol=1e-2, atol=1e-2)
    # with a shared A (a LoRI family) averaging B alone is exact
    shared = [(pairs[0][0], bb) for _, bb in pairs]
    a, b = lora_fedavg(shared, COUNTS)
    true_mean = sum(n * (bb @ aa) for n, (aa, bb) in zip(COUNTS, shared, strict=True)) / sum(COUNTS)
    assert_close(b @ a, true_mean, rtol=1e-5, atol=1e-5)
