"""The gRPC servicer: thin. Convert (serde), call a `CoordinatorService` method, map errors."""

from __future__ import annotations

import functools
import logging

import grpc

from worker.store import DatasetError, StoreError, StoreUnavailable

from . import serde
from .errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, Unavailable
from .service import CoordinatorService
from .v1 import coordinator_pb2 as pb
from .v1 import coordinator_pb2_grpc as pb_grpc
from .v1 import types_pb2 as t

log = logging.getLogger("coordinator.servicer")

_CODES = [
    (InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (DatasetError, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (Unavailable, grpc.StatusCode.UNAVAILABLE),
    (StoreUnavailable, grpc.StatusCode.UNAVAILABLE),
    (KeyError, grpc.StatusCode.NOT_FOUND),  # the store's ObjectNotFound / AdapterNotFound
    (StoreError, grpc.StatusCode.INTERNAL),
]


def _status(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    for cls, code in _CODES:
        if isinstance(exc, cls):
            return code, str(exc)
    return grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}"


def _unary(fn):
    @functools.wraps(fn)
    def wrapper(self, request, context):
        try:
            return fn(self, request, context)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a status, never a crash
            code, msg = _status(exc)
            if code is grpc.StatusCode.INTERNAL:
                log.exception("%s failed", fn.__name__)
            context.abort(code, msg)

    return wrapper


def _stream(fn):
    @functools.wraps(fn)
    def wrapper(self, request, context):
        try:
            yield from fn(self, request, context)
        except Exception as exc:  # noqa: BLE001
            code, msg = _status(exc)
            if code is grpc.StatusCode.INTERNAL:
                log.exception("%s failed", fn.__name__)
            context.abort(code, msg)

    return wrapper


def _enum(field: str, conv, value):
    try:
        return conv(value)
    except ValueError:
        raise InvalidArgument(field, f"unknown enum value {value}") from None


class CoordinatorServicer(pb_grpc.CoordinatorServicer):
    def __init__(self, service: CoordinatorService) -> None:
        self.svc = service

    # -- jobs ------------------------------------------------------------------------------
    @_unary
    def SubmitTask(self, request: pb.SubmitTaskRequest, context):
        spec = serde.task_spec(request.spec, request.HasField("spec"))
        return serde.job_pb(self.svc.submit_task(spec, request.request_id))

    @_unary
    def SubmitFederatedTask(self, request, context):
        return serde.job_pb(self.svc.submit_federated(serde.federated_request(request)))

    @_unary
    def GetJob(self, request, context):
        return serde.job_pb(self.svc.get_job(request.job_id))

    @_unary
    def ListJobs(self, request, context):
        states = [_enum(f"states[{i}]", serde.state_from_pb, s) for i, s in enumerate(request.states)]
        kind = _enum("kind", serde.kind_from_pb, request.kind)
        jobs, token = self.svc.list_jobs(states, kind, request.family, request.task, request.page_size,
                                         request.page_token)
        return pb.ListJobsResponse(jobs=[serde.job_pb(j) for j in jobs], next_page_token=token)

    @_unary
    def CancelJob(self, request, context):
        return serde.job_pb(self.svc.cancel_job(request.job_id))

    @_stream
    def WatchJob(self, request, context):
        for ev in self.svc.watch(request.job_id, request.from_index, is_active=context.is_active):
            yield serde.event_pb(ev)

    @_unary
    def Evaluate(self, request, context):
        return serde.job_pb(self.svc.evaluate(request.adapter_id, request.dataset, request.base_model,
                                              request.limit, request.request_id))

    # -- datasets / adapters ---------------------------------------------------------------
    @_unary
    def UploadDataset(self, request_iterator, context):
        name, parts, size = "", {"train": [], "eval": []}, 0
        for i, msg in enumerate(request_iterator):
            if msg.name:
                if name and msg.name != name:
                    raise InvalidArgument("name", f"message {i} renames the dataset {name!r} to {msg.name!r}")
                name = msg.name
            split = serde.split_from_pb(msg.split)
            if not split:
                raise InvalidArgument("split", f"unknown split {msg.split} in message {i}")
            size += len(msg.data)
            if size > self.svc.max_dataset_bytes:
                raise InvalidArgument("data", f"dataset larger than {self.svc.max_dataset_bytes} bytes")
            parts[split].append(msg.data)
        if not name:
            raise InvalidArgument("name", "is required (in the first message)")
        manifest = self.svc.upload_dataset(name, b"".join(parts["train"]), b"".join(parts["eval"]) or None)
        return serde.dataset_pb(manifest)

    @_unary
    def ListAdapters(self, request, context):
        recs, token = self.svc.list_adapters(request.family, request.task, request.page_size, request.page_token)
        ptrs = self.svc.pointer_map(recs)
        return pb.ListAdaptersResponse(adapters=[serde.adapter_pb(r, pointers=ptrs.get(r.adapter_id, []))
                                                 for r in recs], next_page_token=token)

    @_unary
    def GetAdapter(self, request, context):
        rec, lineage, pointers = self.svc.get_adapter(request.adapter_id)
        return serde.adapter_pb(rec, lineage, pointers)

    @_unary
    def ExportAdapter(self, request, context):
        dest, files = self.svc.export_adapter(request.adapter_id, request.format, request.destination)
        return pb.ExportAdapterResponse(destination=dest, files=files)

    # -- merge / continual -----------------------------------------------------------------
    @_unary
    def Merge(self, request, context):
        rec = self.svc.merge(list(request.adapter_ids), list(request.weights), request.method, request.task,
                             request.family, request.promote_to)
        return serde.adapter_pb(rec, pointers=self.svc.pointers_of(rec))

    @_unary
    def ContinualUpdate(self, request, context):
        spec = serde.task_spec(request.spec, request.HasField("spec"))
        return serde.job_pb(self.svc.continual_update(request.base_adapter_id, spec,
                                                      serde.msg_to_dict(request.gate), request.promote_to,
                                                      request.request_id))

    # -- schedules -------------------------------------------------------------------------
    @_unary
    def CreateSchedule(self, request, context):
        if request.mode not in (0, 1, 2):
            raise InvalidArgument("mode", f"unknown schedule mode {request.mode}")
        s = self.svc.create_schedule(request.name, request.cron, request.family, serde.mode_from_pb(request.mode),
                                     request.method, serde.task_spec(request.spec, request.HasField("spec")),
                                     serde.msg_to_dict(request.gate), request.pointer)
        return serde.schedule_pb(s)

    @_unary
    def ListSchedules(self, request, context):
        return pb.ListSchedulesResponse(schedules=[serde.schedule_pb(s)
                                                   for s in self.svc.list_schedules(request.family)])

    @_unary
    def DeleteSchedule(self, request, context):
        return pb.DeleteScheduleResponse(deleted=self.svc.delete_schedule(request.name))

    @_unary
    def TriggerSchedule(self, request, context):
        return serde.job_pb(self.svc.trigger_schedule(request.name))


__all__ = ["CoordinatorServicer", "t"]
