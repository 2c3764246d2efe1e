"""Decoy-state bounds for any known photon-number distribution, by linear programming.

For a source whose photon-number distribution p_n^(k) at each intensity k is known (a quantum dot
whose excitation power is changed, Barnes et al., arXiv:2512.05101 (2025); generalised decoy
method of Ma, Qi, Zhao, Lo, PRA 72, 012326 (2005), Sec. IV), the yields Y_n and error yields
E_n = e_n Y_n do not depend on k. Asymptotically the observed gains and error gains fix
``Q_k = sum_n p_n^(k) Y_n`` and ``E_k Q_k = sum_n p_n^(k) E_n``; with ``0 <= E_n <= Y_n <= 1`` a
linear program gives the smallest Y_1 and the largest E_1 consistent with them. The photon numbers
kept are those the source model has (n <= 2 for the dot); the tail beyond is assumed empty, which is
the model's own assumption, not an extra one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import linprog


@dataclass(frozen=True)
class DecoyBounds:
    """Bounds on the per-pulse yields of one basis: Y_1 from below, E_1 = e_1 Y_1 from above."""

    single_photon_yield_lower: float
    single_photon_error_gain_upper: float


def decoy_bounds(
    distributions: Sequence[NDArray[np.float64]],
    gain_interval: Sequence[tuple[float, float]],
    error_gain_interval: Sequence[tuple[float, float]],
    tails: Sequence[float] | None = None,
) -> DecoyBounds | None:
    """Smallest Y_1 and largest E_1 with, for each intensity k, ``sum_n p_n^(k) Y_n + t_k`` in
    ``gain_interval[k]`` and ``sum_n p_n^(k) E_n + t'_k`` in ``error_gain_interval[k]``,
    ``0 <= E_n <= Y_n <= 1`` and the photon numbers beyond the distribution's length in
    ``0 <= t_k, t'_k <= tails[k]`` (the probability mass left out: 0 for the dot's two-photon
    model, the Poisson tail for a laser). An interval of zero width is the asymptotic equality;
    finite keys pass the Chernoff intervals of each observed count
    (:func:`qdnet.security.finite_key.lp_decoy_key_length`). None where no yields fit (the
    observations contradict the source model)."""
    classes = len(distributions)
    size = max(len(d) for d in distributions)
    matrix = np.zeros((classes, size))
    for row, dist in zip(matrix, distributions, strict=True):
        row[: len(dist)] = dist
    tail = np.zeros(classes) if tails is None else np.asarray(tails, dtype=np.float64)
    # Variables: Y_0..Y_{N-1}, E_0..E_{N-1}, t_0..t_{K-1}, t'_0..t'_{K-1}.
    zeros, eye_k = np.zeros_like(matrix), np.eye(classes)
    zeros_k = np.zeros((classes, classes))
    rows = np.block([[matrix, zeros, eye_k, zeros_k], [zeros, matrix, zeros_k, eye_k]])
    # Solve in units of the largest gain so that the solver's absolute tolerances (~1e-7)
    # stay far below the observed values (gains of 1e-5 and less at long distance).
    scale = max(max(up for _, up in gain_interval), 1e-300)
    lower = np.array([lo for lo, _ in (*gain_interval, *error_gain_interval)]) / scale
    upper = np.array([up for _, up in (*gain_interval, *error_gain_interval)]) / scale
    identity = np.eye(size)
    ordering = np.hstack([-identity, identity, np.zeros((size, 2 * classes))])  # E_n - Y_n <= 0
    a_ub = np.vstack([rows, -rows, ordering])
    b_ub = np.concatenate([upper, -lower, np.zeros(size)])
    bounds = [(0.0, 1.0 / scale)] * (2 * size) + [(0.0, t / scale) for t in (*tail, *tail)]

    def solve(objective: NDArray[np.float64]) -> float | None:
        result = linprog(objective, A_ub=a_ub, b_ub=b_ub, bounds=bounds, method="highs")
        if result.status != 0 or result.fun is None:
            return None
        return float(result.fun) * scale

    width = 2 * size + 2 * classes
    minimise_y1 = np.zeros(width)
    minimise_y1[1] = 1.0
    y1 = solve(minimise_y1)
    maximise_e1 = np.zeros(width)
    maximise_e1[size + 1] = -1.0
    e1_gain = solve(maximise_e1)
    if y1 is None or e1_gain is None:
        return None
    return DecoyBounds(max(y1, 0.0), max(-e1_gain, 0.0))


def single_photon_bounds(
    distributions: Sequence[NDArray[np.float64]],
    gains: Sequence[float],
    error_gains: Sequence[float],
) -> tuple[float, float]:
    """(Y1 lower bound, e1 upper bound) from gains Q_k and error gains E_k Q_k per intensity
    (asymptotic: each observation exact)."""
    bounds = decoy_bounds(
        distributions,
        [(g, g) for g in gains],
        [(e, e) for e in error_gains],
    )
    if bounds is None or bounds.single_photon_yield_lower <= 0.0:
        return 0.0, 0.5
    y1 = bounds.single_photon_yield_lower
    return y1, min(0.5, bounds.single_photon_error_gain_upper / y1)


#: What :func:`linked_single_photon_bounds` can bound for one system: Y_1 from below, E_1 from
#: above, Y_1 - E_1 from below or above.
Objective = tuple[int, str]


def linked_single_photon_bounds(
    distributions: Sequence[NDArray[np.float64]],
    systems: Sequence[tuple[Sequence[tuple[float, float]], Sequence[tuple[float, float]]]],
    tails: Sequence[float],
    objectives: Sequence[Objective],
    vacuum_half_error: bool,
) -> list[float] | None:
    """Bounds on single-photon yields of several observables measured on the same pulses.

    Each system s (one of Alice's states measured in one basis) has per-class intervals for its
    gain ``sum_n p_n^(k) Y_n^s + t`` and error gain ``sum_n p_n^(k) E_n^s + t'`` (tails as in
    :func:`decoy_bounds`), ``0 <= E_n^s <= Y_n^s <= 1``; the systems are measured in one basis
    and their "errors" are one outcome. A vacuum pulse carries nothing of Alice's state, so every
    system shares one vacuum yield ``Y_0`` and one ``E_0``; where Alice's bit is uniform and
    independent of the state's vacuum component (a key basis: ``vacuum_half_error``), a vacuum
    click is an error half of the time, ``E_0 = Y_0 / 2`` (what bounds the vacuum yield without
    a vacuum decoy). Single photons and multi-photon pulses are free per system (Eve may tell
    Alice's states apart). ``objectives``: (system, one of ``y1_min``, ``e1_max``, ``c1_min``,
    ``c1_max``; c = Y_1 - E_1); returns each bound, or None where no yields fit."""
    classes = len(distributions)
    size = max(len(d) for d in distributions)
    matrix = np.zeros((classes, size))
    for row, dist in zip(matrix, distributions, strict=True):
        row[: len(dist)] = dist
    n_sys = len(systems)
    # Per system: Y_0..Y_{N-1}, E_0..E_{N-1}, t_0..t_{K-1}, t'_0..t'_{K-1}.
    block = 2 * size + 2 * classes
    width = n_sys * block
    scale = max(max(up for _, up in gains) for gains, _ in systems)
    scale = max(scale, 1e-300)
    rows, lower, upper, eq_rows = [], [], [], []
    for s, (gains, errors) in enumerate(systems):
        y0, e0, t0 = s * block, s * block + size, s * block + 2 * size
        for k in range(classes):
            gain_row = np.zeros(width)
            gain_row[y0 : y0 + size] = matrix[k]
            gain_row[t0 + k] = 1.0
            error_row = np.zeros(width)
            error_row[e0 : e0 + size] = matrix[k]
            error_row[t0 + classes + k] = 1.0
            rows += [gain_row, error_row]
            lower += [gains[k][0], errors[k][0]]
            upper += [gains[k][1], errors[k][1]]
        for n in range(size):
            order = np.zeros(width)
            order[e0 + n], order[y0 + n] = 1.0, -1.0
            eq_rows.append((order, "le"))
        if vacuum_half_error:
            half = np.zeros(width)
            half[y0], half[e0] = 0.5, -1.0
            eq_rows.append((half, "eq"))
        if s > 0:
            for first, mine in ((0, y0), (size, e0)):
                shared = np.zeros(width)
                shared[mine], shared[first] = 1.0, -1.0
                eq_rows.append((shared, "eq"))
    a = np.array(rows)
    a_ub = np.vstack([a, -a, *[r for r, kind in eq_rows if kind == "le"]])
    b_ub = np.concatenate(
        [
            np.array(upper) / scale,
            -np.array(lower) / scale,
            np.zeros(sum(k == "le" for _, k in eq_rows)),
        ]
    )
    a_eq = np.array([r for r, kind in eq_rows if kind == "eq"])
    b_eq = np.zeros(len(a_eq))
    tail = np.asarray(tails, dtype=np.float64)
    per_system = [(0.0, 1.0 / scale)] * (2 * size) + [(0.0, x / scale) for x in (*tail, *tail)]
    bounds = per_system * n_sys
    results = []
    for system, kind in objectives:
        objective = np.zeros(width)
        y1, e1 = system * block + 1, system * block + size + 1
        sign = 1.0 if kind in ("y1_min", "c1_min") else -1.0
        if kind == "y1_min":
            objective[y1] = 1.0
        elif kind == "e1_max":
            objective[e1] = -1.0
        else:
            objective[y1], objective[e1] = sign, -sign
        result = linprog(
            objective, A_ub=a_ub, b_ub=b_ub, A_eq=a_eq, b_eq=b_eq, bounds=bounds, method="highs"
        )
        if result.status != 0 or result.fun is None:
            return None
        results.append(max(0.0, sign * float(result.fun) * scale))
    return results
