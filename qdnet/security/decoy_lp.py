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

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import linprog


def single_photon_bounds(
    distributions: Sequence[NDArray[np.float64]],
    gains: Sequence[float],
    error_gains: Sequence[float],
) -> tuple[float, float]:
    """(Y1 lower bound, e1 upper bound) from gains Q_k and error gains E_k Q_k per intensity."""
    size = max(len(d) for d in distributions)
    matrix = np.zeros((len(distributions), size))
    for row, dist in zip(matrix, distributions, strict=True):
        row[: len(dist)] = dist
    # Variables: Y_0..Y_{N-1}, E_0..E_{N-1}.
    zeros = np.zeros_like(matrix)
    equality = np.block([[matrix, zeros], [zeros, matrix]])
    # Solve in units of the largest gain so that the solver's absolute tolerances (~1e-7)
    # stay far below the observed values (gains of 1e-5 and less at long distance).
    scale = max(max(gains), 1e-300)
    observed = np.concatenate([np.asarray(gains, float), np.asarray(error_gains, float)]) / scale
    identity = np.eye(size)
    inequality = np.hstack([-identity, identity])  # E_n - Y_n <= 0
    bounds = [(0.0, 1.0 / scale)] * (2 * size)

    def solve(objective: NDArray[np.float64]) -> float | None:
        result = linprog(
            objective,
            A_ub=inequality,
            b_ub=np.zeros(size),
            A_eq=equality,
            b_eq=observed,
            bounds=bounds,
            method="highs",
        )
        if result.status != 0 or result.fun is None:
            return None
        return float(result.fun) * scale

    minimise_y1 = np.zeros(2 * size)
    minimise_y1[1] = 1.0
    y1 = solve(minimise_y1)
    maximise_e1 = np.zeros(2 * size)
    maximise_e1[size + 1] = -1.0
    e1_gain = solve(maximise_e1)
    if y1 is None or e1_gain is None or y1 <= 0.0:
        return 0.0, 0.5
    return y1, min(0.5, -e1_gain / y1)
