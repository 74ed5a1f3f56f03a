"""Philox4x32-10, a counter-based bit generator (Salmon et al., SC'11), in plain NumPy.

Every output word is a pure function of (counter, key), computed with 32x32->64 bit integer
multiplies, xors and additions only, so the stream is bit-identical on every machine, OS and
library version. One block maps a 128-bit counter and a 64-bit key to four 32-bit words:

    round(c, k): (hi0, lo0) = M0 * c0, (hi1, lo1) = M1 * c2
                 c' = (hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0)
    k' = (k0 + W0, k1 + W1) mod 2**32, ten rounds.
"""

from __future__ import annotations

import numpy as np

_M0 = np.uint64(0xD2511F53)
_M1 = np.uint64(0xCD9E8D57)
_W0 = 0x9E3779B9
_W1 = 0xBB67AE85
_MASK32 = np.uint64(0xFFFFFFFF)
_SHIFT32 = np.uint64(32)
ROUNDS = 10


def philox4x32(counters: np.ndarray, key: tuple[int, int]) -> np.ndarray:
    """Philox4x32-10 of ``counters`` (n, 4) uint32 words under ``key`` (k0, k1) -> (n, 4) uint32."""
    c = np.asarray(counters, dtype=np.uint64)
    if c.ndim != 2 or c.shape[1] != 4:
        raise ValueError(f"counters must have shape (n, 4), got {c.shape}")
    c0, c1, c2, c3 = (c[:, i].copy() for i in range(4))
    k0, k1 = int(key[0]) & 0xFFFFFFFF, int(key[1]) & 0xFFFFFFFF
    for _ in range(ROUNDS):
        p0 = _M0 * c0  # exact: both factors < 2**32
        p1 = _M1 * c2
        hi0, lo0 = p0 >> _SHIFT32, p0 & _MASK32
        hi1, lo1 = p1 >> _SHIFT32, p1 & _MASK32
        c0, c1, c2, c3 = hi1 ^ c1 ^ np.uint64(k0), lo1, hi0 ^ c3 ^ np.uint64(k1), lo0
        k0 = (k0 + _W0) & 0xFFFFFFFF
        k1 = (k1 + _W1) & 0xFFFFFFFF
    return np.stack([c0, c1, c2, c3], axis=1).astype(np.uint32)


def philox_stream(key: tuple[int, int], n_blocks: int) -> np.ndarray:
    """Blocks for counters (i mod 2**32, i >> 32, 0, 0), i = 0..n_blocks-1 -> (n_blocks, 4) uint32."""
    i = np.arange(n_blocks, dtype=np.uint64)
    counters = np.zeros((n_blocks, 4), dtype=np.uint64)
    counters[:, 0] = i & _MASK32
    counters[:, 1] = i >> _SHIFT32
    return philox4x32(counters, key)
