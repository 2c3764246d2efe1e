"""Error verification: a universal polynomial hash with a fresh public key, and its eps_cor.

Family. The n-bit key is packed into L = ceil(n/32) words w_1..w_L < 2^32 and hashed as the
polynomial h_r(w) = (n + sum_i w_i r^i) mod p over the prime field p = 2^61 - 1, r uniform in
Z_p (Carter and Wegman, JCSS 18 (1979); polynomial evaluation hashing, e.g. Bierbrauer,
Johansson, Kabatianskii, Smeets, CRYPTO 1993). Two different inputs of the same length give a
nonzero polynomial of degree <= L, which has at most L roots, so they collide with probability
<= L/p. With k independent keys the collision probability, hence eps_cor, is (L/p)^k; k is the
smallest value that meets the requested eps_cor. Alice discloses k * 61 hash bits, which are
charged to the key as leakage. A block whose hashes differ is discarded by both ends.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass

import numba as nb
import numpy as np
from numpy.typing import NDArray

MERSENNE_61 = (1 << 61) - 1
HASH_BITS_PER_KEY = 61


@nb.njit(cache=True, inline="always")
def _mulmod61(a: np.uint64, b: np.uint64) -> np.uint64:  # pragma: no cover - compiled
    mask32 = np.uint64(0xFFFFFFFF)
    p = np.uint64(MERSENNE_61)
    a_hi = a >> np.uint64(32)
    a_lo = a & mask32
    b_hi = b >> np.uint64(32)
    b_lo = b & mask32
    hi = a_hi * b_hi
    mid = a_hi * b_lo + a_lo * b_hi
    lo = a_lo * b_lo
    m_hi = mid >> np.uint64(29)
    m_lo = mid & np.uint64((1 << 29) - 1)
    r = (hi << np.uint64(3)) + m_hi + (m_lo << np.uint64(32)) + (lo >> np.uint64(61)) + (lo & p)
    r = (r & p) + (r >> np.uint64(61))
    if r >= p:
        r -= p
    return r


@nb.njit(cache=True)
def _poly_hash(words: NDArray[np.uint64], r: np.uint64, nbits: np.uint64) -> np.uint64:
    # pragma: no cover - compiled
    p = np.uint64(MERSENNE_61)
    acc = np.uint64(0)
    for i in range(words.shape[0] - 1, -1, -1):
        acc = _mulmod61(acc, r) + words[i]
        if acc >= p:
            acc -= p
    acc = _mulmod61(acc, r)  # sum_i w_i r^(i+1)
    acc = acc + (nbits % p)
    if acc >= p:
        acc -= p
    return acc


def _words(bits: NDArray[np.uint8]) -> NDArray[np.uint64]:
    packed = np.packbits(bits)
    pad = (-len(packed)) % 4
    if pad:
        packed = np.concatenate([packed, np.zeros(pad, np.uint8)])
    return packed.view(">u4").astype(np.uint64)


def keys_needed(nbits: int, eps_cor: float) -> int:
    """Smallest k with (L/p)^k <= eps_cor, L = ceil(n/32) words."""
    words = max(1, math.ceil(nbits / 32))
    per_key = math.log2(words) - math.log2(MERSENNE_61)
    return max(1, math.ceil(math.log2(eps_cor) / per_key))


@dataclass(frozen=True)
class VerificationHash:
    """Public hash keys for one block (Alice draws them after error correction)."""

    keys: tuple[int, ...]

    @classmethod
    def fresh(cls, nbits: int, eps_cor: float) -> VerificationHash:
        """Draw k uniform keys in Z_p from the OS CSPRNG."""
        count = keys_needed(nbits, eps_cor)
        return cls(tuple(secrets.randbelow(MERSENNE_61) for _ in range(count)))

    @property
    def leaked_bits(self) -> int:
        """Bits the hash value discloses."""
        return HASH_BITS_PER_KEY * len(self.keys)

    def collision_probability(self, nbits: int) -> float:
        """eps_cor achieved for an n-bit key: (L/p)^k."""
        return float((max(1, math.ceil(nbits / 32)) / MERSENNE_61) ** len(self.keys))

    def digest(self, bits: NDArray[np.uint8]) -> tuple[int, ...]:
        """Hash values of a 0/1 key array, one per key."""
        words = _words(bits)
        return tuple(int(_poly_hash(words, np.uint64(r), np.uint64(len(bits)))) for r in self.keys)
