"""Server configuration: defaults < config file (YAML/JSON) < environment < command-line flags.

Environment: LORI_STORE_URL, LORI_DB, LORI_RAY_ADDRESS, LORI_AUTH_TOKENS (comma-separated),
LORI_TLS_CERT / LORI_TLS_KEY, LORI_HOME (embedded defaults' folder, default ~/.lori).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

EXECUTORS = ("ray", "simulated")


def lori_home(env=None) -> Path:
    env = os.environ if env is None else env
    return Path(env.get("LORI_HOME") or Path.home() / ".lori")


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 50051
    store_url: str = ""
    db: str = ""
    ray_address: str | None = None
    auth_tokens: list[str] = field(default_factory=list, repr=False)
    tls_cert: str | None = None
    tls_key: str | None = None
    max_message_bytes: int = 8 << 20
    max_dataset_bytes: int = 512 << 20
    max_workers: int = 256
    max_active_jobs: int = 4
    executor: str = "ray"
    export_root: str | None = None
    sim_steps: int = 5
    sim_step_s: float = 0.05

    def __post_init__(self) -> None:
        home = lori_home()
        self.store_url = self.store_url or str(home / "store")
        self.db = self.db or str(home / "coordinator.db")
        if isinstance(self.auth_tokens, str):
            self.auth_tokens = [t.strip() for t in self.auth_tokens.split(",") if t.strip()]
        if not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise ValueError(f"port={self.port!r}: must be an integer in [0, 65535]")
        if self.executor not in EXECUTORS:
            raise ValueError(f"executor={self.executor!r}: must be one of {EXECUTORS}")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("tls_cert and tls_key must be given together")
        for name in ("max_message_bytes", "max_dataset_bytes", "max_workers", "max_active_jobs"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)!r}: must be a positive integer")


def load_config(path: str | None = None, env=None, **flags: object) -> ServerConfig:
    """Merge the layers; `flags` with value None are ignored."""
    env = os.environ if env is None else env
    values: dict = {}
    if path:
        text = Path(path).read_text()
        doc = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
        if not isinstance(doc, dict):
            raise ValueError(f"{path}: the config file must be a mapping")
        known = {f.name for f in dataclasses.fields(ServerConfig)}
        unknown = sorted(set(doc) - known)
        if unknown:
            raise ValueError(f"{path}: unknown setting(s) {unknown}")
        values.update(doc)
    for key, var in (("store_url", "LORI_STORE_URL"), ("db", "LORI_DB"), ("ray_address", "LORI_RAY_ADDRESS"),
                     ("auth_tokens", "LORI_AUTH_TOKENS"), ("tls_cert", "LORI_TLS_CERT"),
                     ("tls_key", "LORI_TLS_KEY")):
        if env.get(var):
            values[key] = env[var]
    values.update({k: v for k, v in flags.items() if v is not None})
    return ServerConfig(**values)
