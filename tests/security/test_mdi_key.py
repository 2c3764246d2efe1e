"""MDI-BB84 key bounds (qdnet.security.mdi): the decoy bounds against the true single-pair figures
of the click model, finite keys against asymptotic ones, the silent-party bound's failure rate."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from qdnet.cli import app
from qdnet.config import load_link
from qdnet.keyrate import key_rate_point, parameter_space
from qdnet.protocols import mdi
from qdnet.protocols.mdi import conditional_gains, decoy_gains
from qdnet.security.mdi import (
    decoy_key_per_pulse,
    tagged_key_per_pulse,
    tagged_pairs,
    vacuum_side_upper,
)
from tests.conftest import EXAMPLES

LASER = EXAMPLES / "telecom-laser-mdi.yaml"
DOT = EXAMPLES / "telecom-dot-mdi.yaml"


@pytest.mark.parametrize("length_km", [0.0, 60.0, 150.0])
def test_decoy_bounds_hold_and_are_tight_for_a_weak_decoy(length_km: float) -> None:
    """Y11^L <= Y11 and e11^U >= e11 (the true figures of a photon pair, from the independent
    photon-number click model at V = 1, e_d = 0), and within 1 % / 0.002 at nu = 1e-4."""
    link = load_link(LASER, [f"channel.length_km={length_km}", "receiver.misalignment=0.0"])
    gain, error = conditional_gains(mdi.relay_view(link), 1.0)
    y11_z, y11_x, e11_x = gain[0, 1, 1], gain[1, 1, 1], error[1, 1, 1] / gain[1, 1, 1]
    for nu, tight in ((0.1, False), (1e-4, True)):
        bound = decoy_key_per_pulse(decoy_gains(link, 0.5, nu), 1.16)
        assert bound.yield_z_lower <= y11_z * (1 + 1e-9)
        assert bound.yield_x_lower <= y11_x * (1 + 1e-9)
        assert bound.error_x_upper >= e11_x * (1 - 1e-9)
        if tight:
            assert bound.yield_z_lower == pytest.approx(y11_z, rel=1e-2)
            assert bound.error_x_upper == pytest.approx(e11_x, abs=2e-3)


def asymptotic_and_finite(path: Path, block: str, distance_km: float) -> tuple[float, float]:
    link = load_link(path, [f"channel.length_km={distance_km}"])
    asymptotic = key_rate_point(link, distance_km)[0].secret_bits_per_pulse
    finite_link = load_link(
        path, [f"channel.length_km={distance_km}", f"protocol.block_size={block}"]
    )
    finite = key_rate_point(finite_link, distance_km)[0].secret_bits_per_pulse
    return asymptotic, finite


@pytest.mark.parametrize(("path", "block"), [(LASER, "1e30"), (DOT, "1e18")])
def test_finite_key_reaches_the_asymptotic_key_at_huge_blocks(path: Path, block: str) -> None:
    asymptotic, finite = asymptotic_and_finite(path, block, 50.0)
    assert asymptotic > 0
    assert 0.99 * asymptotic <= finite <= asymptotic * (1 + 1e-6)


@pytest.mark.parametrize("path", [LASER, DOT])
def test_finite_key_grows_with_the_block(path: Path) -> None:
    rates = [asymptotic_and_finite(path, block, 20.0)[1] for block in ("1e9", "1e11", "1e13")]
    assert 0 < rates[0] < rates[1] < rates[2]


def test_silent_party_bound_fails_no_more_often_than_eps() -> None:
    """V announced pairs with a silent party err with probability 1/2 each; the bound from their
    error count must cover V except with probability <= eps (a fixed V: ``most`` = 1, no union
    bound over the counts Eve could choose, the bound's weakest form)."""
    rng = np.random.default_rng(16)
    eps = 1e-3
    for pairs in (50, 1000, 20000):
        errors = rng.binomial(pairs, 0.5, size=200_000)
        bounds = np.array([vacuum_side_upper(float(m), eps, 1.0) for m in np.unique(errors)])
        covered = dict(zip(np.unique(errors), bounds >= pairs, strict=True))
        failures = np.mean([not covered[m] for m in errors])
        assert failures <= eps


def test_tagged_pairs_of_dim_dots_scale_as_mu_cubed() -> None:
    """P_both ~ g2 mu^3 (one party two photons, the other one): dimming a dot by 10 cuts it by
    1000 while the (1, 1) pairs fall by 100; the silent-party pairs, P(2+) P(0), by 100 x
    (1 - 0.1)/(1 - 0.01)."""
    g2 = 0.05
    bright = tagged_pairs(g2 * 0.1**2 / 2, 0.1, g2 * 0.1**2 / 2, 0.1)
    dim = tagged_pairs(g2 * 0.01**2 / 2, 0.01, g2 * 0.01**2 / 2, 0.01)
    assert bright.both / dim.both == pytest.approx(1000, rel=0.02)
    assert bright.vacuum_side / dim.vacuum_side == pytest.approx(100 * 0.9 / 0.99, rel=1e-9)


def test_dot_key_formula_on_known_numbers() -> None:
    """R = (Q_Z - T_Z)[1 - h(E_X Q_X / (Q_X - T_X))] - Q_Z f h(E_Z), T_B = P_both +
    min(P_vac, 2 E_B Q_B)."""
    tagged = tagged_pairs(1e-4, 0.2, 1e-4, 0.2)
    q_z, e_z, q_x, e_x = 1e-2, 0.01, 1.1e-2, 0.05
    t_z = tagged.both + min(tagged.vacuum_side, 2 * e_z * q_z)
    t_x = tagged.both + min(tagged.vacuum_side, 2 * e_x * q_x)

    def h(x: float) -> float:
        return -x * math.log2(x) - (1 - x) * math.log2(1 - x)

    expected = (q_z - t_z) * (1 - h(e_x * q_x / (q_x - t_x))) - q_z * 1.16 * h(e_z)
    assert tagged_key_per_pulse(q_z, e_z, q_x, e_x, tagged, 1.16) == pytest.approx(expected)


def test_a_poorer_dot_gives_less_key() -> None:
    """Higher g2 or lower indistinguishability costs key at the same distance."""
    base = key_rate_point(load_link(DOT, ["channel.length_km=30"]), 30.0)[0].secret_bits_per_pulse
    for override in ("source.g2=0.2", "source.indistinguishability=0.7"):
        link = load_link(DOT, ["channel.length_km=30", override])
        assert key_rate_point(link, 30.0)[0].secret_bits_per_pulse < base


def test_keyrate_compare_plot_and_json(tmp_path: Path) -> None:
    plot = tmp_path / "mdi.png"
    result = CliRunner().invoke(
        app,
        [
            "keyrate",
            str(DOT),
            "--distance-km",
            "0:100:50",
            "--compare",
            str(LASER),
            "--plot",
            str(plot),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    names = [entry["link"] for entry in document["links"]]
    assert names == ["telecom-dot-mdi", "telecom-laser-mdi"]
    for entry in document["links"]:
        rates = [p["secret_key_rate_bps"] for p in entry["points"]]
        assert len(rates) == 3 and rates[0] > rates[1] > rates[2] > 0
    assert plot.stat().st_size > 10_000
    dot = document["links"][0]["points"][0]["parameters"]
    assert 0.5 < dot["hom_visibility"] < 1.0


@pytest.mark.parametrize(
    ("path", "block", "distance_km"),
    [(LASER, "1e8", 0.0), (LASER, "1e10", 100.0), (LASER, "null", 150.0), (DOT, "1e8", 60.0)],
)
def test_random_sampling_never_beats_the_optimiser(
    path: Path, block: str, distance_km: float
) -> None:
    """Random points of the optimiser's own box never beat its result by more than 1 %."""
    link = load_link(path, [f"protocol.block_size={block}", f"channel.length_km={distance_km}"])
    optimum = key_rate_point(link, distance_km)[0].secret_bits_per_pulse
    space = parameter_space(link)
    lower, upper = space.search_box()
    rng = np.random.default_rng(16)
    points = lower + rng.random((300, len(lower))) * (upper - lower)
    sampled = max(space.evaluate(space.from_search(z)).bits_per_pulse for z in points)
    assert optimum > 0
    assert sampled <= 1.01 * optimum
