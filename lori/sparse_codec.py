"""Compact codes for the support of a sparse B: packed bitmap or escape-coded index gaps.

A mask M (d_out x r) is flattened row-major to n = d_out * r bits with sorted set positions
i_0 < i_1 < ... < i_{k-1}. Two codes, the smaller one is stored:

- ``bitmap``: ``np.packbits(M.flat)`` (big-endian bit order), ceil(n / 8) bytes, padding bits 0.
- ``gapsW`` (W in 4, 8, 16, 32): gaps d_0 = i_0, d_j = i_j - i_{j-1} - 1 >= 0, each written as
  floor(d / E) escape codes E = 2**W - 1 followed by the terminator d mod E (< E). Decoding:
  i_j = (prefix sum of codes up to the j-th terminator) + j. ``gaps4`` packs two codes per byte,
  high nibble first; an odd count is padded by one trailing E (a valid stream never ends in E).

Every decoder validates its input (lengths, padding, range, count) and raises ``CodecError``.
"""

from __future__ import annotations

import numpy as np

WIDTHS = (4, 8, 16, 32)
_DTYPES = {4: np.uint8, 8: np.uint8, 16: np.uint16, 32: np.uint32}
ENCODINGS = ("bitmap",) + tuple(f"gaps{w}" for w in WIDTHS)


class CodecError(ValueError):
    """A mask code is malformed (wrong length, bad padding, positions out of range, wrong count)."""


def gaps_of(index: np.ndarray) -> np.ndarray:
    """d_0 = i_0, d_j = i_j - i_{j-1} - 1 (int64) for sorted unique positions."""
    index = index.astype(np.int64, copy=False)
    if index.size == 0:
        return index
    return np.diff(index, prepend=-1) - 1


def gaps_cost(gaps: np.ndarray, width: int) -> int:
    """Bytes of the ``gaps{width}`` code of ``gaps``."""
    escape = (1 << width) - 1
    codes = int(gaps.size + (gaps // escape).sum())
    return (codes + 1) // 2 if width == 4 else codes * width // 8


def encode_gaps(gaps: np.ndarray, width: int) -> np.ndarray:
    """Escape-coded gaps as a 1-d array of ``_DTYPES[width]`` (see module docstring)."""
    escape = (1 << width) - 1
    quot, rem = np.divmod(gaps, escape)
    ends = np.cumsum(quot + 1)  # position after each gap's terminator
    codes = np.full(int(ends[-1]) if ends.size else 0, escape, dtype=np.int64)
    codes[ends - 1] = rem
    if width == 4:
        if codes.size % 2:
            codes = np.append(codes, escape)
        return ((codes[0::2] << 4) | codes[1::2]).astype(np.uint8)
    return codes.astype(_DTYPES[width])


def decode_gaps(code: np.ndarray, width: int, numel: int, count: int) -> np.ndarray:
    """Sorted flat positions (int64) from a ``gaps{width}`` code; validates count and range."""
    if code.dtype != _DTYPES[width] or code.ndim != 1:
        raise CodecError(f"gaps{width} code must be a 1-d {np.dtype(_DTYPES[width]).name} array, got {code.dtype}")
    escape = (1 << width) - 1
    codes = code.astype(np.int64)
    if width == 4:
        codes = np.stack([codes >> 4, codes & 15], axis=1).reshape(-1)
        if codes.size and codes[-1] == escape:
            codes = codes[:-1]
    if codes.size and codes[-1] == escape:
        raise CodecError(f"gaps{width} code ends in an escape (truncated)")
    terminal = codes != escape
    found = int(terminal.sum())
    if found != count:
        raise CodecError(f"gaps{width} code holds {found} positions, expected {count}")
    index = np.cumsum(codes)[terminal] + np.arange(count, dtype=np.int64)
    if count and index[-1] >= numel:
        raise CodecError(f"gaps{width} code has position {int(index[-1])} outside the {numel} entries of B")
    return index


def encode_bitmap(flat_mask: np.ndarray) -> np.ndarray:
    """np.packbits of the flat boolean mask (uint8, ceil(n / 8) bytes)."""
    return np.packbits(flat_mask.astype(bool, copy=False))


def decode_bitmap(code: np.ndarray, numel: int, count: int) -> np.ndarray:
    """Sorted flat positions (int64) from a packed bitmap; validates length, padding and count."""
    if code.dtype != np.uint8 or code.ndim != 1 or code.size != (numel + 7) // 8:
        raise CodecError(f"bitmap must be {(numel + 7) // 8} uint8 bytes, got {code.dtype} {code.shape}")
    bits = np.unpackbits(code)
    if bits[numel:].any():
        raise CodecError("bitmap has bits set in its padding")
    index = np.flatnonzero(bits[:numel])
    if index.size != count:
        raise CodecError(f"bitmap holds {index.size} positions, expected {count}")
    return index.astype(np.int64)


def encode_mask(flat_mask: np.ndarray) -> tuple[str, np.ndarray]:
    """(encoding, code) of the smallest code of a flat boolean mask; ties go to the bitmap."""
    index = np.flatnonzero(flat_mask)
    gaps = gaps_of(index)
    best, best_cost = "bitmap", (flat_mask.size + 7) // 8
    for width in WIDTHS:
        cost = gaps_cost(gaps, width)
        if cost < best_cost:
            best, best_cost = f"gaps{width}", cost
    if best == "bitmap":
        return best, encode_bitmap(flat_mask)
    return best, encode_gaps(gaps, int(best[4:]))


def decode_mask(encoding: str, code: np.ndarray, numel: int, count: int) -> np.ndarray:
    """Sorted flat positions (int64) of a mask code produced by ``encode_mask``."""
    if encoding == "bitmap":
        return decode_bitmap(code, numel, count)
    if encoding in ENCODINGS:
        return decode_gaps(code, int(encoding[4:]), numel, count)
    raise CodecError(f"unknown mask encoding {encoding!r}; expected one of {ENCODINGS}")
