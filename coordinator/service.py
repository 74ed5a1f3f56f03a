"""The coordinator's request handlers: validated plain values in, domain records out.

The gRPC servicer (`coordinator.servicer`) is a thin layer over this class: it converts
messages with `coordinator.serde`, calls one method, and maps `coordinator.errors` to status codes.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from worker.store import (
    AdapterRecord,
    ConflictError,
    DatasetError,
    DatasetNotFound,
    LineageEntry,
    Registry,
    Store,
    open_store,
    read_adapter_blob,
    read_dataset_manifest,
    upload_dataset,
)
from worker.store.publish import AdapterNotFound

from .domain import Gate, Job, JobEvent, JobKind, JobState, Schedule, ScheduleMode
from .engine import Engine
from .errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from .merging import load_adapter, merge_adapters
from .scheduler import Scheduler, check_cron
from .specs import (
    MERGE_METHODS,
    check_choice,
    check_float,
    check_id,
    check_int,
    check_text,
    validate_federated,
    validate_gate,
    validate_request_id,
    validate_task_spec,
)

MAX_PAGE = 1000


def _page_size(value: object, field: str = "page_size") -> int:
    n = check_int(field, value or 0, 0, MAX_PAGE)
    return n or 50


def _encode_token(n: int) -> str:
    return base64.urlsafe_b64encode(f"c{n}".encode()).decode().rstrip("=")


def _decode_token(token: str, field: str = "page_token") -> int | None:
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        if not raw.startswith("c"):
            raise ValueError
        n = int(raw[1:])
        if n < 0:
            raise ValueError
        return n
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidArgument(field, "is not a page token returned by this server") from None


class CoordinatorService:
    def __init__(self, engine: Engine, scheduler: Scheduler, *, max_dataset_bytes: int = 512 << 20,
                 export_root: str | None = None) -> None:
        self.engine, self.scheduler = engine, scheduler
        self.state, self.store = engine.state, engine.store
        self.registry: Registry = engine.registry
        self.max_dataset_bytes = max_dataset_bytes
        self.export_root = Path(export_root).resolve() if export_root else None
        self._known_datasets: set[str] = set()

    # -- jobs ------------------------------------------------------------------------------
    def _require_dataset(self, field: str, name: str) -> None:
        if not name or name in self._known_datasets:  # datasets are immutable once uploaded
            return
        try:
            read_dataset_manifest(self.store, name)
        except DatasetNotFound:
            raise NotFound(f"dataset {name!r} ({field}) not found; upload it first") from None
        self._known_datasets.add(name)

    @staticmethod
    def _check_recipe(spec: dict, field: str = "spec") -> None:
        """The worker's own validation (RecipeConfig / LoriConfig), surfaced at submit time."""
        from .executors.ray_worker import recipe_config

        try:
            recipe_config(spec)
        except ValueError as exc:
            raise InvalidArgument(field, str(exc)) from None

    def submit_task(self, spec: object, request_id: object = "") -> Job:
        rid = validate_request_id(request_id)
        spec = validate_task_spec(spec)
        self._check_recipe(spec)
        self._require_dataset("spec.dataset", spec["dataset"])
        self._require_dataset("spec.eval_dataset", spec["eval_dataset"])
        return self.engine.submit(JobKind.TRAIN, spec, family=spec["family"], task=spec["task"], request_id=rid)

    def submit_federated(self, req: dict) -> Job:
        rid = validate_request_id(req.get("request_id"))
        fed = validate_federated(req)
        self._check_recipe(fed["spec"])
        for i, d in enumerate(fed["client_datasets"]):
            self._require_dataset(f"client_datasets[{i}]", d)
        self._require_dataset("spec.dataset", fed["spec"]["dataset"])
        self._require_dataset("spec.eval_dataset", fed["spec"]["eval_dataset"])
        s = fed["spec"]
        return self.engine.submit(JobKind.FEDERATED, fed, family=s["family"], task=s["task"], request_id=rid)

    def get_job(self, job_id: object) -> Job:
        return self.state.get_job(check_text("job_id", job_id, max_len=256))

    def list_jobs(self, states: list = (), kind: str = "", family: str = "", task: str = "",
                  page_size: int = 0, page_token: str = "") -> tuple[list[Job], str]:
        st = []
        for i, s in enumerate(states or ()):
            try:
                st.append(JobState(s))
            except ValueError:
                raise InvalidArgument(f"states[{i}]", f"unknown job state {s!r}") from None
        try:
            k = JobKind(kind) if kind else None
        except ValueError:
            raise InvalidArgument("kind", f"unknown job kind {kind!r}") from None
        family = check_id("family", family, required=False)
        task = check_id("task", task, required=False)
        jobs, cursor = self.state.list_jobs(st, k, family, task, _page_size(page_size),
                                            _decode_token(check_text("page_token", page_token, required=False)))
        return jobs, ("" if cursor is None else _encode_token(cursor))

    def cancel_job(self, job_id: object) -> Job:
        return self.engine.cancel(check_text("job_id", job_id, max_len=256))

    def watch(self, job_id: object, from_index: object = 0, is_active: Callable[[], bool] = lambda: True,
              poll_s: float = 1.0) -> Iterator[JobEvent]:
        """Events from `from_index` on; ends after the terminal state's event."""
        job_id = check_text("job_id", job_id, max_len=256)
        idx = check_int("from_index", from_index or 0, 0, 2**62)
        self.state.get_job(job_id)  # NotFound before the stream starts
        while is_active():
            events = self.state.events(job_id, idx, limit=500)
            for ev in events:
                yield ev
                idx = ev.index + 1
            job = self.state.get_job(job_id)
            if job.state.terminal and idx >= job.event_count:
                return
            if not events:
                if self.engine.stopping.is_set():
                    return
                self.engine.wait_events(job_id, idx, poll_s)

    def evaluate(self, adapter_id: str, dataset: str, base_model: str = "", limit: int = 0,
                 request_id: str = "") -> Job:
        rid = validate_request_id(request_id)
        dataset = check_id("dataset", dataset)
        self._require_dataset("dataset", dataset)
        limit = check_int("limit", limit or 0, 0, 10_000_000)
        manifest = {}
        if adapter_id:
            manifest = self._record(check_id("adapter_id", adapter_id)).manifest
        base_model = base_model or manifest.get("base_model") or ""
        check_text("base_model", base_model)
        payload = {"adapter_id": adapter_id or "", "dataset": dataset, "base_model": base_model,
                   "limit": limit or None, "max_new_tokens": 32, "max_length": 256, "batch_size": 8}
        return self.engine.submit(JobKind.EVALUATE, payload, family=manifest.get("family", ""),
                                  task=manifest.get("task", ""), request_id=rid)

    # -- datasets / adapters ---------------------------------------------------------------
    def upload_dataset(self, name: str, train: bytes, eval: bytes | None) -> dict:
        check_id("name", name)
        if not train:
            raise InvalidArgument("data", "no train split received (DATASET_SPLIT_TRAIN chunks)")
        try:
            return upload_dataset(self.store, name, train, eval or None)
        except DatasetError as exc:
            raise InvalidArgument("data", str(exc)) from None
        except ConflictError as exc:
            raise AlreadyExists(str(exc)) from None

    def _record(self, adapter_id: str) -> AdapterRecord:
        try:
            return self.registry.get(adapter_id)
        except AdapterNotFound:
            raise NotFound(f"adapter {adapter_id!r} not found") from None

    def list_adapters(self, family: str = "", task: str = "", page_size: int = 0,
                      page_token: str = "") -> tuple[list[AdapterRecord], str]:
        family = check_id("family", family, required=False)
        task = check_id("task", task, required=False)
        size = _page_size(page_size)
        start = _decode_token(check_text("page_token", page_token, required=False)) or 0
        recs = self.registry.list(family or None, task or None)
        page = recs[start:start + size]
        return page, (_encode_token(start + size) if start + size < len(recs) else "")

    def pointer_map(self, recs: list[AdapterRecord]) -> dict[str, list[str]]:
        """adapter id -> names of the pointers targeting it (over the families of `recs`)."""
        out: dict[str, list[str]] = {}
        for family in sorted({r.family for r in recs}):
            try:
                ptrs = self.registry.pointers(family)
            except ValueError:
                continue
            for name, aid in sorted(ptrs.items()):
                out.setdefault(aid, []).append(name)
        return out

    def pointers_of(self, rec: AdapterRecord) -> list[str]:
        try:
            return sorted(n for n, a in self.registry.pointers(rec.family).items() if a == rec.adapter_id)
        except ValueError:
            return []

    def get_adapter(self, adapter_id: object) -> tuple[AdapterRecord, list[LineageEntry], list[str]]:
        rec = self._record(check_id("adapter_id", adapter_id))
        return rec, self.registry.lineage(rec.adapter_id), self.pointers_of(rec)

    def export_adapter(self, adapter_id: object, fmt: str, destination: object) -> tuple[str, list[str]]:
        from lori.peft_export import export_peft_bytes

        rec = self._record(check_id("adapter_id", adapter_id))
        check_choice("format", fmt or "peft", ("peft",))
        dest = check_text("destination", destination)
        names = [n for n in rec.manifest.get("blobs", {}) if n.startswith("peft/")]
        if names:
            files = {n[5:]: read_adapter_blob(self.store, rec.adapter_id, n) for n in names}
        else:
            files = export_peft_bytes(load_adapter(self.registry, rec.adapter_id), rec.base_model)
        if dest.startswith("s3://"):
            try:
                target: Store = open_store(dest)
            except ValueError as exc:
                raise InvalidArgument("destination", str(exc)) from None
            for name, data in files.items():
                target.put_bytes(name, data)
            return dest, sorted(files)
        if "://" in dest:
            raise InvalidArgument("destination", f"{dest!r}: use a directory path or an s3:// prefix")
        path = Path(dest)
        if not path.is_absolute():
            if self.export_root is None:
                raise InvalidArgument("destination", f"{dest!r} must be an absolute path")
            path = self.export_root / path
        path = path.resolve()
        if self.export_root is not None and not path.is_relative_to(self.export_root):
            raise InvalidArgument("destination", f"{dest!r} is outside the export root {self.export_root}")
        try:
            path.mkdir(parents=True, exist_ok=True)
            for name, data in files.items():
                tmp = path / f".{name}.tmp"
                tmp.write_bytes(data)
                os.replace(tmp, path / name)
        except OSError as exc:
            raise FailedPrecondition(f"cannot write {path}: {exc}") from None
        return str(path), sorted(files)

    # -- merge / continual -----------------------------------------------------------------
    def merge(self, adapter_ids: list, weights: list, method: str = "", task: str = "",
              family: str = "", promote_to: str = "") -> AdapterRecord:
        if not adapter_ids:
            raise InvalidArgument("adapter_ids", "at least one adapter id is required")
        if len(adapter_ids) > 256:
            raise InvalidArgument("adapter_ids", "at most 256 adapters")
        ids = [check_id(f"adapter_ids[{i}]", a) for i, a in enumerate(adapter_ids)]
        if len(set(ids)) != len(ids):
            raise InvalidArgument("adapter_ids", "an adapter is listed twice")
        w = [check_float(f"weights[{i}]", x, -1e6, 1e6) for i, x in enumerate(weights or [])]
        if w and len(w) != len(ids):
            raise InvalidArgument("weights", f"{len(w)} weights for {len(ids)} adapters")
        method = check_choice("method", method or "auto", MERGE_METHODS)
        task = check_id("task", task or "merged")
        family = check_id("family", family, required=False)
        promote_to = check_id("promote_to", promote_to, required=False)
        for i, a in enumerate(ids):
            if not self.registry.store.exists(f"adapters/{a}/manifest.json"):
                raise NotFound(f"adapter {a!r} (adapter_ids[{i}]) not found")
        manifest = merge_adapters(self.registry, ids, w or None, method, task=task, family=family)
        rec = self.registry.get(manifest["adapter_id"])
        if promote_to:
            self.registry.set_pointer(rec.family, promote_to, rec.adapter_id)
        return rec

    def continual_update(self, base_adapter_id: object, spec: object, gate: dict | None,
                         promote_to: str = "", request_id: str = "") -> Job:
        rid = validate_request_id(request_id)
        base = self._record(check_id("base_adapter_id", base_adapter_id))
        spec = validate_task_spec(spec, defaults={"family": base.family, "base_model": base.base_model or ""})
        self._check_recipe(spec)
        if spec["family"] != base.family:
            raise InvalidArgument("spec.family", f"must be the base adapter's family {base.family!r}")
        if base.projection_seed is not None and spec["lori"]["projection_seed"] != base.projection_seed:
            spec["lori"]["projection_seed"] = base.projection_seed  # the base's A is the one protected
        self._require_dataset("spec.dataset", spec["dataset"])
        self._require_dataset("spec.eval_dataset", spec["eval_dataset"])
        job_spec = {"base_adapter_id": base.adapter_id, "spec": spec, "gate": validate_gate(gate),
                    "promote_to": check_id("promote_to", promote_to, required=False)}
        return self.engine.submit(JobKind.CONTINUAL, job_spec, family=spec["family"], task=spec["task"],
                                  request_id=rid)

    # -- schedules -------------------------------------------------------------------------
    def create_schedule(self, name: str, cron: str, family: str, mode: str = "merge", method: str = "",
                        spec: dict | None = None, gate: dict | None = None, pointer: str = "") -> Schedule:
        name = check_id("name", name)
        check_cron(cron)
        family = check_id("family", family)
        mode_v = ScheduleMode(check_choice("mode", mode or "merge", ("merge", "continual")))
        method = check_choice("method", method or "auto", MERGE_METHODS)
        g = validate_gate(gate)
        norm_spec = None
        if mode_v is ScheduleMode.CONTINUAL:
            norm_spec = validate_task_spec(spec, defaults={"family": family})
            if norm_spec["family"] != family:
                raise InvalidArgument("spec.family", f"must be the schedule's family {family!r}")
            self._require_dataset("spec.dataset", norm_spec["dataset"])
        elif spec:
            raise InvalidArgument("spec", "only continual schedules take a task spec")
        s = Schedule(name=name, cron=cron, family=family, mode=mode_v, method=method, spec=norm_spec,
                     gate=Gate(**g), pointer=check_id("pointer", pointer or "production"))
        return self.scheduler.create(s)

    def list_schedules(self, family: str = "") -> list[Schedule]:
        return self.state.list_schedules(check_id("family", family, required=False))

    def delete_schedule(self, name: str) -> bool:
        name = check_id("name", name)
        if not self.state.delete_schedule(name):
            raise NotFound(f"schedule {name!r} not found")
        return True

    def trigger_schedule(self, name: str) -> Job:
        return self.scheduler.trigger(check_id("name", name))
