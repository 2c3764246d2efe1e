"""MDI links in a network (issue 16 item 6): ``{between: [A, B], via: R, link: mdi.yaml}`` is one
end-to-end link A-B with the MDI model's rate; the untrusted relay R never relays key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from qdnet.config import ConfigError, load_link
from qdnet.keyrate import key_rate_point
from qdnet.network.config import load_network_config
from qdnet.network.planning import plan_document, plan_network
from qdnet.network.rates import link_rates
from qdnet.network.scenario import simulate_file, simulation_document

ROOT = Path(__file__).resolve().parents[2]
STAR = ROOT / "examples" / "networks" / "mdi-star.yaml"
LASER_MDI = ROOT / "examples" / "links" / "telecom-laser-mdi.yaml"


def test_mdi_link_rate_is_the_mdi_model_end_to_end() -> None:
    document = plan_document(plan_network(STAR))
    link = document["links"][0]
    assert link["between"] == ["A", "B"] and link["via"] == "R"
    assert link["protocol"] == "mdi-bb84"
    model = load_link(
        LASER_MDI,
        [
            "channel.length_km=45",
            "protocol.relay_position=0.444",
            "protocol.block_size=1e8",
        ],
    )
    expected = key_rate_point(model, 45.0)[0].secret_key_rate_bps
    assert link["secret_key_rate_bps"] == pytest.approx(expected, rel=1e-9)
    assert document["links"][3]["via"] is None
    for demand in document["demands"]:
        assert demand["max_rate_bps"] > 0
        for path in demand["paths"]:
            assert "R" not in path["nodes"], "the untrusted relay must not relay key"


def test_simulated_mdi_links_serve_demands_without_the_relay() -> None:
    run = simulation_document(
        simulate_file(STAR, 3 * 3600.0, seed=4, taps=[], fails=[], routing="key-aware", step_s=1.0)
    )
    served = {(d["from"], d["to"]): d for d in run["demands"]}
    assert served[("app-a", "app-b")]["served_rate_bps"] > 0
    for demand in run["demands"]:
        for path in demand["paths"]:
            assert "R" not in path["nodes"]
    produced = {tuple(link["between"]): link["key_produced_bits"] for link in run["links"]}
    assert produced[("A", "B")] > 0


def write_network(tmp_path: Path, links: list[dict[str, object]], **extra: object) -> Path:
    document = {
        "name": "mdi-test",
        "nodes": [{"name": "A"}, {"name": "B"}, {"name": "T"}, {"name": "R", "trusted": False}],
        "links": links,
        "saes": [{"name": "a", "node": "A"}, {"name": "b", "node": "B"}],
        "demands": [{"from": "a", "to": "b", "rate_bps": 100}],
        **extra,
    }
    path = tmp_path / "network.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


@pytest.mark.parametrize(
    ("via", "message"),
    [
        ("Q", "links\\[0\\].via: unknown node 'Q'"),
        ("A", "links\\[0\\].via: A is an end of the link A-B"),
        ("T", "links\\[0\\].via: node T is trusted"),
    ],
)
def test_bad_relays_are_named(tmp_path: Path, via: str, message: str) -> None:
    path = write_network(
        tmp_path, [{"between": ["A", "B"], "via": via, "length_km": 20, "link": str(LASER_MDI)}]
    )
    with pytest.raises(ConfigError, match=message):
        load_network_config(path)


def test_a_relay_link_needs_an_mdi_link_file(tmp_path: Path) -> None:
    decoy = ROOT / "examples" / "links" / "telecom-laser-decoy.yaml"
    path = write_network(
        tmp_path, [{"between": ["A", "B"], "via": "R", "length_km": 20, "link": str(decoy)}]
    )
    with pytest.raises(ConfigError, match=r"via R needs a link file of protocol\.kind mdi-bb84"):
        link_rates(load_network_config(path), tmp_path)


def test_links_to_the_untrusted_relay_do_not_carry_relayed_key(tmp_path: Path) -> None:
    """Ordinary links A-R and R-B give no path from A to B: R is untrusted."""
    decoy = str(ROOT / "examples" / "links" / "telecom-laser-decoy.yaml")
    path = write_network(
        tmp_path,
        [
            {"between": ["A", "R"], "length_km": 10, "link": decoy},
            {"between": ["R", "B"], "length_km": 10, "link": decoy},
        ],
    )
    with pytest.raises(ConfigError, match="no path from node A to node B through trusted nodes"):
        load_network_config(path)


def test_bob_source_of_a_network_link_is_relative_to_its_link_file(tmp_path: Path) -> None:
    """A link file in another folder naming Bob's source by a relative path."""
    links = tmp_path / "links"
    links.mkdir()
    dot = ROOT / "examples" / "links" / "telecom-dot-mdi.yaml"
    (links / "bob.yaml").write_text(dot.read_text())
    (links / "alice.yaml").write_text(
        dot.read_text().replace(
            "  error_correction_efficiency", "  bob_source: bob.yaml\n  error_correction_efficiency"
        )
    )
    networks = tmp_path / "networks"
    networks.mkdir()
    path = write_network(
        networks,
        [{"between": ["A", "B"], "via": "R", "length_km": 20, "link": "../links/alice.yaml"}],
    )
    (rate,) = link_rates(load_network_config(path), networks)
    assert rate.secret_key_rate_bps > 0
