"""Toeplitz privacy amplification (FFT vs dense matrix) and the verification hash."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qdnet.postprocessing.amplification import fresh_seed, toeplitz_hash, toeplitz_hash_dense
from qdnet.postprocessing.verification import MERSENNE_61, VerificationHash, keys_needed


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 700), frac=st.floats(0.01, 1.0), seed=st.integers(0, 2**32 - 1))
def test_fft_toeplitz_matches_dense_matrix(n: int, frac: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    m = max(1, int(frac * n))
    key = rng.integers(0, 2, n, dtype=np.uint8)
    s = rng.integers(0, 2, n + m - 1, dtype=np.uint8)
    np.testing.assert_array_equal(toeplitz_hash(key, s, m), toeplitz_hash_dense(key, s, m))


def test_large_input_is_linear_over_gf2() -> None:
    rng = np.random.default_rng(1)
    n, m = 300_001, 120_000
    x = rng.integers(0, 2, n, dtype=np.uint8)
    y = rng.integers(0, 2, n, dtype=np.uint8)
    s = fresh_seed(n, m)
    lhs = toeplitz_hash(x ^ y, s, m)
    np.testing.assert_array_equal(lhs, toeplitz_hash(x, s, m) ^ toeplitz_hash(y, s, m))
    # the first output bit equals the dot product of the first matrix row with x
    row = s[n - 1 :: -1][:n]
    assert lhs[0] == int(row.astype(np.int64) @ (x ^ y).astype(np.int64)) % 2


def test_seed_checks_and_freshness() -> None:
    assert len(fresh_seed(100, 20)) == 119
    assert not np.array_equal(fresh_seed(1000, 500), fresh_seed(1000, 500))
    with pytest.raises(ValueError):
        toeplitz_hash(np.zeros(10, np.uint8), np.zeros(5, np.uint8), 3)
    with pytest.raises(ValueError):
        toeplitz_hash(np.zeros(10, np.uint8), np.zeros(20, np.uint8), 11)


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
