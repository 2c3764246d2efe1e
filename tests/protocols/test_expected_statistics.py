"""Analytic statistics against closed forms."""

import math

import pytest

from qdnet.protocols import bb84, bbm92, prepare_measure
from tests.conftest import example_link


def test_single_photon_gain_and_qber_closed_form() -> None:
    link = example_link(
        "telecom-dot-bb84", ["source.g2=0", "receiver.dark_count_rate_hz=0", "channel.loss_db=10"]
    )
    eta = 0.1 * 0.8
    stats = bb84.expected(link, 0.5)
    assert stats.gain[0] == pytest.approx(0.5 * eta)
    assert stats.qber_z[0] == pytest.approx(0.01)


def test_laser_gain_is_poisson_closed_form() -> None:
    # Q = 1 - (1 - p)^2 e^{-mu eta} (Lo, Ma, Chen 2005 with two detectors).
    link = example_link("telecom-laser-decoy", ["channel.loss_db=20"])
    eta = 0.01 * 0.8
    p = 10 * 1e-9
    stats = prepare_measure.expected_statistics(link, (0.5, 0.1))
    for mu, q in zip((0.5, 0.1), stats.gain, strict=True):
        assert q == pytest.approx(1 - (1 - p) ** 2 * math.exp(-mu * eta), rel=1e-12)


def test_bbm92_source_in_the_middle_beats_source_at_alice() -> None:
    # Same total loss; with the source in the middle each arm's singles are higher relative to noise.
    at_alice = example_link("gaas-dot-bbm92", ["channel.loss_db=40", "protocol.source_position=0"])
    middle = example_link("gaas-dot-bbm92", ["channel.loss_db=40", "protocol.source_position=0.5"])
    s_alice, s_middle = bbm92.expected(at_alice), bbm92.expected(middle)
    assert s_middle.true_coincidence_probability == pytest.approx(
        s_alice.true_coincidence_probability, rel=1e-9
    )
    assert s_middle.qber_x[0] < s_alice.qber_x[0]


def test_spdc_multi_pairs_raise_qber_with_brightness() -> None:
    link = example_link(
        "gaas-dot-bbm92",
        [
            "source.kind=spdc",
            "source.mean_photon_number=0.01",
            "source.pair_efficiency=null",
            "channel.loss_db=10",
        ],
    )
    dim, bright = bbm92.expected(link, 0.01), bbm92.expected(link, 0.3)
    assert bright.qber_z[0] > dim.qber_z[0] + 0.02
    assert bright.gain[0] > dim.gain[0]


def test_detected_g2_is_the_source_g2_without_noise() -> None:
    quiet = ["receiver.dark_count_rate_hz=0", "channel.loss_db=20"]
    dot = example_link("telecom-dot-bb84", quiet)
    assert prepare_measure.detected_g2(dot) == pytest.approx(0.036, rel=1e-3)
    laser = example_link("telecom-laser-decoy", quiet)
    assert prepare_measure.detected_g2(laser) == pytest.approx(1.0, rel=1e-3)


def test_a_narrower_gate_lowers_the_detected_g2() -> None:
    # Kupko et al., npj Quantum Inf. 6, 29 (2020): temporal filtering lowers the measured g2(0)
    # toward the source's as it removes uncorrelated counts.
    link = example_link("gated-dot-bb84", ["channel.length_km=150"])
    values = [
        prepare_measure.detected_g2(link.with_gate_ns(gate)) for gate in (None, 3.0, 1.5, 0.5)
    ]
    assert values == sorted(values, reverse=True)
    assert values[-1] > 0.036
    assert values[0] > 2 * 0.036
