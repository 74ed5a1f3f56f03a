"""S3Store against a real SeaweedFS: independent-client layout, faults, errors, auth."""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time

import pytest

from worker.store import (
    AdapterNotFound,
    ObjectNotFound,
    Registry,
    RetryPolicy,
    S3Store,
    Store,
    StoreError,
    StoreUnavailable,
    adapter_ids,
    open_store,
    publish_adapter,
    read_adapter_blob,
    read_manifest,
    upload_dataset,
)

MIB = 1 << 20
FAST = RetryPolicy(attempts=3, base_delay=0.05, max_delay=0.2)


def test_independent_client_sees_documented_layout(seaweed, s3_store):
    """boto3, knowing nothing of our code, finds DESIGN.md §3's layout and verifiable blobs."""
    blob = b"B" * (6 * MIB + 3)
    publish_adapter(s3_store, "ad-l", {"adapter.safetensors": blob, "peft/adapter_config.json": b"{}",
                                        "peft/adapter_model.safetensors": b"dense"},
                    {"family": "fam", "task": "math"})
    upload_dataset(s3_store, "arith", b'{"text": "x"}\n', b'{"text": "y"}\n')
    s3_store.put_bytes("jobs/j1/checkpoints/step-10.safetensors", b"ckpt")
    s3_store.put_bytes("rounds/math/3/client-a.safetensors", b"delta")
    Registry(s3_store).set_pointer("fam", "production", "ad-l")

    boto = seaweed.boto3_client()
    pages = boto.get_paginator("list_objects_v2").paginate(Bucket=s3_store.bucket, Prefix="lori/")
    keys = sorted(o["Key"] for p in pages for o in p.get("Contents", []))
    assert keys == sorted([
        "lori/adapters/ad-l/adapter.safetensors", "lori/adapters/ad-l/manifest.json",
        "lori/adapters/ad-l/peft/adapter_config.json", "lori/adapters/ad-l/peft/adapter_model.safetensors",
        "lori/datasets/arith/train.jsonl", "lori/datasets/arith/eval.jsonl",
        "lori/datasets/arith/manifest.json", "lori/jobs/j1/checkpoints/step-10.safetensors",
        "lori/rounds/math/3/client-a.safetensors", "lori/pointers/fam/production.json"])
    manifest = json.loads(boto.get_object(Bucket=s3_store.bucket, Key="lori/adapters/ad-l/manifest.json")
                          ["Body"].read())
    for name, entry in manifest["blobs"].items():
        body = boto.get_object(Bucket=s3_store.bucket, Key=f"lori/adapters/ad-l/{name}")["Body"].read()
        assert hashlib.sha256(body).hexdigest() == entry["sha256"] and len(body) == entry["size"]
    pointer = json.loads(boto.get_object(Bucket=s3_store.bucket, Key="lori/pointers/fam/production.json")
                         ["Body"].read())
    assert pointer["adapter_id"] == "ad-l"


def test_large_objects_go_multipart(seaweed, s3_store_factory):
    store = s3_store_factory(part_size=5 * MIB)
    data = bytes(range(256)) * (11 * MIB // 256)
    store.put_bytes("big.bin", data)
    head = seaweed.boto3_client().head_object(Bucket=store.bucket, Key="lori/big.bin")
    assert head["ETag"].strip('"').endswith("-3")  # S3 multipart ETag: md5-of-md5s + "-<parts>"
    assert store.get_bytes("big.bin") == data


class _StopAfterFirstBlob(Store):
    """Delegating store that stops the S3 server once the first blob of an adapter is written."""

    def __init__(self, inner: S3Store, server) -> None:
        self.inner, self.server, self.blobs_written = inner, server, 0

    url = property(lambda self: self.inner.url)

    def put_bytes(self, key, data):
        self.inner.put_bytes(key, data)
        self.blobs_written += 1
        if self.blobs_written == 1:
            self.server.stop()

    def __getattr__(self, name):
        return getattr(self.inner, name)

    get_bytes = lambda self, k: self.inner.get_bytes(k)  # noqa: E731
    exists = lambda self, k: self.inner.exists(k)  # noqa: E731
    list = lambda self, p="": self.inner.list(p)  # noqa: E731
    delete = lambda self, k: self.inner.delete(k)  # noqa: E731
    put_file = lambda self, k, p: self.inner.put_file(k, p)  # noqa: E731
    get_file = lambda self, k, p: self.inner.get_file(k, p)  # noqa: E731
    read_versioned = lambda self, k: self.inner.read_versioned(k)  # noqa: E731
    put_if = lambda self, k, d, t: self.inner.put_if(k, d, t)  # noqa: E731


def test_server_stopped_mid_upload_leaves_no_partial_adapter(seaweed_private):
    """Stop the server between blobs; nothing is listed or readable; after restart the same
    publish succeeds."""
    store = open_store(seaweed_private.url("faults", "p"), retry=FAST, part_size=5 * MIB)
    blobs = {"a-first.bin": b"1" * 1000, "b-big.safetensors": bytes(range(256)) * (12 * MIB // 256)}
    manifest = {"family": "fam", "task": "math", "kind": "lori-s"}
    flaky = _StopAfterFirstBlob(store, seaweed_private)
    t0 = time.monotonic()
    with pytest.raises(StoreUnavailable, match="after 3 attempts") as info:
        publish_adapter(flaky, "ad-f", blobs, manifest)
    assert info.value.attempts == 3 and time.monotonic() - t0 < 30
    with pytest.raises(StoreUnavailable, match=seaweed_private.endpoint):
        read_manifest(store, "ad-f")

    seaweed_private.start()
    assert adapter_ids(store) == [] and Registry(store).list() == []
    with pytest.raises(AdapterNotFound, match="ad-f"):
        read_adapter_blob(store, "ad-f", "a-first.bin")
    assert store.exists("adapters/ad-f/a-first.bin")  # orphan blob only; not an adapter

    stored = publish_adapter(store, "ad-f", blobs, manifest)
    assert adapter_ids(store) == ["ad-f"] and stored["blobs"]["b-big.safetensors"]["size"] == 12 * MIB
    assert read_adapter_blob(store, "ad-f", "b-big.safetensors") == blobs["b-big.safetensors"]


def test_server_stopped_during_multipart_put(seaweed_private):
    """The server dies while a multipart object is being uploaded: the key never appears."""
    store = open_store(seaweed_private.url("mpu", ""), retry=FAST, part_size=5 * MIB, parallel=1)
    store.put_bytes("warm", b"x")
    data = bytes(range(256)) * (60 * MIB // 256)
    errors: list[BaseException] = []

    def upload() -> None:
        try:
            publish_adapter(store, "ad-m", {"adapter.safetensors": data}, {"family": "f", "task": "t"})
        except StoreError as exc:
            errors.append(exc)

    boto = seaweed_private.boto3_client()
    th = threading.Thread(target=upload)
    th.start()
    deadline = time.monotonic() + 20
    while not boto.list_multipart_uploads(Bucket="mpu").get("Uploads") and time.monotonic() < deadline:
        time.sleep(0.01)
    seaweed_private.stop()  # a multipart upload is in flight
    th.join(60)
    seaweed_private.start()
    assert errors, "the upload should have failed with the server down"
    assert adapter_ids(store) == [] and not store.exists("adapters/ad-m/manifest.json")
    with pytest.raises(AdapterNotFound):
        read_manifest(store, "ad-m")
    publish_adapter(store, "ad-m", {"adapter.safetensors": data}, {"family": "f", "task": "t"})
    assert read_adapter_blob(store, "ad-m", "adapter.safetensors") == data


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_unreachable_endpoint_bounded_retries():
    endpoint = f"127.0.0.1:{_closed_port()}"
    store = open_store(f"s3://bkt/x?endpoint={endpoint}&secure=false&access_key=a&secret_key=b",
                       retry=FAST)
    t0 = time.monotonic()
    with pytest.raises(StoreUnavailable, match=endpoint) as info:
        store.get_bytes("k")
    assert info.value.attempts == 3 and "after 3 attempts" in str(info.value)
    assert time.monotonic() - t0 < 5


def test_wrong_credentials_not_retried(seaweed):
    store = open_store(f"s3://auth-test/?endpoint={seaweed.endpoint}&secure=false"
                       f"&access_key={seaweed.access_key}&secret_key=wrong-secret",
                       retry=RetryPolicy(attempts=5, base_delay=1.0, max_delay=1.0))
    t0 = time.monotonic()
    with pytest.raises(StoreError, match="SignatureDoesNotMatch|AccessDenied|InvalidAccessKeyId") as info:
        store.put_bytes("k", b"v")
    assert not isinstance(info.value, StoreUnavailable)
    assert time.monotonic() - t0 < 1.0  # a 4xx is not retried (a retry would sleep >= 0.75 s)


def test_bucket_created_on_first_use_and_missing_bucket_named(seaweed):
    url = seaweed.url("lazy-bucket-1", "")
    store = open_store(url)
    store.put_bytes("k", b"v")
    names = [b["Name"] for b in seaweed.boto3_client().list_buckets()["Buckets"]]
    assert "lazy-bucket-1" in names
    strict = open_store(seaweed.url("never-made-bucket", ""), create_bucket=False)
    with pytest.raises(StoreError, match="never-made-bucket"):
        strict.get_bytes("k")


@pytest.mark.parametrize("bucket", ["Bad_Bucket", "ab", "-lead", "a..b", "192.168.0.1", "x" * 64])
def test_bad_bucket_names_named(bucket):
    with pytest.raises(ValueError, match="bucket"):
        open_store(f"s3://{bucket}/p?endpoint=127.0.0.1:1&secure=false")


def test_missing_key_not_retried(s3_store_factory):
    store = s3_store_factory(retry=RetryPolicy(attempts=5, base_delay=1.0, max_delay=1.0))
    store.put_bytes("present", b"x")
    t0 = time.monotonic()
    with pytest.raises(ObjectNotFound, match="absent/key"):
        store.get_bytes("absent/key")
    assert time.monotonic() - t0 < 1.0


def test_credentials_from_environment(seaweed, monkeypatch):
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL",
                "AWS_ENDPOINT_URL_S3", "MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MINIO_ROOT_USER", seaweed.access_key)
    monkeypatch.setenv("MINIO_ROOT_PASSWORD", seaweed.secret_key)
    url = f"s3://env-creds/?endpoint={seaweed.endpoint}&secure=false"
    open_store(url).put_bytes("k", b"minio-env")
    for k, v in seaweed.env().items():
        monkeypatch.setenv(k, v)
    store = open_store("s3://env-creds/")  # endpoint and credentials both from AWS_* variables
    assert store.get_bytes("k") == b"minio-env"


def test_bench_smoke(seaweed, monkeypatch, capsys):
    """bench/store.py runs end to end and ends with one JSON object holding both ratios."""
    import importlib.util
    from pathlib import Path

    for k, v in seaweed.env().items():
        monkeypatch.setenv(k, v)
    path = Path(__file__).resolve().parents[1] / "bench" / "store.py"
    spec = importlib.util.spec_from_file_location("bench_store", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--endpoint", seaweed.endpoint, "--size-mb", "6", "--reps", "1", "--json"]) == 0
    fig = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert fig["upload_ratio_vs_boto3"] > 0 and fig["download_ratio_vs_boto3"] > 0


def test_object_replaced_mid_read_restarts_on_new_version(seaweed, s3_store_factory):
    """Ranged reads are pinned to the first range's ETag: a concurrent replacement makes the read
    start over and return one whole version, never a mix."""

    class ReplaceOnce(S3Store):
        replaced = False

        def _fetch(self, full, offset, length, etag):  # noqa: ANN001, ANN202
            if not self.replaced:
                self.replaced = True
                self.put_bytes("obj", new)  # lands between the first range and the others
            return super()._fetch(full, offset, length, etag)

    base = s3_store_factory(part_size=5 * MIB, parallel=2)
    old, new = b"o" * (11 * MIB), b"n" * (11 * MIB + 5)
    base.put_bytes("obj", old)
    store = ReplaceOnce(base.config)
    assert store.get_bytes("obj") == new and store.replaced
