"""The benchmark: single-task, merged and continual runs of every method, evaluated per task.

Seeds: task t's own adapters (LoRA init, LoRI-D, LoRI-S) use projection seed ``seed_base + i_t``;
the *shared family* (B-sum merge and continual updates) uses safety's seed for every task, so the
safety adapters belong to both. Shared-family masks are calibrated in task order over the
complement of the earlier tasks' masks (disjoint), from a LoRI-D run of each task with that seed.

Stages (each needs the ones before it):
  single    - base model, then per task: LoRA, LoRI-D, LoRI-S (LoRI-S calibrated from that LoRI-D).
  merged    - shared-family LoRI-D / LoRI-S (disjoint masks) of the non-safety tasks, then merges of
              all four tasks: LoRA linear / TIES / DARE / cat, LoRI concat (per-task seeds) and
              LoRI B-sum (shared seed, disjoint masks); every merged model is scored on every task.
  continual - from the safety adapter, each other task: LoRA (keeps training), LoRI-D (dense B on
              top), LoRI-S with overlapping masks (paper), LoRI-S protected (mask outside safety's).
"""

from __future__ import annotations

import copy
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field

import torch

from lori import mask_overlap

from . import merging, methods, scoring, tasks
from .model import Base, Patcher, TrainSpec, generate

STAGES: tuple[str, ...] = ("single", "merged", "continual")
SINGLE_METHODS: tuple[str, ...] = ("lora", "lori-d", "lori-s")
CONTINUAL_METHODS: tuple[str, ...] = ("lora", "lori-d", "lori-s-overlap", "lori-s-protected")


@dataclass(frozen=True)
class BenchConfig:
    model: str
    tasks: tuple[str, ...] = tasks.TASKS
    stages: tuple[str, ...] = STAGES
    n_train: int = 400
    n_test: int = 40
    steps: int = 40
    lr: float = 2e-3
    batch_size: int = 8
    rank: int = 16
    alpha: float = 32.0
    targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    sparsity: float = 0.9
    granularity: str = "model"
    max_length: int = 128
    max_new_tokens: dict = field(default_factory=lambda: {"arith": 5, "code": 12, "nlu": 3, "safety": 8})
    merge_weight: float = 1.0
    ties_density: float = 0.5
    dare_density: float = 0.5
    seed_base: int = 11
    data_seed: int = 0
    threads: int | None = None
    eval_batch: int = 20

    def __post_init__(self) -> None:
        unknown = [t for t in self.tasks if t not in tasks.TASKS]
        if unknown or not self.tasks:
            raise ValueError(f"tasks={self.tasks!r}: must be a non-empty subset of {tasks.TASKS}")
        bad = [s for s in self.stages if s not in STAGES]
        if bad or not self.stages:
            raise ValueError(f"stages={self.stages!r}: must be a non-empty subset of {STAGES}")
        if ("merged" in self.stages or "continual" in self.stages) and "single" not in self.stages:
            raise ValueError(f"stages={self.stages!r}: merged and continual need the single stage")
        if "continual" in self.stages and "safety" not in self.tasks:
            raise ValueError("the continual stage starts from the safety adapter: tasks must include 'safety'")

    def seed_of(self, task: str) -> int:
        return self.seed_base + tasks.TASKS.index(task)

    @property
    def shared_seed(self) -> int:
        return self.seed_of("safety") if "safety" in self.tasks else self.seed_of(self.tasks[0])


class Bench:
    """Holds the base model, the evaluation copy, the data and every trained adapter."""

    def __init__(self, cfg: BenchConfig, log: Callable[[str], None] | None = None) -> None:
        self.cfg = cfg
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.t0 = time.perf_counter()
        self.base = Base.load(cfg.model, cfg.max_length, cfg.threads)
        self.patcher = Patcher(self.base)
        self.cache = methods.ProjectionCache()
        self.setup = methods.Setup(
            rank=cfg.rank, alpha=cfg.alpha, targets=cfg.targets, sparsity=cfg.sparsity,
            granularity=cfg.granularity, train=TrainSpec(cfg.steps, cfg.lr, cfg.batch_size, seed=cfg.data_seed),
            base_model=cfg.model,
        )
        self.data = {t: tasks.split(t, cfg.n_train, cfg.n_test, cfg.data_seed) for t in cfg.tasks}
        self.timings: dict[str, float] = {
            "load_s": time.perf_counter() - self.t0, "train_s": 0.0, "train_cpu_s": 0.0, "eval_s": 0.0, "eval_cpu_s": 0.0,
        }
        self.cpu0 = time.process_time()
        self.details: dict = {"train": {}, "eval": {}, "masks": {}}

    # ------------------------------------------------------------------ helpers
    def _elapsed(self) -> str:
        return f"[{time.perf_counter() - self.t0:7.1f}s]"

    def evaluate(self, label: str, deltas: Iterable, task_list: Iterable[str]) -> dict[str, dict]:
        """Score one model (base + ΔW) on the given tasks."""
        start, cpu_start = time.perf_counter(), time.process_time()
        out: dict[str, dict] = {}
        with self.patcher.patched(deltas) as model:
            for task in task_list:
                test = self.data[task][1]
                texts = generate(model, self.base, [e.prompt for e in test], self.cfg.max_new_tokens[task],
                                 self.cfg.eval_batch)
                result = scoring.task_score(texts, test)
                result["samples"] = [{"prompt": e.prompt, "output": o} for e, o in list(zip(test, texts, strict=True))[:3]]
                out[task] = result
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        self.timings["eval_s"] += seconds
        self.timings["eval_cpu_s"] += cpu
        self.details["eval"][label] = {t: {k: v for k, v in r.items()} for t, r in out.items()}
        scores = ", ".join(f"{t}={r['score']:.2f}" for t, r in out.items())
        self.log(f"{self._elapsed()} eval {label}: {scores} ({seconds:.1f}s wall, {cpu:.1f}s cpu)")
        return out

    def _trained(self, label: str, trained: methods.Trained) -> methods.Trained:
        stats = {k: v for k, v in trained.stats.items() if k != "losses"}
        self.timings["train_s"] += stats.get("seconds", 0.0)
        self.timings["train_cpu_s"] += stats.get("cpu_seconds", 0.0)
        self.details["train"][label] = stats
        self.log(
            f"{self._elapsed()} train {label}: loss {stats['loss_first']:.3f} -> {stats['loss_last']:.3f}, "
            f"{stats['trainable']} trainable, {stats['seconds']:.1f}s wall, {stats['cpu_seconds']:.1f}s cpu"
        )
        return trained

    def deltas(self, adapter) -> Iterable:
        if not isinstance(adapter, methods.LoraAdapter):
            self.cache.check(adapter)  # the cached A must be the A the adapter was trained against
        return methods.deltas(adapter, self.cache)

    # ------------------------------------------------------------------- stages
    def run_single(self) -> dict:
        cfg, base, setup = self.cfg, self.base, self.setup
        self.base_scores = self.evaluate("base", {}, cfg.tasks)
        self.lora: dict[str, methods.Trained] = {}
        self.lori_d: dict[str, methods.Trained] = {}
        self.lori_s: dict[str, methods.Trained] = {}
        single: dict[str, dict] = {m: {} for m in SINGLE_METHODS}
        for task in cfg.tasks:
            train = self.data[task][0]
            keep = task == "safety" and "continual" in cfg.stages
            self.lora[task] = self._trained(f"lora/{task}", methods.train_lora(base, setup, task, train, keep_model=keep))
            seed = cfg.seed_of(task)
            self.lori_d[task] = self._trained(
                f"lori-d/{task}", methods.train_lori_d(base, setup, task, train, seed, self.cache)
            )
            masks = methods.calibrate(setup, self.lori_d[task].adapter)
            self.lori_s[task] = self._trained(
                f"lori-s/{task}", methods.train_lori_s(base, setup, task, train, seed, masks, self.cache)
            )
            for method, store in (("lora", self.lora), ("lori-d", self.lori_d), ("lori-s", self.lori_s)):
                single[method][task] = self.evaluate(f"single/{method}/{task}", self.deltas(store[task].adapter), [task])[task]
        return single

    def _shared_family(self) -> None:
        """LoRI-D with the shared seed for every non-safety task, and disjoint-mask LoRI-S adapters."""
        if hasattr(self, "shared_d"):
            return
        cfg, base, setup = self.cfg, self.base, self.setup
        seed = cfg.shared_seed
        first = cfg.tasks[0] if "safety" not in cfg.tasks else "safety"
        self.shared_d = {first: self.lori_d[first]}
        self.shared_s = {first: self.lori_s[first]}
        union = {n: m.clone() for n, m in self.lori_s[first].adapter.masks.items()}
        for task in cfg.tasks:
            if task == first:
                continue
            train = self.data[task][0]
            self.shared_d[task] = self._trained(
                f"shared/lori-d/{task}", methods.train_lori_d(base, setup, task, train, seed, self.cache)
            )
            masks = methods.calibrate(setup, self.shared_d[task].adapter, protected=union)
            self.shared_s[task] = self._trained(
                f"shared/lori-s/{task}", methods.train_lori_s(base, setup, task, train, seed, masks, self.cache)
            )
            for n in union:
                union[n] |= masks[n]

    def run_merged(self, single: dict) -> tuple[dict, dict, dict]:
        cfg = self.cfg
        spec = merging.MergeSpec(cfg.merge_weight, cfg.ties_density, cfg.dare_density, cfg.data_seed)
        self._shared_family()
        disjoint_single = {}
        for task in cfg.tasks:
            if task == ("safety" if "safety" in cfg.tasks else cfg.tasks[0]):
                disjoint_single[task] = single["lori-s"][task]
            else:
                disjoint_single[task] = self.evaluate(
                    f"single/lori-s-disjoint/{task}", self.deltas(self.shared_s[task].adapter), [task]
                )[task]
        merged: dict[str, dict] = {}
        loras = [self.lora[t].adapter for t in cfg.tasks]
        for method in merging.LORA_MERGES:
            merged[method] = self.evaluate(f"merged/{method}", merging.lora_merged_deltas(method, loras, spec), cfg.tasks)
        concat = merging.lori_merge("lori-concat", [self.lori_s[t].adapter for t in cfg.tasks], spec)
        merged["lori-concat"] = self.evaluate("merged/lori-concat", self.deltas(concat), cfg.tasks)
        shared = [self.shared_s[t].adapter for t in cfg.tasks]
        bsum = merging.lori_merge("lori-bsum", shared, spec)
        merged["lori-bsum"] = self.evaluate("merged/lori-bsum", self.deltas(bsum), cfg.tasks)
        overlaps = {
            "lori-s_per_task_seed_jaccard_mean": _mean_pairwise([self.lori_s[t].adapter.masks for t in cfg.tasks]),
            "lori-bsum_disjoint_jaccard_mean": _mean_pairwise([a.masks for a in shared]),
        }
        self.details["masks"].update(overlaps)
        reference = {m: ("lora" if m.startswith("lora") else "lori-s") for m in merged}
        retention = {}
        for method, scores in merged.items():
            ref = disjoint_single if method == "lori-bsum" else single[reference[method]]
            retention[method] = scoring.retention(
                {t: scores[t]["score"] for t in cfg.tasks},
                {t: ref[t]["score"] for t in cfg.tasks},
                {t: self.base_scores[t]["score"] for t in cfg.tasks},
            )
            retention[method]["reference"] = "lori-s-disjoint" if method == "lori-bsum" else reference[method]
        return merged, retention, disjoint_single

    def run_continual(self, single: dict) -> dict:
        cfg, base, setup = self.cfg, self.base, self.setup
        self._shared_family()
        seed = cfg.shared_seed
        safety_s = self.lori_s["safety"].adapter
        before = {
            "lora": single["lora"]["safety"],
            "lori-d": single["lori-d"]["safety"],
            "lori-s-overlap": single["lori-s"]["safety"],
            "lori-s-protected": single["lori-s"]["safety"],
        }
        continual: dict[str, dict] = {m: {} for m in CONTINUAL_METHODS}
        for task in cfg.tasks:
            if task == "safety":
                continue
            train = self.data[task][0]
            prev = copy.copy(self.lora["safety"])
            prev.model = copy.deepcopy(self.lora["safety"].model)
            runs = {
                "lora": lambda prev=prev, train=train, task=task: methods.continue_lora(base, setup, prev, task, train),
                "lori-d": lambda train=train, task=task: methods.train_lori_d(
                    base, setup, task, train, seed, self.cache, on_top_of=self.lori_d["safety"].adapter
                ),
            }
            dense = self.shared_d[task].adapter
            overlap_masks = methods.calibrate(setup, dense)
            protected_masks = methods.calibrate(setup, dense, protected=safety_s.masks)
            for name, masks in (("lori-s-overlap", overlap_masks), ("lori-s-protected", protected_masks)):
                runs[name] = lambda masks=masks, name=name, train=train, task=task: methods.train_lori_s(
                    base, setup, task, train, seed, masks, self.cache, on_top_of=safety_s, method=name
                )
            for method, fn in runs.items():
                trained = self._trained(f"continual/{method}/{task}", fn())
                scores = self.evaluate(f"continual/{method}/{task}", self.deltas(trained.adapter), [task, "safety"])
                entry = {
                    "score": scores[task]["score"],
                    "safety": scores["safety"]["score"],
                    "safety_before": before[method]["score"],
                    "refusal_harmful": scores["safety"]["refusal_harmful"],
                    "answer_benign": scores["safety"]["answer_benign"],
                }
                if method.startswith("lori-s"):
                    entry.update(_safety_coordinates(safety_s, trained.adapter))
                continual[method][task] = entry
            prev.model = None
        self.lora["safety"].model = None
        return continual

    def run(self) -> dict:
        cfg = self.cfg
        result: dict = {"single": {}, "merged": {}, "continual": {}}
        single_full = self.run_single()
        result["single"] = {m: {t: r["score"] for t, r in per.items()} for m, per in single_full.items()}
        result["base"] = {t: r["score"] for t, r in self.base_scores.items()}
        if "merged" in cfg.stages and len(cfg.tasks) > 1:
            merged, retention, disjoint = self.run_merged(single_full)
            result["merged"] = {m: {t: r["score"] for t, r in per.items()} for m, per in merged.items()}
            result["retention"] = retention
            result["single"]["lori-s-disjoint"] = {t: r["score"] for t, r in disjoint.items()}
        if "continual" in cfg.stages and len(cfg.tasks) > 1:
            result["continual"] = self.run_continual(single_full)
        result["safety_detail"] = {
            label: {k: r["safety"][k] for k in ("refusal_harmful", "answer_benign")}
            for label, r in self.details["eval"].items()
            if "safety" in r
        }
        result["config"] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()}
        result["trainable"] = {label: s["trainable"] for label, s in self.details["train"].items()}
        result["details"] = self.details
        result["timings"] = {k: round(v, 2) for k, v in self.timings.items()}
        result["runtime_s"] = round(time.perf_counter() - self.t0, 2)
        result["timings"]["cpu_s"] = round(time.process_time() - self.cpu0, 2)
        result["timings"]["threads"] = torch.get_num_threads()
        return result


def _mean_pairwise(masks: list[dict]) -> float:
    values = [mask_overlap(masks[i], masks[j]) for i in range(len(masks)) for j in range(i + 1, len(masks))]
    return sum(values) / len(values) if values else 0.0


def _safety_coordinates(safety, updated) -> dict:
    """How many of safety's B coordinates the continual update changed (0 for protected masks)."""
    changed = total = 0
    for name, mask in safety.masks.items():
        before = safety.b[name][mask]
        after = updated.b[name][mask]
        changed += int((before != after).sum())
        total += int(mask.sum())
    return {"safety_coords_changed": changed, "safety_coords": total, "safety_coords_identical": changed == 0}


def run_bench(cfg: BenchConfig, log: Callable[[str], None] | None = None) -> dict:
    torch.manual_seed(cfg.data_seed)
    return Bench(cfg, log).run()
