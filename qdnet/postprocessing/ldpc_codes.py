"""Parity-check matrices for LDPC syndrome reconciliation: irregular, IRA staircase plus a
greedy progressive-edge-growth placement that avoids 4-cycles.

Structure. m - 1 degree-2 columns form a staircase (column j joins checks j and j + 1), which
has no cycles among degree-2 nodes (the error floor stays low; Jin, Khandekar, McEliece 2000).
The other columns get degrees from a small irregular distribution (mostly 3, a fraction of a
high degree; Elkouss, Leverrier, Alleaume, Boutros, arXiv:0901.2140 use such lambda(x) for the
BSC) and are placed edge by edge in the spirit of PEG (Hu, Eleftheriou, Arnold, IEEE TIT 51
(2005)): each new edge goes to the least-loaded check that is not within distance 2 of the
column (no 4-cycle through it), ties broken at random; only when every such check is
excluded does it fall back to the least-loaded check not yet joined. Check degrees therefore
stay concentrated (within one of each other), as the optimised distributions want. The
placement is compiled with Numba and seeded deterministically, so both ends build the same
matrix from (n, m, structure) alone.
"""

from __future__ import annotations

import numba as nb
import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray


@nb.njit(cache=True)
def _peg_place(
    n: int, m: int, first: int, degrees: NDArray[np.int64], seed: int
) -> tuple[NDArray[np.int32], NDArray[np.int32]]:  # pragma: no cover - compiled
    """Edges (check, column) of the staircase on columns [0, first) plus a 4-cycle-avoiding
    least-loaded placement of columns first..n-1 with the given degrees."""
    np.random.seed(seed)
    total = 2 * first + int(degrees.sum())
    cap = total // m + 16
    c_adj = np.full((m, cap), -1, dtype=np.int32)  # check -> columns
    load = np.zeros(m, dtype=np.int64)
    v_ptr = np.zeros(n + 1, dtype=np.int64)
    for j in range(n):
        v_ptr[j + 1] = v_ptr[j] + (2 if j < first else degrees[j - first])
    v_adj = np.full(v_ptr[n], -1, dtype=np.int32)  # column -> checks
    for j in range(first):
        for c in (j, j + 1):
            v_adj[v_ptr[j] + c - j] = c
            c_adj[c, load[c]] = j
            load[c] += 1
    stamp = np.zeros(m, dtype=np.int64)
    mark = 0
    cnt = np.zeros(total + 2, dtype=np.int64)  # checks per load
    for c in range(m):
        cnt[load[c]] += 1
    minload = 0
    order = np.random.permutation(m).astype(np.int32)
    for j in range(first, n):
        d = degrees[j - first]
        mark += 2  # mark: forbidden (distance <= 2); mark + 1: joined
        for k in range(d):
            best = -1
            best_load = 1 << 60
            while cnt[minload] == 0:
                minload += 1
            start = np.random.randint(m)
            for t in range(m):  # first allowed least-loaded check from a random start
                c = order[(start + t) % m]
                if stamp[c] < mark and load[c] < best_load:
                    best_load = load[c]
                    best = c
                    if best_load == minload:
                        break
            if best < 0:  # everything within distance 2: accept a 4-cycle
                for t in range(m):
                    c = order[(start + t) % m]
                    if stamp[c] == mark + 1:
                        continue
                    if load[c] < best_load:
                        best_load = load[c]
                        best = c
            if best < 0:
                break
            v_adj[v_ptr[j] + k] = best
            if load[best] == c_adj.shape[1]:
                grown = np.full((m, 2 * c_adj.shape[1]), -1, dtype=np.int32)
                grown[:, : c_adj.shape[1]] = c_adj
                c_adj = grown
            c_adj[best, load[best]] = j
            cnt[load[best]] -= 1
            load[best] += 1
            cnt[load[best]] += 1
            # forbid the checks of every column that shares a check with this one
            for u in c_adj[best, : load[best]]:
                for e in range(v_ptr[u], v_ptr[u + 1]):
                    cc = v_adj[e]
                    if cc >= 0 and stamp[cc] < mark:
                        stamp[cc] = mark
            stamp[best] = mark + 1
    rows = np.empty(v_ptr[n], dtype=np.int32)
    cols = np.empty(v_ptr[n], dtype=np.int32)
    e = 0
    for j in range(n):
        for i in range(v_ptr[j], v_ptr[j + 1]):
            if v_adj[i] >= 0:
                rows[e] = v_adj[i]
                cols[e] = j
                e += 1
    return rows[:e], cols[:e]


def column_degrees(
    n: int, m: int, staircase: bool, dist: tuple[tuple[int, float], ...], seed: int
) -> tuple[int, NDArray[np.int64]]:
    """(staircase columns, degrees of the remaining columns) for node fractions ``dist``
    (degree, fraction of the non-staircase columns), rounded so the counts add up."""
    first = min(n, m - 1) if staircase else 0
    rest = n - first
    fr = np.asarray([p for _, p in dist], dtype=np.float64)
    fr = fr / fr.sum()
    counts = np.floor(fr * rest).astype(np.int64)
    counts[0] += rest - int(counts.sum())
    degs = np.repeat(np.asarray([min(d, m) for d, _ in dist], dtype=np.int64), counts)
    np.random.default_rng(seed).shuffle(degs)
    return first, degs


def build(
    n: int, m: int, dist: tuple[tuple[int, float], ...], seed: int, staircase: bool = True
) -> sp.csr_matrix:
    """The m x n parity-check matrix (CSR, int32 indices, sorted columns)."""
    first, degs = column_degrees(n, m, staircase, dist, seed)
    rows, cols = _peg_place(n, m, first, degs, seed & 0x7FFFFFFF)
    h = sp.coo_matrix((np.ones(len(rows), dtype=np.uint8), (rows, cols)), shape=(m, n)).tocsr()
    h.data[:] = 1
    h.sort_indices()
    h.indptr = h.indptr.astype(np.int32)
    h.indices = h.indices.astype(np.int32)
    return h
