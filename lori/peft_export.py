"""Export a LoRI adapter as a standard PEFT LoRA adapter (dense, loadable by PEFT and vLLM).

PEFT's LoRA computes y = W x + (lora_alpha / r) * lora_B (lora_A x). With

    lora_A = A = [A_1; ...; A_n]     (r x d_in, regenerated from the segments)
    lora_B = B ⊙ M                   (d_out x r, the effective B)
    r = Σ r_t (total rank),  lora_alpha = alpha   =>   PEFT's scaling alpha / r equals ours

the PEFT model computes exactly the LoRI model's ΔW. Concat merges export at rank Σ r_t.

Tensor names follow PEFT's saved files: ``base_model.model.<module>.lora_A.weight`` and
``...lora_B.weight`` (lora_A is (r, d_in) and lora_B (d_out, r) for both ``nn.Linear`` and GPT-2
``Conv1D``; ``fan_in_fan_out`` only tells PEFT the base weight is stored transposed, and PEFT
corrects it per layer anyway). ``target_modules`` lists the exact module names.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import save as st_save

from .adapter import Adapter

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
_CONV1D_LEAVES = frozenset({"c_attn", "c_proj", "c_fc", "q_attn"})  # transformers GPT-2 family


def _guess_fan_in_fan_out(module_names: list[str]) -> bool:
    return all(n.rsplit(".", 1)[-1] in _CONV1D_LEAVES for n in module_names)


def peft_state(
    adapter: Adapter,
    base_model_name_or_path: str | None = None,
    fan_in_fan_out: bool | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[dict, dict[str, torch.Tensor]]:
    """(adapter_config dict, tensors by PEFT key) of ``adapter``; see the module docstring.

    ``base_model_name_or_path`` defaults to the adapter's base model; ``fan_in_fan_out`` defaults
    to True when every module is a GPT-2 Conv1D name (c_attn, c_proj, c_fc).
    """
    names = sorted(adapter.b)
    if fan_in_fan_out is None:
        fan_in_fan_out = _guess_fan_in_fan_out(names)
    meta = adapter.meta
    config = {
        "peft_type": "LORA",
        "task_type": None,
        "base_model_name_or_path": base_model_name_or_path or meta.base_model,
        "revision": meta.base_revision,
        "r": meta.rank,
        "lora_alpha": float(meta.alpha),
        "target_modules": names,
        "lora_dropout": 0.0,
        "bias": "none",
        "fan_in_fan_out": bool(fan_in_fan_out),
        "use_rslora": False,
        "use_dora": False,
        "init_lora_weights": True,
        "inference_mode": True,
        "modules_to_save": None,
        "layers_to_transform": None,
        "layers_pattern": None,
        "rank_pattern": {},
        "alpha_pattern": {},
    }
    tensors: dict[str, torch.Tensor] = {}
    for name in names:
        prefix = f"base_model.model.{name}"
        tensors[f"{prefix}.lora_A.weight"] = adapter.projection(name).to(dtype).contiguous()  # (r, d_in)
        tensors[f"{prefix}.lora_B.weight"] = adapter.b[name].detach().cpu().to(dtype).contiguous()  # (d_out, r)
    return config, tensors


def _file_metadata(adapter: Adapter) -> dict[str, str]:
    return {
        "format": "pt",
        "lori_digest": adapter.digest,
        "lori_segments": json.dumps([vars(s) for s in adapter.meta.segments]),
        "lori_task": adapter.meta.task,
        "lori_kind": adapter.meta.kind,
    }


def export_peft_bytes(
    adapter: Adapter,
    base_model_name_or_path: str | None = None,
    fan_in_fan_out: bool | None = None,
    dtype: torch.dtype = torch.float32,
) -> dict[str, bytes]:
    """{'adapter_config.json': ..., 'adapter_model.safetensors': ...} of the PEFT export."""
    config, tensors = peft_state(adapter, base_model_name_or_path, fan_in_fan_out, dtype)
    return {
        CONFIG_NAME: (json.dumps(config, indent=2, sort_keys=True) + "\n").encode(),
        WEIGHTS_NAME: st_save(tensors, metadata=_file_metadata(adapter)),
    }


def export_peft(
    adapter: Adapter,
    out_dir: str | os.PathLike,
    base_model_name_or_path: str | None = None,
    fan_in_fan_out: bool | None = None,
    dtype: torch.dtype = torch.float32,
) -> Path:
    """Write the PEFT folder (adapter_config.json + adapter_model.safetensors) to ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for file_name, data in export_peft_bytes(adapter, base_model_name_or_path, fan_in_fan_out, dtype).items():
        (out / file_name).write_bytes(data)
    return out
