"""Bounded exponential backoff for transient backend failures.

Retried: connection errors, timeouts, HTTP 5xx and S3 throttling codes. Never retried: 4xx
(bad request, auth, not found, precondition failed) — retrying cannot fix them.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

__all__ = ["RetryPolicy", "call_with_retry"]

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry a transient failure.

    Delay before retry k (k = 1, 2, ...) is `min(max_delay, base_delay * multiplier**(k-1))`,
    scaled by a random factor in [1 - jitter, 1]. At most `attempts` tries in total, so the
    worst-case added wait is bounded by `(attempts - 1) * max_delay`.
    """

    attempts: int = 5
    base_delay: float = 0.2
    max_delay: float = 5.0
    multiplier: float = 2.0
    jitter: float = 0.25

    def __post_init__(self) -> None:
        if not isinstance(self.attempts, int) or self.attempts < 1 or self.attempts > 100:
            raise ValueError(f"RetryPolicy.attempts must be an int in [1, 100], got {self.attempts!r}")
        if not self.base_delay >= 0:
            raise ValueError(f"RetryPolicy.base_delay must be >= 0, got {self.base_delay!r}")
        if not self.max_delay >= self.base_delay:
            raise ValueError(
                f"RetryPolicy.max_delay must be >= base_delay ({self.base_delay}), got {self.max_delay!r}"
            )
        if not self.multiplier >= 1:
            raise ValueError(f"RetryPolicy.multiplier must be >= 1, got {self.multiplier!r}")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"RetryPolicy.jitter must be in [0, 1], got {self.jitter!r}")

    def delay(self, retry_number: int) -> float:
        """Seconds to sleep before retry number `retry_number` (1-based)."""
        raw = min(self.max_delay, self.base_delay * self.multiplier ** (retry_number - 1))
        return raw * (1.0 - self.jitter * random.random())


def call_with_retry(
    fn: Callable[[], T],
    policy: RetryPolicy,
    is_transient: Callable[[BaseException], bool],
    on_exhausted: Callable[[BaseException, int], BaseException],
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call `fn` until it succeeds, a non-transient error occurs, or attempts run out.

    Non-transient errors propagate unchanged. After the last transient failure the exception
    built by `on_exhausted(last_error, attempts)` is raised from it.
    """
    for attempt in range(1, policy.attempts + 1):
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - classified below
            if not is_transient(exc):
                raise
            if attempt == policy.attempts:
                raise on_exhausted(exc, attempt) from exc
            sleep(policy.delay(attempt))
    raise AssertionError("unreachable")  # pragma: no cover
