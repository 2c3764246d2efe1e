"""Monte Carlo of entanglement swapping against the analytic model, figure by figure."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from qdnet.cli import app
from qdnet.interference.swapping import BsmSettings, Pair, projector
from qdnet.simulation.swapping import simulate_swap
from qdnet.sources.entangled import EntangledPairSource

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _werner(p: float) -> np.ndarray:
    return (p * projector("phi+") + (1 - p) * np.eye(4) / 4).astype(np.complex128)


def _dot_state(fss_uev: float) -> np.ndarray:
    source = EntangledPairSource(pair_efficiency=1.0, repetition_rate_hz=8e7, fss_uev=fss_uev)
    return source.density_matrix()


CASES = {
    # ideal Bell pairs, perfect interference, no dark counts
    "ideal": (
        Pair(_werner(1.0), 0.9, 0.0, 0.3, 0.4, 8e7),
        Pair(_werner(1.0), 0.8, 0.0, 0.35, 0.3, 8e7),
        BsmSettings(efficiency=1.0, hom_visibility=1.0),
    ),
    # two dots with fine-structure splitting, multi-pair noise, V = 0.85, heavy dark counts
    "dots": (
        Pair(_dot_state(0.5), 0.85, 0.03, 0.3, 0.25, 8e7),
        Pair(_dot_state(1.0), 0.8, 0.05, 0.2, 0.3, 8e7),
        BsmSettings(dark_count_rate_hz=3e4, window_ns=1.0, hom_visibility=0.85),
    ),
    # Werner pairs, poor interference, asymmetric arms
    "werner": (
        Pair(_werner(0.8), 0.7, 0.0, 0.5, 0.1, 8e7),
        Pair(_werner(0.9), 0.6, 0.02, 0.15, 0.45, 8e7),
        BsmSettings(dark_count_rate_hz=1e4, window_ns=2.0, hom_visibility=0.6),
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_monte_carlo_agrees_with_analytic_within_4_sigma(case: str) -> None:
    left, right, bsm = CASES[case]
    result = simulate_swap(left, right, bsm, 3_000_000, np.random.default_rng(11))
    assert result.fourfolds > 2000
    assert min(result.heralds.values()) > 1000
    assert result.max_deviation_sigma < 4.0, result.to_json()


def test_monte_carlo_sees_the_interference_visibility() -> None:
    """The comparison can fail: the same run judged against V = 1 is many sigma off."""
    left, right, bsm = CASES["ideal"]
    worse = simulate_swap(
        left, right, replace(bsm, hom_visibility=0.7), 3_000_000, np.random.default_rng(5)
    )
    ideal = simulate_swap(left, right, bsm, 10, np.random.default_rng(5))
    deviation = (worse.fidelity.value - ideal.fidelity.expected) / worse.fidelity.sigma
    assert deviation < -10
    assert abs(worse.fidelity.deviation_sigma) < 4


def test_seed_reproduces_the_run() -> None:
    left, right, bsm = CASES["dots"]
    a = simulate_swap(left, right, bsm, 500_000, np.random.default_rng(3)).to_json()
    b = simulate_swap(left, right, bsm, 500_000, np.random.default_rng(3)).to_json()
    for key in ("heralds", "fourfolds", "qber", "fidelity"):
        assert a[key] == b[key]


def test_cli_runs_the_example_swap() -> None:
    scenario = EXAMPLES / "entanglement" / "two-dot-swap.yaml"
    result = CliRunner().invoke(
        app, ["simulate", str(scenario), "--pulses", "2e8", "--seed", "1", "--json"]
    )
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert document["scenario"] == "two-dot-swap"
    assert sum(document["heralds"].values()) > 100
    assert abs(document["herald_probability"]["deviation_sigma"]) < 4
    # the dim example records no fourfold in 2e8 attempts: figures without data are null
    if document["fourfolds"] == 0:
        assert document["fidelity"]["value"] is None


def test_cli_refuses_what_a_swap_cannot_take(tmp_path: Path) -> None:
    scenario = EXAMPLES / "entanglement" / "two-dot-swap.yaml"
    attacked = CliRunner().invoke(app, ["simulate", str(scenario), "--attack", "intercept-resend"])
    assert attacked.exit_code != 0
    assert "a swap scenario takes --pulses" in attacked.output
    link = EXAMPLES / "links" / "gaas-dot-bbm92.yaml"
    chain = tmp_path / "chain.yaml"
    chain.write_text(f"name: chain\nsegments: [{link}, {link}, {link}]\nbsm: {{}}\n")
    refused = CliRunner().invoke(app, ["simulate", str(chain), "--pulses", "1e3"])
    assert refused.exit_code != 0
    assert "runs one swap" in refused.output
    assert "Traceback" not in refused.output
