"""Cascade reconciliation, modern variant, with all binary searches of a round batched.

Protocol (Brassard and Salvail, EUROCRYPT 1993) with the improvements studied by Martinez-Mateo,
Pacher, Peev, Ciurana and Martin, "Demystifying the information reconciliation protocol Cascade",
QIC 15, 453 (2015), arXiv:1407.3257:

* power-of-two block sizes (their option (7) family): k1 = 2^ceil(log2(0.5/Q)), k2 = 4 k1
  (8 k1 from 50,000 bits), then ~n/2, 16 passes (20 from 50,000 bits);
* sub-block reuse: every parity Alice disclosed (top-level and inside binary searches) and every
  parity inferred from it (sibling = parent xor left child) stays "known"; when Bob flips a
  bit, every known block containing it toggles, and the highest known odd block on that path
  starts a new search, which descends through known children for free;
* parity savings: the parity of the whole frame is disclosed once; in later passes the parity
  of the last top-level block follows from it and is not sent;
* late passes (ours): what passes 0 and 1 leave are mostly pairs of errors sharing a pass-0 and
  a pass-1 block. A late pass searches one odd half at a time, and once late passes run,
  searches of earlier (smaller-block) passes go first, one at a time below 50,000 bits (all
  together above: fewer round trips, the same f). After each flip of x, the bits
  c of x's smallest known pass-0 block whose known blocks in every started pass are all odd
  (exactly x's partner if x and c were the only errors there; usually one bit) are asked
  singly, as pass-0 leaves: a hit ends every search that the flip started, typically for 1-2
  bits instead of a second half-frame bisection (~13) or a pass-0 block search (~6).
  Measured at 1e4 bits: f 1.077 -> 1.066 (1 %), 1.071 -> 1.065 (2 %), 1.067 -> 1.055 (3 %).

Interactivity. Alice's bits never change, so all top-level parities of all passes go in one
message up front (standard Cascade discloses them anyway). Bob then runs every pending search in
lockstep: one round trip carries one bisection question of *every* active search in every pass
and every frame. By default each pass is its own stage (measured: the lowest f); passes from
``CascadeConfig.concurrent_from`` on (block size ~n/2, where few errors are left) can instead
start together, for fewer round trips at a higher f. A search whose block became
even because another search flipped a bit in it is dropped (its question is still counted).
In the late passes searches wait for one another (see above): a few more round trips.

In one process (:func:`reconcile_local`, benchmarks) Bob's rounds and Alice's answers alternate
inside one compiled loop; the arrays exchanged are those the session sends.

Leakage. Bob learns a parity only from Alice's messages: ``leaked_bits`` counts exactly the
parity bits Alice sent (both ends count them independently). Efficiency f = leaked / (n h(Q)).

Both ends derive the same public permutations from a public seed (keyed invertible mixes of
[0, 2^k) with SplitMix64 keys, see :func:`_pass_keys`), computed on the fly: no permutation
tables. A late pass (two blocks of width/2) sends bit b to the half given by bit p of one 64-bit
hash of b, so one sweep yields the top parities of all late passes at once and a flip updates
them with one xor. Each end keeps, per pass, its bits bit-packed in pass order (n/8 bytes, built by one
cache-resident scatter) so block parities are word xors; Bob also keeps the xor of every
4096-bit chunk, so a flip costs O(1) per pass and a parity at most 64 chunk xors. Packed copies
are lazy: top-level parities are streamed from positions, Alice packs a pass (beyond the first
two) on its first question and Bob when the pass starts with an odd block (or a flip makes one
odd); Bob sets a pass's top blocks when it starts, from his bits then, so a flip only touches
started passes. Most frames never search in late passes, which then cost one streamed parity.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, NamedTuple

import numba as nb
import numpy as np
from numpy.typing import NDArray

from qdnet.security.entropy import binary_entropy

Bits = NDArray[np.uint8]

# node states in Bob's tree of block parities (0 = unknown, so the tree is allocated by np.zeros
# and pages of sparse passes are never touched); EVEN/ODD: Alice's xor Bob's parity is 0/1
UNKNOWN = np.int8(0)
PENDING = np.int8(1)
EVEN = np.int8(2)
ODD = np.int8(3)

MAX_PASSES = 64
"""Late pass p takes bit p of the 64-bit hash."""


@dataclass(frozen=True)
class CascadeConfig:
    """Cascade parameters (both ends must use the same ones; Alice sends them in HELLO).

    Defaults were chosen by measurement (benchmarks/postprocessing.py, 300 frames of 1e4 bits,
    30 of 1e5, 3 of 1e6 per QBER): 16 passes (20 from 50,000 bits) run one after the other
    (``concurrent_from`` >= passes), k1 = 2^ceil(log2(0.5/Q)) (k1 Q in [0.5, 1)) and k2 = 4 k1
    below 50,000 bits, 8 k1 above: small first blocks cost few bisection bits and fewer round
    trips, the large second block catches the pairs. The partner-probe and search-order fields
    only change which questions Bob asks (Alice answers any valid question).
    """

    passes: int = 16
    """Passes below ``large_frame_bits`` (``large_frame_passes`` from there on)."""
    concurrent_from: int = MAX_PASSES
    """Passes with index >= this start together in one stage (fewer round trips, higher f)."""
    first_block_factor: float = 0.5
    """k1 = 2^ceil(log2(first_block_factor / Q))."""
    second_block_multiplier: int = 0
    """k2 = multiplier * k1; 0 picks 4 below ``large_frame_bits`` and 8 from there on."""
    min_qber: float = 1e-3
    large_frame_bits: int = 50_000
    tail_depth: int = 1
    """In the tail (few active searches) ask 2^depth - 1 parities per search per round."""
    tail_divisor: int = 2000
    tail_min: int = 4
    """The tail: at most max(tail_min, n / tail_divisor) active searches."""
    partner_probe: int = 3
    """Once the late passes run, after a flip of bit x ask the single bits (pass-0 leaves) that
    could be x's partner, if there are at most this many (see :func:`_partner_probes`);
    0: off."""
    probe_any: bool = True
    """Probe after every such flip (False: only after flips found by a late pass's search)."""
    defer_late: bool = True
    """A late pass searches one odd half at a time: the flip that cascades from the first
    usually fixes the other."""
    priority: int = -1
    """Which searches wait (ask nothing) while a search in an earlier pass is alive: 0 none,
    1 those of late passes, 2 all, 3 all once the late passes run, 4 as 3 and then one search
    asks at a time; -1 (default): 4 below ``large_frame_bits``, 3 from there on. Waiting costs
    round trips; it saves the bits of searches that a flip found by the smaller block would have
    ended (measured, 10 frames of 1e6 bits in lockstep: 4 gives the same f as 3 but 87 instead
    of 71 round trips per 1e6 bits at 3 %; at 1e4 it is what brings f below 1.07 at 1-2 %)."""
    large_frame_passes: int = 20
    """Passes from ``large_frame_bits`` on. Each extra late pass costs one disclosed parity (there
    < 1e-4 of n h(Q)) and halves the chance that a residual error pattern stays even in every
    block (measured at 1e5 bits and 8 %: 3 frame errors in 25 000 with 16 passes, 0 in 20 000
    with 20)."""

    def passes_for(self, n: int) -> int:
        """The number of passes for an n-bit frame."""
        return (
            self.passes if n < self.large_frame_bits else max(self.passes, self.large_frame_passes)
        )

    def priority_for(self, n: int) -> int:
        """The search-order rule (``priority``) for an n-bit frame."""
        if self.priority >= 0:
            return self.priority
        return 4 if n < self.large_frame_bits else 3

    def block_exponents(self, n: int, qber: float) -> tuple[int, ...]:
        """log2 of the block size of each pass for an n-bit frame and estimated QBER."""
        q = max(qber, self.min_qber)
        top = max(1, math.ceil(math.log2(max(n, 2))) - 1)
        d1 = min(top, max(1, math.ceil(math.log2(self.first_block_factor / q))))
        mult = self.second_block_multiplier or (4 if n < self.large_frame_bits else 8)
        d2 = min(top, d1 + max(0, round(math.log2(mult))))
        passes = self.passes_for(n)
        return tuple([d1, d2][:passes] + [top] * max(0, passes - 2))

    def geometry(self, n: int, qber: float) -> Geometry:
        """Block exponents, pass-order width and block counts of an n-bit frame."""
        if n > 1 << 31:
            raise ValueError("Cascade frames are limited to 2^31 bits")
        if self.passes_for(n) > MAX_PASSES:
            raise ValueError(f"at most {MAX_PASSES} passes (one hash bit per late pass)")
        return _geometry(n, self.block_exponents(n, qber))


EAGER_PASSES = 2
"""Passes whose packed copies are built up front (almost every frame searches in them); later
passes are packed only if they get a search (Bob) or a question (Alice)."""

SPREAD_FROM = 2
"""Passes from this index on ("late" passes, two blocks of width/2) scatter the n bits over all
``width`` positions, so that both halves hold ~n/2 bits and an undetected error pair is split
with probability ~1/2 per pass; earlier passes put their padding at the end. A late pass sends
bit b to the half given by bit p of one 64-bit hash of b (see :func:`_late_mask`), so one sweep
gives the top parities of every late pass and a flip updates them all with one xor."""


@dataclass(frozen=True)
class Geometry:
    """Pass layout shared by both ends (a function of n, the QBER estimate and the config)."""

    depths: tuple[int, ...]
    width: int
    extents: tuple[int, ...]
    blocks: tuple[int, ...]


@lru_cache(maxsize=256)
def _geometry(n: int, depths: tuple[int, ...]) -> Geometry:
    """The layout of an n-bit frame with these block exponents (frames of a block share it)."""
    top = max(1, math.ceil(math.log2(max(n, 2))) - 1)
    if any(d != top for d in depths[SPREAD_FROM:]):
        raise ValueError("late passes must have two blocks (block size width/2)")
    width = 1 << (top + 1)
    extents = tuple(n if p < SPREAD_FROM else width for p in range(len(depths)))
    blocks = tuple(-(-e // (1 << d)) for e, d in zip(extents, depths, strict=True))
    return Geometry(depths, width, extents, blocks)


class AliceArrays(NamedTuple):
    """Alice's per-frame arrays that answering reads (one argument for the compiled kernels)."""

    bits: Bits
    keys: NDArray[np.uint64]
    geo: NDArray[np.int64]
    packed: NDArray[np.bool_]
    words: NDArray[np.uint64]
    prefix: NDArray[np.uint64]


class BobArrays(NamedTuple):
    """Bob's per-frame arrays that a round reads and updates (one argument for the kernels)."""

    stage_lo: NDArray[np.int64]
    stage_hi: NDArray[np.int64]
    bits: Bits
    words: NDArray[np.uint64]
    chunks: NDArray[np.uint64]
    keys: NDArray[np.uint64]
    geo: NDArray[np.int64]
    depths: NDArray[np.int64]
    counts: NDArray[np.int64]
    bases: NDArray[np.int64]
    off: NDArray[np.int64]
    known: NDArray[np.int8]
    alice: Bits
    started: NDArray[np.bool_]
    packed: NDArray[np.bool_]
    xs: NDArray[np.uint32]
    sp: NDArray[np.int64]
    sl: NDArray[np.int64]
    si: NDArray[np.int64]
    alive: NDArray[np.bool_]
    qp: NDArray[np.int64]
    ql: NDArray[np.int64]
    qi: NDArray[np.int64]
    extents: NDArray[np.int64]
    late: NDArray[np.uint64]
    qk: NDArray[np.int8]
    opts: NDArray[np.int64]


# ---------------------------------------------------------------------------------------------
# permutations (computed on the fly: no tables)


@nb.njit(cache=True, inline="always")
def _splitmix(state: np.uint64) -> tuple[np.uint64, np.uint64]:  # pragma: no cover - compiled
    state += np.uint64(0x9E3779B97F4A7C15)
    z = state
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return state, z ^ (z >> np.uint64(31))


@nb.njit(cache=True)
def _pass_keys(
    seed: np.uint64, n: int, passes: int, width: int, spread_from: int
) -> tuple[NDArray[np.uint64], NDArray[np.int64]]:  # pragma: no cover - compiled
    """Per pass p: keys[p] = (3 odd multipliers, 3 addends, 3 inverse multipliers mod 2^64) and
    geo[p] = (k, span, late): a keyed bijection of [0, 2^k), restricted to [0, span) by cycle
    walking (span = n for passes that keep the padding at the end, 2^k = width for the others).
    A late pass (late = 1) is the bijection (hi, lo) -> (hi xor bit p of H(lo), mix(lo)) of
    [0, 2^k), with hi the top bit and mix the keyed bijection of [0, 2^(k-1)); keys[0, 0] keys H.
    """
    keys = np.zeros((passes, 9), dtype=np.uint64)
    geo = np.zeros((passes, 3), dtype=np.int64)
    state, keys[0, 0] = _splitmix(seed)  # pass 0 is the identity: its slot keys the late hash
    for p in range(passes):
        span = n if p < spread_from else width
        k = 1
        while (1 << k) < span:
            k += 1
        geo[p, 0] = k
        geo[p, 1] = span
        geo[p, 2] = 1 if p >= spread_from and span == 1 << k else 0  # width: a power of 2
        if p == 0:
            continue
        for j in range(6):
            state, z = _splitmix(state)
            if j % 2 == 0:
                keys[p, j // 2] = z | np.uint64(1)
            else:
                keys[p, 3 + j // 2] = z
        for r in range(3):
            m = keys[p, r]
            inv = m
            for _ in range(6):  # Newton: inv <- inv (2 - m inv) doubles the correct bits
                inv = inv * (np.uint64(2) - m * inv)
            keys[p, 6 + r] = inv
    return keys, geo


@nb.njit(cache=True, inline="always")
def _fwd(x: np.uint64, k: int, keys: NDArray[np.uint64]) -> np.uint64:  # pragma: no cover
    """Three rounds of xorshift (shift >= k/2, so it is an involution), odd multiply and add,
    all mod 2^k (Steele et al., OOPSLA 2014 style keyed mixing)."""
    mask = (np.uint64(1) << np.uint64(k)) - np.uint64(1)
    s = np.uint64(max(1, (k + 1) // 2))
    for r in range(3):
        x = (x ^ (x >> s)) & mask
        x = (x * keys[r]) & mask
        x = (x + keys[3 + r]) & mask
    return x


@nb.njit(cache=True, inline="always")
def _inv(x: np.uint64, k: int, keys: NDArray[np.uint64]) -> np.uint64:  # pragma: no cover
    mask = (np.uint64(1) << np.uint64(k)) - np.uint64(1)
    s = np.uint64(max(1, (k + 1) // 2))
    for r in range(2, -1, -1):
        x = (x - keys[3 + r]) & mask
        x = (x * keys[6 + r]) & mask
        x = (x ^ (x >> s)) & mask
    return x


@nb.njit(cache=True, inline="always")
def _late_hash(lo: np.uint64, key: np.uint64) -> np.uint64:  # pragma: no cover - compiled
    """64 pseudo-random bits of lo: the SplitMix64 finalizer (Steele, Lea, Flood, OOPSLA 2014)
    of lo xor a per-frame key; bit p is lo's half in late pass p (before the top bit of b)."""
    z = (lo ^ key) * np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@nb.njit(cache=True, inline="always")
def _late_mask(b: int, k: int, key: np.uint64) -> np.uint64:  # pragma: no cover - compiled
    """Bit p set iff bit b lies in the second half of late pass p (width 2^k)."""
    half = np.uint64(k - 1)
    h = _late_hash(np.uint64(b) & ((np.uint64(1) << half) - np.uint64(1)), key)
    return h ^ (np.uint64(0) - (np.uint64(b) >> half))


@nb.njit(cache=True)
def _late_halves(bits: Bits, k: int, key: np.uint64) -> np.uint64:  # pragma: no cover - compiled
    """Bit p: parity of the second half of late pass p, for every late pass in one sweep."""
    acc = np.uint64(0)
    for b in range(bits.shape[0] - 1):  # the last entry is the padding bit
        acc ^= _late_mask(b, k, key) & (np.uint64(0) - np.uint64(bits[b]))
    return acc


@nb.njit(cache=True, inline="always")
def _position(p: int, b: int, keys: NDArray[np.uint64], geo: NDArray[np.int64]) -> int:
    # pragma: no cover - compiled
    """Pass-order position of bit b in pass p."""
    if p == 0:
        return b
    k = geo[p, 0]
    if geo[p, 2]:
        half = k - 1
        lo = np.uint64(b) & ((np.uint64(1) << np.uint64(half)) - np.uint64(1))
        top = (np.uint64(b) >> np.uint64(half)) ^ (
            (_late_hash(lo, keys[0, 0]) >> np.uint64(p)) & np.uint64(1)
        )
        return int(np.int64((top << np.uint64(half)) | _fwd(lo, half, keys[p])))
    span = np.uint64(geo[p, 1])
    x = _fwd(np.uint64(b), k, keys[p])
    while x >= span:
        x = _fwd(x, k, keys[p])
    return int(np.int64(x))


@nb.njit(cache=True, inline="always")
def _bit_at(p: int, q: int, keys: NDArray[np.uint64], geo: NDArray[np.int64], n: int) -> int:
    # pragma: no cover - compiled
    """The bit at pass-order position q of pass p, or n for padding."""
    span = geo[p, 1]
    if q >= span:
        return n
    if p == 0:
        return q
    k = geo[p, 0]
    if geo[p, 2]:
        half = k - 1
        lo = _inv(np.uint64(q) & ((np.uint64(1) << np.uint64(half)) - np.uint64(1)), half, keys[p])
        top = (np.uint64(q) >> np.uint64(half)) ^ (
            (_late_hash(lo, keys[0, 0]) >> np.uint64(p)) & np.uint64(1)
        )
        b = int(np.int64((top << np.uint64(half)) | lo))
        return b if b < n else n
    x = _inv(np.uint64(q), k, keys[p])
    while x >= np.uint64(span):
        x = _inv(x, k, keys[p])
    r = int(np.int64(x))
    return r if r < n else n


@nb.njit(cache=True)
def _tables(
    keys: NDArray[np.uint64], geo: NDArray[np.int64], n: int, width: int
) -> tuple[NDArray[np.int32], NDArray[np.int32]]:  # pragma: no cover - compiled
    passes = keys.shape[0]
    perm = np.empty((passes, width), dtype=np.int32)
    pos = np.empty((passes, n), dtype=np.int32)
    for p in range(passes):
        for q in range(width):
            perm[p, q] = _bit_at(p, q, keys, geo, n)
        for b in range(n):
            pos[p, b] = _position(p, b, keys, geo)
    return perm, pos


def permutations(
    seed: int, n: int, passes: int, width: int | None = None
) -> tuple[NDArray[np.int32], NDArray[np.int32]]:
    """(perm, pos) as tables (tests, inspection; the protocol computes them on the fly):
    perm[p, q] is the bit at position q of pass p (n: padding); pos[p, b] is the position of
    bit b. ``width`` (>= n) is the pass-order length."""
    w = n if width is None else width
    keys, geo = _pass_keys(np.uint64(seed & 0xFFFFFFFFFFFFFFFF), n, passes, w, SPREAD_FROM)
    return _tables(keys, geo, n, w)


@nb.njit(cache=True, inline="always")
def _parity64(x: np.uint64) -> int:  # pragma: no cover - compiled
    x ^= x >> np.uint64(32)
    x ^= x >> np.uint64(16)
    x ^= x >> np.uint64(8)
    x ^= x >> np.uint64(4)
    x ^= x >> np.uint64(2)
    x ^= x >> np.uint64(1)
    return int(np.int64(x & np.uint64(1)))


@nb.njit(cache=True)
def _fwd32(xs: NDArray[np.uint32], k: int, kp: NDArray[np.uint64]) -> None:
    # pragma: no cover - compiled
    """xs[b] = _fwd(b) for all b, in 32-bit lanes (k <= 32: the same values, vectorised)."""
    lo = np.uint64(0xFFFFFFFF)
    mask = np.uint32((1 << k) - 1)
    s = np.uint32(max(1, (k + 1) // 2))
    m0, m1, m2 = np.uint32(kp[0] & lo), np.uint32(kp[1] & lo), np.uint32(kp[2] & lo)
    a0, a1, a2 = np.uint32(kp[3] & lo), np.uint32(kp[4] & lo), np.uint32(kp[5] & lo)
    for b in range(xs.shape[0]):
        x = np.uint32(b)
        x = np.uint32((x ^ (x >> s)) * m0 + a0) & mask
        x = np.uint32((x ^ (x >> s)) * m1 + a1) & mask
        x = np.uint32((x ^ (x >> s)) * m2 + a2) & mask
        xs[b] = x


@nb.njit(cache=True)
def _walk32(xs: NDArray[np.uint32], k: int, kp: NDArray[np.uint64], span: np.uint32) -> None:
    # pragma: no cover - compiled
    """One cycle-walking step for every xs[b] >= span, branch-free in 32-bit lanes (the same
    values as _fwd)."""
    lo = np.uint64(0xFFFFFFFF)
    mask = np.uint32((1 << k) - 1)
    s = np.uint32(max(1, (k + 1) // 2))
    m0, m1, m2 = np.uint32(kp[0] & lo), np.uint32(kp[1] & lo), np.uint32(kp[2] & lo)
    a0, a1, a2 = np.uint32(kp[3] & lo), np.uint32(kp[4] & lo), np.uint32(kp[5] & lo)
    for b in range(xs.shape[0]):
        x0 = xs[b]
        x = np.uint32((x0 ^ (x0 >> s)) * m0 + a0) & mask
        x = np.uint32((x ^ (x >> s)) * m1 + a1) & mask
        x = np.uint32((x ^ (x >> s)) * m2 + a2) & mask
        xs[b] = x if x0 >= span else x0


@nb.njit(cache=True)
def _late_positions(
    p: int, k: int, kp: NDArray[np.uint64], key: np.uint64, xs: NDArray[np.uint32]
) -> None:  # pragma: no cover - compiled
    """xs[b] = position of bit b in late pass p (see :func:`_pass_keys`), in 32-bit lanes."""
    half = k - 1
    _fwd32(xs, half, kp)  # mix(b) for b < 2^(k-1); entries beyond repeat mix(b - 2^(k-1))
    n = xs.shape[0]
    size = 1 << half
    for b in range(size, n):
        xs[b] = xs[b - size]
    sp = np.uint64(p)
    for b in range(n):
        hi = np.uint64(b >> half) ^ (
            (_late_hash(np.uint64(b & (size - 1)), key) >> sp) & np.uint64(1)
        )
        xs[b] |= np.uint32(hi) << np.uint32(half)


@nb.njit(cache=True)
def _positions_of(
    p: int, keys: NDArray[np.uint64], geo: NDArray[np.int64], xs: NDArray[np.uint32]
) -> None:  # pragma: no cover - compiled
    """xs[b] = pass-order position of bit b in pass p, for all n bits (mix in 32-bit lanes,
    then cycle walking for the few that land outside the span; k <= 32, see geometry)."""
    n = xs.shape[0]
    if p == 0:
        for b in range(n):
            xs[b] = b
        return
    k = geo[p, 0]
    kp = keys[p]
    if geo[p, 2]:
        _late_positions(p, k, kp, keys[0, 0], xs)
        return
    _fwd32(xs, k, kp)
    span = np.uint32(geo[p, 1])
    if geo[p, 1] >= (1 << k):
        return
    if 8 * geo[p, 1] < 7 << k:  # many outside: two vectorised steps leave (1 - span/2^k)^3
        _walk32(xs, k, kp, span)
        _walk32(xs, k, kp, span)
    for b in range(n):
        if xs[b] >= span:
            x = np.uint64(xs[b])
            while x >= span:
                x = _fwd(x, k, kp)
            xs[b] = x


@nb.njit(cache=True)
def _pack_row(bits: Bits, xs: NDArray[np.uint32], row: NDArray[np.uint64]) -> None:
    # pragma: no cover - compiled
    """Bit-packed pass-ordered copy of ``bits`` (positions xs): a scatter into width/8 bytes."""
    row[:] = 0
    for b in range(xs.shape[0]):
        x = np.uint64(xs[b])
        row[x >> np.uint64(6)] |= np.uint64(bits[b]) << (x & np.uint64(63))


@nb.njit(cache=True)
def _stream_tops(bits: Bits, xs: NDArray[np.uint32], d: int, tops: Bits) -> None:
    # pragma: no cover - compiled
    """Top-level block parities (blocks of 2^d positions) without a packed copy."""
    sd = np.uint32(d)
    if tops.shape[0] <= 64:  # one register: no store-to-load chains on a few bytes
        acc = np.uint64(0)
        for b in range(xs.shape[0]):
            acc ^= np.uint64(bits[b]) << np.uint64(xs[b] >> sd)
        for j in range(tops.shape[0]):
            tops[j] = (acc >> np.uint64(j)) & np.uint64(1)
        return
    tops[:] = 0
    for b in range(xs.shape[0]):
        tops[xs[b] >> sd] ^= bits[b]


@nb.njit(cache=True)
def _prefix_row(row: NDArray[np.uint64], pre: NDArray[np.uint64]) -> None:
    # pragma: no cover - compiled
    acc = np.uint64(0)
    pre[0] = acc
    for j in range(row.shape[0]):
        acc ^= row[j]
        pre[j + 1] = acc


@nb.njit(cache=True)
def _alice_tops(
    bits: Bits,
    keys: NDArray[np.uint64],
    geo: NDArray[np.int64],
    depths: NDArray[np.int64],
    counts: NDArray[np.int64],
    words: NDArray[np.uint64],
    pre: NDArray[np.uint64],
    packed: NDArray[np.bool_],
    eager: int,
) -> NDArray[np.uint8]:  # pragma: no cover - compiled
    """Top-level parities of every pass, concatenated; passes < eager are also packed (the
    others are packed on their first question, which most frames never ask)."""
    xs = np.empty(bits.shape[0] - 1, dtype=np.uint32)
    out = np.zeros(counts.sum(), dtype=np.uint8)
    base = 0
    halves = np.uint64(0)
    total = np.uint8(0)
    for p in range(depths.shape[0]):
        if geo[p, 2]:  # late pass: both halves from one sweep shared by all late passes
            if not total & 2:
                halves = _late_halves(bits, geo[p, 0], keys[0, 0])
                total = np.uint8(2 | (np.sum(bits) & 1))
            second = np.uint8((halves >> np.uint64(p)) & np.uint64(1))
            out[base] = (total & 1) ^ second
            out[base + 1] = second
            base += counts[p]
            continue
        _positions_of(p, keys, geo, xs)
        _stream_tops(bits, xs, depths[p], out[base : base + counts[p]])
        if p < eager:
            _pack_row(bits, xs, words[p])
            _prefix_row(words[p], pre[p])
            packed[p] = True
        base += counts[p]
    return out


@nb.njit(cache=True, inline="always")
def _static_prefix_parity(words: NDArray[np.uint64], pre: NDArray[np.uint64], i: int) -> int:
    # pragma: no cover - compiled
    """Parity of positions [0, i) of one pass from its words and word prefix."""
    w = i >> 6
    r = i & 63
    acc = pre[w]
    if r:
        acc ^= words[w] & ((np.uint64(1) << np.uint64(r)) - np.uint64(1))
    return _parity64(acc)


@lru_cache(maxsize=256)
def _layout(geo: Geometry) -> tuple[NDArray[np.int64], int]:
    """Offsets off[p, l] of level l of pass p in the flat node array, and its total size
    (cached per geometry and shared by the frames: read only)."""
    dmax = max(geo.depths)
    off = np.zeros((len(geo.depths), dmax + 2), dtype=np.int64)
    total = 0
    for p, d in enumerate(geo.depths):
        padded = geo.blocks[p] << d
        for level in range(d + 1):
            off[p, level] = total
            total += padded >> level
    return off, total


# ---------------------------------------------------------------------------------------------
# Alice


class CascadeAlice:
    """Alice's side: answers parity questions about her (fixed) bits; counts what she discloses."""

    def __init__(self, bits: Bits, qber: float, seed: int, config: CascadeConfig) -> None:
        self.n = len(bits)
        self.geo = config.geometry(self.n, qber)
        self.depths = self.geo.depths
        padded = np.zeros(self.n + 1, dtype=np.uint8)  # index n: padding, always 0
        padded[: self.n] = bits
        keys, geo = _pass_keys(
            np.uint64(seed & 0xFFFFFFFFFFFFFFFF),
            self.n,
            len(self.depths),
            self.geo.width,
            SPREAD_FROM,
        )
        nw = _nwords(self.geo.width)
        passes = len(self.depths)
        self.bits_padded = padded
        self.keys, self.pass_geometry = keys, geo
        self.words = np.zeros((passes, nw), dtype=np.uint64)  # rows packed on demand
        self.prefix = np.zeros((passes, nw + 1), dtype=np.uint64)
        self.packed = np.zeros(passes, dtype=np.bool_)
        self._tops = _alice_tops(
            padded,
            keys,
            geo,
            np.asarray(self.depths, dtype=np.int64),
            np.asarray(self.geo.blocks, dtype=np.int64),
            self.words,
            self.prefix,
            self.packed,
            EAGER_PASSES,
        )
        self.arrays = AliceArrays(
            self.bits_padded, self.keys, self.pass_geometry, self.packed, self.words, self.prefix
        )
        self.leaked_bits = 0

    def top_parities(self) -> Bits:
        """All passes' top-level parities, minus the last block of passes >= 1 (inferable)."""
        parts = []
        base = 0
        for p, count in enumerate(self.geo.blocks):
            tops = self._tops[base : base + count]
            base += count
            parts.append(tops if p == 0 else tops[:-1])
        out = np.concatenate(parts)
        self.leaked_bits += len(out)
        return out

    def answer(
        self, passes: NDArray[np.uint8], levels: NDArray[np.uint8], index: NDArray[np.int64]
    ) -> Bits:
        """Parities of the asked blocks (pass, level, index) in pass order."""
        out = np.empty(len(passes), dtype=np.uint8)
        ok = _answer(self.arrays, self.geo.width, passes, levels, index, out)
        if not ok:
            raise ValueError("parity question out of range")
        self.leaked_bits += len(out)
        return out


def _nwords(width: int) -> int:
    return max(1, (width + 63) >> 6)


@nb.njit(cache=True, inline="always")
def _answer(
    a: AliceArrays,
    width: int,
    passes: NDArray[np.uint8] | NDArray[np.int64],
    levels: NDArray[np.uint8] | NDArray[np.int64],
    index: NDArray[np.int64],
    out: Bits,
) -> bool:  # pragma: no cover - compiled
    """Parities of the asked blocks of one frame; False if a question is out of range."""
    bits, keys, geo, packed, words, pre = a
    rows = words.shape[0]
    for j in range(passes.shape[0]):
        p = np.int64(passes[j])
        level = np.int64(levels[j])
        if p >= rows or level > 40 or index[j] < 0 or index[j] > (width >> level):
            return False  # (the last test keeps index << level from overflowing to < 0)
        start = index[j] << level
        if start >= width:
            return False
        if not packed[p]:
            xs = np.empty(bits.shape[0] - 1, dtype=np.uint32)
            _positions_of(int(p), keys, geo, xs)
            _pack_row(bits, xs, words[p])
            _prefix_row(words[p], pre[p])
            packed[p] = True
        stop = min(start + (np.int64(1) << level), width)
        out[j] = _static_prefix_parity(words[p], pre[p], stop) ^ _static_prefix_parity(
            words[p], pre[p], start
        )
    return True


# ---------------------------------------------------------------------------------------------
# Bob: numba kernels

_EMPTY8 = np.zeros(0, dtype=np.uint8)


@nb.njit(cache=True, inline="always")
def _node_parity(
    words_p: NDArray[np.uint64], chunks_p: NDArray[np.uint64], width: int, level: int, index: int
) -> int:  # pragma: no cover - compiled
    """Parity of an aligned block: inside one word (level < 6), xor of its words (level < 12)
    or of its 4096-bit chunks (each chunk keeps the xor of its 64 words)."""
    start = index << level
    stop = min(start + (1 << level), width)
    acc = np.uint64(0)
    if level >= 12:
        for c in range(start >> 12, (stop + 4095) >> 12):
            acc ^= chunks_p[c]
    elif level >= 6:
        for w in range(start >> 6, (stop + 63) >> 6):
            acc ^= words_p[w]
    else:
        span = stop - start
        m = (np.uint64(1) << np.uint64(span)) - np.uint64(1)
        acc = (words_p[start >> 6] >> np.uint64(start & 63)) & m
    return _parity64(acc)


@nb.njit(cache=True)
def _pack_bob(
    bits: Bits,
    xs: NDArray[np.uint32],
    words_p: NDArray[np.uint64],
    chunks_p: NDArray[np.uint64],
) -> None:  # pragma: no cover - compiled
    """Bob's packed copy of one pass (positions xs) and the xor of each 64-word chunk."""
    _pack_row(bits, xs, words_p)
    chunks_p[:] = 0
    for w in range(words_p.shape[0]):
        chunks_p[w >> 6] ^= words_p[w]


@nb.njit(cache=True, inline="always")
def _flip(bit: int, b: BobArrays, ns: int) -> int:  # pragma: no cover - compiled
    """Flip one bit, toggle every known block containing it, queue new searches; returns ns.

    Only started passes hold known blocks (a pass's top parities are set when it starts); a
    started pass whose blocks were all even is packed when a flip first makes one odd. Once
    the late passes' halves are tracked (``late``), the flip toggles them too."""
    bits, words, chunks, keys, geo, depths = b.bits, b.words, b.chunks, b.keys, b.geo, b.depths
    off, known, started, packed, xs, sp = b.off, b.known, b.started, b.packed, b.xs, b.sp
    sl, si, late = b.sl, b.si, b.late
    bits[bit] ^= 1
    if late[0]:
        late[1] ^= _late_mask(bit, geo[depths.shape[0] - 1, 0], keys[0, 0])
        late[2] ^= np.uint64(1)
    for p in range(depths.shape[0]):
        if not started[p]:
            continue
        q = _position(p, bit, keys, geo)
        if packed[p]:
            v = np.uint64(1) << np.uint64(q & 63)
            words[p, q >> 6] ^= v
            chunks[p, q >> 12] ^= v
        found = False
        for level in range(depths[p], -1, -1):
            idx = off[p, level] + (q >> level)
            k = known[idx]
            if k < EVEN:
                break  # known blocks form subtrees under the known top level
            if k >= EVEN:
                known[idx] = k ^ 1
                if not found and k == EVEN and started[p]:
                    found = True
                    if ns < sp.shape[0]:
                        sp[ns] = p
                        sl[ns] = level
                        si[ns] = q >> level
                        ns += 1
        if found and not packed[p]:
            _positions_of(p, keys, geo, xs)
            _pack_bob(bits, xs, words[p], chunks[p])
            packed[p] = True
    return ns


@nb.njit(cache=True, inline="always")
def _partner_probes(x: int, b: BobArrays, nq: int) -> int:  # pragma: no cover - compiled
    """After Bob flipped bit x: ask the pass-0 leaves (single bits) that could be its partner.

    A pair of errors that no earlier block separated leaves, once x is fixed, exactly the known
    blocks containing its partner odd. The candidates are the bits c of x's smallest known
    pass-0 block (odd) whose known blocks in every started pass are all odd; if there are 1 to
    ``opts[0]`` of them, each is asked (pass 0, level 0, index c) and returns nq with the
    questions added (flagged in qk), else nq unchanged."""
    keys, geo, depths, off, known, started = b.keys, b.geo, b.depths, b.off, b.known, b.started
    qp, ql, qi, qk = b.qp, b.ql, b.qi, b.qk
    limit = b.opts[0]
    n_real = b.bits.shape[0] - 1
    passes = depths.shape[0]
    low = -1
    state = UNKNOWN
    for level in range(depths[0], -1, -1):
        s = known[off[0, level] + (x >> level)]
        if s < EVEN:
            break
        low = level
        state = s
    if low < 1 or state != ODD:
        return nq
    start = (x >> low) << low
    stop = min(start + (1 << low), n_real)
    first = nq
    for c in range(start, stop):
        if c == x or known[off[0, 0] + c] != UNKNOWN:
            continue
        ok = True
        for t in range(passes):
            p = t + 1 if t + 1 < passes else 0  # pass 1 first: the most selective
            if not started[p]:
                continue
            q = _position(p, c, keys, geo)
            for level in range(depths[p], -1, -1):
                s = known[off[p, level] + (q >> level)]
                if s < EVEN:
                    break
                if s == EVEN:
                    ok = False
                    break
            if not ok:
                break
        if not ok:
            continue
        if nq - first >= limit or nq >= qp.shape[0]:
            for j in range(first, nq):
                known[off[0, 0] + qi[j]] = UNKNOWN
            return first
        known[off[0, 0] + c] = PENDING
        qp[nq] = 0
        ql[nq] = 0
        qi[nq] = c
        qk[nq] = 1
        nq += 1
    return nq


@nb.njit(cache=True, inline="always")
def _descend(
    b: BobArrays, ns: int, depth: int, max_flips: int
) -> tuple[int, int, int]:  # pragma: no cover - compiled
    """Advance every search until it needs questions, flips a bit or dies; stops as soon as
    more than ``max_flips`` bits were flipped (forged parities can make the flips spawn searches
    that flip bits back for ever; the caller then ends the round).

    A search that needs information asks for the left children of every node of its subtree
    down to ``depth`` levels (2^depth - 1 parities; depth 1 is plain bisection), top-down, into
    (qp, ql, qi); asked nodes are marked PENDING. Returns (live searches, now at the front of
    sp/sl/si, bits flipped, questions).
    """
    bits, keys, geo, off, known, extents = b.bits, b.keys, b.geo, b.off, b.known, b.extents
    sp, sl, si, alive, qp, ql, qi = b.sp, b.sl, b.si, b.alive, b.qp, b.ql, b.qi
    n_real = bits.shape[0] - 1
    qk, probe = b.qk, b.opts[0] > 0
    flips = 0
    nq = 0
    j = 0
    w = 0  # searches that asked questions are compacted to the front
    hold = sp.shape[0]  # searches from here on wait for partner probes
    prio = b.opts[2]
    single = prio == 4 and b.late[0]  # once the late passes run: one search asks at a time
    minc = SPREAD_FROM
    if prio == 1 or prio == 2 or (prio >= 3 and b.late[0]):
        for t in range(ns):
            minc = min(minc, sp[t])
    while j < ns:
        alive[j] = False
        p = sp[j]
        level = sl[j]
        i = si[j]
        cls = min(p, SPREAD_FROM)
        held = j >= hold or (prio == 1 and cls == SPREAD_FROM and minc < SPREAD_FROM)
        held = held or ((prio == 2 or (prio >= 3 and b.late[0])) and cls > minc)
        held = held or (single and nq > 0)
        if held:
            alive[j] = known[off[p, level] + i] == ODD
        while not held:
            if known[off[p, level] + i] != ODD:
                break  # block became even (or duplicate): drop
            if level == 0:
                x = _bit_at(p, i, keys, geo, n_real)
                before = ns
                ns = _flip(x, b, ns)
                flips += 1
                if flips > max_flips:
                    return ns, flips, nq
                if probe and p > 0 and (geo[p, 2] or (b.opts[3] and b.late[0])):
                    asked = _partner_probes(x, b, nq)
                    if asked > nq:
                        nq = asked
                        hold = min(hold, before)
                break
            left = off[p, level - 1] + 2 * i
            k = known[left]
            if k == UNKNOWN and level <= 5 and geo[p, 2]:
                # a small left child made only of padding has parity 0 on both sides: free
                # (late passes scatter their padding; earlier ones keep it at the end)
                start = (2 * i) << (level - 1)
                real = False
                for q in range(start, min(start + (1 << (level - 1)), extents[p])):
                    if _bit_at(p, q, keys, geo, n_real) < n_real:
                        real = True
                        break
                if not real:
                    known[left] = EVEN
                    known[left + 1] = ODD
                    k = EVEN
            if k == UNKNOWN and (2 * i + 1) << (level - 1) >= extents[p]:
                # passes 0 and 1 keep their padding at the end: a right child made only of
                # padding leaves the (odd) left child odd, for free
                known[left] = ODD
                known[left + 1] = EVEN
                k = ODD
            if k == PENDING:
                break  # another search asked the same question this round
            if k == UNKNOWN:
                alive[j] = True
                for s in range(1, min(depth, level) + 1):
                    lev = level - s
                    base = i << s
                    for t in range(1 << (s - 1)):
                        idx = base + 2 * t
                        if (idx << lev) >= extents[p]:
                            break
                        node = off[p, lev] + idx
                        if known[node] == UNKNOWN and nq < qp.shape[0]:
                            known[node] = PENDING
                            qp[nq] = p
                            ql[nq] = lev
                            qi[nq] = idx
                            qk[nq] = 0
                            nq += 1
                break
            level -= 1
            i = 2 * i if k == ODD else 2 * i + 1
        if alive[j]:
            sp[w] = p
            sl[w] = level
            si[w] = i
            w += 1
        j += 1
    return w, flips, nq


@nb.njit(cache=True, inline="always")
def _apply_answers(
    words: NDArray[np.uint64],
    chunks: NDArray[np.uint64],
    width: int,
    off: NDArray[np.int64],
    known: NDArray[np.int8],
    qp: NDArray[np.int64],
    ql: NDArray[np.int64],
    qi: NDArray[np.int64],
    qk: NDArray[np.int8],
    answers: Bits,
) -> None:  # pragma: no cover - compiled
    """Record Alice's parities of asked left children (top-down) and infer their siblings
    (partner probes, flagged in qk, are applied by :func:`_apply_probes`)."""
    for j in range(answers.shape[0]):
        if qk[j]:
            continue
        p = qp[j]
        level = ql[j]
        idx = qi[j]
        node = off[p, level] + idx
        mismatch = answers[j] ^ _node_parity(words[p], chunks[p], width, level, idx)
        known[node] = EVEN + mismatch
        parent = known[off[p, level + 1] + (idx >> 1)]
        if parent >= EVEN:
            known[node + 1] = parent ^ mismatch


@nb.njit(cache=True, inline="always")
def _apply_probes(
    answers: Bits, b: BobArrays, ns: int
) -> tuple[int, int]:  # pragma: no cover - compiled
    """Apply Alice's answers to partner probes (single bits, pass-0 leaves): flip the bits that
    differ, record every probed leaf as even and its sibling from their parent; a parent left
    odd gets a search (a search that wanted the probed leaf this round was dropped). Returns
    (ns, bits flipped)."""
    bits, off, known, qk, qi = b.bits, b.off, b.known, b.qk, b.qi
    sp, sl, si = b.sp, b.sl, b.si
    flips = 0
    for j in range(answers.shape[0]):
        if not qk[j]:
            continue
        c = qi[j]
        leaf = off[0, 0] + c
        if answers[j] != bits[c]:
            ns = _flip(c, b, ns)
            flips += 1
        known[leaf] = EVEN
        parent = known[off[0, 1] + (c >> 1)]
        if parent >= EVEN:
            if known[off[0, 0] + (c ^ 1)] == UNKNOWN:
                known[off[0, 0] + (c ^ 1)] = parent
            if parent == ODD and ns < sp.shape[0]:
                sp[ns] = 0
                sl[ns] = 1
                si[ns] = c >> 1
                ns += 1
    return ns, flips


@nb.njit(cache=True, inline="always")
def _resume_deferred(b: BobArrays, lo: int, hi: int, ns: int) -> int:
    # pragma: no cover - compiled
    """Queue a search in every top block of the late passes lo..hi-1 that is still odd (a late
    pass searches one odd half at a time); returns ns."""
    geo, depths, off, known, sp, sl, si = b.geo, b.depths, b.off, b.known, b.sp, b.sl, b.si
    for p in range(lo, hi):
        if not geo[p, 2]:
            continue
        d = depths[p]
        for blk in range(b.counts[p]):
            if known[off[p, d] + blk] == ODD and ns < sp.shape[0]:
                sp[ns] = p
                sl[ns] = d
                si[ns] = blk
                ns += 1
                break
    return ns


@nb.njit(cache=True)
def _alice_full(counts: NDArray[np.int64], alice_tops: Bits) -> Bits:  # pragma: no cover
    """Alice's top parities of every block of every pass: the last block of passes >= 1 is
    inferred from the parity of the whole frame (pass 0's blocks)."""
    out = np.zeros(counts.sum(), dtype=np.uint8)
    cursor = 0
    base = 0
    total = 0
    for p in range(counts.shape[0]):
        blocks = counts[p]
        acc = 0
        for b in range(blocks):
            if p == 0:
                alice = alice_tops[cursor]
                cursor += 1
                total ^= alice
            elif b < blocks - 1:
                alice = alice_tops[cursor]
                cursor += 1
                acc ^= alice
            else:
                alice = total ^ acc
            out[base + b] = alice
        base += blocks
    return out


@nb.njit(cache=True, inline="always")
def _begin_pass(p: int, base: int, b: BobArrays, ns: int) -> int:  # pragma: no cover - compiled
    """Start pass p from Bob's current bits: set its top blocks' state from Alice's parities,
    queue a search in each odd block, pack the pass only if one is odd; returns ns. The first
    late pass starts tracking every late pass's halves (``late``: on, second halves, total)."""
    bits, keys, geo, depths, counts, off = b.bits, b.keys, b.geo, b.depths, b.counts, b.off
    known, alice, words, chunks, packed, xs = b.known, b.alice, b.words, b.chunks, b.packed, b.xs
    sp, sl, si, late = b.sp, b.sl, b.si, b.late
    d = depths[p]
    tops = np.empty(counts[p], dtype=np.uint8)
    positioned = False
    if geo[p, 2]:
        if not late[0]:
            late[1] = _late_halves(bits, geo[p, 0], keys[0, 0])
            late[2] = np.uint64(np.sum(bits) & 1)
            late[0] = 1
        second = np.uint8((late[1] >> np.uint64(p)) & np.uint64(1))
        tops[0] = np.uint8(late[2]) ^ second
        tops[1] = second
    else:
        _positions_of(p, keys, geo, xs)
        _stream_tops(bits, xs, d, tops)
        positioned = True
    odd = False
    defer = geo[p, 2] and b.opts[1]
    for blk in range(counts[p]):
        v = alice[base + blk] ^ tops[blk]
        known[off[p, d] + blk] = EVEN + v
        if v and not (defer and odd):
            odd = True
            sp[ns] = p
            sl[ns] = d
            si[ns] = blk
            ns += 1
    if odd:
        if not positioned:
            _positions_of(p, keys, geo, xs)
        _pack_bob(bits, xs, words[p], chunks[p])
        packed[p] = True
    return ns


@nb.njit(cache=True)
def _bob_round(
    answers: Bits,
    nq: int,
    ns: int,
    stage: int,
    tail: int,
    tail_depth: int,
    width: int,
    b: BobArrays,
) -> tuple[int, int, int, int]:  # pragma: no cover - compiled
    """One round of Bob in one compiled call: apply the answers to the last ``nq`` questions,
    advance the searches, start the next stages until some search asks. Returns (live
    searches, questions, bits flipped, next stage); no searches left after the last stage:
    done."""
    stage_lo, stage_hi, bases, started, qp, ql, qi = (
        b.stage_lo,
        b.stage_hi,
        b.bases,
        b.started,
        b.qp,
        b.ql,
        b.qi,
    )
    flips = 0
    if nq:
        _apply_answers(
            b.words, b.chunks, width, b.off, b.known, qp[:nq], ql[:nq], qi[:nq], b.qk, answers
        )
        if b.opts[0] > 0:
            ns, flips = _apply_probes(answers, b, ns)
    while True:
        depth = tail_depth if ns <= tail else 1
        ns, f, nq = _descend(b, ns, depth, width // 2 - flips)
        flips += f
        if 2 * flips > width:  # only parities inconsistent with Alice's bits get this far
            raise ValueError("Cascade: flips in one round exceed half the frame (bad parities)")
        if ns and not nq:
            continue  # every live search waits behind one that finished this round
        if not ns and stage > 0 and b.opts[1]:
            ns = _resume_deferred(b, stage_lo[stage - 1], stage_hi[stage - 1], ns)
            if ns:
                continue
        if ns or stage >= stage_lo.shape[0]:
            return ns, nq, flips, stage
        for p in range(stage_lo[stage], stage_hi[stage]):
            started[p] = True
            ns = _begin_pass(p, bases[p], b, ns)
        stage += 1


class CascadeBob:
    """Bob's side: holds his bits, asks questions, corrects; never sees Alice's bits."""

    def __init__(self, bits: Bits, qber: float, seed: int, config: CascadeConfig) -> None:
        self.n = len(bits)
        self._bits = np.zeros(self.n + 1, dtype=np.uint8)  # index n: padding, always 0
        self._bits[: self.n] = bits
        self.config = config
        self.geo = config.geometry(self.n, qber)
        depths = self.geo.depths
        self.depths = np.asarray(depths, dtype=np.int64)
        self._counts = np.asarray(self.geo.blocks, dtype=np.int64)
        self._extents = np.asarray(self.geo.extents, dtype=np.int64)
        self._keys, self._pgeo = _pass_keys(
            np.uint64(seed & 0xFFFFFFFFFFFFFFFF), self.n, len(depths), self.geo.width, SPREAD_FROM
        )
        # bit-packed pass-ordered copies and the xor of each 64-word chunk, built when a pass
        # starts with an odd block (or a flip first makes one odd): most late passes never are
        nw = _nwords(self.geo.width)
        self._words = np.zeros((len(depths), nw), dtype=np.uint64)
        self._chunks = np.zeros((len(depths), (nw + 63) >> 6), dtype=np.uint64)
        self._packed = np.zeros(len(depths), dtype=np.bool_)
        self._xs = np.empty(self.n, dtype=np.uint32)
        self._bases = np.concatenate(([0], np.cumsum(self._counts)[:-1])).astype(np.int64)
        self._alice = np.zeros(0, dtype=np.uint8)
        self.off, total = _layout(self.geo)
        self.known = np.zeros(total, dtype=np.int8)  # UNKNOWN
        self.started = np.zeros(len(depths), dtype=np.bool_)
        self._late = np.zeros(3, dtype=np.uint64)  # late passes' halves: tracking, second, total
        cap = max(64, 2 * self.n)
        self._sp = np.empty(cap, dtype=np.int64)
        self._sl = np.empty(cap, dtype=np.int64)
        self._si = np.empty(cap, dtype=np.int64)
        self._alive = np.empty(cap, dtype=np.bool_)
        qcap = cap + (1 << config.tail_depth) * max(64, self.n // config.tail_divisor)
        self._qp = np.empty(qcap, dtype=np.int64)
        self._ql = np.empty(qcap, dtype=np.int64)
        self._qi = np.empty(qcap, dtype=np.int64)
        self._qk = np.zeros(qcap, dtype=np.int8)  # 1: a partner probe (a pass-0 leaf)
        self._opts = np.asarray(
            [
                config.partner_probe,
                int(config.defer_late),
                config.priority_for(self.n),
                int(config.probe_any),
            ],
            dtype=np.int64,
        )
        self._nq = 0
        self._ns = 0
        self._stage_passes = [
            list(range(s, s + 1)) for s in range(min(config.concurrent_from, len(depths)))
        ] + (
            [list(range(config.concurrent_from, len(depths)))]
            if len(depths) > config.concurrent_from
            else []
        )
        self._stage_lo = np.asarray([st[0] for st in self._stage_passes], dtype=np.int64)
        self._stage_hi = np.asarray([st[-1] + 1 for st in self._stage_passes], dtype=np.int64)
        self._tail = max(config.tail_min, self.n // config.tail_divisor)
        self._stage = 0
        self.corrected_bits = 0
        self.rounds = 0
        self.done = False

    @property
    def progress(self) -> float:
        """Fraction of the pass stages started (for progress bars)."""
        return self._stage / max(1, len(self._stage_passes))

    @property
    def bits(self) -> Bits:
        """Bob's current (corrected so far) bits."""
        return self._bits[: self.n]

    def expected_top_parities(self) -> int:
        """How many top-level parities Bob expects from Alice."""
        counts = self.geo.blocks
        return counts[0] + sum(c - 1 for c in counts[1:])

    def start(
        self, alice_tops: Bits
    ) -> tuple[NDArray[np.uint8], NDArray[np.uint8], NDArray[np.int64]]:
        """Take Alice's top-level parities; return the first batch of questions."""
        if len(alice_tops) != self.expected_top_parities():
            raise ValueError(
                f"expected {self.expected_top_parities()} top-level parities, got {len(alice_tops)}"
            )
        self._alice = _alice_full(self._counts, alice_tops.astype(np.uint8))
        self.arrays = BobArrays(
            self._stage_lo,
            self._stage_hi,
            self._bits,
            self._words,
            self._chunks,
            self._keys,
            self._pgeo,
            self.depths,
            self._counts,
            self._bases,
            self.off,
            self.known,
            self._alice,
            self.started,
            self._packed,
            self._xs,
            self._sp,
            self._sl,
            self._si,
            self._alive,
            self._qp,
            self._ql,
            self._qi,
            self._extents,
            self._late,
            self._qk,
            self._opts,
        )
        return self._advance()

    def step(self, answers: Bits) -> tuple[NDArray[np.uint8], NDArray[np.uint8], NDArray[np.int64]]:
        """Apply Alice's answers to the last questions; return the next questions (empty: done)."""
        if len(answers) != self._nq:
            raise ValueError(f"expected {self._nq} answers, got {len(answers)}")
        self.rounds += 1
        return self._advance(answers.astype(np.uint8, copy=False))

    def finish_against(self, alice: CascadeAlice) -> int:
        """Run the remaining rounds against an in-process Alice in one compiled loop (the
        questions and answers are the ones :meth:`step` and :meth:`CascadeAlice.answer` would
        exchange). Returns the round trips taken."""
        trips, leaked, flips, ok = _loopback(
            self._nq,
            self._ns,
            self._stage,
            self._tail,
            self.config.tail_depth,
            self.geo.width,
            self.arrays,
            alice.arrays,
        )
        if not ok:
            raise ValueError("parity question out of range")
        alice.leaked_bits += leaked
        self.corrected_bits += flips
        self.rounds += trips
        self._ns = self._nq = 0
        self._stage = len(self._stage_passes)
        self.done = True
        return trips

    def _advance(
        self, answers: Bits | None = None
    ) -> tuple[NDArray[np.uint8], NDArray[np.uint8], NDArray[np.int64]]:
        ns, nq, flips, self._stage = _bob_round(
            _EMPTY8 if answers is None else answers,
            0 if answers is None else self._nq,
            self._ns,
            self._stage,
            self._tail,
            self.config.tail_depth,
            self.geo.width,
            self.arrays,
        )
        self.corrected_bits += flips
        self._ns = ns
        self._nq = nq
        if not ns:
            self.done = True
            return _EMPTY8, _EMPTY8, np.zeros(0, np.int64)
        return (
            self._qp[:nq].astype(np.uint8),
            self._ql[:nq].astype(np.uint8),
            self._qi[:nq].copy(),
        )


@nb.njit(cache=True)
def _loopback(
    nq: int,
    ns: int,
    stage: int,
    tail: int,
    tail_depth: int,
    width: int,
    b: BobArrays,
    a: AliceArrays,
) -> tuple[int, int, int, int]:  # pragma: no cover - compiled
    """Bob's rounds and Alice's answers alternating in one compiled loop, from Bob's first
    questions ``qp/ql/qi[:nq]`` to the end. Only the questions and the answers pass between the
    two sides, exactly what :func:`reconcile_frames_local` and the session carry. Returns
    (round trips, parity bits Alice disclosed, bits Bob flipped, 1 if every question was in
    range else 0)."""
    qp, ql, qi = b.qp, b.ql, b.qi
    answers = np.empty(qp.shape[0], dtype=np.uint8)
    trips = 0
    leaked = 0
    flips = 0
    while ns:
        if not _answer(a, width, qp[:nq], ql[:nq], qi[:nq], answers[:nq]):
            return trips, leaked, flips, 0
        leaked += nq
        trips += 1
        ns, nq, f, stage = _bob_round(answers[:nq], nq, ns, stage, tail, tail_depth, width, b)
        flips += f
    return trips, leaked, flips, 1


@dataclass(frozen=True)
class CascadeResult:
    """Outcome of one local reconciliation (benchmarks and tests)."""

    corrected: Bits
    leaked_bits: int
    round_trips: int
    flipped_bits: int


def reconcile_local(
    alice_bits: Bits, bob_bits: Bits, qber: float, seed: int, config: CascadeConfig | None = None
) -> CascadeResult:
    """Run both ends in one process; they exchange only the arrays a network would carry."""
    cfg = config or CascadeConfig()
    alice = CascadeAlice(alice_bits, qber, seed, cfg)
    bob = CascadeBob(bob_bits, qber, seed, cfg)
    bob.start(alice.top_parities())
    trips = 1 + bob.finish_against(alice)
    return CascadeResult(bob.bits, alice.leaked_bits, trips, bob.corrected_bits)


def efficiency(leaked_bits: int, n: int, qber: float) -> float:
    """f = leaked / (n h(Q)) (Martinez-Mateo et al. 2015, Eq. 1)."""
    h = binary_entropy(qber)
    return float("inf") if h <= 0 else leaked_bits / (n * h)


# ---------------------------------------------------------------------------------------------
# the frames of a block, one compiled call per round trip and side

Questions = tuple[NDArray[np.int32], NDArray[np.uint8], NDArray[np.uint8], NDArray[np.int64]]
"""(frame, pass, level, index) of every parity question of a round, grouped by frame."""

_NQ, _NS, _STAGE, _TAIL, _WIDTH, _FLIPS = range(6)


def _typed(items: list[Any]) -> Any:
    """A numba typed list of the frames' array tuples (the arrays are shared, not copied)."""
    out = nb.typed.List()
    for item in items:
        out.append(item)
    return out


@nb.njit(cache=True)
def _answer_frames(
    alices: Any,
    width: NDArray[np.int64],
    frame: NDArray[np.int32],
    passes: NDArray[np.uint8],
    levels: NDArray[np.uint8],
    index: NDArray[np.int64],
    out: Bits,
) -> bool:  # pragma: no cover - compiled
    """Alice's answers to the questions of every frame; False if one is invalid. Each run of
    consecutive questions of one frame (a round's questions come grouped by frame) is answered
    by one call on that frame's arrays."""
    frames = width.shape[0]
    total = frame.shape[0]
    j = 0
    while j < total:
        f = frame[j]
        if f < 0 or f >= frames:
            return False
        k = j + 1
        while k < total and frame[k] == f:
            k += 1
        if not _answer(alices[f], width[f], passes[j:k], levels[j:k], index[j:k], out[j:k]):
            return False
        j = k
    return True


@nb.njit(cache=True)
def _bob_frames_round(
    answers: Bits, state: NDArray[np.int64], tail_depth: int, frames: Any
) -> int:  # pragma: no cover - compiled
    """One round of every frame still searching: the answers are those to the last questions,
    grouped by frame; each frame's new questions stay in its own buffers (state[f, NQ] of
    them). Returns the number of new questions."""
    cursor = 0
    total = 0
    for f in range(state.shape[0]):
        nq = state[f, 0]
        if nq == 0:
            continue  # finished
        ns, nq2, flips, stage = _bob_round(
            answers[cursor : cursor + nq],
            nq,
            state[f, 1],
            state[f, 2],
            state[f, 3],
            tail_depth,
            state[f, 4],
            frames[f],
        )
        cursor += nq
        state[f, 0] = nq2 if ns else 0
        state[f, 1] = ns
        state[f, 2] = stage
        state[f, 5] += flips
        total += state[f, 0]
    return total


@nb.njit(cache=True)
def _gather_questions(
    state: NDArray[np.int64], frames: Any, total: int
) -> tuple[NDArray[np.int32], NDArray[np.uint8], NDArray[np.uint8], NDArray[np.int64]]:
    # pragma: no cover - compiled
    """The frames' pending questions, concatenated in frame order."""
    frame = np.empty(total, dtype=np.int32)
    passes = np.empty(total, dtype=np.uint8)
    levels = np.empty(total, dtype=np.uint8)
    index = np.empty(total, dtype=np.int64)
    j = 0
    for f in range(state.shape[0]):
        if state[f, 0] == 0:
            continue
        bf = frames[f]
        qpf, qlf, qif = bf.qp, bf.ql, bf.qi
        for k in range(state[f, 0]):
            frame[j] = f
            passes[j] = qpf[k]
            levels[j] = qlf[k]
            index[j] = qif[k]
            j += 1
    return frame, passes, levels, index


class CascadeAliceFrames:
    """Alice's frames of one block: answers a round's questions of all frames in one call."""

    def __init__(self, frames: list[Bits], qber: float, seed: int, config: CascadeConfig) -> None:
        if not frames:
            raise ValueError("a block needs at least one frame")
        self.ends = [CascadeAlice(bits, qber, seed, config) for bits in frames]
        self._alices = _typed([e.arrays for e in self.ends])
        self._width = np.asarray([e.geo.width for e in self.ends], dtype=np.int64)
        self.leaked_bits = 0

    def top_parities(self) -> list[Bits]:
        """Each frame's top-level parities (see :meth:`CascadeAlice.top_parities`)."""
        tops = [e.top_parities() for e in self.ends]
        self.leaked_bits += sum(len(t) for t in tops)
        return tops

    def answer(
        self,
        frame: NDArray[np.int32],
        passes: NDArray[np.uint8],
        levels: NDArray[np.uint8],
        index: NDArray[np.int64],
    ) -> Bits:
        """Parities of the asked blocks; ValueError if a question is out of range."""
        out = np.empty(len(frame), dtype=np.uint8)
        if not _answer_frames(self._alices, self._width, frame, passes, levels, index, out):
            raise ValueError("parity question out of range")
        self.leaked_bits += len(out)
        return out


class CascadeBobFrames:
    """Bob's frames of one block in lockstep: one compiled call per round trip runs every frame
    that is still searching, and one round trip carries the questions of all of them."""

    def __init__(self, frames: list[Bits], qber: float, seed: int, config: CascadeConfig) -> None:
        if not frames:
            raise ValueError("a block needs at least one frame")
        self.ends = [CascadeBob(bits, qber, seed, config) for bits in frames]
        self._frames: Any = None
        self._state = np.zeros((len(self.ends), 6), dtype=np.int64)
        self._state[:, _TAIL] = [e._tail for e in self.ends]
        self._state[:, _WIDTH] = [e.geo.width for e in self.ends]
        self._tail_depth = config.tail_depth

    def expected_top_parities(self) -> list[int]:
        """How many top-level parities Bob expects from Alice for each frame."""
        return [e.expected_top_parities() for e in self.ends]

    def start(self, tops: list[Bits]) -> Questions:
        """Take Alice's top-level parities of every frame; return the first questions."""
        for f, (end, t) in enumerate(zip(self.ends, tops, strict=True)):
            end.start(t)
            self._state[f, _NQ] = end._nq if end._ns else 0
            self._state[f, _NS] = end._ns
            self._state[f, _STAGE] = end._stage
            self._state[f, _FLIPS] = end.corrected_bits
        self._frames = _typed([e.arrays for e in self.ends])
        return self._questions(int(self._state[:, _NQ].sum()))

    def step(self, answers: Bits) -> Questions:
        """Apply the answers to the last questions (grouped by frame, as asked); return the next
        questions (empty: every frame is done)."""
        if self._frames is None:
            raise ValueError("start() first")
        if len(answers) != int(self._state[:, _NQ].sum()):
            raise ValueError(
                f"expected {int(self._state[:, _NQ].sum())} answers, got {len(answers)}"
            )
        total = _bob_frames_round(
            answers.astype(np.uint8, copy=False), self._state, self._tail_depth, self._frames
        )
        return self._questions(total)

    def _questions(self, total: int) -> Questions:
        return _gather_questions(self._state, self._frames, total)

    @property
    def done(self) -> bool:
        """True when no frame has a question left."""
        return not self._state[:, _NQ].any()

    @property
    def progress(self) -> float:
        """Mean fraction of the pass stages started (for progress bars)."""
        stages = [max(1, len(e._stage_passes)) for e in self.ends]
        return float(np.mean(self._state[:, _STAGE] / np.asarray(stages))) if self.ends else 1.0

    @property
    def corrected_bits(self) -> int:
        """Bits Bob flipped over all frames."""
        return int(self._state[:, _FLIPS].sum())

    @property
    def bits(self) -> list[Bits]:
        """Bob's (corrected) bits, frame by frame."""
        return [e.bits for e in self.ends]


@dataclass(frozen=True)
class BlockResult:
    """Outcome of reconciling the frames of one block in lockstep (benchmarks and tests)."""

    corrected: list[Bits]
    leaked_bits: int
    round_trips: int


def reconcile_frames_local(
    alice_frames: list[Bits],
    bob_frames: list[Bits],
    qber: float,
    seed: int,
    config: CascadeConfig | None = None,
) -> BlockResult:
    """Several frames in lockstep, as the session runs them: one round trip carries the
    questions of every frame (so a block's round trips are those of its slowest frame)."""
    cfg = config or CascadeConfig()
    alice = CascadeAliceFrames(alice_frames, qber, seed, cfg)
    bob = CascadeBobFrames(bob_frames, qber, seed, cfg)
    questions = bob.start(alice.top_parities())
    trips = 1
    while len(questions[0]):
        questions = bob.step(alice.answer(*questions))
        trips += 1
    return BlockResult([b.copy() for b in bob.bits], alice.leaked_bits, trips)
