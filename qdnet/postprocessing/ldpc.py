"""Rate-adaptive LDPC syndrome reconciliation with blind disclosure of least-reliable bits.

Scheme. Slepian-Wolf coding with LDPC codes (Elkouss, Leverrier, Alleaume, Boutros, ISIT 2009,
arXiv:0901.2140): Alice sends the syndrome s = H x_A of her frame; Bob decodes the error pattern
e with H e = s xor H y_B by belief propagation and corrects y_B. Rate adaptivity: the code is
drawn from a family indexed by (n, m, public seed) with m = ceil(f0 n h(Q)) checks chosen for
the estimated QBER. When BP does not converge, Bob asks Alice to disclose her bits at the d
positions where his posterior is least reliable (smallest |LLR|), fixes them and decodes again
(symmetric blind reconciliation, Kiktenko, Trushechkin, Lim, Kurochkin, Fedorov, Phys. Rev.
Applied 8, 044017 (2017); blind reconciliation, Martinez-Mateo, Elkouss, Martin, QIC 12 (2012)).
All frames of a block travel in the same messages, so a block costs 1 + (reveal rounds) round
trips. Leakage = syndrome bits + disclosed bits, counted by Alice. The start rate is
f0 = 1 + 0.5 / sqrt(n h(Q)) (well below the finite-length need) and reveal round r discloses
0.15 % of n h(Q) bits times 1 + r // 3 (at most 30 rounds), so f moves in small steps:
disclosing the least-reliable bits once BP has stalled is worth more than syndrome bits, and the
closer BP is to convergence the more each disclosed bit is worth, so a low start with fine steps
lowers f at the price of round trips (measured, 40 frames at 1e4 and 8 at 1e5 per point: start
slope 1.5 and steps of 0.75 % gave f 1.115 / 1.091 / 1.076 at 1e4 (QBER 1 / 3 / 5 %) and
1.085 / 1.071 / 1.063 at 1e5 (1 / 2 / 3 %) in ~6.6 round trips; slope 0.5 and 0.15 % give
1.091 / 1.074 / 1.060 and 1.060 / 1.053 / 1.057 in ~13-15, for ~25 % less speed; steps in
proportion to the unsatisfied checks, i.e. large early reveals, gave f +0.02). A round stops as
soon as BP stops making progress (unsatisfied checks down by < 10 % over 3 iterations).

Codes. Irregular LDPC ensembles (Richardson, Shokrollahi, Urbanke, IEEE TIT 47 (2001) 619) from
DISTRIBUTIONS, one per rate class; the code for (n, m) uses the class nearest in rate. Each was
optimised for the BSC by this project (the tools: :mod:`qdnet.postprocessing.ldpc_design`) with
discretised density evolution (DE) of sum-product BP
(Richardson and Urbanke, IEEE TIT 47 (2001) 599; Chung, Forney, Richardson, Urbanke,
IEEE Comm. Lett. 5 (2001) 58): LLR densities on a uniform grid (step 1/4, clipped at +-20 during
the search), variable nodes by FFT convolution, check nodes by pairwise quantised
R(a, b) = 2 atanh(tanh(a/2) tanh(b/2)) tables with repeated squaring; an ensemble "converges" at
p when the message error probability falls below 2e-7 within 300 iterations. The search is
iterative linear programming in lambda for a fixed rho, the method of Chung et al. 2001: from a
DE run, maximise the rate (sum lambda_d / d) subject to the error probability after one
variable-node update with the recorded check densities staying, at every iteration, below the
current error plus half of its progress, a trust region on lambda (halved on a failed step), the
stability condition lambda_2 rho'(1) <= 0.9 / (2 sqrt(p (1 - p))) (Richardson, Shokrollahi,
Urbanke 2001) and lambda_2 <= 0.98 * 2 / (mean check degree), i.e. fewer degree-2 columns than
checks, so that they all fit in a cycle-free IRA staircase (Jin, Khandekar, McEliece 2000; low
error floor). Variable degrees 2..30 (up to 50 in the 1 % and 2 % classes), rho on two
consecutive degrees; the mean check degree was scanned per class (mean column degree ~4.5-8.1;
higher check degrees gave better f* but more edges) and each search started from
lambda = x^dmax (and, in the first search, mixtures of it). ``threshold`` is
f* = (1 - R) / h(p*) with p* the DE threshold on a finer grid (step 1/8, clip +-25, up to 1000
iterations, bisection); this grid gives p* = 0.0840 for the (3, 6) regular ensemble (0.084
reported by Richardson and Urbanke 2001). Every class has p* above the p it was optimised at
(the coarse grid has a numerical error floor near 2e-7, hence the loose convergence test there).

Construction (make_code): degree-2 columns as a staircase on checks 0..m-1, the other columns
(degree 3 first, then highest degree first) on the sockets of a shuffled configuration-model
matching (the socket ensemble of Richardson and Urbanke, Modern Coding Theory, Ch. 3) with
balanced check degrees and no repeated edges. Degree-3 columns keep a staircase gap
(_STAIR_GAP = 12): no two of them (and no single one) have checks that staircase segments of
total length < 12 pair up, which removes the codewords of weight 3-13 made of two degree-3
columns and staircase columns (without it BP accepted such a wrong codeword in ~1 of 400 frames
at n = 1e4, QBER 2 %). Deterministic from (n, m) and a constant seed, cached per (n, m) in
process (~0.15 s at n = 1e5, half of it the gap rule). Removing 4-cycles as well (with a greedy
socket search) cost ~3 s at 1e5 and did not lower f (n = 1e4: +0.007, n = 1e5: -0.003, both
within noise); at n = 1e4 and rate 0.91 a 4-cycle-free code with these degrees does not exist
(the check pairs its columns need exceed the m(m-1)/2 available). Decoding: layered sum-product
BP compiled with Numba (:mod:`qdnet.postprocessing.ldpc_bp`), warm-started after every reveal:
the frames of a block that share a code are decoded 16 at a time, one per SIMD lane
(:class:`LdpcBobFrames`), a lone frame by the scalar phi-table kernel. Normalised min-sum was
dropped: at these rates it ends at f 1.19-1.42 at n = 1e4 and leaves frames unsolved after 30
rounds (scale 0.45-0.8, 30 frames per point at QBER 1/3/8 %).

Finite length. At n = 1e4 frames end ~0.045 above f* at QBER 1 % and ~0.025 at 8 %; at n = 1e5
~0.017 and ~0.01. Threshold gains pay off almost fully at 1e5 and about two thirds at 1e4.
Not taken: waiting longer before a reveal (< 5 % progress over 4 iterations, up to 60:
f -0.006 at 1e5 and 1 %, -0.003 at 1e4, for 25-35 % less speed), reveals of 0.1 % of n h
(f -0.0035 for ~4 more round trips and ~20 % less speed), 4-cycle removal (above).
Speed: BP is ~75 % of a block's time (the rest: reveal selection, lane moves, syndromes),
~70-80 iterations per frame (~13 rounds, 4 iterations in each round before the last ones) over
~5-8 edges per bit. The lone-frame kernel costs ~4 ns per edge update; the lanes kernel ~0.8 ns
per edge and frame at 1e4 (~1.3 at 1e5), with ~76 % of its lane-iterations busy in a block of
100 frames (a batch runs until fewer than LANES_MIN_BUSY of its frames are still busy; those
wait for the next round if other frames wait for reveals, or are pooled into full batches).
Every iteration saved costs f (paired frames, 1e4 and 2 %, 200 frames): carrying the stall
history across a reveal (a round can stop after 3 iterations) +12 % speed for f +0.0026,
with 2-iteration stall windows +35 % for +0.0068; start slope 1.0 +3-13 % for +0.0015-0.0022
(also at 1e5 and 1 %); none taken. Measured and not taken: round-stopping rules that stop
stalled rounds earlier (the |LLR| ranking that picks the reveals still moves while the
unsatisfied-check count is flat; the best rule saves 15-20 % of the iterations for f
+0.001-0.002, which the 1e5 goal at 1 % cannot afford), cutting batches at 8 busy lanes
(+5-10 % speed, f +0.002 or, with per-frame reveal steps, +15-30 % round trips), int16
messages in the lanes kernel (+10-20 % at 1e5 where the messages stream from memory, -8 % at
1e4), prefetching the next check's posteriors (slower), skipping converged checks (every check
of degree 20-150 has a changing input), AVX-512 gathers of the phi table (~34 ns per 16 lanes
on the test machine) and a one-frame kernel vectorised over a check's edges (2x faster at
check degree ~90, 2x slower at ~11: per-check latency).

Measured (benchmarks/postprocessing.py: each point one block of 100 frames at 1e4, 16 at 1e5,
2 at 1e6; QBER 1/2/3/5/8 %): f at 1e4 1.086/1.071/1.061/1.053/1.051, at 1e5
1.058/1.045/1.047/1.043/1.042, at 1e6 1.048/1.043/1.048/1.041/1.043; block round trips 18-23
at 1e4 (the slowest of 100 frames), 14-20 at 1e5, 11-14 at 1e6; speed per core of a block
1.05/1.41/1.25/1.37/1.36 Mbit/s at 1e4 (a lone frame 0.37-0.42), 0.84/0.78/0.97/1.05/1.00 at
1e5 (alone 0.30-0.39), 0.23-0.28 at 1e6 (2 frames: lone-frame kernel); the code is built once
per block, timed apart (~0.01 s at 1e4, ~0.1 s at 1e5, 0.9-2.3 s at 1e6). f at low QBER
follows the QBER estimate the code is chosen from (the blind protocol only adds bits): at 1e5
and 1 % a test-sample estimate 3.3 sigma high (1.109 % from 1e5 bits) started every frame at
f 1.092. The previous release (start slope 1.5, steps of 0.75 %, the first ensembles) gave
1.117/1.097/1.092/1.076/1.069 at 1e4 and 1.079/1.071/1.068/1.062/1.053 at 1e5 at 0.55-0.78
Mbit/s. BP accepts a wrong codeword (weight 6-8: a few degree-3 columns closed by two
staircase columns) in ~1 % of 1e4-bit frames at 0.5 % (5 in 600; the ~460-check code is short)
and ~1e-3 at 1-2 % (1 in 2000 at 1 % and at 2 % in blocks, 1 in 600 alone, 1 in 100 in the
benchmark run at 1 %); verification discards them.
"""

from __future__ import annotations

import math
import secrets
from collections import OrderedDict
from dataclasses import dataclass

import numba as nb
import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from qdnet.postprocessing.ldpc_bp import (
    KERNEL_FLAGS,
    LANES,
    LANES_MAX_CHECK_DEGREE,
    LLR_CLAMP,
    PHI_INV_STEP,
    PHI_TABLE,
    copy_lane,
    frame_workspace,
    lanes_workspace,
    layered_bp_frame,
    layered_bp_lanes,
)
from qdnet.security.entropy import binary_entropy
from qdnet.transport.authentication import AuthenticatedChannel
from qdnet.transport.messages import Message, MessageKind, ProtocolError

Bits = NDArray[np.uint8]


@dataclass(frozen=True)
class LdpcConfig:
    """Blind-protocol and decoder parameters (the code family itself is fixed: DISTRIBUTIONS)."""

    start_efficiency: float = 1.0
    start_slope: float = 0.5
    reveal_fraction: float = 0.0015
    max_rounds: int = 30
    max_iter: int = 40
    stall_iterations: int = 3
    min_progress: float = 0.1
    rate_step: float = 0.01


@dataclass(frozen=True)
class DegreeDistribution:
    """An LDPC ensemble (edge perspective): variable-degree fractions lambda_d and a
    check-concentrated rho (check degrees floor/ceil of ``check_degree``), optimised with
    discretised density evolution for the BSC with crossover ``qber``; ``threshold`` is the
    efficiency f* = (1 - R) / h(p*) at the BP threshold p* of the ensemble."""

    qber: float
    check_degree: float
    variable: tuple[tuple[int, float], ...]
    threshold: float

    @property
    def rate(self) -> float:
        """Design rate 1 - (sum_d rho_d / d) / (sum_d lambda_d / d); sum_d rho_d / d is one over
        the mean check degree."""
        return 1.0 - (1.0 / self.check_degree) / sum(w / d for d, w in self.variable)


# The rate classes: (BSC crossover p the class was optimised at, mean check degree, lambda as
# (degree, edge fraction), f* at the DE threshold on the fine grid). Optimised by this project
# with discretised DE and iterative linear programming (module docstring). Second search (this
# release) for all classes but 6.5-11 %: the LP from lambda = x^dmax at a moderately higher check
# degree, where the LP's top degree settles just below the cap dmax (30; 50 at 1 %, 40 at 2 %):
# f* 1.119 -> 1.062 (0.5 %), 1.053 -> 1.038 (1 %), 1.064 -> 1.053 (1.5 %), 1.055 -> 1.036 (2 %),
# 1.055 -> 1.041 (3 %), 1.038 -> 1.030 (5 %), for 2-25 % more edges. Measured gain in f (same
# frames, 8-16 at 1e5, 40-60 at 1e4, each comparison +-0.002-0.003): 1 % -0.010 at 1e5 and
# -0.008 at 1e4, 2 % -0.002 and -0.001 (most of its threshold gain is lost at finite length),
# 3 % -0.010 and -0.009, 5 % -0.006 and -0.003. Higher check degrees with degrees capped at 30, the LP on the fine grid and
# a global search (scipy differential_evolution on lambda over 5 degrees) found nothing better.
# The 8 % class uses check degree 11 (4.85 edges per column, f* 1.041) rather than 12.78 (5.53,
# f* 1.033): ~20 % faster for f +0.004 at n = 1e4 and 1e5.
DISTRIBUTIONS: tuple[DegreeDistribution, ...] = (
    DegreeDistribution(
        0.005,
        150.0,
        (
            (2, 0.01307),
            (3, 0.2247),
            (8, 0.00379),
            (9, 0.36483),
            (10, 0.01553),
            (28, 0.02123),
            (29, 0.31602),
            (30, 0.04083),
        ),
        1.062,
    ),
    DegreeDistribution(
        0.01,
        96.0,
        (
            (2, 0.02042),
            (3, 0.20209),
            (9, 0.2307),
            (10, 0.06608),
            (20, 0.04694),
            (21, 0.06971),
            (50, 0.36406),
        ),
        1.038,
    ),
    DegreeDistribution(
        0.015,
        54.0,
        ((2, 0.0363), (3, 0.2592), (9, 0.18227), (10, 0.19188), (29, 0.24058), (30, 0.08978)),
        1.053,
    ),
    DegreeDistribution(
        0.02, 48.0, ((2, 0.04083), (3, 0.22712), (9, 0.05831), (10, 0.28158), (40, 0.39215)), 1.036
    ),
    DegreeDistribution(
        0.03,
        29.5,
        ((2, 0.06644), (3, 0.25672), (9, 0.18782), (10, 0.15575), (29, 0.00256), (30, 0.33072)),
        1.041,
    ),
    DegreeDistribution(
        0.05, 19.5, ((2, 0.10051), (3, 0.22568), (8, 0.17051), (9, 0.1087), (30, 0.3946)), 1.03
    ),
    DegreeDistribution(
        0.065,
        14.5,
        (
            (2, 0.13137),
            (3, 0.21617),
            (5, 0.004),
            (6, 0.02866),
            (7, 0.07976),
            (8, 0.05822),
            (9, 0.1238),
            (13, 0.02056),
            (14, 0.0067),
            (16, 0.03014),
            (25, 0.00527),
            (26, 0.01561),
            (27, 0.0673),
            (28, 0.13071),
            (29, 0.06465),
            (30, 0.01708),
        ),
        1.034,
    ),
    DegreeDistribution(
        0.08,
        11.0,
        (
            (2, 0.16133),
            (3, 0.21075),
            (6, 0.03858),
            (7, 0.13374),
            (8, 0.06655),
            (9, 0.06486),
            (19, 0.02706),
            (20, 0.0375),
            (21, 0.04443),
            (22, 0.06875),
            (23, 0.05102),
            (24, 0.00951),
            (27, 0.01297),
            (28, 0.06196),
            (29, 0.01099),
        ),
        1.041,
    ),
    DegreeDistribution(
        0.11,
        8.41,
        (
            (2, 0.19327),
            (3, 0.25472),
            (7, 0.06415),
            (8, 0.19979),
            (20, 0.01812),
            (21, 0.04489),
            (22, 0.00707),
            (23, 0.05),
            (24, 0.04299),
            (30, 0.125),
        ),
        1.034,
    ),
)

_FAMILY_SEED = 0x51D1DC0DE
_CODE_CACHE: OrderedDict[tuple[int, int], sp.csr_matrix] = OrderedDict()


def distribution_for(n: int, m: int) -> DegreeDistribution:
    """The ensemble whose design rate is nearest to 1 - m / n."""
    rate = 1.0 - m / n
    return min(DISTRIBUTIONS, key=lambda d: abs(d.rate - rate))


def column_degrees(n: int, m: int, dist: DegreeDistribution) -> NDArray[np.int64]:
    """Column degrees of an n-column code: node fractions L_d = (lambda_d / d) / sum(lambda / d)
    rounded by largest remainder, degree-2 columns first (at most m - 1: they form the
    staircase; any excess becomes degree 3), then the degree-3 columns (placed while most
    sockets are free: they carry the staircase-gap rule of _deal_sockets), then the others in
    decreasing degree; every degree is at most m."""
    degs = np.array([d for d, _ in dist.variable], dtype=np.int64)
    node = np.array([w / d for d, w in dist.variable])
    node *= n / node.sum()
    count = np.floor(node).astype(np.int64)
    count[np.argsort(count - node, kind="stable")[: n - int(count.sum())]] += 1
    n2 = int(count[degs == 2].sum())
    stair = min(n2, max(m - 1, 0))
    rest = np.repeat(np.minimum(degs[degs != 2], m), count[degs != 2])
    extra = np.full(n2 - stair, min(3, m), dtype=np.int64)
    others = np.sort(np.concatenate([rest, extra]))[::-1]
    threes = others == min(3, m)
    return np.concatenate([np.full(stair, 2, dtype=np.int64), others[threes], others[~threes]])


# Degree-3 columns and the staircase form low-weight codewords when two degree-3 columns have
# their checks pairwise close along the staircase: with checks U and V, U + V + the staircase
# segments pairing them is a codeword of weight 2 + (total segment length). BP converges to
# such a codeword when the error pattern holds about half of it (a weight-4 one is a tie): at
# n = 1e4 this gave ~1 wrong codeword per 400 frames at QBER 2 % (weight 4) and, with a gap of
# 4, still 1 per 600 at 5 % (weight 9). Keeping the matching cost of every pair of degree-3
# columns (and the gaps inside a column) at least _STAIR_GAP excludes these codewords up to
# weight 2 + _STAIR_GAP - 1; a gap of 12 is still met by every column at n = 1e4 and costs
# ~0.07 s more construction at 1e5.
_STAIR_GAP = 12
_SOCKET_PROBE = 512  # sockets searched for a degree-3 edge that keeps the gap, then relaxed
_FAR = 1 << 40


@nb.njit(inline="always")
def _stair_dist(x: int, y: int, n2: int) -> int:  # pragma: no cover - compiled
    """Length of the staircase path between checks x and y (0..n2 are on it)."""
    if x == y:
        return 0
    if x > n2 or y > n2:
        return _FAR
    return abs(x - y)


@nb.njit(**KERNEL_FLAGS)
def _keeps_gap(
    c: int,
    k: int,
    chosen: NDArray[np.int64],
    by_check: NDArray[np.int32],
    count: NDArray[np.int64],
    n2: int,
    gap: int,
) -> bool:  # pragma: no cover - compiled
    """Whether check c as edge k of a degree-3 column (first k checks in ``chosen``) keeps the
    staircase gap to the column's own checks and, on the last edge, to every placed degree-3
    column (minimum over the 6 pairings of the summed staircase distances). ``by_check[w]``
    holds the checks of the degree-3 columns placed on check w (inline, so a window of checks
    is read contiguously)."""
    for i in range(k):
        if _stair_dist(c, chosen[i], n2) < gap:
            return False
    if k < 2:
        return True
    v0 = chosen[0]
    v1 = chosen[1]
    m = count.shape[0]
    for w in range(max(0, v0 - gap + 1), min(m, v0 + gap)):
        for t in range(count[w]):
            u0 = by_check[w, t, 0]
            u1 = by_check[w, t, 1]
            u2 = by_check[w, t, 2]
            d01 = _stair_dist(u0, v1, n2)
            d11 = _stair_dist(u1, v1, n2)
            d21 = _stair_dist(u2, v1, n2)
            if min(d01, d11, d21) >= gap:
                continue  # v1 pairs with one of u's checks: no pairing is cheaper than this
            d02 = _stair_dist(u0, c, n2)
            d12 = _stair_dist(u1, c, n2)
            d22 = _stair_dist(u2, c, n2)
            if min(d02, d12, d22) >= gap:
                continue
            d00 = _stair_dist(u0, v0, n2)
            d10 = _stair_dist(u1, v0, n2)
            d20 = _stair_dist(u2, v0, n2)
            best = min(d00 + d11 + d22, d00 + d12 + d21, d01 + d10 + d22)
            best = min(best, min(d01 + d12 + d20, d02 + d10 + d21, d02 + d11 + d20))
            if best < gap:
                return False
    return True


@nb.njit(**KERNEL_FLAGS)
def _deal_sockets(
    var_deg: NDArray[np.int64],
    first: int,
    sockets: NDArray[np.int64],
    gap: int,
    edge_col: NDArray[np.int64],
    last: NDArray[np.int64],
    by_check: NDArray[np.int32],
    count: NDArray[np.int64],
    chosen: NDArray[np.int64],
) -> None:  # pragma: no cover - compiled
    """Deal the shuffled check sockets to the edges of columns first.. in order. Each edge takes
    the next socket that does not repeat a check of its column and, for degree-3 columns, keeps
    the staircase gap (_keeps_gap; searched over _SOCKET_PROBE sockets, then only the repeat
    rule applies), swapping it forward; an unavoidable repeat at the very end is resolved by
    swapping with an earlier edge of another column. The staircase spans checks 0..first.
    Writes each socket's column into ``edge_col``. Workspaces (allocated by the caller, which
    spares compiling NumPy's allocators for this kernel): ``last`` (m, -1), ``by_check``
    (m, sockets of the fullest check, 3), ``count`` (m, zeros), ``chosen`` (3)."""
    ns = sockets.shape[0]
    nv = var_deg.shape[0]
    pos = 0
    for v in range(first, nv):
        start = pos
        d = var_deg[v]
        for k in range(d):
            found = -1
            if d == 3:
                for j in range(pos, min(ns, pos + _SOCKET_PROBE)):
                    c = sockets[j]
                    if last[c] != v and _keeps_gap(c, k, chosen, by_check, count, first, gap):
                        found = j
                        break
            if found < 0:
                j = pos
                while j < ns and last[sockets[j]] == v:
                    j += 1
                found = j if j < ns else -1
            if found >= 0:
                sockets[pos], sockets[found] = sockets[found], sockets[pos]
            else:  # swap with an earlier edge (i, of column u) so neither column repeats a check
                c = sockets[pos]
                for i in range(start - 1, -1, -1):
                    u = edge_col[i]
                    ci = sockets[i]
                    if last[ci] == v:
                        continue
                    clash = False
                    for q in range(i - 1, -1, -1):
                        if edge_col[q] != u:
                            break
                        clash |= sockets[q] == c
                    for q in range(i + 1, start):
                        if edge_col[q] != u:
                            break
                        clash |= sockets[q] == c
                    if not clash:
                        sockets[pos], sockets[i] = ci, c
                        break
            c = sockets[pos]
            if d == 3:
                chosen[k] = c
            last[c] = v
            edge_col[pos] = v
            pos += 1
        if d == 3:
            for k in range(3):
                w = chosen[k]
                by_check[w, count[w], 0] = chosen[0]
                by_check[w, count[w], 1] = chosen[1]
                by_check[w, count[w], 2] = chosen[2]
                count[w] += 1


def make_code(n: int, m: int, seed: int = 0, cfg: LdpcConfig | None = None) -> sp.csr_matrix:
    """Deterministic m x n parity-check matrix of the family (same on both ends).

    The ensemble is the entry of DISTRIBUTIONS nearest in rate. Degree-2 columns form an IRA
    staircase on checks 0..m-1 (cycle-free, which keeps the error floor low; Jin, Khandekar,
    McEliece 2000); the other columns take the check sockets of a random configuration-model
    matching (the socket ensemble of Richardson and Urbanke, Modern Coding Theory, Ch. 3) with all check degrees
    within one of each other and no repeated edges. The family is fixed (constant seed, cached
    per (n, m) in memory); ``seed`` and ``cfg`` are accepted for interface compatibility."""
    del seed, cfg
    key = (n, m)
    hit = _CODE_CACHE.get(key)
    if hit is not None:
        _CODE_CACHE.move_to_end(key)
        return hit
    rng = np.random.default_rng([_FAMILY_SEED, n, m])
    var_deg = column_degrees(n, m, distribution_for(n, m))
    n2 = int(np.count_nonzero(var_deg == 2)) if m > 1 else 0
    n2 = min(n2, m - 1)
    total = int(var_deg.sum())
    target = np.full(m, total // m, dtype=np.int64)
    target[rng.permutation(m)[: total - int(target.sum())]] += 1
    load = np.zeros(m, dtype=np.int64)
    load[:n2] += 1
    load[1 : n2 + 1] += 1
    spare = np.maximum(target - load, 0)
    short = total - 2 * n2 - int(spare.sum())  # tiny codes only: put the rest anywhere
    if short > 0:
        spare += np.bincount(rng.integers(0, m, short), minlength=m)
    sockets = np.repeat(np.arange(m, dtype=np.int64), spare)[: total - 2 * n2]
    rng.shuffle(sockets)
    edge_col = np.empty(len(sockets), dtype=np.int64)
    width = max(1, int(np.bincount(sockets, minlength=m).max(initial=0)))
    _deal_sockets(
        var_deg,
        n2,
        sockets,
        _STAIR_GAP,
        edge_col,
        np.full(m, -1, dtype=np.int64),
        np.empty((m, width, 3), dtype=np.int32),
        np.zeros(m, dtype=np.int64),
        np.zeros(3, dtype=np.int64),
    )
    stair = np.arange(n2, dtype=np.int64)
    rows = np.concatenate([np.column_stack([stair, stair + 1]).ravel(), sockets])
    cols = np.concatenate([np.repeat(stair, 2), edge_col])
    # SciPy's COO -> CSR conversion (a stable counting sort by row: the columns, given in
    # nondecreasing order, stay sorted in each row) sums a repeated edge (possible only when m
    # is tiny) into one entry, which is then set back to 1.
    h = sp.csr_matrix((np.ones(len(rows), dtype=np.uint8), (rows, cols)), shape=(m, n))
    h.data[:] = 1
    h.indptr = h.indptr.astype(np.int32, copy=False)
    h.indices = h.indices.astype(np.int32, copy=False)
    _CODE_CACHE[key] = h
    while len(_CODE_CACHE) > 32:
        _CODE_CACHE.popitem(last=False)
    return h


def syndrome(h: sp.csr_matrix, bits: Bits) -> Bits:
    """H x over GF(2): SciPy's sparse product in uint8 (the row sums wrap modulo 256, which
    keeps their parity), then the low bit."""
    return (h @ np.ascontiguousarray(bits, dtype=np.uint8)) & np.uint8(1)


def reveal_count(n: int, qber: float, round_index: int, cfg: LdpcConfig) -> int:
    """Bits disclosed in reveal round r: d0 (1 + r // 3) with d0 = reveal_fraction n h(Q) (a
    fixed step in efficiency); the growth bounds the rounds when the QBER was underestimated."""
    d0 = max(1, math.ceil(cfg.reveal_fraction * n * binary_entropy(min(max(qber, 1e-4), 0.5))))
    return d0 * (1 + round_index // 3)


def check_count(n: int, qber: float, cfg: LdpcConfig) -> int:
    """m ~ f0 n h(Q) with f0 = start_efficiency + start_slope / sqrt(n h(Q)) (the finite-length
    gap shrinks as 1/sqrt of the syndrome length), rounded down to a geometric grid of step
    ``rate_step`` (so that frames with slightly different QBER estimates share a code), at least
    1 and at most n - 1."""
    nh = n * binary_entropy(min(max(qber, 1e-4), 0.5))
    want = (cfg.start_efficiency + cfg.start_slope / math.sqrt(max(nh, 1.0))) * nh
    if want <= 1.0:
        return 1
    step = math.log1p(cfg.rate_step)
    m = math.ceil(math.exp(math.floor(math.log(want) / step + 1e-9) * step) - 1e-9)
    return int(min(n - 1, max(1, m)))


def _decode_frame(
    row_ptr: NDArray[np.int32],
    col: NDArray[np.int32],
    target: Bits,
    post: NDArray[np.float32],
    msg: NDArray[np.float32],
    cfg: LdpcConfig,
) -> tuple[bool, int]:
    """Run (or continue) the one-frame kernel with the configured stopping rules."""
    ok, iterations = layered_bp_frame(
        row_ptr,
        col,
        target,
        post,
        msg,
        cfg.max_iter,
        cfg.stall_iterations,
        1.0 - cfg.min_progress,
        PHI_TABLE,
        PHI_INV_STEP,
        frame_workspace(cfg.max_iter),
    )
    return bool(ok), int(iterations)


class LdpcBob:
    """Bob's decoder for one frame; keeps his BP state between reveal rounds (warm start)."""

    def __init__(self, bits: Bits, h: sp.csr_matrix, s_alice: Bits, qber: float, cfg: LdpcConfig):
        self.y = np.ascontiguousarray(bits, dtype=np.uint8)
        self.n = len(bits)
        self.cfg = cfg
        self.row_ptr = h.indptr.astype(np.int32, copy=False)
        self.col = h.indices.astype(np.int32, copy=False)
        self.target = (s_alice ^ syndrome(h, self.y)).astype(np.uint8)
        self.prior_llr = prior_llr(qber)
        self.post = np.full(self.n, self.prior_llr, dtype=np.float32)
        self.msg = np.zeros(len(self.col), dtype=np.float32)
        self.revealed = np.zeros(self.n, dtype=bool)
        self.done = False
        self.iterations = 0

    def decode(self) -> bool:
        """Run (or continue) BP; True when the syndrome is satisfied."""
        ok, iters = _decode_frame(
            self.row_ptr, self.col, self.target, self.post, self.msg, self.cfg
        )
        self.iterations += iters
        self.done = bool(ok)
        return self.done

    def least_reliable(self, d: int) -> NDArray[np.int64]:
        """The d positions (not yet revealed) with the smallest posterior |LLR|."""
        return _least_reliable(self.post, self.revealed, d)

    def learn(self, positions: NDArray[np.int64], alice_bits: Bits) -> None:
        """Fix disclosed positions: the error there is now known exactly. The posterior keeps
        the check messages (warm start) with the prior replaced by +-LLR_CLAMP."""
        _learn(self.post, self.revealed, self.y, self.prior_llr, positions, alice_bits)

    @property
    def corrected(self) -> Bits:
        """Bob's frame after correction (the hard decision of the posterior)."""
        return self.y ^ (self.post < 0).astype(np.uint8)


def prior_llr(qber: float) -> np.float32:
    """Channel LLR log((1 - p) / p) of a BSC with the estimated QBER (p kept in [1e-4, 0.45])."""
    p = min(max(qber, 1e-4), 0.45)
    return np.float32(math.log((1 - p) / p))


def _least_reliable(
    post: NDArray[np.float32], revealed: NDArray[np.bool_], d: int
) -> NDArray[np.int64]:
    """The d positions (not revealed) with the smallest |posterior LLR|, sorted."""
    llr = np.abs(post)
    llr[revealed] = np.inf
    d = min(d, len(post) - int(np.count_nonzero(revealed)))
    idx = np.argpartition(llr, d - 1)[:d] if d > 0 else np.zeros(0, np.int64)
    return np.sort(idx).astype(np.int64)


def _learn(
    post: NDArray[np.float32],
    revealed: NDArray[np.bool_],
    y: Bits,
    prior: np.float32,
    positions: NDArray[np.int64],
    alice_bits: Bits,
) -> None:
    """Replace the prior at disclosed positions by +-LLR_CLAMP (the error there is known)."""
    if np.any(revealed[positions]):
        raise ValueError("position revealed twice")
    revealed[positions] = True
    e_known = alice_bits ^ y[positions]
    post[positions] += np.where(e_known == 1, -LLR_CLAMP, LLR_CLAMP).astype(np.float32) - prior


#: Fewest busy frames worth a run of the lanes kernel: 16 lanes at ~0.8 (n = 1e4) to ~1.3 ns
#: (1e5) per edge and frame cost as much as ~3.3-5 frames at ~3.9 ns on their own (4 and 5
#: measured the same within the noise). The kernel returns when fewer are still busy.
LANES_MIN_BUSY = 5


class _LaneBatch:
    """BP state of up to LANES frames that share one code, one frame per lane (arrays of shape
    (n, LANES), (edges, LANES), (m, LANES)); lane j holds frame ``frames[j]``, unused lanes an
    all-zero syndrome with known bits (they converge at once and cost nothing extra)."""

    def __init__(self, row_ptr: NDArray[np.int32], col: NDArray[np.int32], n: int):
        self.row_ptr, self.col, self.n = row_ptr, col, n
        self.frames: list[int] = []
        self.post = np.full((n, LANES), LLR_CLAMP, dtype=np.float32)
        self.msg = np.zeros((len(col), LANES), dtype=np.float32)
        self.target = np.zeros((len(row_ptr) - 1, LANES), dtype=np.uint8)
        self.solved = np.zeros(LANES, dtype=bool)
        self.decided = np.zeros((n, LANES), dtype=np.uint8)
        self.iterations = np.zeros(LANES, dtype=np.int32)

    def busy(self) -> list[int]:
        """Lanes holding an unsolved frame."""
        return [lane for lane in range(len(self.frames)) if not self.solved[lane]]

    def run(self, lanes: list[int], cfg: LdpcConfig) -> list[int]:
        """Continue BP on ``lanes``; returns those still busy when the kernel gave up on its
        mostly idle vector (fewer than LANES_MIN_BUSY busy lanes left)."""
        active = np.zeros(LANES, dtype=bool)
        active[lanes] = True
        layered_bp_lanes(
            self.row_ptr,
            self.col,
            self.target,
            self.post,
            self.msg,
            active,
            self.solved,
            self.decided,
            self.iterations,
            cfg.max_iter,
            cfg.stall_iterations,
            1.0 - cfg.min_progress,
            LANES_MIN_BUSY,
            *lanes_workspace(cfg.max_iter),
        )
        return [int(lane) for lane in np.flatnonzero(active)]

    def move(self, lane: int, other: _LaneBatch, other_lane: int) -> None:
        """Copy one lane's BP state (not its frame index) into ``other``'s lane."""
        copy_lane(self.post, lane, other.post, other_lane)
        copy_lane(self.msg, lane, other.msg, other_lane)
        other.target[:, other_lane] = self.target[:, lane]
        other.iterations[other_lane] = self.iterations[lane]
        if self.solved[lane]:
            other.solved[other_lane] = True
            other.decided[:, other_lane] = self.decided[:, lane]

    def run_alone(self, lane: int, cfg: LdpcConfig) -> None:
        """Continue BP on one lane with the one-frame kernel."""
        post = self.post[:, lane].copy()
        msg = self.msg[:, lane].copy()
        target = self.target[:, lane].copy()
        ok, iterations = _decode_frame(self.row_ptr, self.col, target, post, msg, cfg)
        self.post[:, lane] = post
        self.msg[:, lane] = msg
        self.iterations[lane] += iterations
        if ok:
            self.solved[lane] = True
            self.decided[:, lane] = post < 0


class LdpcBobFrames:
    """Bob's decoders for all frames of a block, with warm-started state between reveal rounds.

    Frames that share a code (same (n, m)) live in lane batches of the lanes kernel
    (:mod:`qdnet.postprocessing.ldpc_bp`), LANES frames per batch. In a round, a batch with at
    least LANES_MIN_BUSY unsolved frames runs as a whole until fewer than that are still busy;
    those stragglers wait for the next round (see :meth:`decode`) or are pooled, with the
    unsolved frames of sparse batches, into full batches (their state copied in and back) until
    fewer than LANES_MIN_BUSY remain, which finish the round one at a time in the one-frame
    kernel. Codes with fewer than LANES_MIN_BUSY frames, or checks of degree >
    LANES_MAX_CHECK_DEGREE, use one-frame decoders throughout."""

    def __init__(
        self,
        frames: list[Bits],
        codes: list[sp.csr_matrix],
        syndromes: list[Bits],
        qber: float,
        cfg: LdpcConfig,
    ):
        self.cfg = cfg
        self.prior = prior_llr(qber)
        self.y = [np.ascontiguousarray(b, dtype=np.uint8) for b in frames]
        self.revealed = [np.zeros(len(b), dtype=bool) for b in frames]
        self.single: dict[int, LdpcBob] = {}
        self.lane: dict[int, tuple[_LaneBatch, int]] = {}
        self.groups: list[list[_LaneBatch]] = []
        members_by_code: dict[tuple[int, int], list[int]] = {}
        for i, h in enumerate(codes):
            members_by_code.setdefault(h.shape, []).append(i)
        for members in members_by_code.values():
            h = codes[members[0]]
            degree = int(np.diff(h.indptr).max()) if h.shape[0] else 0
            if len(members) < LANES_MIN_BUSY or degree > LANES_MAX_CHECK_DEGREE:
                for i in members:
                    self.single[i] = LdpcBob(frames[i], h, syndromes[i], qber, cfg)
                continue
            row_ptr = h.indptr.astype(np.int32, copy=False)
            col = h.indices.astype(np.int32, copy=False)
            group = []
            for part in np.array_split(np.asarray(members), -(-len(members) // LANES)):
                batch = _LaneBatch(row_ptr, col, h.shape[1])
                for lane, i in enumerate(int(i) for i in part):
                    batch.frames.append(i)
                    batch.post[:, lane] = self.prior
                    batch.target[:, lane] = syndromes[i] ^ syndrome(h, self.y[i])
                    self.lane[i] = (batch, lane)
                group.append(batch)
            self.groups.append(group)

    @property
    def done(self) -> list[bool]:
        """Per frame: syndrome solved."""
        out = []
        for i in range(len(self.y)):
            if i in self.single:
                out.append(self.single[i].done)
            else:
                batch, lane = self.lane[i]
                out.append(bool(batch.solved[lane]))
        return out

    def decode(self, defer: bool = True) -> list[int]:
        """Run (or continue) BP on every unsolved frame; returns the frames that stalled (they
        need reveals). A lane still progressing when its batch's kernel gives up on the mostly
        idle vector is, with ``defer`` and while other frames wait for reveals anyway, left
        unsolved and not returned: it continues in the next round's vector at no idle cost and
        asks for nothing. Otherwise (no frame stalled, or ``defer`` False) such lanes finish the
        round now, pooled into full batches or one at a time."""
        cut: list[tuple[_LaneBatch, int]] = []
        for group in self.groups:
            sparse: list[tuple[_LaneBatch, int]] = []
            for batch in group:
                busy = batch.busy()
                if len(busy) >= LANES_MIN_BUSY:
                    cut += [(batch, lane) for lane in batch.run(busy, self.cfg)]
                else:
                    sparse += [(batch, lane) for lane in busy]
            self._finish(sparse)
        for bob in self.single.values():
            if not bob.done:
                bob.decode()
        progressing = {batch.frames[lane] for batch, lane in cut}
        stalled = [i for i, ok in enumerate(self.done) if not ok and i not in progressing]
        if defer and stalled:
            return stalled
        by_code: dict[int, list[tuple[_LaneBatch, int]]] = {}
        for batch, lane in cut:  # the pool of one code
            by_code.setdefault(id(batch.col), []).append((batch, lane))
        for lanes in by_code.values():
            self._finish(lanes)
        return [i for i, ok in enumerate(self.done) if not ok]

    def _finish(self, pool: list[tuple[_LaneBatch, int]]) -> None:
        """Finish the round of pooled lanes: full batches while there are enough, then one at a
        time."""
        joint = None
        while len(pool) >= LANES_MIN_BUSY:
            chunk, pool = pool[:LANES], pool[LANES:]
            if joint is None:
                first = chunk[0][0]
                joint = _LaneBatch(first.row_ptr, first.col, first.n)
            joint.solved[:] = False  # lanes beyond the chunk keep stale state: not tracked
            for j, (batch, lane) in enumerate(chunk):
                batch.move(lane, joint, j)
            still = joint.run(list(range(len(chunk))), self.cfg)
            for j, (batch, lane) in enumerate(chunk):
                joint.move(j, batch, lane)
            pool += [chunk[j] for j in still]
        for batch, lane in pool:
            batch.run_alone(lane, self.cfg)

    def least_reliable(self, i: int, d: int) -> NDArray[np.int64]:
        """The d unrevealed positions of frame i with the smallest posterior |LLR|."""
        if i in self.single:
            return self.single[i].least_reliable(d)
        batch, lane = self.lane[i]
        return _least_reliable(batch.post[:, lane], self.revealed[i], d)

    def learn(self, i: int, positions: NDArray[np.int64], alice_bits: Bits) -> None:
        """Fix frame i's disclosed positions (see LdpcBob.learn)."""
        if i in self.single:
            self.single[i].learn(positions, alice_bits)
            return
        batch, lane = self.lane[i]
        _learn(batch.post[:, lane], self.revealed[i], self.y[i], self.prior, positions, alice_bits)

    def corrected(self, i: int) -> Bits:
        """Frame i after correction (its decoded pattern, or the current hard decision)."""
        if i in self.single:
            return self.single[i].corrected
        batch, lane = self.lane[i]
        if batch.solved[lane]:
            return self.y[i] ^ batch.decided[:, lane]
        return self.y[i] ^ (batch.post[:, lane] < 0).astype(np.uint8)


def reconcile_frames_local(
    alice: list[Bits], bob: list[Bits], qber: float, seed: int, cfg: LdpcConfig | None = None
) -> tuple[list[Bits], list[int], int, list[bool]]:
    """Both ends of a block in one process, exchanging only public arrays as the networked
    endpoints do (one reveal round for all failing frames). Returns (corrected frames, leaked
    bits per frame, round trips of the block, solved per frame)."""
    cfg = cfg or LdpcConfig()
    codes = [make_code(len(a), check_count(len(a), qber, cfg), seed, cfg) for a in alice]
    syndromes = [syndrome(h, a) for h, a in zip(codes, alice, strict=True)]
    bobs = LdpcBobFrames(bob, codes, syndromes, qber, cfg)
    leak = [h.shape[0] for h in codes]
    trips = 1
    failing = bobs.decode(defer=cfg.max_rounds > 0)
    while failing and trips <= cfg.max_rounds:
        for i in failing:
            pos = bobs.least_reliable(i, reveal_count(len(alice[i]), qber, trips - 1, cfg))
            bobs.learn(i, pos, alice[i][pos])
            leak[i] += len(pos)
        trips += 1
        failing = bobs.decode(defer=trips <= cfg.max_rounds)
    return [bobs.corrected(i) for i in range(len(alice))], leak, trips, bobs.done


def reconcile_local(
    alice: Bits, bob: Bits, qber: float, seed: int, cfg: LdpcConfig | None = None
) -> tuple[Bits, int, int, bool]:
    """One frame, both ends in one process: (corrected, leak, trips, ok)."""
    corrected, leak, trips, ok = reconcile_frames_local([alice], [bob], qber, seed, cfg)
    return corrected[0], leak[0], trips, ok[0]


# ---------------------------------------------------------------------------------------------
# networked endpoints (all frames of a block in the same messages)


async def alice_reconcile(
    chan: AuthenticatedChannel,
    key: Bits,
    frames: list[tuple[int, int]],
    qber: float,
    cfg: LdpcConfig | None = None,
) -> int:
    """Alice: send syndromes, then answer reveal requests until Bob is done. Returns leak."""
    cfg = cfg or LdpcConfig()
    seed = secrets.randbits(63)
    syndromes = []
    leak = 0
    for a, b in frames:
        n = b - a
        h = make_code(n, check_count(n, qber, cfg), seed, cfg)
        syndromes.append(syndrome(h, key[a:b]))
        leak += h.shape[0]
    await chan.send(
        Message(
            MessageKind.EC_SYNDROME,
            fields={"seed": seed, "qber": qber, "counts": [len(s) for s in syndromes]},
            arrays={"s": np.packbits(np.concatenate(syndromes))},
        )
    )
    for _ in range(cfg.max_rounds + 1):
        msg = await chan.recv(MessageKind.EC_REVEAL_REQUEST, MessageKind.EC_RESULT)
        if msg.kind == MessageKind.EC_RESULT:
            return leak
        frame = msg.array("frame", "int32")
        pos = msg.array("pos", "int64", len(frame))
        if len(frame) and (int(frame.min()) < 0 or int(frame.max()) >= len(frames)):
            raise ProtocolError("EC_REVEAL_REQUEST: frame out of range")
        starts = np.asarray([a for a, _ in frames], dtype=np.int64)[frame]
        sizes = np.asarray([b - a for a, b in frames], dtype=np.int64)[frame]
        if len(pos) and (int(pos.min()) < 0 or bool(np.any(pos >= sizes))):
            raise ProtocolError("EC_REVEAL_REQUEST: position out of range")
        if len(np.unique(starts + pos)) != len(pos):
            raise ProtocolError("EC_REVEAL_REQUEST: repeated position")
        bits = key[starts + pos]
        leak += len(bits)
        await chan.send(Message(MessageKind.EC_REVEAL, arrays={"bits": np.packbits(bits)}))
    raise ProtocolError("LDPC: too many reveal rounds")


async def bob_reconcile(
    chan: AuthenticatedChannel,
    key: Bits,
    frames: list[tuple[int, int]],
    cfg: LdpcConfig | None = None,
) -> tuple[Bits, int]:
    """Bob: decode every frame, request least-reliable bits for the failures. (corrected, leak)."""
    cfg = cfg or LdpcConfig()
    msg = await chan.recv(MessageKind.EC_SYNDROME)
    seed = msg.field_int("seed")
    qber = msg.field_float("qber")
    counts_raw = msg.fields.get("counts")
    expected = [check_count(b - a, qber, cfg) for a, b in frames]
    if not isinstance(counts_raw, list) or [int(c) for c in counts_raw] != expected:
        raise ProtocolError("EC_SYNDROME: syndrome lengths do not match the code family")
    total = sum(expected)
    s_all = np.unpackbits(msg.array("s", "uint8", (total + 7) // 8))[:total]
    edges = np.cumsum([0, *expected])
    codes = [make_code(b - a, expected[i], seed, cfg) for i, (a, b) in enumerate(frames)]
    syndromes = [s_all[edges[i] : edges[i + 1]] for i in range(len(frames))]
    bobs = LdpcBobFrames([key[a:b] for a, b in frames], codes, syndromes, qber, cfg)
    leak = total
    failing = bobs.decode(defer=cfg.max_rounds > 0)
    for rnd in range(cfg.max_rounds):
        if not failing:
            break
        req_pos = [
            bobs.least_reliable(i, reveal_count(frames[i][1] - frames[i][0], qber, rnd, cfg))
            for i in failing
        ]
        frame_arr = np.concatenate(
            [np.full(len(pos), i, dtype=np.int32) for i, pos in zip(failing, req_pos, strict=True)]
        )
        pos_arr = np.concatenate(req_pos)
        reply = await chan.request(
            Message(MessageKind.EC_REVEAL_REQUEST, arrays={"frame": frame_arr, "pos": pos_arr}),
            MessageKind.EC_REVEAL,
        )
        bits = np.unpackbits(reply.array("bits", "uint8", (len(pos_arr) + 7) // 8))[: len(pos_arr)]
        leak += len(bits)
        cut = 0
        for i, pos in zip(failing, req_pos, strict=True):
            bobs.learn(i, pos, bits[cut : cut + len(pos)])
            cut += len(pos)
        failing = bobs.decode(defer=rnd + 1 < cfg.max_rounds)
    await chan.send(Message(MessageKind.EC_RESULT, fields={"ok": not failing}))
    corrected = np.concatenate([bobs.corrected(i) for i in range(len(frames))]) if frames else key
    return corrected, leak
