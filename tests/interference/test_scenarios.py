"""``qdnet hom``, ``swap`` and ``teleport`` on the example files; scenario errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from qdnet.cli import app
from qdnet.config import load_link_config
from qdnet.interference.hom import hom
from qdnet.interference.scenario import emitter

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _run(*args: str) -> dict:  # type: ignore[type-arg]
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)  # type: ignore[no-any-return]


def test_hom_two_dots_and_one_dot() -> None:
    a = EXAMPLES / "links" / "gaas-dot-bbm92.yaml"
    b = EXAMPLES / "links" / "gaas-dot-remote.yaml"
    both = _run("hom", str(a), str(b))
    expected = hom(emitter(load_link_config(a)), emitter(load_link_config(b)))
    assert both["visibility"] == pytest.approx(expected.visibility, rel=1e-12)
    assert 0.9 < both["visibility"] < 0.95
    assert both["contributions"]["detuning"] > 0  # 0.1 pm apart: 0.2 ueV
    one = _run("hom", str(b))
    assert set(one["contributions"]) == {"multiphoton", "dephasing"}
    assert one["visibility"] < 0.9  # M = 0.9 less the multi-pair part


def test_swap_and_teleport_examples() -> None:
    swapped = _run("swap", str(EXAMPLES / "entanglement" / "two-dot-swap.yaml"))
    assert len(swapped["density_matrix"]["real"]) == 4
    assert swapped["per_swaps"][0]["swaps"] == 1
    assert 0.5 < swapped["fidelity"] < 1.0
    assert swapped["rate_hz"] > swapped["fourfold_rate_hz"] > 0
    teleported = _run("teleport", str(EXAMPLES / "entanglement" / "teleport-270m.yaml"))
    assert teleported["fidelity"] == pytest.approx(
        (2 * teleported["entanglement_fidelity"] + 1) / 3
    )
    assert teleported["fidelity"] > 2 / 3  # beats the classical limit


def test_chain_from_segments(tmp_path: Path) -> None:
    link = EXAMPLES / "links" / "gaas-dot-bbm92.yaml"
    scenario = tmp_path / "chain.yaml"
    scenario.write_text(
        f"name: chain\nsegments: [{link}, {link}, {link}]\nbsm: {{hom_visibility: 0.9}}\n"
    )
    document = _run("swap", str(scenario))
    fidelities = [entry["fidelity"] for entry in document["per_swaps"]]
    assert [entry["swaps"] for entry in document["per_swaps"]] == [1, 2]
    assert fidelities[1] < fidelities[0]
    assert document["per_swaps"][1]["rate_hz"] < document["per_swaps"][0]["rate_hz"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: x\nleft: a.yaml\n", "give left and right"),
        ("name: x\nsegments: [a.yaml]\n", "at least two pair links"),
        ("name: x\nleft: nowhere.yaml\nright: nowhere.yaml\n", "no such link file"),
        ("name: x\nleft: a.yaml\nright: a.yaml\nbsm: {efficiency: 2}\n", "bsm.efficiency"),
    ],
)
def test_scenario_errors_are_one_line(tmp_path: Path, text: str, message: str) -> None:
    scenario = tmp_path / "s.yaml"
    scenario.write_text(text)
    result = CliRunner().invoke(app, ["swap", str(scenario)])
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_swap_needs_pair_sources(tmp_path: Path) -> None:
    link = EXAMPLES / "links" / "telecom-dot-bb84.yaml"
    scenario = tmp_path / "s.yaml"
    scenario.write_text(f"name: x\nleft: {link}\nright: {link}\n")
    result = CliRunner().invoke(app, ["swap", str(scenario)])
    assert result.exit_code == 2 and "needs source.kind entangled-pair" in result.output


def test_swap_plot(tmp_path: Path) -> None:
    plot = tmp_path / "fidelity.png"
    scenario = EXAMPLES / "entanglement" / "three-dot-chain.yaml"
    result = CliRunner().invoke(app, ["swap", str(scenario), "--plot", str(plot)])
    assert result.exit_code == 0, result.output
    assert plot.stat().st_size > 10_000
