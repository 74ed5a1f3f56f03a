"""The `Store` contract: a flat namespace of immutable-by-convention byte objects.

Keys are `/`-separated relative paths (`adapters/<id>/manifest.json`). Every implementation
(`LocalStore`, `S3Store`) passes the same contract tests (`tests/test_store_contract.py`).

Besides plain get/put, a store offers one atomic primitive, compare-and-set on a single key
(`read_versioned` + `put_if`), which the publish protocol (manifest written once) and the
registry's named pointers are built on.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from pathlib import Path

__all__ = [
    "ConflictError",
    "IntegrityError",
    "ObjectNotFound",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "validate_key",
]

_RESERVED_TOP = {".tmp", ".locks"}
_BAD_CHARS = re.compile(r"[\x00-\x1f\x7f\\]")
MAX_KEY_LEN = 1024


class StoreError(Exception):
    """Base class of every error raised by the object store layer."""


class ObjectNotFound(StoreError, KeyError):
    """The named object (or adapter, or dataset) does not exist."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else "object not found"


class IntegrityError(StoreError):
    """Stored bytes do not match the sha256/size recorded in their manifest."""


class ConflictError(StoreError):
    """A write was refused: different content under an existing id, or a moved pointer."""


class StoreUnavailable(StoreError):
    """The backend could not be reached (connection errors / 5xx) after bounded retries."""

    def __init__(self, message: str, attempts: int = 1) -> None:
        super().__init__(message)
        self.attempts = attempts


def validate_key(key: object) -> str:
    """Return `key` if it is a valid store key, else raise ValueError naming it.

    Valid: a non-empty relative `/`-separated path of at most 1024 characters, without empty,
    `.` or `..` segments, backslashes or control characters, not under a reserved top-level
    folder (`.tmp`, `.locks`, used by `LocalStore`).
    """
    if not isinstance(key, str) or not key:
        raise ValueError(f"invalid store key {key!r}: must be a non-empty string")
    if len(key) > MAX_KEY_LEN:
        raise ValueError(f"invalid store key {key[:60]!r}...: longer than {MAX_KEY_LEN} characters")
    if _BAD_CHARS.search(key):
        raise ValueError(f"invalid store key {key!r}: contains a control character or backslash")
    parts = key.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"invalid store key {key!r}: empty, '.' or '..' path segment")
    if parts[0] in _RESERVED_TOP:
        raise ValueError(f"invalid store key {key!r}: {parts[0]!r} is reserved")
    return key


def validate_prefix(prefix: object) -> str:
    """Validate a listing prefix: '' or any string usable as the start of a key."""
    if not isinstance(prefix, str):
        raise ValueError(f"invalid store prefix {prefix!r}: must be a string")
    if prefix and (prefix.startswith("/") or _BAD_CHARS.search(prefix)):
        raise ValueError(f"invalid store prefix {prefix!r}")
    return prefix


class Store(ABC):
    """An object store holding bytes under string keys.

    Semantics shared by every implementation:
      - `put_bytes` / `put_file` replace the whole object atomically: readers see the old or the
        new content, never a mix.
      - `get_bytes` / `get_file` raise `ObjectNotFound` naming the key when it is absent.
      - `list(prefix)` returns the sorted keys starting with `prefix` (plain string prefix).
      - `delete` of an absent key is a no-op (as in S3).
      - `read_versioned` returns the content with an opaque version tag; `put_if` writes only if
        the object is still at that tag (`None`: only if absent) and raises `ConflictError`
        otherwise. This is the one atomic primitive the registry relies on.
      - Backend unreachable after bounded retries: `StoreUnavailable`.
    """

    @property
    @abstractmethod
    def url(self) -> str:
        """A URL that `open_store` maps back to an equivalent store (never contains secrets)."""

    @abstractmethod
    def put_bytes(self, key: str, data: bytes) -> None:
        """Store `data` under `key`, replacing any previous object."""

    @abstractmethod
    def get_bytes(self, key: str) -> bytes:
        """Return the object's bytes; `ObjectNotFound` if absent."""

    @abstractmethod
    def exists(self, key: str) -> bool:
        """Whether an object is stored under `key`."""

    @abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """Sorted keys that start with `prefix`."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object (no error if it does not exist)."""

    @abstractmethod
    def put_file(self, key: str, path: str | Path) -> None:
        """Upload a local file (streamed; multipart for large files where supported)."""

    @abstractmethod
    def get_file(self, key: str, path: str | Path) -> None:
        """Download to `path` atomically (a temp file renamed into place)."""

    @abstractmethod
    def read_versioned(self, key: str) -> tuple[bytes, str]:
        """Return `(data, version_tag)`; `ObjectNotFound` if absent."""

    @abstractmethod
    def put_if(self, key: str, data: bytes, expected_tag: str | None) -> str:
        """Compare-and-set: write only if the current tag is `expected_tag` (None = absent).

        Returns the new tag. Raises `ConflictError` if the object changed meanwhile. If the
        current content already equals `data`, the write counts as done (safe to retry).
        """

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"
