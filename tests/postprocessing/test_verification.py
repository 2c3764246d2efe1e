"""The verification hash: single-bit error detection and its eps_cor parameters."""

from __future__ import annotations

import numpy as np

from qdnet.postprocessing.verification import MERSENNE_61, VerificationHash, keys_needed


def test_verification_detects_every_single_bit_error() -> None:
    rng = np.random.default_rng(2)
    key = rng.integers(0, 2, 10_000, dtype=np.uint8)
    vh = VerificationHash.fresh(len(key), 1e-15)
    ref = vh.digest(key)
    assert vh.digest(key.copy()) == ref
    for pos in rng.choice(len(key), 50, replace=False):
        bad = key.copy()
        bad[pos] ^= 1
        assert vh.digest(bad) != ref


def test_verification_parameters() -> None:
    # (L/p)^k <= eps_cor; L = 31250 words for 1e6 bits
    k = keys_needed(1_000_000, 1e-15)
    assert (31250 / MERSENNE_61) ** k <= 1e-15 < (31250 / MERSENNE_61) ** (k - 1)
    vh = VerificationHash.fresh(1_000_000, 1e-15)
    assert vh.leaked_bits == 61 * k
    assert vh.collision_probability(1_000_000) <= 1e-15
    # reference value of the hash: n + sum w_i r^i mod p, computed with Python integers
    bits = np.array([1] * 32 + [0] * 31 + [1], dtype=np.uint8)
    r = 123456789
    expect = (64 + 0xFFFFFFFF * r + 1 * r * r) % MERSENNE_61
    assert VerificationHash((r,)).digest(bits) == (expect,)
