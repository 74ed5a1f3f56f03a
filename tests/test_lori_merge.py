"""LoRI merges: concat and B-sum are exact; compatibility errors name adapter and field; baselines."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from lori import (
    Adapter,
    AdapterMeta,
    Segment,
    cat_merge,
    concat_merge,
    dare_merge,
    overlap_report,
    peft_linear_merge,
    subspace_overlap,
    sum_merge,
    task_arithmetic,
    ties_merge,
)

SHAPES = {
    "layers.0.q_proj": (6, 16),
    "layers.0.v_proj": (8, 16),
    "layers.1.down_proj": (16, 12),
}  # (d_out, d_in)
RANK = 4


def make_adapter(
    seed: int,
    task: str,
    gen_seed: int,
    density: float | None = 0.3,
    rank: int = RANK,
    alpha: float = 8.0,
    base_model: str = "tiny-llama",
    shapes: dict[str, tuple[int, int]] = SHAPES,
    forbidden: dict[str, torch.Tensor] | None = None,
) -> Adapter:
    """Random B; masks = top-k of random scores (density None: dense), avoiding ``forbidden``."""
    gen = torch.Generator().manual_seed(gen_seed)
    b, masks = {}, {}
    for name, (d_out, _) in shapes.items():
        values = torch.randn(d_out, rank, generator=gen)
        if density is None:
            b[name] = values
            continue
        scores = torch.rand(d_out, rank, generator=gen)
        if forbidden is not None:
            scores[forbidden[name]] = -1.0
        k = max(1, round(density * d_out * rank))
        mask = torch.zeros(d_out * rank, dtype=torch.bool)
        mask[torch.topk(scores.reshape(-1), k).indices] = True
        masks[name] = mask.view(d_out, rank)
        b[name] = values * masks[name]
    meta = AdapterMeta(
        base_model=base_model,
        segments=(Segment(seed, rank),),
        alpha=alpha,
        target_modules=("q_proj", "v_proj", "down_proj"),
        task=task,
    )
    in_features = {n: d_in for n, (_, d_in) in shapes.items()}
    return Adapter(meta, b, in_features, None if density is None else masks)


def true_delta(adapters, weights, name):
    return sum(w * a.delta_weight(name) for a, w in zip(adapters, weights, strict=True))


def test_concat_merge_is_exact_for_different_seeds():
    adapters = [
        make_adapter(3, "a", 0),
        make_adapter(7, "b", 1, alpha=4.0),
        make_adapter(11, "c", 2, rank=2, alpha=2.0),
    ]
    weights = [0.5, -0.25, 1.5]
    merged = concat_merge(adapters, weights)
    assert merged.meta.kind == "merge-concat"
    assert merged.rank == 2 * RANK + 2 and merged.meta.scaling == 1.0
    assert [s.seed for s in merged.meta.segments] == [3, 7, 11]
    assert merged.meta.extra["parents"] == ["a", "b", "c"] and merged.meta.extra["weights"] == weights
    for name in SHAPES:
        expected = sum(
            w * a.meta.scaling * a.b[name] @ a.projection(name)
            for w, a in zip(weights, adapters, strict=True)
        )
        assert_close(merged.delta_weight(name), expected, rtol=1e-5, atol=1e-6)
        assert_close(merged.masks[name], torch.cat([a.masks[name] for a in adapters], dim=1))


def test_concat_merge_dense_input_gives_dense_result():
    adapters = [make_adapter(1, "a", 0), make_adapter(2, "b", 1, density=None)]
    merged = concat_merge(adapters)
    assert merged.masks is None
    for name in SHAPES:
        assert_close(merged.delta_weight(name), true_delta(adapters, [1.0, 1.0], name), rtol=1e-5, atol=1e-6)


def test_sum_merge_equals_weighted_sum_of_deltas():
    adapters = [make_adapter(5, t, i) for i, t in enumerate("abc")]
    weights = [0.2, 0.3, 0.5]
    merged = sum_merge(adapters, weights)
    assert merged.meta.kind == "merge-sum" and merged.rank == RANK
    assert merged.digest == adapters[0].digest
    for name in SHAPES:
        assert_close(merged.delta_weight(name), true_delta(adapters, weights, name), rtol=1e-5, atol=1e-6)
        union = adapters[0].masks[name] | adapters[1].masks[name] | adapters[2].masks[name]
        assert torch.equal(merged.masks[name], union)
    default = sum_merge(adapters)
    for name in SHAPES:
        assert_close(default.b[name], sum(a.b[name] for a in adapters))


def test_sum_merge_disjoint_masks_keeps_each_task_bit_identical():
    first = make_adapter(5, "a", 0, density=0.3)
    second = make_adapter(5, "b", 1, density=0.3, forbidden=first.masks)
    taken = {n: first.masks[n] | second.masks[n] for n in SHAPES}
    third = make_adapter(5, "c", 2, density=0.3, forbidden=taken)
    adapters = [first, second, third]
    assert all(p.intersection == 0 for p in overlap_report(adapters))
    merged = sum_merge(adapters)
    for a in adapters:
        for name in SHAPES:
            assert torch.equal(merged.b[name][a.masks[name]], a.b[name][a.masks[name]])


def test_overlap_report_counts_pairs():
    a, b = make_adapter(5, "a", 0), make_adapter(5, "b", 1)
    (pair,) = overlap_report([a, b])
    inter = sum(int((a.masks[n] & b.masks[n]).sum()) for n in SHAPES)
    union = sum(int((a.masks[n] | b.masks[n]).sum()) for n in SHAPES)
    assert (pair.i, pair.j, pair.task_i, pair.task_j) == (0, 1, "a", "b")
    assert (pair.intersection, pair.union) == (inter, union)
    assert pair.jaccard == pytest.approx(inter / union)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"base_model": "other-model"}, "base_model differs: adapter 1 (task 'b') has 'other-model'"),
        (
            {"shapes": {**SHAPES, "layers.0.q_proj": (6, 10)}},
            "in_features['layers.0.q_proj'] differs: adapter 1 (task 'b')",
        ),
        (
            {"shapes": {**SHAPES, "layers.0.q_proj": (5, 16)}},
            "out_features['layers.0.q_proj'] differs: adapter 1 (task 'b')",
        ),
        ({"shapes": {"layers.0.q_proj": (6, 16)}}, "modules differ: adapter 1 (task 'b') lacks"),
    ],
)
@pytest.mark.parametrize("merge", [concat_merge, sum_merge])
def test_incompatible_adapters_are_refused(change, field, merge):
    a = make_adapter(5, "a", 0)
    b = make_adapter(5, "b", 1, **change)
    with pytest.raises(ValueError, match=field.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        merge([a, b])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"seed": 7},
            "projection_seed differs: adapter 1 (task 'b') has 7, adapter 0 (task 'a') has 3; use concat_merge",
        ),
        ({"seed": 3, "rank": 2}, "rank differs: adapter 1 (task 'b') has 2"),
        ({"seed": 3, "alpha": 4.0}, "alpha differs: adapter 1 (task 'b') has 4.0"),
    ],
)
def test_sum_merge_refuses_different_projection(kwargs, message):
    a = make_adapter(3, "a", 0)
    b = make_adapter(task="b", gen_seed=1, **kwargs)
    with pytest.raises(ValueError) as info:
        sum_merge([a, b])
    assert message in str(info.value)


def test_weights_are_validated():
    a, b = make_adapter(3, "a", 0), make_adapter(3, "b", 1)
    with pytest.raises(ValueError, match="weights: expected 2"):
        sum_merge([a, b], [1.0])
    with pytest.raises(ValueError, match=r"weights\[1\]"):
        concat_merge([a, b], [1.0, float("nan")])


def test_subspace_overlap_same_seed_is_one_and_different_seeds_small():
    shapes = {"m": (8, 256)}
    a = make_adapter(3, "a", 0, shapes=shapes, rank=8)
    same = subspace_overlap(a, make_adapter(3, "b", 1, shapes=shapes, rank=8))
    other = subspace_overlap(a, make_adapter(4, "c", 2, shapes=shapes, rank=8))
    assert same.normalized["m"] == pytest.approx(1.0)
    assert other.mean_normalized < 0.4  # about sqrt(r / d_in) = 0.18
    proj_a, proj_c = a.projection("m"), make_adapter(4, "c", 2, shapes=shapes, rank=8).projection("m")
    assert other.per_module["m"] == pytest.approx(
        float(torch.linalg.matrix_norm(proj_a @ proj_c.T)), rel=1e-5
    )
    assert other.mean == pytest.approx(other.per_module["m"])


# ---------------------------------------------------------------- LoRA baselines (comparison only)


def _pairs(adapters, name):
    return [(a.projection(name), a.b[name]) for a in adapters], [a.meta.scaling for a in adapters]


def test_peft_linear_on_shared_a_returns_the_sum_not_the_mean():
    adapters = [make_adapter(5, "a", 0), make_adapter(5, "b", 1)]
    for name in SHAPES:
        pairs, scalings = _pairs(adapters, name)
        a, b = peft_linear_merge(pairs, [0.5, 0.5], scalings)
        mean = true_delta(adapters, [0.5, 0.5], name)
        assert not torch.allclose(b @ a, mean, rtol=1e-3, atol=1e-4)
        assert_close(b @ a, 2 * mean, rtol=1e-5, atol=1e-5)  # the documented pitfall


def test_peft_linear_matches_peft_formula_with_negative_weight():
    gen = torch.Generator().manual_seed(0)
    pairs = [(torch.randn(3, 5, generator=gen), torch.randn(4, 3, generator=gen)) for _ in range(2)]
    a, b = peft_linear_merge(pairs, [0.7, -0.4], [2.0, 2.0])
    c = [1.4, -0.8]
    assert_close(a, c[0] ** 0.5 * pairs[0][0] - (-c[1]) ** 0.5 * pairs[1][0])
    assert_close(b, c[0] ** 0.5 * pairs[0][1] + (-c[1]) ** 0.5 * pairs[1][1])


def test_peft_cat_merge_is_exact():
    adapters = [make_adapter(3, "a", 0), make_adapter(9, "b", 1, rank=2, alpha=2.0)]
    for name in SHAPES:
        pairs, scalings = _pairs(adapters, name)
        a, b = cat_merge(pairs, [0.3, 0.7], scalings)
        assert a.shape[0] == RANK + 2
        assert_close(b @ a, true_delta(adapters, [0.3, 0.7], name), rtol=1e-5, atol=1e-6)


def test_ties_and_dare_on_task_tensors():
    d1 = torch.tensor([[1.0, -2.0], [0.5, 3.0]])
    d2 = torch.tensor([[-4.0, -1.0], [0.1, 1.5]])
    # density 1: no trimming; sign of the sum elects; agreeing entries averaged
    assert_close(ties_merge([d1, d2], [1.0, 1.0], 1.0), torch.tensor([[-4.0, -1.5], [0.3, 2.25]]))
    # density 0.5 keeps the top-2 |entries| of each: d1 -> [[0,-2],[0,3]], d2 -> [[-4,0],[0,1.5]]
    assert_close(ties_merge([d1, d2], [1.0, 1.0], 0.5), torch.tensor([[-4.0, -2.0], [0.0, 2.25]]))
    assert_close(dare_merge([d1, d2], [0.5, 0.5], 1.0, seed=0), task_arithmetic([d1, d2], [0.5, 0.5]))
    first = dare_merge([d1, d2], [1.0, 1.0], 0.5, seed=3)
    assert torch.equal(first, dare_merge([d1, d2], [1.0, 1.0], 0.5, seed=3))
    for (i, j), value in zip([(0, 0), (0, 1), (1, 0), (1, 1)], first.reshape(-1).tolist(), strict=True):
        options = {2 * a + 2 * b for a in (0.0, float(d1[i, j])) for b in (0.0, float(d2[i, j]))}
        assert min(abs(value - o) for o in options) < 1e-5
    with pytest.raises(ValueError, match="density"):
        ties_merge([d1], [1.0], 1.5)


@pytest.mark.parametrize("combination", ["linear", "cat"])
def test_baselines_match_peft_add_weighted_adapter(combination):
    peft = pytest.importorskip("peft")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 6))
    config = peft.LoraConfig(r=RANK, lora_alpha=8, target_modules=["0"], init_lora_weights=False)
    model = peft.get_peft_model(model, config, adapter_name="first")
    model.add_adapter(
        "second", peft.LoraConfig(r=RANK, lora_alpha=2, target_modules=["0"], init_lora_weights=False)
    )
    layer = model.base_model.model[0]
    pairs = [
        (layer.lora_A[n].weight.detach().clone(), layer.lora_B[n].weight.detach().clone())
        for n in ("first", "second")
    ]
    scalings = [layer.scaling["first"], layer.scaling["second"]]
    weights = [0.7, -0.4]
    model.add_weighted_adapter(["first", "second"], weights, "merged", combination_type=combination)
    expected = layer.get_delta_weight("merged")
    merge = peft_linear_merge if combination == "linear" else cat_merge
    a, b = merge(pairs, weights, scalings)
    assert_close(b @ a, expected, rtol=1e-5, atol=1e-6)
