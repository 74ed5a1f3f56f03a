"""One contract, every `Store` implementation: LocalStore and S3Store (real SeaweedFS)."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from worker.store import (
    AdapterNotFound,
    ConflictError,
    DatasetError,
    DatasetNotFound,
    IntegrityError,
    LocalStore,
    ObjectNotFound,
    Registry,
    S3Store,
    Store,
    adapter_ids,
    open_store,
    publish_adapter,
    read_adapter_blob,
    read_adapter_file,
    read_dataset,
    read_manifest,
    upload_dataset,
)

MIB = 1 << 20


@pytest.fixture(params=["local", "s3"])
def backend(request, tmp_path) -> tuple[Store, Callable[[str, bytes], None]]:
    """(store, tamper) where tamper(key, data) overwrites an object behind the store's back."""
    if request.param == "local":
        store = open_store(str(tmp_path / "store"))
        assert isinstance(store, LocalStore)

        def tamper(key: str, data: bytes) -> None:
            (store.root / key).write_bytes(data)

        return store, tamper
    seaweed = request.getfixturevalue("seaweed")
    store = request.getfixturevalue("s3_store_factory")(part_size=5 * MIB)
    assert isinstance(store, S3Store)
    raw = seaweed.boto3_client()

    def tamper_s3(key: str, data: bytes) -> None:
        raw.put_object(Bucket=store.bucket, Key=store.config.prefix + key, Body=data)

    return store, tamper_s3


@pytest.fixture
def store(backend) -> Store:
    return backend[0]


def _manifest(family="fam", task="math", **kw) -> dict:
    base = {"family": family, "task": task, "kind": "lori-s", "base_model": "tiny", "projection_seed": 7,
            "created_at": "2025-01-01T00:00:00+00:00", "job_id": "job-1", "parents": [],
            "merge_weights": None, "dataset_digest": "d" * 64, "metrics": {"loss": 0.5}}
    base.update(kw)
    return base


class TestStoreContract:
    """Basic object semantics, identical on every backend."""

    def test_put_get_overwrite(self, store: Store):
        store.put_bytes("a/b.bin", b"one")
        assert store.get_bytes("a/b.bin") == b"one"
        store.put_bytes("a/b.bin", b"two!")
        assert store.get_bytes("a/b.bin") == b"two!"
        store.put_bytes("empty", b"")
        assert store.get_bytes("empty") == b""

    def test_exists_list_delete(self, store: Store):
        for k in ["x/2", "x/1", "x/sub/3", "y/1", "xz"]:
            store.put_bytes(k, k.encode())
        assert store.exists("x/1") and not store.exists("x/9")
        assert store.list("x/") == ["x/1", "x/2", "x/sub/3"]
        assert store.list("x") == ["x/1", "x/2", "x/sub/3", "xz"]
        assert store.list() == ["x/1", "x/2", "x/sub/3", "xz", "y/1"]
        assert store.list("nope/") == []
        store.delete("x/sub/3")
        store.delete("x/sub/3")  # idempotent
        assert store.list("x/") == ["x/1", "x/2"]

    def test_missing_key_named(self, store: Store):
        with pytest.raises(ObjectNotFound, match="no/such/key"):
            store.get_bytes("no/such/key")
        with pytest.raises(ObjectNotFound, match="no/such/key"):
            store.get_file("no/such/key", "/tmp/never-written-by-store-tests")

    @pytest.mark.parametrize("key", ["", "/abs", "a//b", "a/../b", "./a", "a/", "a\\b", ".tmp/x", "a\x00"])
    def test_invalid_keys(self, store: Store, key: str):
        with pytest.raises(ValueError, match="invalid store key"):
            store.put_bytes(key, b"x")

    def test_files_roundtrip_multipart(self, store: Store, tmp_path: Path):
        data = bytes(range(256)) * (12 * MIB // 256 + 7)  # > 2 parts of 5 MiB
        src = tmp_path / "src.bin"
        src.write_bytes(data)
        store.put_file("big/blob.bin", src)
        dst = tmp_path / "out" / "dst.bin"
        store.get_file("big/blob.bin", dst)
        assert dst.read_bytes() == data
        assert store.get_bytes("big/blob.bin") == data
        store.put_bytes("big/b2.bin", data)
        assert store.get_bytes("big/b2.bin") == data

    def test_compare_and_set(self, store: Store):
        t1 = store.put_if("p/k", b"v1", None)
        with pytest.raises(ConflictError, match="p/k"):
            store.put_if("p/k", b"other", None)
        assert store.put_if("p/k", b"v1", None)  # same content: a retried write counts as done
        data, tag = store.read_versioned("p/k")
        assert data == b"v1" and tag == t1
        t2 = store.put_if("p/k", b"v2", tag)
        with pytest.raises(ConflictError):
            store.put_if("p/k", b"v3", tag)  # stale tag
        assert store.read_versioned("p/k") == (b"v2", t2)
        with pytest.raises(ObjectNotFound):
            store.read_versioned("p/none")

    def test_url_reopens_equivalent_store(self, store: Store):
        store.put_bytes("k", b"v")
        if isinstance(store, S3Store):
            assert "secret" not in store.url and store.config.secret_key not in store.url
            again = open_store(store.url, access_key=store.config.access_key,
                               secret_key=store.config.secret_key)
        else:
            again = open_store(store.url)
        assert again.get_bytes("k") == b"v"


class TestPublishContract:
    """Adapter publish protocol: blobs first, manifest last, sha256 verified on read."""

    BLOBS = {"adapter.safetensors": b"\x00sparse-B" * 1000, "peft/adapter_config.json": b'{"r": 32}'}

    def test_publish_and_read(self, store: Store):
        stored = publish_adapter(store, "ad-1", self.BLOBS, _manifest())
        assert stored["adapter_id"] == "ad-1" and stored["family"] == "fam"
        assert set(stored["blobs"]) == set(self.BLOBS)
        assert stored["blobs"]["adapter.safetensors"]["size"] == len(self.BLOBS["adapter.safetensors"])
        assert read_manifest(store, "ad-1") == stored
        for name, data in self.BLOBS.items():
            assert read_adapter_blob(store, "ad-1", name) == data
        assert store.list("adapters/ad-1/") == [
            "adapters/ad-1/adapter.safetensors", "adapters/ad-1/manifest.json",
            "adapters/ad-1/peft/adapter_config.json"]

    def test_idempotent_and_conflict(self, store: Store):
        first = publish_adapter(store, "ad-2", self.BLOBS, _manifest())
        again = publish_adapter(store, "ad-2", self.BLOBS, _manifest(created_at="2026-01-01"))
        assert again == first
        with pytest.raises(ConflictError, match="ad-2"):
            publish_adapter(store, "ad-2", {**self.BLOBS, "adapter.safetensors": b"other"}, _manifest())
        with pytest.raises(ConflictError, match="ad-2"):
            publish_adapter(store, "ad-2", self.BLOBS, _manifest(task="code"))
        assert read_adapter_blob(store, "ad-2", "adapter.safetensors") == self.BLOBS["adapter.safetensors"]

    def test_unknown_ids_named(self, store: Store):
        with pytest.raises(AdapterNotFound, match="ghost"):
            read_manifest(store, "ghost")
        with pytest.raises(AdapterNotFound, match="ghost"):
            read_adapter_blob(store, "ghost", "adapter.safetensors")
        publish_adapter(store, "ad-3", self.BLOBS, _manifest())
        with pytest.raises(ObjectNotFound, match="nope.bin"):
            read_adapter_blob(store, "ad-3", "nope.bin")
        with pytest.raises(ValueError, match="invalid adapter_id"):
            read_manifest(store, "../etc")

    def test_bad_publish_input(self, store: Store):
        with pytest.raises(ValueError, match="reserved"):
            publish_adapter(store, "ad-x", self.BLOBS, {"blobs": {}})
        with pytest.raises(ValueError, match="manifest.json"):
            publish_adapter(store, "ad-x", {"manifest.json": b"x"}, {})
        with pytest.raises(ValueError, match="JSON"):
            publish_adapter(store, "ad-x", self.BLOBS, {"obj": object()})
        assert adapter_ids(store) == []

    def test_orphan_blobs_are_not_an_adapter(self, store: Store):
        store.put_bytes("adapters/half/adapter.safetensors", b"partial upload")
        assert adapter_ids(store) == [] and Registry(store).list() == []
        with pytest.raises(AdapterNotFound):
            read_adapter_blob(store, "half", "adapter.safetensors")
        publish_adapter(store, "half", self.BLOBS, _manifest())  # re-publish overwrites orphans
        assert read_adapter_blob(store, "half", "adapter.safetensors") == self.BLOBS["adapter.safetensors"]

    def test_tamper_detected(self, backend, tmp_path: Path):
        store, tamper = backend
        publish_adapter(store, "ad-t", self.BLOBS, _manifest())
        original = self.BLOBS["adapter.safetensors"]
        tamper("adapters/ad-t/adapter.safetensors", original[:-1] + b"X")  # same size, one byte
        with pytest.raises(IntegrityError, match="ad-t"):
            read_adapter_blob(store, "ad-t", "adapter.safetensors")
        dest = tmp_path / "dl" / "adapter.safetensors"
        with pytest.raises(IntegrityError):
            read_adapter_file(store, "ad-t", "adapter.safetensors", dest)
        assert not dest.exists() and list(dest.parent.iterdir()) == []
        tamper("adapters/ad-t/adapter.safetensors", original)
        assert read_adapter_file(store, "ad-t", "adapter.safetensors", dest).read_bytes() == original


class TestRegistryContract:
    """Registry over the store: listing, versions, lineage, atomic pointers."""

    def _populate(self, store: Store) -> Registry:
        reg = Registry(store)
        blob = {"adapter.safetensors": b"b"}
        reg.publish("m1", blob, _manifest(task="math", created_at="2025-01-01"))
        reg.publish("m2", blob, _manifest(task="math", created_at="2025-01-02", parents=["m1"]))
        reg.publish("c1", blob, _manifest(task="code"))
        reg.publish("o1", blob, _manifest(family="other", task="math"))
        reg.publish("mg", blob, _manifest(task="merged", kind="merge", parents=["m2", "c1"],
                                          merge_weights=[0.5, 0.5], job_id="job-m"))
        return reg

    def test_list_get_versions(self, store: Store):
        reg = self._populate(store)
        assert [r.adapter_id for r in reg.list()] == ["c1", "m1", "m2", "mg", "o1"]
        assert [r.adapter_id for r in reg.list(family="fam", task="math")] == ["m1", "m2"]
        assert [r.adapter_id for r in reg.list(task="math")] == ["m1", "m2", "o1"]
        assert [(r.adapter_id, r.version) for r in reg.versions("fam", "math")] == [("m1", 1), ("m2", 2)]
        assert reg.latest("fam", "math").adapter_id == "m2" and reg.latest("fam", "nope") is None
        rec = reg.get("mg")
        assert rec.kind == "merge" and rec.merge_weights == (0.5, 0.5) and rec.parents == ("m2", "c1")
        assert rec.metrics == {"loss": 0.5} and rec.projection_seed == 7
        with pytest.raises(AdapterNotFound, match="ghost"):
            reg.get("ghost")

    def test_implicit_versions(self, store: Store):
        blob = {"a": b"1"}
        publish_adapter(store, "v-b", blob, _manifest(task="t", created_at="2025-02-01"))
        publish_adapter(store, "v-a", blob, _manifest(task="t", created_at="2025-01-01"))
        publish_adapter(store, "v-x", blob, _manifest(task="t", version=3))
        reg = Registry(store)
        assert [(r.adapter_id, r.version) for r in reg.versions("fam", "t")] == [
            ("v-x", 3), ("v-a", 4), ("v-b", 5)]
        assert reg.get("v-a").version == 4 and reg.next_version("fam", "t") == 6

    def test_lineage(self, store: Store):
        reg = self._populate(store)
        publish_adapter(store, "orph", {"a": b"1"}, _manifest(parents=["gone"]))
        lin = reg.lineage("mg")
        assert [(e.adapter_id, e.depth) for e in lin] == [("mg", 0), ("m2", 1), ("c1", 1), ("m1", 2)]
        assert lin[0].merge_weights == (0.5, 0.5) and lin[0].job_id == "job-m"
        assert lin[1].dataset_digest == "d" * 64
        missing = reg.lineage("orph")[1]
        assert missing.adapter_id == "gone" and missing.missing
        with pytest.raises(AdapterNotFound):
            reg.lineage("ghost")

    def test_pointers_compare_and_set(self, store: Store):
        reg = self._populate(store)
        assert reg.get_pointer("fam", "production") is None
        assert reg.set_pointer("fam", "production", "m1", expected=None) == 1
        with pytest.raises(ConflictError, match="production"):
            reg.set_pointer("fam", "production", "m2", expected=None)
        with pytest.raises(ConflictError, match="'m1'"):
            reg.set_pointer("fam", "production", "m2", expected="c1")
        assert reg.set_pointer("fam", "production", "m2", expected="m1") == 2
        assert reg.set_pointer("fam", "production", "mg") == 3  # expected=ANY
        info = reg.pointer_info("fam", "production")
        assert info["adapter_id"] == "mg" and info["previous"] == "m2" and info["generation"] == 3
        assert reg.pointers("fam") == {"production": "mg"}
        with pytest.raises(ValueError, match="family 'other'"):
            reg.set_pointer("fam", "production", "o1")
        with pytest.raises(AdapterNotFound):
            reg.set_pointer("fam", "production", "ghost")
        assert reg.get_pointer("fam", "production") == "mg"

    def test_pointer_concurrent_movers_one_wins(self, store: Store):
        reg = self._populate(store)
        reg.set_pointer("fam", "staging", "m1")
        results: list[str] = []
        barrier = threading.Barrier(4)

        def mover(target: str) -> None:
            barrier.wait()
            try:
                reg.set_pointer("fam", "staging", target, expected="m1")
                results.append(target)
            except ConflictError:
                results.append("conflict")

        threads = [threading.Thread(target=mover, args=(t,)) for t in ["m2", "c1", "mg", "m2"]]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        winners = [r for r in results if r != "conflict"]
        assert len(results) == 4 and len(set(winners)) == 1
        assert reg.get_pointer("fam", "staging") == winners[0]


class TestDatasetContract:
    """JSONL datasets: validated line by line, nothing stored on failure, digests verified."""

    TRAIN = b'{"prompt": "1+1=", "response": "2"}\n{"text": "plain text"}\n'
    EVAL = b'{"prompt": "2+2=", "response": "4"}\n'

    def test_upload_and_read(self, store: Store, tmp_path: Path):
        path = tmp_path / "train.jsonl"
        path.write_bytes(self.TRAIN)
        m = upload_dataset(store, "arith", path, self.EVAL)
        assert m["splits"]["train"]["records"] == 2 and len(m["digest"]) == 64
        assert store.list("datasets/arith/") == [
            "datasets/arith/eval.jsonl", "datasets/arith/manifest.json", "datasets/arith/train.jsonl"]
        assert read_dataset(store, "arith", "train")[1] == {"text": "plain text"}
        assert read_dataset(store, "arith", "eval") == [{"prompt": "2+2=", "response": "4"}]
        assert upload_dataset(store, "arith", self.TRAIN, self.EVAL)["digest"] == m["digest"]
        with pytest.raises(ConflictError, match="arith"):
            upload_dataset(store, "arith", self.EVAL)
        with pytest.raises(DatasetNotFound, match="nope"):
            read_dataset(store, "nope")

    @pytest.mark.parametrize("bad, match", [
        (b'{"prompt": "a", "response": "b"}\n{"prompt": "a",\n', "train.jsonl line 2: invalid JSON"),
        (b'{"prompt": "a", "response": "b"}\n{"prompt": "a"}\n', "train.jsonl line 2: missing field 'response'"),
        (b'[1, 2]\n', "train.jsonl line 1: expected a JSON object"),
        (b'{"text": 5}\n', "train.jsonl line 1: field 'text' must be a string"),
        (b'{"text": "a"}\n\n{"text": "b"}\n', "train.jsonl line 2: blank line"),
        (b'', "train.jsonl: empty"),
        (b'{"text": "\xff"}\n', "train.jsonl line 1: not valid UTF-8"),
    ])
    def test_bad_train_stores_nothing(self, store: Store, bad: bytes, match: str):
        with pytest.raises(DatasetError, match=match):
            upload_dataset(store, "bad", bad, self.EVAL)
        assert store.list("datasets/") == []

    def test_bad_eval_names_eval_and_stores_nothing(self, store: Store):
        with pytest.raises(DatasetError, match="eval.jsonl line 1"):
            upload_dataset(store, "bad", self.TRAIN, b'{"prompt": 1, "response": "x"}\n')
        assert store.list("datasets/") == []

    def test_tampered_dataset_detected(self, backend):
        store, tamper = backend
        upload_dataset(store, "ds", self.TRAIN)
        tamper("datasets/ds/train.jsonl", self.TRAIN.replace(b"2", b"3"))
        with pytest.raises(IntegrityError, match="ds"):
            read_dataset(store, "ds")


def test_manifest_is_plain_json(tmp_path: Path):
    store = LocalStore(tmp_path)
    publish_adapter(store, "j", {"a": b"1"}, _manifest())
    doc = json.loads((tmp_path / "adapters/j/manifest.json").read_text())
    assert doc["blobs"]["a"] == {"sha256": hashlib.sha256(b"1").hexdigest(), "size": 1}
