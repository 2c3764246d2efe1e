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


def test_tree_evaluation_matches_horner_with_python_integers() -> None:
    # The vectorised tree (uint64 arithmetic) against Horner's rule in exact Python integers,
    # over odd and even word counts and keys next to 0 and p.
    rng = np.random.default_rng(5)
    for nbits in [1, 31, 32, 33, 64, 95, 96, 97, 1000, 4097, 33_000]:
        bits = rng.integers(0, 2, nbits, dtype=np.uint8)
        padded = np.concatenate([bits, np.zeros(-nbits % 32, np.uint8)])
        words = [int("".join(map(str, w)), 2) for w in padded.reshape(-1, 32)]
        for r in (1, 2, MERSENNE_61 - 1, int(rng.integers(0, MERSENNE_61))):
            acc = 0
            for w in reversed(words):
                acc = (acc + w) * r % MERSENNE_61
            assert VerificationHash((r,)).digest(bits) == ((acc + nbits) % MERSENNE_61,)
