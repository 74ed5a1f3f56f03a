"""Durable coordinator state: the `StateStore` interface and its implementations."""

from .base import StateStore
from .memory import MemoryState
from .sqlite import SqliteState


def open_state(url: str) -> StateStore:
    """`:memory:` -> MemoryState (tests); anything else is a SQLite file path."""
    if url == ":memory:":
        return MemoryState()
    return SqliteState(url)


__all__ = ["MemoryState", "SqliteState", "StateStore", "open_state"]
