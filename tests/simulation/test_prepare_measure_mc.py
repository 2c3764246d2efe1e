"""Monte Carlo of BB84 / decoy BB84 against the analytic expectation (issue 3, "Done means")."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from qdnet.config import load_link
from qdnet.protocols.link import Link
from qdnet.protocols.records import load_records, save_records
from qdnet.simulation.runner import simulate

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "links"


def link(name: str, *overrides: str) -> Link:
    return load_link(EXAMPLES / f"{name}.yaml", list(overrides))


CASES = [
    ("telecom-dot-bb84", ("channel.length_km=0",), 2_000_000),
    ("telecom-dot-bb84", ("channel.length_km=50",), 10_000_000),
    (
        "telecom-dot-bb84",
        ("channel.length_km=100", "receiver.dark_count_rate_hz=3e4"),
        1_000_000_000,
    ),
    ("telecom-laser-decoy", ("channel.length_km=50",), 5_000_000),
    (
        "telecom-dot-bb84",
        (
            "channel.length_km=20",
            "receiver.dead_time_ns=50",
            "receiver.afterpulse_probability=0.05",
        ),
        3_000_000,
    ),
]


@pytest.mark.parametrize("method", ["pulse", "event"])
@pytest.mark.parametrize(("name", "overrides", "pulses"), CASES)
def test_monte_carlo_matches_analytic(
    name: str, overrides: tuple[str, ...], pulses: int, method: str
) -> None:
    the_link = link(name, *overrides)
    result = simulate(
        the_link, pulses, np.random.default_rng(11), method=method, keep_records=False
    )
    st = result.statistics
    assert sum(st.pulses) == pulses
    assert set(result.deviation_sigma) >= {"gain", "qber_z", "qber_x"} or any(
        key.startswith("gain[") for key in result.deviation_sigma
    )
    for key, value in result.deviation_sigma.items():
        assert abs(value) < 4.0, (key, value, result.to_json())
    # per-intensity class sizes follow the class probabilities
    probs = np.array(st.pulses) / pulses
    expected_probs = (1.0,) if len(st.pulses) == 1 else (0.7, 0.2, 0.1)
    for p, q in zip(probs, expected_probs, strict=True):
        assert abs(p - q) < 4 * np.sqrt(q * (1 - q) / pulses) + 1e-12
    assert result.verdict.verdict == "secret key possible", result.verdict.reason


def test_vacuum_class_yield_is_dark_count_probability() -> None:
    """The vacuum-like decoy's gain is the noise yield Y0 (plus its tiny photon part)."""
    the_link = link(
        "telecom-laser-decoy", "channel.length_km=50", "receiver.dark_count_rate_hz=2e4"
    )
    result = simulate(the_link, 20_000_000, np.random.default_rng(3), keep_records=False)
    st = result.statistics
    assert abs(result.deviation_sigma["gain[2]"]) < 4
    assert st.detections[2] > 100


def test_fixed_seed_reproduces_identical_records(tmp_path: Path) -> None:
    the_link = link("telecom-laser-decoy", "channel.length_km=25")
    runs = []
    for _ in range(2):
        result = simulate(the_link, 1_000_000, np.random.default_rng(7), seed=7)
        runs.append(result)
    a, b = (r.records for r in runs)
    assert a is not None and b is not None
    for party in ("alice", "bob"):
        for column in ("slot", "basis", "bit", "intensity"):
            np.testing.assert_array_equal(
                getattr(getattr(a, party), column), getattr(getattr(b, party), column)
            )
    other = simulate(the_link, 1_000_000, np.random.default_rng(8)).records
    assert other is not None and not np.array_equal(other.alice.slot, a.alice.slot)
    save_records(a, tmp_path / "run")
    back = load_records(tmp_path / "run")
    np.testing.assert_array_equal(back.bob.bit, a.bob.bit)
    assert back.meta.pulses_per_intensity == a.meta.pulses_per_intensity
    assert sum(back.meta.pulses_per_intensity) == 1_000_000


def test_records_are_consistent_with_counts() -> None:
    the_link = link("telecom-dot-bb84", "channel.length_km=10")
    result = simulate(the_link, 2_000_000, np.random.default_rng(5), method="pulse")
    rec = result.records
    assert rec is not None
    assert len(rec.alice) == len(rec.bob) == sum(result.statistics.detections)
    assert np.all(np.diff(rec.bob.slot) > 0)
    assert rec.bob.slot.max() < 2_000_000
    zz = (rec.alice.basis == 0) & (rec.bob.basis == 0)
    assert zz.sum() == result.statistics.zz[0]
    assert (rec.alice.bit[zz] != rec.bob.bit[zz]).sum() == result.statistics.zz_errors[0]


@pytest.mark.parametrize("method", ["pulse", "event"])
def test_chunking_and_workers_do_not_change_records(method: str) -> None:
    the_link = link("telecom-dot-bb84", "channel.length_km=5")
    one = simulate(the_link, 600_000, np.random.default_rng(9), method=method, chunk_pulses=100_000)
    two = simulate(
        the_link, 600_000, np.random.default_rng(9), method=method, chunk_pulses=100_000, workers=2
    )
    assert one.records is not None and two.records is not None
    np.testing.assert_array_equal(one.records.alice.slot, two.records.alice.slot)
    np.testing.assert_array_equal(one.records.bob.bit, two.records.bob.bit)
    assert one.records.meta.pulses_per_intensity == two.records.meta.pulses_per_intensity


@pytest.mark.parametrize("workers", [1, 2])
def test_streamed_records_equal_in_memory_records(tmp_path: Path, workers: int) -> None:
    """``out`` streams the records batch by batch: same files as saving the in-memory records."""
    from qdnet.simulation import prepare_measure

    the_link = link("telecom-laser-decoy", "channel.length_km=0")
    kept = simulate(the_link, 400_000, np.random.default_rng(4), seed=4, chunk_pulses=150_000)
    old = prepare_measure.EVENT_BUFFER
    prepare_measure.EVENT_BUFFER = 1000  # several batches per chunk
    try:
        streamed = simulate(
            the_link,
            400_000,
            np.random.default_rng(4),
            seed=4,
            chunk_pulses=150_000,
            keep_records=False,
            out=tmp_path / "run",
            workers=workers,
        )
    finally:
        prepare_measure.EVENT_BUFFER = old
    assert kept.records is not None and streamed.records is None
    back = load_records(tmp_path / "run")
    assert back.meta == kept.records.meta
    for party in ("alice", "bob"):
        for column in ("slot", "basis", "bit", "intensity"):
            np.testing.assert_array_equal(
                getattr(getattr(back, party), column), getattr(getattr(kept.records, party), column)
            )
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        "alice.npz",
        "bob.npz",
        "meta.json",
        "private",  # the seed (issue 12: not in the public meta.json)
    ]
