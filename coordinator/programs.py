"""What each job kind does, as a program of memoised steps (see `coordinator.engine`).

    train      one execution, id = the job id (so the adapter id is the job id)
    federated  one federated execution, id = the job id
    evaluate   one evaluation of an adapter (or the bare base model) on a dataset's eval split
    continual  [evaluate the base on its tasks] -> train on top of the base (its masks protected)
               -> [evaluate the result on the same tasks] -> gate -> promote to a pointer
    scheduled  a schedule's run: merge every adapter published in the family since the last run
               into `production` (or train a continual update on top of it), evaluate, gate, promote

Gate: for every protected task, drop = before - after of `gate.metric`; the result is promoted only
if every drop <= `gate.max_drop`. A gate failure is not a job failure: the job succeeds with
`result.promoted = false` and the pointer unchanged.
"""

from __future__ import annotations

from datetime import datetime

from worker.store import ConflictError
from worker.store.publish import AdapterNotFound

from .domain import JobKind, JobState
from .engine import JobContext, JobFailed
from .errors import NotFound
from .merging import merge_adapters, tasks_of


def _task_spec(job_spec: dict) -> dict:
    return job_spec.get("spec", job_spec)


def run_train(ctx: JobContext) -> dict:
    r = ctx.child("train", "train", {"spec": ctx.spec, "base_adapter_id": None}, exec_id=ctx.job.job_id)
    return {"adapter_id": r["adapter_id"], "metrics": r["metrics"], "result": {"timings": r["timings"]}}


def run_federated(ctx: JobContext) -> dict:
    r = ctx.child("train", "federated", ctx.spec, exec_id=ctx.job.job_id)
    return {"adapter_id": r["adapter_id"], "metrics": r["metrics"], "result": {"extra": r.get("extra", {})}}


def run_evaluate(ctx: JobContext) -> dict:
    r = ctx.child("eval", "evaluate", ctx.spec)
    return {"metrics": r["metrics"], "result": {"adapter_id": ctx.spec.get("adapter_id"),
                                                "dataset": ctx.spec["dataset"], "metrics": r["metrics"]}}


def eval_dataset_for(ctx: JobContext, family: str, task: str) -> str | None:
    """The eval dataset a task was trained with: its newest successful job's (eval_)dataset."""
    for kind in (JobKind.TRAIN, JobKind.CONTINUAL, JobKind.FEDERATED):
        jobs, _ = ctx.state.list_jobs(states=[JobState.SUCCEEDED], kind=kind, family=family, task=task, limit=1)
        if jobs:
            spec = _task_spec(jobs[0].spec)
            ds = spec.get("eval_dataset") or spec.get("dataset") or (spec.get("client_datasets") or [None])[0]
            if ds:
                return ds
    return None


def _eval_payload(adapter_id: str, dataset: str, manifest: dict, spec: dict | None) -> dict:
    tr = (spec or {}).get("training") or {}
    return {"adapter_id": adapter_id, "dataset": dataset, "base_model": manifest.get("base_model") or "",
            "limit": tr.get("eval_limit"), "max_new_tokens": tr.get("eval_max_new_tokens") or 32,
            "max_length": tr.get("max_length") or 256, "batch_size": tr.get("batch_size") or 8}


def evaluate_tasks(ctx: JobContext, label: str, adapter_id: str, datasets: dict[str, str],
                   spec: dict | None = None) -> dict[str, dict]:
    """{task: metrics} of one adapter on every task's eval dataset (memoised per task)."""
    manifest = ctx.registry.get(adapter_id).manifest
    out = {}
    for task, ds in sorted(datasets.items()):
        r = ctx.child(f"eval-{label}-{task}", "evaluate", _eval_payload(adapter_id, ds, manifest, spec))
        out[task] = r["metrics"]
    return out


def gate_decision(gate: dict, before: dict[str, dict], after: dict[str, dict]) -> dict:
    metric = gate.get("metric") or "exact_match"
    drops = {t: float(before[t].get(metric) or 0.0) - float(after.get(t, {}).get(metric) or 0.0) for t in before}
    failed = sorted(t for t, d in drops.items() if d > gate.get("max_drop", 0.0) + 1e-12)
    return {"enabled": bool(gate.get("enabled")), "metric": metric, "max_drop": gate.get("max_drop", 0.0),
            "drops": drops, "passed": not failed, "failed_tasks": failed}


def promote(ctx: JobContext, family: str, pointer: str, adapter_id: str, expected: str | None) -> bool:
    try:
        ctx.registry.set_pointer(family, pointer, adapter_id, expected=expected)
    except ConflictError as exc:
        ctx.log(f"not promoted: {exc}")
        return False
    ctx.log(f"promoted {adapter_id} to {family}/{pointer}")
    return True


def _protected(ctx: JobContext, base_manifest: dict) -> dict[str, str]:
    family = base_manifest.get("family", "")
    out = {}
    for task in tasks_of(base_manifest):
        ds = eval_dataset_for(ctx, family, task) or base_manifest.get("dataset")
        if ds:
            out[task] = ds
        else:
            ctx.log(f"no eval dataset known for protected task {task!r}; not gated")
    return out


def continual_steps(ctx: JobContext, base_id: str, spec: dict, gate: dict, promote_to: str,
                    expected_pointer: object = None) -> dict:
    """The continual-update program (shared by ContinualUpdate and continual schedules)."""
    try:
        base = ctx.registry.get(base_id).manifest
    except AdapterNotFound:
        raise NotFound(f"adapter {base_id!r} not found") from None
    protected = _protected(ctx, base) if gate.get("enabled") else {}
    before = evaluate_tasks(ctx, "before", base_id, protected, spec) if protected else {}
    r = ctx.child("train", "train", {"spec": spec, "base_adapter_id": base_id}, exec_id=ctx.job.job_id)
    new_id = r["adapter_id"]
    after = evaluate_tasks(ctx, "after", new_id, protected, spec) if protected else {}
    decision = gate_decision(gate, before, after) if gate.get("enabled") else {"enabled": False, "passed": True}
    promoted = False
    if promote_to and decision["passed"]:
        expected = ctx.registry.get_pointer(spec["family"], promote_to) if expected_pointer is None else expected_pointer
        promoted = promote(ctx, spec["family"], promote_to, new_id, expected)
    elif promote_to:
        ctx.log(f"gate failed on {decision['failed_tasks']}: {spec['family']}/{promote_to} unchanged")
    return {"adapter_id": new_id, "metrics": r["metrics"],
            "result": {"base_adapter_id": base_id, "adapter_id": new_id, "before": before, "after": after,
                       "gate": decision, "promoted": promoted, "pointer": promote_to}}


def run_continual(ctx: JobContext) -> dict:
    s = ctx.spec
    return continual_steps(ctx, s["base_adapter_id"], s["spec"], s["gate"], s.get("promote_to") or "")


def _ts(iso_text: str | None) -> float:
    if not iso_text:
        return 0.0
    try:
        return datetime.fromisoformat(iso_text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def _consumed(ctx: JobContext, schedule: str) -> set[str]:
    out: set[str] = set()
    cursor = None
    while True:
        jobs, cursor = ctx.state.list_jobs(states=[JobState.SUCCEEDED], kind=JobKind.SCHEDULED, task=schedule,
                                           limit=500, cursor=cursor)
        for j in jobs:
            out.update(j.result.get("inputs") or [])
        if cursor is None:
            return out


def run_scheduled(ctx: JobContext) -> dict:
    s = ctx.spec  # {"schedule", "family", "mode", "method", "spec", "gate", "pointer", "since", "until"}
    family, pointer, gate = s["family"], s["pointer"], s["gate"]
    prod = ctx.memo("pointer", lambda: {"adapter_id": ctx.registry.get_pointer(family, pointer)})["adapter_id"]
    if s["mode"] == "continual":
        if prod is None:
            raise JobFailed(f"{family}/{pointer} is not set: nothing to update continually")
        out = continual_steps(ctx, prod, s["spec"], gate, pointer, expected_pointer=prod)
        out["result"]["schedule"] = s["schedule"]
        return out

    def pick() -> dict:
        # "Published since the last run": not consumed by an earlier successful run of this
        # schedule, and published before this run started (the job's creation time).
        consumed = _consumed(ctx, s["schedule"])
        recs = ctx.registry.list(family=family)
        new = [r.adapter_id for r in recs
               if r.adapter_id != prod and r.adapter_id not in consumed
               and _ts(r.created_at) <= ctx.job.created_at and not (r.kind or "").startswith("merge")]
        return {"ids": sorted(new)}

    new_ids = ctx.memo("select", pick)["ids"]
    if not new_ids:
        ctx.log("no adapter published since the last run; nothing to do")
        return {"result": {"schedule": s["schedule"], "skipped": True, "promoted": False}}
    inputs = ([prod] if prod else []) + new_ids
    merged = ctx.memo("merge", lambda: merge_adapters(
        ctx.registry, inputs, None, s["method"], task=f"{family}-{s['schedule']}", family=family,
        job_id=ctx.job.job_id))
    merged_id = merged["adapter_id"]
    # Every task's baseline: its score in the adapter that carried it until now.
    before: dict[str, dict] = {}
    covered: dict[str, str] = {}
    for aid in inputs:
        manifest = ctx.registry.get(aid).manifest
        ds_map = {t: ds for t in tasks_of(manifest) if (ds := eval_dataset_for(ctx, family, t) or manifest.get("dataset"))}
        before.update(evaluate_tasks(ctx, f"before-{aid}", aid, ds_map))
        covered.update(ds_map)
    after = evaluate_tasks(ctx, "after", merged_id, covered)
    decision = gate_decision(gate, before, after) if gate.get("enabled") else {"enabled": False, "passed": True}
    promoted = False
    if decision["passed"]:
        promoted = promote(ctx, family, pointer, merged_id, expected=prod)
    else:
        ctx.log(f"gate failed on {decision['failed_tasks']}: {family}/{pointer} unchanged")
    return {"adapter_id": merged_id,
            "metrics": {f"{t}.{k}": v for t, m in after.items() for k, v in m.items()
                        if isinstance(v, (int, float))},
            "result": {"schedule": s["schedule"], "inputs": inputs, "adapter_id": merged_id, "before": before,
                       "after": after, "gate": decision, "promoted": promoted, "pointer": pointer,
                       "previous": prod}}


PROGRAMS = {
    JobKind.TRAIN: run_train,
    JobKind.FEDERATED: run_federated,
    JobKind.EVALUATE: run_evaluate,
    JobKind.CONTINUAL: run_continual,
    JobKind.SCHEDULED: run_scheduled,
}
