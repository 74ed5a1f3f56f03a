"""The job engine: durable job lifecycle on top of a `StateStore` and an `Executor`.

Lifecycle: QUEUED -> RUNNING -> SUCCEEDED | FAILED | CANCELLED, every transition an event in the
job's log (the log `WatchJob` streams). Each running job is a thread executing the job kind's
*program* (`coordinator.programs`); a program's sub-steps (`JobContext.child`, `JobContext.memo`)
record their results in the state store, so a job resumed after a coordinator restart skips
finished steps, re-submits the running one under the same execution id (the executor resumes it
from its checkpoints and publishes under the same adapter id) and reaches its terminal state
exactly once.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
import uuid
from collections.abc import Callable

from worker.store import Registry, Store

from .domain import Job, JobKind, JobState, now
from .errors import CoordinatorError, FailedPrecondition
from .executors.base import ExecResult, Executor
from .state.base import StateStore

log = logging.getLogger("coordinator.engine")


class Cancelled(Exception):
    """The job was cancelled."""


class Stopping(Exception):
    """The engine is shutting down; the job stays RUNNING and resumes at the next start."""


class JobFailed(CoordinatorError):
    """A sub-step failed; the message becomes the job's error."""


def new_job_id(kind: JobKind) -> str:
    return f"{kind.value}-{time.strftime('%Y%m%d', time.gmtime())}-{uuid.uuid4().hex[:12]}"


def result_to_dict(r: ExecResult) -> dict:
    return {"adapter_id": r.adapter_id, "metrics": dict(r.metrics), "timings": dict(r.timings),
            "extra": dict(r.extra)}


class JobContext:
    """What a program sees: its job, the engine's services and memoised sub-steps."""

    def __init__(self, engine: Engine, job: Job) -> None:
        self.engine, self.job = engine, job
        self.state, self.registry, self.store = engine.state, engine.registry, engine.store
        self.current_exec: str | None = None

    @property
    def spec(self) -> dict:
        return self.job.spec

    def log(self, message: str) -> None:
        self.engine.append_event(self.job.job_id, "log", message=message)

    def progress(self, p: dict) -> None:
        self.engine.append_event(self.job.job_id, "progress", progress=p, job_fields={"progress": p})

    def check(self) -> None:
        if self.engine.stopping.is_set():
            raise Stopping()
        if self.job.job_id in self.engine.cancelling:
            raise Cancelled()

    def memo(self, step: str, fn: Callable[[], dict]) -> dict:
        """Run `fn` once per job (its result recorded under `step`)."""
        done = self.state.get_step(self.job.job_id, step)
        if done is not None:
            return done
        self.check()
        result = fn()
        self.state.put_step(self.job.job_id, step, result)
        return result

    def child(self, step: str, kind: str, payload: dict, exec_id: str | None = None) -> dict:
        """Run one execution to completion (memoised); its progress becomes the job's progress."""
        done = self.state.get_step(self.job.job_id, step)
        if done is not None:
            return done
        exec_id = exec_id or f"{self.job.job_id}.{step}"
        self.check()
        ex = self.engine.executor
        ex.submit(exec_id, kind, payload)
        self.current_exec = exec_id
        try:
            while True:
                try:
                    self.check()
                except Cancelled:
                    ex.cancel(exec_id)
                    raise
                st = ex.poll(exec_id)
                for ev in st.events:
                    self.progress({**ev, "step_name": step})
                if st.state == "unknown":
                    ex.submit(exec_id, kind, payload)
                elif st.state == "succeeded":
                    result = result_to_dict(st.result or ExecResult(None))
                    self.state.put_step(self.job.job_id, step, result)
                    return result
                elif st.state == "failed":
                    raise JobFailed(f"{step}: {st.error or 'failed'}")
                elif st.state == "cancelled":
                    raise Cancelled()
                self.engine.stopping.wait(self.engine.poll_s)
        finally:
            self.current_exec = None


class Engine:
    """Owns job threads; thread-safe API used by the handlers."""

    def __init__(self, state: StateStore, executor: Executor, store: Store, *, max_active: int = 8,
                 poll_s: float = 0.1, clock: Callable[[], float] = time.time) -> None:
        self.state, self.executor, self.store = state, executor, store
        self.registry = Registry(store)
        self.max_active, self.poll_s, self.clock = max_active, poll_s, clock
        self.stopping = threading.Event()
        self.cancelling: set[str] = set()
        self._queue: collections.deque[str] = collections.deque()
        self._active: dict[str, threading.Thread] = {}
        self._cv = threading.Condition()
        self._events_cv = threading.Condition()
        self._event_counts: dict[str, int] = {}
        self._dispatcher: threading.Thread | None = None
        from .programs import PROGRAMS

        self.programs = PROGRAMS

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        """Resume every non-terminal job (queued ones run; running ones re-attach / resume)."""
        for job in self.state.active_jobs():
            if job.cancel_requested:
                self.cancelling.add(job.job_id)
            if job.state is JobState.RUNNING:
                self.append_event(job.job_id, "log", message="coordinator restarted: resuming job")
            self._queue.append(job.job_id)
        self._dispatcher = threading.Thread(target=self._dispatch, daemon=True, name="engine-dispatch")
        self._dispatcher.start()

    def stop(self, timeout: float = 5.0) -> None:
        self.stopping.set()
        with self._cv:
            self._cv.notify_all()
        with self._events_cv:
            self._events_cv.notify_all()
        deadline = time.monotonic() + timeout
        for t in list(self._active.values()):
            t.join(max(0.0, deadline - time.monotonic()))
        if self._dispatcher is not None:
            self._dispatcher.join(1.0)

    def _dispatch(self) -> None:
        while not self.stopping.is_set():
            with self._cv:
                while not self.stopping.is_set() and (not self._queue or len(self._active) >= self.max_active):
                    self._cv.wait(1.0)
                if self.stopping.is_set():
                    return
                job_id = self._queue.popleft()
                t = threading.Thread(target=self._run, args=(job_id,), daemon=True, name=f"job-{job_id}")
                self._active[job_id] = t
            t.start()

    # -- events ----------------------------------------------------------------------------
    def append_event(self, job_id: str, type: str, **kw):
        ev = self.state.append_event(job_id, type, **kw)
        with self._events_cv:
            self._event_counts[job_id] = ev.index + 1
            self._events_cv.notify_all()
        return ev

    def event_count(self, job_id: str) -> int:
        """A job's number of events (in memory once known; watchers wait on it without the database)."""
        n = self._event_counts.get(job_id)
        if n is None:
            n = self.state.get_job(job_id).event_count
            with self._events_cv:
                n = self._event_counts.setdefault(job_id, n)
        return n

    def wait_events(self, job_id: str, known: int, timeout: float) -> None:
        """Block until job `job_id` has more than `known` events, or `timeout` passes."""
        deadline = time.monotonic() + timeout
        self.event_count(job_id)
        with self._events_cv:
            while not self.stopping.is_set():
                if self._event_counts.get(job_id, 0) > known:
                    return
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._events_cv.wait(min(left, 1.0))

    # -- API -------------------------------------------------------------------------------
    def submit(self, kind: JobKind, spec: dict, *, family: str = "", task: str = "", request_id: str = "",
               job_id: str | None = None) -> Job:
        """Create a QUEUED job (or return the one created earlier with this `request_id`)."""
        if self.stopping.is_set():
            raise FailedPrecondition("the coordinator is shutting down")
        job = Job(job_id=job_id or new_job_id(kind), kind=kind, spec=spec, family=family, task=task,
                  request_id=request_id)
        stored, created = self.state.create_job(job, initial_event=True)
        if not created:
            return stored
        with self._events_cv:
            self._event_counts[job.job_id] = stored.event_count
        with self._cv:
            self._queue.append(job.job_id)
            self._cv.notify()
        return stored

    def cancel(self, job_id: str, wait_s: float = 2.0) -> Job:
        job = self.state.get_job(job_id)  # NotFound
        if job.state.terminal:
            return job
        with self._cv:
            queued = job_id in self._queue and job_id not in self._active
            if queued:
                self._queue.remove(job_id)
        if queued:
            return self._finish(job_id, JobState.CANCELLED, error="cancelled before it started")
        self.state.update_job(job_id, cancel_requested=True)
        self.cancelling.add(job_id)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            job = self.state.get_job(job_id)
            if job.state.terminal:
                return job
            time.sleep(0.02)
        return self.state.get_job(job_id)

    # -- running ---------------------------------------------------------------------------
    def _finish(self, job_id: str, state: JobState, **fields) -> Job:
        job = self.state.get_job(job_id)
        if job.state.terminal:  # exactly one terminal transition
            return job
        self.append_event(job_id, "state", state=state, message=fields.get("error", ""),
                          job_fields={"state": state, "finished_at": now(), **fields})
        self.cancelling.discard(job_id)
        return self.state.get_job(job_id)

    def _run(self, job_id: str) -> None:
        try:
            job = self.state.get_job(job_id)
            if job.state.terminal:
                return
            if job_id in self.cancelling:
                self._finish(job_id, JobState.CANCELLED, error="cancelled")
                return
            self.append_event(job_id, "state", state=JobState.RUNNING,
                              job_fields={"state": JobState.RUNNING, "started_at": job.started_at or now(),
                                          "attempts": job.attempts + 1})
            ctx = JobContext(self, self.state.get_job(job_id))
            out = self.programs[job.kind](ctx)
            self._finish(job_id, JobState.SUCCEEDED, adapter_id=out.get("adapter_id") or "",
                         metrics={k: float(v) for k, v in (out.get("metrics") or {}).items()
                                  if isinstance(v, (int, float)) and not isinstance(v, bool)},
                         result=out.get("result") or {})
        except Stopping:
            pass
        except Cancelled:
            self._finish(job_id, JobState.CANCELLED, error="cancelled")
        except Exception as exc:  # noqa: BLE001 - any failure ends the job, never the engine
            if not isinstance(exc, CoordinatorError):
                log.exception("job %s failed", job_id)
            try:
                self._finish(job_id, JobState.FAILED, error=f"{type(exc).__name__}: {exc}"[:4000])
            except Exception:  # noqa: BLE001
                log.exception("could not record the failure of job %s", job_id)
        finally:
            with self._cv:
                self._active.pop(job_id, None)
                self._cv.notify()
