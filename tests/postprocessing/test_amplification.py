"""Toeplitz privacy amplification: carry-less Karatsuba and FFT paths against the dense matrix."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qdnet.postprocessing import amplification as pa
from qdnet.postprocessing.amplification import fresh_seed, toeplitz_hash, toeplitz_hash_dense

LANES = [lanes for lanes in (2, 4, 8) if lanes <= pa.HOST_CLMUL_LANES]
"""Carry-less vector widths this CPU can run (empty without PCLMULQDQ)."""

needs_clmul = pytest.mark.skipif(not LANES, reason="CPU lacks PCLMULQDQ")


def _case(n: int, m: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 2, n, dtype=np.uint8), rng.integers(0, 2, n + m - 1, dtype=np.uint8)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 700), frac=st.floats(0.0, 1.0), seed=st.integers(0, 2**32 - 1))
def test_both_paths_match_dense_matrix(n: int, frac: float, seed: int) -> None:
    m = min(n, max(1, round(frac * n)))
    key, s = _case(n, m, seed)
    dense = toeplitz_hash_dense(key, s, m)
    np.testing.assert_array_equal(toeplitz_hash(key, s, m), dense)
    np.testing.assert_array_equal(pa._toeplitz_hash_fft(key, s, m), dense)
    for lanes in LANES:
        np.testing.assert_array_equal(pa._toeplitz_hash_clmul(key, s, m, lanes), dense)


@needs_clmul
@pytest.mark.parametrize(
    ("n", "m"),
    [(1, 1), (64, 1), (64, 64), (65, 64), (127, 1), (128, 65), (1000, 999), (3000, 3000)],
)
def test_clmul_word_boundaries_match_dense(n: int, m: int) -> None:
    key, s = _case(n, m, n * 7919 + m)
    dense = toeplitz_hash_dense(key, s, m)
    for lanes in LANES:
        np.testing.assert_array_equal(pa._toeplitz_hash_clmul(key, s, m, lanes), dense)


@needs_clmul
@pytest.mark.parametrize(("n", "m"), [(300_001, 150_000), (250_000, 1_000), (123_457, 123_457)])
def test_clmul_matches_fft_at_scale(n: int, m: int) -> None:
    # several Karatsuba levels and key tiles; n not a multiple of 64
    key, s = _case(n, m, n + m)
    fft = pa._toeplitz_hash_fft(key, s, m)
    for lanes in LANES:
        np.testing.assert_array_equal(pa._toeplitz_hash_clmul(key, s, m, lanes), fft)


def test_block_words_halve_down_to_the_basecase() -> None:
    for words in (1, 8, 9, 127, 128, 129, 7813, 15_625, 1_562_500):
        k, leaf = pa._block_words(words)
        assert leaf % pa.BASECASE_WORD_MULTIPLE == 0
        assert leaf <= pa.BASECASE_MAX_WORDS
        assert k % leaf == 0 and (k // leaf) & (k // leaf - 1) == 0  # k = leaf 2^r
        assert words <= k < max(words + pa.BASECASE_WORD_MULTIPLE, words * 1.25)


def test_clmul_lanes_follow_cpu_features() -> None:
    assert pa.clmul_lanes(set()) == 0
    assert pa.clmul_lanes({"pclmul", "avx"}) == 2
    assert pa.clmul_lanes({"pclmul", "avx", "vpclmulqdq"}) == 4
    assert pa.clmul_lanes({"pclmul", "avx", "avx512f", "vpclmulqdq"}) == 8


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
    assert len(toeplitz_hash(np.zeros(10, np.uint8), np.zeros(9, np.uint8), 0)) == 0
    with pytest.raises(ValueError):
        toeplitz_hash(np.zeros(10, np.uint8), np.zeros(5, np.uint8), 3)
    with pytest.raises(ValueError):
        toeplitz_hash(np.zeros(10, np.uint8), np.zeros(20, np.uint8), 11)
    with pytest.raises(ValueError):
        toeplitz_hash(np.zeros(0, np.uint8), np.zeros(0, np.uint8), 1)


def test_matches_hslu_reference_library_randextract() -> None:
    """Cross-implementation check against randextract 0.2.2 (HSLU's reference implementation
    of Toeplitz hashing), with its default seed layout T[i, j] = seed[(i - j) mod (n + m - 1)]
    mapped onto ours, T[i, j] = seed[i - j + n - 1]."""
    randextract = pytest.importorskip("randextract")
    rng = np.random.default_rng(8)
    for n, m in ((999, 400), (4_096, 4_096), (20_000, 7_777)):
        key = rng.integers(0, 2, n, dtype=np.uint8)
        seed = rng.integers(0, 2, n + m - 1, dtype=np.uint8)
        t = np.arange(n + m - 1)
        theirs_seed = seed[np.where(t < m, t, t - (n + m - 1)) + n - 1]
        theirs = np.asarray(randextract.ToeplitzHashing(n, m).extract(key, theirs_seed), np.uint8)
        np.testing.assert_array_equal(pa.toeplitz_hash(key, seed, m), theirs)
