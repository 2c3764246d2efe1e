"""Network over time: agreement with the plan, taps and failures, reproducibility, bad input."""

from __future__ import annotations

import math
from pathlib import Path

import networkx as nx
import numpy as np
import pytest
import yaml

from qdnet.network.scenario import simulate_file, simulation_document
from qdnet.network.simulation import shor_preskill_fraction
from qdnet.units import parse_duration_s

SECOQC = Path(__file__).resolve().parents[2] / "examples" / "networks" / "secoqc-vienna.yaml"
WEEK_S = 7 * 86400.0


def test_secoqc_served_rates_reach_the_plan() -> None:
    """Demand above capacity (lambda = 0.508): a week of planned routing serves the plan's rates."""
    document = simulation_document(
        simulate_file(SECOQC, WEEK_S, seed=3, taps=[], fails=[], routing="planned", step_s=10.0)
    )
    for demand in document["demands"]:
        assert demand["served_rate_bps"] == pytest.approx(demand["planned_rate_bps"], rel=0.02)
        assert demand["blocking_probability"] > 0.4  # asked about twice what the network has


def _random_network(tmp_path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    nodes = 20
    graph = nx.cycle_graph(nodes)
    while graph.number_of_edges() < 34:
        a, b = (int(v) for v in rng.choice(nodes, 2, replace=False))
        graph.add_edge(a, b)
    pairs = [tuple(int(v) for v in rng.choice(nodes, 2, replace=False)) for _ in range(12)]
    document = {
        "name": "random-20",
        "nodes": [{"name": f"N{i}"} for i in range(nodes)],
        "links": [
            {
                "between": [f"N{u}", f"N{v}"],
                "key_rate_bps": float(rng.uniform(2e3, 2e4)),
                "block_bits": 2e4,
                "length_km": float(rng.uniform(5, 50)),
            }
            for u, v in graph.edges
        ],
        "saes": [{"name": f"s{i}", "node": f"N{i}"} for i in range(nodes)],
        "demands": [
            {"from": f"s{a}", "to": f"s{b}", "rate_bps": float(rng.uniform(5e3, 2e4))}
            for a, b in pairs
        ],
    }
    path = tmp_path / "random.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def test_random_network_served_rates_reach_the_plan(tmp_path: Path) -> None:
    path = _random_network(tmp_path, 5)
    run = simulate_file(path, 2 * 86400.0, seed=1, taps=[], fails=[], routing="planned")
    assert run.planned.plan.concurrent_fraction < 1.0  # demand above capacity
    document = simulation_document(run)
    for demand in document["demands"]:
        assert demand["served_rate_bps"] == pytest.approx(demand["planned_rate_bps"], rel=0.02)


def test_links_produce_their_rate_within_statistics(tmp_path: Path) -> None:
    path = _random_network(tmp_path, 5)
    run = simulate_file(path, 86400.0, seed=2, taps=[], fails=[])
    for e, rate in enumerate(run.planned.rates):
        block_bits = 2e4 * shor_preskill_fraction(rate.qber)
        expected_blocks = rate.secret_key_rate_bps * 86400.0 / block_bits
        # Erlang fill times: the block count's spread is ~sqrt(blocks / shape); allow 4 sigma + 1.
        spread = 4 * math.sqrt(expected_blocks / 2e4) + 1
        assert abs(run.result.counts.blocks_delivered[e] - expected_blocks) <= spread
        assert run.result.counts.produced_bits[e] == pytest.approx(
            run.result.counts.blocks_delivered[e] * block_bits
        )


def test_tap_refuses_blocks_and_key_aware_routing_moves_around_it() -> None:
    tap = "SIE-ERD@6h:0.5"
    shortest = simulate_file(SECOQC, 86400.0, 1, [tap], [], routing="shortest")
    aware = simulate_file(SECOQC, 86400.0, 1, [tap], [], routing="key-aware")
    e = next(r.index for r in aware.planned.rates if set(r.between) == {"SIE", "ERD"})
    # 2000 bit/s in blocks of 1e6 x 0.8255 secret bits: one block every ~413 s, refused after 6 h.
    assert aware.result.counts.blocks_delivered[e] == pytest.approx(6 * 3600 / 412.8, abs=2)
    assert aware.result.counts.blocks_refused[e] == pytest.approx(18 * 3600 / 412.8, abs=2)
    document = simulation_document(aware)
    brt_erd = next(d for d in document["demands"] if d["from"] == "app-brt")
    via = {"-".join(p["nodes"]): p["served_bps"] for p in brt_erd["paths"]}
    assert via["BRT-GUD-ERD"] > via.get("BRT-SIE-ERD", 0.0)
    served = [simulation_document(r)["demands"][1]["served_rate_bps"] for r in (shortest, aware)]
    assert served[1] > 1.5 * served[0]


def test_failure_stops_blocks_for_its_duration() -> None:
    whole = simulate_file(SECOQC, 86400.0, 1, [], [])
    failed = simulate_file(SECOQC, 86400.0, 1, [], ["ERD-FRM@2h+12h"])
    e = next(r.index for r in whole.planned.rates if set(r.between) == {"ERD", "FRM"})
    ratio = failed.result.counts.blocks_delivered[e] / whole.result.counts.blocks_delivered[e]
    assert ratio == pytest.approx(0.5, abs=0.01)


def test_same_seed_same_run_other_seed_other_run() -> None:
    a = simulation_document(simulate_file(SECOQC, 3600.0, 7, [], []))
    b = simulation_document(simulate_file(SECOQC, 3600.0, 7, [], []))
    c = simulation_document(simulate_file(SECOQC, 3600.0, 8, [], []))
    strip = lambda d: {k: v for k, v in d.items() if k != "engine"}  # noqa: E731
    assert strip(a) == strip(b)
    assert strip(a) != strip(c)


@pytest.mark.parametrize(
    ("taps", "fails", "message"),
    [
        (["SIE-ERD"], [], "expected LINK@TIME:FRACTION"),
        (["SIE-ERD@2h:1.5"], [], r"fraction must be in \(0, 1\]"),
        (["SIE-FRM@2h:0.5"], [], "no link between SIE and FRM"),
        (["SIE-ERD@2x:0.5"], [], "expected a duration"),
        ([], ["ERD-FRM@2h:0.5"], "expected LINK@TIME\\+DURATION"),
        (["SIE-ERD@1h:0.5", "ERD-SIE@2h:0.1"], [], "tapped twice"),
    ],
)
def test_bad_events_are_named(taps: list[str], fails: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        simulate_file(SECOQC, 3600.0, 1, taps, fails)


def test_durations() -> None:
    assert [parse_duration_s(t) for t in ("90s", "15m", "2h", "24h", "1.5d", "500ms", "10")] == [
        90.0,
        900.0,
        7200.0,
        86400.0,
        129600.0,
        0.5,
        10.0,
    ]
    for bad in ("x", "2 hours", "-1h", ""):
        with pytest.raises(ValueError, match="expected a duration"):
            parse_duration_s(bad, "--interval")
