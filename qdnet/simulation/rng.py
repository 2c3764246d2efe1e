"""Counter-free, seedable random streams for Numba kernels: xoshiro256** (Blackman, Vigna,
"Scrambled linear pseudorandom number generators", ACM TOMS 47, 36 (2021)).

Every stream is seeded from 256 bits drawn from the caller's ``numpy.random.Generator`` (never from
global state); the 4-word state is expanded by SplitMix64 (Steele, Lea, Flood, OOPSLA 2014) so that
no state is all-zero. Uniform doubles use the top 53 bits.
"""

from __future__ import annotations

import numpy as np
from numba import njit
from numpy.typing import NDArray

U64 = NDArray[np.uint64]


def new_state(rng: np.random.Generator) -> U64:
    """A fresh xoshiro256** state drawn from ``rng`` (deterministic for a seeded generator).

    Words 0-3 are the generator; words 4-5 the fair-bit pool of :func:`fair_bit` (empty), kept in
    the array between kernel calls so that where a kernel returns does not change the stream."""
    words = rng.integers(0, 2**64 - 1, size=4, dtype=np.uint64, endpoint=True)
    state = np.zeros(6, dtype=np.uint64)
    _splitmix_expand(words, state)
    return state


@njit(cache=True)
def _splitmix_expand(words: U64, state: U64) -> None:  # pragma: no cover - compiled
    z = np.uint64(0)
    for i in range(4):
        z = z + words[i] + np.uint64(0x9E3779B97F4A7C15)
        x = z
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        state[i] = x ^ (x >> np.uint64(31))


@njit(inline="always")
def next_u64(s: U64) -> np.uint64:  # pragma: no cover - compiled
    """Next 64-bit output of xoshiro256** (state updated in place)."""
    x = s[1] * np.uint64(5)
    result = ((x << np.uint64(7)) | (x >> np.uint64(57))) * np.uint64(9)  # rotl(x, 7) * 9
    t = s[1] << np.uint64(17)
    s[2] ^= s[0]
    s[3] ^= s[1]
    s[1] ^= s[2]
    s[0] ^= s[3]
    s[2] ^= t
    s[3] = (s[3] << np.uint64(45)) | (s[3] >> np.uint64(19))  # rotl(s3, 45)
    return result


@njit(inline="always")
def uniform(s: U64) -> float:  # pragma: no cover - compiled
    """Uniform double in [0, 1) with 53 random bits."""
    return float(np.int64(next_u64(s) >> np.uint64(11))) * (1.0 / 9007199254740992.0)


@njit(inline="always")
def bit(s: U64) -> int:  # pragma: no cover - compiled
    """One fair random bit."""
    return int(np.int64(next_u64(s) >> np.uint64(63)))


# The rotations are written out rather than called: Numba inlines an ``inline="always"`` call by
# re-running its front end at every call site, nested calls included, and ``step`` is inlined
# about ten times per kernel (written out, the event kernel compiles in ~0.7 s less; same code).
#
# Register-resident variant for hot kernels: the state travels as a tuple of locals
# ``(s0, s1, s2, s3, pool, left)`` so that LLVM keeps it in registers (an array state is reloaded
# after every store to an output array, which it cannot prove does not alias). ``pool`` holds
# ``left`` unused fair bits of an earlier output, consumed from the top.
State = tuple[np.uint64, np.uint64, np.uint64, np.uint64, np.uint64, np.uint64]
_TWO53 = 9007199254740992.0


@njit(inline="always")
def load(s: U64) -> State:  # pragma: no cover - compiled
    """Copy an array state (generator and bit pool) into locals."""
    return (s[0], s[1], s[2], s[3], s[4], s[5])


@njit(inline="always")
def store(st: State, s: U64) -> None:  # pragma: no cover - compiled
    """Write the generator words and the bit pool back."""
    s[0] = st[0]
    s[1] = st[1]
    s[2] = st[2]
    s[3] = st[3]
    s[4] = st[4]
    s[5] = st[5]


@njit(inline="always")
def step(st: State) -> tuple[np.uint64, State]:  # pragma: no cover - compiled
    """Next 64-bit output and the advanced state (same sequence as :func:`next_u64`)."""
    s0, s1, s2, s3 = st[0], st[1], st[2], st[3]
    x = s1 * np.uint64(5)
    result = ((x << np.uint64(7)) | (x >> np.uint64(57))) * np.uint64(9)  # rotl(x, 7) * 9
    t = s1 << np.uint64(17)
    s2 ^= s0
    s3 ^= s1
    s1 ^= s2
    s0 ^= s3
    s2 ^= t
    s3 = (s3 << np.uint64(45)) | (s3 >> np.uint64(19))  # rotl(s3, 45)
    return result, (s0, s1, s2, s3, st[4], st[5])


@njit(inline="always")
def u53(word: np.uint64) -> float:  # pragma: no cover - compiled
    """The top 53 bits of ``word`` as a float in [0, 2**53) (signed conversion: one instruction)."""
    return float(np.int64(word >> np.uint64(11)))


@njit(inline="always")
def fair_bit(st: State) -> tuple[int, State]:  # pragma: no cover - compiled
    """One fair bit from the pool (refilled with a whole 64-bit output when empty)."""
    pool, left = st[4], st[5]
    if left == np.uint64(0):
        pool, st = step(st)
        left = np.uint64(64)
    value = int(np.int64(pool >> np.uint64(63)))
    return value, (st[0], st[1], st[2], st[3], pool << np.uint64(1), left - np.uint64(1))
