"""Images: the Dockerfile's pins and user, and every command an image is started with (Dockerfile
ENTRYPOINT/CMD, entrypoint roles, compose commands and health checks, Kubernetes args, the CronJob)
names a command that exists in the installed package: `lori` is this project's console script and
its argparse tree has the subcommand; `ray` is Ray's console script and its click CLI has the
command and options. The entrypoint script and the health-check script are executed for real
(with stub `lori`/`ray` executables, and against a real gRPC health server on localhost).

No image is built here (no Docker engine): the Dockerfile is checked as text.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import runpy
import shlex
import subprocess
from concurrent import futures
from importlib.metadata import entry_points, version
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "infra" / "docker"
DOCKERFILE = (DOCKER / "Dockerfile").read_text()
ENTRYPOINT = DOCKER / "entrypoint.sh"
HEALTHCHECK = DOCKER / "healthcheck.py"
ROLE_LINE = re.compile(r"^\s*([\w*-]+)\)\s*exec\s+(.+?)\s*;;\s*$", re.M)


def roles() -> dict[str, list[str]]:
    """role -> the command line it execs, from entrypoint.sh's case statement."""
    return {m.group(1): shlex.split(m.group(2)) for m in ROLE_LINE.finditer(ENTRYPOINT.read_text())}


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


_LORI_PENDING: list[list[str]] = []


@pytest.fixture(autouse=True)
def _lori_checks_at_end():
    """`lori` commands are checked after everything else in a test, so that while coordinator/cli.py
    has not landed the Ray and health-check parts still run and only the lori part skips."""
    _LORI_PENDING.clear()
    yield
    pending = list(_LORI_PENDING)
    _LORI_PENDING.clear()
    if not pending:
        return
    if importlib.util.find_spec("coordinator.cli") is None:
        pytest.skip(f"coordinator/cli.py has not landed yet; unchecked: {pending}")
    for args in pending:
        _check_lori_command(args)


def assert_lori_command(args: list[str]) -> None:
    _LORI_PENDING.append(list(args))


def _check_lori_command(args: list[str]) -> None:
    """args after `lori`: the leading subcommand words must exist in coordinator.cli.build_parser()."""
    from coordinator.cli import build_parser

    parser = build_parser()
    walked = []
    for word in args:
        subs = _subparsers(parser)
        if not subs or word.startswith(("-", "$")):
            break
        assert word in subs, f"`lori {' '.join(walked + [word])}` is not a subcommand of coordinator.cli"
        walked.append(word)
        parser = subs[word]
    assert walked, f"no lori subcommand in {args}"


def assert_ray_command(args: list[str]) -> None:
    """args after `ray`: a command of Ray's CLI, and every --option it is given exists."""
    from ray.scripts.scripts import cli

    assert args[0] in cli.commands, f"`ray {args[0]}` is not a Ray CLI command"
    opts = {o for p in cli.commands[args[0]].params for o in p.opts}
    for arg in args[1:]:
        if arg.startswith("--"):
            assert arg.split("=", 1)[0] in opts, f"`ray {args[0]}` has no option {arg}"


def assert_exec(argv: list[str]) -> None:
    """A command line as the image runs it (after the entrypoint's role dispatch)."""
    if argv[0] == "lori":
        assert_lori_command(argv[1:])
    elif argv[0] == "ray":
        assert_ray_command(argv[1:])
    elif argv[0] == "lori-healthcheck":
        ns = runpy.run_path(str(HEALTHCHECK))
        with pytest.raises(SystemExit) as done:  # parse only: --help-like probe of the arguments
            ns["main"](argv[1:] + ["--help"]) if argv[1] == "grpc" else ns["main"]([argv[1], "--help"])
        assert done.value.code == 0
    else:
        pytest.fail(f"unknown command {argv}")


def image_command(args: list[str]) -> None:
    """args given to the image (compose `command`, Kubernetes `args`), dispatched like entrypoint.sh:
    a role expands to its exec line with "$@" replaced by the remaining args."""
    table = roles()
    if args[0] in table:
        argv: list[str] = []
        for token in table[args[0]]:
            argv.extend(args[1:] if token == "$@" else [token])
    else:
        argv = list(args)
    assert_exec([a for a in argv if not a.startswith("$")])


# ----------------------------------------------------------------------------------------------


def test_lori_is_a_console_script():
    text = (ROOT / "pyproject.toml").read_text()
    scripts = re.search(r"^\[project\.scripts\]\n(.*?)(?:^\[|\Z)", text, re.M | re.S).group(1)
    assert re.search(r'^lori\s*=\s*"coordinator\.cli:main"\s*$', scripts, re.M)
    assert any(e.name == "ray" for e in entry_points(group="console_scripts"))


def test_dockerfile_pins_user_and_entrypoint():
    assert re.search(r'^ENTRYPOINT \["lori-entrypoint"\]$', DOCKERFILE, re.M)
    assert re.search(r'^CMD \["serve"\]$', DOCKERFILE, re.M)
    assert "infra/docker/entrypoint.sh /usr/local/bin/lori-entrypoint" in DOCKERFILE
    assert "infra/docker/healthcheck.py /usr/local/bin/lori-healthcheck" in DOCKERFILE
    assert re.search(r"^USER 1000:1000$", DOCKERFILE, re.M)
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", DOCKERFILE, re.M))
    assert {"cpu", "gpu"} == set(re.findall(r"^FROM .* AS base-(\w+)$", DOCKERFILE, re.M))
    assert args["CUDA_IMAGE"].startswith("nvidia/cuda:") and "cuda" in args["CUDA_IMAGE"]
    for image in re.findall(r"^FROM (\S+)", DOCKERFILE, re.M):
        image = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), image)
        if image.startswith("base-$"):
            continue
        if "/" in image or ":" in image:
            assert re.search(r":[\w.-]+$", image) and not image.endswith(":latest"), image
    ray_pin = re.search(r"^ray==(\S+)$", (DOCKER / "constraints.txt").read_text(), re.M).group(1)
    assert args["RAY_VERSION"] == ray_pin == version("ray"), "image Ray must equal the dev env's Ray"
    assert args["TORCH_VERSION"] == version("torch").split("+")[0]
    assert args["PYTHON_VERSION"].startswith("3.11.")
    pins = (DOCKER / "constraints.txt").read_text().splitlines()
    assert all("==" in p for p in pins if p and not p.startswith("#"))


def test_entrypoint_roles_name_existing_commands():
    table = roles()
    assert {"serve", "ray-head", "ray-worker", "lori", "*"} <= set(table)
    assert table["serve"][:2] == ["lori", "serve"]
    assert table["ray-head"][:3] == ["ray", "start", "--head"] and table["ray-head"][-1] == "--block"
    assert table["ray-worker"][:2] == ["ray", "start"] and table["ray-worker"][-1] == "--block"
    for role, argv in table.items():
        if role not in {"*", "lori"}:
            assert_exec([a for a in argv if not a.startswith(("$", "${"))])
    default = re.search(r'^CMD \["(\w+)"\]$', DOCKERFILE, re.M).group(1)
    assert default in table


def test_compose_commands_and_health_checks_exist():
    compose = yaml.safe_load((ROOT / "infra/compose/docker-compose.yaml").read_text())
    for name, svc in compose["services"].items():
        if not svc["image"].startswith("lori-service-"):
            continue
        assert svc["command"][0] in roles(), name
        image_command([a for a in svc["command"] if "${" not in a])
        test = svc["healthcheck"]["test"]
        assert test[0] == "CMD", name
        assert_exec(test[1:])


def test_kubernetes_commands_exist():
    k8s = ROOT / "infra" / "k8s" / "base"
    coord = [d for d in yaml.safe_load_all((k8s / "coordinator.yaml").read_text()) if d["kind"] == "Deployment"]
    image_command(coord[0]["spec"]["template"]["spec"]["containers"][0]["args"])
    (cron,) = yaml.safe_load_all((k8s / "cronjob.yaml").read_text())
    args = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:3] == ["lori", "schedule", "trigger"]
    image_command(args)


# ---------------------------------------------------------------- entrypoint.sh, executed


@pytest.fixture()
def stub_path(tmp_path):
    for tool in ("lori", "ray"):
        stub = tmp_path / tool
        stub.write_text(f'#!/bin/sh\necho {tool} "$@"\n')
        stub.chmod(0o755)
    return tmp_path


def _run_entrypoint(stub_path, *args, **env):
    full = {"PATH": f"{stub_path}:/usr/bin:/bin", **env}
    out = subprocess.run(["bash", str(ENTRYPOINT), *args], capture_output=True, text=True, env=full,
                         timeout=10, check=False)
    return out.returncode, out.stdout.strip(), out.stderr


def test_entrypoint_dispatch(stub_path):
    assert _run_entrypoint(stub_path)[1] == "lori serve --host 0.0.0.0 --port 50051"
    assert _run_entrypoint(stub_path, "serve", "--db", "/x")[1] == "lori serve --host 0.0.0.0 --port 50051 --db /x"
    rc, out, _ = _run_entrypoint(stub_path, "ray-worker", RAY_HEAD_ADDRESS="head:6379", RAY_NUM_GPUS="2")
    assert (rc, out) == (0, "ray start --address=head:6379 --num-gpus=2 --disable-usage-stats --block")
    rc, out, _ = _run_entrypoint(stub_path, "ray-worker", RAY_HEAD_ADDRESS="head:6379")
    assert out == "ray start --address=head:6379 --disable-usage-stats --block"
    rc, _, err = _run_entrypoint(stub_path, "ray-worker")
    assert rc != 0 and "RAY_HEAD_ADDRESS" in err
    _, out, _ = _run_entrypoint(stub_path, "ray-head", "--num-cpus=0")
    assert out.startswith("ray start --head --port=6379") and out.endswith("--num-cpus=0 --block")
    assert _run_entrypoint(stub_path, "lori", "jobs")[1] == "lori jobs"
    assert _run_entrypoint(stub_path, "echo", "hi")[1] == "hi"


# ---------------------------------------------------------------- healthcheck.py, executed


@pytest.fixture()
def health_server():
    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}", servicer, health_pb2.HealthCheckResponse
    server.stop(None)


def test_grpc_health_check(health_server):
    address, servicer, status = health_server
    main = runpy.run_path(str(HEALTHCHECK))["main"]
    servicer.set("", status.SERVING)
    assert main(["grpc", "--address", address, "--timeout", "2"]) == 0
    servicer.set("", status.NOT_SERVING)
    assert main(["grpc", "--address", address, "--timeout", "2"]) == 1


def test_grpc_health_check_nothing_listening():
    main = runpy.run_path(str(HEALTHCHECK))["main"]
    assert main(["grpc", "--address", "127.0.0.1:1", "--timeout", "1"]) == 1


def test_raylet_check(tmp_path):
    check = runpy.run_path(str(HEALTHCHECK))["check_raylet"]
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "comm").write_text("bash\n")
    (tmp_path / "self").mkdir()
    assert check(tmp_path) == 1
    (tmp_path / "42").mkdir()
    (tmp_path / "42" / "comm").write_text("raylet\n")
    assert check(tmp_path) == 0
    assert os.access(HEALTHCHECK, os.X_OK) and os.access(ENTRYPOINT, os.X_OK)
