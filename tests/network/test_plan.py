"""Maximum concurrent multi-commodity flow: closed forms, exact vs path form, feasibility."""

from __future__ import annotations

import itertools

import networkx as nx
import numpy as np
import pytest

from qdnet.network.plan import Topology, alone_max_flow, plan


def _check_feasible(topology: Topology, result_plan) -> None:  # type: ignore[no-untyped-def]
    edge_of = {}
    for e, (u, v) in enumerate(topology.edges):
        edge_of[frozenset((topology.nodes[u], topology.nodes[v]))] = e
    used = np.zeros(len(topology.edges))
    for k, paths in enumerate(result_plan.paths):
        total = sum(p.rate_bps for p in paths)
        assert total == pytest.approx(result_plan.planned_rate_bps[k], rel=1e-6, abs=1e-9)
        s, t = topology.demand_ends[k]
        for path in paths:
            assert path.nodes[0] == topology.nodes[s] and path.nodes[-1] == topology.nodes[t]
            assert len(set(path.nodes)) == len(path.nodes), "paths are simple"
            for middle in path.nodes[1:-1]:
                assert topology.trusted[topology.nodes.index(middle)], "relays are trusted"
            for a, b in itertools.pairwise(path.nodes):
                used[edge_of[frozenset((a, b))]] += path.rate_bps
    assert np.all(used <= topology.capacity_bps * (1 + 1e-6) + 1e-9)
    assert used == pytest.approx(result_plan.link_used_bps, rel=1e-6, abs=1e-6)


def test_line_is_limited_by_its_weakest_link() -> None:
    topology = Topology.build(
        [("A", True), ("C", True), ("B", True)],
        [("A", "C", 1000.0), ("C", "B", 400.0)],
        [("A", "B", 1000.0)],
    )
    for method in ("exact", "paths"):
        result = plan(topology, method)  # type: ignore[arg-type]
        assert result.concurrent_fraction == pytest.approx(0.4, rel=1e-9)
        assert result.planned_rate_bps[0] == pytest.approx(400.0, rel=1e-6)
        assert result.saturated_links == [1]
        _check_feasible(topology, result)
    assert alone_max_flow(topology)[0] == pytest.approx(400.0, rel=1e-6)


def test_secoqc_cut_bounds_lambda_exactly() -> None:
    """The cut {BRT-GUD 1000, SIE-ERD 2000} carries all three demands: lambda = 3000 / 5900."""
    topology = Topology.build(
        [(n, True) for n in ("STP", "BRT", "GUD", "SIE", "ERD", "FRM")],
        [
            ("STP", "BRT", 500.0),
            ("BRT", "GUD", 1000.0),
            ("BRT", "SIE", 5700.0),
            ("SIE", "ERD", 2000.0),
            ("GUD", "ERD", 8000.0),
            ("ERD", "FRM", 17000.0),
        ],
        [("STP", "FRM", 400.0), ("BRT", "ERD", 4000.0), ("GUD", "SIE", 1500.0)],
    )
    result = plan(topology)
    assert result.concurrent_fraction == pytest.approx(3000.0 / 5900.0, rel=1e-9)
    assert result.path_gap == pytest.approx(0.0, abs=1e-9)
    assert sorted(result.saturated_links) == [1, 3]
    assert result.alone_max_rate_bps == pytest.approx([500.0, 3000.0, 3000.0], rel=1e-6)
    _check_feasible(topology, result)


def test_untrusted_node_never_relays() -> None:
    topology = Topology.build(
        [("A", True), ("U", False), ("B", True), ("C", True)],
        [("A", "U", 1e6), ("U", "B", 1e6), ("A", "C", 100.0), ("C", "B", 100.0)],
        [("A", "B", 1000.0), ("A", "U", 50.0)],
    )
    for method in ("exact", "paths"):
        result = plan(topology, method)  # type: ignore[arg-type]
        assert result.planned_rate_bps[0] == pytest.approx(100.0, rel=1e-6)
        assert all("U" not in p.nodes for p in result.paths[0])
        assert result.planned_rate_bps[1] == pytest.approx(5.0, rel=1e-6)  # lambda 0.1 for all
        _check_feasible(topology, result)
    assert alone_max_flow(topology)[0] == pytest.approx(100.0, rel=1e-6)


def test_headroom_routes_on_least_key() -> None:
    """With lambda > 1 every demand gets its rate, on the path that spends the least link key."""
    topology = Topology.build(
        [("A", True), ("B", True), ("C", True), ("D", True)],
        [("A", "B", 1000.0), ("A", "C", 1000.0), ("C", "D", 1000.0), ("D", "B", 1000.0)],
        [("A", "B", 100.0)],
    )
    result = plan(topology)
    assert result.concurrent_fraction == pytest.approx(20.0, rel=1e-9)
    assert result.planned_rate_bps[0] == pytest.approx(100.0)
    assert [p.nodes for p in result.paths[0]] == [("A", "B")]


def _random_topology(seed: int, nodes: int, links: int, demands: int) -> Topology:
    rng = np.random.default_rng(seed)
    graph = nx.gnm_random_graph(nodes, links, seed=seed)
    graph.add_edges_from(itertools.pairwise(range(nodes)))  # connected
    trusted = rng.random(nodes) > 0.15
    ends = [tuple(int(v) for v in rng.choice(nodes, 2, replace=False)) for _ in range(demands)]
    return Topology.build(
        [(f"N{i}", bool(trusted[i])) for i in range(nodes)],
        [(f"N{u}", f"N{v}", float(rng.uniform(100, 1e4))) for u, v in graph.edges],
        [(f"N{a}", f"N{b}", float(rng.uniform(10, 1000))) for a, b in ends],
    )


@pytest.mark.parametrize("seed", range(6))
def test_path_form_reaches_the_exact_lp(seed: int) -> None:
    topology = _random_topology(seed, nodes=14, links=26, demands=12)
    relayable = [
        nx.has_path(topology.graph().subgraph(topology.relay_nodes(s, t)), s, t)
        for s, t in topology.demand_ends
    ]
    if not all(relayable):
        pytest.skip("a demand without a trusted path (the file loader refuses those)")
    exact = plan(topology, "exact")
    paths = plan(topology, "paths", k_paths=1)
    assert paths.concurrent_fraction == pytest.approx(exact.concurrent_fraction, rel=1e-7)
    both = plan(topology, "auto")
    assert both.path_gap == pytest.approx(0.0, abs=1e-7)
    for result in (exact, paths):
        _check_feasible(topology, result)
    # No demand can get more at once than it could alone.
    assert np.all(exact.planned_rate_bps <= exact.alone_max_rate_bps * (1 + 1e-6))


def test_bad_arguments_are_named() -> None:
    topology = Topology.build([("A", True), ("B", True)], [("A", "B", 10.0)], [])
    with pytest.raises(ValueError, match="no demands"):
        plan(topology)
    topology = Topology.build([("A", True), ("B", True)], [("A", "B", 10.0)], [("A", "B", 1.0)])
    with pytest.raises(ValueError, match="--paths"):
        plan(topology, k_paths=0)
