"""Kubernetes manifests: every overlay builds with kustomize, every built-in object validates against
the Kubernetes API schemas (kubernetes-validate, strict: unknown fields fail), the KubeRay RayCluster
carries what its CRD requires, and every name a pod refers to exists in the same render.

Nothing here talks to a cluster: this is rendering plus schema checks only.
"""

from __future__ import annotations

import re
import subprocess

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import all_versions

from tests.infra_support.render import (
    K8S,
    OVERLAYS,
    ROOT,
    build_overlay,
    containers,
    pod_labels,
    pod_specs,
)

# Kubernetes minor versions checked: every bundled schema set from 1.29 on (KubeRay 1.x supports
# these; CronJob timeZone and gRPC probes are GA there).
K8S_VERSIONS = sorted({v for v in all_versions() if tuple(map(int, v.split(".")[:2])) >= (1, 29)},
                      key=lambda v: tuple(map(int, v.split("."))))


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict[str, list[dict]]:
    work = tmp_path_factory.mktemp("k8s")
    return {name: build_overlay(name, work) for name in OVERLAYS}


def _by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def _one(docs: list[dict], kind: str) -> dict:
    (obj,) = _by_kind(docs, kind)
    return obj


def test_expected_overlays_exist():
    assert {"dev", "gpu"} <= set(OVERLAYS)
    assert K8S_VERSIONS and K8S_VERSIONS[-1].startswith("1.3")


def test_expected_objects_rendered(rendered):
    for name, docs in rendered.items():
        kinds = {d["kind"] for d in docs}
        assert {"Namespace", "ConfigMap", "Secret", "Service", "PersistentVolumeClaim", "Deployment",
                "StatefulSet", "Job", "CronJob", "NetworkPolicy", "RayCluster"} <= kinds, name
        namespaces = {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"}
        assert namespaces == {_one(docs, "Namespace")["metadata"]["name"]}, name


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_builtin_objects_validate_against_api_schemas(rendered, version):
    checked = 0
    for name, docs in rendered.items():
        for obj in docs:
            if obj["apiVersion"].startswith("ray.io/"):
                continue
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as err:
                pytest.fail(f"{name}: {obj['kind']}/{obj['metadata']['name']} invalid for {version}: "
                            f"{err.message} at {list(err.path)}")
            checked += 1
    assert checked >= 2 * 12


def test_schema_validation_is_not_a_no_op(rendered):
    """A typo'd field and a wrong type in a rendered object must both be rejected."""
    import copy

    dep = copy.deepcopy(_one(rendered["gpu"], "Deployment"))
    dep["spec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(dep, K8S_VERSIONS[-1], strict=True)
    dep = copy.deepcopy(_one(rendered["gpu"], "Deployment"))
    dep["spec"]["replicas"] = "one"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(dep, K8S_VERSIONS[-1], strict=True)


@pytest.mark.parametrize("version", [K8S_VERSIONS[0], K8S_VERSIONS[-1]])
def test_raycluster_pod_templates_validate_against_api_schemas(rendered, version):
    """The CRD embeds core/v1 PodTemplateSpec: validate each one as a PodTemplate object."""
    for docs in rendered.values():
        spec = _one(docs, "RayCluster")["spec"]
        templates = [spec["headGroupSpec"]["template"]] + [g["template"] for g in spec["workerGroupSpecs"]]
        for i, template in enumerate(templates):
            wrapped = {"apiVersion": "v1", "kind": "PodTemplate",
                       "metadata": {"name": f"lori-ray-{i}"}, "template": template}
            kubernetes_validate.validate(wrapped, version, strict=True)


def test_raycluster_has_fields_the_crd_requires(rendered):
    """ray.io/v1 RayCluster (KubeRay CRD): spec.headGroupSpec.template; per worker group groupName,
    minReplicas, maxReplicas, template; rayStartParams is a map of strings; replica counts int32."""
    for name, docs in rendered.items():
        rc = _one(docs, "RayCluster")
        assert rc["apiVersion"] == "ray.io/v1", name
        spec = rc["spec"]
        assert "template" in spec["headGroupSpec"], name
        groups = spec["workerGroupSpecs"]
        assert groups, name
        for params in [spec["headGroupSpec"].get("rayStartParams", {})] + [
                g.get("rayStartParams", {}) for g in groups]:
            assert all(isinstance(k, str) and isinstance(v, str) for k, v in params.items()), params
        assert len({g["groupName"] for g in groups}) == len(groups)
        for g in groups:
            for field in ("groupName", "minReplicas", "maxReplicas", "template"):
                assert field in g, (name, field)
            for field in ("replicas", "minReplicas", "maxReplicas"):
                assert isinstance(g.get(field, 0), int) and 0 <= g.get(field, 0) < 2**31
            assert g["minReplicas"] <= g.get("replicas", g["minReplicas"]) <= g["maxReplicas"], name
            assert g["template"]["spec"]["containers"], name
        assert spec["enableInTreeAutoscaling"] is True
        assert spec["headGroupSpec"]["rayStartParams"]["num-gpus"] == "0"  # CPU head


def test_gpu_overlay_requests_gpus_and_dev_none(rendered):
    gpu = _one(rendered["gpu"], "RayCluster")["spec"]["workerGroupSpecs"]
    for g in gpu:
        pod = g["template"]["spec"]
        (ray,) = pod["containers"]
        assert ray["resources"]["limits"]["nvidia.com/gpu"] == g["rayStartParams"]["num-gpus"]
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
        assert ray["image"].startswith("lori-service-gpu:")
        assert g["maxReplicas"] > g["minReplicas"]
    dev = _one(rendered["dev"], "RayCluster")
    assert "nvidia.com/gpu" not in repr(dev)
    for g in dev["spec"]["workerGroupSpecs"]:
        assert g["rayStartParams"]["num-gpus"] == "0"
        assert g["template"]["spec"]["containers"][0]["image"].startswith("lori-service-cpu:")


def test_every_reference_resolves(rendered):
    """Hashed generator names reach every consumer (RayCluster included); keys exist; PVCs exist."""
    for name, docs in rendered.items():
        data = {(d["kind"], d["metadata"]["name"]): set(d.get("data", {})) for d in docs
                if d["kind"] in {"Secret", "ConfigMap"}}
        pvcs = {d["metadata"]["name"] for d in _by_kind(docs, "PersistentVolumeClaim")}
        services = {d["metadata"]["name"] for d in _by_kind(docs, "Service")}
        for obj in docs:
            for where, pod in pod_specs(obj):
                for c in containers(pod):
                    for env in c.get("env", []):
                        ref = env.get("valueFrom", {})
                        for key, kind in (("secretKeyRef", "Secret"), ("configMapKeyRef", "ConfigMap")):
                            if key in ref:
                                target = (kind, ref[key]["name"])
                                assert target in data, (name, where, target)
                                assert ref[key]["key"] in data[target], (name, where, ref[key])
                    for src in c.get("envFrom", []):
                        for key, kind in (("secretRef", "Secret"), ("configMapRef", "ConfigMap")):
                            if key in src:
                                assert (kind, src[key]["name"]) in data, (name, where, src)
                for vol in pod.get("volumes", []):
                    if "persistentVolumeClaim" in vol:
                        assert vol["persistentVolumeClaim"]["claimName"] in pvcs, (name, where)
        for sts in _by_kind(docs, "StatefulSet"):
            assert sts["spec"]["serviceName"] in services
        config = next(d for d in docs if d["kind"] == "ConfigMap")["data"]
        host = re.search(r"endpoint=([\w.-]+):", config["LORI_STORE_URL"]).group(1)
        assert host in services
        assert config["LORI_SERVER"].split(":")[0] in services
        assert config["LORI_RAY_ADDRESS"] == "ray://lori-ray-head-svc:10001"  # KubeRay's head Service


def test_images_pinned_and_ray_version_matches(rendered):
    ray_pin = re.search(r"^ray==(\S+)$", (ROOT / "infra/docker/constraints.txt").read_text(), re.M).group(1)
    for name, docs in rendered.items():
        assert _one(docs, "RayCluster")["spec"]["rayVersion"] == ray_pin
        for obj in docs:
            for where, pod in pod_specs(obj):
                for c in containers(pod):
                    image = c["image"]
                    tag = image.rsplit("/", 1)[-1].partition(":")[2]
                    assert tag and tag != "latest", (name, where, image)


def test_pods_run_as_non_root(rendered):
    for name, docs in rendered.items():
        for obj in docs:
            for where, pod in pod_specs(obj):
                assert pod["securityContext"]["runAsNonRoot"] is True, (name, where)


def test_coordinator_deployment(rendered):
    for docs in rendered.values():
        dep = next(d for d in _by_kind(docs, "Deployment") if d["metadata"]["name"] == "lori-coordinator")
        assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"]["type"] == "Recreate"
        (c,) = dep["spec"]["template"]["spec"]["containers"]
        assert c["args"][0] == "serve"
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert c[probe]["grpc"]["port"] == 50051
        (mount,) = c["volumeMounts"]
        config = next(d for d in docs if d["kind"] == "ConfigMap")["data"]
        assert config["LORI_DB"].startswith(mount["mountPath"] + "/")
        assert {e["name"] for e in c["env"]} >= {"LORI_AUTH_TOKENS", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}


def _selects(selector: dict, labels: dict) -> bool:
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        assert expr["operator"] == "In"
        if labels.get(expr["key"]) not in expr["values"]:
            return False
    return True


def test_networkpolicies_admit_only_coordinator_and_ray(rendered):
    for name, docs in rendered.items():
        pods = {labels["lori.io/role"]: labels for obj in docs for labels in pod_labels(obj)}
        assert set(pods) == {"minio", "minio-init", "coordinator", "scheduler", "ray-head", "ray-worker"}
        policies = {p["metadata"]["name"]: p["spec"] for p in _by_kind(docs, "NetworkPolicy")}
        for policy, target, allowed in (
            ("minio-ingress", "minio", {"coordinator", "ray-head", "ray-worker", "minio-init"}),
            ("ray-head-ingress", "ray-head", {"coordinator", "ray-head", "ray-worker"}),
        ):
            spec = policies[policy]
            assert spec["policyTypes"] == ["Ingress"]
            assert {r for r, lab in pods.items() if _selects(spec["podSelector"], lab)} == {target}, name
            admitted = {r for r, lab in pods.items() for rule in spec["ingress"] for peer in rule["from"]
                        if "namespaceSelector" not in peer and _selects(peer["podSelector"], lab)}
            assert admitted == allowed, (name, policy, admitted)
            assert "scheduler" not in admitted


def test_cronjob_triggers_schedule_through_cli(rendered):
    for docs in rendered.values():
        cron = _one(docs, "CronJob")
        assert cron["spec"]["concurrencyPolicy"] == "Forbid"
        (c,) = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
        assert c["args"][:3] == ["lori", "schedule", "trigger"]
        assert c["args"][4:] == ["--server", "$(LORI_SERVER)"]
        assert {e["name"] for e in c["env"]} == {"LORI_SERVER", "LORI_TOKEN"}


def test_credentials_are_not_committed():
    ignored = subprocess.run(["git", "check-ignore", "-q", str(K8S / "base" / "secrets.env")], cwd=ROOT,
                             check=False)
    assert ignored.returncode == 0, "infra/k8s/base/secrets.env must be git-ignored"
    for line in (K8S / "base" / "secrets.env.example").read_text().splitlines():
        if line and not line.startswith("#"):
            assert line.split("=", 1)[1].startswith("CHANGE_ME"), line
    for path in K8S.rglob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and "apiVersion" in doc:
                assert doc.get("kind") != "Secret", f"{path}: Secrets come from the generator only"
