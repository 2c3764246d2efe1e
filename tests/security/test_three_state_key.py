"""Finite-key security of the three-state time-bin protocol (Rusca et al., PRA 98, 052336 (2018))."""

from dataclasses import replace

import pytest
from scipy.stats import binom

from qdnet.protocols import three_state as model
from qdnet.protocols.prepare_measure import detection_parameters
from qdnet.security.finite_key import expectation_lower, expectation_upper
from qdnet.security.three_state import (
    ThreeStateCounts,
    asymptotic_phase_error,
    decoy_estimates,
    key_length,
)
from tests.conftest import example_link

PULSES = 1e9


def counts(
    z_plus_share: float = 0.5, x_error: float = 0.02, yield_: float = 1e-3
) -> ThreeStateCounts:
    """A block: 1e9 pulses per class, each detected with ``yield_`` (half of it in X); a Z state
    measured in X gives "+" with ``z_plus_share``, |+> gives "-" with ``x_error``."""
    x_yield = yield_ / 2
    return ThreeStateCounts(
        key_pulses=PULSES,
        key_detections=PULSES * yield_,
        z_in_x_pulses=PULSES,
        z_in_x_plus=PULSES * x_yield * z_plus_share,
        z_in_x_detections=PULSES * x_yield,
        x_in_x_pulses=PULSES,
        x_in_x_plus=PULSES * x_yield * (1 - x_error),
        x_in_x_minus=PULSES * x_yield * x_error,
        multiphoton_probability=1e-7,
    )


def test_honest_block_gives_key() -> None:
    result = key_length(counts(), leak_ec_bits=1.16 * 1e6 * 0.1, eps_sec=1e-10, eps_cor=1e-15)
    assert result.bits > 0
    assert 0.02 < result.terms["phase_error_rate_upper"] < 0.04


def test_attack_seen_only_through_the_z_states_is_charged_as_phase_error() -> None:
    # |+> shows no error at all, but the Z states land on "+" 3/4 of the time: the virtual |->
    # then gives "+" with yield Y+_0 + Y+_1 - Y+_+ = (1.5 - 1) x the |+> yield, a 25 % phase
    # error. An analysis that took the |+> error rate as the phase error would see none.
    attacked = counts(z_plus_share=0.75, x_error=0.0)
    assert asymptotic_phase_error(attacked) == pytest.approx(0.25, rel=1e-3)
    result = key_length(attacked, leak_ec_bits=0.0, eps_sec=1e-10, eps_cor=1e-15)
    assert result.terms["phase_error_upper"] > 0.25
    # Z states always on "+": the virtual |-> is indistinguishable from |+>, no key at all.
    result = key_length(counts(1.0, 0.0), leak_ec_bits=0.0, eps_sec=1e-10, eps_cor=1e-15)
    assert result.bits == 0 and result.terms["phase_error_upper"] == 0.5


def test_intercept_resend_in_the_x_basis_leaves_no_key() -> None:
    # Eve measuring every photon in Z: |+> gives a random X outcome (50 % error).
    result = key_length(counts(x_error=0.5), leak_ec_bits=0.0, eps_sec=1e-10, eps_cor=1e-15)
    assert result.bits == 0


def test_eps_split_moves_budget() -> None:
    from qdnet.security.finite_key import EpsSplit

    base = key_length(counts(), 1e4, 1e-10, 1e-15)
    shifted = key_length(counts(), 1e4, 1e-10, 1e-15, EpsSplit(0.5, 0.5))
    assert shifted.terms["penalty_bits"] < base.terms["penalty_bits"]
    assert shifted.terms["phase_error_upper"] > base.terms["phase_error_upper"]


def test_negative_counts_are_refused() -> None:
    with pytest.raises(ValueError, match="key_detections must be >= 0"):
        ThreeStateCounts(1.0, -1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0)


@pytest.mark.parametrize("mean", [3.0, 50.0, 2000.0])
def test_expectation_bounds_fail_with_at_most_eps(mean: float) -> None:
    # Binomial counts of mean ``mean``: the bound misses the mean with probability <= eps.
    eps, trials = 1e-3, 10**7
    p = mean / trials
    observed = range(int(binom.ppf(1e-9, trials, p)), int(binom.isf(1e-9, trials, p)) + 1)
    miss_upper = sum(binom.pmf(x, trials, p) for x in observed if expectation_upper(x, eps) < mean)
    miss_lower = sum(binom.pmf(x, trials, p) for x in observed if expectation_lower(x, eps) > mean)
    assert miss_upper <= eps and miss_lower <= eps


def test_decoy_bounds_contain_the_true_single_photon_figures() -> None:
    # A laser with a weak and a vacuum decoy (0.4, 0.05, 0) at 100 km, exact expectations and a
    # finite block: the
    # LP's single-photon Z yield is below the true one and its phase error above the true
    # single-photon phase error, at least (1 - V)/2.
    link = example_link(
        "telecom-dot-three-state",
        [
            "source.kind=weak-coherent",
            "source.g2=null",
            "source.mean_photon_number=0.4",
            "source.decoy_intensities=[0.05, 0.0]",
            "receiver.interferometer_visibility=0.98",
            "channel.length_km=100",
        ],
    )
    sources = model.class_sources(link)
    results = [
        model.expected(replace(link, source=s), s.mean_photon_number or 0.0) for s in sources
    ]
    dists, tails = model.class_distributions(sources)
    eta, noise = detection_parameters(link)
    true_y1, _ = link.receiver.averaged_click_probabilities(eta, lambda x: x, noise)
    for pulses, eps in ((1.0, None), (1e12, 1e-12)):
        classes = [r.counts(pulses, 0.5) for r in results]
        est = decoy_estimates(classes, dists, tails, eps)
        assert 0 < est.key_yield <= true_y1
        assert (1 - 0.98) / 2 <= est.phase_error_rate < 0.1
