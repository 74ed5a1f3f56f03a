"""Benchmark: the recipe inside a Ray worker vs in-process, and federated round overhead.

    python bench/worker.py [--model tiny|smollm2|PATH] [--steps 40] [--json]

Figures:
- ``inproc_step_s`` / ``ray_step_s``: mean optimizer-step time of the same recipe run (LoRI-D +
  LoRI-S, same data and seed, 1 CPU thread each) in this process (the faster of a run before and
  one after the Ray job) and as a Ray job (progress events streaming to the caller);
  ``ray_overhead_ratio`` = ray / in-process (goal <= 1.05).
- ``job_wall_s`` / ``job_train_s``: the Ray job's submit-to-result time and its training time.
- ``round_overhead_s``: per federated round (2 clients in parallel), the round's wall time minus
  the slowest client's own training time (train_steps) — scheduling, model load, upload,
  validation and aggregation; averaged over the rounds.
Prints a table; with ``--json`` one JSON object of the figures on the last line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from lori import LoriConfig  # noqa: E402
from worker.models import build_tiny_model, prepare_smollm2, tiny_examples  # noqa: E402
from worker.recipe import LoriRecipe, RecipeConfig  # noqa: E402


def _jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny", help="tiny | smollm2 | a HF folder")
    ap.add_argument("--steps", type=int, default=40, help="dense steps (sparse: the same)")
    ap.add_argument("--local-steps", type=int, default=10, help="client steps per federated round")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="bench-worker-"))
    if args.model == "tiny":
        model, rank, targets = str(build_tiny_model(work / "tiny")), 4, None
    elif args.model == "smollm2":
        model, rank, targets = str(prepare_smollm2(Path.home() / ".cache" / "lori" / "smollm2-135m")), 8, ("q_proj", "v_proj")
    else:
        model, rank, targets = args.model, 8, None
    lori = LoriConfig(rank=rank, alpha=2.0 * rank, sparsity=0.9, projection_seed=7,
                      **({"target_modules": targets} if targets else {}))
    cfg = RecipeConfig(base_model=model, task="copy", lori=lori, dense_steps=args.steps, sparse_steps=args.steps,
                       dense_lr=1e-2, sparse_lr=1e-2, batch_size=4, max_length=32, device="cpu")
    train, evals = tiny_examples(64, 1), tiny_examples(8, 2)

    # in-process, 1 thread (a Ray task with num_cpus=1 gets OMP/torch threads = 1)
    torch.set_num_threads(1)
    from dataclasses import replace

    warm = LoriRecipe(replace(cfg, dense_steps=2, sparse_steps=2))  # same warm-up as the Ray side
    warm.setup()
    warm.run(train)
    warm.cleanup()
    steps = cfg.total_steps

    def inproc() -> float:
        recipe = LoriRecipe(cfg)
        recipe.setup()
        result = recipe.run(train)
        recipe.cleanup()
        return (result.timings["dense_s"] + result.timings["sparse_s"]) / steps

    inproc_runs = [inproc()]

    from worker import FederatedSpec, JobRunner, JobSpec
    from worker.store import LocalStore, upload_dataset

    store_dir = work / "store"
    store = LocalStore(store_dir)
    upload_dataset(store, "copy", _jsonl(train), _jsonl(evals))
    for k in range(2):
        upload_dataset(store, f"site-{k}", _jsonl(train[k::2]))
    runner = JobRunner(str(store_dir), num_cpus=2)
    try:
        runner.submit("warmup", JobSpec(recipe=replace(cfg, dense_steps=2, sparse_steps=2),
                                         dataset="copy"))
        runner.wait("warmup", timeout=600)
        t0 = time.perf_counter()
        runner.submit("bench-job", JobSpec(recipe=cfg, dataset="copy", num_cpus=1))
        st = runner.wait("bench-job", timeout=1800)
        job_wall = time.perf_counter() - t0
        if st.state != "succeeded":
            raise RuntimeError(f"bench job {st.state}: {st.error}")
        t = st.result.timings
        ray_step = (t["dense_s"] + t["sparse_s"]) / steps
        inproc_runs.append(inproc())  # before and after the Ray job: the machine's load drifts
        inproc_step = min(inproc_runs)

        fed = FederatedSpec(recipe=cfg, client_datasets=("site-0", "site-1"), dense_rounds=1, sparse_rounds=1,
                            local_steps=args.local_steps, deadline_s=1800)
        runner.submit("bench-fed", fed)
        fst = runner.wait("bench-fed", timeout=3600)
        if fst.state != "succeeded":
            raise RuntimeError(f"bench federated task {fst.state}: {fst.error}")
        rounds = fst.result.extra["rounds"]
        overheads = [r["round_s"] - max(c["train_s"] for c in r["clients"].values()) for r in rounds]
        client_train = [max(c["train_s"] for c in r["clients"].values()) for r in rounds]
        client_setup = [max(c["setup_s"] for c in r["clients"].values()) for r in rounds]
    finally:
        runner.shutdown()

    figures = {
        "model": args.model,
        "steps": steps,
        "inproc_step_s": round(inproc_step, 5),
        "ray_step_s": round(ray_step, 5),
        "ray_overhead_ratio": round(ray_step / inproc_step, 4),
        "job_wall_s": round(job_wall, 3),
        "job_train_s": round(t["dense_s"] + t["sparse_s"], 3),
        "round_s": round(sum(r["round_s"] for r in rounds) / len(rounds), 3),
        "client_train_s": round(sum(client_train) / len(client_train), 3),
        "client_setup_s": round(sum(client_setup) / len(client_setup), 3),
        "round_overhead_s": round(sum(overheads) / len(overheads), 3),
    }
    width = max(len(k) for k in figures)
    print(f"{'figure'.ljust(width)}  value")
    for k, v in figures.items():
        print(f"{k.ljust(width)}  {v}")
    if args.json:
        print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
