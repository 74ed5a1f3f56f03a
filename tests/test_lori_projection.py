"""The seed-defined projections: pinned reference digests, Philox known answers, statistics."""

import numpy as np
import pytest
import torch

from lori.philox import philox4x32
from lori.projection import Segment, digest_of, projection, projection_digest, stacked_projection

# (seed, module name, shape, distribution) -> sha256 of the float32 A. Any drift of the generator fails.
REFERENCE_DIGESTS = [
    (0, "model.layers.0.self_attn.q_proj", (8, 64), "uniform",
     "1441c430d808813d706d741eee6b1578fc408c8776c09bfc1a07f0506eeb1973"),
    (1, "model.layers.0.self_attn.q_proj", (8, 64), "uniform",
     "349f442c45a98fcdc5c697fb553fe9c7ba72a1d645647b09a7825f2c0737664f"),
    (0, "model.layers.1.mlp.down_proj", (4, 128), "uniform",
     "67056dafb9510cf28e3406d913afed0d038d2cd552ff4ccc0fe1a57b8228c826"),
    (42, "transformer.h.0.attn.c_attn", (16, 32), "gaussian",
     "55dcf68cd630b34a3b475072160301693064e634477643b7fd5a99fa93c05eba"),
]


@pytest.mark.parametrize(("seed", "name", "shape", "dist", "expected"), REFERENCE_DIGESTS)
def test_reference_digests(seed, name, shape, dist, expected):
    assert digest_of({name: projection(seed, name, shape, dist)}) == expected


def test_reference_values():
    a = projection(0, "model.layers.0.self_attn.q_proj", (8, 64))
    assert a[0, :3].tolist() == [0.01280436385422945, 0.009666741825640202, -0.09411796927452087]


@pytest.mark.parametrize(
    ("counter", "key", "expected"),
    [  # Random123 known-answer vectors for philox4x32-10
        ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
        ((0xFFFFFFFF,) * 4, (0xFFFFFFFF, 0xFFFFFFFF), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
        (
            (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
            (0xA4093822, 0x299F31D0),
            (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
        ),
    ],
)
def test_philox_known_answers(counter, key, expected):
    out = philox4x32(np.array([counter], dtype=np.uint64), key)[0]
    assert tuple(int(w) for w in out) == expected


def test_differs_across_seeds_modules_and_shapes():
    base = projection(0, "a.q_proj", (8, 64))
    assert not torch.equal(base, projection(1, "a.q_proj", (8, 64)))
    assert not torch.equal(base, projection(0, "a.k_proj", (8, 64)))
    assert not torch.equal(base, projection(0, "a.q_proj", (16, 64))[:8])


def test_deterministic_and_float32_cpu():
    a = projection(7, "m", (4, 32))
    b = projection(7, "m", (4, 32))
    assert a.dtype == torch.float32 and a.device.type == "cpu"
    assert torch.equal(a, b)


def test_uniform_bounds_and_moments():
    d_in = 256
    a = projection(3, "m", (64, d_in)).double()
    bound = 1 / d_in**0.5
    assert a.abs().max() < bound
    # U(-b, b): mean 0, variance b^2 / 3
    assert abs(a.mean().item()) < 0.02 * bound
    assert a.var().item() == pytest.approx(bound**2 / 3, rel=0.03)


def test_gaussian_moments():
    d_in = 256
    a = projection(3, "m", (64, d_in), "gaussian").double() * d_in**0.5
    assert abs(a.mean().item()) < 0.02
    assert a.std().item() == pytest.approx(1.0, rel=0.03)
    assert 2.6 < a.abs().max().item() < 6.0


def test_stacked_projection_and_digest():
    segs = [Segment(1, 4), Segment(2, 8, "gaussian")]
    a = stacked_projection(segs, "m", 32)
    assert a.shape == (12, 32)
    assert torch.equal(a[:4], projection(1, "m", (4, 32)))
    assert torch.equal(a[4:], projection(2, "m", (8, 32), "gaussian"))
    d1 = projection_digest(segs, {"m": 32, "n": 16})
    assert d1 == projection_digest(segs, {"n": 16, "m": 32})  # order-independent
    assert d1 != projection_digest(segs[:1], {"m": 32, "n": 16})


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"seed": -1, "rank": 4}, "seed"), ({"seed": 0, "rank": 0}, "rank"), ({"seed": 0, "rank": 4, "distribution": "cauchy"}, "distribution")],
)
def test_bad_segment(kwargs, field):
    with pytest.raises(ValueError, match=field):
        Segment(**kwargs)
