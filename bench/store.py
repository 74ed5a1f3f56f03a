"""Benchmark: S3Store (minio SDK) vs boto3 upload/download throughput on one local SeaweedFS.

    .venv/bin/python bench/store.py [--size-mb 100] [--reps 3] [--json]
    .venv/bin/python bench/store.py --endpoint 127.0.0.1:8333   # existing server, AWS_* credentials

Starts its own `weed mini` (127.0.0.1, free ports, telemetry off) unless --endpoint is given.
Each repetition uploads and downloads the same random blob through both clients, alternating
the order; throughputs are medians, ratios medians of the per-repetition ratios. boto3 uses its managed transfer (`upload_fileobj` /
`download_fileobj`, multipart and parallel ranged GETs), its fastest path. Prints a table; with
--json the last line is one JSON object with the figures, including `upload_ratio_vs_boto3` and
`download_ratio_vs_boto3` (S3Store MB/s divided by boto3 MB/s; goal >= 0.9).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from worker.store import S3Store, open_store  # noqa: E402

MB = 1_000_000


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _boto3(endpoint: str, access_key: str, secret_key: str, region: str):  # noqa: ANN202
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=f"http://{endpoint}", aws_access_key_id=access_key,
                        aws_secret_access_key=secret_key, region_name=region,
                        config=Config(s3={"addressing_style": "path"}, max_pool_connections=16))


def run(endpoint: str, access_key: str, secret_key: str, region: str, size_mb: int, reps: int) -> dict:
    """Measure both clients against `endpoint`; return the figures."""
    store = open_store(f"s3://bench-store/s?endpoint={endpoint}&secure=false&region={region}"
                       f"&access_key={access_key}&secret_key={secret_key}")
    assert isinstance(store, S3Store)
    boto = _boto3(endpoint, access_key, secret_key, region)
    bucket = store.bucket
    data = os.urandom(size_mb * MB)
    store.put_bytes("warmup", b"w")  # creates the bucket, opens connections
    boto.put_object(Bucket=bucket, Key="s/warmup-boto", Body=b"w")
    up = {"store": [], "boto3": []}
    down = {"store": [], "boto3": []}

    def store_up() -> None:
        store.put_bytes("blob-store", data)

    def boto_up() -> None:
        boto.upload_fileobj(io.BytesIO(data), bucket, "s/blob-boto3")

    def store_down() -> None:
        assert len(store.get_bytes("blob-store")) == len(data)

    def boto_down() -> None:
        buf = io.BytesIO()
        boto.download_fileobj(bucket, "s/blob-boto3", buf)
        assert buf.getbuffer().nbytes == len(data)

    for rep in range(reps):
        order = [("store", store_up, store_down), ("boto3", boto_up, boto_down)]
        if rep % 2:
            order.reverse()
        for name, put, _ in order:
            up[name].append(_timed(put))
        for name, _, get in order:
            down[name].append(_timed(get))
    for key in ("blob-store", "warmup"):
        store.delete(key)
    for key in ("s/blob-boto3", "s/warmup-boto"):
        boto.delete_object(Bucket=bucket, Key=key)

    def mbps(times: list[float]) -> float:
        return size_mb / statistics.median(times)

    fig = {
        "size_mb": size_mb, "reps": reps, "part_size_mib": store.config.part_size >> 20,
        "parallel": store.config.parallel,
        "store_upload_mbps": mbps(up["store"]), "boto3_upload_mbps": mbps(up["boto3"]),
        "store_download_mbps": mbps(down["store"]), "boto3_download_mbps": mbps(down["boto3"]),
    }
    # Ratios are medians of per-repetition ratios: the two clients of one repetition run back to
    # back under the same background load, which a ratio of separate medians would not cancel.
    for op, t in (("upload", up), ("download", down)):
        fig[f"{op}_ratio_vs_boto3"] = statistics.median(b / s for s, b in zip(t["store"], t["boto3"], strict=True))
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in fig.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-mb", type=int, default=100, help="blob size in MB (default 100)")
    ap.add_argument("--reps", type=int, default=3, help="repetitions; medians are reported")
    ap.add_argument("--endpoint", help="existing S3 endpoint host:port (credentials from AWS_* env)")
    ap.add_argument("--json", action="store_true", help="print one JSON object on the last line")
    args = ap.parse_args(argv)
    if args.size_mb < 1 or args.reps < 1:
        ap.error("--size-mb and --reps must be >= 1")
    if args.endpoint:
        fig = run(args.endpoint, os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"],
                  os.environ.get("AWS_REGION", "us-east-1"), args.size_mb, args.reps)
    else:
        from tests.fixtures.seaweed import SeaweedServer

        with SeaweedServer() as sw:
            fig = run(sw.endpoint, sw.access_key, sw.secret_key, sw.region, args.size_mb, args.reps)
    print(f"{'':10s}{'S3Store MB/s':>14s}{'boto3 MB/s':>12s}{'ratio':>8s}")
    for op in ("upload", "download"):
        print(f"{op:10s}{fig[f'store_{op}_mbps']:14.1f}{fig[f'boto3_{op}_mbps']:12.1f}"
              f"{fig[f'{op}_ratio_vs_boto3']:8.2f}")
    if args.json:
        print(json.dumps(fig))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
