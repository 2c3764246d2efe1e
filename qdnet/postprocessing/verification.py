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

import numpy as np
from numpy.typing import NDArray

MERSENNE_61 = (1 << 61) - 1
HASH_BITS_PER_KEY = 61
Words = NDArray[np.uint64]


_P = np.uint64(MERSENNE_61)
_LOW32 = np.uint64(0xFFFFFFFF)
_LOW29 = np.uint64((1 << 29) - 1)


def _reduce(x: Words) -> Words:
    """x mod p for x < 2p: x - p wraps around to above x when x < p, so the smaller one."""
    return np.minimum(x, x - _P)


def _mulmod61(a: Words, b: np.uint64) -> Words:
    """a b mod p elementwise, for a, b < p. The 122-bit product is split into 32-bit
    halves, with 2^61 = 1 (mod p) folding every part below 2^61: no partial sum reaches 2^63,
    so the uint64 arithmetic is exact."""
    a_hi, a_lo = a >> np.uint64(32), a & _LOW32
    b_hi, b_lo = b >> np.uint64(32), b & _LOW32
    hi = a_hi * b_hi  # < 2^58, weight 2^64 = 2^3 (mod p)
    mid = a_hi * b_lo + a_lo * b_hi  # < 2^62, weight 2^32
    lo = a_lo * b_lo  # < 2^64
    r = (
        (hi << np.uint64(3))
        + (mid >> np.uint64(29))
        + ((mid & _LOW29) << np.uint64(32))
        + (lo >> np.uint64(61))
        + (lo & _P)
    )
    return _reduce((r & _P) + (r >> np.uint64(61)))


def _poly_hash(words: Words, r: int, nbits: int) -> int:
    """(nbits + sum_i w_i r^(i+1)) mod p, evaluated as a tree: each level pairs neighbours,
    v_j = v_2j + v_(2j+1) r^(2^level), so log2(L) vectorised levels replace L sequential steps
    (about 2L multiplications in all)."""
    v = words
    power = np.uint64(r % MERSENNE_61)
    while len(v) > 1:
        if len(v) % 2:
            v = np.append(v, np.uint64(0))
        v = _reduce(v[0::2] + _mulmod61(v[1::2], power))
        power = np.uint64(int(power) * int(power) % MERSENNE_61)
    acc = int(v[0]) if len(v) else 0
    return (acc * (r % MERSENNE_61) + nbits) % MERSENNE_61


def _words(bits: NDArray[np.uint8]) -> Words:
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
        return tuple(_poly_hash(words, r, len(bits)) for r in self.keys)
