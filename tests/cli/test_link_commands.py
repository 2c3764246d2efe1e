"""The keyrate and source commands as a user runs them."""

import json
from pathlib import Path

from typer.testing import CliRunner

from qdnet.cli import app

runner = CliRunner()


def test_keyrate_json_contract(examples_dir: Path) -> None:
    result = runner.invoke(
        app,
        [
            "keyrate",
            str(examples_dir / "gaas-dot-bbm92.yaml"),
            "--distance-km",
            "0:20:0.5",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["link"] == "gaas-dot-bbm92"
    assert len(doc["points"]) == 41
    keys = {
        "distance_km",
        "loss_db",
        "qber",
        "gain",
        "secret_key_rate_bps",
        "secret_bits_per_pulse",
        "plob_bits_per_pulse",
        "parameters",
    }
    assert keys <= set(doc["points"][0])
    assert doc["points"][-1]["distance_km"] == 20.0


def test_keyrate_plot_and_compare(tmp_path: Path, examples_dir: Path) -> None:
    out = tmp_path / "rate.png"
    result = runner.invoke(
        app,
        [
            "keyrate",
            str(examples_dir / "telecom-dot-bb84.yaml"),
            "--loss-db",
            "0:40:1",
            "--compare",
            str(examples_dir / "telecom-laser-decoy.yaml"),
            "--plot",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert out.stat().st_size > 10_000
    assert "telecom-laser-decoy" in result.output


def test_keyrate_set_override_finite(examples_dir: Path) -> None:
    result = runner.invoke(
        app,
        [
            "keyrate",
            str(examples_dir / "telecom-dot-bb84.yaml"),
            "--set",
            "protocol.block_size=1e8",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    point = json.loads(result.output)["points"][0]
    assert point["finite_key_terms"]["key_bits_sifted"] == 1e8


def test_source_json(examples_dir: Path) -> None:
    result = runner.invoke(app, ["source", str(examples_dir / "gaas-dot-bbm92.yaml"), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert {"photon_number_distribution", "g2", "fidelity", "concurrence", "density_matrix"} <= set(
        doc
    )
    assert abs(doc["fidelity"] - 0.987) < 1e-3


def test_bad_input_is_one_clean_line(tmp_path: Path, examples_dir: Path) -> None:
    result = runner.invoke(
        app, ["keyrate", str(examples_dir / "telecom-dot-bb84.yaml"), "--loss-db", "10:0:1"]
    )
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    result = runner.invoke(
        app, ["keyrate", str(examples_dir / "telecom-dot-bb84.yaml"), "--set", "source.g2=7"]
    )
    assert result.exit_code == 2
    assert "source.g2" in result.output


def test_source_reports_the_time_gate(examples_dir: Path) -> None:
    link_file = str(examples_dir / "gated-dot-bb84.yaml")
    result = runner.invoke(app, ["source", link_file, "--set", "receiver.gate_ns=2.0", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["gate_ns"] == 2.0
    assert 0.5 < doc["gate_acceptance"] < 1.0


def test_source_json_reports_the_pair_after_the_path(examples_dir: Path) -> None:
    path = examples_dir / "strobel2024-qfc-fibre.yaml"
    result = runner.invoke(app, ["source", str(path), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    keys = {"fidelity_after_path", "concurrence_after_path", "density_matrix_after_path"}
    assert keys | {"fidelity_detected", "background_rate_hz_per_detector"} <= set(doc)
    assert doc["fidelity_after_path"] < doc["fidelity"]
    assert doc["background_rate_hz_per_detector"]["a"] == 0.0
    table = runner.invoke(app, ["source", str(path)])
    assert table.exit_code == 0, table.output
    assert "density matrix after path" in table.output
