"""Each attack's signature in the Monte Carlo statistics, and the verdict it draws (issue 3)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from qdnet.attacks import BeamSplittingTap, InterceptResend, PhotonNumberSplitting, make_attack
from qdnet.attacks.base import ChannelContext
from qdnet.config import load_link
from qdnet.protocols.link import Link
from qdnet.simulation.runner import simulate

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "links"


def link(name: str, *overrides: str) -> Link:
    return load_link(EXAMPLES / f"{name}.yaml", list(overrides))


@pytest.mark.parametrize("method", ["pulse", "event"])
def test_intercept_resend_full_gives_quarter_qber(method: str) -> None:
    the_link = link(
        "telecom-dot-bb84",
        "channel.length_km=20",
        "receiver.misalignment=0",
        "receiver.dark_count_rate_hz=0",
    )
    result = simulate(
        the_link,
        4_000_000,
        np.random.default_rng(1),
        attack=InterceptResend(1.0),
        method=method,
        keep_records=False,
    )
    st = result.statistics
    for errors, sifted in ((st.zz_errors[0], st.zz[0]), (st.xx_errors[0], st.xx[0])):
        assert sifted > 5_000
        sigma = math.sqrt(0.25 * 0.75 / sifted)
        assert abs(errors / sifted - 0.25) < 4 * sigma
    assert result.verdict.verdict == "interception detected"
    assert not result.verdict.key_possible
    assert "qber" in result.verdict.reason or "GLLP" in result.verdict.reason


def test_partial_intercept_resend_scales_qber_and_is_detected() -> None:
    the_link = link("telecom-dot-bb84", "channel.length_km=50")
    result = simulate(
        the_link,
        20_000_000,
        np.random.default_rng(2),
        attack=make_attack("intercept-resend", 0.3),
        keep_records=False,
    )
    expected = 0.3 * 0.25 + result.expected.qber_z[0] * (1 - 0.3 * 0.5)
    st = result.statistics
    assert abs(st.qber_z(0) - expected) < 4 * math.sqrt(expected * (1 - expected) / st.zz[0]) + 2e-3
    assert result.deviation_sigma["qber_z"] > 10
    assert result.verdict.verdict == "interception detected"


def test_pns_on_laser_without_decoys_goes_unnoticed() -> None:
    """Plain laser BB84 at 50 km: PNS keeps gain and QBER exactly where the link puts them."""
    the_link = link(
        "telecom-laser-decoy",
        "channel.length_km=50",
        "protocol.kind=bb84",
        "source.decoy_intensities=[]",
    )
    result = simulate(
        the_link,
        5_000_000,
        np.random.default_rng(4),
        attack=PhotonNumberSplitting(),
        keep_records=False,
    )
    for key, value in result.deviation_sigma.items():
        assert abs(value) < 4.0, (key, value)


def test_pns_is_caught_by_decoy_analysis() -> None:
    the_link = link("telecom-laser-decoy", "channel.length_km=50")
    honest = simulate(the_link, 5_000_000, np.random.default_rng(5), keep_records=False)
    result = simulate(
        the_link,
        5_000_000,
        np.random.default_rng(5),
        attack=PhotonNumberSplitting(),
        keep_records=False,
    )
    # the signal class looks normal ...
    assert abs(result.deviation_sigma["gain[0]"]) < 4
    assert abs(result.deviation_sigma["qber_z[0]"]) < 4
    # ... but the decoy classes no longer fit one single-photon yield
    assert result.deviation_sigma["gain[1]"] < -10
    y1 = result.verdict.estimates["single_photon_yield_lower"]
    assert y1 < 0.2 * honest.verdict.estimates["single_photon_yield_lower"]
    assert honest.verdict.key_possible
    assert result.verdict.verdict == "interception detected"
    assert result.verdict.asymptotic_bits_per_pulse == 0.0
    assert "decoy estimate Y1" in result.verdict.reason


def test_pns_forwarding_matches_signal_gain() -> None:
    the_link = link("telecom-laser-decoy", "channel.length_km=50")
    source = the_link.source
    dist = source.photon_number_distribution(0.5)  # type: ignore[union-attr]
    context = ChannelContext(the_link.channel_transmittance, 0.8, dist)
    table = PhotonNumberSplitting().arrival_table(dist, context)
    honest = 1 - sum(
        p * (1 - the_link.channel_transmittance * 0.8) ** n for n, p in enumerate(dist)
    )
    assert abs((1 - table[0].sum()) - honest) < 1e-12
    t_multi, t1 = PhotonNumberSplitting().forwarding(context)
    assert t1 == 0.0 and 0 < t_multi < 1


def test_beam_splitting_tap_shows_as_gain_deficit() -> None:
    the_link = link("telecom-dot-bb84", "channel.length_km=50")
    result = simulate(
        the_link,
        10_000_000,
        np.random.default_rng(6),
        attack=BeamSplittingTap(0.3),
        keep_records=False,
    )
    ratio = result.statistics.gain(0) / result.expected.gain[0]
    assert abs(ratio - 0.7) < 0.03
    assert result.deviation_sigma["gain"] < -10
    assert result.verdict.verdict == "interception detected"
    assert "gain" in result.verdict.reason


def test_unknown_attack_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown attack"):
        make_attack("teleport")
    with pytest.raises(ValueError, match="fraction"):
        InterceptResend(1.5)
