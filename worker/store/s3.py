"""`S3Store`: the object store on any S3-compatible server through the `minio` SDK.

Works against MinIO, AWS S3, SeaweedFS, Ceph RGW, ... Objects live under `<prefix>` in one
bucket, created on first use. Large objects are uploaded in parallel multipart parts of
`part_size` bytes. Every request is wrapped in bounded exponential backoff (`RetryPolicy`):
connection errors, timeouts, 5xx and throttling are retried; 4xx are not. The compare-and-set
primitive uses S3 conditional writes (`If-Match` / `If-None-Match: *` on PutObject).
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import urllib3
from minio import Minio
from minio.error import InvalidResponseError, S3Error, ServerError

from .base import (
    ConflictError,
    ObjectNotFound,
    Store,
    StoreError,
    StoreUnavailable,
    validate_key,
    validate_prefix,
)
from .retry import call_with_retry
from .s3config import S3Config

__all__ = ["S3Config", "S3Store"]

T = TypeVar("T")
_CHUNK = 1 << 20
_TRANSIENT_CODES = {"SlowDown", "InternalError", "ServiceUnavailable", "RequestTimeout", "RequestTimeTooSkewed"}
_CONFLICT_CODES = {"PreconditionFailed", "ConditionalRequestConflict"}


def _status_of(exc: BaseException) -> int | None:
    if isinstance(exc, S3Error):
        return getattr(exc.response, "status", None)
    if isinstance(exc, ServerError):
        return exc.status_code
    if isinstance(exc, InvalidResponseError):
        return getattr(exc, "_code", None)
    return None


def _is_transient(exc: BaseException) -> bool:
    """Connection-level failures, 5xx and throttling are worth retrying; 4xx never."""
    if isinstance(exc, (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError)):
        return True
    if isinstance(exc, S3Error) and exc.code in _TRANSIENT_CODES:
        return True
    status = _status_of(exc)
    return status is not None and status >= 500


class S3Store(Store):
    """A `Store` on an S3-compatible bucket. Thread-safe (one shared connection pool)."""

    def __init__(self, config: S3Config) -> None:
        self.config = config
        c = config
        self._http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=c.connect_timeout, read=c.read_timeout),
            retries=False,  # retries are ours (RetryPolicy), so the bound is explicit
            maxsize=max(10, c.parallel + 2),
            cert_reqs="CERT_REQUIRED" if (c.secure and c.cert_check) else "CERT_NONE",
            ca_certs=c.ca_file or (_default_ca() if c.secure else None),
        )
        self._client = Minio(
            c.endpoint,
            access_key=c.access_key,
            secret_key=c.secret_key,
            session_token=c.session_token,
            secure=c.secure,
            region=c.region,
            http_client=self._http,
            cert_check=c.cert_check,
        )
        self._bucket_ready = False
        self._bucket_lock = threading.Lock()

    # -- plumbing -------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return self.config.url

    @property
    def bucket(self) -> str:
        """The bucket name."""
        return self.config.bucket

    @property
    def client(self) -> Minio:
        """The underlying `minio.Minio` client (for advanced use)."""
        return self._client

    def _full(self, key: str) -> str:
        return self.config.prefix + validate_key(key)

    def _call(self, what: str, fn: Callable[[], T], key: str | None = None) -> T:
        """Run one S3 operation with retries, mapping errors to the store's exceptions."""
        endpoint = f"{'https' if self.config.secure else 'http'}://{self.config.endpoint}"

        def exhausted(exc: BaseException, attempts: int) -> BaseException:
            return StoreUnavailable(
                f"S3 {what} failed on {endpoint} (bucket {self.bucket!r}) after {attempts} attempts: "
                f"{_describe(exc)}",
                attempts=attempts,
            )

        try:
            return call_with_retry(fn, self.config.retry, _is_transient, exhausted)
        except S3Error as exc:
            raise self._map_s3_error(exc, what, key) from exc
        except (ServerError, InvalidResponseError) as exc:
            raise StoreError(f"S3 {what} on {endpoint} failed: {_describe(exc)}") from exc

    def _map_s3_error(self, exc: S3Error, what: str, key: str | None) -> StoreError:
        name = f"{key!r} in {self.url}" if key else self.url
        if exc.code in ("NoSuchKey", "NotFound") or (key and _status_of(exc) == 404 and exc.code != "NoSuchBucket"):
            return ObjectNotFound(f"no object {name}")
        if exc.code == "NoSuchBucket":
            return StoreError(f"S3 bucket {self.bucket!r} does not exist on {self.config.endpoint}")
        if exc.code in _CONFLICT_CODES or _status_of(exc) == 412:
            return ConflictError(f"conditional write of {name} refused: object changed ({exc.code})")
        if exc.code in ("AccessDenied", "SignatureDoesNotMatch", "InvalidAccessKeyId"):
            return StoreError(
                f"S3 {what} on {name} refused: {exc.code} (check access key / secret key for "
                f"{self.config.endpoint})"
            )
        return StoreError(f"S3 {what} on {name} failed: {exc.code}: {exc.message}")

    def _ensure_bucket(self) -> None:
        if self._bucket_ready:
            return
        with self._bucket_lock:
            if self._bucket_ready:
                return
            if not self._call("bucket_exists", lambda: self._client.bucket_exists(self.bucket)):
                if not self.config.create_bucket:
                    raise StoreError(f"S3 bucket {self.bucket!r} does not exist on {self.config.endpoint}")
                try:
                    self._call("make_bucket", lambda: self._client.make_bucket(self.bucket, self.config.region))
                except StoreError as exc:
                    cause = exc.__cause__
                    if not (isinstance(cause, S3Error) and cause.code in (
                            "BucketAlreadyOwnedByYou", "BucketAlreadyExists")):
                        raise
            self._bucket_ready = True

    # -- Store API --------------------------------------------------------------------------
    def put_bytes(self, key: str, data: bytes) -> None:
        full = self._full(key)
        self._ensure_bucket()
        view = memoryview(data)

        def put() -> None:
            self._client.put_object(
                self.bucket, full, io.BytesIO(view), len(view),
                part_size=self.config.part_size, num_parallel_uploads=self.config.parallel,
            )

        self._call("put_object", put, key)

    def put_file(self, key: str, path: str | Path) -> None:
        full = self._full(key)
        self._ensure_bucket()
        size = os.path.getsize(path)

        def put() -> None:
            with open(path, "rb") as f:
                self._client.put_object(
                    self.bucket, full, f, size,
                    part_size=self.config.part_size, num_parallel_uploads=self.config.parallel,
                )

        self._call("put_object", put, key)

    def _open(self, full: str, offset: int, length: int, etag: str | None):  # noqa: ANN202
        """Start a ranged GET (headers read, body not yet); `If-Match` pins it to `etag`."""
        headers = {"If-Match": f'"{etag}"'} if etag else None
        try:
            return self._client.get_object(self.bucket, full, offset=offset, length=length,
                                           request_headers=headers)
        except S3Error as exc:
            if exc.code != "InvalidRange" or offset:
                raise
            return self._client.get_object(self.bucket, full)  # empty object: no range to ask

    @staticmethod
    def _body(resp) -> list[bytes]:  # noqa: ANN001
        """Read a response body completely (urllib3 enforces Content-Length), then release it."""
        try:
            return list(resp.stream(_CHUNK))
        finally:
            resp.close()
            resp.release_conn()

    def _fetch(self, full: str, offset: int, length: int, etag: str) -> list[bytes]:
        return self._body(self._open(full, offset, length, etag))

    def _download(self, key: str, full: str, alloc: Callable[[int], None],
                  deliver: Callable[[int, list[bytes]], None]) -> str:
        """Fetch an object as parallel ranged GETs of `part_size` bytes; return its ETag.

        The first GET's headers give the size and ETag; the other ranges start at once, pinned
        to that ETag with `If-Match`, so an object replaced mid-read is detected (412) and the
        read restarts instead of mixing two versions. Each range is retried on its own and
        handed to `deliver(offset, chunks)` only when complete.
        """
        part = self.config.part_size
        for _ in range(3):
            resp = self._call("get_object", lambda: self._open(full, 0, part, None), key)
            pool: ThreadPoolExecutor | None = None
            try:
                hdr = {k.lower(): v for k, v in resp.headers.items()}
                etag = hdr.get("etag", "").strip('"')
                if resp.status == 206:
                    total = int(hdr["content-range"].rsplit("/", 1)[1])
                else:
                    total = int(hdr.get("content-length", 0))
                alloc(total)
                ranges = [(o, min(part, total - o)) for o in range(part, total, part)] \
                    if resp.status == 206 else []
                pool = ThreadPoolExecutor(max_workers=min(self.config.parallel, len(ranges))) if ranges else None
                futures = [(o, pool.submit(self._call, "get_object",
                                           (lambda o=o, n=n, e=etag: self._fetch(full, o, n, e)), key))
                           for o, n in ranges] if pool else []
                try:
                    first = self._body(resp)
                except Exception as exc:  # noqa: BLE001 - transient failure of the first body only
                    if not _is_transient(exc):
                        raise
                    first = self._call("get_object", lambda e=etag: self._fetch(full, 0, part, e), key)
            except BaseException:
                resp.close()
                if pool is not None:
                    pool.shutdown(wait=False, cancel_futures=True)
                raise
            try:
                deliver(0, first)
                for o, f in futures:
                    deliver(o, f.result())
                return etag
            except ConflictError:
                continue  # replaced while we read it: start over on the new version
            finally:
                if pool is not None:
                    pool.shutdown(wait=True, cancel_futures=True)
        raise StoreError(f"object {key!r} in {self.url} kept changing while being read")

    def read_versioned(self, key: str) -> tuple[bytes, str]:
        full = self._full(key)
        self._ensure_bucket()
        ranges: dict[int, list[bytes]] = {}
        etag = self._download(key, full, lambda n: ranges.clear(), ranges.__setitem__)
        return b"".join(c for o in sorted(ranges) for c in ranges[o]), etag  # one copy

    def get_bytes(self, key: str) -> bytes:
        return self.read_versioned(key)[0]

    def get_file(self, key: str, path: str | Path) -> None:
        full = self._full(key)
        self._ensure_bucket()
        dest = Path(path)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
        try:
            def deliver(offset: int, chunks: list[bytes]) -> None:
                for chunk in chunks:
                    view = memoryview(chunk)
                    while view:
                        n = os.pwrite(fd, view, offset)
                        offset, view = offset + n, view[n:]

            self._download(key, full, lambda n: os.ftruncate(fd, n), deliver)
            os.fsync(fd)
            os.close(fd)
            fd = -1
            os.replace(name, dest)
        finally:
            if fd >= 0:
                os.close(fd)
            Path(name).unlink(missing_ok=True)

    def exists(self, key: str) -> bool:
        full = self._full(key)
        self._ensure_bucket()
        try:
            self._call("stat_object", lambda: self._client.stat_object(self.bucket, full), key)
        except ObjectNotFound:
            return False
        return True

    def list(self, prefix: str = "") -> list[str]:
        validate_prefix(prefix)
        self._ensure_bucket()
        full = self.config.prefix + prefix
        n = len(self.config.prefix)

        def ls() -> list[str]:
            objs = self._client.list_objects(self.bucket, prefix=full, recursive=True)
            return [o.object_name[n:] for o in objs if not o.is_dir]

        return sorted(self._call("list_objects", ls))

    def delete(self, key: str) -> None:
        full = self._full(key)
        self._ensure_bucket()
        with contextlib.suppress(ObjectNotFound):
            self._call("remove_object", lambda: self._client.remove_object(self.bucket, full), key)

    def put_if(self, key: str, data: bytes, expected_tag: str | None) -> str:
        full = self._full(key)
        self._ensure_bucket()
        headers = {"If-None-Match": "*"} if expected_tag is None else {"If-Match": f'"{expected_tag}"'}

        def put() -> str:
            # The public put_object() turns unknown headers into user metadata; conditional
            # headers must reach the server as-is, so use the SDK's single-request PUT.
            result = self._client._put_object(self.bucket, full, data, dict(headers))
            return result.etag or ""

        try:
            return self._call("conditional put_object", put, key)
        except ConflictError:
            # Our own earlier attempt may have landed before a retry; identical content is success.
            try:
                current, tag = self.read_versioned(key)
            except ObjectNotFound:
                raise ConflictError(f"conditional write of {key!r} in {self.url} refused: object absent, "
                                    f"expected version {expected_tag}") from None
            if current == data:
                return tag
            raise


def _describe(exc: BaseException) -> str:
    if isinstance(exc, S3Error):
        return f"{exc.code}: {exc.message}"
    if isinstance(exc, urllib3.exceptions.MaxRetryError) and exc.reason is not None:
        return f"{type(exc.reason).__name__}: {exc.reason}"
    return f"{type(exc).__name__}: {exc}"


def _default_ca() -> str | None:
    try:
        import certifi
    except ImportError:  # pragma: no cover - certifi ships with minio's dependencies
        return None
    return certifi.where()
