"""Entanglement swapping: the partial trace against explicit matrices, Werner closed forms."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from qdnet.interference.swapping import (
    BELL,
    BsmSettings,
    Pair,
    bsm_povm,
    fidelity_to,
    projector,
    swap,
    swap_chain,
    swap_unnormalised,
)
from qdnet.sources.entangled import EntangledPairSource


def _werner(p: float) -> np.ndarray:
    return p * projector("phi+") + (1 - p) * np.eye(4) / 4


def _pair(rho: np.ndarray, eta: float = 1.0, probability: float = 1.0) -> Pair:
    return Pair(rho.astype(np.complex128), probability, 0.0, eta, eta, 1e6)


def _explicit(rho_12: np.ndarray, rho_34: np.ndarray, element: np.ndarray) -> np.ndarray:
    """The same partial trace with 16 x 16 matrices: Tr_23[(I x E x I)(rho_12 x rho_34)]."""
    joint = np.kron(rho_12, rho_34)
    operator = np.kron(np.kron(np.eye(2), element), np.eye(2))
    full = (operator @ joint).reshape([2] * 8)  # i1 i2 i3 i4 j1 j2 j3 j4
    return np.einsum("abcdebcf->adef", full).reshape(4, 4)


def test_partial_trace_matches_explicit_matrices() -> None:
    rng = np.random.default_rng(1)

    def random_state() -> np.ndarray:
        m = rng.normal(size=(4, 4)) + 1j * rng.normal(size=(4, 4))
        rho = m @ m.conj().T
        return rho / np.trace(rho)

    a, b = random_state(), random_state()
    for element in (*bsm_povm(0.7).values(), projector("phi-")):
        assert np.allclose(swap_unnormalised(a, b, element), _explicit(a, b, element), atol=1e-14)


@pytest.mark.parametrize("p", [1.0, 0.9, 0.6])
@pytest.mark.parametrize("v", [1.0, 0.8, 0.0])
def test_werner_closed_form(p: float, v: float) -> None:
    """F = p^2 (1 + V)/2 + (1 - p^2)/4; an ideal measurement succeeds half the time."""
    outcome, _ = swap(
        _pair(_werner(p), 0.5, 0.3), _pair(_werner(p), 0.4, 0.2), BsmSettings(hom_visibility=v)
    )
    assert outcome.fidelity == pytest.approx(p * p * (1 + v) / 2 + (1 - p * p) / 4, abs=1e-12)
    assert outcome.success_probability_per_attempt == pytest.approx(0.3 * 0.2 * 0.5 * 0.4 * 0.5)
    assert outcome.outcome_probabilities["psi-"] == pytest.approx(
        outcome.outcome_probabilities["psi+"]
    )


def test_chain_of_werner_pairs() -> None:
    """Ideal measurements: k swaps of Werner(p) pairs give Werner(p^(k+1))."""
    p = 0.95
    outcomes = swap_chain([_pair(_werner(p))] * 4, BsmSettings())
    for k, outcome in enumerate(outcomes, start=1):
        assert outcome.fidelity == pytest.approx((1 + 3 * p ** (k + 1)) / 4, abs=1e-12)
        assert outcome.success_probability_per_attempt == pytest.approx(0.5**k)


def test_cascade_inputs_with_fine_structure() -> None:
    """Two pairs with independent FSS phases: the swapped coherence is c_a c_b*, so F = (1 + |c|^2)/2."""
    fidelities = []
    for fss in (0.0, 0.5, 1.0, 2.0):
        source = EntangledPairSource(pair_efficiency=1.0, repetition_rate_hz=8e7, fss_uev=fss)
        rho = source.density_matrix()
        outcome, _ = swap(_pair(rho), _pair(rho), BsmSettings())
        fidelities.append(outcome.fidelity)
        assert outcome.fidelity == pytest.approx((1 + abs(source.coherence) ** 2) / 2, abs=1e-12)
    assert fidelities[0] == pytest.approx(1.0)
    assert all(a > b for a, b in itertools.pairwise(fidelities))


def test_dark_counts_herald_white_noise() -> None:
    """Exactly two clicks herald: one real photon (or two bunched ones) with the partner detector's
    dark count, or two dark counts; a dark count beside two real photons vetoes the herald."""
    bsm = BsmSettings(dark_count_rate_hz=1e5, window_ns=1.0)
    eta = 0.01
    outcome, _ = swap(_pair(_werner(1.0), eta), _pair(_werner(1.0), eta), bsm)
    p_dark, quiet = 1e-4, (1 - 1e-4) ** 2
    two, one, none = eta * eta, 2 * eta * (1 - eta), (1 - eta) ** 2
    true = two * quiet * 0.5  # Psi- and Psi+ each herald a quarter of the Bell pairs
    false = 2 * ((one + two * 0.5) * p_dark * quiet + none * 2 * p_dark**2 * quiet)
    expected = (true * 1.0 + false * 0.25) / (true + false)
    assert outcome.fidelity == pytest.approx(expected, rel=1e-9)
    assert outcome.success_probability_per_attempt == pytest.approx(true + false, rel=1e-12)


def test_bell_vectors_and_bad_visibility() -> None:
    for name, vector in BELL.items():
        assert np.vdot(vector, vector).real == pytest.approx(1.0)
        assert fidelity_to(projector(name), name) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="hom_visibility must be in"):
        bsm_povm(1.2)
