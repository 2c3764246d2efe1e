"""``qdnet simulate`` end to end (issue 3 CLI)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from typer.testing import CliRunner

from qdnet.cli.simulate_commands import register
from qdnet.protocols.records import load_records

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "links"


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """root"""

    register(app)
    return app


def test_simulate_json_and_records(tmp_path: Path) -> None:
    runner = CliRunner()
    args = [
        "simulate",
        str(EXAMPLES / "telecom-laser-decoy.yaml"),
        "--pulses",
        "2e6",
        "--seed",
        "3",
        "--set",
        "channel.length_km=30",
        "--json",
    ]
    first = runner.invoke(_app(), [*args, "--out", str(tmp_path / "a")])
    assert first.exit_code == 0, first.output
    doc = json.loads(first.output)
    for key in (
        "pulses",
        "detections",
        "gain",
        "qber",
        "expected",
        "deviation_sigma",
        "verdict",
        "reason",
    ):
        assert key in doc
    assert doc["pulses"] == 2_000_000 and set(doc["qber"]) == {"z", "x"}
    second = runner.invoke(_app(), [*args, "--out", str(tmp_path / "b")])
    assert json.loads(second.output)["detections"] == doc["detections"]
    a, b = load_records(tmp_path / "a"), load_records(tmp_path / "b")
    assert (a.bob.bit == b.bob.bit).all() and a.meta.link["name"] == "telecom-laser-decoy"
    assert a.meta.seed == 3 and len(a.meta.intensities) == 3


def test_simulate_attack_and_bbm92_timetags(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(
        _app(),
        [
            "simulate",
            str(EXAMPLES / "gaas-dot-bbm92.yaml"),
            "--pulses",
            "1e6",
            "--attack",
            "intercept-resend",
            "--set",
            "source.extraction_efficiency=0.2",
            "--out",
            str(tmp_path / "r"),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["verdict"] == "interception detected"
    assert (tmp_path / "r" / "timetags.npz").is_file()


def test_simulate_clean_errors() -> None:
    runner = CliRunner()
    bad = runner.invoke(
        _app(),
        ["simulate", str(EXAMPLES / "telecom-dot-bb84.yaml"), "--set", "receiver.efficiency=3"],
    )
    assert bad.exit_code == 2 and "receiver.efficiency" in bad.output
    bad = runner.invoke(
        _app(), ["simulate", str(EXAMPLES / "telecom-dot-bb84.yaml"), "--attack", "teleport"]
    )
    assert bad.exit_code == 2 and "unknown attack" in bad.output


def test_seed_stays_out_of_the_public_metadata(tmp_path: Path) -> None:
    """Finding 7: meta.json (read by both endpoints as public) must not hold the seed that
    reproduces Alice's records; it goes to RUN/private/seed.json, mode 0600."""
    runner = CliRunner()
    result = runner.invoke(
        _app(),
        [
            "simulate",
            str(EXAMPLES / "telecom-dot-bb84.yaml"),
            "--pulses",
            "1e6",
            "--seed",
            "11",
            "--out",
            str(tmp_path / "r"),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "r" / "meta.json").read_text())
    assert "seed" not in meta and meta["simulated"] is True
    private = tmp_path / "r" / "private" / "seed.json"
    assert json.loads(private.read_text()) == {"seed": 11}
    assert private.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "r" / "private").stat().st_mode & 0o077 == 0


def test_decoy_states_from_a_quantum_dot_are_refused() -> None:
    """Finding 8b: Lim et al.'s Poisson decoy bound does not hold for a quantum-dot source."""
    result = CliRunner().invoke(
        _app(),
        [
            "simulate",
            str(EXAMPLES / "telecom-dot-bb84.yaml"),
            "--pulses",
            "1e5",
            "--set",
            "protocol.kind=decoy-bb84",
            "--set",
            "source.decoy_intensities=[0.01,0.0]",
        ],
    )
    assert result.exit_code == 2, result.output
    assert "Poisson" in result.output and "Traceback" not in result.output
