"""Frequency conversion, the polarisation channel and daylight background against closed forms,
and the prepare-and-measure Monte Carlo with them on the path."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from qdnet.cli.link_reports import source_report
from qdnet.config import ConfigError, load_link
from qdnet.optics.daylight import LIGHT_SPEED_M_S, PLANCK_J_S, Daylight
from qdnet.optics.polarisation import (
    PolarisationChannel,
    concurrence,
    fidelity_phi_plus,
    pair_errors,
)
from qdnet.protocols import bbm92, prepare_measure
from qdnet.simulation.runner import simulate
from qdnet.sources.entangled import EntangledPairSource
from tests.conftest import example_link

PHI_PLUS = np.outer([1, 0, 0, 1], [1, 0, 0, 1]).astype(np.complex128) / 2


def werner(p: float) -> np.ndarray:
    return p * PHI_PLUS + (1 - p) * np.eye(4, dtype=np.complex128) / 4


@pytest.mark.parametrize("visibility", [1.0, 0.9, 0.5, 0.0])
def test_depolarising_one_photon_of_a_pair(visibility: float) -> None:
    # V rho + (1-V) rho_A (x) I/2 on Phi+ is the Werner state of weight V:
    # F = (1 + 3V)/4, errors (1-V)/2, concurrence max(0, (3V-1)/2) (Wootters 1998).
    rho = PolarisationChannel(visibility=visibility).apply_to_second_photon(PHI_PLUS)
    assert np.allclose(rho, werner(visibility))
    assert fidelity_phi_plus(rho) == pytest.approx((1 + 3 * visibility) / 4)
    assert pair_errors(rho) == pytest.approx(((1 - visibility) / 2,) * 2)
    assert concurrence(rho) == pytest.approx(max(0.0, (3 * visibility - 1) / 2), abs=1e-9)


@pytest.mark.parametrize("theta_deg", [0.0, 5.0, 30.0, 45.0, 90.0])
def test_rotation_of_one_photon(theta_deg: float) -> None:
    # (1 (x) R(theta)) Phi+: fidelity <Phi+|1 (x) R|Phi+>^2 = cos^2 theta, both errors sin^2 theta,
    # still maximally entangled (concurrence 1).
    rho = PolarisationChannel(rotation_deg=theta_deg).apply_to_second_photon(PHI_PLUS)
    theta = math.radians(theta_deg)
    assert fidelity_phi_plus(rho) == pytest.approx(math.cos(theta) ** 2)
    assert pair_errors(rho) == pytest.approx((math.sin(theta) ** 2,) * 2)
    assert concurrence(rho) == pytest.approx(1.0, abs=1e-6)


def test_drift_is_the_average_over_gaussian_angles() -> None:
    # E[sin^2 theta] = (1 - exp(-2 s^2) cos 2 theta_0)/2 against a seeded sample average of the
    # rotated state (1e5 angles), and the photon error of the closed form.
    channel = PolarisationChannel(visibility=0.95, rotation_deg=10.0, drift_deg_rms=15.0)
    rng = np.random.default_rng(5)
    angles = rng.normal(math.radians(10.0), math.radians(15.0), 100_000)
    e_rot = float(np.mean(np.sin(angles) ** 2))
    sigma = math.radians(15.0)
    closed = (1 - math.exp(-2 * sigma**2) * math.cos(2 * math.radians(10.0))) / 2
    assert e_rot == pytest.approx(closed, abs=4 * np.std(np.sin(angles) ** 2) / math.sqrt(1e5))
    assert channel.photon_error() == pytest.approx(0.05 / 2 + 0.95 * closed)
    rho = channel.apply_to_second_photon(PHI_PLUS)
    assert pair_errors(rho) == pytest.approx((channel.photon_error(),) * 2)


def test_quantum_dot_pair_after_the_path() -> None:
    # The FSS-phase state (complex coherence) after a depolarising channel: fidelity
    # V F0 + (1-V)/4 (the X-state's marginals are maximally mixed), and keyrate's X error is the
    # density matrix's.
    link = example_link("gaas-dot-bbm92", ["channel.polarisation_visibility=0.9"])
    source = link.source
    assert isinstance(source, EntangledPairSource)
    rho = bbm92.path_density_matrix(link)
    assert fidelity_phi_plus(rho) == pytest.approx(0.9 * source.fidelity() + 0.1 / 4)
    e_z, e_x = bbm92.path_state_errors(link)
    assert e_x == pytest.approx(0.9 * source.qber_x() + 0.05)
    assert e_z == pytest.approx(0.9 * source.qber_z() + 0.05)
    plain = bbm92.expected(example_link("gaas-dot-bbm92"))
    assert bbm92.expected(link).qber_x[0] > plain.qber_x[0] + 0.04


def test_prepare_measure_polarisation_composes_with_misalignment() -> None:
    # One photon per pulse: the channel's flip e_c and the receiver's e_d give e_d(1-e_c) + e_c(1-e_d).
    base = example_link("telecom-dot-bb84")
    link = example_link("telecom-dot-bb84", ["channel.polarisation_visibility=0.96"])
    e_d = base.receiver.misalignment
    assert link.receiver.misalignment == pytest.approx(e_d * 0.98 + 0.02 * (1 - e_d))


def test_conversion_efficiency_wavelength_and_noise() -> None:
    # 780 nm -> 1550 nm: the fibre has the 1550 nm attenuation (0.18 dB/km), the photons pass
    # with the converter's efficiency, and its noise photons (per 1 ns window, at the output)
    # reach each detector as n / window x T x eta_det / 2.
    overrides = [
        "source.wavelength_nm=780",
        "channel.length_km=20",
        "channel.frequency_conversion={efficiency: 0.4, noise_counts_per_gate: 1.0e-5, "
        "output_wavelength_nm: 1550}",
    ]
    link = example_link("telecom-dot-bb84", overrides)
    assert link.channel_loss_db == pytest.approx(20 * 0.18)
    window_s = link.receiver.detector.window_ns * 1e-9
    eta_det = link.receiver.detector.efficiency
    expected_rate = 1e-5 / window_s * 10 ** (-0.36) * eta_det / 2
    plain = example_link("telecom-dot-bb84", ["channel.length_km=20"])
    assert link.background_rate_hz == pytest.approx(plain.background_rate_hz + expected_rate)
    eta, _ = prepare_measure.detection_parameters(link)
    eta_plain, _ = prepare_measure.detection_parameters(plain)
    assert eta == pytest.approx(0.4 * eta_plain)


def test_conversion_on_one_arm_of_a_pair() -> None:
    link = example_link("strobel2024-qfc-fibre")
    eta_a, eta_b = bbm92.arm_transmittances(link)
    eta_det = link.receiver.detector.efficiency
    extraction = 0.05
    assert eta_a == pytest.approx(extraction * eta_det)
    assert eta_b == pytest.approx(extraction * 0.35 * link.channel_transmittance * eta_det)
    assert link.arm_background_rate_hz("a") == 0.0
    assert link.arm_background_rate_hz("b") == pytest.approx(
        1e-6 / 1e-9 * link.channel_transmittance * eta_det / 2
    )


def test_daylight_counts_closed_form() -> None:
    # N = L Omega A d_lambda lambda / (h c), Omega = pi (FOV/2)^2 (Miao et al. 2005, Eq. 1):
    # L = 0.01 W/m^2/sr/nm, Omega = 7.854e-9 sr (100 urad), A = 1.963e-3 m^2 (5 cm), 0.5 nm:
    # 7.71e-14 W, at 785 nm (2.531e-19 J per photon) 3.05e5 photons/s, then x eta_det / 2 per detector.
    sky = Daylight(0.01, 100.0, 0.05, 0.5)
    omega = math.pi * (50e-6) ** 2
    area = math.pi * 0.025**2
    expected = 0.01 * omega * area * 0.5 / (PLANCK_J_S * LIGHT_SPEED_M_S / 785e-9)
    assert sky.photon_rate_hz(785.0) == pytest.approx(expected)
    assert expected == pytest.approx(3.05e5, rel=0.01)
    link = example_link("bassobasset2023-daylight")
    assert link.arm_background_rate_hz("b") == pytest.approx(expected * 0.6 / 2)
    assert link.arm_background_rate_hz("a") == 0.0


def test_daylight_on_both_arms_lowers_the_detected_fidelity() -> None:
    one = source_report(example_link("bassobasset2023-daylight"))
    both = source_report(example_link("bassobasset2023-daylight", ["channel.daylight.arms=both"]))
    dark = source_report(
        example_link("bassobasset2023-daylight", ["channel.daylight.sky_radiance_w_m2_sr_nm=0"])
    )
    assert dark["fidelity_detected"] > one["fidelity_detected"] > both["fidelity_detected"]
    # The detected state mixes in I/4 with the accidental share: F = t F_path + (1 - t)/4.
    t = one["true_coincidence_fraction"]
    assert one["fidelity_detected"] == pytest.approx(t * one["fidelity_after_path"] + (1 - t) / 4)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["channel.frequency_conversion={efficiency: 0.3, output_wavelength_nm: 1550, arms: a}"],
            "arms is for bbm92",
        ),
        (
            ["channel.frequency_conversion={efficiency: 0, output_wavelength_nm: 1550}"],
            "frequency_conversion.efficiency",
        ),
        (
            [
                "channel.daylight={sky_radiance_w_m2_sr_nm: 0.01, field_of_view_urad: 100, "
                "aperture_m: 0.05, filter_nm: 1}"
            ],
            "daylight needs channel.kind free-space",
        ),
        (["channel.polarisation_visibility=1.5"], "channel.polarisation_visibility"),
        (["channel.polarisation_drift_deg_rms=-1"], "channel.polarisation_drift_deg_rms"),
    ],
)
def test_bad_path_elements_name_the_field(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        example_link("telecom-dot-bb84", overrides)


def test_unconverted_arm_cannot_cross_fibre_at_the_converted_wavelength(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="source_position to 0"):
        example_link("strobel2024-qfc-fibre", ["protocol.source_position=0.5"])
    # With an explicit attenuation both arms have it, and any position is allowed.
    example_link(
        "strobel2024-qfc-fibre",
        ["protocol.source_position=0.5", "channel.attenuation_db_per_km=0.2"],
    )


def test_prepare_measure_monte_carlo_with_path_elements() -> None:
    # Converter (efficiency, noise), polarisation channel and the receiver: the Monte Carlo of a
    # prepare-and-measure link agrees with the analytic model within 4 sigma.
    link = example_link(
        "telecom-dot-bb84",
        [
            "channel.length_km=5",
            "channel.frequency_conversion={efficiency: 0.5, noise_counts_per_gate: 2.0e-3, "
            "output_wavelength_nm: 1550}",
            "channel.polarisation_visibility=0.9",
            "channel.polarisation_rotation_deg=5",
        ],
    )
    result = simulate(link, 2_000_000, np.random.default_rng(14))
    assert result.statistics.detections[0] > 5_000
    for key, value in result.deviation_sigma.items():
        assert abs(value) < 4.0, (key, value)


def test_bbm92_monte_carlo_with_symmetric_conversion_and_daylight() -> None:
    # The BBM92 Monte Carlo covers a converter's efficiency and noise and daylight on both arms
    # (each arm's own background; one-arm cases are in tests/simulation/test_bbm92_path_mc.py).
    link = load_link(
        Path(__file__).resolve().parents[2]
        / "examples"
        / "links"
        / "bassobasset2023-daylight.yaml",
        [
            "channel.daylight.arms=both",
            "protocol.source_position=0.5",
            "source.extraction_efficiency=0.3",
            "channel.daylight.sky_radiance_w_m2_sr_nm=0.05",
        ],
    )
    result = simulate(link, 2_000_000, np.random.default_rng(8))
    assert result.statistics.detections[0] > 5_000
    for key, value in result.deviation_sigma.items():
        assert abs(value) < 4.0, (key, value)


def test_drifting_channel_of_the_single_photon_example() -> None:
    # dot-qfc-bb84: V 0.99, rotation 2 deg, drift 3 deg r.m.s.: e_c = (1-V)/2 + V (1 - e^{-2 s^2}
    # cos 4 deg)/2 composed with the receiver's 0.5 %; the fibre has the 1550 nm attenuation.
    link = example_link("dot-qfc-bb84")
    sigma = math.radians(3.0)
    e_rot = (1 - math.exp(-2 * sigma**2) * math.cos(math.radians(4.0))) / 2
    e_c = 0.005 + 0.99 * e_rot
    assert link.receiver.misalignment == pytest.approx(0.005 * (1 - e_c) + e_c * 0.995)
    assert link.channel_loss_db == pytest.approx(50 * 0.18)
    stats = prepare_measure.expected_statistics(link, (0.3,))
    assert stats.qber_z[0] == pytest.approx(link.receiver.misalignment, rel=0.05)


def test_daylight_on_a_prepare_and_measure_receiver() -> None:
    # One path: the sky's counts per detector N eta_det / 2 join the dark counts in each window.
    link = example_link(
        "telecom-dot-bb84",
        [
            "channel.kind=free-space",
            "channel.loss_db=20",
            "channel.daylight={sky_radiance_w_m2_sr_nm: 0.01, field_of_view_urad: 100, "
            "aperture_m: 0.05, filter_nm: 0.5}",
        ],
    )
    photons = Daylight(0.01, 100.0, 0.05, 0.5).photon_rate_hz(1550.0)
    _, noise = prepare_measure.detection_parameters(link)
    assert noise == pytest.approx((10 + photons * 0.8 / 2) * 1e-9)
