"""Monte Carlo of MDI-QKD against the analytic model, class pair by class pair."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from qdnet.cli import app
from qdnet.config import load_link
from qdnet.simulation.mdi import simulate_mdi

LINKS = Path(__file__).resolve().parents[2] / "examples" / "links"


def _link(name: str, *overrides: str):  # type: ignore[no-untyped-def]
    return load_link(LINKS / f"{name}.yaml", ["channel.length_km=20", *overrides])


@pytest.mark.parametrize(
    ("name", "pulses", "overrides"),
    [
        ("telecom-dot-mdi", 1e8, ("source.mean_photon_number=0.2",)),
        ("telecom-dot-mdi", 1e8, ("source.mean_photon_number=0.2", "source.g2=0.3")),
        ("telecom-laser-mdi", 3e6, ()),
        (
            "telecom-laser-mdi",
            6e6,
            ("receiver.dark_count_rate_hz=3e5", "source.decoy_intensities=[0.2]"),
        ),
    ],
)
def test_monte_carlo_agrees_with_analytic_within_4_sigma(
    name: str, pulses: float, overrides: tuple[str, ...]
) -> None:
    result = simulate_mdi(_link(name, *overrides), int(pulses), np.random.default_rng(3))
    assert sum(row.successes for row in result.rows) > 20_000
    assert result.max_deviation_sigma < 4.0, result.to_json()


def test_monte_carlo_sees_the_two_photon_interference() -> None:
    """The comparison can fail: a run with worse dots judged against the better ones' model."""
    good = _link("telecom-dot-mdi", "source.mean_photon_number=0.2")
    worse = _link(
        "telecom-dot-mdi", "source.mean_photon_number=0.2", "source.indistinguishability=0.6"
    )
    ran = simulate_mdi(worse, int(1e8), np.random.default_rng(5))
    model = simulate_mdi(good, 1, np.random.default_rng(5))
    x_ran = next(r for r in ran.rows if r.basis == "x")
    x_model = next(r for r in model.rows if r.basis == "x")
    assert (x_ran.qber.value - x_model.qber.expected) / x_ran.qber.sigma > 10
    assert abs(x_ran.qber.deviation_sigma) < 4


def test_seed_reproduces_the_run() -> None:
    link = _link("telecom-laser-mdi")
    a = simulate_mdi(link, 200_000, np.random.default_rng(9)).to_json()
    b = simulate_mdi(link, 200_000, np.random.default_rng(9)).to_json()
    assert a["per_class"] == b["per_class"]


def test_laser_run_needs_its_intensities(tmp_path: Path) -> None:
    text = (
        (LINKS / "telecom-laser-mdi.yaml").read_text().replace("  decoy_intensities: [0.05]\n", "")
    )
    path = tmp_path / "no-decoys.yaml"
    path.write_text(text)
    result = CliRunner().invoke(app, ["simulate", str(path), "--pulses", "1e4"])
    assert result.exit_code != 0
    assert "source.decoy_intensities" in result.output
    assert "Traceback" not in result.output


def test_cli_json_and_refusals() -> None:
    path = LINKS / "telecom-dot-mdi.yaml"
    result = CliRunner().invoke(
        app, ["simulate", str(path), "--pulses", "1e9", "--set", "channel.length_km=20", "--json"]
    )
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert document["protocol"] == "mdi-bb84"
    assert document["announcements"] > 1000
    assert document["max_deviation_sigma"] < 4
    refused = CliRunner().invoke(app, ["simulate", str(path), "--attack", "intercept-resend"])
    assert refused.exit_code != 0
    assert "has no eavesdropper" in refused.output
