"""Counter-free, seedable random streams for Numba kernels: xoshiro256** (Blackman, Vigna,
"Scrambled linear pseudorandom number generators", ACM TOMS 47, 36 (2021)).

Every stream is seeded from 256 bits drawn from the caller's ``numpy.random.Generator`` (never from
global state); the 4-word state is expanded by SplitMix64 (Steele, Lea, Flood, OOPSLA 2014) so that
no state is all-zero. Uniform doubles use the top 53 bits.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic
from numpy.typing import NDArray

U64 = NDArray[np.uint64]


_MASK64 = (1 << 64) - 1


def new_state(rng: np.random.Generator) -> U64:
    """A fresh xoshiro256** state drawn from ``rng`` (deterministic for a seeded generator).

    Words 0-3 are the generator; words 4-5 the fair-bit pool of :func:`fair_bit` (empty), kept in
    the array between kernel calls so that where a kernel returns does not change the stream.
    The drawn words are expanded by SplitMix64 (in Python integers: four steps per stream)."""
    words = rng.integers(0, 2**64 - 1, size=4, dtype=np.uint64, endpoint=True)
    state = np.zeros(6, dtype=np.uint64)
    z = 0
    for i in range(4):
        z = (z + int(words[i]) + 0x9E3779B97F4A7C15) & _MASK64
        x = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
        state[i] = x ^ (x >> 31)
    return state


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


# Register-resident variant for hot kernels: the state travels as a tuple of locals
# ``(s0, s1, s2, s3, pool, left)`` so that LLVM keeps it in registers (an array state is reloaded
# after every store to an output array, which it cannot prove does not alias). ``pool`` holds
# ``left`` unused fair bits of an earlier output, consumed from the top.
#
# :func:`step` and :func:`fair_bit` are Numba intrinsics: they emit their few LLVM instructions at
# each call. As ``inline="always"`` functions (the same code after LLVM's optimiser) Numba re-ran
# its front end on them at each of their ~20 call sites in a kernel, nested calls included, which
# was half of the event kernel's compile time on a fresh clone (2.6 s -> 1.2 s).
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


def _is_state(st: Any) -> bool:
    return isinstance(st, types.UniTuple) and st.count == 6 and st.dtype == types.uint64


def _xoshiro(builder: Any, st: list[Any]) -> tuple[Any, list[Any]]:
    """LLVM IR of one xoshiro256** step on the state words: (output, new state words)."""
    i64 = ir.IntType(64)

    def const(value: int) -> Any:
        return ir.Constant(i64, value)

    def rotl(x: Any, k: int) -> Any:
        return builder.or_(builder.shl(x, const(k)), builder.lshr(x, const(64 - k)))

    s0, s1, s2, s3 = st[:4]
    result = builder.mul(rotl(builder.mul(s1, const(5)), 7), const(9))
    t = builder.shl(s1, const(17))
    s2 = builder.xor(s2, s0)
    s3 = builder.xor(s3, s1)
    s1 = builder.xor(s1, s2)
    s0 = builder.xor(s0, s3)
    s2 = builder.xor(s2, t)
    s3 = rotl(s3, 45)
    return result, [s0, s1, s2, s3, *st[4:]]


def _step_typing(typingctx: Any, st: Any) -> Any:
    """``step(st) -> (output, st')``: the next 64-bit output and the advanced state (the same
    sequence as :func:`next_u64`); the bit pool is passed through."""
    if not _is_state(st):
        return None

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        words = [builder.extract_value(args[0], i) for i in range(6)]
        result, advanced = _xoshiro(builder, words)
        state = context.make_tuple(builder, sig.args[0], advanced)
        return context.make_tuple(builder, sig.return_type, [result, state])

    return types.Tuple((types.uint64, st))(st), codegen


def _fair_bit_typing(typingctx: Any, st: Any) -> Any:
    """``fair_bit(st) -> (bit, st')``: one fair bit from the top of the pool, refilled with a
    whole 64-bit output of :func:`step` when empty."""
    if not _is_state(st):
        return None

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        i64 = ir.IntType(64)
        words = [builder.extract_value(args[0], i) for i in range(6)]
        slots = [cgutils.alloca_once_value(builder, word) for word in words]
        with builder.if_then(builder.icmp_unsigned("==", words[5], ir.Constant(i64, 0))):
            result, advanced = _xoshiro(builder, words)
            for slot, word in zip(
                slots, [*advanced[:4], result, ir.Constant(i64, 64)], strict=True
            ):
                builder.store(word, slot)
        s0, s1, s2, s3, pool, left = (builder.load(slot) for slot in slots)
        value = builder.lshr(pool, ir.Constant(i64, 63))
        pool = builder.shl(pool, ir.Constant(i64, 1))
        left = builder.sub(left, ir.Constant(i64, 1))
        state = context.make_tuple(builder, sig.args[0], [s0, s1, s2, s3, pool, left])
        return context.make_tuple(builder, sig.return_type, [value, state])

    return types.Tuple((types.intp, st))(st), codegen


step: Any = intrinsic(_step_typing)
fair_bit: Any = intrinsic(_fair_bit_typing)


@njit(inline="always")
def u53(word: np.uint64) -> float:  # pragma: no cover - compiled
    """The top 53 bits of ``word`` as a float in [0, 2**53) (signed conversion: one instruction)."""
    return float(np.int64(word >> np.uint64(11)))
