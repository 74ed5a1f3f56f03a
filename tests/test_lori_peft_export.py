"""PEFT export: a PeftModel loaded from the export computes the LoRI model's logits."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from peft import PeftModel
from peft.utils import get_peft_model_state_dict
from safetensors.torch import load as st_load

from lori import Adapter, AdapterMeta, Segment, apply_adapter, find_targets
from lori.layer import linear_shape
from lori.merge import concat_merge
from lori.peft_export import CONFIG_NAME, WEIGHTS_NAME, export_peft, export_peft_bytes, peft_state
from tests.lori_models import tiny_gpt2, tiny_llama

LLAMA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
GPT2_TARGETS = ("c_attn", "c_proj", "c_fc")


def random_adapter(model, targets, seed: int, rank: int = 4, density: float | None = 0.3) -> Adapter:
    """Random B (masked at ``density``; None = dense) on the modules ``targets`` selects."""
    g = torch.Generator().manual_seed(seed)
    b, masks, in_features = {}, {}, {}
    for name in find_targets(model, targets):
        d_out, d_in = linear_shape(model.get_submodule(name))
        in_features[name] = d_in
        b[name] = torch.randn(d_out, rank, generator=g) * 0.5
        if density is not None:
            masks[name] = torch.rand(d_out, rank, generator=g) < density
            b[name] = b[name] * masks[name]
    meta = AdapterMeta(
        base_model="tiny", segments=(Segment(seed, rank),), alpha=8.0, target_modules=targets, task=f"t{seed}"
    )
    return Adapter(meta, b, in_features, None if density is None else masks)


def logits(model, ids) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits


def check_peft_matches(base, adapter: Adapter, tmp_path) -> None:
    ids = torch.randint(0, 128, (2, 12), generator=torch.Generator().manual_seed(1))
    reference = logits(base, ids)
    lori_model = copy.deepcopy(base)
    apply_adapter(lori_model, adapter)
    expected = logits(lori_model, ids)
    assert (expected - reference).abs().max() > 1e-3  # the adapter does something
    out = export_peft(adapter, tmp_path / "peft")
    peft_model = PeftModel.from_pretrained(copy.deepcopy(base), str(out)).eval()
    torch.testing.assert_close(logits(peft_model, ids), expected, rtol=1e-5, atol=1e-5)
    _, tensors = peft_state(adapter)
    assert set(get_peft_model_state_dict(peft_model)) == set(tensors)  # PEFT's own key naming


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_single_adapter_logits(family, tmp_path):
    base, targets = (tiny_llama(), LLAMA_TARGETS) if family == "llama" else (tiny_gpt2(), GPT2_TARGETS)
    check_peft_matches(base, random_adapter(base, targets, seed=11), tmp_path)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_concat_merge_logits(family, tmp_path):
    base, targets = (tiny_llama(), LLAMA_TARGETS) if family == "llama" else (tiny_gpt2(), GPT2_TARGETS)
    first = random_adapter(base, targets, seed=11, rank=4)
    second = random_adapter(base, targets, seed=12, rank=6)
    merged = concat_merge([first, second], [0.7, 0.3])
    assert merged.rank == 10 and len(merged.meta.segments) == 2
    check_peft_matches(base, merged, tmp_path)
    config, _ = peft_state(merged)
    assert config["r"] == 10 and config["lora_alpha"] / config["r"] == merged.meta.scaling


def test_dense_adapter_logits(tmp_path):
    base = tiny_llama()
    check_peft_matches(base, random_adapter(base, ("q_proj", "v_proj"), seed=3, density=None), tmp_path)


def test_config_and_bytes():
    base = tiny_gpt2()
    adapter = random_adapter(base, GPT2_TARGETS, seed=5)
    files = export_peft_bytes(adapter, base_model_name_or_path="gpt2-tiny")
    assert set(files) == {CONFIG_NAME, WEIGHTS_NAME}
    config = json.loads(files[CONFIG_NAME])
    assert config["peft_type"] == "LORA" and config["fan_in_fan_out"] is True
    assert config["target_modules"] == sorted(adapter.b) and config["base_model_name_or_path"] == "gpt2-tiny"
    tensors = st_load(files[WEIGHTS_NAME])
    name = "transformer.h.0.attn.c_attn"
    torch.testing.assert_close(tensors[f"base_model.model.{name}.lora_A.weight"], adapter.projection(name))
    assert torch.equal(tensors[f"base_model.model.{name}.lora_B.weight"], adapter.b[name])
    assert tensors[f"base_model.model.{name}.lora_B.weight"].shape == (3 * base.config.n_embd, 4)  # Conv1D: (d_out, r)
    assert peft_state(random_adapter(tiny_llama(), LLAMA_TARGETS, seed=5))[0]["fan_in_fan_out"] is False
