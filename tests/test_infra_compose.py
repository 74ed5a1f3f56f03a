"""docker-compose: the file parses, every service has a health check, durable state is in named
volumes, GPU workers reserve NVIDIA devices, and no credential is written in the file.

Parsed with PyYAML (merge keys resolved); no Docker engine is used, nothing is started.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_DIR = ROOT / "infra" / "compose"
COMPOSE = COMPOSE_DIR / "docker-compose.yaml"
SECRET_NAME = re.compile(r"(KEY|SECRET|TOKEN|PASSWORD)", re.I)


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_parses_with_expected_services(compose):
    assert set(compose["services"]) == {"minio", "minio-init", "ray-head", "ray-worker-gpu", "coordinator"}


def test_every_service_has_a_health_check(compose):
    for name, svc in compose["services"].items():
        check = svc.get("healthcheck")
        assert check and not check.get("disable"), name
        test = check["test"]
        assert isinstance(test, list) and test[0] in {"CMD", "CMD-SHELL"} and len(test) > 1, name
        for field in ("interval", "timeout", "retries"):
            assert field in check, (name, field)


def test_images_pinned(compose):
    for name, svc in compose["services"].items():
        image = svc["image"]
        tag = image.rsplit("/", 1)[-1].partition(":")[2]
        assert tag and tag != "latest", (name, image)


def test_durable_state_in_named_volumes(compose):
    declared = set(compose["volumes"])
    used = set()
    for name, svc in compose["services"].items():
        for vol in svc.get("volumes", []):
            source = vol.split(":", 1)[0]
            assert not source.startswith((".", "/")), f"{name}: bind mount {vol}; use a named volume"
            used.add(source)
    assert used == declared
    mounts = {n: [v.split(":")[1] for v in s.get("volumes", [])] for n, s in compose["services"].items()}
    assert "/data" in mounts["minio"] and "/data" in mounts["coordinator"]
    assert compose["services"]["coordinator"]["environment"]["LORI_DB"].startswith("/data/")


def test_gpu_workers_reserve_nvidia_devices(compose):
    svc = compose["services"]["ray-worker-gpu"]
    (device,) = svc["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert svc["image"].startswith("lori-service-gpu:") and svc["build"]["args"]["VARIANT"] == "gpu"
    assert svc["environment"]["RAY_HEAD_ADDRESS"] == "ray-head:6379"


def test_startup_order(compose):
    services = compose["services"]
    assert services["minio-init"]["depends_on"]["minio"]["condition"] == "service_healthy"
    coord = services["coordinator"]["depends_on"]
    assert coord["minio-init"]["condition"] == "service_completed_successfully"
    assert coord["ray-head"]["condition"] == "service_healthy"
    env = services["coordinator"]["environment"]
    assert env["LORI_RAY_ADDRESS"] == "ray://ray-head:10001"
    assert "endpoint=minio:9000" in env["LORI_STORE_URL"]


def test_credentials_only_from_env_file(compose):
    for name, svc in compose["services"].items():
        for key, value in svc.get("environment", {}).items():
            if SECRET_NAME.search(key) or key.startswith("MINIO_ROOT"):
                assert re.fullmatch(r"\$\{[A-Z_]+:\?[^}]*\}", str(value)), f"{name}.{key} must come from .env"
    ignored = subprocess.run(["git", "check-ignore", "-q", str(COMPOSE_DIR / ".env")], cwd=ROOT, check=False)
    assert ignored.returncode == 0, "infra/compose/.env must be git-ignored"
    example = (COMPOSE_DIR / ".env.example").read_text().splitlines()
    values = [line.split("=", 1)[1] for line in example if line and not line.startswith("#")]
    assert values and all(v.startswith("CHANGE_ME") for v in values)
    required = set(re.findall(r"\$\{([A-Z_]+):\?", COMPOSE.read_text()))
    assert required <= {line.split("=", 1)[0] for line in example if line and not line.startswith("#")}
