"""Assemble and run the coordinator: state + executor + engine + scheduler + gRPC server.

The server enables `grpc.health.v1` (open without a token) and server reflection, bearer-token
auth on everything else, optional TLS, and message-size limits.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from worker.store import open_store

from .auth import BearerAuthInterceptor
from .config import ServerConfig
from .engine import Engine
from .executors.base import Executor
from .scheduler import Scheduler
from .service import CoordinatorService
from .servicer import CoordinatorServicer
from .state import open_state
from .v1 import coordinator_pb2, coordinator_pb2_grpc

log = logging.getLogger("coordinator.server")
SERVICE_NAME = coordinator_pb2.DESCRIPTOR.services_by_name["Coordinator"].full_name


def make_executor(config: ServerConfig, store) -> Executor:
    if config.executor == "simulated":
        from .executors.simulated import SimulatedExecutor

        return SimulatedExecutor(store, steps=config.sim_steps, step_s=config.sim_step_s)
    from .executors.ray_worker import RayExecutor

    return RayExecutor(config.store_url, config.ray_address)


@dataclass
class Coordinator:
    """A running coordinator (see `start`)."""

    server: grpc.Server
    port: int
    engine: Engine
    scheduler: Scheduler
    service: CoordinatorService
    health: health.HealthServicer

    def stop(self, grace: float = 2.0) -> None:
        self.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        self.scheduler.stop()
        self.engine.stop()
        self.server.stop(grace).wait(grace + 1)
        self.engine.executor.shutdown()
        self.engine.state.close()

    def wait(self) -> None:
        self.server.wait_for_termination()


def start(config: ServerConfig, *, executor: Executor | None = None, clock: Callable[[], float] = time.time,
          run_scheduler: bool = True) -> Coordinator:
    """Build everything and start serving; returns once the port is bound."""
    if not config.auth_tokens:
        raise ValueError("no auth tokens configured: set LORI_AUTH_TOKENS or auth_tokens in the config")
    store = open_store(config.store_url)
    state = open_state(config.db)
    executor = executor or make_executor(config, store)
    engine = Engine(state, executor, store, max_active=config.max_active_jobs, clock=clock)
    scheduler = Scheduler(engine, clock=clock)
    service = CoordinatorService(engine, scheduler, max_dataset_bytes=config.max_dataset_bytes,
                                 export_root=config.export_root)
    opts = [("grpc.max_receive_message_length", config.max_message_bytes),
            ("grpc.max_send_message_length", config.max_message_bytes),
            ("grpc.so_reuseport", 0)]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=config.max_workers, thread_name_prefix="grpc"),
                         interceptors=[BearerAuthInterceptor(config.auth_tokens)], options=opts,
                         maximum_concurrent_rpcs=config.max_workers * 4)
    coordinator_pb2_grpc.add_CoordinatorServicer_to_server(CoordinatorServicer(service), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    address = f"{config.host}:{config.port}"
    if config.tls_cert:
        creds = grpc.ssl_server_credentials([(Path(config.tls_key).read_bytes(), Path(config.tls_cert).read_bytes())])
        port = server.add_secure_port(address, creds)
    else:
        port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot bind {address}")
    engine.start()
    if run_scheduler:
        scheduler.start()
    server.start()
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info("coordinator serving on %s:%d (store %s, db %s, executor %s)", config.host, port,
             store.url, config.db, config.executor)
    return Coordinator(server, port, engine, scheduler, service, health_servicer)


def serve(config: ServerConfig, ready: Callable[[Coordinator], None] | None = None) -> None:
    """Run until SIGINT/SIGTERM."""
    coord = start(config)
    if ready:
        ready(coord)
    done = threading.Event()

    def _stop(signum, frame):
        done.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    done.wait()
    coord.stop()
