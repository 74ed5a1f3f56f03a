"""The committed stubs in coordinator/v1/ are exactly what the protos generate."""

from pathlib import Path

from coordinator.gen_protos import ROOT, generate


def test_generated_stubs_match_protos(tmp_path):
    generated = generate(tmp_path)
    assert generated, "protoc produced nothing"
    for path in generated:
        committed = ROOT / "coordinator" / "v1" / path.name
        assert committed.exists(), f"{committed} missing: run python -m coordinator.gen_protos"
        assert committed.read_bytes() == path.read_bytes(), (
            f"{committed} drifted from protos/: run python -m coordinator.gen_protos")
    names = {p.name for p in generated}
    stale = {p.name for p in (ROOT / "coordinator" / "v1").glob("*_pb2*.py")} - names
    assert not stale, f"stubs without a proto: {sorted(stale)}"
    assert Path(ROOT / "coordinator" / "v1" / "__init__.py").exists()
