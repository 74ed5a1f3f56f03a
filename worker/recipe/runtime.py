"""Device choice, precision and loading of the base model + tokenizer (local folders only).

``device="auto"``: CUDA when available — model weights in bf16 and the forward pass under
``torch.autocast("cuda", dtype=torch.bfloat16)`` — else CPU in fp32. LoRI's trainable values stay
fp32 master weights either way (the layer casts them to the activation dtype).
"""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path

import torch


def resolve_device(name: str) -> torch.device:
    """"auto" -> cuda if available else cpu; "cuda" without a GPU raises ValueError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={name!r}: CUDA is not available on this machine")
    return torch.device(name)


def model_dtype(device: torch.device) -> torch.dtype:
    """bf16 weights on CUDA, fp32 on CPU."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA; a no-op on CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def base_revision(model_path: str) -> str | None:
    """Short hash (sha256[:12]) of the model folder's config.json, None when there is none."""
    config = Path(model_path) / "config.json"
    if not config.is_file():
        return None
    return hashlib.sha256(config.read_bytes()).hexdigest()[:12]


def load_model_and_tokenizer(model_path: str, device: torch.device):
    """(model, tokenizer) from a local HF folder or cached id, model on ``device``, base frozen."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(model_path)
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=model_dtype(device))
    except OSError as exc:
        raise ValueError(f"base_model={model_path!r}: cannot load model/tokenizer locally ({exc})") from exc
    model.to(device)
    for p in model.parameters():
        p.requires_grad_(False)
    return model, tokenizer
