"""Federated training of one task: K clients x R rounds, exact FedAvg of B (plain Python, no Ray).

Flow (FederatedSpec):

    round 1..D   (dense, LoRI-D)  every client starts from the global dense B (round 1: zeros)
    calibrate                     M = top-k |B_global| (lori.calibrate_masks), or a fixed mask
    round D+1..R (sparse, LoRI-S) B reset to 0; every client trains only B ⊙ M from the global B
    each round                    client k uploads B_k and n_k; the manager validates every update
                                  (worker.validation) and aggregates the accepted ones:
                                      B_global = Σ_k n_k B_k / Σ_k n_k      (lori.aggregate.fedavg_b)
    end                           publish the global B (masked after sparse rounds) as an adapter
                                  of kind "fedavg", evaluated on the eval split when there is one

Since every client shares A (one projection seed), averaging B is exactly averaging the updates
ΔW_k = s B_k A. Store layout under ``rounds/<task>/<job_id>/``:

    round-<n>/client-<k>.safetensors   client k's B_k (metadata: count, client, round, phase)
    round-<n>/global.safetensors       the aggregated B after round n
    round-<n>/report.json              accepted / rejected (with reasons) / late / failed clients
    mask.safetensors                   the task mask used by the sparse rounds

A restarted manager resumes after the last round that has a report. Clients are launched by a
``launcher`` (``InlineLauncher`` here, ``worker.ray_runtime.RayLauncher`` on Ray); clients never
read other clients' data, and the manager never reads client data (clients report their dataset
digest).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from lori import Adapter, AdapterMeta, Segment, calibrate_masks, find_targets, masks_of
from lori.aggregate import fedavg_b
from lori.layer import linear_shape
from worker.datasets import load_dataset, shard
from worker.jobs import JobContext
from worker.publish import adapter_id_for, build_manifest, load_adapter, publish, published_result
from worker.recipe import LoriRecipe, RecipeConfig
from worker.records import JobResult
from worker.spec import FederatedSpec
from worker.store import ConflictError, ObjectNotFound, Store
from worker.validation import delta_norm, validate_update

__all__ = [
    "ClientOutcome",
    "ClientTask",
    "FederatedError",
    "InlineLauncher",
    "adapter_shapes",
    "b_from_bytes",
    "b_to_bytes",
    "round_prefix",
    "run_client",
    "run_federated",
    "train_client",
]


class FederatedError(RuntimeError):
    """A round could not reach its quorum (or the task cannot run at all)."""


@dataclass(frozen=True)
class ClientTask:
    """What one client does in one round."""

    job_id: str
    round: int
    phase: str  # "dense" | "sparse"
    client: int
    num_clients: int
    dataset: str
    sharded: bool  # True: take examples[client::num_clients] of dataset
    steps: int
    lr: float
    global_key: str | None  # the B to start from (None: zeros)
    mask_key: str | None  # the fixed task mask (sparse rounds)
    upload_key: str


@dataclass
class ClientOutcome:
    """How a client's round ended: "done" (info = run_client's report), "late" or "failed"."""

    client: int
    status: str
    info: dict | None = None
    error: str | None = None


# ------------------------------------------------------------------ tensors <-> bytes
def b_to_bytes(b: Mapping[str, torch.Tensor], metadata: dict | None = None) -> bytes:
    """A B dict (or mask dict) as safetensors bytes with string metadata."""
    tensors = {n: t.detach().cpu().contiguous() for n, t in b.items()}
    return st_save(tensors, metadata={k: str(v) for k, v in (metadata or {}).items()})


def b_from_bytes(data: bytes) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of ``b_to_bytes`` output."""
    tensors = st_load(data)
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    return tensors, dict(header.get("__metadata__") or {})


def round_prefix(task: str, job_id: str, n: int | None = None) -> str:
    base = f"rounds/{task}/{job_id}/"
    return base if n is None else f"{base}round-{n:03d}/"


# ------------------------------------------------------------------------- client side
def adapter_shapes(cfg: RecipeConfig) -> tuple[dict[str, tuple[int, int]], dict[str, int]]:
    """({module: (d_out, r)}, {module: d_in}) of the adapted modules, from a weightless (meta) model."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(cfg.base_model)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    shapes, in_features = {}, {}
    for name in find_targets(model, cfg.lori.target_modules):
        d_out, d_in = linear_shape(model.get_submodule(name))
        shapes[name] = (d_out, cfg.lori.rank)
        in_features[name] = d_in
    return shapes, in_features


def train_client(store: Store, cfg: RecipeConfig, task: ClientTask,
                 should_stop: Callable[[], bool] | None = None) -> tuple[dict[str, torch.Tensor], int, dict]:
    """The default local training: ``task.steps`` steps from the global B -> (B_k, n_k, info)."""
    t0 = time.perf_counter()
    data = load_dataset(store, task.dataset)
    examples = shard(data.train, task.client, task.num_clients) if task.sharded else data.train
    if not examples:
        raise ValueError(f"client {task.client}: no training examples in {task.dataset!r}")
    init_b = b_from_bytes(store.get_bytes(task.global_key))[0] if task.global_key else None
    mask = b_from_bytes(store.get_bytes(task.mask_key))[0] if task.mask_key else None
    recipe = LoriRecipe(cfg)
    try:
        recipe.setup()
        t1 = time.perf_counter()
        b = recipe.train_steps(task.steps, task.lr, examples, init_b=init_b, mask=mask, should_stop=should_stop)
        t2 = time.perf_counter()
    finally:
        recipe.cleanup()
    return b, len(examples), {"setup_s": t1 - t0, "train_s": t2 - t1, "dataset_digest": data.digest}


def run_client(store: Store, cfg: RecipeConfig, task: ClientTask, client_fn: Callable | None = None,
               should_stop: Callable[[], bool] | None = None) -> dict:
    """Train (``client_fn`` or ``train_client``) and upload B_k with its count; returns a report."""
    t0 = time.perf_counter()
    fn = client_fn or train_client
    b, count, info = fn(store, cfg, task, should_stop)
    t1 = time.perf_counter()
    meta = {"count": count, "client": task.client, "round": task.round, "phase": task.phase}
    store.put_bytes(task.upload_key, b_to_bytes(b, meta))
    return {**info, "client": task.client, "key": task.upload_key, "count": count, "pid": os.getpid(),
            "upload_s": time.perf_counter() - t1, "client_s": time.perf_counter() - t0}


class InlineLauncher:
    """Runs the clients one after another in this process (no deadline enforcement)."""

    def __init__(self, store: Store, cfg: RecipeConfig, client_fn: Callable | None = None) -> None:
        self.store, self.cfg, self.client_fn = store, cfg, client_fn

    def run_round(self, tasks: list[ClientTask], deadline_s: float) -> list[ClientOutcome]:
        out = []
        for t in tasks:
            try:
                out.append(ClientOutcome(t.client, "done", run_client(self.store, self.cfg, t, self.client_fn)))
            except Exception as exc:  # noqa: BLE001 - a failing client is recorded, not fatal
                out.append(ClientOutcome(t.client, "failed", error=f"{type(exc).__name__}: {exc}"))
        return out


# ------------------------------------------------------------------------ round manager
@dataclass
class _State:
    next_round: int = 1
    global_key: str | None = None
    mask: dict | None = None
    reports: list = field(default_factory=list)


def _resume(store: Store, prefix: str, fed: FederatedSpec) -> _State:
    state = _State()
    done = sorted(k for k in store.list(prefix) if k.endswith("/report.json"))
    for key in done:
        state.reports.append(json.loads(store.get_bytes(key)))
    if state.reports:
        last = state.reports[-1]
        state.next_round = last["round"] + 1
        state.global_key = last["global_key"]
    if store.exists(prefix + "mask.safetensors"):
        state.mask = b_from_bytes(store.get_bytes(prefix + "mask.safetensors"))[0]
    return state


def _client_specs(fed: FederatedSpec) -> list[tuple[str, bool]]:
    if fed.client_datasets:
        return [(d, False) for d in fed.client_datasets]
    return [(fed.dataset, True)] * fed.num_clients


def run_federated(store: Store, job_id: str, fed: FederatedSpec, launcher, ctx: JobContext | None = None) -> JobResult:
    """Run (or resume) a federated task; see the module docstring. Raises FederatedError on a failed quorum."""
    ctx = ctx or JobContext()
    started = time.perf_counter()
    cfg = fed.recipe
    adapter_id = adapter_id_for(job_id)
    done = published_result(store, adapter_id, job_id)
    if done is not None:
        return done
    shapes, in_features = adapter_shapes(cfg)
    prefix = round_prefix(cfg.task, job_id)
    state = _resume(store, prefix, fed)
    fixed_mask = None
    if fed.mask_adapter_id:
        fixed_mask = {n: m.clone() for n, m in masks_of(load_adapter(store, fed.mask_adapter_id)).items()}
        if set(fixed_mask) != set(shapes):
            raise FederatedError(f"mask_adapter_id={fed.mask_adapter_id!r}: its modules differ from the targets")
    clients = _client_specs(fed)
    ctx.emit({"phase": "start", "step": state.next_round - 1, "total_steps": fed.rounds, "attempt": ctx.attempt,
              "pid": os.getpid(), "resumed_from": state.next_round - 1 if state.reports else None})
    quorum = fed.quorum_count()
    for n in range(state.next_round, fed.rounds + 1):
        if ctx.should_stop():
            from worker.recipe import Cancelled

            raise Cancelled("round", n)
        phase = "dense" if n <= fed.dense_rounds else "sparse"
        if phase == "sparse" and n == fed.dense_rounds + 1:  # entering LoRI-S: mask, then B = 0
            if state.mask is None:
                if fixed_mask is not None:
                    state.mask = fixed_mask
                else:
                    global_b = b_from_bytes(store.get_bytes(state.global_key))[0]
                    state.mask = calibrate_masks(global_b, cfg.lori.sparsity, cfg.lori.granularity).masks
                store.put_bytes(prefix + "mask.safetensors", b_to_bytes(state.mask, {"job_id": job_id}))
            state.global_key = None
        rp = round_prefix(cfg.task, job_id, n)
        tasks = [
            ClientTask(job_id, n, phase, k, len(clients), ds, sharded, fed.local_steps,
                       cfg.dense_lr if phase == "dense" else cfg.sparse_lr, state.global_key,
                       prefix + "mask.safetensors" if phase == "sparse" else None, f"{rp}client-{k}.safetensors")
            for k, (ds, sharded) in enumerate(clients)
        ]
        ctx.emit({"phase": f"round-{phase}", "step": n - 1, "total_steps": fed.rounds, "round": n, "status": "start"})
        t_round = time.perf_counter()
        outcomes = launcher.run_round(tasks, fed.deadline_s)
        t_clients = time.perf_counter()
        global_b = b_from_bytes(store.get_bytes(state.global_key))[0] if state.global_key else None
        report = _aggregate_round(store, fed, n, phase, outcomes, shapes, global_b,
                                  state.mask if phase == "sparse" else None, rp)
        report["clients_wall_s"] = t_clients - t_round
        report["round_s"] = time.perf_counter() - t_round
        if len(report["accepted"]) < quorum:
            report["global_key"] = state.global_key
            report["failed_quorum"] = True
            store.put_bytes(rp + "report.json", json.dumps(report, indent=1, sort_keys=True).encode())
            raise FederatedError(
                f"round {n}: {len(report['accepted'])} accepted client(s), quorum is {quorum} "
                f"(rejected {report['rejected']}, late {report['late']}, failed {report['failed']})"
            )
        state.global_key = report["global_key"]
        store.put_bytes(rp + "report.json", json.dumps(report, indent=1, sort_keys=True).encode())
        state.reports.append(report)
        ctx.emit({"phase": f"round-{phase}", "step": n, "total_steps": fed.rounds, "round": n, "status": "end",
                  "accepted": report["accepted"], "rejected": sorted(int(k) for k in report["rejected"]),
                  "late": report["late"], "failed": sorted(int(k) for k in report["failed"]),
                  "eta_s": report["round_s"] * (fed.rounds - n), "loss": None, "tokens_per_s": None})

    global_b = b_from_bytes(store.get_bytes(state.global_key))[0]
    return _publish(store, job_id, fed, global_b, state, in_features, ctx, started)


def _aggregate_round(store: Store, fed: FederatedSpec, n: int, phase: str, outcomes: list[ClientOutcome],
                     shapes: dict, global_b: dict | None, mask: dict | None, rp: str) -> dict:
    accepted, rejected, bs, counts, digests = [], {}, [], [], {}
    late = sorted(o.client for o in outcomes if o.status == "late")
    failed = {str(o.client): o.error for o in outcomes if o.status == "failed"}
    info = {str(o.client): o.info for o in outcomes if o.status == "done"}
    for o in sorted((o for o in outcomes if o.status == "done"), key=lambda o: o.client):
        try:
            b, meta = b_from_bytes(store.get_bytes(o.info["key"]))
            count = int(meta.get("count", "0"))
        except (ObjectNotFound, ValueError, KeyError) as exc:
            rejected[str(o.client)] = [f"unreadable upload: {exc}"]
            continue
        reasons = validate_update(b, count, shapes, global_b, mask, fed.max_delta_norm)
        if reasons:
            rejected[str(o.client)] = reasons
            continue
        accepted.append(o.client)
        bs.append(b)
        counts.append(count)
        digests[str(o.client)] = o.info.get("dataset_digest")
    report = {"round": n, "phase": phase, "accepted": accepted, "rejected": rejected, "late": late,
              "failed": failed, "counts": dict(zip(map(str, accepted), counts, strict=True)),
              "dataset_digests": digests, "clients": info, "global_key": None}
    if accepted:
        new_b = fedavg_b(bs, counts)
        report["update_norm"] = delta_norm(new_b, global_b)
        report["global_key"] = rp + "global.safetensors"
        store.put_bytes(report["global_key"], b_to_bytes(new_b, {"round": n, "phase": phase}))
    return report


def _publish(store: Store, job_id: str, fed: FederatedSpec, global_b: dict, state: _State,
             in_features: dict, ctx: JobContext, started: float) -> JobResult:
    cfg, lo = fed.recipe, fed.recipe.lori
    sparse = fed.sparse_rounds > 0
    masks = {n: m.clone() for n, m in state.mask.items()} if sparse else None
    from worker.recipe.runtime import base_revision

    meta = AdapterMeta(
        base_model=cfg.base_model, segments=(Segment(lo.projection_seed, lo.rank, lo.distribution),),
        alpha=float(lo.alpha), target_modules=lo.target_modules, task=cfg.task, kind="fedavg",
        sparsity=float(lo.sparsity) if sparse else None, granularity=lo.granularity if sparse else None,
        base_revision=base_revision(cfg.base_model), family=cfg.family,
        extra={"clients": fed.num_clients, "rounds": fed.rounds},
    )
    adapter = Adapter(meta, global_b, dict(in_features), masks)
    metrics: dict = {"rounds": float(fed.rounds), "clients": float(fed.num_clients),
                     "rejected_updates": float(sum(len(r["rejected"]) for r in state.reports)),
                     "late_clients": float(sum(len(r["late"]) for r in state.reports)),
                     "failed_clients": float(sum(len(r["failed"]) for r in state.reports)),
                     "nnz": float(adapter.nnz())}
    timings: dict = {"rounds_s": sum(r["round_s"] for r in state.reports)}
    eval_examples = []
    if fed.eval_dataset:
        eval_examples = load_dataset(store, fed.eval_dataset).train
    elif fed.dataset:
        eval_examples = load_dataset(store, fed.dataset).eval
    if eval_examples:
        t0 = time.perf_counter()
        recipe = LoriRecipe(replace(cfg, protect=False), on_event=ctx.emit, base_adapter=adapter)
        try:
            recipe.setup()
            out = recipe.evaluate(eval_examples)
        finally:
            recipe.cleanup()
        metrics.update(eval_loss=out["eval_loss"], exact_match=out["exact_match"], eval_n=float(out["n"]))
        timings["eval_s"] = time.perf_counter() - t0
    digests = sorted({d for r in state.reports for d in r["dataset_digests"].values() if d})
    dataset_digest = "sha256:" + hashlib.sha256("|".join(digests).encode()).hexdigest()
    reports = [{k: r[k] for k in ("round", "phase", "accepted", "rejected", "late", "failed", "counts")}
               for r in state.reports]
    manifest = build_manifest(adapter, job_id=job_id, kind="fedavg", dataset_digest=dataset_digest,
                              metrics=metrics, timings=timings, extra={"attempt": ctx.attempt})
    manifest["federated"] = {"rounds": reports, "dense_rounds": fed.dense_rounds, "sparse_rounds": fed.sparse_rounds,
                             "local_steps": fed.local_steps, "max_delta_norm": fed.max_delta_norm}
    adapter_id = adapter_id_for(job_id)
    try:
        stored = publish(store, adapter_id, adapter, manifest, export_peft=fed.export_peft)
    except ConflictError:
        again = published_result(store, adapter_id, job_id)
        if again is None:
            raise
        return again
    timings["total_s"] = time.perf_counter() - started
    ctx.emit({"phase": "published", "step": fed.rounds, "total_steps": fed.rounds, "adapter_id": adapter_id})
    return JobResult(adapter_id, dict(stored["metrics"]), timings, stored, {"rounds": state.reports})
