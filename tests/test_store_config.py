"""Store configuration, URL parsing, key validation and the retry policy (no server needed)."""

from __future__ import annotations

import pytest
import urllib3

from worker.store import (
    LocalStore,
    RetryPolicy,
    S3Config,
    S3Store,
    StoreUnavailable,
    open_store,
    parse_s3_url,
)
from worker.store.base import validate_key
from worker.store.retry import call_with_retry
from worker.store.s3 import _is_transient

MIB = 1 << 20


def test_open_store_schemes(tmp_path):
    assert isinstance(open_store(str(tmp_path / "a")), LocalStore)
    assert isinstance(open_store(tmp_path / "b"), LocalStore)
    local = open_store(f"file://{tmp_path}/c")
    assert isinstance(local, LocalStore) and local.url == str(tmp_path / "c")
    s3 = open_store("s3://my-bucket/some/prefix?endpoint=127.0.0.1:9000&secure=false&access_key=k&secret_key=s")
    assert isinstance(s3, S3Store) and s3.config.prefix == "some/prefix/" and not s3.config.secure
    assert s3.url == "s3://my-bucket/some/prefix/?endpoint=127.0.0.1:9000&secure=false"
    with pytest.raises(ValueError, match="scheme 'gs'"):
        open_store("gs://bucket/x")
    with pytest.raises(ValueError, match="only apply to s3"):
        open_store(str(tmp_path), part_size=5 * MIB)


def test_parse_s3_url_env_and_params():
    env = {"AWS_ACCESS_KEY_ID": "ak", "AWS_SECRET_ACCESS_KEY": "sk", "AWS_REGION": "eu-west-1",
           "AWS_ENDPOINT_URL": "http://10.0.0.5:8333"}
    c = parse_s3_url("s3://bkt", env=env)
    assert (c.endpoint, c.secure, c.region, c.access_key, c.secret_key) == (
        "10.0.0.5:8333", False, "eu-west-1", "ak", "sk")
    c = parse_s3_url("s3://bkt/p?endpoint=https://minio.local:9000&access_key=x&secret_key=y&part_size=8388608"
                     "&parallel=8&attempts=2&region=us-east-1", env=env)
    assert (c.endpoint, c.secure, c.access_key, c.part_size, c.parallel, c.retry.attempts, c.region) == (
        "minio.local:9000", True, "x", 8 * MIB, 8, 2, "us-east-1")
    c = parse_s3_url("s3://bkt", env={"MINIO_ROOT_USER": "mu", "MINIO_ROOT_PASSWORD": "pw-secret-9"})
    assert (c.endpoint, c.secure, c.access_key) == ("s3.amazonaws.com", True, "mu")
    assert "pw-secret-9" not in repr(c) and "secret_key" not in repr(c)


@pytest.mark.parametrize("url, match", [
    ("s3://bkt?bogus=1", "unknown S3 URL parameter"),
    ("s3://bkt?secure=maybe", "secure='maybe'"),
    ("s3://bkt?part_size=abc", "part_size='abc'"),
    ("s3://bkt?part_size=1024", "part_size"),
    ("s3://bkt?parallel=0", "parallel"),
    ("s3://bkt?attempts=0", "attempts"),
    ("s3://bkt?access_key=only", "together"),
    ("s3://bkt?endpoint=bad host", "endpoint"),
    ("s3://bkt/a/../b", "prefix"),
])
def test_bad_s3_urls_named(url, match):
    with pytest.raises(ValueError, match=match):
        parse_s3_url(url, env={})


def test_config_validation():
    with pytest.raises(ValueError, match="S3Config.read_timeout"):
        S3Config(bucket="bkt", read_timeout=0)
    with pytest.raises(ValueError, match="S3Config.retry"):
        S3Config(bucket="bkt", retry=3)  # type: ignore[arg-type]
    assert S3Config(bucket="bkt", prefix="/a/b/").prefix == "a/b/"
    assert S3Config(bucket="bkt").with_(parallel=2).parallel == 2


@pytest.mark.parametrize("kw, field", [
    ({"attempts": 0}, "attempts"), ({"base_delay": -1}, "base_delay"),
    ({"base_delay": 2, "max_delay": 1}, "max_delay"), ({"multiplier": 0.5}, "multiplier"),
    ({"jitter": 2}, "jitter"),
])
def test_retry_policy_validation(kw, field):
    with pytest.raises(ValueError, match=f"RetryPolicy.{field}"):
        RetryPolicy(**kw)


def test_backoff_is_exponential_and_bounded():
    p = RetryPolicy(attempts=6, base_delay=0.1, max_delay=0.5, jitter=0)
    assert [p.delay(k) for k in range(1, 6)] == pytest.approx([0.1, 0.2, 0.4, 0.5, 0.5])
    sleeps: list[float] = []
    calls = []

    def fail():
        calls.append(1)
        raise urllib3.exceptions.ProtocolError("connection reset")

    with pytest.raises(StoreUnavailable, match="gave up after 6") as info:
        call_with_retry(fail, p, _is_transient, lambda e, n: StoreUnavailable(f"gave up after {n}", n),
                        sleep=sleeps.append)
    assert len(calls) == 6 and sleeps == pytest.approx([0.1, 0.2, 0.4, 0.5, 0.5])
    assert info.value.attempts == 6


def test_non_transient_errors_propagate_at_once():
    calls = []

    def fail():
        calls.append(1)
        raise KeyError("x")

    with pytest.raises(KeyError):
        call_with_retry(fail, RetryPolicy(attempts=5), _is_transient, lambda e, n: e, sleep=lambda s: None)
    assert calls == [1]


def test_transient_then_success():
    seq = iter([urllib3.exceptions.NewConnectionError(None, "refused"), None])

    def flaky():
        exc = next(seq)
        if exc:
            raise exc
        return 42

    assert call_with_retry(flaky, RetryPolicy(), _is_transient, lambda e, n: e, sleep=lambda s: None) == 42


@pytest.mark.parametrize("key", ["a", "adapters/x/manifest.json", "rounds/t/1/c.safetensors", "a.b/c-d_e"])
def test_valid_keys(key):
    assert validate_key(key) == key


def test_local_store_rejects_file_as_root(tmp_path):
    f = tmp_path / "file"
    f.write_bytes(b"")
    with pytest.raises(ValueError, match="not a directory"):
        LocalStore(f)
