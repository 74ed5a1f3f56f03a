"""The quickstart runs end to end on the tiny model (what CI runs): real Ray, store, SQLite, gRPC."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_quickstart_tiny(tmp_path):
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1", "LORI_HOME": str(tmp_path / "home")}
    out = subprocess.run([sys.executable, "-m", "coordinator.quickstart", "--tiny", "--out", str(tmp_path / "qs"),
                          "--steps", "4"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "after update" in out.stdout and "merged (sum_b, exact)" in out.stdout
    report = json.loads((tmp_path / "qs" / "quickstart_report.json").read_text())
    assert set(report["scores"]) == {"arith", "reverse", "capital", "french"}
    assert len(report["adapters"]) == 3 and report["merged"].startswith("merge-")
    cont = report["continual"]
    assert set(cont["before"]) == {"arith", "reverse", "capital"} and cont["gate"]["enabled"]
    png = tmp_path / "qs" / "quickstart_scores.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_quickstart_eval_splits_are_held_out():
    """Every task's eval split is deterministic and disjoint from its training split (no memorisation)."""
    from coordinator.quickstart import make_datasets

    for n_train, n_eval in ((32, 8), (96, 20)):  # --tiny and the real run
        data = make_datasets(n_train, n_eval)
        assert data == make_datasets(n_train, n_eval)
        assert set(data) == {"arith", "reverse", "capital", "french"}
        for task, (train, ev) in data.items():
            assert len(train) == n_train and len(ev) == n_eval, task
            eval_prompts = {r["prompt"] for r in ev}
            assert len(eval_prompts) == n_eval, task  # distinct eval examples
            assert not eval_prompts & {r["prompt"] for r in train}, task
            # capital/french: one prompt per country/word, so the held-out entities are unseen too
