"""The one place protobuf messages meet the coordinator's plain values (dicts and dataclasses)."""

from __future__ import annotations

import json
import math

from google.protobuf.message import Message

from worker.store import AdapterRecord, LineageEntry

from .domain import Job, JobEvent, JobKind, JobState, Schedule, ScheduleMode, iso
from .v1 import coordinator_pb2 as pb
from .v1 import types_pb2 as t

_STATE_TO_PB = {s: t.JobState.Value(f"JOB_STATE_{s.name}") for s in JobState}
_STATE_FROM_PB = {v: k for k, v in _STATE_TO_PB.items()}
_KIND_TO_PB = {k: t.JobKind.Value(f"JOB_KIND_{k.name}") for k in JobKind}
_KIND_FROM_PB = {v: k for k, v in _KIND_TO_PB.items()}
_MODE_TO_PB = {m: t.ScheduleMode.Value(f"SCHEDULE_MODE_{m.name}") for m in ScheduleMode}


def msg_to_dict(msg: Message) -> dict:
    """Fields that are set (non-default scalars, present optionals) as a plain dict; enums as ints."""
    out: dict = {}
    for fd, value in msg.ListFields():
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            out[fd.name] = dict(value)
        elif fd.is_repeated:
            out[fd.name] = [msg_to_dict(v) if isinstance(v, Message) else v for v in value]
        elif isinstance(value, Message):
            out[fd.name] = msg_to_dict(value)
        else:
            out[fd.name] = value
    return out


def task_spec(msg: t.TaskSpec, present: bool) -> dict | None:
    return msg_to_dict(msg) if present else None


def state_from_pb(v: int) -> str:
    s = _STATE_FROM_PB.get(v)
    if s is None:
        raise ValueError(v)
    return s.value


def kind_from_pb(v: int) -> str:
    if v == 0:
        return ""
    k = _KIND_FROM_PB.get(v)
    if k is None:
        raise ValueError(v)
    return k.value


def mode_from_pb(v: int) -> str:
    return {0: "merge", 1: "merge", 2: "continual"}.get(v, f"unknown({v})")


def split_from_pb(v: int) -> str:
    return {0: "train", 1: "train", 2: "eval"}.get(v, "")


def _floats(d: dict) -> dict[str, float]:
    return {str(k): float(v) for k, v in d.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))}


def progress_pb(p: dict | None) -> t.Progress:
    p = p or {}
    msg = t.Progress(phase=str(p.get("phase") or ""), step=int(p.get("step") or 0),
                     total_steps=int(p.get("total_steps") or 0))
    for k in ("loss", "eta_s", "tokens_per_s"):
        v = p.get(k)
        if isinstance(v, (int, float)) and math.isfinite(v):
            setattr(msg, k, float(v))
    return msg


def job_pb(job: Job) -> t.Job:
    return t.Job(job_id=job.job_id, kind=_KIND_TO_PB[job.kind], state=_STATE_TO_PB[job.state],
                 family=job.family, task=job.task, created_at=iso(job.created_at),
                 updated_at=iso(job.updated_at), started_at=iso(job.started_at),
                 finished_at=iso(job.finished_at), progress=progress_pb(job.progress),
                 adapter_id=job.adapter_id, metrics=_floats(job.metrics), error=job.error,
                 spec_json=json.dumps(job.spec, sort_keys=True), attempts=job.attempts,
                 event_count=job.event_count, result_json=json.dumps(job.result, sort_keys=True))


def event_pb(ev: JobEvent) -> t.JobEvent:
    msg = t.JobEvent(index=ev.index, job_id=ev.job_id, time=iso(ev.time), type=ev.type, message=ev.message)
    if ev.state is not None:
        msg.state = _STATE_TO_PB[ev.state]
    if ev.progress is not None:
        msg.progress.CopyFrom(progress_pb(ev.progress))
    return msg


def adapter_pb(rec: AdapterRecord, lineage: list[LineageEntry] = (), pointers: list[str] = ()) -> t.Adapter:
    m = rec.manifest
    tasks = m.get("tasks") if isinstance(m.get("tasks"), list) else [rec.task]
    return t.Adapter(
        adapter_id=rec.adapter_id, family=rec.family, task=rec.task, version=rec.version, kind=rec.kind or "",
        base_model=rec.base_model or "", projection_seed=int(rec.projection_seed or 0),
        created_at=rec.created_at or "", job_id=rec.job_id or "", parents=list(rec.parents),
        merge_weights=list(rec.merge_weights or ()), metrics=_floats(rec.metrics), pointers=list(pointers),
        tasks=[str(x) for x in tasks],
        lineage=[t.LineageEntry(adapter_id=e.adapter_id, depth=e.depth, parents=list(e.parents),
                                merge_weights=list(e.merge_weights or ()), job_id=e.job_id or "",
                                kind=e.kind or "", missing=e.missing) for e in lineage])


def dataset_pb(manifest: dict) -> t.Dataset:
    splits = manifest.get("splits", {})
    return t.Dataset(name=manifest["name"], digest=manifest.get("digest", ""),
                     train_records=splits.get("train", {}).get("records", 0),
                     eval_records=splits.get("eval", {}).get("records", 0))


def schedule_pb(s: Schedule) -> t.Schedule:
    return t.Schedule(name=s.name, cron=s.cron, family=s.family, mode=_MODE_TO_PB[s.mode], method=s.method,
                      spec_json=json.dumps(s.spec, sort_keys=True) if s.spec else "",
                      gate=t.Gate(enabled=s.gate.enabled, max_drop=s.gate.max_drop, metric=s.gate.metric),
                      pointer=s.pointer, created_at=iso(s.created_at), last_run_at=iso(s.last_run_at),
                      next_run_at=iso(s.next_run_at), last_job_id=s.last_job_id)


def federated_request(req: pb.SubmitFederatedTaskRequest) -> dict:
    d = msg_to_dict(req)
    d["spec"] = msg_to_dict(req.spec) if req.HasField("spec") else None
    return d
