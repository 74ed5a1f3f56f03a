"""Recipe checkpoints: one safetensors blob holding everything a mid-phase resume needs.

Tensors (by key):

    b/<module>             dense phase: B (d_out, r) fp32;  sparse phase: values (nnz,) fp32
    mask/<module>          sparse phase: M (d_out, r) bool
    opt/<module>/<state>   AdamW state of that module's trainable tensor (step, exp_avg, exp_avg_sq)
    order/{rng,perm,pos}   data-order generator state, current permutation, position in it
    rng/torch              torch's CPU RNG state (dropout of the base model, if any)

Metadata (strings): format, phase ("dense" | "sparse"), step (optimizer steps done in the phase),
history / timings / metrics (JSON) and a fingerprint of the run's configuration, checked on load
so a checkpoint is never resumed into a different run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

FORMAT = "lori-recipe-checkpoint/v1"
PHASES = ("dense", "sparse")


@dataclass
class TrainState:
    """The resumable state of a recipe run (see the module docstring for the layout)."""

    phase: str
    step: int
    b: dict[str, torch.Tensor]
    masks: dict[str, torch.Tensor] | None
    optimizer: dict[str, dict[str, torch.Tensor]]
    order: dict[str, torch.Tensor]
    torch_rng: torch.Tensor
    fingerprint: dict
    history: list[dict] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)


def _cpu(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to("cpu").contiguous().clone()


def state_to_bytes(state: TrainState) -> bytes:
    """Serialize a TrainState to safetensors bytes."""
    if state.phase not in PHASES:
        raise ValueError(f"phase={state.phase!r}: must be one of {PHASES}")
    tensors: dict[str, torch.Tensor] = {f"b/{n}": _cpu(t) for n, t in state.b.items()}
    for n, m in (state.masks or {}).items():
        tensors[f"mask/{n}"] = _cpu(m)
    for n, st in state.optimizer.items():
        for key, value in st.items():
            value = value if torch.is_tensor(value) else torch.tensor(float(value))
            tensors[f"opt/{n}/{key}"] = _cpu(value.reshape(-1) if value.dim() == 0 else value)
    for key, value in state.order.items():
        tensors[f"order/{key}"] = _cpu(value)
    tensors["rng/torch"] = _cpu(state.torch_rng)
    metadata = {
        "format": FORMAT,
        "phase": state.phase,
        "step": str(state.step),
        "fingerprint": json.dumps(state.fingerprint, sort_keys=True),
        "history": json.dumps(state.history),
        "timings": json.dumps(state.timings),
        "metrics": json.dumps(state.metrics),
    }
    return st_save(tensors, metadata=metadata)


def _metadata(blob: bytes) -> dict[str, str]:
    header_len = int.from_bytes(blob[:8], "little")
    return json.loads(blob[8 : 8 + header_len]).get("__metadata__", {})


def state_from_bytes(blob: bytes) -> TrainState:
    """Parse checkpoint bytes; ValueError when they are not a recipe checkpoint."""
    try:
        meta = _metadata(blob)
        tensors = st_load(bytes(blob))
    except Exception as exc:  # noqa: BLE001 - any parse failure means "not a checkpoint"
        raise ValueError(f"resume_from: not a safetensors recipe checkpoint ({exc})") from None
    if meta.get("format") != FORMAT:
        raise ValueError(f"resume_from: format={meta.get('format')!r}, expected {FORMAT!r}")
    b: dict[str, torch.Tensor] = {}
    masks: dict[str, torch.Tensor] = {}
    optimizer: dict[str, dict[str, torch.Tensor]] = {}
    order: dict[str, torch.Tensor] = {}
    for key, value in tensors.items():
        kind, _, rest = key.partition("/")
        if kind == "b":
            b[rest] = value
        elif kind == "mask":
            masks[rest] = value
        elif kind == "opt":
            name, _, state_key = rest.rpartition("/")
            optimizer.setdefault(name, {})[state_key] = value
        elif kind == "order":
            order[rest] = value
    return TrainState(
        phase=meta["phase"],
        step=int(meta["step"]),
        b=b,
        masks=masks or None,
        optimizer=optimizer,
        order=order,
        torch_rng=tensors["rng/torch"],
        fingerprint=json.loads(meta["fingerprint"]),
        history=json.loads(meta["history"]),
        timings=json.loads(meta["timings"]),
        metrics=json.loads(meta["metrics"]),
    )


def optimizer_state(optimizer: torch.optim.Optimizer, params: dict[str, torch.nn.Parameter]) -> dict:
    """AdamW state by module name (empty for parameters not stepped yet)."""
    out: dict[str, dict[str, torch.Tensor]] = {}
    for name, p in params.items():
        st = optimizer.state.get(p)
        if st:
            out[name] = {k: (v if torch.is_tensor(v) else torch.tensor(float(v))) for k, v in st.items()}
    return out


def load_optimizer_state(
    optimizer: torch.optim.Optimizer, params: dict[str, torch.nn.Parameter], state: dict
) -> None:
    """Restore the AdamW state saved by ``optimizer_state`` (shapes must match)."""
    for name, st in state.items():
        if name not in params:
            raise ValueError(f"checkpoint has optimizer state for unknown module {name!r}")
        p = params[name]
        restored = {}
        for key, value in st.items():
            if key == "step":
                restored[key] = value.reshape(()).to(torch.float32).clone()
            else:
                if tuple(value.shape) != tuple(p.shape):
                    raise ValueError(f"optimizer state {key} of {name!r} has shape {tuple(value.shape)}, expected {tuple(p.shape)}")
                restored[key] = value.to(device=p.device, dtype=p.dtype).clone()
        optimizer.state[p] = restored
