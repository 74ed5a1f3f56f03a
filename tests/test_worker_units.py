"""Unit tests of the worker's plain-Python parts: specs, update validation, checkpoints, tensors I/O."""

from __future__ import annotations

import math

import pytest
import torch

from lori import LoriConfig
from worker.checkpoints import latest_checkpoint, list_checkpoints, save_checkpoint
from worker.federated import b_from_bytes, b_to_bytes
from worker.publish import adapter_id_for
from worker.recipe import RecipeConfig
from worker.spec import FederatedSpec, JobSpec
from worker.store import LocalStore
from worker.validation import delta_norm, validate_update


@pytest.fixture
def cfg():
    return RecipeConfig(base_model="/nonexistent/model", task="t", lori=LoriConfig(rank=2))


def test_job_spec_validation(cfg):
    spec = JobSpec(recipe=cfg, dataset="arith", num_cpus=2, checkpoint_every=5)
    assert spec.max_retries == 2 and spec.kind == "job"
    for bad, field in [(dict(dataset=""), "dataset"), (dict(num_cpus=-1), "num_cpus"),
                       (dict(checkpoint_every=1.5), "checkpoint_every"), (dict(max_retries=-1), "max_retries"),
                       (dict(num_cpus=0, num_gpus=0), "num_cpus"), (dict(recipe="x"), "recipe")]:
        kwargs = {"recipe": cfg, "dataset": "arith", **bad}
        with pytest.raises(ValueError, match=field):
            JobSpec(**kwargs)


def test_federated_spec_validation(cfg):
    fed = FederatedSpec(recipe=cfg, client_datasets=["a", "b", "c"], quorum=2)
    assert fed.num_clients == 3 and fed.rounds == 2 and fed.quorum_count() == 2
    assert FederatedSpec(recipe=cfg, dataset="d", num_clients=4, quorum=0.5).quorum_count() == 2
    assert FederatedSpec(recipe=cfg, dataset="d", num_clients=3).quorum_count() == 3  # 1.0 = all
    with pytest.raises(ValueError, match="quorum"):
        FederatedSpec(recipe=cfg, client_datasets=["a", "b"], quorum=3)
    with pytest.raises(ValueError, match="client_resources"):
        FederatedSpec(recipe=cfg, client_datasets=["a", "b"], client_resources=[{"x": 1}])
    with pytest.raises(ValueError, match="dataset"):
        FederatedSpec(recipe=cfg, client_datasets=["a"], dataset="b")
    with pytest.raises(ValueError, match="mask_adapter_id"):
        FederatedSpec(recipe=cfg, dataset="d", num_clients=2, dense_rounds=0, sparse_rounds=1)
    with pytest.raises(ValueError, match="num_clients"):
        FederatedSpec(recipe=cfg, dataset="d")


def test_validate_update_rejects_each_fault():
    shapes = {"m": (3, 2)}
    g = {"m": torch.zeros(3, 2)}
    mask = {"m": torch.tensor([[True, False], [False, True], [True, True]])}
    good = {"m": torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.5, 0.0]])}
    assert validate_update(good, 4, shapes, g, mask, max_delta_norm=10.0) == []
    assert math.isclose(delta_norm(good, g), math.sqrt(1 + 4 + 0.25))
    assert "shape" in validate_update({"m": torch.zeros(2, 2)}, 4, shapes, g, mask)[0]
    assert "modules" in validate_update({"x": torch.zeros(3, 2)}, 4, shapes, g, mask)[0]
    nan = {"m": good["m"].clone()}
    nan["m"][0, 0] = float("nan")
    assert "non-finite" in validate_update(nan, 4, shapes, g, mask)[0]
    leak = {"m": good["m"].clone()}
    leak["m"][0, 1] = 0.1
    assert "outside the task mask" in validate_update(leak, 4, shapes, g, mask)[0]
    assert "exceeds the bound" in validate_update(good, 4, shapes, g, mask, max_delta_norm=1.0)[0]
    assert "count" in validate_update(good, 0, shapes, g, mask)[0]


def test_checkpoints_keep_newest(tmp_path):
    store = LocalStore(tmp_path)
    for step in (2, 4, 10, 6):
        save_checkpoint(store, "j1", step, f"ck{step}".encode(), keep=2)
    assert [s for s, _ in list_checkpoints(store, "j1")] == [6, 10]
    assert latest_checkpoint(store, "j1") == (10, b"ck10")
    assert latest_checkpoint(store, "other") is None


def test_b_bytes_roundtrip_and_ids():
    b = {"a.q_proj": torch.randn(4, 2), "a.v_proj": torch.randn(3, 2)}
    back, meta = b_from_bytes(b_to_bytes(b, {"count": 7}))
    assert meta["count"] == "7"
    for k in b:
        assert torch.equal(back[k], b[k])
    assert adapter_id_for("job-1") == "job-1"
    with pytest.raises(ValueError):
        adapter_id_for("bad/id")
