"""Monte Carlo of BBM92 (time tags, coincidences) against the analytic expectation (issue 3)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from qdnet.attacks import make_attack
from qdnet.config import load_link
from qdnet.protocols.link import Link
from qdnet.simulation.runner import simulate

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "links"


def link(*overrides: str) -> Link:
    return load_link(EXAMPLES / "gaas-dot-bbm92.yaml", list(overrides))


BRIGHT = ("source.extraction_efficiency=0.2",)
CASES = [
    BRIGHT,
    (*BRIGHT, "channel.length_km=2", "source.fss_uev=2", "receiver.dark_count_rate_hz=1e4"),
    (
        *BRIGHT,
        "source.multi_pair_probability=0.05",
        "source.spin_scattering_time_ns=5",
        "source.background_fraction=0.05",
        "protocol.source_position=0.2",
    ),
    (
        *BRIGHT,
        "source.fss_uev=3",
        "source.time_resolved=true",
        "source.detector_time_resolution_ps=50",
        "receiver.jitter_ps=50",
    ),
]


@pytest.mark.parametrize("overrides", CASES)
def test_bbm92_matches_analytic(overrides: tuple[str, ...]) -> None:
    result = simulate(link(*overrides), 3_000_000, np.random.default_rng(21))
    assert result.statistics.detections[0] > 5_000
    for key, value in result.deviation_sigma.items():
        assert abs(value) < 4.0, (key, value, result.to_json())
    assert result.records is not None
    assert len(result.records.alice) == result.statistics.detections[0]
    tags = result.extra_files["timetags"]
    assert len(tags["alice_tag_ps"]) == result.statistics.extra["singles_alice"]


def test_spdc_bbm92_matches_analytic() -> None:
    spdc = load_link(
        EXAMPLES / "gaas-dot-bbm92.yaml",
        [
            "source.kind=spdc",
            "source.mean_photon_number=0.05",
            "source.pair_efficiency=null",
            "source.extraction_efficiency=1",
            "source.multi_pair_probability=0",
            "channel.length_km=1",
            "source.intrinsic_error=0.01",
        ],
    )
    result = simulate(spdc, 1_000_000, np.random.default_rng(3))
    assert result.statistics.extra["accidental_coincidences"] > 100
    for key, value in result.deviation_sigma.items():
        assert abs(value) < 4.0, (key, value)


def test_intercept_resend_on_one_arm() -> None:
    the_link = link(
        *BRIGHT,
        "receiver.misalignment=0",
        "source.fss_uev=0",
        "source.multi_pair_probability=0",
        "receiver.dark_count_rate_hz=0",
    )
    result = simulate(
        the_link,
        2_000_000,
        np.random.default_rng(4),
        attack=make_attack("intercept-resend", 1.0, protocol="bbm92"),
    )
    st = result.statistics
    for errors, n in ((st.zz_errors[0], st.zz[0]), (st.xx_errors[0], st.xx[0])):
        assert abs(errors / n - 0.25) < 4 * math.sqrt(0.25 * 0.75 / n)
    assert result.verdict.verdict == "interception detected"
    assert not result.verdict.key_possible


def test_bbm92_seed_reproducible() -> None:
    one = simulate(link(*BRIGHT), 500_000, np.random.default_rng(5))
    two = simulate(link(*BRIGHT), 500_000, np.random.default_rng(5))
    assert one.records is not None and two.records is not None
    np.testing.assert_array_equal(one.records.alice.bit, two.records.alice.bit)
    np.testing.assert_array_equal(
        one.extra_files["timetags"]["bob_tag_ps"], two.extra_files["timetags"]["bob_tag_ps"]
    )


def test_bbm92_streamed_records_and_tags_equal_in_memory(tmp_path: Path) -> None:
    from qdnet.protocols.records import load_records

    kept = simulate(link(*BRIGHT), 500_000, np.random.default_rng(6), seed=6)
    streamed = simulate(
        link(*BRIGHT),
        500_000,
        np.random.default_rng(6),
        seed=6,
        keep_records=False,
        out=tmp_path / "run",
    )
    assert kept.records is not None and streamed.records is None
    back = load_records(tmp_path / "run")
    assert back.meta == kept.records.meta
    np.testing.assert_array_equal(back.bob.bit, kept.records.bob.bit)
    np.testing.assert_array_equal(back.alice.basis, kept.records.alice.basis)
    with np.load(tmp_path / "run" / "timetags.npz") as tags:
        for name, array in kept.extra_files["timetags"].items():
            np.testing.assert_array_equal(tags[name], array)
