"""Entanglement swapping of polarisation-entangled pairs with a linear-optics Bell measurement.

Two pairs, photons (1, 2) and (3, 4), each in a two-qubit state rho (basis HH, HV, VH, VV; for a
quantum dot the biexciton cascade's :meth:`EntangledPairSource.density_matrix`). Photons 2 and 3
meet at a 50:50 beam splitter followed by a polarising beam splitter in each output (four
detectors). A coincidence of H and V in *different* outputs heralds Psi-, in the *same* output
Psi+ (Weinfurter, EPL 25, 559 (1994); Braunstein and Mann, PRA 51, R1727 (1995)); Phi+- are not
resolved, so an ideal measurement succeeds with probability 1/2.

**Partially distinguishable photons.** With single-photon overlap V (their wavepackets' Tr(rho_2
rho_3), see :mod:`qdnet.interference.hom`), the distinguishable part of the pair leaves the beam
splitter like classical particles, so the heralding POVM elements are (e.g. Zopf et al., PRL 123,
160502 (2019), supplement; Basso Basset et al., PRL 123, 160501 (2019))::

    E(Psi-) = (1 + V)/2 |Psi-><Psi-| + (1 - V)/2 |Psi+><Psi+|,   E(Psi+): Psi- and Psi+ swapped.

The swapped state of photons 1 and 4 is ``Tr_23[E_23 (rho_12 x rho_34)]`` (unnormalised: its
trace is the outcome's probability). For two Phi+ inputs, outcome Psi+- heralds Psi+- on (1, 4);
the known correction (X, or XZ, on photon 4) maps it back to Phi+, and the delivered state is the
mixture of both outcomes after correction. **Werner inputs** (weight p on Phi+, the rest white)
give the closed form ``F = p^2 (1 + V)/2 + (1 - p^2)/4`` (tested).

**Noise.** Multi-pair emission is white noise of weight P(2 pairs) / P(1 pair) on each input (the
convention of :meth:`EntangledPairSource.error_budget`). A dark count in a Bell-measurement
detector (probability ``dark_count_rate_hz * window``) together with one real photon (or two
bunched in one detector), or two dark counts, heralds an uncorrelated pair: white noise in
proportion to its probability; a herald is exactly two clicks, so a dark count beside two real
photons vetoes it (:class:`HeraldTerms`). All rates are per attempt (both sources pumped once);
photon 2 and 3 reach the measurement with extraction x channel x ``bsm.efficiency``, photons 1 and
4 are detected at their nodes with extraction x ``receiver.efficiency`` (the fourfold rate; after
a false herald an end photon exists only if its pair does).
The photon-level Monte Carlo of the same measurement is :mod:`qdnet.simulation.swapping`.

A chain of N swaps (N + 1 pairs, no quantum memories) applies the same measurement at every
junction, left to right; every junction must succeed in the same attempt.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

Matrix = NDArray[np.complex128]

_S = 1.0 / math.sqrt(2.0)
#: Bell states in the basis HH, HV, VH, VV.
BELL: dict[str, NDArray[np.complex128]] = {
    "phi+": np.array([_S, 0, 0, _S], dtype=np.complex128),
    "phi-": np.array([_S, 0, 0, -_S], dtype=np.complex128),
    "psi+": np.array([0, _S, _S, 0], dtype=np.complex128),
    "psi-": np.array([0, _S, -_S, 0], dtype=np.complex128),
}
_X = np.array([[0, 1], [1, 0]], dtype=np.complex128)
_Z = np.array([[1, 0], [0, -1]], dtype=np.complex128)
_I2 = np.eye(2, dtype=np.complex128)
#: Local correction on the second qubit that maps the heralded Bell state back to Phi+.
CORRECTION: dict[str, Matrix] = {
    "psi+": np.kron(_I2, _X).astype(np.complex128),
    "psi-": np.kron(_I2, _X @ _Z).astype(np.complex128),
}


def projector(name: str) -> Matrix:
    """|B><B| of a Bell state."""
    vector = BELL[name]
    return np.outer(vector, vector.conj())


def bsm_povm(visibility: float) -> dict[str, Matrix]:
    """The two heralding POVM elements of the linear-optics Bell measurement at overlap V."""
    if not 0.0 <= visibility <= 1.0:
        raise ValueError(f"bsm.hom_visibility must be in [0, 1], got {visibility}")
    plus, minus = projector("psi+"), projector("psi-")
    keep, swap = (1.0 + visibility) / 2.0, (1.0 - visibility) / 2.0
    return {"psi-": keep * minus + swap * plus, "psi+": keep * plus + swap * minus}


def swap_unnormalised(rho_12: Matrix, rho_34: Matrix, element: Matrix) -> Matrix:
    """Tr_23[E_23 (rho_12 x rho_34)] as a 4x4 matrix on (1, 4); its trace is the probability."""
    a = rho_12.reshape(2, 2, 2, 2)  # [i1, i2, j1, j2]
    b = rho_34.reshape(2, 2, 2, 2)  # [i3, i4, j3, j4]
    e = element.reshape(2, 2, 2, 2)  # [x2, x3, y2, y3]
    # sum over the measured photons: <x2 x3| E |b2 b3> rho_a[i1 b2, j1 x2] rho_b[b3 i4, x3 j4]
    out = np.einsum("xybd,ibjx,dkyl->ikjl", e, a, b)
    return out.reshape(4, 4)


def white_mixture(rho: Matrix, weight: float) -> Matrix:
    """(1 - w) rho + w I/4."""
    return (1.0 - weight) * rho + weight * np.eye(4, dtype=np.complex128) / 4.0


def fidelity_to(rho: Matrix, name: str = "phi+") -> float:
    """<B| rho |B> / Tr rho."""
    vector = BELL[name]
    return float((vector.conj() @ rho @ vector).real / np.trace(rho).real)


@dataclass(frozen=True)
class Pair:
    """One entangled-pair link seen by a swap: its state, the probability that it exists per
    attempt, and for each photon the efficiency with which it reaches and fires its detector (a
    Bell-measurement detector for a photon that is swapped, the node's own for an end photon)."""

    density_matrix: Matrix
    pair_probability: float
    multi_pair_weight: float
    left_efficiency: float
    right_efficiency: float
    repetition_rate_hz: float


@dataclass(frozen=True)
class BsmSettings:
    """``bsm:`` of a scenario: detector efficiency, dark counts, coincidence window, overlap V."""

    efficiency: float = 1.0
    dark_count_rate_hz: float = 0.0
    window_ns: float = 1.0
    hom_visibility: float = 1.0

    @property
    def dark_probability(self) -> float:
        """Dark-count probability of one detector in one window."""
        return self.dark_count_rate_hz * self.window_ns * 1e-9


@dataclass(frozen=True)
class SwapOutcome:
    """The delivered (corrected) state of the end photons and what it costs per attempt."""

    density_matrix: Matrix
    fidelity: float
    success_probability_per_attempt: float
    fourfold_probability_per_attempt: float
    outcome_probabilities: dict[str, float]


@dataclass(frozen=True)
class HeraldTerms:
    """Per attempt: how the Bell measurement's four threshold detectors can herald one outcome.

    Each pair exists with ``P(pair)`` and its photon reaches the measurement with efficiency
    ``eta`` (``q = P(pair) eta``). A herald is exactly two clicks in a valid pattern (H and V,
    different outputs: Psi-; same output: Psi+):

    * two real photons, the other two detectors dark-free: ``q_a q_b (1 - p_d)^2`` times the POVM;
    * one real photon (or two bunched in one detector) and a dark count in the one partner
      detector of that outcome, the other two quiet: ``(one + two P_bunch) p_d (1 - p_d)^2``;
    * two dark counts in one of the outcome's two patterns: ``none 2 p_d^2 (1 - p_d)^2``.

    Three or more clicks herald nothing. A false herald carries white noise, and its end photons
    exist only where their pairs do (a pair whose photon missed the measurement still exists with
    ``P(pair)(1 - eta)/(1 - q)``): :meth:`false_with_ends` weighs the state of the end photons.
    """

    pair_left: float
    pair_right: float
    eta_left: float
    eta_right: float
    dark: float

    @classmethod
    def of(cls, left: Pair, right: Pair, bsm: BsmSettings) -> HeraldTerms:
        """The terms for ``left``'s right photon and ``right``'s left photon."""
        return cls(
            pair_left=left.pair_probability,
            pair_right=right.pair_probability,
            eta_left=left.right_efficiency,
            eta_right=right.left_efficiency,
            dark=bsm.dark_probability,
        )

    @property
    def real(self) -> float:
        """Both photons arrive and the two other detectors stay dark."""
        return self.pair_left * self.eta_left * self.pair_right * self.eta_right * self.quiet

    @property
    def quiet(self) -> float:
        """The two detectors outside the pattern stay dark."""
        return (1.0 - self.dark) ** 2

    def false_herald(self, bunched: float) -> float:
        """Probability per attempt of one outcome heralded without two real photons in it."""
        q_a, q_b = self.pair_left * self.eta_left, self.pair_right * self.eta_right
        one = q_a * (1.0 - q_b) + q_b * (1.0 - q_a)
        none = (1.0 - q_a) * (1.0 - q_b)
        return ((one + q_a * q_b * bunched) * self.dark + none * 2.0 * self.dark**2) * self.quiet

    def false_with_ends(self, bunched: float) -> float:
        """The same false heralds, counted only where both end photons exist."""
        q_a, q_b = self.pair_left * self.eta_left, self.pair_right * self.eta_right
        lost_a = self.pair_left * (1.0 - self.eta_left)
        lost_b = self.pair_right * (1.0 - self.eta_right)
        one = q_a * lost_b + q_b * lost_a
        return (
            (one + q_a * q_b * bunched) * self.dark + lost_a * lost_b * 2.0 * self.dark**2
        ) * self.quiet


def swap(left: Pair, right: Pair, bsm: BsmSettings) -> tuple[SwapOutcome, Pair]:
    """One swap: the delivered state and the equivalent pair for the next junction of a chain.

    The delivered state is that of the end photons after a herald, where both exist (what the
    end nodes can measure); ``success_probability_per_attempt`` counts every herald.
    """
    rho_a = white_mixture(left.density_matrix, left.multi_pair_weight)
    rho_b = white_mixture(right.density_matrix, right.multi_pair_weight)
    terms = HeraldTerms.of(left, right, bsm)
    elements = bsm_povm(bsm.hom_visibility)
    swapped = {name: swap_unnormalised(rho_a, rho_b, e) for name, e in elements.items()}
    bunched = max(1.0 - sum(float(np.trace(state).real) for state in swapped.values()), 0.0)
    false_herald, false_with_ends = terms.false_herald(bunched), terms.false_with_ends(bunched)
    delivered = np.zeros((4, 4), dtype=np.complex128)
    probabilities: dict[str, float] = {}
    with_ends = 0.0
    for name, unnormalised in swapped.items():
        real = terms.real * unnormalised
        probabilities[name] = float(np.trace(real).real) + false_herald
        state = real + false_with_ends * np.eye(4, dtype=np.complex128) / 4.0
        with_ends += float(np.trace(state).real)
        fix = CORRECTION[name]
        delivered += fix @ state @ fix.conj().T
    success = sum(probabilities.values())
    rho = delivered / with_ends if with_ends > 0 else np.eye(4, dtype=np.complex128) / 4.0
    outcome = SwapOutcome(
        density_matrix=rho,
        fidelity=fidelity_to(rho),
        success_probability_per_attempt=success,
        fourfold_probability_per_attempt=with_ends * left.left_efficiency * right.right_efficiency,
        outcome_probabilities=probabilities,
    )
    joined = Pair(
        density_matrix=rho,
        pair_probability=with_ends,
        multi_pair_weight=0.0,
        left_efficiency=left.left_efficiency,
        right_efficiency=right.right_efficiency,
        repetition_rate_hz=min(left.repetition_rate_hz, right.repetition_rate_hz),
    )
    return outcome, joined


def swap_chain(pairs: list[Pair], bsm: BsmSettings | list[BsmSettings]) -> list[SwapOutcome]:
    """Swaps along a chain of pairs, left to right (one measurement, or one per junction): the
    outcome after 1, 2, ... N swaps."""
    if len(pairs) < 2:
        raise ValueError("a swap needs at least two pair links (left and right, or segments)")
    junctions = bsm if isinstance(bsm, list) else [bsm] * (len(pairs) - 1)
    if len(junctions) != len(pairs) - 1:
        raise ValueError(f"{len(pairs)} pairs need {len(pairs) - 1} Bell measurements")
    outcomes = []
    current = pairs[0]
    for nxt, settings in zip(pairs[1:], junctions, strict=True):
        outcome, current = swap(current, nxt, settings)
        outcomes.append(outcome)
    return outcomes
