"""Validation of request specs (plain dicts in, normalised dicts out).

Every check raises `InvalidArgument(field, why)` with the dotted field name of the request
(`spec.lori.rank`, `adapter_ids[2]`), so a client learns exactly which field is wrong. The
normalised dict (defaults filled in) is what a job stores and what `coordinator.executors`
turns into the worker's `JobSpec` / `FederatedSpec`.
"""

from __future__ import annotations

import math
import re

from .errors import InvalidArgument

ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_CTRL = re.compile(r"[\x00-\x1f\x7f]")
MAX_SEED = 2**63 - 1
METHODS = ("lori-s", "lori-d")
GRANULARITIES = ("model", "layer", "matrix")
DISTRIBUTIONS = ("uniform", "gaussian")
MERGE_METHODS = ("auto", "sum_b", "concat")

LORI_DEFAULTS = {"rank": 32, "alpha": 64.0, "sparsity": 0.9, "projection_seed": 0,
                 "target_modules": None, "granularity": "model", "distribution": "uniform"}
TRAINING_DEFAULTS = {"method": "lori-s", "dense_steps": 100, "sparse_steps": 100, "dense_lr": 1e-3,
                     "sparse_lr": 1e-3, "batch_size": 8, "max_length": 256, "seed": 0,
                     "eval_max_new_tokens": 32, "eval_limit": None, "weight_decay": 0.0}


def check_id(field: str, value: object, *, required: bool = True) -> str:
    """An id usable as a path segment: [A-Za-z0-9][A-Za-z0-9._-]{0,127}."""
    if value in (None, "") and not required:
        return ""
    if not isinstance(value, str) or not ID_RE.match(value):
        raise InvalidArgument(field, f"{_show(value)} is not a valid name (1-128 characters from "
                                     "[A-Za-z0-9._-], starting with a letter or digit)")
    return value


def check_text(field: str, value: object, *, required: bool = True, max_len: int = 1024) -> str:
    if not isinstance(value, str):
        raise InvalidArgument(field, f"must be a string, got {_show(value)}")
    if required and not value:
        raise InvalidArgument(field, "is required")
    if len(value) > max_len or _CTRL.search(value):
        raise InvalidArgument(field, f"{_show(value)} is too long or contains control characters")
    return value


def check_int(field: str, value: object, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise InvalidArgument(field, f"must be an integer in [{lo}, {hi}], got {_show(value)}")
    return value


def check_float(field: str, value: object, lo: float, hi: float, *, lo_open: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value > hi or value < lo or (lo_open and value == lo):
        rng = f"({lo}, {hi}]" if lo_open else f"[{lo}, {hi}]"
        raise InvalidArgument(field, f"must be a finite number in {rng}, got {_show(value)}")
    return float(value)


def check_choice(field: str, value: object, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise InvalidArgument(field, f"must be one of {list(choices)}, got {_show(value)}")
    return value  # type: ignore[return-value]


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _pick(d: dict, key: str, default: object) -> object:
    v = d.get(key)
    return default if v is None else v


def validate_lori(d: dict, prefix: str) -> dict:
    out = {}
    out["rank"] = check_int(f"{prefix}.rank", _pick(d, "rank", 32), 1, 4096)
    out["alpha"] = check_float(f"{prefix}.alpha", _pick(d, "alpha", 64.0), 0.0, 1e6, lo_open=True)
    out["sparsity"] = check_float(f"{prefix}.sparsity", _pick(d, "sparsity", 0.9), 0.0, 0.999999)
    out["projection_seed"] = check_int(f"{prefix}.projection_seed", _pick(d, "projection_seed", 0), 0, MAX_SEED)
    targets = d.get("target_modules") or None
    if targets is not None:
        if not isinstance(targets, (list, tuple)) or len(targets) > 64:
            raise InvalidArgument(f"{prefix}.target_modules", "must be a list of at most 64 module names")
        for i, t in enumerate(targets):
            check_text(f"{prefix}.target_modules[{i}]", t, max_len=256)
        if len(targets) == 1:  # one entry may be a regex
            try:
                re.compile(targets[0])
            except re.error as exc:
                raise InvalidArgument(f"{prefix}.target_modules[0]", f"invalid regular expression: {exc}") from None
        targets = list(targets)
    out["target_modules"] = targets
    out["granularity"] = check_choice(f"{prefix}.granularity", d.get("granularity") or "model", GRANULARITIES)
    out["distribution"] = check_choice(f"{prefix}.distribution", d.get("distribution") or "uniform",
                                       DISTRIBUTIONS)
    return out


def validate_training(d: dict, prefix: str) -> dict:
    out = {}
    out["method"] = check_choice(f"{prefix}.method", d.get("method") or "lori-s", METHODS)
    out["dense_steps"] = check_int(f"{prefix}.dense_steps", _pick(d, "dense_steps", 100), 1, 1_000_000)
    lo = 1 if out["method"] == "lori-s" else 0
    out["sparse_steps"] = check_int(f"{prefix}.sparse_steps", _pick(d, "sparse_steps", 100), lo, 1_000_000)
    for name in ("dense_lr", "sparse_lr"):
        out[name] = check_float(f"{prefix}.{name}", _pick(d, name, 1e-3), 0.0, 10.0, lo_open=True)
    out["weight_decay"] = check_float(f"{prefix}.weight_decay", _pick(d, "weight_decay", 0.0), 0.0, 10.0)
    out["batch_size"] = check_int(f"{prefix}.batch_size", _pick(d, "batch_size", 8), 1, 4096)
    out["max_length"] = check_int(f"{prefix}.max_length", _pick(d, "max_length", 256), 2, 131072)
    out["seed"] = check_int(f"{prefix}.seed", _pick(d, "seed", 0), 0, MAX_SEED)
    out["eval_max_new_tokens"] = check_int(f"{prefix}.eval_max_new_tokens",
                                           _pick(d, "eval_max_new_tokens", 32), 0, 8192)
    lim = d.get("eval_limit")
    out["eval_limit"] = None if lim in (None, 0) else check_int(f"{prefix}.eval_limit", lim, 1, 10_000_000)
    return out


def validate_task_spec(d: object, prefix: str = "spec", *, require_dataset: bool = True,
                       defaults: dict | None = None) -> dict:
    """Normalise a task spec dict (see `TaskSpec` in the proto). `defaults` fill empty fields
    (a continual update takes family and base_model from its base adapter)."""
    if not isinstance(d, dict) or not d:
        raise InvalidArgument(prefix, "is required")
    d = {**(defaults or {}), **{k: v for k, v in d.items() if v not in (None, "", [], {})}}
    out: dict = {}
    out["base_model"] = check_text(f"{prefix}.base_model", d.get("base_model", ""))
    out["task"] = check_id(f"{prefix}.task", d.get("task", ""))
    out["family"] = check_id(f"{prefix}.family", d.get("family") or "default")
    out["dataset"] = check_id(f"{prefix}.dataset", d.get("dataset", ""), required=require_dataset)
    out["eval_dataset"] = check_id(f"{prefix}.eval_dataset", d.get("eval_dataset", ""), required=False)
    for key in ("lori", "training"):
        if not isinstance(d.get(key) or {}, dict):
            raise InvalidArgument(f"{prefix}.{key}", "must be an object")
    out["lori"] = validate_lori(d.get("lori") or {}, f"{prefix}.lori")
    out["training"] = validate_training(d.get("training") or {}, f"{prefix}.training")
    out["num_gpus"] = check_float(f"{prefix}.num_gpus", _pick(d, "num_gpus", 0.0), 0.0, 64.0)
    out["num_cpus"] = check_float(f"{prefix}.num_cpus", d.get("num_cpus") or 1.0, 0.0, 1024.0)
    out["checkpoint_every"] = check_int(f"{prefix}.checkpoint_every", _pick(d, "checkpoint_every", 0), 0, 1_000_000)
    out["max_retries"] = check_int(f"{prefix}.max_retries", _pick(d, "max_retries", 2), 0, 100)
    ep = _pick(d, "export_peft", False)
    if not isinstance(ep, bool):
        raise InvalidArgument(f"{prefix}.export_peft", f"must be a bool, got {_show(ep)}")
    out["export_peft"] = ep
    unknown = set(d) - set(out) - {"device"}
    if unknown:
        raise InvalidArgument(f"{prefix}.{sorted(unknown)[0]}", "unknown field")
    if d.get("device"):
        out["device"] = check_choice(f"{prefix}.device", d["device"], ("auto", "cpu", "cuda"))
    return out


def validate_federated(req: dict) -> dict:
    """Normalise a federated request: spec + client_datasets | (spec.dataset + num_clients) + rounds."""
    spec = validate_task_spec(req.get("spec"), require_dataset=False)
    clients = list(req.get("client_datasets") or [])
    if len(clients) > 1024:
        raise InvalidArgument("client_datasets", "at most 1024 clients")
    for i, c in enumerate(clients):
        check_id(f"client_datasets[{i}]", c)
    n = req.get("num_clients") or 0
    if clients:
        if n not in (0, len(clients)):
            raise InvalidArgument("num_clients", f"client_datasets names {len(clients)} clients, got {n}")
        if spec["dataset"]:
            raise InvalidArgument("spec.dataset", "give either client_datasets or spec.dataset + num_clients")
    else:
        if not spec["dataset"]:
            raise InvalidArgument("client_datasets", "give client_datasets, or spec.dataset + num_clients")
        check_int("num_clients", n, 1, 1024)
    out = {"spec": spec, "client_datasets": clients, "num_clients": len(clients) or n}
    out["dense_rounds"] = check_int("dense_rounds", _pick(req, "dense_rounds", 0) or 1, 0, 10_000)
    out["sparse_rounds"] = check_int("sparse_rounds", _pick(req, "sparse_rounds", 0) or 1, 0, 10_000)
    out["local_steps"] = check_int("local_steps", req.get("local_steps") or 10, 1, 1_000_000)
    q = req.get("quorum") or 1.0
    out["quorum"] = check_float("quorum", q, 0.0, 1024.0, lo_open=True)
    if out["quorum"] >= 1 and out["quorum"] != int(out["quorum"]):
        raise InvalidArgument("quorum", f"a count >= 1 must be an integer, got {q!r}")
    out["deadline_s"] = check_float("deadline_s", req.get("deadline_s") or 600.0, 0.0, 7 * 86400.0, lo_open=True)
    mdn = req.get("max_delta_norm") or None
    out["max_delta_norm"] = None if mdn is None else check_float("max_delta_norm", mdn, 0.0, 1e12, lo_open=True)
    return out


def validate_gate(d: dict | None, prefix: str = "gate") -> dict:
    d = d or {}
    enabled = bool(d.get("enabled", False))
    max_drop = check_float(f"{prefix}.max_drop", d.get("max_drop") or 0.0, 0.0, 1e9)
    metric = check_id(f"{prefix}.metric", d.get("metric") or "exact_match")
    return {"enabled": enabled, "max_drop": max_drop, "metric": metric}


def validate_request_id(value: object) -> str:
    if value in (None, ""):
        return ""
    return check_text("request_id", value, max_len=128)
