"""API benchmark: SubmitTask latency/throughput with 200 concurrent clients, 100 WatchJob streams.

    python bench/api.py [--clients 200] [--rate 600] [--duration 5] [--watchers 100] [--json]

Starts a coordinator (`lori serve --executor simulated`: training is faked, so this measures the
API, the state store and the engine, not training) on a loopback port, then (the simulated jobs
run inside the coordinator process, unlike real ones on Ray; `--max-active` bounds them):

1. `--clients` asyncio clients submit open-loop at `--rate` submissions/s in total for
   `--duration` s (each client sends every clients/rate s; a late client sends at once);
   latency is per call. Afterwards every acknowledged job id is looked up with ListJobs:
   `lost` = acknowledged but missing (goal: 0), `errors` = failed calls.
2. (run first) `--watchers` concurrent WatchJob streams follow fresh jobs to completion: each
   must see a contiguous event log ending in SUCCEEDED.

Goals: submit_p99_ms < 20, submits_per_s >= 500, lost == 0. Prints a table; with --json one JSON
object on the last line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TOKEN = "bench-token"
MD = (("authorization", f"Bearer {TOKEN}"),)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def start_server(tmp: Path, port: int, max_active: int = 16, workers: int = 400,
                 sim_step_s: float = 0.01) -> subprocess.Popen:
    cfg = tmp / "bench.yaml"
    cfg.write_text(f"executor: simulated\nsim_steps: 3\nsim_step_s: {sim_step_s}\nmax_active_jobs: {max_active}\n"
                   f"max_workers: {workers}\nstore_url: {tmp / 'store'}\ndb: {tmp / 'state.db'}\n")
    env = {**os.environ, "LORI_AUTH_TOKENS": TOKEN, "PYTHONPATH": str(ROOT)}
    log = open(tmp / "server.log", "wb")
    return subprocess.Popen([sys.executable, "-m", "coordinator.cli", "serve", "--config", str(cfg),
                             "--port", str(port)], env=env, stdout=log, stderr=log, cwd=ROOT)


async def wait_ready(address: str, timeout: float = 60.0) -> None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout
    async with grpc.aio.insecure_channel(address) as ch:
        while time.monotonic() < deadline:
            try:
                r = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=1)
                if r.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                await asyncio.sleep(0.2)
    raise TimeoutError("coordinator did not become healthy")


def spec(i: int):
    from coordinator.v1 import types_pb2 as t

    return t.TaskSpec(base_model="tiny-model", task="bench", family="bench", dataset="bench",
                      lori=t.LoriParams(rank=4), training=t.TrainingParams(dense_steps=1, sparse_steps=1))


async def run(args) -> dict:
    import grpc

    from coordinator.v1 import coordinator_pb2 as pb
    from coordinator.v1 import coordinator_pb2_grpc
    from coordinator.v1 import types_pb2 as t

    address = args.address
    channels = [grpc.aio.insecure_channel(address) for _ in range(args.channels)]
    stubs = [coordinator_pb2_grpc.CoordinatorStub(c) for c in channels]
    rows = "".join(json.dumps({"prompt": f"{i}", "response": f"{i}"}) + "\n" for i in range(4)).encode()
    try:
        await stubs[0].UploadDataset(iter([pb.UploadDatasetRequest(name="bench", data=rows)]), metadata=MD)
    except grpc.RpcError as exc:
        if exc.code() != grpc.StatusCode.ALREADY_EXISTS:
            raise
    req = pb.SubmitTaskRequest(spec=spec(0))
    for _ in range(20):  # warm-up
        await stubs[0].SubmitTask(req, metadata=MD)

    # 100 concurrent WatchJob streams on fresh jobs.
    watch_ok, first_event_ms = 0, []
    if args.watchers:
        jobs = [await stubs[i % len(stubs)].SubmitTask(req, metadata=MD) for i in range(args.watchers)]

        async def watch(i: int, job_id: str) -> bool:
            start = time.perf_counter()
            idx, first = 0, True
            async for ev in stubs[i % len(stubs)].WatchJob(pb.WatchJobRequest(job_id=job_id), metadata=MD,
                                                           timeout=args.watch_timeout):
                if first:
                    first_event_ms.append((time.perf_counter() - start) * 1000)
                    first = False
                if ev.index != idx:
                    return False
                idx += 1
                last = ev
            return last.type == "state" and last.state == t.JOB_STATE_SUCCEEDED

        results = await asyncio.gather(*(watch(i, j.job_id) for i, j in enumerate(jobs)), return_exceptions=True)
        watch_ok = sum(r is True for r in results)
        failures = [repr(r)[:200] for r in results if r is not True]
        if failures:
            print(f"watch failures: {len(failures)}, e.g. {failures[0]}", file=sys.stderr)
    latencies: list[float] = []
    acked: list[str] = []
    errors = 0
    interval = args.clients / args.rate
    t0 = time.perf_counter() + 0.2
    end = t0 + args.duration

    async def client(i: int) -> None:
        nonlocal errors
        stub = stubs[i % len(stubs)]
        k = 0
        while True:
            due = t0 + (i / args.rate) + k * interval
            if due >= end:
                return
            now = time.perf_counter()
            if due > now:
                await asyncio.sleep(due - now)
            start = time.perf_counter()
            try:
                job = await stub.SubmitTask(req, metadata=MD, timeout=30)
                latencies.append((time.perf_counter() - start) * 1000)
                acked.append(job.job_id)
            except grpc.RpcError:
                errors += 1
            k += 1

    wall0 = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(args.clients)))
    wall = time.perf_counter() - max(wall0, t0)

    found: set[str] = set()
    token = ""
    while True:
        resp = await stubs[0].ListJobs(pb.ListJobsRequest(page_size=1000, page_token=token), metadata=MD)
        found.update(j.job_id for j in resp.jobs)
        token = resp.next_page_token
        if not token:
            break
    lost = len(set(acked) - found)

    for c in channels:
        await c.close()
    return {
        "clients": args.clients, "target_rate": args.rate, "duration_s": args.duration,
        "submitted": len(acked) + errors, "acked": len(acked), "errors": errors, "lost": lost,
        "submit_p50_ms": round(_pct(latencies, 0.50), 3), "submit_p99_ms": round(_pct(latencies, 0.99), 3),
        "submit_max_ms": round(max(latencies, default=float("nan")), 3),
        "submits_per_s": round(len(acked) / wall, 1) if wall > 0 else 0.0,
        "watch_streams": args.watchers, "watch_streams_ok": watch_ok,
        "watch_first_event_p50_ms": round(_pct(first_event_ms, 0.5), 3),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=200)
    p.add_argument("--rate", type=float, default=600.0, help="target submissions/s over all clients")
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--watchers", type=int, default=100)
    p.add_argument("--watch-timeout", type=float, default=120.0)
    p.add_argument("--channels", type=int, default=8, help="client HTTP/2 connections shared by the clients")
    p.add_argument("--address", default=None, help="use a running coordinator (token: bench-token)")
    p.add_argument("--max-active", type=int, default=2,
                   help="the server's max_active_jobs (simulated jobs run inside the coordinator process)")
    p.add_argument("--server-workers", type=int, default=400, help="the server's gRPC thread pool size")
    p.add_argument("--sim-step-s", type=float, default=0.01,
                   help="seconds per simulated training step (larger: fewer fake jobs use the coordinator's CPU)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    proc = None
    with tempfile.TemporaryDirectory(prefix="lori-bench-") as tmp:
        if args.address is None:
            port = _free_port()
            args.address = f"127.0.0.1:{port}"
            proc = start_server(Path(tmp), port, args.max_active, args.server_workers, args.sim_step_s)
        try:
            asyncio.run(wait_ready(args.address))
            res = asyncio.run(run(args))
        finally:
            if proc is not None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
    goals = {"submit_p99_ms": "< 20", "submits_per_s": ">= 500", "lost": "== 0"}
    print(f"{'metric':28s} {'value':>12s}  goal")
    for k, v in res.items():
        print(f"{k:28s} {v!s:>12s}  {goals.get(k, '')}")
    if args.json:
        print(json.dumps(res, sort_keys=True))
    return 0 if res["lost"] == 0 and res["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
