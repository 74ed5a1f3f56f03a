"""LoRI recipe training on the tiny model: LoRI-S structure, loss, events, cancellation, clients."""

from __future__ import annotations

import pytest
import torch

from lori import trainable_parameters
from worker.recipe import Cancelled, LoriRecipe


@pytest.fixture(scope="module")
def trained(tiny_model_dir, tiny_task_data):
    """One LoRI-S run (6 dense + 6 sparse steps) shared by the structural tests."""
    from lori import LoriConfig
    from worker.recipe import RecipeConfig

    cfg = RecipeConfig(
        base_model=tiny_model_dir, task="copy", lori=LoriConfig(rank=4, alpha=8.0, sparsity=0.5, projection_seed=7),
        dense_steps=6, sparse_steps=6, dense_lr=1e-2, sparse_lr=1e-2, batch_size=4, max_length=32,
        eval_max_new_tokens=4, device="cpu",
    )
    events: list[dict] = []
    recipe = LoriRecipe(cfg, on_event=events.append)
    result = recipe.run(tiny_task_data.train, tiny_task_data.eval)
    yield recipe, result, events
    recipe.cleanup()


def test_lori_s_trainable_count_equals_mask_nnz(trained):
    recipe, result, _ = trained
    nnz = sum(int(m.sum()) for m in result.adapter.masks.values())
    assert trainable_parameters(recipe.model) == nnz == result.adapter.nnz()
    assert result.metrics["trainable_params"] == nnz
    total = sum(b.numel() for b in result.adapter.b.values())
    assert nnz == round(0.5 * total)  # model-granularity top-k at sparsity 0.5


def test_masked_out_b_entries_are_exactly_zero(trained):
    recipe, result, _ = trained
    for name, b in result.adapter.b.items():
        mask = result.adapter.masks[name]
        assert torch.count_nonzero(b[~mask]) == 0
        assert torch.count_nonzero(recipe.layers[name].effective_b().detach()[~mask.to(b.device)]) == 0
    assert any(torch.count_nonzero(b) > 0 for b in result.adapter.b.values())


def test_result_metadata_metrics_and_history(trained, tiny_model_dir):
    _, result, _ = trained
    meta = result.adapter.meta
    assert meta.kind == "lori-s" and meta.task == "copy" and meta.family == "default"
    assert meta.base_model == tiny_model_dir and meta.base_revision and len(meta.base_revision) == 12
    assert meta.segments[0].seed == 7 and meta.rank == 4 and meta.alpha == 8.0
    assert meta.sparsity == 0.5 and meta.granularity == "model"
    assert [h["phase"] for h in result.history] == ["dense"] * 6 + ["sparse"] * 6
    assert [h["global_step"] for h in result.history] == list(range(1, 13))
    for key in ("eval_loss", "exact_match", "train_loss_first", "train_loss_last", "mask_density"):
        assert key in result.metrics
    assert 0.0 <= result.metrics["exact_match"] <= 1.0
    assert {"setup_s", "dense_s", "calibrate_s", "sparse_s", "eval_s"} <= set(result.timings)


def test_progress_events(trained):
    _, _, events = trained
    steps = [e for e in events if e["phase"] in ("dense", "sparse") and e["loss"] is not None]
    assert len(steps) == 12
    for e in steps:
        assert {"phase", "step", "total_steps", "loss", "tokens_per_s", "eta_s"} <= set(e)
        assert e["total_steps"] == 6 and e["tokens_per_s"] > 0 and e["eta_s"] >= 0
    assert steps[0]["eta_s"] > 0 and steps[-1]["eta_s"] == 0
    boundaries = [(e["phase"], e.get("status")) for e in events if e.get("status")]
    assert ("calibrate", "end") in boundaries and ("sparse", "start") in boundaries and ("done", "end") in boundaries


def test_training_loss_decreases(tiny_recipe_config, tiny_task_data):
    cfg = tiny_recipe_config(method="lori-d", dense_steps=12, dense_lr=5e-2, sparse_steps=0, eval_max_new_tokens=0)
    recipe = LoriRecipe(cfg)
    recipe.setup()
    before = recipe.evaluate(tiny_task_data.train[:16])["eval_loss"]
    result = recipe.run(tiny_task_data.train)
    after = recipe.evaluate(tiny_task_data.train[:16])["eval_loss"]
    assert after < before - 0.1
    assert result.adapter.masks is None and result.adapter.meta.kind == "lori-d"
    assert result.adapter.meta.sparsity is None


def test_should_stop_raises_cancelled_promptly(tiny_recipe_config, tiny_task_data):
    calls = []

    def stop() -> bool:
        calls.append(1)
        return len(calls) > 3

    recipe = LoriRecipe(tiny_recipe_config())
    with pytest.raises(Cancelled) as info:
        recipe.run(tiny_task_data.train, should_stop=stop)
    assert info.value.phase == "dense" and info.value.step == 3
    assert len(recipe.history) == 3


def test_train_steps_client_round_is_deterministic(tiny_recipe_config, tiny_task_data):
    recipe = LoriRecipe(tiny_recipe_config())
    recipe.setup()
    names = sorted(recipe.layers)
    gen = torch.Generator().manual_seed(0)
    mask = {n: torch.rand(recipe.layers[n].lori_B.shape, generator=gen) < 0.3 for n in names}
    init = {n: torch.randn(m.shape, generator=gen) * 1e-2 * m for n, m in mask.items()}
    first = recipe.train_steps(3, 1e-2, tiny_task_data.train, init_b=init, mask=mask)
    again = recipe.train_steps(3, 1e-2, tiny_task_data.train, init_b=init, mask=mask)
    assert set(first) == set(names)
    for n in names:
        assert first[n].dtype == torch.float32 and first[n].device.type == "cpu"
        assert torch.equal(first[n], again[n])
        assert torch.count_nonzero(first[n][~mask[n]]) == 0
    assert any(not torch.equal(first[n], init[n]) for n in names)
    dense = recipe.train_steps(2, 1e-2, tiny_task_data.train)
    assert all(torch.count_nonzero(dense[n]) == dense[n].numel() for n in names)
    with pytest.raises(ValueError, match="mask"):
        recipe.train_steps(1, 1e-2, tiny_task_data.train, mask={names[0]: mask[names[0]]})
