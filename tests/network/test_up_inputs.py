"""``qdnet network up|down|status`` refuse bad input with one message naming the field (exit 2),
before any file or process is made."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from qdnet.cli import app

NETWORKS = Path(__file__).resolve().parents[2] / "examples" / "networks"
LINKS = NETWORKS.parent / "links"

LINE = f"""name: bad
link_defaults: {LINKS / "telecom-dot-bb84.yaml"}
nodes: [{{name: A}}, {{name: B}}]
links:
  - {{between: [A, B], length_km: 10}}
saes: [{{name: app-a, node: A}}, {{name: app-b, node: B}}]
"""


def _up(tmp_path: Path, text: str, *options: str) -> tuple[int, str]:
    path = tmp_path / "net.yaml"
    path.write_text(text)
    result = CliRunner().invoke(
        app, ["network", "up", str(path), "--workdir", str(tmp_path / "run"), *options]
    )
    return result.exit_code, result.output


@pytest.mark.parametrize(
    ("text", "options", "expected"),
    [
        (LINE.replace("{name: B}]", "{name: B, colour: red}]"), [], "colour"),
        (LINE.replace("length_km: 10", "length_km: -1"), [], "length_km"),
        (LINE.replace("between: [A, B]", "between: [A, Z]"), [], "unknown node 'Z'"),
        (
            LINE.replace("length_km: 10}", "length_km: 10, link: missing.yaml}"),
            [],
            "links[0].link: no such link file",
        ),
        (LINE.replace("{name: app-b, node: B}", ""), [], "saes"),
        (LINE.replace("app-b", "kme-A"), [], "'kme-A' is a name `network up` gives"),
        (LINE.replace("app-b", "monitor-B"), [], "'monitor-B' is a name `network up` gives"),
        (LINE, ["--tap", "A-Q@0s:0.5"], "no link between A and Q"),
        (LINE, ["--tap", "A-B@0s:1.5"], "fraction must be in (0, 1]"),
        (LINE, ["--tap", "A-B@soon:0.5"], "--tap"),
        (LINE, ["--workers", "0"], "--workers"),
        ("nodes: [", [], "not valid YAML"),
        (
            LINE.replace("{name: B}]", "{name: B, trusted: false}]"),
            [],
            "untrusted node B ends links",
        ),
        (
            LINE.replace("length_km: 10}", "length_km: 10, set: {receiver.efficiency: 2}}"),
            [],
            "receiver.efficiency",
        ),
        # Refused by the KMS settings builder after the PKI was made: the folder goes too.
        (LINE.replace("{name: B}]", "{name: B}, {name: C}]"), [], "'kme-C' has no link"),
    ],
)
def test_bad_network_is_refused_naming_the_field(
    tmp_path: Path, text: str, options: list[str], expected: str
) -> None:
    code, output = _up(tmp_path, text, *options)
    assert code == 2, output
    assert expected in " ".join(output.split()), output
    assert "Traceback" not in output
    assert not (tmp_path / "run").exists()  # nothing written


def test_workdir_must_be_new_or_empty(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine")
    code, output = _up(tmp_path, LINE)
    assert code == 2 and "expected a new or empty folder" in " ".join(output.split())
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["notes.txt"]


@pytest.mark.parametrize("command", ["down", "status"])
def test_down_and_status_need_a_network_folder(tmp_path: Path, command: str) -> None:
    result = CliRunner().invoke(app, ["network", command, str(tmp_path)])
    assert result.exit_code == 2
    assert "no network here" in " ".join(result.output.split())


def test_an_untrusted_mdi_relay_runs_no_kms(tmp_path: Path) -> None:
    from qdnet.network.runtime.layout import prepare_workdir

    state = prepare_workdir(
        NETWORKS / "mdi-star.yaml", tmp_path / "run", taps=[], fast=True, seed=1, cpu_slots=1
    )
    assert sorted(state["nodes"]) == ["A", "B", "C", "D"]  # R measures, holds no key
    assert set(state["links"]) == {"A-B", "A-C", "B-C", "C-D"}
    assert not (tmp_path / "run" / "kme-R").exists()
