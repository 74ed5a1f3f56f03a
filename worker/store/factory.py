"""`open_store(url)`: choose a store implementation from a URL or a path."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from .base import Store
from .local import LocalStore
from .s3 import S3Store
from .s3config import parse_s3_url

__all__ = ["open_store"]


def open_store(url: str | Path, **overrides: object) -> Store:
    """Open the store named by `url`.

    - `s3://bucket/prefix?endpoint=host:port&secure=false&region=...` -> `S3Store`
      (`overrides` are `S3Config` fields, e.g. `retry=RetryPolicy(attempts=2)`);
    - `file:///abs/dir` or a plain path -> `LocalStore` (the embedded default).
    """
    if isinstance(url, Path):
        return LocalStore(url)
    if not isinstance(url, str) or not url:
        raise ValueError(f"store URL must be a non-empty string or Path, got {url!r}")
    scheme = urlsplit(url).scheme if "://" in url else ""
    if scheme == "s3":
        return S3Store(parse_s3_url(url, **overrides))
    if overrides:
        raise ValueError(f"options {sorted(overrides)} only apply to s3:// stores, not {url!r}")
    if scheme == "file":
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost"):
            raise ValueError(f"file:// store URL must be local, got host {parts.netloc!r}")
        return LocalStore(unquote(parts.path))
    if scheme:
        raise ValueError(f"unsupported store URL scheme {scheme!r} in {url!r} (use s3:// or a path)")
    return LocalStore(url)
