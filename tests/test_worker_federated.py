"""Federated rounds on Ray: exact FedAvg of B, rejected poisoned updates, pinning to a site's node."""

from __future__ import annotations

import json

import pytest
import torch

from worker import FederatedSpec, JobRunner
from worker.federated import b_from_bytes, round_prefix
from worker.publish import load_adapter
from worker.store import LocalStore, read_manifest

pytestmark = pytest.mark.timeout(300)


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def fed_env(ray_cluster, tiny_task_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("fed-store")
    data = tmp_path_factory.mktemp("fed-data")
    train = tiny_task_data.train
    sites = [_write(data / f"site-{k}.jsonl", train[a:b]) for k, (a, b) in enumerate([(0, 8), (8, 20), (20, 32)])]
    eval_path = _write(data / "eval.jsonl", tiny_task_data.eval)
    runner = JobRunner(str(root), ray_address=ray_cluster.address)
    yield LocalStore(root), runner, sites, eval_path
    runner.shutdown()


def _poisoning_client(store, cfg, task, should_stop=None):
    """Client 2 is malicious: NaN in round 1, support outside the mask in round 2."""
    from worker.federated import train_client

    b, count, info = train_client(store, cfg, task, should_stop)
    if task.client == 2:
        name = sorted(b)[0]
        if task.phase == "dense":
            b[name][0, 0] = float("nan")
        else:
            mask = b_from_bytes(store.get_bytes(task.mask_key))[0][name]
            b[name][~mask] = 0.5
    return b, count, info


def test_three_clients_two_rounds_exact_fedavg_and_poison_rejected(fed_env, tiny_recipe_config):
    store, runner, sites, eval_path = fed_env
    cfg = tiny_recipe_config(task="fedcopy")
    fed = FederatedSpec(recipe=cfg, client_datasets=sites, eval_dataset=eval_path, dense_rounds=1, sparse_rounds=1,
                        local_steps=3, quorum=2, deadline_s=200, max_delta_norm=100.0,
                        client_fn=_poisoning_client)
    runner.submit("fed-1", fed)
    st = runner.wait("fed-1", timeout=280)
    assert st.state == "succeeded", st.error
    rounds = [e for e in st.events if e["phase"].startswith("round-") and e.get("status") == "end"]
    assert [e["round"] for e in rounds] == [1, 2] and all(e["rejected"] == [2] for e in rounds)

    for n in (1, 2):
        rp = round_prefix("fedcopy", "fed-1", n)
        report = json.loads(store.get_bytes(rp + "report.json"))
        assert report["accepted"] == [0, 1]
        assert list(report["rejected"]) == ["2"]
        why = report["rejected"]["2"][0]
        assert ("non-finite" in why) if n == 1 else ("outside the task mask" in why)
        counts = [report["counts"]["0"], report["counts"]["1"]]
        assert counts == [8, 12]
        clients = [b_from_bytes(store.get_bytes(f"{rp}client-{k}.safetensors"))[0] for k in (0, 1)]
        global_b = b_from_bytes(store.get_bytes(rp + "global.safetensors"))[0]
        for name in global_b:  # B = Σ n_k B_k / Σ n_k, exactly (float64 accumulation -> float32)
            expected = ((8 * clients[0][name].double() + 12 * clients[1][name].double()) / 20).float()
            assert torch.equal(global_b[name], expected)
            assert not torch.equal(clients[0][name], clients[1][name])

    adapter = load_adapter(store, "fed-1")
    final = b_from_bytes(store.get_bytes(round_prefix("fedcopy", "fed-1", 2) + "global.safetensors"))[0]
    mask = b_from_bytes(store.get_bytes(round_prefix("fedcopy", "fed-1") + "mask.safetensors"))[0]
    for name in final:
        assert torch.equal(adapter.b[name], final[name]) and torch.equal(adapter.masks[name], mask[name])
    manifest = read_manifest(store, "fed-1")
    assert manifest["kind"] == "fedavg" and manifest["metrics"]["rejected_updates"] == 2
    assert "eval_loss" in manifest["metrics"]
    assert [r["accepted"] for r in manifest["federated"]["rounds"]] == [[0, 1], [0, 1]]


def test_client_pinned_to_site_resource_runs_on_that_node(ray_two_nodes, fed_env, tiny_recipe_config):
    store, runner, sites, _ = fed_env
    fed = FederatedSpec(recipe=tiny_recipe_config(task="pinned", method="lori-d", sparse_steps=0),
                        client_datasets=sites[:2], dense_rounds=1, sparse_rounds=0, local_steps=2,
                        client_resources=[None, {"site-b": 0.01}], deadline_s=200)
    runner.submit("fed-pinned", fed)
    st = runner.wait("fed-pinned", timeout=280)
    assert st.state == "succeeded", st.error
    report = st.result.extra["rounds"][0]
    assert report["accepted"] == [0, 1]
    assert report["clients"]["1"]["node_ip"] == ray_two_nodes.worker_ip == "127.0.0.3"
    assert load_adapter(store, "fed-pinned").masks is None  # dense rounds only
