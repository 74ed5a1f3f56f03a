"""Ray at the edge: JobRunner submits jobs as Ray tasks; a small actor per job carries progress.

    runner = JobRunner(store_url, ray_address=None)   # None: attach to a running Ray or start a local one
    runner.submit("job-1", JobSpec(...))              # non-blocking
    status = runner.poll("job-1")                     # state, events since the previous poll, result, error
    runner.cancel("job-1")                            # cooperative stop + ray.cancel: frees the resources
    runner.wait("job-1", timeout=600, on_event=print)

Mechanism (docs/worker.md): each job gets a ``JobChannel`` actor (num_cpus=0). The job, running
in a Ray task (``num_cpus``/``num_gpus`` from the spec, ``max_retries`` for worker-process deaths,
application errors not retried), pushes its progress events to the channel (batched, at most
every 0.25 s); ``poll`` drains them. Cancellation sets a flag on the channel that the recipe
checks between optimizer steps (``should_stop``), and ``ray.cancel`` interrupts the task.
A retried task finds the job's newest checkpoint in the store and resumes from it.

Federated tasks run their round manager as a Ray task of its own (num_cpus=0) that launches one
Ray task per client and round (``RayLauncher``), pinned by custom resources or node affinity.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError, TaskCancelledError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from worker.federated import ClientOutcome, ClientTask, run_client, run_federated
from worker.jobs import JobContext, run_job
from worker.recipe import Cancelled, RecipeConfig
from worker.records import JobResult, JobStatus
from worker.spec import FederatedSpec, JobSpec
from worker.store import open_store

__all__ = ["JobChannel", "JobRunner", "RayLauncher", "ensure_ray"]

FLUSH_EVERY_S = 0.25
STOP_CHECK_EVERY_S = 0.5


@ray.remote(num_cpus=0)
class JobChannel:
    """Per-job mailbox: progress events (job -> caller), a cancel flag (caller -> job), attempts."""

    def __init__(self) -> None:
        self.events: list[dict] = []
        self.cancelled = False
        self.attempts = 0

    def push(self, events: list[dict]) -> None:
        self.events.extend(events)

    def drain(self) -> list[dict]:
        out, self.events = self.events, []
        return out

    def cancel(self) -> None:
        self.cancelled = True

    def is_cancelled(self) -> bool:
        return self.cancelled

    def start_attempt(self) -> int:
        self.attempts += 1
        return self.attempts


class _ChannelContext(JobContext):
    """JobContext that batches events to a JobChannel and polls its cancel flag (throttled)."""

    def __init__(self, channel, job_id: str, attempt: int) -> None:
        super().__init__(emit=self._emit, should_stop=self._should_stop, attempt=attempt)
        self.channel, self.job_id = channel, job_id
        self._buffer: list[dict] = []
        self._last_flush = 0.0
        self._last_check = 0.0
        self._stop = False
        self._node_ip = ray.util.get_node_ip_address()

    def _emit(self, event: dict) -> None:
        event = {**event, "job_id": self.job_id, "time": time.time(), "attempt": self.attempt}
        if event.get("phase") == "start":
            event["node_ip"] = self._node_ip
        self._buffer.append(event)
        now = time.monotonic()
        if now - self._last_flush >= FLUSH_EVERY_S or event.get("status") in ("start", "end"):
            self.flush()

    def flush(self, wait: bool = False) -> None:
        if self._buffer:
            ref = self.channel.push.remote(self._buffer)
            self._buffer = []
            if wait:
                ray.get(ref)
        self._last_flush = time.monotonic()

    def _should_stop(self) -> bool:
        now = time.monotonic()
        if not self._stop and now - self._last_check >= STOP_CHECK_EVERY_S:
            self._last_check = now
            self._stop = bool(ray.get(self.channel.is_cancelled.remote()))
        return self._stop


def _set_threads() -> None:
    import torch

    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 0)
    if cpus >= 1:
        torch.set_num_threads(int(cpus))


def _job_entry(store_url: str, job_id: str, spec: JobSpec, channel) -> JobResult:
    _set_threads()
    ctx = _ChannelContext(channel, job_id, ray.get(channel.start_attempt.remote()))
    try:
        return run_job(open_store(store_url), job_id, spec, ctx)
    finally:
        ctx.flush(wait=True)


def _client_entry(store_url: str, cfg: RecipeConfig, task: ClientTask, client_fn) -> dict:
    _set_threads()
    report = run_client(open_store(store_url), cfg, task, client_fn)
    ctx = ray.get_runtime_context()
    return {**report, "node_ip": ray.util.get_node_ip_address(), "node_id": ctx.get_node_id()}


_job_remote = ray.remote(_job_entry)
_client_remote = ray.remote(_client_entry)


class RayLauncher:
    """Launches a round's clients as Ray tasks and waits up to the deadline (late ones cancelled)."""

    def __init__(self, store_url: str, fed: FederatedSpec) -> None:
        self.store_url, self.fed = store_url, fed

    def _options(self, k: int) -> dict:
        fed = self.fed
        opts: dict = {"num_cpus": fed.num_cpus, "num_gpus": fed.num_gpus, "max_retries": 0,
                      "name": f"lori-client-{k}"}
        if fed.client_resources and fed.client_resources[k]:
            opts["resources"] = dict(fed.client_resources[k])
        if fed.client_node_ids and fed.client_node_ids[k]:
            opts["scheduling_strategy"] = NodeAffinitySchedulingStrategy(fed.client_node_ids[k], soft=False)
        return opts

    def run_round(self, tasks: list[ClientTask], deadline_s: float) -> list[ClientOutcome]:
        refs = {
            _client_remote.options(**self._options(t.client)).remote(self.store_url, self.fed.recipe, t,
                                                                      self.fed.client_fn): t.client
            for t in tasks
        }
        ready, pending = ray.wait(list(refs), num_returns=len(refs), timeout=deadline_s)
        out = []
        for ref in ready:
            try:
                out.append(ClientOutcome(refs[ref], "done", ray.get(ref)))
            except Exception as exc:  # noqa: BLE001 - a failed client is recorded, not fatal
                out.append(ClientOutcome(refs[ref], "failed", error=_error_text(exc)))
        for ref in pending:
            ray.cancel(ref, force=True)
            out.append(ClientOutcome(refs[ref], "late", error=f"not done within the {deadline_s:g} s deadline"))
        return sorted(out, key=lambda o: o.client)


def _federated_entry(store_url: str, job_id: str, fed: FederatedSpec, channel) -> JobResult:
    ctx = _ChannelContext(channel, job_id, ray.get(channel.start_attempt.remote()))
    try:
        return run_federated(open_store(store_url), job_id, fed, RayLauncher(store_url, fed), ctx)
    finally:
        ctx.flush(wait=True)


_federated_remote = ray.remote(_federated_entry)


def _error_text(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None)
    if isinstance(exc, RayTaskError) and cause is not None:
        return f"{type(cause).__name__}: {cause}"
    return f"{type(exc).__name__}: {exc}"


def ensure_ray(address: str | None = None, *, num_cpus: int | None = None,
               object_store_memory: int = 150 * 1024 * 1024) -> bool:
    """Connect to Ray unless already connected; returns True when this call started/attached it.

    ``address`` None: attach to a cluster named by RAY_ADDRESS, else start a local Ray on
    127.0.0.1 (``num_cpus`` default: all, dashboard off, small object store).
    """
    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address is None and not os.environ.get("RAY_ADDRESS"):
        ray.init(num_cpus=num_cpus, object_store_memory=object_store_memory, include_dashboard=False,
                 _node_ip_address="127.0.0.1", log_to_driver=False, namespace="lori")
    else:
        ray.init(address=address, log_to_driver=False, namespace="lori")
    return True


class _Handle:
    def __init__(self, ref, channel, spec) -> None:
        self.ref, self.channel, self.spec = ref, channel, spec
        self.state = "queued"
        self.result: JobResult | None = None
        self.error: str | None = None
        self.cancel_requested = False


class JobRunner:
    """Submit / poll / cancel training and federated jobs on Ray (thread-safe)."""

    def __init__(self, store_url: str, ray_address: str | None = None, *, num_cpus: int | None = None) -> None:
        self.store_url = str(store_url)
        self._owns_ray = ensure_ray(ray_address, num_cpus=num_cpus)
        self._jobs: dict[str, _Handle] = {}
        self._lock = threading.Lock()

    def submit(self, job_id: str, spec: JobSpec | FederatedSpec) -> None:
        """Start ``job_id`` (non-blocking); a job resumes from its checkpoints / rounds in the store."""
        from worker.publish import adapter_id_for

        adapter_id_for(job_id)  # validates the id
        with self._lock:
            old = self._jobs.get(job_id)
            if old is not None and old.state in ("queued", "running"):
                raise ValueError(f"job {job_id!r} is already {old.state}")
            channel = JobChannel.remote()
            if isinstance(spec, JobSpec):
                ref = _job_remote.options(
                    num_cpus=spec.num_cpus, num_gpus=spec.num_gpus, max_retries=spec.max_retries,
                    retry_exceptions=False, name=f"lori-job-{job_id}",
                ).remote(self.store_url, job_id, spec, channel)
            elif isinstance(spec, FederatedSpec):
                ref = _federated_remote.options(
                    num_cpus=0, max_retries=spec.max_retries, retry_exceptions=False, name=f"lori-federated-{job_id}",
                ).remote(self.store_url, job_id, spec, channel)
            else:
                raise TypeError(f"spec must be a JobSpec or FederatedSpec, got {type(spec).__name__}")
            self._jobs[job_id] = _Handle(ref, channel, spec)

    def _handle(self, job_id: str) -> _Handle:
        try:
            return self._jobs[job_id]
        except KeyError:
            raise KeyError(f"unknown job {job_id!r} (not submitted to this runner)") from None

    def _drain(self, h: _Handle) -> list[dict]:
        try:
            return ray.get(h.channel.drain.remote(), timeout=30)
        except (RayActorError, GetTimeoutError):
            return []

    def poll(self, job_id: str) -> JobStatus:
        """State, progress events since the previous poll, result or error."""
        with self._lock:
            h = self._handle(job_id)
            if h.state in ("queued", "running"):
                ready, _ = ray.wait([h.ref], timeout=0)
                events = self._drain(h)
                if ready:
                    self._finish(h)
                    ray.kill(h.channel)
                elif h.state == "queued" and events:
                    h.state = "running"
            else:
                events = []
            return JobStatus(job_id, h.state, events, h.result, h.error)

    def _finish(self, h: _Handle) -> None:
        try:
            h.result = ray.get(h.ref)
            h.state = "succeeded"
        except TaskCancelledError:
            h.state, h.error = "cancelled", "cancelled"
        except RayTaskError as exc:
            if h.cancel_requested or isinstance(getattr(exc, "cause", None), (Cancelled, KeyboardInterrupt)):
                h.state, h.error = "cancelled", "cancelled"
            else:
                h.state, h.error = "failed", _error_text(exc)
        except Exception as exc:  # noqa: BLE001 - worker died beyond its retries, actor lost, ...
            h.state = "cancelled" if h.cancel_requested else "failed"
            h.error = "cancelled" if h.cancel_requested else _error_text(exc)

    def cancel(self, job_id: str) -> None:
        """Stop the job: set its cancel flag (checked between steps) and cancel its Ray task(s)."""
        with self._lock:
            h = self._handle(job_id)
            if h.state not in ("queued", "running"):
                return
            h.cancel_requested = True
            try:
                ray.get(h.channel.cancel.remote(), timeout=10)
            except (RayActorError, GetTimeoutError):
                pass
            ray.cancel(h.ref, force=False, recursive=True)

    def wait(self, job_id: str, timeout: float | None = None, on_event: Callable[[dict], None] | None = None,
             interval: float = 0.1) -> JobStatus:
        """Poll until the job is done (or ``timeout``); returns the last status with every event."""
        deadline = None if timeout is None else time.monotonic() + timeout
        events: list[dict] = []
        while True:
            status = self.poll(job_id)
            for e in status.events:
                events.append(e)
                if on_event:
                    on_event(e)
            if status.done:
                return JobStatus(job_id, status.state, events, status.result, status.error)
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id!r} still {status.state} after {timeout} s")
            time.sleep(interval)

    def jobs(self) -> dict[str, str]:
        """job id -> last known state."""
        with self._lock:
            return {j: h.state for j, h in self._jobs.items()}

    def shutdown(self) -> None:
        """Cancel running jobs; disconnect from Ray if this runner started it."""
        for job_id, h in list(self._jobs.items()):
            if h.state in ("queued", "running"):
                self.cancel(job_id)
        self._jobs.clear()
        if self._owns_ray and ray.is_initialized():
            ray.shutdown()
