"""The xoshiro256** streams of qdnet.simulation.rng against a reference in Python integers."""

from __future__ import annotations

import numpy as np
from numba import njit

from qdnet.simulation.rng import U64, fair_bit, load, new_state, next_u64, step, store

MASK = (1 << 64) - 1


def _reference(state: list[int], count: int) -> list[int]:
    """xoshiro256** (Blackman and Vigna 2021, the authors' C code) in Python integers."""

    def rotl(x: int, k: int) -> int:
        return ((x << k) | (x >> (64 - k))) & MASK

    s = list(state)
    out = []
    for _ in range(count):
        out.append(rotl(s[1] * 5 & MASK, 7) * 9 & MASK)
        t = s[1] << 17 & MASK
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = rotl(s[3], 45)
    return out


@njit
def _steps(s: U64, count: int) -> U64:  # pragma: no cover - compiled
    out = np.empty(count, dtype=np.uint64)
    st = load(s)
    for i in range(count):
        out[i], st = step(st)
    store(st, s)
    return out


@njit
def _words(s: U64, count: int) -> U64:  # pragma: no cover - compiled
    out = np.empty(count, dtype=np.uint64)
    for i in range(count):
        out[i] = next_u64(s)
    return out


@njit
def _fair_bits(s: U64, count: int) -> U64:  # pragma: no cover - compiled
    out = np.empty(count, dtype=np.uint64)
    st = load(s)
    for i in range(count):
        out[i], st = fair_bit(st)
    store(st, s)
    return out


def test_tuple_and_array_streams_follow_the_reference() -> None:
    state = new_state(np.random.default_rng(3))
    expected = _reference([int(w) for w in state[:4]], 300)
    assert [int(w) for w in _steps(state.copy(), 300)] == expected
    assert [int(w) for w in _words(state.copy(), 300)] == expected
    # The stream continues where a kernel call stopped.
    kept = state.copy()
    first = _steps(kept, 100)
    assert [int(w) for w in np.concatenate([first, _steps(kept, 200)])] == expected


def test_fair_bits_are_each_output_from_the_top_bit_down() -> None:
    state = new_state(np.random.default_rng(4))
    words = _reference([int(w) for w in state[:4]], 3)
    bits = [int(b) for b in _fair_bits(state, 150)]
    assert bits == [(w >> (63 - i)) & 1 for w in words for i in range(64)][:150]
    assert int(state[5]) == 3 * 64 - 150  # bits left in the pool, kept in the array state


class _ZeroWords:
    """Stands in for a Generator whose four drawn words are all zero."""

    def integers(self, *args: object, **kwargs: object) -> np.ndarray:
        return np.zeros(4, dtype=np.uint64)


def test_seed_expansion_is_splitmix64() -> None:
    # Zero input words leave SplitMix64's own sequence from seed 0 (Vigna's splitmix64.c).
    state = new_state(_ZeroWords())  # type: ignore[arg-type]
    expected = [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F, 0xF88BB8A8724C81EC]
    assert [int(w) for w in state] == [*expected, 0, 0]
