"""Properties every key-rate curve must have."""

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qdnet.keyrate import key_rate_point, sweep
from qdnet.protocols import prepare_measure
from qdnet.security.asymptotic import decoy_vacuum_weak_bounds
from qdnet.security.entropy import binary_entropy as h
from tests.conftest import example_link

LINKS = ["telecom-dot-bb84", "telecom-laser-decoy", "gaas-dot-bbm92"]
FINITE = ["protocol.block_size=1e7"]


def loss_curve(name: str, overrides: list[str], losses: np.ndarray) -> list[float]:
    link = example_link(name, overrides)
    return [p.secret_bits_per_pulse for p in sweep([(link.with_loss_db(x), None) for x in losses])]


@pytest.mark.parametrize("name", LINKS)
@pytest.mark.parametrize("overrides", [[], FINITE])
def test_rate_below_plob_falls_with_loss_and_dies(name: str, overrides: list[str]) -> None:
    losses = np.arange(0.5, 80.0, 2.5)
    link = example_link(name, overrides)
    points = sweep([(link.with_loss_db(x), None) for x in losses])
    rates = np.array([p.secret_bits_per_pulse for p in points])
    plob = np.array([p.plob_bits_per_pulse for p in points])
    assert np.all(rates <= plob)
    assert rates[0] > 0
    assert np.all(np.diff(rates) <= rates[:-1] * 1e-6), "rate must not rise with loss"
    dead = np.flatnonzero(rates == 0)
    assert dead.size > 0, "every link has a maximum tolerable loss below 80 dB"
    assert np.all(rates[dead[0] :] == 0)


@pytest.mark.parametrize("name", LINKS)
def test_finite_key_below_asymptotic_and_converging(name: str) -> None:
    # Free basis bias: asymptotically q -> 1 and finite keys come from the Z basis only, so both
    # describe the same protocol (with a fixed bias the asymptotic rate also keys the X basis).
    link = example_link(name, ["channel.loss_db=10", "protocol.basis_bias=null"])
    asymptotic = key_rate_point(link, None)[0].secret_bits_per_pulse
    finite = [
        key_rate_point(link.with_protocol(block_size=n), None)[0].secret_bits_per_pulse
        for n in (1e5, 1e6, 1e8, 1e10, 1e12, 1e16)
    ]
    assert all(f <= asymptotic for f in finite)
    assert all(b >= a for a, b in itertools.pairwise(finite)), finite
    # Lim et al.'s Hoeffding terms scale with the whole block, so decoy keys converge slowest.
    assert finite[-1] >= (0.9 if name == "telecom-laser-decoy" else 0.99) * asymptotic


def test_single_photon_rate_approaches_ideal_as_g2_vanishes() -> None:
    link = example_link(
        "telecom-dot-bb84",
        ["source.g2=1e-9", "channel.loss_db=20", "protocol.optimise_intensity=false"],
    )
    stats = prepare_measure.expected_statistics(link, (link.source.mean_photon_number,))
    ideal = stats.gain[0] * (1 - h(stats.qber_x[0]) - 1.16 * h(stats.qber_z[0]))
    assert key_rate_point(link, None)[0].secret_bits_per_pulse == pytest.approx(ideal, rel=1e-6)
    worse = example_link(
        "telecom-dot-bb84", ["channel.loss_db=20", "protocol.optimise_intensity=false"]
    )
    assert key_rate_point(worse, None)[0].secret_bits_per_pulse < ideal


def test_decoy_bound_approaches_infinite_decoy() -> None:
    link = example_link("telecom-laser-decoy", ["channel.loss_db=20"])
    mu = 0.5
    gaps = []
    for nu in (0.2, 0.05, 0.01, 0.001):
        stats = prepare_measure.expected_statistics(link, (mu, nu, 0.0))
        y1, e1 = decoy_vacuum_weak_bounds(
            mu, nu, stats.gain[0], stats.qber_z[0], stats.gain[1], stats.qber_z[1], stats.gain[2]
        )
        true_y1 = stats.photon_yields[1]
        true_e1 = stats.photon_errors[1] / true_y1
        assert y1 <= true_y1 * (1 + 1e-9) and e1 >= true_e1 * (1 - 1e-9)
        gaps.append(1 - y1 / true_y1)
    assert gaps == sorted(gaps, reverse=True)
    assert gaps[-1] < 2e-3


def test_laser_without_decoys_is_far_worse_than_with() -> None:
    decoy = example_link("telecom-laser-decoy", ["channel.loss_db=20"])
    plain = example_link("telecom-laser-decoy", ["channel.loss_db=20", "protocol.kind=bb84"])
    assert (
        key_rate_point(plain, None)[0].secret_bits_per_pulse
        < 0.2 * key_rate_point(decoy, None)[0].secret_bits_per_pulse
    )


@settings(max_examples=25, deadline=None)
@given(
    loss=st.floats(0.1, 60),
    g2=st.floats(0.0, 0.2),
    mu=st.floats(0.01, 0.9),
    dark=st.floats(0, 1e4),
    misalignment=st.floats(0, 0.1),
)
def test_any_single_photon_link_respects_plob(
    loss: float, g2: float, mu: float, dark: float, misalignment: float
) -> None:
    link = example_link(
        "telecom-dot-bb84",
        [
            f"source.g2={g2}",
            f"source.mean_photon_number={mu}",
            f"receiver.dark_count_rate_hz={dark}",
            f"receiver.misalignment={misalignment}",
            "receiver.efficiency=1.0",
        ],
    ).with_loss_db(loss)
    point = key_rate_point(link, None)[0]
    assert 0 <= point.secret_bits_per_pulse <= point.plob_bits_per_pulse
    assert math.isfinite(point.secret_key_rate_bps)
