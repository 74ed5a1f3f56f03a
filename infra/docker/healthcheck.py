#!/opt/venv/bin/python
"""Container health checks for the LoRI service image (installed as `lori-healthcheck`).

    lori-healthcheck grpc [--address localhost:50051] [--service NAME] [--timeout 3]
        exit 0 when the coordinator's grpc.health.v1 service answers SERVING, else 1
    lori-healthcheck raylet
        exit 0 when a raylet process runs in this container (a Ray worker that joined its head)

The Ray head is checked with Ray's own `ray health-check --address localhost:6379`.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def check_grpc(address: str, service: str, timeout: float) -> int:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    try:
        with grpc.insecure_channel(address) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
    except grpc.RpcError as err:
        print(f"unhealthy: {address}: {err.code().name}", file=sys.stderr)
        return 1
    if reply.status != health_pb2.HealthCheckResponse.SERVING:
        name = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        print(f"unhealthy: {address}: {name}", file=sys.stderr)
        return 1
    return 0


def check_raylet(proc: Path = Path("/proc")) -> int:
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            comm = (entry / "comm").read_text().strip()
        except OSError:  # the process ended while we looked
            continue
        if comm == "raylet":
            return 0
    print("unhealthy: no raylet process", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lori-healthcheck")
    sub = parser.add_subparsers(dest="check", required=True)
    grpc_p = sub.add_parser("grpc", help="grpc.health.v1 check of the coordinator")
    grpc_p.add_argument("--address", default=f"localhost:{os.environ.get('LORI_PORT', '50051')}")
    grpc_p.add_argument("--service", default="", help="service name; '' is the whole server")
    grpc_p.add_argument("--timeout", type=float, default=3.0)
    sub.add_parser("raylet", help="a raylet process runs in this container")
    args = parser.parse_args(argv)
    if args.check == "grpc":
        return check_grpc(args.address, args.service, args.timeout)
    return check_raylet()


if __name__ == "__main__":
    sys.exit(main())
