"""MDI-BB84 statistics (qdnet.protocols.mdi): the decoy lasers' closed forms against a direct
average over the pulses' relative phase, and the quantum-dot click model against the closed forms
of single photons (ideal key eta_a eta_b / 2, e_X = (1 - V)/2, e_Z = e_d)."""

from __future__ import annotations

import math
from itertools import product
from pathlib import Path

import numpy as np
import pytest

from qdnet.config import ConfigError, load_link
from qdnet.keyrate import key_rate_point
from qdnet.protocols import mdi
from qdnet.protocols.mdi import RelayView, coherent_gains, conditional_gains, single_photon_gains
from tests.conftest import EXAMPLES

ANGLES = {"z": (0.0, 90.0), "x": (45.0, 135.0)}


def phase_averaged_gains(
    arriving_a: float, arriving_b: float, noise: float, points: int = 4000
) -> tuple[float, float, float, float]:
    """Independent computation of the laser gains at e_d = 0: coherent amplitudes through the beam
    splitter and polarising splitters, independent Poisson clicks per detector, averaged over the
    relative phase phi of the two phase-randomised pulses (midpoint rule)."""
    phis = (np.arange(points) + 0.5) * 2 * math.pi / points
    result = {}
    for basis, angles in ANGLES.items():
        gain = error = 0.0
        for bit_a, bit_b in product((0, 1), repeat=2):
            ta, tb = (math.radians(angles[bit]) for bit in (bit_a, bit_b))
            a = math.sqrt(arriving_a) * np.array([math.cos(ta), math.sin(ta)])
            b = math.sqrt(arriving_b) * np.array([math.cos(tb), math.sin(tb)])
            phase = np.exp(1j * phis)[:, None]
            c = (a + b * phase) / math.sqrt(2)
            d = (a - b * phase) / math.sqrt(2)
            intensity = np.abs(np.concatenate([c, d], axis=1)) ** 2  # cH, cV, dH, dV
            silent = (1 - noise) * np.exp(-intensity)
            click = 1 - silent

            def exactly(
                pair: tuple[int, int], click: np.ndarray = click, silent: np.ndarray = silent
            ) -> float:
                p = np.ones(points)
                for j in range(4):
                    p = p * (click[:, j] if j in pair else silent[:, j])
                return float(p.mean())

            minus = exactly((0, 3)) + exactly((1, 2))
            plus = exactly((0, 1)) + exactly((2, 3))
            same = bit_a == bit_b
            wrong = (minus + plus if same else 0.0) if basis == "z" else (minus if same else plus)
            gain += (minus + plus) / 4
            error += wrong / 4
        result[basis] = (gain, error)
    return (*result["z"], *result["x"])


@pytest.mark.parametrize(
    ("arriving_a", "arriving_b", "noise"),
    [(0.05, 0.05, 1e-6), (0.3, 0.01, 1e-3), (0.002, 0.004, 3e-6), (0.5, 0.5, 0.0)],
)
def test_laser_closed_forms_match_a_direct_phase_average(
    arriving_a: float, arriving_b: float, noise: float
) -> None:
    closed = [float(v) for v in coherent_gains(arriving_a, arriving_b, noise, 0.0)]
    direct = phase_averaged_gains(arriving_a, arriving_b, noise)
    np.testing.assert_allclose(closed, direct, rtol=1e-9, atol=1e-15)


def test_laser_x_basis_error_tends_to_a_quarter_plus_half_the_misalignment() -> None:
    """Xu et al. 2013: two coherent pulses give E_X -> 1/4 + e_d/2 at low transmittance without
    dark counts (half the X coincidences come from two photons of one pulse)."""
    for e_d in (0.0, 0.015, 0.05):
        _, _, q_x, eq_x = coherent_gains(1e-4, 1e-4, 0.0, e_d)
        assert float(eq_x / q_x) == pytest.approx(0.25 + e_d / 2, rel=1e-3)


def test_laser_gains_keep_precision_near_zero_intensity() -> None:
    """The decoy bounds difference gains at intensities near 0: the closed forms must not cancel
    (Q_X of two weak pulses ~ mu'^2/4 without noise)."""
    _, _, q_x, _ = coherent_gains(1e-7, 1e-7, 0.0, 0.0)
    assert float(q_x) == pytest.approx((2e-7) ** 2 / 4, rel=1e-5)


def view(eta_a: float = 0.3, eta_b: float = 0.2, noise: float = 0.0, e_d: float = 0.0) -> RelayView:
    return RelayView(eta_a=eta_a, eta_b=eta_b, noise=noise, misalignment=e_d)


ONE_PHOTON = np.array([0.0, 1.0, 0.0])


def test_perfect_single_photons_succeed_with_half_the_pairs_and_no_error() -> None:
    gains = single_photon_gains(view(), ONE_PHOTON, ONE_PHOTON, 1.0)
    assert gains.gain_z == pytest.approx(0.3 * 0.2 / 2, rel=1e-12)
    assert gains.gain_x == pytest.approx(0.3 * 0.2 / 2, rel=1e-12)
    assert gains.error_gain_z == pytest.approx(0.0, abs=1e-15)
    assert gains.error_gain_x == pytest.approx(0.0, abs=1e-15)


@pytest.mark.parametrize("overlap", [1.0, 0.93, 0.7, 0.0])
@pytest.mark.parametrize("e_d", [0.0, 0.02])
def test_x_error_of_a_single_photon_pair_is_v_e_d_plus_half_one_minus_v(
    overlap: float, e_d: float
) -> None:
    """HOM-type BSM: e_X = V e_d + (1 - V)/2 (at e_d = 0, (1 - V)/2); e_Z = e_d whatever V."""
    gains = single_photon_gains(view(e_d=e_d), ONE_PHOTON, ONE_PHOTON, overlap)
    assert gains.qber_x == pytest.approx(overlap * e_d + (1 - overlap) / 2, rel=1e-10, abs=1e-14)
    assert gains.qber_z == pytest.approx(e_d, rel=1e-10, abs=1e-14)
    assert gains.gain_x == pytest.approx(0.3 * 0.2 / 2, rel=1e-12)


def test_single_photon_pair_agrees_with_the_laser_model_s_one_one_yield() -> None:
    """Two independent models: Y11 of the photon-number model (one photon each, identical) and
    the (n, m) = (1, 1) coefficient of the laser closed forms, e^(a+b) Q_ab / (a b) as a, b -> 0."""
    relay = view(eta_a=0.1, eta_b=0.05, noise=1e-5)
    gain, error = conditional_gains(relay, 1.0)
    small = 1e-7  # the (1, 2) terms add a relative ~ small x Y12 e12 / (Y11 e11) to the errors
    scaled = []
    for a, b in [(small, small), (small, 0.0), (0.0, small), (0.0, 0.0)]:
        q_z, _, q_x, eq_x = coherent_gains(relay.eta_a * a, relay.eta_b * b, relay.noise, 0.0)
        scaled.append(np.array([q_z, q_x, eq_x]) * math.exp(a + b))
    y11 = (scaled[0] - scaled[1] - scaled[2] + scaled[3]) / small**2
    assert y11[0] == pytest.approx(gain[0, 1, 1], rel=1e-3)
    assert y11[1] == pytest.approx(gain[1, 1, 1], rel=1e-3)
    assert y11[2] == pytest.approx(error[1, 1, 1], rel=1e-3)


def test_relay_position_splits_the_loss() -> None:
    link = load_link(EXAMPLES / "telecom-laser-mdi.yaml", ["protocol.relay_position=0.25"])
    relay = mdi.relay_view(link)
    loss = 100 * 0.18
    assert relay.eta_a == pytest.approx(0.8 * 10 ** (-0.25 * loss / 10))
    assert relay.eta_b == pytest.approx(0.8 * 10 ** (-0.75 * loss / 10))


def test_ideal_dots_give_the_ideal_key() -> None:
    """Perfect single photons (g2 = 0, one photon per pulse), V = 1, no noise: the asymptotic key
    per pulse pair is eta_a eta_b / 2 (every BSM in Z carries one secret bit, Lo-Curty-Qi)."""
    overrides = [
        "source.mean_photon_number=1.0",
        "source.g2=0.0",
        "source.indistinguishability=1.0",
        "source.spectral_diffusion_uev=0.0",
        "receiver.dark_count_rate_hz=0.0",
        "receiver.misalignment=0.0",
        "protocol.relay_position=0.3",
        "protocol.optimise_intensity=false",
    ]
    link = load_link(EXAMPLES / "telecom-dot-mdi.yaml", overrides)
    point, _ = key_rate_point(link, 100.0)
    relay = mdi.relay_view(link)
    assert point.secret_bits_per_pulse == pytest.approx(relay.eta_a * relay.eta_b / 2, rel=1e-9)
    assert point.parameters["hom_visibility"] == pytest.approx(1.0)


def test_dot_visibility_comes_from_the_two_sources_figures(tmp_path: Path) -> None:
    """Bob's dot from another file: a detuned dot lowers the overlap, raises e_X and lowers key."""
    text = (EXAMPLES / "telecom-dot-mdi.yaml").read_text()
    (tmp_path / "bob.yaml").write_text(
        text.replace("wavelength_nm: 1550", "wavelength_nm: 1550.001")
    )
    (tmp_path / "alice.yaml").write_text(
        text.replace(
            "  error_correction_efficiency", "  bob_source: bob.yaml\n  error_correction_efficiency"
        )
    )
    same = load_link(EXAMPLES / "telecom-dot-mdi.yaml")
    detuned = load_link(tmp_path / "alice.yaml")
    assert same.mdi is not None and detuned.mdi is not None
    assert detuned.mdi.photon_overlap < same.mdi.photon_overlap
    near = key_rate_point(same.with_distance_km(20), 20)[0]
    far = key_rate_point(detuned.with_distance_km(20), 20)[0]
    assert far.qber["x"] > near.qber["x"]
    assert far.secret_bits_per_pulse < near.secret_bits_per_pulse


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["source.kind=entangled-pair", "source.pair_efficiency=0.5"],
            "mdi-bb84 needs source.kind",
        ),
        (["receiver.gate_ns=0.5"], "receiver.gate_ns is not modelled for protocol.kind mdi-bb84"),
        (["protocol.key_bases=both"], "key_bases both is not modelled"),
        (["protocol.relay_position=1.5"], "protocol.relay_position"),
        (["protocol.bob_source=missing.yaml"], "no such file"),
    ],
)
def test_bad_mdi_links_are_refused_by_field(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_link(EXAMPLES / "telecom-dot-mdi.yaml", overrides)


def test_bob_source_must_match_alice_s_kind_and_rate(tmp_path: Path) -> None:
    laser = EXAMPLES / "telecom-laser-mdi.yaml"
    with pytest.raises(ConfigError, match="differs from Alice's single-photon"):
        load_link(EXAMPLES / "telecom-dot-mdi.yaml", [f"protocol.bob_source={laser}"])
    other = tmp_path / "fast.yaml"
    other.write_text(laser.read_text().replace("80.0e6", "1.0e9"))
    with pytest.raises(ConfigError, match="repetition_rate_hz 1e\\+09 differs"):
        load_link(laser, [f"protocol.bob_source={other}"])


def test_relay_fields_are_refused_on_other_protocols() -> None:
    with pytest.raises(ConfigError, match="are for mdi-bb84"):
        load_link(EXAMPLES / "telecom-dot-bb84.yaml", ["protocol.relay_position=0.3"])
