"""The whole quality benchmark, ``--quick`` (tiny random model), end to end: the pipeline cannot rot."""

import json

import pytest

from bench.quality import run

pytestmark = pytest.mark.timeout(600)


def test_quick_pipeline_end_to_end(tmp_path, capsys):
    out = tmp_path / "out"
    assert run.main(["--quick", "--json", "--out", str(out)]) == 0
    stdout = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(stdout[-1])  # stdout ends with one JSON object
    assert {"single", "merged", "continual", "runtime_s"} <= set(summary)
    tasks = ["safety", "arith", "code", "nlu"]
    for method in ("lora", "lori-d", "lori-s"):
        assert set(summary["single"][method]) == set(tasks)
    assert set(summary["merged"]) == {"lora-linear", "lora-ties", "lora-dare", "lora-cat", "lori-concat", "lori-bsum"}
    for scores in summary["merged"].values():
        assert set(scores) == set(tasks) and all(0.0 <= v <= 1.0 for v in scores.values())
    assert set(summary["continual"]) == {"lora", "lori-d", "lori-s-overlap", "lori-s-protected"}
    for row in summary["continual"]["lori-s-protected"].values():
        assert row["safety_coords_identical"] is True  # protected masks never touch safety's coordinates
    assert summary["runtime_s"] > 0

    full = json.loads((out / "results.json").read_text())
    assert full["details"]["masks"]["lori-bsum_disjoint_jaccard_mean"] == 0.0
    md = (out / "results.md").read_text()
    assert "## Merged" in md and "## Continual" in md and "## Claims, as measured" in md
    for name in ("single.png", "merged.png", "continual.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_stage_and_task_subsets(tmp_path, capsys):
    assert run.main(["--quick", "--json", "--no-plots", "--tasks", "arith", "--stages", "single",
                     "--out", str(tmp_path)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(summary["single"]["lora"]) == {"arith"} and summary["merged"] == {} and summary["continual"] == {}


def test_config_validation():
    from bench.quality.pipeline import BenchConfig

    with pytest.raises(ValueError, match="tasks"):
        BenchConfig(model="m", tasks=("nope",))
    with pytest.raises(ValueError, match="single"):
        BenchConfig(model="m", stages=("merged",))
    with pytest.raises(ValueError, match="safety"):
        BenchConfig(model="m", tasks=("arith", "code"), stages=("single", "continual"))
