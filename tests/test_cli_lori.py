"""The `lori` CLI against a real coordinator on localhost."""

import json

import pytest

from coordinator.cli import build_parser, main
from tests.fixtures.coordinator import TOKEN


def test_parser_has_the_agreed_commands():
    p = build_parser()
    for argv in (["serve", "--port", "0", "--store", "/tmp/s", "--db", "/tmp/d", "--ray-address", "auto"],
                 ["submit", "x.yaml"], ["watch", "j"], ["jobs"], ["adapters"], ["merge", "a", "b"],
                 ["continual", "a", "s.yaml"], ["export", "a", "--to", "/tmp/x"],
                 ["schedule", "add", "n", "--cron", "0 2 * * *", "--family", "f"], ["schedule", "list"],
                 ["schedule", "delete", "n"], ["schedule", "trigger", "n", "--server", "h:1"],
                 ["dataset", "upload", "n", "--train", "t.jsonl"]):
        assert p.parse_args(argv).command == argv[0]


@pytest.fixture
def cli(coordinator, monkeypatch, capsys):
    monkeypatch.setenv("LORI_SERVER", coordinator.address)
    monkeypatch.setenv("LORI_TOKEN", TOKEN)

    def run(*argv, rc=0):
        code = main(list(argv))
        out = capsys.readouterr()
        assert code == rc, out.err
        return out.out

    return run


def test_cli_end_to_end(cli, tmp_path, monkeypatch):
    rows = "".join(json.dumps({"prompt": f"{i}+1=", "response": str(i + 1)}) + "\n" for i in range(6))
    (tmp_path / "train.jsonl").write_text(rows)
    for name in ("arith", "copy"):
        assert "6 train" in cli("dataset", "upload", name, "--train", str(tmp_path / "train.jsonl"),
                                "--eval", str(tmp_path / "train.jsonl"))
    ids = []
    for name in ("arith", "copy"):
        (tmp_path / f"{name}.yaml").write_text(
            f"base_model: tiny-model\ntask: {name}\nfamily: fam\ndataset: {name}\n"
            "lori: {rank: 4, projection_seed: 3}\ntraining: {dense_steps: 2, sparse_steps: 2}\n")
        job = json.loads(cli("submit", str(tmp_path / f"{name}.yaml"), "--json").strip().splitlines()[-1])
        out = cli("watch", job["job_id"])
        assert "succeeded" in out
        ids.append(job["job_id"])
    jobs = json.loads(cli("jobs", "--json", "--state", "succeeded"))
    assert {j["job_id"] for j in jobs} == set(ids)
    assert "ARITH" not in cli("jobs") and "arith" in cli("jobs")
    merged = json.loads(cli("merge", *ids, "--method", "sum_b", "--task", "both", "--promote-to", "production",
                            "--json"))
    assert merged["kind"] == "merge-sum" and merged["pointers"] == ["production"]
    listing = cli("adapters", "--family", "fam")
    assert merged["adapter_id"] in listing and "production" in listing
    detail = cli("adapters", merged["adapter_id"])
    assert "lineage:" in detail and ids[0] in detail
    out = cli("export", merged["adapter_id"], "--to", str(tmp_path / "peft"))
    assert "adapter_config.json" in out and (tmp_path / "peft" / "adapter_model.safetensors").exists()
    assert "nightly" in cli("schedule", "add", "nightly", "--cron", "0 2 * * *", "--family", "fam",
                            "--gate-max-drop", "0.1")
    assert "max_drop=0.1" in cli("schedule", "list")
    assert "succeeded" in cli("schedule", "trigger", "nightly", "--watch")
    cli("schedule", "delete", "nightly")
    err = cli("schedule", "delete", "nightly", rc=2)
    assert err == ""


def test_cli_reports_errors(cli, monkeypatch, capsys):
    assert main(["jobs", "--token", "wrong"]) == 2
    assert "UNAUTHENTICATED" in capsys.readouterr().err
    assert main(["watch", "no-such-job"]) == 2
    assert "NOT_FOUND" in capsys.readouterr().err
