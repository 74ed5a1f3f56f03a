"""Seed-defined frozen projections A and their digest.

``A`` (r x d_in) for one module is a pure function of ``(seed, module_name, shape, distribution)``:

    key      = first 8 bytes of sha256("lori-A/v1|seed|module_name|r x d_in|distribution")
    words    = Philox4x32-10(counter = i, key), i = 0, 1, ...   (raw 32-bit words)
    u_j      = ((w_2j >> 5) * 2**26 + (w_2j+1 >> 6)) / 2**53           in [0, 1), exact in float64
    uniform  : A = (2 u - 1) / sqrt(d_in)                               U(-1/sqrt(d_in), 1/sqrt(d_in))
    gaussian : A = sqrt(-2 ln(1 - u_a)) * (cos | sin)(2 pi u_b - pi) / sqrt(d_in)   (Box-Muller)

The logarithm and the trigonometric functions are evaluated by fixed polynomial series in
float64 (``+ - * /`` and ``sqrt`` only, all correctly rounded under IEEE 754), never by a
library's sampling routine or libm, so the values are bit-identical everywhere. ``A`` is
materialized in float32 on the CPU; callers move it to their device and dtype.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .config import DISTRIBUTIONS, MAX_SEED
from .philox import philox_stream

_TWO_POW_M53 = 1.0 / 9007199254740992.0
_LN2 = 0.6931471805599453  # float64 nearest to ln 2
_PI = 3.141592653589793


@dataclass(frozen=True)
class Segment:
    """One seed-defined block of rows of A: ``rank`` rows drawn from ``seed``.

    A single adapter has one segment; a concat merge of n adapters has n, and its
    A is the vertical stack [A_1; ...; A_n].
    """

    seed: int
    rank: int
    distribution: str = "uniform"

    def __post_init__(self) -> None:
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed <= MAX_SEED:
            raise ValueError(f"seed={self.seed!r}: must be an integer in [0, {MAX_SEED}]")
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1:
            raise ValueError(f"rank={self.rank!r}: must be a positive integer")
        if self.distribution not in DISTRIBUTIONS:
            raise ValueError(f"distribution={self.distribution!r}: must be one of {DISTRIBUTIONS}")


def _key(seed: int, module_name: str, rank: int, d_in: int, distribution: str) -> tuple[int, int]:
    label = f"lori-A/v1|{seed}|{module_name}|{rank}x{d_in}|{distribution}".encode()
    digest = hashlib.sha256(label).digest()
    return int.from_bytes(digest[0:4], "little"), int.from_bytes(digest[4:8], "little")


def _unit_floats(words: np.ndarray) -> np.ndarray:
    """Pairs of 32-bit words (n, 2) -> n float64 in [0, 1) with 53 random bits."""
    hi = (words[:, 0] >> np.uint32(5)).astype(np.float64)  # 27 bits
    lo = (words[:, 1] >> np.uint32(6)).astype(np.float64)  # 26 bits
    return (hi * 67108864.0 + lo) * _TWO_POW_M53


def _log(x: np.ndarray) -> np.ndarray:
    """ln x for x in (0, 1] by frexp and the atanh series ln m = 2 sum z^(2k+1)/(2k+1)."""
    m, e = np.frexp(x)  # x = m * 2**e, m in [0.5, 1): exact
    z = (m - 1.0) / (m + 1.0)  # in [-1/3, 0)
    z2 = z * z
    acc = np.full_like(z, 1.0 / 41.0)
    for k in range(19, -1, -1):  # Horner over 1/(2k+1)
        acc = acc * z2 + 1.0 / (2 * k + 1)
    return 2.0 * z * acc + e.astype(np.float64) * _LN2


def _cos_sin(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin of theta in [-pi, pi] by Taylor series to order 33 (error < 1e-17)."""
    t2 = theta * theta
    cos = np.full_like(theta, 1.0)
    sin = np.full_like(theta, 1.0)
    for k in range(16, 0, -1):
        cos = 1.0 - cos * t2 / ((2 * k - 1) * (2 * k))
        sin = 1.0 - sin * t2 / ((2 * k) * (2 * k + 1))
    return cos, theta * sin


def _numpy_projection(seed: int, module_name: str, rank: int, d_in: int, distribution: str) -> np.ndarray:
    n = rank * d_in
    key = _key(seed, module_name, rank, d_in, distribution)
    scale = 1.0 / np.sqrt(np.float64(d_in))
    if distribution == "uniform":
        words = philox_stream(key, (n + 1) // 2).reshape(-1, 2)  # 2 floats per block
        u = _unit_floats(words)[:n]
        values = (2.0 * u - 1.0) * scale
    else:
        words = philox_stream(key, (n + 1) // 2)  # 4 words -> one (u_a, u_b) pair -> 2 normals
        u_a = _unit_floats(words[:, 0:2])
        u_b = _unit_floats(words[:, 2:4])
        radius = np.sqrt(-2.0 * _log(1.0 - u_a))
        cos, sin = _cos_sin(2.0 * _PI * u_b - _PI)
        values = np.stack([radius * cos, radius * sin], axis=1).reshape(-1)[:n] * scale
    return values.astype(np.float32).reshape(rank, d_in)


def projection(seed: int, module_name: str, shape: tuple[int, int], distribution: str = "uniform") -> torch.Tensor:
    """The frozen A (r x d_in, float32, CPU) of ``module_name`` for ``seed``; see the module docstring."""
    segment = Segment(seed, int(shape[0]), distribution)
    d_in = int(shape[1])
    if d_in < 1:
        raise ValueError(f"shape={tuple(shape)!r}: d_in must be positive")
    array = _numpy_projection(segment.seed, module_name, segment.rank, d_in, segment.distribution)
    return torch.from_numpy(array)


def stacked_projection(segments: Sequence[Segment], module_name: str, d_in: int) -> torch.Tensor:
    """A = [A_1; ...; A_n] ((sum r_t) x d_in) for the segments of a (possibly concat-merged) adapter."""
    if not segments:
        raise ValueError("segments: at least one segment is required")
    blocks = [projection(s.seed, module_name, (s.rank, d_in), s.distribution) for s in segments]
    return blocks[0] if len(blocks) == 1 else torch.cat(blocks, dim=0)


def digest_of(named_projections: Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]]) -> str:
    """sha256 over (name, shape, little-endian float32 bytes) of every A, in sorted name order."""
    items = named_projections.items() if isinstance(named_projections, Mapping) else named_projections
    h = hashlib.sha256()
    for name, a in sorted(items, key=lambda kv: kv[0]):
        array = a.detach().to("cpu", torch.float32).contiguous().numpy().astype("<f4", copy=False)
        h.update(f"{name}|{array.shape[0]}x{array.shape[1]}|".encode())
        h.update(array.tobytes())
    return h.hexdigest()


def projection_digest(segments: Sequence[Segment], in_features: Mapping[str, int]) -> str:
    """Digest of the whole adapter's A: every module in ``in_features`` regenerated from ``segments``."""
    return digest_of((name, stacked_projection(segments, name, d_in)) for name, d_in in in_features.items())
