"""Privacy amplification by Toeplitz hashing: a carry-less middle product, or one FFT.

Hash family. For an n-bit input x and an m-bit output, the seed s has n+m-1 bits and defines
the m x n Toeplitz matrix T[i, j] = s[i - j + n - 1]; the output is y = T x over GF(2). Random
Toeplitz matrices form a two-universal family (Krawczyk, CRYPTO 1994; Mansour, Nisan, Tiwari,
STOC 1990), so by the leftover hash lemma the output is eps-close to uniform and independent of
Eve when m is the finite-key length (Bennett, Brassard, Crepeau, Maurer, IEEE TIT 41 (1995);
Renner, PhD thesis, ETH 2005, Cor. 5.6.1; Tomamichel et al., IEEE TIT 57 (2011)). The seed is
public but must be fresh and uniform for each block: Alice draws it from the OS CSPRNG after
error correction and sends it (:func:`fresh_seed`).

Computation. y[i] = sum_j s[i - j + n - 1] x[j] is coefficient i + n - 1 of the GF(2)[t]
polynomial product s(t) x(t): a *middle product*. :func:`toeplitz_hash` picks one of two exact
algorithms (both bit-identical with :func:`toeplitz_hash_dense`):

* Carry-less Karatsuba (:func:`_toeplitz_hash_clmul`, x86-64 CPUs with PCLMULQDQ). The bits are
  packed into 64-bit words and the m x n Toeplitz matrix is cut into k x k word blocks
  (k >= m/64); each block is a word-level middle product computed by the transposed
  Karatsuba-Ofman recursion (Karatsuba, Ofman, Dokl. Akad. Nauk SSSR 145 (1962); middle product
  form from Hanrot, Quercia, Zimmermann, "The middle product algorithm I", AAECC 14 (2004)):
  three half-size middle products and O(k) XORs per level, no carries over GF(2), so the unused
  outer coefficients of s(t) x(t) are never computed. Its schoolbook basecase multiplies words
  with the carry-less multiply instruction (Gueron, Kounavis, "Intel Carry-Less Multiplication
  Instruction and its Usage for Computing the GCM Mode", Intel white paper, 2010), in its
  512/256-bit VPCLMULQDQ form where the CPU has it, emitted through LLVM intrinsics from Numba.
  Cost ~ (n/m) (m/64)^1.58 word products, memory ~ 2 (n + m) / 8 bytes. It beats the FFT at
  every size measured, so there is no size crossover and the FFT runs only where the instruction
  is missing: input Mbit/s of CPU time on one core (Intel Xeon, Emerald Rapids, m = n/2, fresh
  seed per call) at n = 1e5 / 1e6 / 1e7 / 1e8 were 940 / 360 / 106 / 29 with 512-bit VPCLMULQDQ,
  336 / 137 / 44 / 11 with 128-bit PCLMULQDQ, and 14 / 10 / 6 / 5 for the FFT (Karatsuba's lead
  shrinks by about 2^0.58 / 1.04 = 1.44 per doubling of n, so it still leads at MAX_INPUT_BITS).
* FFT (:func:`_toeplitz_hash_fft`, any CPU). A *circular* convolution of length L >= n + m - 1
  equals the linear one except that the wrapped tail (linear indices >= L, at most 2n + m - 3)
  lands on indices <= n - 2, which are not read; so L = next_fast_len(n + m - 1) suffices instead
  of the 2n + m - 2 of a plain linear convolution (notes, section 4.1). The sums are integers
  <= n < 2^53; float64 FFT rounding error stays below 1e-8 at n = 1e7 (measured in the notes),
  and every output is checked to lie within :data:`FFT_ROUNDING_TOLERANCE` of an integer before
  it is reduced mod 2.
"""

from __future__ import annotations

import secrets
from typing import Any

import numba as nb
import numpy as np
from llvmlite import binding as llvm_binding
from llvmlite import ir
from numba.core import cgutils
from numba.core import config as numba_config
from numba.core import types as nbt
from numba.extending import intrinsic
from numba.np.arrayobj import make_array
from numpy.typing import NDArray

Bits = NDArray[np.uint8]
"""A 1-D array of 0/1 values, one bit per byte."""

Words = NDArray[np.uint64]
"""Bits packed 64 to a word, bit b of word w holding bit 64 w + b (little-endian bit order)."""

MAX_INPUT_BITS = 200_000_000

FFT_ROUNDING_TOLERANCE = 0.25
"""Largest distance of an FFT convolution output from an integer accepted as exact."""

WORD_BITS = 64
"""Bits per packed word (the carry-less multiply instruction's operand width)."""

BASECASE_MAX_WORDS = 256
"""Largest basecase block (words) :func:`_block_words` considers; Karatsuba halves down to it."""

BASECASE_LEAF_OVERHEAD = 150
"""Cost model of one basecase leaf of c words, in carry-less multiply instructions:
c^2 / 4 (512-bit products) + 2 c (carry loop, parent XORs) + this fixed cost (call, stack).
Fitted at n = 1e6 (c = 32..128 within 10 %, c = 64 best) and n = 1e7 (c = 40 or 80)."""

BASECASE_WORD_MULTIPLE = 8
"""Basecase sizes are multiples of the widest vector (8 words), so the basecase needs no tail."""

BLOCK_SEARCH_HALVINGS = 6
"""Halving counts :func:`_block_words` tries beyond the least one."""

KARATSUBA_MAX_DEPTH = 64
"""Stack depth of the iterative Karatsuba recursion (a block of 2^63 words would need 63)."""

SCRATCH_PER_BLOCK_WORD = 4
"""Scratch words per block word: 2 h + h + h at the top level, geometric below (< 4 k in all)."""

VECTOR_SLACK_WORDS = 8
"""Zero words after each workspace region, so no vector access can run past the array."""

_LLVM_CLMUL = {
    2: "llvm.x86.pclmulqdq",
    4: "llvm.x86.pclmulqdq.256",
    8: "llvm.x86.pclmulqdq.512",
}
"""LLVM intrinsic for a carry-less multiply on vectors of 2, 4 or 8 words (1, 2 or 4 products)."""

_CLMUL_LOW_LOW = 0x00
_CLMUL_HIGH_LOW = 0x01
"""PCLMULQDQ immediates: bit 0 picks the first operand's qword, bit 4 the second's, per lane."""


def _cpu_features() -> set[str]:
    """The CPU features Numba compiles for (its NUMBA_CPU_FEATURES override, else the host's)."""
    override = getattr(numba_config, "CPU_FEATURES", None)
    if override is not None:
        flags = str(override).split(",")
        return {f[1:] for f in flags if f.startswith("+")}
    return {name for name, on in llvm_binding.get_host_cpu_features().items() if on}


def clmul_lanes(features: set[str] | None = None) -> int:
    """Widest carry-less multiply vector, in 64-bit words, Numba may emit here (0: none).

    8 for AVX-512 VPCLMULQDQ, 4 for AVX VPCLMULQDQ, 2 for the original 128-bit PCLMULQDQ.
    """
    if features is None and getattr(numba_config, "DISABLE_JIT", False):
        return 0  # the basecase exists only as compiled LLVM IR
    feats = _cpu_features() if features is None else features
    if "pclmul" not in feats:
        return 0
    if "vpclmulqdq" in feats and "avx512f" in feats:
        return 8
    if "vpclmulqdq" in feats and "avx" in feats:
        return 4
    return 2


HOST_CLMUL_LANES = clmul_lanes()
"""Vector width the carry-less path uses on this machine (0: :func:`toeplitz_hash` uses FFT)."""


def fresh_seed(n: int, m: int) -> Bits:
    """n + m - 1 uniform seed bits from the OS CSPRNG (Alice draws a new one for every block)."""
    nbits = n + m - 1
    raw = np.frombuffer(secrets.token_bytes((nbits + 7) // 8), dtype=np.uint8)
    return np.unpackbits(raw)[:nbits].copy()


def _check(key: Bits, seed: Bits, m: int) -> None:
    n = len(key)
    if n == 0 or m > n:
        raise ValueError(f"output length m={m} must be in 1..n (n={n})")
    if n > MAX_INPUT_BITS:
        raise ValueError(f"input of {n} bits exceeds {MAX_INPUT_BITS}")
    if len(seed) != n + m - 1:
        raise ValueError(f"seed has {len(seed)} bits, Toeplitz {m}x{n} needs {n + m - 1}")


def toeplitz_hash(key: Bits, seed: Bits, m: int, workers: int = 1) -> Bits:
    """y = T(seed) x over GF(2): carry-less Karatsuba where the CPU has PCLMULQDQ, else FFT.

    ``key`` has n 0/1 entries, ``seed`` n + m - 1; returns m 0/1 entries (uint8). ``workers``
    is the FFT's thread count (the carry-less path runs on one core).
    """
    if m <= 0:
        return np.zeros(0, dtype=np.uint8)
    _check(key, seed, m)
    if HOST_CLMUL_LANES:
        return _toeplitz_hash_clmul(key, seed, m, HOST_CLMUL_LANES)
    return _toeplitz_hash_fft(key, seed, m, workers)


def _toeplitz_hash_fft(key: Bits, seed: Bits, m: int, workers: int = 1) -> Bits:
    """The FFT path: one circular convolution of length next_fast_len(n + m - 1)."""
    import scipy.fft as sfft  # here: a machine with PCLMULQDQ never needs it (0.3 s of import)

    n = len(key)
    length = sfft.next_fast_len(n + m - 1, real=True)
    spectrum = sfft.rfft(seed, n=length, workers=workers)
    spectrum *= sfft.rfft(key, n=length, workers=workers)
    conv = sfft.irfft(spectrum, n=length, workers=workers, overwrite_x=True)
    window = conv[n - 1 : n - 1 + m]
    rounded = np.rint(window)
    worst = float(np.max(np.abs(window - rounded)))
    if worst > FFT_ROUNDING_TOLERANCE:
        raise ArithmeticError(f"FFT rounding error {worst:.3g} too large for exact GF(2) hashing")
    return (rounded.astype(np.int64) & 1).astype(np.uint8)


def toeplitz_hash_dense(key: Bits, seed: Bits, m: int) -> Bits:
    """Reference: the explicit m x n Toeplitz matrix times x mod 2 (small inputs, tests only)."""
    n = len(key)
    i = np.arange(m)[:, None]
    j = np.arange(n)[None, :]
    matrix = seed[i - j + n - 1].astype(np.int64)
    return ((matrix @ key.astype(np.int64)) & 1).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# Carry-less path
#
# Word-level middle product. For a of 2k words and b of k words, MP(a, b) is words k..2k-1 of
# the carry-less product a(t) b(t), i.e. output bit u = sum_v a[64 k + u - v] b[v] (bits). With
# C_w = sum_{i+j=w} a_i b_j (128-bit carry-less word products), output word j is
# lo(C_{k+j}) ^ hi(C_{k+j-1}). Splitting b = b0 + t^(64h) b1 and the output into halves
# (k = 2h, a_[r:s] = words r..s-1 of a):
#   y0 = MP(a_[h:3h], b0) + MP(a_[0:2h], b1),   y1 = MP(a_[2h:4h], b0) + MP(a_[h:3h], b1),
# and since MP is linear in a, with p = MP(a_[h:3h], b0 + b1):
#   y0 = p + MP(a_[0:2h] + a_[h:3h], b1),       y1 = p + MP(a_[2h:4h] + a_[h:3h], b0).
# Every array lives in one workspace; "pointers" are word offsets into it.


def _clmul_basecase_codegen(lanes: int) -> Any:
    """LLVM IR of ws[y:y+k] ^= MP(ws[a:a+2k], ws[b:b+k]) by schoolbook, ``lanes`` words a vector.

    For groups of ``lanes`` consecutive C_w the inner loop loads a_[w-j : w-j+lanes], broadcasts
    b_j, and two carry-less multiplies (low and high qword of each 128-bit lane of a) give the
    products a_{w-j+e} b_j for e = 0..lanes-1: lanes/2 of C_w per instruction. The high half of
    C_{k-1}, the carry into output word 0, comes from a 128-bit loop.
    """
    i8, i32, i64 = ir.IntType(8), ir.IntType(32), ir.IntType(64)
    vec = ir.VectorType(i64, lanes)
    pair = ir.VectorType(i64, 2)
    low_words = [w for lane in range(0, lanes, 2) for w in (lane, lanes + lane)]
    high_words = [w + 1 for w in low_words]
    shift_in = [lanes, *range(lanes - 1)]
    idx = ir.VectorType(i32, lanes)

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        ws_arr, a_off, b_off, y_off, k, _ = args
        base = make_array(sig.args[0])(context, builder, ws_arr).data
        a = builder.gep(base, [a_off])
        b = builder.gep(base, [b_off])
        y = builder.gep(base, [y_off])
        fnty = ir.FunctionType(vec, [vec, vec, i8])
        clmul = cgutils.get_or_insert_function(builder.module, fnty, _LLVM_CLMUL[lanes])
        clmul2 = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(pair, [pair, pair, i8]), _LLVM_CLMUL[2]
        )
        low_low = ir.Constant(i8, _CLMUL_LOW_LOW)
        high_low = ir.Constant(i8, _CLMUL_HIGH_LOW)
        first, second = ir.Constant(i32, 0), ir.Constant(i32, 1)
        one = ir.Constant(k.type, 1)

        # carry = hi(C_{k-1}) = hi(sum_j a_{k-1-j} b_j)
        acc = cgutils.alloca_once_value(builder, ir.Constant(pair, [0, 0]))
        with cgutils.for_range(builder, k) as loop:
            j = loop.index
            av = builder.load(builder.gep(a, [builder.sub(builder.sub(k, one), j)]))
            bv = builder.load(builder.gep(b, [j]))
            va = builder.insert_element(ir.Constant(pair, None), av, first)
            vb = builder.insert_element(ir.Constant(pair, None), bv, first)
            prod = builder.call(clmul2, [va, vb, low_low])
            builder.store(builder.xor(builder.load(acc), prod), acc)
        carry = cgutils.alloca_once_value(
            builder, builder.extract_element(builder.load(acc), second)
        )

        groups = builder.udiv(k, ir.Constant(k.type, lanes))
        with cgutils.for_range(builder, groups) as group:
            w0 = builder.add(k, builder.mul(group.index, ir.Constant(k.type, lanes)))
            even = cgutils.alloca_once_value(builder, ir.Constant(vec, [0] * lanes))
            odd = cgutils.alloca_once_value(builder, ir.Constant(vec, [0] * lanes))
            with cgutils.for_range(builder, k) as loop:
                j = loop.index
                a_ptr = builder.bitcast(builder.gep(a, [builder.sub(w0, j)]), vec.as_pointer())
                av = builder.load(a_ptr, align=8)
                bj = builder.load(builder.gep(b, [j]))
                bv = builder.shuffle_vector(
                    builder.insert_element(ir.Constant(vec, None), bj, first),
                    ir.Constant(vec, None),
                    ir.Constant(idx, [0] * lanes),
                )
                builder.store(
                    builder.xor(builder.load(even), builder.call(clmul, [av, bv, low_low])), even
                )
                builder.store(
                    builder.xor(builder.load(odd), builder.call(clmul, [av, bv, high_low])), odd
                )
            ev, od = builder.load(even), builder.load(odd)
            lows = builder.shuffle_vector(ev, od, ir.Constant(idx, low_words))
            highs = builder.shuffle_vector(ev, od, ir.Constant(idx, high_words))
            cin = builder.insert_element(ir.Constant(vec, None), builder.load(carry), first)
            shifted = builder.shuffle_vector(highs, cin, ir.Constant(idx, shift_in))
            builder.store(builder.extract_element(highs, ir.Constant(i32, lanes - 1)), carry)
            y_ptr = builder.bitcast(builder.gep(y, [builder.sub(w0, k)]), vec.as_pointer())
            out = builder.xor(builder.load(y_ptr, align=8), builder.xor(lows, shifted))
            builder.store(out, y_ptr, align=8)
        return context.get_dummy_value()

    return codegen


def _clmul_basecase_typing(
    typingctx: Any, ws: Any, a_off: Any, b_off: Any, y_off: Any, k: Any, lanes: Any
) -> Any:
    """ws[y:y+k] ^= MP(ws[a:a+2k], ws[b:b+k]); k a multiple of ``lanes`` (a literal 2, 4, 8)."""
    if not isinstance(lanes, nbt.IntegerLiteral) or lanes.literal_value not in _LLVM_CLMUL:
        return None
    sig = nbt.void(ws, a_off, b_off, y_off, k, lanes)
    return sig, _clmul_basecase_codegen(lanes.literal_value)


_clmul_basecase: Any = intrinsic(_clmul_basecase_typing)


@nb.njit(cache=True)
def _xor_words(ws: Words, dst: int, x: int, y: int, count: int) -> None:  # pragma: no cover
    """ws[dst:dst+count] = ws[x:x+count] ^ ws[y:y+count] (views, so the loop vectorizes)."""
    out, u, v = ws[dst : dst + count], ws[x : x + count], ws[y : y + count]
    for i in range(count):
        out[i] = u[i] ^ v[i]


@nb.njit(cache=True)
def _middle_product(
    ws: Words, a_off: int, b_off: int, y_off: int, k: int, leaf: int, scratch_off: int, lanes: int
) -> None:  # pragma: no cover - compiled
    """ws[y:y+k] ^= MP(ws[a:a+2k], ws[b:b+k]) by the Karatsuba recursion above, run iteratively.

    Numba cannot cache recursive functions, so the recursion is an explicit stack of frames
    (a, b, y, k, scratch, stage); blocks of ``leaf`` words go to the basecase. A frame's scratch holds b0 + b1 (h words), p (h words) and the
    a sum (2h words); its children's scratch starts 4h words further on.
    """
    stack = np.empty((KARATSUBA_MAX_DEPTH, 6), np.int64)
    stack[0, 0], stack[0, 1], stack[0, 2] = a_off, b_off, y_off
    stack[0, 3], stack[0, 4], stack[0, 5] = k, scratch_off, 0
    top = 1
    while top > 0:
        f = top - 1
        a, b, y, kk, s, stage = (
            stack[f, 0],
            stack[f, 1],
            stack[f, 2],
            stack[f, 3],
            stack[f, 4],
            stack[f, 5],
        )
        if stage == 0 and kk <= leaf:
            _clmul_basecase(ws, a, b, y, kk, lanes)
            top -= 1
            continue
        h = kk // 2
        if stage == 0:  # p = MP(a[h:3h], b0 + b1) into s[h:2h]
            _xor_words(ws, s, b, b + h, h)
            ws[s + h : s + 2 * h] = 0
            stack[f, 5] = 1
            ca, cb, cy = a + h, s, s + h
        elif stage == 1:  # y0 += p, y1 += p; y0 += MP(a[0:2h] + a[h:3h], b1)
            _xor_words(ws, y, y, s + h, h)
            _xor_words(ws, y + h, y + h, s + h, h)
            _xor_words(ws, s + 2 * h, a, a + h, 2 * h)
            stack[f, 5] = 2
            ca, cb, cy = s + 2 * h, b + h, y
        else:  # y1 += MP(a[2h:4h] + a[h:3h], b0), as a tail call replacing this frame
            _xor_words(ws, s + 2 * h, a + 2 * h, a + h, 2 * h)
            top -= 1
            ca, cb, cy = s + 2 * h, b, y + h
        stack[top, 0], stack[top, 1], stack[top, 2] = ca, cb, cy
        stack[top, 3], stack[top, 4], stack[top, 5] = h, s + 4 * h, 0
        top += 1


@nb.njit(cache=True)
def _toeplitz_words(
    ws: Words,
    seed_off: int,
    key_off: int,
    key_words: int,
    key_shift: int,
    y_off: int,
    k: int,
    leaf: int,
    tiles: int,
    scratch_off: int,
    lanes: int,
) -> None:  # pragma: no cover - compiled
    """Shift the packed key left by ``key_shift`` bits, then y = sum over key tiles of MP.

    ``lanes`` must reach the basecase as a compile-time literal: call it through
    :data:`_TOEPLITZ_WORDS` (``numba.literally`` here would re-type every call from Python).
    """
    if key_shift:
        up, down = np.uint64(key_shift), np.uint64(WORD_BITS - key_shift)
        for w in range(key_off + key_words - 1, key_off, -1):
            ws[w] = (ws[w] << up) | (ws[w - 1] >> down)
        ws[key_off] <<= up
    for q in range(tiles):
        a_off = seed_off + k * (tiles - 1 - q)
        _middle_product(ws, a_off, key_off + q * k, y_off, k, leaf, scratch_off, lanes)


@nb.njit(cache=True)
def _toeplitz_words_128(
    ws: Words,
    seed_off: int,
    key_off: int,
    key_words: int,
    key_shift: int,
    y_off: int,
    k: int,
    leaf: int,
    tiles: int,
    scratch_off: int,
) -> None:  # pragma: no cover - compiled
    """:func:`_toeplitz_words` with 128-bit PCLMULQDQ (2 words a vector)."""
    _toeplitz_words(
        ws, seed_off, key_off, key_words, key_shift, y_off, k, leaf, tiles, scratch_off, 2
    )


@nb.njit(cache=True)
def _toeplitz_words_256(
    ws: Words,
    seed_off: int,
    key_off: int,
    key_words: int,
    key_shift: int,
    y_off: int,
    k: int,
    leaf: int,
    tiles: int,
    scratch_off: int,
) -> None:  # pragma: no cover - compiled
    """:func:`_toeplitz_words` with 256-bit VPCLMULQDQ (4 words a vector)."""
    _toeplitz_words(
        ws, seed_off, key_off, key_words, key_shift, y_off, k, leaf, tiles, scratch_off, 4
    )


@nb.njit(cache=True)
def _toeplitz_words_512(
    ws: Words,
    seed_off: int,
    key_off: int,
    key_words: int,
    key_shift: int,
    y_off: int,
    k: int,
    leaf: int,
    tiles: int,
    scratch_off: int,
) -> None:  # pragma: no cover - compiled
    """:func:`_toeplitz_words` with 512-bit VPCLMULQDQ (8 words a vector)."""
    _toeplitz_words(
        ws, seed_off, key_off, key_words, key_shift, y_off, k, leaf, tiles, scratch_off, 8
    )


_TOEPLITZ_WORDS = {2: _toeplitz_words_128, 4: _toeplitz_words_256, 8: _toeplitz_words_512}
"""Compiled entry point per vector width (only the one used is ever compiled)."""


def _block_words(words: int) -> tuple[int, int]:
    """Block size k = c 2^r >= words and basecase size c (a multiple of 8, <= BASECASE_MAX_WORDS)
    of least cost.

    Cost model: 3^r leaves of c^2 / 4 + 2 c + BASECASE_LEAF_OVERHEAD instructions each; r runs
    from the fewest halvings that fit the basecase bound to a few more (finer padding).
    """
    best_k, best_c, best_cost = 0, 0, float("inf")
    halvings = 0
    while -(-words // (1 << halvings)) > BASECASE_MAX_WORDS:
        halvings += 1
    for r in range(halvings, halvings + BLOCK_SEARCH_HALVINGS):
        c = -(-words // (1 << r))
        c = -(-c // BASECASE_WORD_MULTIPLE) * BASECASE_WORD_MULTIPLE
        cost = 3.0**r * (c * c / 4 + 2 * c + BASECASE_LEAF_OVERHEAD)
        if cost < best_cost:
            best_k, best_c, best_cost = c << r, c, cost
    return best_k, best_c


def _toeplitz_hash_clmul(key: Bits, seed: Bits, m: int, lanes: int = HOST_CLMUL_LANES) -> Bits:
    """The carry-less path (inputs already checked); ``lanes`` as from :func:`clmul_lanes`.

    Word layout. The key is shifted left by e = (1 - n) mod 64 bits, which leaves the product
    unchanged up to the factor t^e and makes the output window start at a word boundary: with
    n' = n + e, y_i is coefficient i + n' - 1 of s(t) x'(t), and (n' - 1) / 64 = base is whole.
    Key tile q (words qk..qk+k-1) then meets seed words base - k (q + 1) .. base - kq + k - 1;
    the seed is stored k tiles - base words into its zero-padded region, so every tile's seed
    window lies inside it.
    """
    n = len(key)
    key_shift = (1 - n) % WORD_BITS
    key_words = -(-(n + key_shift) // WORD_BITS)
    out_words = -(-m // WORD_BITS)
    k, leaf = _block_words(out_words)
    tiles = -(-key_words // k)
    base = (n + key_shift - 1) // WORD_BITS
    seed_off = 0
    key_off = seed_off + k * (tiles + 1) + VECTOR_SLACK_WORDS
    y_off = key_off + k * tiles + VECTOR_SLACK_WORDS
    scratch_off = y_off + k + VECTOR_SLACK_WORDS
    ws = np.zeros(scratch_off + SCRATCH_PER_BLOCK_WORD * k + VECTOR_SLACK_WORDS, np.uint64)
    as_bytes = ws.view(np.uint8)
    byte_at = (seed_off + k * tiles - base) * (WORD_BITS // 8)
    packed = np.packbits(seed, bitorder="little")
    as_bytes[byte_at : byte_at + len(packed)] = packed
    byte_at = key_off * (WORD_BITS // 8)
    packed = np.packbits(key, bitorder="little")
    as_bytes[byte_at : byte_at + len(packed)] = packed
    words_fn = _TOEPLITZ_WORDS[lanes]
    words_fn(ws, seed_off, key_off, key_words, key_shift, y_off, k, leaf, tiles, scratch_off)
    byte_at = y_off * (WORD_BITS // 8)
    return np.unpackbits(
        as_bytes[byte_at : byte_at + out_words * (WORD_BITS // 8)], count=m, bitorder="little"
    )
