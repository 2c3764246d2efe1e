"""``qdnet demo`` as the README runs it (smaller blocks)."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from qdnet.cli import app
from qdnet.cli.demo_command import DEMO_MARKER, prepare_workdir

runner = CliRunner()


def test_demo_runs_and_stays_in_its_folder(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    result = runner.invoke(app, ["demo", "--workdir", str(workdir), "--pulses", "2e8"])
    assert result.exit_code == 0, result.output
    assert "OK: keys from a quantum dot reached two applications" in result.output
    assert "interception detected" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]
    # A second run empties its own previous folder.
    again = runner.invoke(app, ["demo", "--workdir", str(workdir), "--pulses", "2e8"])
    assert again.exit_code == 0, again.output


def test_demo_refuses_a_foreign_folder(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("not the demo's")
    with pytest.raises(ValueError, match="not a qdnet demo folder"):
        prepare_workdir(tmp_path)
    assert (tmp_path / "precious.txt").exists()
    assert not (tmp_path / DEMO_MARKER).exists()
