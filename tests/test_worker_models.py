"""worker.models: the tiny model is deterministic and loadable; SmolLM2 converts from GGUF (slow)."""

from __future__ import annotations

import hashlib

import pytest

from worker.models import build_tiny_model, find_smollm2_gguf, is_complete_model, prepare_smollm2


def _digest(folder) -> str:
    return hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()


def test_build_tiny_model_is_deterministic_and_loads(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    a, b = build_tiny_model(tmp_path / "a"), build_tiny_model(tmp_path / "b")
    assert is_complete_model(a) and _digest(a) == _digest(b)
    assert (a / "tokenizer.json").read_bytes() == (b / "tokenizer.json").read_bytes()
    model = AutoModelForCausalLM.from_pretrained(a)
    tok = AutoTokenizer.from_pretrained(a)
    assert model.config.num_hidden_layers == 2 and tok.eos_token == "</s>" and tok.pad_token == "<pad>"


@pytest.mark.slow
def test_prepare_smollm2_converts_once(tmp_path):
    try:
        find_smollm2_gguf()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dest = prepare_smollm2(tmp_path / "smollm2")
    assert is_complete_model(dest)
    mtime = (dest / "model.safetensors").stat().st_mtime_ns
    assert prepare_smollm2(dest) == dest and (dest / "model.safetensors").stat().st_mtime_ns == mtime
    model = AutoModelForCausalLM.from_pretrained(dest)
    tok = AutoTokenizer.from_pretrained(dest)
    assert 130e6 < sum(p.numel() for p in model.parameters()) < 140e6
    ids = tok("The capital of France is", return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=4, do_sample=False)
    assert "Paris" in tok.decode(out[0])
