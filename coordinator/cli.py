"""`lori`: the coordinator's command line (a gRPC client, plus `serve`).

    lori serve [--config FILE] [--host H] [--port 50051] [--store URL] [--db PATH] [--ray-address ADDR]
    lori dataset upload NAME --train FILE [--eval FILE]
    lori submit SPEC.yaml|json [--watch]          (a federated spec has client_datasets or num_clients)
    lori watch JOB [--from N]
    lori jobs [--state S] [--kind K] [--family F] [--task T] [--limit N]
    lori adapters [ADAPTER] [--family F] [--task T]
    lori merge ID ID ... [--weights 0.5,0.5] [--method auto|sum_b|concat] [--task NAME] [--promote-to P]
    lori continual BASE_ID SPEC.yaml [--gate-max-drop X] [--promote-to P] [--watch]
    lori evaluate ADAPTER --dataset NAME [--watch]
    lori export ADAPTER --to DIR|s3://bucket/prefix
    lori schedule add NAME --cron "0 2 * * *" --family F [--mode merge|continual] [--spec FILE] [--gate-max-drop X]
    lori schedule list|delete NAME|trigger NAME

Client options on every command: --server (LORI_SERVER), --token (LORI_TOKEN), --tls-ca FILE, --json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

DEFAULT_SERVER = "127.0.0.1:50051"


# -- connection ----------------------------------------------------------------------------
class Client:
    def __init__(self, args: argparse.Namespace) -> None:
        import grpc

        from .v1 import coordinator_pb2_grpc

        self.server = args.server or os.environ.get("LORI_SERVER") or DEFAULT_SERVER
        token = args.token or os.environ.get("LORI_TOKEN") or ""
        self.metadata = (("authorization", f"Bearer {token}"),) if token else ()
        ca = args.tls_ca or os.environ.get("LORI_TLS_CA")
        if ca:
            creds = grpc.ssl_channel_credentials(Path(ca).read_bytes())
            self.channel = grpc.secure_channel(self.server, creds)
        else:
            self.channel = grpc.insecure_channel(self.server)
        self.stub = coordinator_pb2_grpc.CoordinatorStub(self.channel)
        self.timeout = args.timeout

    def call(self, name: str, request, **kw):
        return getattr(self.stub, name)(request, metadata=self.metadata, timeout=kw.pop("timeout", self.timeout), **kw)

    def stream(self, name: str, request):
        return getattr(self.stub, name)(request, metadata=self.metadata)


# -- output --------------------------------------------------------------------------------
def to_dict(msg) -> dict:
    from google.protobuf.json_format import MessageToDict

    return MessageToDict(msg, preserving_proto_field_name=True)


def table(rows: list[dict], cols: list[str]) -> str:
    if not rows:
        return "(none)"
    cells = [[str(r.get(c, "")) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    line = lambda vals: "  ".join(v.ljust(w) for v, w in zip(vals, widths, strict=True)).rstrip()  # noqa: E731
    return "\n".join([line([c.upper() for c in cols]), *(line(row) for row in cells)])


def _short_state(v: str) -> str:
    return v.replace("JOB_STATE_", "").replace("JOB_KIND_", "").lower()


def job_row(job) -> dict:
    d = to_dict(job)
    p = d.get("progress", {})
    prog = f"{p.get('phase', '')} {p.get('step', 0)}/{p.get('total_steps', 0)}" if p.get("total_steps") else ""
    return {"job_id": d["job_id"], "kind": _short_state(d.get("kind", "")), "state": _short_state(d.get("state", "")),
            "family": d.get("family", ""), "task": d.get("task", ""), "progress": prog,
            "adapter": d.get("adapter_id", ""), "created": d.get("created_at", "")[:19]}


def emit(args, msg_or_obj, text: str) -> None:
    if args.json:
        obj = msg_or_obj if isinstance(msg_or_obj, (dict, list)) else to_dict(msg_or_obj)
        print(json.dumps(obj, sort_keys=True))
    else:
        print(text)


def load_spec(path: str) -> dict:
    text = sys.stdin.read() if path == "-" else Path(path).read_text()
    if path.endswith(".json") or text.lstrip().startswith("{"):
        doc = json.loads(text)
    else:
        import yaml

        doc = yaml.safe_load(text)
    if not isinstance(doc, dict):
        raise SystemExit(f"{path}: a spec must be a mapping")
    return doc


def _parse(msg_cls, doc: dict, what: str):
    from google.protobuf.json_format import ParseDict, ParseError

    try:
        return ParseDict(doc, msg_cls())
    except ParseError as exc:
        raise SystemExit(f"invalid {what}: {exc}") from None


FED_KEYS = ("client_datasets", "num_clients", "dense_rounds", "sparse_rounds", "local_steps", "quorum",
            "deadline_s", "max_delta_norm")


# -- commands ------------------------------------------------------------------------------
def cmd_serve(args) -> int:
    import logging

    from .config import load_config
    from .server import serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.setswitchinterval(0.0005)  # short GIL slices: RPC handlers are not starved by job threads
    flags = {"host": args.host, "port": args.port, "store_url": args.store, "db": args.db,
             "ray_address": args.ray_address, "executor": args.executor, "max_active_jobs": args.max_active_jobs,
             "export_root": args.export_root}
    if args.auth_token:
        flags["auth_tokens"] = args.auth_token
    config = load_config(args.config, **flags)
    if not config.auth_tokens:
        import secrets

        config.auth_tokens = [secrets.token_urlsafe(24)]
        print(f"no auth tokens configured; generated one for this run: LORI_TOKEN={config.auth_tokens[0]}",
              file=sys.stderr, flush=True)

    def ready(coord):
        print(f"coordinator listening on {config.host}:{coord.port}", flush=True)

    serve(config, ready)
    return 0


def cmd_dataset(args, c: Client) -> int:
    from .v1 import coordinator_pb2 as pb
    from .v1 import types_pb2 as t

    chunk = 1 << 20

    def messages():
        yield pb.UploadDatasetRequest(name=args.name)
        for path, split in ((args.train, t.DATASET_SPLIT_TRAIN), (args.eval, t.DATASET_SPLIT_EVAL)):
            if not path:
                continue
            with open(path, "rb") as f:
                while data := f.read(chunk):
                    yield pb.UploadDatasetRequest(split=split, data=data)

    ds = c.call("UploadDataset", messages())
    emit(args, ds, f"dataset {ds.name}: {ds.train_records} train / {ds.eval_records} eval records "
                   f"(digest {ds.digest[:16]})")
    return 0


def _watch(args, c: Client, job_id: str, start: int = 0) -> int:
    from .v1 import coordinator_pb2 as pb
    from .v1 import types_pb2 as t

    tty = sys.stderr.isatty() and not args.json
    last = None
    for ev in c.stream("WatchJob", pb.WatchJobRequest(job_id=job_id, from_index=start)):
        if args.json:
            print(json.dumps(to_dict(ev), sort_keys=True), flush=True)
        elif ev.type == "progress" and ev.progress.total_steps:
            p = ev.progress
            frac = min(1.0, p.step / max(1, p.total_steps))
            bar = "#" * int(frac * 30) + "." * (30 - int(frac * 30))
            extra = f" loss={p.loss:.4f}" if p.HasField("loss") else ""
            extra += f" eta={p.eta_s:.0f}s" if p.HasField("eta_s") else ""
            text = f"[{bar}] {frac * 100:5.1f}% {p.phase} {p.step}/{p.total_steps}{extra}"
            if tty:
                print("\r" + text.ljust(100), end="", file=sys.stderr, flush=True)
            elif int(frac * 10) != last:
                last = int(frac * 10)
                print(text, file=sys.stderr, flush=True)
        elif ev.type == "state":
            if tty:
                print(file=sys.stderr)
            name = _short_state(t.JobState.Name(ev.state))
            print(f"{ev.time} {job_id} {name}" + (f": {ev.message}" if ev.message else ""), file=sys.stderr, flush=True)
        elif ev.type == "log":
            print(f"{ev.time} {ev.message}", file=sys.stderr, flush=True)
    job = c.call("GetJob", pb.GetJobRequest(job_id=job_id))
    if not args.json:
        print(table([job_row(job)], ["job_id", "state", "task", "adapter"]))
        if job.error:
            print(f"error: {job.error}")
    return 0 if job.state == t.JOB_STATE_SUCCEEDED else 1


def _job_out(args, c: Client, job) -> int:
    if getattr(args, "watch", False):
        if not args.json:
            print(f"submitted {job.job_id}", file=sys.stderr)
        return _watch(args, c, job.job_id)
    emit(args, job, table([job_row(job)], ["job_id", "kind", "state", "family", "task"]))
    return 0


def cmd_submit(args, c: Client) -> int:
    from .v1 import coordinator_pb2 as pb
    from .v1 import types_pb2 as t

    doc = load_spec(args.spec)
    fed = {k: doc.pop(k) for k in FED_KEYS if k in doc}
    spec = _parse(t.TaskSpec, doc, "task spec")
    if fed:
        req = _parse(pb.SubmitFederatedTaskRequest, fed, "federated options")
        req.spec.CopyFrom(spec)
        req.request_id = args.request_id or ""
        job = c.call("SubmitFederatedTask", req)
    else:
        job = c.call("SubmitTask", pb.SubmitTaskRequest(spec=spec, request_id=args.request_id or ""))
    return _job_out(args, c, job)


def cmd_watch(args, c: Client) -> int:
    return _watch(args, c, args.job_id, args.start)


def cmd_jobs(args, c: Client) -> int:
    from .v1 import coordinator_pb2 as pb
    from .v1 import types_pb2 as t

    states = [t.JobState.Value(f"JOB_STATE_{s.upper()}") for s in args.state or []]
    kind = t.JobKind.Value(f"JOB_KIND_{args.kind.upper()}") if args.kind else 0
    jobs, token = [], ""
    while True:
        resp = c.call("ListJobs", pb.ListJobsRequest(states=states, kind=kind, family=args.family or "",
                                                     task=args.task or "", page_size=min(args.limit, 1000),
                                                     page_token=token))
        jobs += list(resp.jobs)
        token = resp.next_page_token
        if not token or len(jobs) >= args.limit:
            break
    jobs = jobs[: args.limit]
    emit(args, [to_dict(j) for j in jobs],
         table([job_row(j) for j in jobs], ["job_id", "kind", "state", "family", "task", "progress", "adapter",
                                            "created"]))
    return 0


def _adapter_row(a) -> dict:
    d = to_dict(a)
    em = d.get("metrics", {}).get("exact_match")
    return {"adapter_id": d["adapter_id"], "family": d.get("family", ""), "task": d.get("task", ""),
            "version": d.get("version", ""), "kind": d.get("kind", ""), "parents": ",".join(d.get("parents", [])),
            "exact_match": "" if em is None else f"{em:.3f}", "pointers": ",".join(d.get("pointers", []))}


def cmd_adapters(args, c: Client) -> int:
    from .v1 import coordinator_pb2 as pb

    if args.adapter_id:
        a = c.call("GetAdapter", pb.GetAdapterRequest(adapter_id=args.adapter_id))
        lines = [table([_adapter_row(a)], ["adapter_id", "family", "task", "version", "kind", "pointers"]),
                 f"tasks: {', '.join(a.tasks)}", f"base model: {a.base_model}", "lineage:"]
        lines += [f"  {'  ' * e.depth}{e.adapter_id} ({e.kind or '?'})" + (" [missing]" if e.missing else "")
                  for e in a.lineage]
        emit(args, a, "\n".join(lines))
        return 0
    items, token = [], ""
    while True:
        resp = c.call("ListAdapters", pb.ListAdaptersRequest(family=args.family or "", task=args.task or "",
                                                             page_size=1000, page_token=token))
        items += list(resp.adapters)
        token = resp.next_page_token
        if not token:
            break
    emit(args, [to_dict(a) for a in items], table([_adapter_row(a) for a in items],
                                                  ["adapter_id", "family", "task", "version", "kind", "exact_match",
                                                   "pointers", "parents"]))
    return 0


def cmd_merge(args, c: Client) -> int:
    from .v1 import coordinator_pb2 as pb

    weights = [float(w) for w in args.weights.split(",")] if args.weights else []
    a = c.call("Merge", pb.MergeRequest(adapter_ids=args.adapter_ids, weights=weights, method=args.method,
                                        task=args.task or "", family=args.family or "",
                                        promote_to=args.promote_to or ""))
    emit(args, a, table([_adapter_row(a)], ["adapter_id", "family", "task", "version", "kind", "pointers",
                                            "parents"]))
    return 0


def cmd_continual(args, c: Client) -> int:
    from .v1 import coordinator_pb2 as pb
    from .v1 import types_pb2 as t

    spec = _parse(t.TaskSpec, load_spec(args.spec), "task spec")
    gate = t.Gate(enabled=args.gate_max_drop is not None, max_drop=args.gate_max_drop or 0.0,
                  metric=args.gate_metric)
    job = c.call("ContinualUpdate", pb.ContinualUpdateRequest(base_adapter_id=args.base_adapter_id, spec=spec,
                                                              gate=gate, promote_to=args.promote_to or "",
                                                              request_id=args.request_id or ""))
    return _job_out(args, c, job)


def cmd_evaluate(args, c: Client) -> int:
    from .v1 import coordinator_pb2 as pb

    job = c.call("Evaluate", pb.EvaluateRequest(adapter_id=args.adapter_id or "", dataset=args.dataset,
                                                base_model=args.base_model or "", limit=args.limit))
    return _job_out(args, c, job)


def cmd_export(args, c: Client) -> int:
    from .v1 import coordinator_pb2 as pb

    dest = args.to if "://" in args.to else str(Path(args.to).resolve())
    r = c.call("ExportAdapter", pb.ExportAdapterRequest(adapter_id=args.adapter_id, format=args.format,
                                                        destination=dest))
    emit(args, r, f"exported {args.adapter_id} to {r.destination}: {', '.join(r.files)}")
    return 0


def _schedule_row(s) -> dict:
    d = to_dict(s)
    g = d.get("gate", {})
    return {"name": d["name"], "cron": d.get("cron", ""), "family": d.get("family", ""),
            "mode": d.get("mode", "SCHEDULE_MODE_MERGE").replace("SCHEDULE_MODE_", "").lower(),
            "pointer": d.get("pointer", ""), "gate": f"max_drop={g.get('max_drop', 0)}" if g.get("enabled") else "off",
            "next_run": d.get("next_run_at", "")[:19], "last_job": d.get("last_job_id", "")}


def cmd_schedule(args, c: Client) -> int:
    from .v1 import coordinator_pb2 as pb
    from .v1 import types_pb2 as t

    cols = ["name", "cron", "family", "mode", "pointer", "gate", "next_run", "last_job"]
    if args.schedule_cmd == "add":
        spec = _parse(t.TaskSpec, load_spec(args.spec), "task spec") if args.spec else None
        req = pb.CreateScheduleRequest(
            name=args.name, cron=args.cron, family=args.family,
            mode=t.SCHEDULE_MODE_CONTINUAL if args.mode == "continual" else t.SCHEDULE_MODE_MERGE,
            method=args.method, pointer=args.pointer,
            gate=t.Gate(enabled=args.gate_max_drop is not None, max_drop=args.gate_max_drop or 0.0))
        if spec is not None:
            req.spec.CopyFrom(spec)
        s = c.call("CreateSchedule", req)
        emit(args, s, table([_schedule_row(s)], cols))
    elif args.schedule_cmd == "list":
        items = c.call("ListSchedules", pb.ListSchedulesRequest(family=args.family or "")).schedules
        emit(args, [to_dict(s) for s in items], table([_schedule_row(s) for s in items], cols))
    elif args.schedule_cmd == "delete":
        c.call("DeleteSchedule", pb.DeleteScheduleRequest(name=args.name))
        emit(args, {"deleted": args.name}, f"deleted schedule {args.name}")
    else:
        job = c.call("TriggerSchedule", pb.TriggerScheduleRequest(name=args.name))
        return _job_out(args, c, job)
    return 0


# -- parser --------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    client = argparse.ArgumentParser(add_help=False)
    g = client.add_argument_group("connection")
    g.add_argument("--server", default=None, help=f"coordinator host:port (LORI_SERVER, default {DEFAULT_SERVER})")
    g.add_argument("--token", default=None, help="bearer token (LORI_TOKEN)")
    g.add_argument("--tls-ca", default=None, help="CA certificate (PEM) to connect with TLS")
    g.add_argument("--timeout", type=float, default=60.0, help="seconds per call (default 60)")
    g.add_argument("--json", action="store_true", help="machine-readable JSON output")

    p = argparse.ArgumentParser(prog="lori", description="LoRI fine-tuning service: coordinator CLI")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the coordinator")
    s.add_argument("--config", help="YAML/JSON config file (see docs/api.md)")
    s.add_argument("--host", default=None, help="bind address (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=None, help="port (default 50051; 0 picks a free one)")
    s.add_argument("--store", default=None, help="object store URL or folder (LORI_STORE_URL)")
    s.add_argument("--db", default=None, help="SQLite state file (LORI_DB)")
    s.add_argument("--ray-address", default=None, help="Ray cluster address (LORI_RAY_ADDRESS); default local Ray")
    s.add_argument("--executor", choices=["ray", "simulated"], default=None,
                   help="'simulated' fakes training (API tests and benchmarks)")
    s.add_argument("--auth-token", action="append", default=None, help="accepted token (repeatable; LORI_AUTH_TOKENS)")
    s.add_argument("--max-active-jobs", type=int, default=None, help="jobs running at once (default 4)")
    s.add_argument("--export-root", default=None, help="restrict ExportAdapter's local paths to this folder")
    s.set_defaults(func=cmd_serve, needs_client=False)

    d = sub.add_parser("dataset", help="datasets in the store")
    dsub = d.add_subparsers(dest="dataset_cmd", required=True)
    du = dsub.add_parser("upload", parents=[client], help="upload a JSONL dataset (validated)")
    du.add_argument("name")
    du.add_argument("--train", required=True, help="train split (JSONL)")
    du.add_argument("--eval", default=None, help="eval split (JSONL)")
    du.set_defaults(func=cmd_dataset)

    s = sub.add_parser("submit", parents=[client], help="submit a task (YAML or JSON spec; '-' reads stdin)")
    s.add_argument("spec")
    s.add_argument("--watch", action="store_true", help="follow the job's progress")
    s.add_argument("--request-id", default=None, help="idempotency key")
    s.set_defaults(func=cmd_submit)

    s = sub.add_parser("watch", parents=[client], help="follow a job's progress")
    s.add_argument("job_id")
    s.add_argument("--from", dest="start", type=int, default=0, help="first event index (resume)")
    s.set_defaults(func=cmd_watch)

    s = sub.add_parser("jobs", parents=[client], help="list jobs")
    s.add_argument("--state", action="append", choices=["queued", "running", "succeeded", "failed", "cancelled"])
    s.add_argument("--kind", choices=["train", "federated", "continual", "evaluate", "scheduled"])
    s.add_argument("--family")
    s.add_argument("--task")
    s.add_argument("--limit", type=int, default=50)
    s.set_defaults(func=cmd_jobs)

    s = sub.add_parser("adapters", parents=[client], help="list adapters, or show one with its lineage")
    s.add_argument("adapter_id", nargs="?")
    s.add_argument("--family")
    s.add_argument("--task")
    s.set_defaults(func=cmd_adapters)

    s = sub.add_parser("merge", parents=[client], help="merge adapters into a new registered adapter")
    s.add_argument("adapter_ids", nargs="+")
    s.add_argument("--weights", help="comma-separated, one per adapter (default 1.0 each)")
    s.add_argument("--method", choices=["auto", "sum_b", "concat"], default="auto")
    s.add_argument("--task", help="the result's task name (default 'merged')")
    s.add_argument("--family")
    s.add_argument("--promote-to", help="move this pointer (e.g. production) to the result")
    s.set_defaults(func=cmd_merge)

    s = sub.add_parser("continual", parents=[client], help="train a new task on top of an adapter")
    s.add_argument("base_adapter_id")
    s.add_argument("spec")
    s.add_argument("--gate-max-drop", type=float, default=None,
                   help="gate: refuse promotion if a protected task's metric drops by more than this")
    s.add_argument("--gate-metric", default="exact_match")
    s.add_argument("--promote-to")
    s.add_argument("--request-id")
    s.add_argument("--watch", action="store_true")
    s.set_defaults(func=cmd_continual)

    s = sub.add_parser("evaluate", parents=[client], help="evaluate an adapter on a dataset's eval split")
    s.add_argument("adapter_id", nargs="?", default="")
    s.add_argument("--dataset", required=True)
    s.add_argument("--base-model", help="for the bare base model (no adapter)")
    s.add_argument("--limit", type=int, default=0)
    s.add_argument("--watch", action="store_true")
    s.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("export", parents=[client], help="export an adapter as a PEFT folder")
    s.add_argument("adapter_id")
    s.add_argument("--to", required=True, help="a directory (on the coordinator's machine) or s3://bucket/prefix")
    s.add_argument("--format", default="peft", choices=["peft"])
    s.set_defaults(func=cmd_export)

    s = sub.add_parser("schedule", help="cron-scheduled continual-update runs")
    ssub = s.add_subparsers(dest="schedule_cmd", required=True)
    a = ssub.add_parser("add", parents=[client], help="create a schedule")
    a.add_argument("name")
    a.add_argument("--cron", required=True, help='five-field cron, UTC (e.g. "0 2 * * *")')
    a.add_argument("--family", required=True)
    a.add_argument("--mode", choices=["merge", "continual"], default="merge")
    a.add_argument("--method", choices=["auto", "sum_b", "concat"], default="auto")
    a.add_argument("--spec", help="continual mode: the task spec trained on top of production")
    a.add_argument("--gate-max-drop", type=float, default=None)
    a.add_argument("--pointer", default="production")
    a.set_defaults(func=cmd_schedule)
    ls = ssub.add_parser("list", parents=[client], help="list schedules")
    ls.add_argument("--family")
    ls.set_defaults(func=cmd_schedule)
    for name, helptext in (("delete", "delete a schedule"), ("trigger", "run a schedule now")):
        x = ssub.add_parser(name, parents=[client], help=helptext)
        x.add_argument("name")
        if name == "trigger":
            x.add_argument("--watch", action="store_true")
        x.set_defaults(func=cmd_schedule)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not getattr(args, "needs_client", True):
        return args.func(args)
    import grpc

    client = Client(args)
    try:
        return args.func(args, client)
    except grpc.RpcError as exc:
        print(f"error: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    finally:
        client.channel.close()


if __name__ == "__main__":
    sys.exit(main())
