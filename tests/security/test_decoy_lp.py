"""Decoy states for a quantum dot (excitation-power decoys) by linear programming."""

import numpy as np
import pytest

from qdnet.keyrate import key_rate_point, sweep
from qdnet.protocols import prepare_measure
from qdnet.security.decoy_lp import single_photon_bounds
from tests.conftest import example_link


@pytest.mark.parametrize("loss_db", [5.0, 20.0, 35.0])
def test_lp_bounds_contain_the_true_single_photon_yield(loss_db: float) -> None:
    link = example_link("telecom-dot-bb84", [f"channel.loss_db={loss_db}"])
    intensities = (0.025, 0.008, 0.0)
    stats = prepare_measure.expected_statistics(link, intensities)
    dists = [link.source.photon_number_distribution(mu) for mu in intensities]
    error_gains = [g * e for g, e in zip(stats.gain, stats.qber_z, strict=True)]
    y1, e1 = single_photon_bounds(dists, stats.gain, error_gains)
    true_y1 = stats.photon_yields[1]
    true_e1 = stats.photon_errors[1] / true_y1
    # Three intensities, three photon numbers: the bound is tight (up to solver tolerance).
    assert y1 == pytest.approx(true_y1, rel=1e-4)
    assert e1 == pytest.approx(true_e1, rel=1e-3)
    assert e1 >= true_e1 * (1 - 1e-6)


def test_lp_with_too_few_decoys_is_conservative() -> None:
    link = example_link("telecom-dot-bb84", ["channel.loss_db=20"])
    stats = prepare_measure.expected_statistics(link, (0.025, 0.0))
    dists = [link.source.photon_number_distribution(mu) for mu in (0.025, 0.0)]
    error_gains = [g * e for g, e in zip(stats.gain, stats.qber_z, strict=True)]
    y1, e1 = single_photon_bounds(dists, stats.gain, error_gains)
    assert y1 < stats.photon_yields[1]
    assert e1 >= stats.photon_errors[1] / stats.photon_yields[1]


def test_dot_decoys_extend_the_reach() -> None:
    # Barnes et al., arXiv:2512.05101 (2025): excitation-power decoys give a dot a loss tolerance
    # an order of magnitude (~10 dB) beyond the non-decoy protocol.
    def max_loss(overrides: list[str]) -> float:
        link = example_link("telecom-dot-bb84", overrides)
        losses = np.arange(20.0, 70.0, 1.0)
        rates = [
            p.secret_bits_per_pulse for p in sweep([(link.with_loss_db(x), None) for x in losses])
        ]
        return float(losses[np.flatnonzero(np.array(rates) > 0)[-1]])

    plain = max_loss([])
    decoy = max_loss(["protocol.kind=decoy-bb84", "source.decoy_intensities=[0.01, 0.0]"])
    assert decoy >= plain + 5


def test_finite_key_dot_decoys_give_key_below_the_asymptotic_rate() -> None:
    # Finite-size dot decoys (the LP bound with Chernoff intervals): once refused, now a key.
    overrides = ["protocol.kind=decoy-bb84", "source.decoy_intensities=[0.01, 0.0]"]
    link = example_link("telecom-dot-bb84", [*overrides, "channel.length_km=100"])
    asymptotic = key_rate_point(link, None)[0].secret_bits_per_pulse
    finite = key_rate_point(link.with_protocol(block_size=1e8), None)[0]
    assert 0 < finite.secret_bits_per_pulse < asymptotic
    assert finite.finite_key_terms["single_photon_key_bits_lower"] > 0
