"""`LocalStore`: the object store as a plain directory (the embedded default).

Each key is a file under `root`. Writes go to `root/.tmp/` first, are fsynced and renamed into
place (`os.replace` is atomic on POSIX), so a crash never leaves a half-written object under its
key. `put_if` serialises writers of one key with an exclusive `flock` on `root/.locks/<hash>`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .base import ConflictError, ObjectNotFound, Store, StoreError, validate_key, validate_prefix

__all__ = ["LocalStore"]

_CHUNK = 1 << 20


class LocalStore(Store):
    """A directory-backed store. Version tags are the sha256 of the content."""

    def __init__(self, root: str | Path) -> None:
        self._root = Path(root).expanduser().resolve()
        if self._root.exists() and not self._root.is_dir():
            raise ValueError(f"LocalStore.root {str(self._root)!r} exists and is not a directory")
        try:
            (self._root / ".tmp").mkdir(parents=True, exist_ok=True)
            (self._root / ".locks").mkdir(exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create local store at {str(self._root)!r}: {exc}") from exc

    @property
    def root(self) -> Path:
        """The directory holding the objects."""
        return self._root

    @property
    def url(self) -> str:
        return str(self._root)

    def _path(self, key: str) -> Path:
        return self._root.joinpath(*validate_key(key).split("/"))

    @contextlib.contextmanager
    def _tempfile(self) -> Iterator[tuple[int, Path]]:
        fd, name = tempfile.mkstemp(dir=self._root / ".tmp")
        tmp = Path(name)
        try:
            yield fd, tmp
        finally:
            tmp.unlink(missing_ok=True)

    def _install(self, tmp: Path, key: str) -> None:
        dest = self._path(key)
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            if dest.is_dir():
                raise StoreError(f"cannot write key {key!r}: other keys are stored under it as a folder")
            os.replace(tmp, dest)
        except (NotADirectoryError, FileExistsError) as exc:
            raise StoreError(f"cannot write key {key!r}: a parent path is an object: {exc}") from exc

    def put_bytes(self, key: str, data: bytes) -> None:
        validate_key(key)
        with self._tempfile() as (fd, tmp):
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            self._install(tmp, key)

    def put_file(self, key: str, path: str | Path) -> None:
        validate_key(key)
        with self._tempfile() as (fd, tmp):
            with os.fdopen(fd, "wb") as out, open(path, "rb") as src:
                shutil.copyfileobj(src, out, _CHUNK)
                out.flush()
                os.fsync(out.fileno())
            self._install(tmp, key)

    def get_bytes(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(f"no object {key!r} in {self.url}") from None

    def get_file(self, key: str, path: str | Path) -> None:
        src = self._path(key)
        dest = Path(path)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
        try:
            with os.fdopen(fd, "wb") as out:
                try:
                    with open(src, "rb") as f:
                        shutil.copyfileobj(f, out, _CHUNK)
                except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
                    raise ObjectNotFound(f"no object {key!r} in {self.url}") from None
            os.replace(name, dest)
        finally:
            Path(name).unlink(missing_ok=True)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> list[str]:
        validate_prefix(prefix)
        # Walk only the deepest folder the prefix fully names.
        head = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = self._root.joinpath(*head.split("/")) if head else self._root
        if not start.is_dir():
            return []
        keys: list[str] = []
        for dirpath, dirnames, filenames in os.walk(start):
            rel_dir = Path(dirpath).relative_to(self._root).as_posix()
            if rel_dir == ".":
                dirnames[:] = [d for d in dirnames if d not in (".tmp", ".locks")]
                rel_dir = ""
            for name in filenames:
                key = f"{rel_dir}/{name}" if rel_dir else name
                if key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    def delete(self, key: str) -> None:
        path = self._path(key)
        with contextlib.suppress(FileNotFoundError, IsADirectoryError, NotADirectoryError):
            path.unlink()
        # Prune now-empty folders so `list` and later writes see a clean tree.
        parent = path.parent
        while parent != self._root:
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent

    def read_versioned(self, key: str) -> tuple[bytes, str]:
        data = self.get_bytes(key)
        return data, hashlib.sha256(data).hexdigest()

    @contextlib.contextmanager
    def _lock(self, key: str) -> Iterator[None]:
        lock_path = self._root / ".locks" / hashlib.sha256(key.encode()).hexdigest()
        with open(lock_path, "a+b") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def put_if(self, key: str, data: bytes, expected_tag: str | None) -> str:
        validate_key(key)
        new_tag = hashlib.sha256(data).hexdigest()
        with self._lock(key):
            try:
                _, current = self.read_versioned(key)
            except ObjectNotFound:
                current = None
            if current != expected_tag and current != new_tag:
                state = "absent" if current is None else f"at version {current[:12]}"
                want = "absent" if expected_tag is None else f"at version {expected_tag[:12]}"
                raise ConflictError(f"conditional write of {key!r} refused: object is {state}, expected {want}")
            if current != new_tag:
                self.put_bytes(key, data)
        return new_tag
