"""``qdnet network plan`` on the example networks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from qdnet.cli import app
from qdnet.config import load_link
from qdnet.keyrate import key_rate_point

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_secoqc_plan_json() -> None:
    result = CliRunner().invoke(
        app, ["network", "plan", str(EXAMPLES / "networks" / "secoqc-vienna.yaml"), "--json"]
    )
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert document["concurrent_fraction"] == pytest.approx(3000 / 5900, rel=1e-9)
    rates = {tuple(link["between"]): link["secret_key_rate_bps"] for link in document["links"]}
    # QKDNetSim's SECOQC link rates (kbit/s), as the example encodes them.
    assert rates[("STP", "BRT")] == 500 and rates[("ERD", "FRM")] == 17000
    video = document["demands"][0]
    assert (video["from"], video["to"]) == ("video-stp", "video-frm")
    assert video["max_rate_bps"] == pytest.approx(400 * 3000 / 5900, rel=1e-6)
    assert video["alone_max_rate_bps"] == pytest.approx(500, rel=1e-6)
    assert sum(p["rate_bps"] for p in video["paths"]) == pytest.approx(video["max_rate_bps"])
    assert {tuple(b["between"]) for b in document["bottlenecks"]} == {
        ("BRT", "GUD"),
        ("SIE", "ERD"),
    }
    assert document["path_lp"]["gap_to_exact"] == pytest.approx(0, abs=1e-9)


def test_metro_links_come_from_the_link_model(tmp_path: Path) -> None:
    plot = tmp_path / "net.png"
    result = CliRunner().invoke(
        app,
        [
            "network",
            "plan",
            str(EXAMPLES / "networks" / "metro-dots.yaml"),
            "--json",
            "--plot",
            str(plot),
        ],
    )
    assert result.exit_code == 0, result.output
    assert plot.stat().st_size > 10_000
    document = json.loads(result.output)
    first = document["links"][0]
    assert first["between"] == ["A", "C"] and first["source"] == "model"
    link = load_link(
        EXAMPLES / "links" / "telecom-dot-bb84.yaml", ["protocol.block_size=1e6"]
    ).with_distance_km(12)
    point, _ = key_rate_point(link, 12)
    assert first["secret_key_rate_bps"] == pytest.approx(point.secret_key_rate_bps, rel=1e-9)


def test_bad_file_is_one_clear_line(tmp_path: Path) -> None:
    path = tmp_path / "net.yaml"
    path.write_text(
        "name: x\nnodes: [{name: A}, {name: B}]\nlinks: [{between: [A, Q], key_rate_bps: 1}]\n"
    )
    result = CliRunner().invoke(app, ["network", "plan", str(path)])
    assert result.exit_code == 2
    assert "links.0: Value error" not in result.output
    assert "unknown node 'Q'" in result.output
    assert "Traceback" not in result.output


def test_simulate_json_and_plot(tmp_path: Path) -> None:
    plot = tmp_path / "pools.png"
    args = ["network", "simulate", str(EXAMPLES / "networks" / "secoqc-vienna.yaml")]
    args += [
        "--duration",
        "6h",
        "--seed",
        "4",
        "--tap",
        "ERD-SIE@1h:0.5",
        "--fail",
        "ERD-FRM@2h+30m",
    ]
    result = CliRunner().invoke(app, [*args, "--json", "--plot", str(plot)])
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert document["duration_s"] == 6 * 3600 and document["seed"] == 4
    assert [e["kind"] for e in document["events"]] == ["tap", "fail"]
    assert document["events"][0]["between"] == ["SIE", "ERD"]
    assert plot.stat().st_size > 10_000
    tapped = next(link for link in document["links"] if link["between"] == ["SIE", "ERD"])
    assert tapped["blocks_refused"] > 0
    assert len(document["pools"]["times_s"]) == len(document["pools"]["bits"]["SIE-ERD"])


def test_simulate_bad_option_is_one_line() -> None:
    args = ["network", "simulate", str(EXAMPLES / "networks" / "secoqc-vienna.yaml")]
    result = CliRunner().invoke(app, [*args, "--duration", "1 day"])
    assert result.exit_code == 2
    assert "--duration '1 day': expected a duration" in result.output
    result = CliRunner().invoke(app, [*args, "--routing", "fastest"])
    assert result.exit_code == 2 and "expected shortest, key-aware or planned" in result.output
