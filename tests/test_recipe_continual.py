"""Continual updates: a second task trained on top of the first one's adapter."""

from __future__ import annotations

import pytest
import torch

from lori import mask_overlap
from worker.recipe import LoriRecipe


def _reverse_task(examples: list[dict]) -> list[dict]:
    """Second task: reverse the words instead of copying them."""
    out = []
    for ex in examples:
        words = ex["prompt"].removeprefix("copy: ").removesuffix(" =").split()
        out.append({"prompt": f"rev: {' '.join(words)} =", "response": " " + " ".join(reversed(words))})
    return out


@pytest.fixture(scope="module")
def first_adapter(tiny_model_dir, tiny_task_data):
    from lori import LoriConfig
    from worker.recipe import RecipeConfig

    cfg = RecipeConfig(
        base_model=tiny_model_dir, task="copy", lori=LoriConfig(rank=4, alpha=8.0, sparsity=0.7, projection_seed=7),
        dense_steps=4, sparse_steps=4, dense_lr=1e-2, sparse_lr=1e-2, batch_size=4, max_length=32, device="cpu",
    )
    recipe = LoriRecipe(cfg)
    adapter = recipe.run(tiny_task_data.train).adapter
    recipe.cleanup()
    return adapter


def _second(tiny_recipe_config, first, data, protect: bool):
    cfg = tiny_recipe_config(task="rev", protect=protect, dense_steps=4, sparse_steps=4, lori={"sparsity": 0.7})
    recipe = LoriRecipe(cfg, base_adapter=first, base_adapter_id="adapter-copy")
    result = recipe.run(_reverse_task(data.train))
    return recipe, result


def test_protected_base_coordinates_stay_bit_identical(tiny_recipe_config, tiny_task_data, first_adapter):
    recipe, result = _second(tiny_recipe_config, first_adapter, tiny_task_data, protect=True)
    combined = result.adapter
    assert combined.meta.kind == "continual"
    assert combined.meta.extra["parents"] == ["adapter-copy"]
    new_masks = {n: layer.trainable_mask().cpu() for n, layer in recipe.layers.items()}
    assert mask_overlap(new_masks, first_adapter.masks) == 0.0
    for name, base_mask in first_adapter.masks.items():
        assert not bool((new_masks[name] & base_mask).any())
        assert torch.equal(combined.b[name][base_mask], first_adapter.b[name][base_mask])
        assert torch.equal(combined.masks[name], base_mask | new_masks[name])
    # the new task did train something outside the base mask
    assert any(torch.count_nonzero(combined.b[n][new_masks[n]]) > 0 for n in new_masks)


def test_unprotected_variant_allows_overlap(tiny_recipe_config, tiny_task_data, first_adapter):
    recipe, result = _second(tiny_recipe_config, first_adapter, tiny_task_data, protect=False)
    new_masks = {n: layer.trainable_mask().cpu() for n, layer in recipe.layers.items()}
    assert mask_overlap(new_masks, first_adapter.masks) > 0.0
    changed = [
        n for n, m in first_adapter.masks.items()
        if not torch.equal(result.adapter.b[n][m], first_adapter.b[n][m])
    ]
    assert changed  # overlapping coordinates were updated by the new task


def test_base_adapter_with_other_seed_is_rejected(tiny_recipe_config, first_adapter):
    cfg = tiny_recipe_config(lori={"projection_seed": 8, "sparsity": 0.7})
    with pytest.raises(ValueError, match=r"^projection_seed=8"):
        LoriRecipe(cfg, base_adapter=first_adapter)
