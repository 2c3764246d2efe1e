"""Design of the LDPC ensembles in :data:`qdnet.postprocessing.ldpc.DISTRIBUTIONS`: discretised
density evolution (DE) of sum-product BP on the binary symmetric channel, the BP threshold, and
the iterative linear programme on the variable-degree distribution that produced the classes.

Density evolution follows Richardson and Urbanke, IEEE TIT 47 (2001) 599, discretised as in Chung,
Forney, Richardson and Urbanke, IEEE Comm. Lett. 5 (2001) 58: LLR densities live on a uniform grid
(``Grid``: step and clip), a variable node adds densities (FFT convolution), a check node
combines two densities with the quantised rule R(a, b) = 2 atanh(tanh(a/2) tanh(b/2)) (a lookup
table of grid indices) and a check of degree d applies it d - 1 times (repeated squaring). The
message error probability is P(LLR < 0) + P(LLR = 0) / 2; an ensemble converges at crossover p
when it falls below ``tol``. On the fine grid (step 1/8, clip 25) the (3, 6) regular ensemble has
p* = 0.0840 (0.084 in Richardson and Urbanke 2001).

The optimiser is iterative linear programming in lambda for a fixed check-concentrated rho (Chung
et al. 2001): from a converging DE run record, per iteration l and variable degree d, the error
probability E[l, d] after one variable-node update; maximise the design rate (sum lambda_d / d)
subject to sum_d lambda_d E[l, d] staying below the recorded error plus ``margin`` times its
progress at every iteration, a trust region of +-``delta`` on each lambda_d (halved on a failed
step), the stability condition lambda_2 rho'(1) <= 0.9 / (2 sqrt(p (1 - p))) (Richardson,
Shokrollahi and Urbanke, IEEE TIT 47 (2001) 619) and lambda_2 <= 0.98 * 2 / (mean check degree)
(fewer degree-2 columns than checks: the staircase of :func:`qdnet.postprocessing.ldpc.make_code`).
The classes were searched on the coarse grid (step 1/4, clip 20) from lambda = x^dmax and checked
on the fine grid, e.g. ``optimise(Grid(0.25, 20.0), 0.05, rho_for(19.5), range(2, 31),
{30: 1.0})``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import numba as nb
import numpy as np
from numpy.typing import NDArray
from scipy.optimize import linprog

from qdnet.security.entropy import binary_entropy

Density = NDArray[np.float64]

STABILITY_MARGIN = 0.9
"""lambda_2 rho'(1) is kept at this fraction of the stability bound 1 / (2 sqrt(p (1 - p)))."""
STAIRCASE_FILL = 0.98
"""lambda_2 is kept at this fraction of 2 / (mean check degree) (degree-2 columns < checks)."""


@dataclass(frozen=True)
class Grid:
    """A uniform LLR grid with ``2 K + 1`` points from -clip to +clip and the check-node table."""

    step: float = 0.125
    clip: float = 25.0
    half: int = field(init=False)
    table: NDArray[np.int32] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        half = round(self.clip / self.step)
        x = (np.arange(2 * half + 1) - half) * self.step
        t = np.tanh(x / 2.0)
        prod = np.clip(t[:, None] * t[None, :], -1.0 + 1e-15, 1.0 - 1e-15)
        table = (np.rint(2.0 * np.arctanh(prod) / self.step).astype(np.int64) + half).astype(
            np.int32
        )
        object.__setattr__(self, "half", half)
        object.__setattr__(self, "table", table)

    @property
    def size(self) -> int:
        """Number of grid points."""
        return 2 * self.half + 1


@nb.njit(cache=True)
def _check_combine(pa: Density, pb: Density, table: NDArray[np.int32]) -> Density:
    """Density of R(a, b) for independent a ~ pa, b ~ pb (quantised check-node rule)."""
    n = pa.shape[0]
    out = np.zeros(n)
    for a in range(n):
        x = pa[a]
        if x < 1e-18:
            continue
        row = table[a]
        for b in range(n):
            y = pb[b]
            if y > 0.0:
                out[row[b]] += x * y
    return out


def _check_power(density: Density, times: int, table: NDArray[np.int32]) -> Density:
    """``density`` combined with itself ``times`` >= 1 times by the check rule."""
    result: Density | None = None
    base = density
    while times:
        if times & 1:
            result = base if result is None else _check_combine(result, base, table)
        times >>= 1
        if times:
            base = _check_combine(base, base, table)
    assert result is not None
    return result


def error_probability(density: Density, grid: Grid) -> float:
    """P(LLR < 0) + P(LLR = 0) / 2."""
    return float(density[: grid.half].sum() + 0.5 * density[grid.half])


def channel_density(grid: Grid, crossover: float) -> Density:
    """LLR density of the BSC: +-log((1 - p) / p), split linearly between the two neighbouring
    grid points (the mean is kept)."""
    llr = math.log((1.0 - crossover) / crossover) / grid.step
    low = math.floor(llr)
    weight = llr - low
    density = np.zeros(grid.size)
    for k, w in ((low, 1.0 - weight), (low + 1, weight)):
        density[grid.half + k] += (1.0 - crossover) * w
        density[grid.half - k] += crossover * w
    return density


def rho_for(check_degree: float) -> dict[int, float]:
    """Check-concentrated rho (edge fractions on floor and floor + 1) with this mean degree."""
    low = math.floor(check_degree)
    frac = check_degree - low
    a, b = (1.0 - frac) * low, frac * (low + 1)
    return {low: 1.0} if b < 1e-9 else {low: a / (a + b), low + 1: b / (a + b)}


def design_rate(lam: dict[int, float], rho: dict[int, float]) -> float:
    """1 - (sum rho_d / d) / (sum lambda_d / d)."""
    return 1.0 - sum(r / d for d, r in rho.items()) / sum(w / d for d, w in lam.items())


class _VariableNodes:
    """Variable-node output densities per degree (FFT convolution, tails saturated at the clip)."""

    def __init__(self, grid: Grid, channel: Density, degrees: Iterable[int]) -> None:
        self.grid = grid
        self.degrees = sorted(degrees)
        self.fft_size = 1 << math.ceil(math.log2(max(self.degrees) * (grid.size - 1) + 2))
        self.channel_fft = np.fft.rfft(channel, self.fft_size)

    def outputs(self, check_density: Density) -> list[Density]:
        """Output density of each degree's variable node given the incoming check density."""
        half = self.grid.half
        q_fft = np.fft.rfft(check_density, self.fft_size)
        out = []
        for d in self.degrees:
            full = np.fft.irfft(self.channel_fft * q_fft ** (d - 1), self.fft_size)
            centre = d * half
            clipped = full[centre - half : centre + half + 1].copy()
            clipped[0] += full[: centre - half].sum()
            clipped[-1] += full[centre + half + 1 :].sum()
            clipped = np.maximum(clipped, 0.0)
            out.append(clipped / clipped.sum())
        return out


@dataclass
class DeTrace:
    """One DE run: converged, error probability per iteration (history[0] = channel) and, per
    iteration and variable degree, the error after one variable update (``per_degree``)."""

    converged: bool
    history: list[float]
    per_degree: NDArray[np.float64]


def density_evolution(
    grid: Grid,
    crossover: float,
    lam: dict[int, float],
    rho: dict[int, float],
    degrees: Iterable[int] | None = None,
    max_iter: int = 1000,
    tol: float = 1e-7,
    stall: int = 200,
) -> DeTrace:
    """Sum-product DE of the ensemble (lambda, rho) on a BSC; stops when the error is below
    ``tol`` (converged) or has not improved by 0.01 % for ``stall`` iterations."""
    degrees = sorted(degrees if degrees is not None else lam)
    checks = sorted(rho)
    channel = channel_density(grid, crossover)
    nodes = _VariableNodes(grid, channel, degrees)
    v = channel.copy()
    history = [error_probability(v, grid)]
    per_degree: list[list[float]] = []
    best, since = history[0], 0
    for _ in range(max_iter):
        if len(checks) == 2 and checks[1] == checks[0] + 1:
            low = _check_power(v, checks[0] - 1, grid.table)
            q = rho[checks[0]] * low + rho[checks[1]] * _check_combine(low, v, grid.table)
        else:
            q = np.zeros(grid.size)
            for d in checks:
                q += rho[d] * _check_power(v, d - 1, grid.table)
        q = q / q.sum()
        outs = nodes.outputs(q)
        per_degree.append([error_probability(o, grid) for o in outs])
        v = np.zeros(grid.size)
        for d, o in zip(degrees, outs, strict=True):
            v += lam.get(d, 0.0) * o
        v = v / v.sum()
        err = error_probability(v, grid)
        history.append(err)
        if err < tol:
            return DeTrace(True, history, np.array(per_degree))
        if err < best * 0.9999:
            best, since = err, 0
        else:
            since += 1
            if since > stall:
                break
    return DeTrace(False, history, np.array(per_degree))


def threshold(
    grid: Grid,
    lam: dict[int, float],
    rho: dict[int, float],
    low: float,
    high: float,
    steps: int = 10,
    max_iter: int = 1000,
) -> float:
    """BP threshold p* by bisection on [low, high] (DE converges at low, not at high); returns
    the largest crossover found to converge."""
    for _ in range(steps):
        mid = 0.5 * (low + high)
        if density_evolution(grid, mid, lam, rho, max_iter=max_iter).converged:
            low = mid
        else:
            high = mid
    return low


def efficiency_at_threshold(lam: dict[int, float], rho: dict[int, float], p_star: float) -> float:
    """f* = (1 - R) / h(p*)."""
    return (1.0 - design_rate(lam, rho)) / binary_entropy(p_star)


def optimise(
    grid: Grid,
    crossover: float,
    rho: dict[int, float],
    degrees: Iterable[int],
    lam0: dict[int, float],
    steps: int = 30,
    delta: float = 0.05,
    margin: float = 0.5,
    max_iter: int = 300,
    tol: float = 2e-7,
) -> dict[int, float]:
    """Iterative LP on lambda (module docstring) from ``lam0``, which must converge at
    ``crossover``; returns the highest-rate lambda found that still converges."""
    degrees = sorted(degrees)
    rho1 = sum((d - 1) * r for d, r in rho.items())
    stability = STABILITY_MARGIN / (rho1 * 2.0 * math.sqrt(crossover * (1.0 - crossover)))
    staircase = STAIRCASE_FILL * 2.0 * sum(r / d for d, r in rho.items())
    lam = dict(lam0)
    trace = density_evolution(grid, crossover, lam, rho, degrees, max_iter, tol, stall=60)
    if not trace.converged:
        raise ValueError("optimise: the starting lambda does not converge at this crossover")
    for _ in range(steps):
        hist = np.array(trace.history)
        rows = trace.per_degree.shape[0]
        bound = hist[1 : rows + 1] + margin * np.maximum(hist[:rows] - hist[1 : rows + 1], 0.0)
        keep = (hist[:rows] > 1e-6) & (hist[1 : rows + 1] < hist[:rows])
        bounds = []
        for d in degrees:
            lo, hi = max(0.0, lam.get(d, 0.0) - delta), min(1.0, lam.get(d, 0.0) + delta)
            if d == 2:
                hi = min(hi, stability, staircase)
            bounds.append((lo, max(lo, hi)))
        res = linprog(
            -np.array([1.0 / d for d in degrees]),
            A_ub=trace.per_degree[keep],
            b_ub=bound[keep],
            A_eq=np.ones((1, len(degrees))),
            b_eq=[1.0],
            bounds=bounds,
            method="highs",
        )
        accepted = False
        if res.success and res.x is not None:
            new = {d: float(x) for d, x in zip(degrees, res.x, strict=True) if x > 1e-6}
            total = sum(new.values())
            new = {d: x / total for d, x in new.items()}
            for blend in (1.0, 0.5, 0.25):
                cand = {
                    d: blend * new.get(d, 0.0) + (1.0 - blend) * lam.get(d, 0.0)
                    for d in set(new) | set(lam)
                }
                cand = {d: x for d, x in cand.items() if x > 1e-6}
                cand_trace = density_evolution(
                    grid, crossover, cand, rho, degrees, max_iter, tol, 60
                )
                if cand_trace.converged:
                    if design_rate(cand, rho) > design_rate(lam, rho) + 1e-6:
                        lam, trace, accepted = cand, cand_trace, True
                    break
        if accepted:
            delta = min(0.1, delta * 1.5)
        else:
            delta *= 0.5
            if delta < 2e-3:
                break
    return lam
