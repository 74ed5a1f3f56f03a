"""The LoRI training recipe: composed steps, no inheritance, no Ray, no storage.

    setup()      load tokenizer + model (local folder), inject LoRI layers, apply the base adapter
    train()      LoRI-D (dense B, dense_steps)  ->  calibrate M = top-k |B|  ->  LoRI-S (B ⊙ M from 0)
    evaluate()   eval loss + exact match (evaluate.py)
    run()        setup if needed, train, extract the adapter, evaluate -> RecipeResult
    save_checkpoint() / load_checkpoint()   exact mid-phase resume (checkpoint.py)
    train_steps()    one federated client round from a given B (and fixed mask)
    cleanup()    release the model

Continual updates (``base_adapter``): every layer gets ``B_base`` (and its mask) as a frozen part of
the model, so training sees the earlier task; only the trainable part is optimized. With
``protect=True`` the new mask is calibrated outside the base mask, so the combined adapter
(``B_base + B ⊙ M``) keeps the base coordinates bit-identical.
"""

from __future__ import annotations

import gc
import hashlib
import time
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

from lori import (
    Adapter,
    AdapterMeta,
    ProjectionMismatch,
    Segment,
    calibrate_masks,
    digest_of,
    extract_adapter,
    inject,
)

from .checkpoint import TrainState, load_optimizer_state, optimizer_state, state_from_bytes, state_to_bytes
from .config import RecipeConfig
from .data import BatchOrder, collate, pad_id, tokenize_all
from .evaluate import evaluate_examples, token_loss
from .result import Cancelled, RecipeResult
from .runtime import autocast, base_revision, load_model_and_tokenizer, resolve_device

Event = dict
SaveFn = Callable[[int, bytes], None]


def derive_seed(seed: int, label: str) -> int:
    """An independent 63-bit seed for one use (data order of a phase) of the run's seed."""
    return int.from_bytes(hashlib.sha256(f"{seed}|{label}".encode()).digest()[:8], "little") >> 1


def _check_base(cfg: RecipeConfig, base: Adapter) -> None:
    lori = cfg.lori
    expected = (Segment(lori.projection_seed, lori.rank, lori.distribution),)
    if tuple(base.meta.segments) != expected:
        raise ValueError(
            f"projection_seed={lori.projection_seed!r}: a continual update must share the base adapter's "
            f"projection (seed, rank, distribution); the base adapter has segments {list(base.meta.segments)}"
        )
    if float(base.meta.alpha) != float(lori.alpha):
        raise ValueError(f"alpha={lori.alpha!r}: the base adapter was trained with alpha={base.meta.alpha!r}")
    if cfg.protect and base.masks is None and cfg.method == "lori-s":
        raise ValueError("protect=True: the base adapter is dense, so protecting it leaves nothing to train")


class LoriRecipe:
    """One task adapter trained on one base model; see the module docstring."""

    def __init__(
        self,
        cfg: RecipeConfig,
        on_event: Callable[[Event], None] | None = None,
        base_adapter: Adapter | None = None,
        base_adapter_id: str | None = None,
    ) -> None:
        if base_adapter is not None:
            _check_base(cfg, base_adapter)
        self.cfg = cfg
        self.on_event = on_event or (lambda event: None)
        self.base_adapter = base_adapter
        self.base_adapter_id = base_adapter_id
        self.model: nn.Module | None = None
        self.tokenizer = None
        self.layers: dict = {}
        self.device: torch.device | None = None
        self.history: list[dict] = []
        self.timings: dict[str, float] = {}
        self.metrics: dict[str, float] = {}
        self._phase, self._step = "dense", 0
        self._optimizer: torch.optim.Optimizer | None = None
        self._order: BatchOrder | None = None
        self._pending_order: dict | None = None
        self._step_times: list[float] = []

    # ------------------------------------------------------------------ setup
    def setup(self) -> None:
        """Load the base model and tokenizer, inject LoRI layers (dense), apply the base adapter."""
        start = time.perf_counter()
        self._emit("setup", 0, 0, status="start")
        self.device = resolve_device(self.cfg.device)
        self.model, self.tokenizer = load_model_and_tokenizer(self.cfg.base_model, self.device)
        self.layers = inject(self.model, self.cfg.lori)
        base = self.base_adapter
        if base is not None:
            missing = sorted(set(base.b) - set(self.layers))
            if missing:
                raise ValueError(f"target_modules={self.cfg.lori.target_modules!r} misses base adapter modules {missing[:5]}")
            digest = digest_of((n, self.layers[n].lori_A) for n in base.b)
            if digest != base.digest:
                raise ProjectionMismatch(f"regenerated A ({digest[:16]}…) differs from the base adapter's ({base.digest[:16]}…)")
            for name, b in base.b.items():
                self.layers[name].set_base(b, None if base.masks is None else base.masks[name])
        self.timings["setup_s"] = time.perf_counter() - start
        self._emit("setup", 0, 0, status="end", trainable_params=self._trainable_count())

    def _require_setup(self) -> None:
        if self.model is None:
            self.setup()

    # --------------------------------------------------------------- helpers
    def _params(self) -> dict[str, nn.Parameter]:
        """The trainable tensor of every layer by module name (B dense, or the sparse values)."""
        out = {}
        for name, layer in self.layers.items():
            p = layer.lori_B if layer.mode == "dense" else layer.lori_values
            if p is not None:
                out[name] = p
        return out

    def _trainable_count(self) -> int:
        return sum(p.numel() for p in self._params().values())

    def _emit(self, phase: str, step: int, total: int, *, loss=None, tokens_per_s=None, eta_s=None, **extra) -> None:
        event = {"phase": phase, "step": step, "total_steps": total, "loss": loss, "tokens_per_s": tokens_per_s, "eta_s": eta_s}
        event.update(extra)
        self.on_event(event)

    def _new_optimizer(self, lr: float) -> torch.optim.Optimizer:
        return torch.optim.AdamW(list(self._params().values()), lr=lr, weight_decay=self.cfg.weight_decay)

    def _fingerprint(self) -> dict:
        c, lo = self.cfg, self.cfg.lori
        targets = lo.target_modules if isinstance(lo.target_modules, str) else list(lo.target_modules)
        return {
            "task": c.task, "method": c.method, "seed": c.seed, "batch_size": c.batch_size, "max_length": c.max_length,
            "protect": c.protect, "rank": lo.rank, "alpha": float(lo.alpha), "projection_seed": lo.projection_seed,
            "distribution": lo.distribution, "sparsity": float(lo.sparsity), "granularity": lo.granularity,
            "targets": targets, "base_digest": self.base_adapter.digest if self.base_adapter else None,
        }

    def _phase_plan(self, phase: str) -> tuple[int, float, int]:
        """(steps, lr, global step offset) of a phase."""
        if phase == "dense":
            return self.cfg.dense_steps, self.cfg.dense_lr, 0
        return self.cfg.sparse_steps, self.cfg.sparse_lr, self.cfg.dense_steps

    def _enter_phase(self, phase: str, masks: Mapping[str, torch.Tensor] | None = None) -> None:
        """Reset the trainable B to zero (dense, or on ``masks``) with a fresh AdamW and data order."""
        for name, layer in self.layers.items():
            if masks is None:
                layer.set_dense()
            else:
                layer.set_sparse(masks[name])
        self._phase, self._step = phase, 0
        self._optimizer = self._new_optimizer(self._phase_plan(phase)[1])
        self._order, self._pending_order = None, None

    # ------------------------------------------------------------------ train
    def train(
        self,
        train_examples: Sequence[dict],
        *,
        checkpoint_every: int = 0,
        save_checkpoint: SaveFn | None = None,
        resume_from: bytes | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> None:
        """LoRI-D -> calibrate -> LoRI-S (or LoRI-D only), from scratch or from a checkpoint."""
        self._require_setup()
        items = tokenize_all(self.tokenizer, train_examples, self.cfg.max_length)
        if resume_from is not None:
            self.load_checkpoint(resume_from)
        else:
            self.history, self.metrics = [], {}
            self._enter_phase("dense")
        run_loop = dict(checkpoint_every=checkpoint_every, save_checkpoint=save_checkpoint, should_stop=should_stop)
        if self._phase == "dense":
            self._loop(items, **run_loop)
            if self.cfg.method == "lori-d":
                return
            masks = self._calibrate()
            self._enter_phase("sparse", masks)
        self._loop(items, **run_loop)

    def _calibrate(self) -> dict[str, torch.Tensor]:
        start = time.perf_counter()
        self._emit("calibrate", 0, 1, status="start")
        b = {name: layer.lori_B.detach() for name, layer in self.layers.items()}
        base = self.base_adapter
        protected = None
        if base is not None and self.cfg.protect and base.masks is not None:
            protected = {n: m.to(b[n].device) for n, m in base.masks.items()}
        result = calibrate_masks(b, self.cfg.lori.sparsity, self.cfg.lori.granularity, protected=protected)
        self.metrics["mask_density"] = result.density
        self.metrics["nnz"] = float(result.kept)
        self.timings["calibrate_s"] = time.perf_counter() - start
        self._emit("calibrate", 1, 1, status="end", nnz=result.kept, density=result.density)
        return result.masks

    def _loop(
        self,
        items: list,
        *,
        checkpoint_every: int = 0,
        save_checkpoint: SaveFn | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> None:
        """Optimizer steps of the current phase from self._step to the phase's step count."""
        phase = self._phase
        steps, lr, offset = self._phase_plan(phase) if phase != "client" else (self._client_steps, 0.0, 0)
        remaining_after = self.cfg.sparse_steps if phase == "dense" and self.cfg.method == "lori-s" else 0
        if self._order is None:
            self._order = BatchOrder(len(items), self.cfg.batch_size, derive_seed(self.cfg.seed, phase))
            if self._pending_order is not None:
                self._order.restore(self._pending_order)
                self._pending_order = None
        self._emit(phase, self._step, steps, status="start", trainable_params=self._trainable_count())
        started, self._step_times = time.perf_counter(), []
        pad = pad_id(self.tokenizer)
        self.model.train()
        while self._step < steps:
            if should_stop is not None and should_stop():
                if save_checkpoint is not None and phase != "client":
                    save_checkpoint(offset + self._step, self.save_checkpoint())
                raise Cancelled(phase, self._step)
            batch = {k: v.to(self.device) for k, v in collate([items[i] for i in self._order.next()], pad).items()}
            t0 = time.perf_counter()
            loss = self._optimizer_step(batch)
            dt = time.perf_counter() - t0
            self._step += 1
            self._step_times.append(dt)
            tokens = int(batch["attention_mask"].sum())
            record = {"phase": phase, "step": self._step, "global_step": offset + self._step, "loss": loss,
                      "tokens": tokens, "step_s": dt}
            self.history.append(record)
            mean_dt = sum(self._step_times) / len(self._step_times)
            self._emit(phase, self._step, steps, loss=loss, tokens_per_s=tokens / dt if dt > 0 else None,
                       eta_s=mean_dt * (steps - self._step + remaining_after), global_step=offset + self._step)
            if checkpoint_every and save_checkpoint is not None and phase != "client" and (offset + self._step) % checkpoint_every == 0:
                save_checkpoint(offset + self._step, self.save_checkpoint())
        key = f"{phase}_s"
        self.timings[key] = self.timings.get(key, 0.0) + time.perf_counter() - started
        self._emit(phase, self._step, steps, status="end")

    def _optimizer_step(self, batch: dict[str, torch.Tensor]) -> float:
        """One AdamW step on the mean token loss of ``batch``; returns that loss."""
        with autocast(self.device):
            loss_sum, count = token_loss(self.model, batch)
        loss = loss_sum / max(count, 1)
        self._optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self._optimizer.step()
        return float(loss.detach())

    # ------------------------------------------------------------- checkpoint
    def save_checkpoint(self) -> bytes:
        """The current mid-phase state as safetensors bytes (see checkpoint.py)."""
        if self._phase not in ("dense", "sparse") or self._optimizer is None:
            raise ValueError("save_checkpoint: no training phase in progress")
        params = self._params()
        masks = None
        if self._phase == "sparse":
            masks = {n: layer.trainable_mask() for n, layer in self.layers.items()}
        order = self._order.state() if self._order is not None else (self._pending_order or {})
        state = TrainState(
            phase=self._phase, step=self._step, b={n: p.detach() for n, p in params.items()}, masks=masks,
            optimizer=optimizer_state(self._optimizer, params), order=order, torch_rng=torch.get_rng_state(),
            fingerprint=self._fingerprint(), history=list(self.history), timings=dict(self.timings),
            metrics=dict(self.metrics),
        )
        return state_to_bytes(state)

    def load_checkpoint(self, blob: bytes) -> None:
        """Restore a state saved by ``save_checkpoint`` into this (set-up) recipe."""
        self._require_setup()
        state = state_from_bytes(blob)
        mine = self._fingerprint()
        diff = sorted(k for k in mine if state.fingerprint.get(k) != mine[k])
        if diff:
            k = diff[0]
            raise ValueError(f"resume_from: checkpoint has {k}={state.fingerprint.get(k)!r}, this run {k}={mine[k]!r}")
        steps = self._phase_plan(state.phase)[0]
        if state.step > steps or (state.phase == "sparse" and self.cfg.method != "lori-s"):
            raise ValueError(f"resume_from: checkpoint at {state.phase} step {state.step} does not fit this run")
        for name, layer in self.layers.items():
            if state.phase == "dense":
                layer.set_dense(state.b[name])
            else:
                layer.set_sparse(state.masks[name].to(torch.bool))
                if layer.lori_values.shape != state.b[name].shape:
                    raise ValueError(f"resume_from: values of {name!r} do not match the mask")
                with torch.no_grad():
                    layer.lori_values.copy_(state.b[name])
        self._phase, self._step = state.phase, state.step
        self._optimizer = self._new_optimizer(self._phase_plan(state.phase)[1])
        load_optimizer_state(self._optimizer, self._params(), state.optimizer)
        self._order, self._pending_order = None, state.order
        torch.set_rng_state(state.torch_rng)
        self.history, self.timings, self.metrics = state.history, {**self.timings, **state.timings}, state.metrics

    # ----------------------------------------------------------------- results
    def adapter(self) -> Adapter:
        """The current adapter (B_base + trainable part, with support masks) with full metadata."""
        self._require_setup()
        c, lo = self.cfg, self.cfg.lori
        sparse = c.method == "lori-s"
        extra = {}
        kind = c.method
        if self.base_adapter is not None:
            kind = "continual"
            parent = self.base_adapter_id or self.base_adapter.meta.extra.get("adapter_id") or self.base_adapter.meta.task
            extra = {"parents": [parent], "protect": c.protect}
        meta = AdapterMeta(
            base_model=c.base_model, segments=(Segment(lo.projection_seed, lo.rank, lo.distribution),),
            alpha=float(lo.alpha), target_modules=lo.target_modules, task=c.task, kind=kind,
            sparsity=float(lo.sparsity) if sparse else None, granularity=lo.granularity if sparse else None,
            base_revision=base_revision(c.base_model), family=c.family, extra=extra,
        )
        return extract_adapter(self.model, meta)

    def evaluate(self, examples: Sequence[dict]) -> dict:
        """{"eval_loss", "exact_match", "n", "n_exact"} on (at most eval_limit of) ``examples``."""
        self._require_setup()
        if self.cfg.eval_limit is not None:
            examples = list(examples)[: self.cfg.eval_limit]
        start = time.perf_counter()
        self._emit("eval", 0, len(examples), status="start")
        out = evaluate_examples(
            self.model, self.tokenizer, examples, max_length=self.cfg.max_length, batch_size=self.cfg.batch_size,
            max_new_tokens=self.cfg.eval_max_new_tokens, device=self.device,
        )
        self.timings["eval_s"] = self.timings.get("eval_s", 0.0) + time.perf_counter() - start
        self._emit("eval", len(examples), len(examples), status="end", loss=out["eval_loss"], exact_match=out["exact_match"])
        return out

    def run(
        self,
        train_examples: Sequence[dict],
        eval_examples: Sequence[dict] | None = None,
        checkpoint_every: int = 0,
        save_checkpoint: SaveFn | None = None,
        resume_from: bytes | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> RecipeResult:
        """setup (if needed) -> train -> adapter -> evaluate; see the module docstring."""
        self._require_setup()
        self.train(train_examples, checkpoint_every=checkpoint_every, save_checkpoint=save_checkpoint,
                   resume_from=resume_from, should_stop=should_stop)
        adapter = self.adapter()
        metrics = dict(self.metrics)
        metrics["trainable_params"] = float(self._trainable_count())
        metrics["nnz"] = float(adapter.nnz())
        losses = [h for h in self.history if h["phase"] in ("dense", "sparse")]
        if losses:
            metrics["train_loss_first"] = losses[0]["loss"]
            metrics["train_loss_last"] = losses[-1]["loss"]
            dense = [h["loss"] for h in losses if h["phase"] == "dense"]
            metrics["dense_loss_last"] = dense[-1] if dense else float("nan")
        if eval_examples:
            if should_stop is not None and should_stop():
                raise Cancelled("eval", 0)
            out = self.evaluate(eval_examples)
            metrics.update(eval_loss=out["eval_loss"], exact_match=out["exact_match"], eval_n=float(out["n"]))
        self._emit("done", self.cfg.total_steps, self.cfg.total_steps, status="end")
        return RecipeResult(adapter=adapter, metrics=metrics, timings=dict(self.timings), history=list(self.history))

    # --------------------------------------------------------------- federated
    def train_steps(
        self,
        steps: int,
        lr: float,
        examples: Sequence[dict],
        init_b: Mapping[str, torch.Tensor] | None = None,
        mask: Mapping[str, torch.Tensor] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> dict[str, torch.Tensor]:
        """One federated client round: start the trainable part from ``init_b`` (dense (d_out, r) per
        module; default zeros), on a fixed ``mask`` if given (else dense), train ``steps`` AdamW steps
        (fresh optimizer, data order from cfg.seed) and return the new trainable B (fp32, CPU,
        zeros outside the mask). Deterministic given cfg.seed and the inputs."""
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps={steps!r}: must be a positive integer")
        if not lr > 0:
            raise ValueError(f"lr={lr!r}: must be positive")
        self._require_setup()
        for what, given in (("init_b", init_b), ("mask", mask)):
            if given is not None and set(given) != set(self.layers):
                raise ValueError(f"{what}: must name exactly the adapted modules ({len(self.layers)}), got {len(given)}")
        for name, layer in self.layers.items():
            init = None if init_b is None else init_b[name]
            if mask is None:
                layer.set_dense(init)
            else:
                layer.set_sparse(mask[name].to(torch.bool), init=init)
        items = tokenize_all(self.tokenizer, examples, self.cfg.max_length)
        self._phase, self._step, self._client_steps = "client", 0, steps
        self._optimizer = torch.optim.AdamW(list(self._params().values()), lr=lr, weight_decay=self.cfg.weight_decay)
        self._order, self._pending_order = None, None
        self._loop(items, should_stop=should_stop)
        return {n: layer.trainable_delta().detach().float().cpu().clone() for n, layer in self.layers.items()}

    # ----------------------------------------------------------------- cleanup
    def cleanup(self) -> None:
        """Drop the model, tokenizer and optimizer; free accelerator memory."""
        self.model = self.tokenizer = self._optimizer = self._order = None
        self.layers = {}
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
