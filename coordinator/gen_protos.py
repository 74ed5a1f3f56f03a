"""Generate the gRPC stubs of `protos/coordinator/v1/*.proto` into `coordinator/v1/`.

    python -m coordinator.gen_protos            # regenerate in place
    python -m coordinator.gen_protos --out DIR  # into DIR/coordinator/v1/ (the drift test uses this)

The proto paths mirror the Python package (`coordinator/v1/x.proto` -> `coordinator.v1.x_pb2`), so
the generated imports (`from coordinator.v1 import types_pb2`) already name the package path.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
PROTO_DIR = PROTO_ROOT / "coordinator" / "v1"


def generate(out_root: Path = ROOT) -> list[Path]:
    """Run protoc (grpcio-tools) for every proto; return the generated files."""
    import grpc_tools
    from grpc_tools import protoc

    protos = sorted(p.relative_to(PROTO_ROOT).as_posix() for p in PROTO_DIR.glob("*.proto"))
    include = Path(grpc_tools.__file__).parent / "_proto"
    out_root = Path(out_root)
    (out_root / "coordinator" / "v1").mkdir(parents=True, exist_ok=True)
    args = ["grpc_tools.protoc", f"-I{PROTO_ROOT}", f"-I{include}", f"--python_out={out_root}",
            f"--grpc_python_out={out_root}", *protos]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed: {' '.join(args)}")
    out = out_root / "coordinator" / "v1"
    return sorted(p for p in out.iterdir() if p.name.endswith(("_pb2.py", "_pb2_grpc.py")))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT, help="output root (default: the repository)")
    args = parser.parse_args(argv)
    for path in generate(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
