"""Checkpoint / resume: a run resumed mid-phase equals the uninterrupted run, bit for bit."""

from __future__ import annotations

import pytest
import torch

from worker.recipe import Cancelled, LoriRecipe, state_from_bytes


@pytest.fixture(scope="module")
def uninterrupted(tiny_model_dir, tiny_task_data):
    """A 6 + 6 step LoRI-S run that checkpoints every 2 global steps."""
    from lori import LoriConfig
    from worker.recipe import RecipeConfig

    cfg = RecipeConfig(
        base_model=tiny_model_dir, task="copy", lori=LoriConfig(rank=4, alpha=8.0, sparsity=0.5, projection_seed=7),
        dense_steps=6, sparse_steps=6, dense_lr=1e-2, sparse_lr=1e-2, batch_size=3, max_length=32, device="cpu",
    )
    saved: dict[int, bytes] = {}
    result = LoriRecipe(cfg).run(tiny_task_data.train, checkpoint_every=2, save_checkpoint=saved.__setitem__)
    return cfg, saved, result


def _assert_same(a, b):
    assert a.adapter.b.keys() == b.adapter.b.keys()
    for name in a.adapter.b:
        assert torch.equal(a.adapter.b[name], b.adapter.b[name]), name
        assert torch.equal(a.adapter.masks[name], b.adapter.masks[name]), name
    assert [h["loss"] for h in a.history] == [h["loss"] for h in b.history]


def test_checkpoint_contents(uninterrupted):
    _, saved, result = uninterrupted
    assert sorted(saved) == [2, 4, 6, 8, 10, 12]
    dense = state_from_bytes(saved[4])
    assert dense.phase == "dense" and dense.step == 4 and dense.masks is None
    assert all(dense.optimizer[n]["exp_avg"].shape == b.shape for n, b in dense.b.items())
    sparse = state_from_bytes(saved[8])
    assert sparse.phase == "sparse" and sparse.step == 2
    for name, values in sparse.b.items():
        nnz = int(sparse.masks[name].sum())
        assert values.shape == (nnz,)
        assert sparse.optimizer[name]["exp_avg"].shape == (nnz,)
        assert sparse.optimizer[name]["exp_avg_sq"].shape == (nnz,)
    assert len(sparse.history) == 8 and set(sparse.order) == {"rng", "perm", "pos"}


@pytest.mark.parametrize("global_step", [4, 6, 8])  # mid-dense, dense end (before calibration), mid-sparse
def test_resume_equals_uninterrupted(uninterrupted, tiny_task_data, global_step):
    cfg, saved, expected = uninterrupted
    resumed = LoriRecipe(cfg).run(tiny_task_data.train, resume_from=saved[global_step])
    _assert_same(resumed, expected)


def test_cancel_saves_checkpoint_then_resume(uninterrupted, tiny_task_data):
    cfg, _, expected = uninterrupted
    saved: dict[int, bytes] = {}
    polls = iter(range(100))
    with pytest.raises(Cancelled) as info:
        LoriRecipe(cfg).run(tiny_task_data.train, save_checkpoint=saved.__setitem__, should_stop=lambda: next(polls) >= 9)
    assert (info.value.phase, info.value.step) == ("sparse", 3)
    assert list(saved) == [9]
    _assert_same(LoriRecipe(cfg).run(tiny_task_data.train, resume_from=saved[9]), expected)


def test_checkpoint_of_other_run_is_rejected(uninterrupted, tiny_task_data, tiny_recipe_config):
    _, saved, _ = uninterrupted
    other = tiny_recipe_config(seed=1, batch_size=3, lori={"projection_seed": 7, "sparsity": 0.5})
    with pytest.raises(ValueError, match=r"resume_from: checkpoint has seed=0"):
        LoriRecipe(other).run(tiny_task_data.train, resume_from=saved[4])
    with pytest.raises(ValueError, match="resume_from"):
        LoriRecipe(other).run(tiny_task_data.train, resume_from=b"garbage")
