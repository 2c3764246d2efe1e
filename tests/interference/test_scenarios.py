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


def _cascade_link(tmp_path: Path, extra: str = "") -> Path:
    link = tmp_path / "cascade.yaml"
    text = (EXAMPLES / "links" / "gaas-dot-remote.yaml").read_text()
    text = text.replace("multi_pair_probability: 1.5e-4", "multi_pair_probability: 0.0")
    text = text.replace(
        "  spectral_diffusion_uev: 0.5\n", f"  spectral_diffusion_uev: 0.0\n{extra}"
    )
    link.write_text(text)
    return link


def test_hom_biexciton_photon_at_the_cascade_limit(tmp_path: Path) -> None:
    # T_X = 0.25 ns, T_XX = 0.125 ns: M <= T_X / (T_X + T_XX) = 2/3 (Schoell et al. 2020, Eq. 1);
    # no multi-pair emission, no spectral wander: the delayed-photon visibility is M itself.
    link = _cascade_link(tmp_path, "  biexciton_lifetime_ns: 0.125\n")
    xx = _run("hom", str(link), "--photon", "xx")
    assert xx["photon"] == "xx"
    assert xx["visibility"] == pytest.approx(2.0 / 3.0, rel=1e-9)
    x = _run("hom", str(link))
    assert x["visibility"] == pytest.approx(0.9, rel=1e-9)  # the exciton's measured M
    measured = _cascade_link(
        tmp_path, "  biexciton_lifetime_ns: 0.125\n  biexciton_indistinguishability: 0.5\n"
    )
    assert _run("hom", str(measured), "--photon", "xx")["visibility"] == pytest.approx(0.5)


def test_hom_biexciton_lines_detuned(tmp_path: Path) -> None:
    a = _cascade_link(tmp_path, "  biexciton_lifetime_ns: 0.125\n")
    b = tmp_path / "b.yaml"
    b.write_text(
        a.read_text().replace(
            "  biexciton_lifetime_ns: 0.125\n",
            "  biexciton_lifetime_ns: 0.125\n  biexciton_wavelength_nm: 786.0\n",
        )
    )
    a.write_text(a.read_text().replace("0.125\n", "0.125\n  biexciton_wavelength_nm: 786.0001\n"))
    detuned = _run("hom", str(a), str(b), "--photon", "xx")
    assert detuned["contributions"]["detuning"] > 0
    assert detuned["visibility"] < 2.0 / 3.0


@pytest.mark.parametrize(
    ("file", "message"),
    [
        ("gaas-dot-remote.yaml", "source.biexciton_lifetime_ns is required for --photon xx"),
        ("telecom-dot-bb84.yaml", "--photon xx needs an entangled-pair source"),
    ],
)
def test_hom_biexciton_errors(file: str, message: str) -> None:
    result = CliRunner().invoke(app, ["hom", str(EXAMPLES / "links" / file), "--photon", "xx"])
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output
    bad = CliRunner().invoke(app, ["hom", str(EXAMPLES / "links" / file), "--photon", "y"])
    assert "--photon must be x or xx" in bad.output
