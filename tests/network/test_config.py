"""Network YAML: errors that name the field, link documents built from link files."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from qdnet.config import ConfigError
from qdnet.network.config import link_config, load_network_config

LINKS = Path(__file__).resolve().parents[2] / "examples" / "links"


def _write(tmp_path: Path, document: dict) -> Path:  # type: ignore[type-arg]
    path = tmp_path / "net.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def _network(**changes: object) -> dict:  # type: ignore[type-arg]
    document = {
        "name": "t",
        "link_defaults": str(LINKS / "telecom-dot-bb84.yaml"),
        "nodes": [{"name": "A"}, {"name": "B"}, {"name": "C", "trusted": True}],
        "links": [
            {"between": ["A", "C"], "length_km": 12},
            {"between": ["C", "B"], "key_rate_bps": 2000},
        ],
        "saes": [{"name": "app-a", "node": "A"}, {"name": "app-b", "node": "B"}],
        "demands": [{"from": "app-a", "to": "app-b", "rate_bps": 500}],
    }
    document.update(changes)
    return document


def test_valid_file_and_link_document(tmp_path: Path) -> None:
    config = load_network_config(_write(tmp_path, _network()))
    assert config.demands[0].source == "app-a" and config.demands[0].key_bits == 256
    link = link_config(config, 0, tmp_path)
    assert link.channel.length_km == 12 and link.name == "A-C"
    assert link.source.g2 == pytest.approx(0.036)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"links": [{"between": ["A", "X"], "key_rate_bps": 1}]},
            r"links\[0\].between: unknown node 'X'",
        ),
        ({"links": [{"between": ["A", "A"], "key_rate_bps": 1}]}, "to itself"),
        (
            {"links": [{"between": ["A", "C"], "key_rate_bps": 1}]},
            r"demands\[0\]: no path from node A to node B",
        ),
        (
            {"nodes": [{"name": "A"}, {"name": "B"}, {"name": "C", "trusted": False}]},
            r"demands\[0\]: no path from node A to node B through trusted nodes",
        ),
        ({"saes": [{"name": "app-a", "node": "Q"}]}, r"saes\[0\].node: unknown node 'Q'"),
        (
            {"demands": [{"from": "app-a", "to": "nobody", "rate_bps": 1}]},
            r"demands\[0\].to: unknown SAE 'nobody'",
        ),
        ({"demands": [{"from": "app-a", "to": "app-b", "rate_bps": -1}]}, r"demands.0.rate_bps"),
        ({"nodes": [{"name": "A"}, {"name": "A"}]}, "listed twice"),
        ({"colour": "red"}, "colour"),
        (
            {"link_defaults": None},
            r"links\[0\]: needs key_rate_bps, link, or the network's link_defaults",
        ),
    ],
)
def test_errors_name_the_field(tmp_path: Path, changes: dict, message: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ConfigError, match=message):
        load_network_config(_write(tmp_path, _network(**changes)))


def test_missing_link_file_is_named(tmp_path: Path) -> None:
    document = _network()
    document["links"][0]["link"] = "nowhere.yaml"
    config = load_network_config(_write(tmp_path, document))
    with pytest.raises(ConfigError, match=r"links\[0\].link: no such link file .*nowhere.yaml"):
        link_config(config, 0, tmp_path)


def test_bad_override_is_named(tmp_path: Path) -> None:
    document = _network()
    document["links"][0]["set"] = {"receiver.efficiency": 2.0}
    config = load_network_config(_write(tmp_path, document))
    with pytest.raises(ConfigError, match=r"(?s)links\[0\] \(A-C\).*receiver.efficiency"):
        link_config(config, 0, tmp_path)
