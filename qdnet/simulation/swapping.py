"""Photon-level Monte Carlo of entanglement swapping (``qdnet simulate SWAP.yaml``).

The analytic model is :mod:`qdnet.interference.swapping`; this module plays the same experiment
attempt by attempt, with event skipping, and counts what the detectors would record:

* **Arrivals.** In each attempt the left pair exists and its photon 2 reaches the Bell
  measurement with probability ``q_a = P(pair) * eta_a``, likewise photon 3 (``q_b``); each of the
  four Bell-measurement detectors fires a dark count with ``p_d``. These six Bernoulli processes
  are sampled as geometric gaps between the attempts where they fire, so the work scales with the
  clicks, not the attempts (no attempt where nothing clicks is ever visited).
* **Clicks.** Two real photons leave the beam splitter as the POVM of the analytic model says
  (a heralding pattern of Psi- or Psi+ with the end-photon results drawn jointly from the Born
  rule, or both in one detector); a lone photon fires a random detector; dark counts add
  clicks. An attempt heralds when exactly two detectors fire in a valid pattern (H and V in
  different outputs: Psi-; in the same output: Psi+; Weinfurter, EPL 25, 559 (1994)).
* **End photons.** The node of each end photon measures in the tomography setting Z, X or Y
  (the same at both nodes, chosen at random per attempt) and detects its photon with the end
  efficiency; a pair whose Bell-measurement photon did not arrive still exists with probability
  ``P(pair)(1 - eta)/(1 - q)``. Multi-pair emission is white noise on a pair, as in the analytic
  model; heralds without two real photons give uncorrelated results.

The result gives herald and fourfold rates, the corrected QBER per basis and the fidelity to
Phi+ estimated from the three correlators, F = (1 + <XX> - <YY> + <ZZ>) / 4, each with its
standard error and its deviation from the analytic model in sigma (they must agree within 4).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from qdnet.interference.swapping import (
    BsmSettings,
    Pair,
    bsm_povm,
    swap,
    swap_unnormalised,
    white_mixture,
)
from qdnet.simulation.sampling import Estimate, bernoulli_positions, binomial_estimate

Matrix = NDArray[np.complex128]
#: Tomography settings: Pauli X, Y, Z.
BASES = ("x", "y", "z")
_PAULI: dict[str, Matrix] = {
    "x": np.array([[0, 1], [1, 0]], dtype=np.complex128),
    "y": np.array([[0, -1j], [1j, 0]], dtype=np.complex128),
    "z": np.array([[1, 0], [0, -1]], dtype=np.complex128),
}
#: Sign of each correlator after the known correction of each outcome (X on photon 4 after Psi+,
#: XZ after Psi-: U^dagger sigma U), and the sign of Phi+'s correlators.
_CORRECTION_SIGN = {"psi-": (-1, 1, -1), "psi+": (1, -1, -1)}
_PHI_PLUS_SIGN = (1, -1, 1)
#: Bell-measurement detectors: 0 c_H, 1 c_V, 2 d_H, 3 d_V. Valid two-click patterns per outcome.
_PATTERNS = {"psi-": ((0, 3), (1, 2)), "psi+": ((0, 1), (2, 3))}
_OUTCOMES = ("psi-", "psi+")
#: Largest number of attempts, and of firing events, handled in one chunk (bounds memory).
CHUNK_ATTEMPTS = 1 << 26
CHUNK_EVENTS = 1 << 23


@dataclass(frozen=True)
class SwapMonteCarlo:
    """Counts and estimates of one swap run."""

    attempts: int
    heralds: dict[str, int]
    fourfolds: int
    herald_probability: Estimate
    fourfold_probability: Estimate
    qber: dict[str, Estimate]
    fidelity: Estimate
    elapsed_s: float

    @property
    def max_deviation_sigma(self) -> float:
        """The largest |deviation| over every figure with data."""
        figures = [self.herald_probability, self.fourfold_probability, self.fidelity]
        deviations = [abs(f.deviation_sigma) for f in [*figures, *self.qber.values()]]
        return max(d for d in deviations if not math.isnan(d))

    def to_json(self) -> dict[str, Any]:
        """JSON of ``qdnet simulate SWAP.yaml --json``."""
        return {
            "attempts": self.attempts,
            "heralds": self.heralds,
            "fourfolds": self.fourfolds,
            "herald_probability": self.herald_probability.to_json(),
            "fourfold_probability": self.fourfold_probability.to_json(),
            "qber": {basis: e.to_json() for basis, e in self.qber.items()},
            "fidelity": self.fidelity.to_json(),
            "max_deviation_sigma": self.max_deviation_sigma,
            "elapsed_s": self.elapsed_s,
            "attempts_per_s": self.attempts / self.elapsed_s if self.elapsed_s > 0 else None,
        }


def _projectors(basis: str) -> tuple[Matrix, Matrix]:
    """The +1 and -1 eigenprojectors of a Pauli operator."""
    pauli = _PAULI[basis]
    identity = np.eye(2, dtype=np.complex128)
    return (identity + pauli) / 2.0, (identity - pauli) / 2.0


def born_table(rho_a: Matrix, rho_b: Matrix, visibility: float) -> NDArray[np.float64]:
    """P(outcome, a, b | basis) for two real photons at the measurement: shape (3 bases, 8).

    Index ``4 k + 2 a + b``: outcome k (0 Psi-, 1 Psi+), end results a, b (0: +1, 1: -1) of the
    tomography setting; the rest of the probability (to 1) is the non-heralding bunched part.
    """
    elements = bsm_povm(visibility)
    table = np.zeros((3, 8))
    for s, basis in enumerate(BASES):
        projectors = _projectors(basis)
        for k, name in enumerate(_OUTCOMES):
            state = swap_unnormalised(rho_a, rho_b, elements[name])
            for a in range(2):
                for b in range(2):
                    operator = np.kron(projectors[a], projectors[b])
                    table[s, 4 * k + 2 * a + b] = max(float(np.trace(operator @ state).real), 0.0)
    return table


def _categorical(
    rng: np.random.Generator, cumulative: NDArray[np.float64], rows: NDArray[np.int64]
) -> NDArray[np.int64]:
    """One draw per row from the categorical distributions ``cumulative[rows]`` (last: rest)."""
    u = rng.random(rows.size)
    return np.asarray((u[:, None] >= cumulative[rows]).sum(axis=1), dtype=np.int64)


def _chunk(
    rng: np.random.Generator,
    attempts: int,
    left: Pair,
    right: Pair,
    bsm: BsmSettings,
    tables: NDArray[np.float64],
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Heralds per outcome, and per (outcome, basis, a == b) the fourfold counts of one chunk."""
    q = (
        left.pair_probability * left.right_efficiency,
        right.pair_probability * right.left_efficiency,
    )
    # Components: 0 photon 2, 1 photon 3, 2..5 dark counts of detectors 0..3.
    fired = [bernoulli_positions(rng, q[0], attempts), bernoulli_positions(rng, q[1], attempts)]
    fired += [bernoulli_positions(rng, bsm.dark_probability, attempts) for _ in range(4)]
    index = np.concatenate(fired)
    component = np.concatenate([np.full(f.size, c, dtype=np.int64) for c, f in enumerate(fired)])
    order = np.argsort(index, kind="stable")
    index, component = index[order], component[order]
    # Attempts with at least two firing components (one click never heralds).
    starts = np.flatnonzero(np.r_[True, index[1:] != index[:-1]])
    counts = np.diff(np.r_[starts, index.size])
    multi = starts[counts >= 2]
    n = multi.size
    heralds = np.zeros(2, dtype=np.int64)
    fourfold = np.zeros((2, 3, 2), dtype=np.int64)
    if n == 0:
        return heralds, fourfold
    present = np.zeros((n, 6), dtype=bool)
    group = np.repeat(np.arange(starts.size), counts)
    keep = np.isin(group, np.flatnonzero(counts >= 2))
    rows = np.searchsorted(multi, starts[group[keep]])
    present[rows, component[keep]] = True
    clicks = present[:, 2:].copy()
    basis = rng.integers(0, 3, size=n)
    a_bit = rng.integers(0, 2, size=n)
    b_bit = rng.integers(0, 2, size=n)
    both = present[:, 0] & present[:, 1]
    lone = present[:, 0] ^ present[:, 1]
    # Two real photons: Born draw of (outcome, a, b) per noise combination and basis.
    if both.any():
        idx = np.flatnonzero(both)
        noisy = (rng.random(idx.size) < left.multi_pair_weight).astype(np.int64) * 2 + (
            rng.random(idx.size) < right.multi_pair_weight
        ).astype(np.int64)
        table_rows = noisy * 3 + basis[idx]
        draw = _categorical(rng, np.cumsum(tables, axis=1), table_rows)
        heralding = draw < 8
        outcome = draw // 4
        pattern = rng.integers(0, 2, size=idx.size)
        det = np.array([[_PATTERNS[o][p] for p in range(2)] for o in _OUTCOMES])
        first = det[np.minimum(outcome, 1), pattern, 0]
        second = det[np.minimum(outcome, 1), pattern, 1]
        bunch = rng.integers(0, 4, size=idx.size)
        first = np.where(heralding, first, bunch)
        second = np.where(heralding, second, bunch)
        clicks[idx, first] = True
        clicks[idx, second] = True
        a_bit[idx] = np.where(heralding, (draw // 2) % 2, a_bit[idx])
        b_bit[idx] = np.where(heralding, draw % 2, b_bit[idx])
    if lone.any():
        idx = np.flatnonzero(lone)
        clicks[idx, rng.integers(0, 4, size=idx.size)] = True
    # Exactly two clicks in a valid pattern herald; the pattern names the outcome.
    two = clicks.sum(axis=1) == 2
    code = clicks[:, 0] * 1 + clicks[:, 1] * 2 + clicks[:, 2] * 4 + clicks[:, 3] * 8
    psi_minus = two & ((code == 9) | (code == 6))
    psi_plus = two & ((code == 3) | (code == 12))
    heralded = psi_minus | psi_plus
    # A Born draw whose pattern survived keeps its results; other heralds are uncorrelated.
    outcome_k = np.where(psi_minus, 0, 1)
    # End photons: exist (pair present) and detected.
    exists_left = present[:, 0] | (
        rng.random(n) < _exists_given_lost(left.pair_probability, left.right_efficiency)
    )
    exists_right = present[:, 1] | (
        rng.random(n) < _exists_given_lost(right.pair_probability, right.left_efficiency)
    )
    detected = (
        exists_left
        & exists_right
        & (rng.random(n) < left.left_efficiency)
        & (rng.random(n) < right.right_efficiency)
    )
    heralds[0] = int(psi_minus.sum())
    heralds[1] = int(psi_plus.sum())
    counted = heralded & detected
    same = (a_bit == b_bit).astype(np.int64)
    np.add.at(fourfold, (outcome_k[counted], basis[counted], same[counted]), 1)
    return heralds, fourfold


def _exists_given_lost(pair_probability: float, efficiency: float) -> float:
    """P(pair exists | its photon did not reach the measurement)."""
    missed = 1.0 - pair_probability * efficiency
    return pair_probability * (1.0 - efficiency) / missed if missed > 0 else 0.0


def _expected_correlators(rho: Matrix) -> dict[str, float]:
    return {b: float(np.trace(np.kron(_PAULI[b], _PAULI[b]) @ rho).real) for b in BASES}


def simulate_swap(
    left: Pair, right: Pair, bsm: BsmSettings, attempts: int, rng: np.random.Generator
) -> SwapMonteCarlo:
    """Run ``attempts`` swap attempts and compare every figure with :func:`swap`."""
    if attempts < 1:
        raise ValueError(f"attempts must be >= 1, got {attempts}")
    started = time.perf_counter()
    rho_a = white_mixture(left.density_matrix, 0.0)
    rho_b = white_mixture(right.density_matrix, 0.0)
    white = np.eye(4, dtype=np.complex128) / 4.0
    tables = np.concatenate(
        [
            born_table(a, b, bsm.hom_visibility)
            for a, b in ((rho_a, rho_b), (rho_a, white), (white, rho_b), (white, white))
        ]
    )
    heralds = np.zeros(2, dtype=np.int64)
    fourfold = np.zeros((2, 3, 2), dtype=np.int64)
    busiest = max(
        left.pair_probability * left.right_efficiency,
        right.pair_probability * right.left_efficiency,
        bsm.dark_probability,
    )
    chunk = int(min(CHUNK_ATTEMPTS, max(1 << 16, CHUNK_EVENTS / max(busiest, 1e-300))))
    done = 0
    while done < attempts:
        size = min(chunk, attempts - done)
        h, f = _chunk(rng, size, left, right, bsm, tables)
        heralds += h
        fourfold += f
        done += size
    elapsed = time.perf_counter() - started
    analytic, _ = swap(left, right, bsm)
    expected_corr = _expected_correlators(analytic.density_matrix)
    total_heralds = int(heralds.sum())
    total_fourfold = int(fourfold.sum())
    herald = binomial_estimate(total_heralds, attempts, analytic.success_probability_per_attempt)
    four = binomial_estimate(total_fourfold, attempts, analytic.fourfold_probability_per_attempt)
    qber: dict[str, Estimate] = {}
    means: dict[str, float] = {}
    variance = 0.0
    for s, basis in enumerate(BASES):
        signed = 0
        n = 0
        for k, name in enumerate(_OUTCOMES):
            same, different = int(fourfold[k, s, 1]), int(fourfold[k, s, 0])
            signed += _CORRECTION_SIGN[name][s] * (same - different)
            n += same + different
        # Standard errors from the analytic value (a binomial's spread under the model tested),
        # so a basis with few errors is not judged by its own lucky count.
        expected = expected_corr[basis]
        means[basis] = signed / n if n else math.nan
        var = (1.0 - expected * expected) / n if n else math.nan
        variance += var
        target = _PHI_PLUS_SIGN[s]
        qber[basis] = Estimate(
            value=(1.0 - target * means[basis]) / 2.0,
            sigma=math.sqrt(var) / 2.0,
            expected=(1.0 - target * expected) / 2.0,
        )
    fidelity_value = (1.0 + means["x"] - means["y"] + means["z"]) / 4.0
    fidelity_sigma = math.sqrt(variance) / 4.0
    return SwapMonteCarlo(
        attempts=attempts,
        heralds={name: int(heralds[k]) for k, name in enumerate(_OUTCOMES)},
        fourfolds=total_fourfold,
        herald_probability=herald,
        fourfold_probability=four,
        qber=qber,
        fidelity=Estimate(fidelity_value, fidelity_sigma, analytic.fidelity),
        elapsed_s=elapsed,
    )
