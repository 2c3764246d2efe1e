"""``qdnet network plan``: a network file's link rates, its flow plan, the JSON and the drawing."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from qdnet.network.config import NetworkConfig, load_network_config
from qdnet.network.plan import Method, Plan, Topology, plan
from qdnet.network.rates import LinkRate, link_rates


@dataclass
class PlannedNetwork:
    """A network file with every link's rate and the solved plan."""

    config: NetworkConfig
    base_dir: Path
    rates: list[LinkRate]
    topology: Topology
    plan: Plan


def topology_of(config: NetworkConfig, rates: list[LinkRate]) -> Topology:
    """The LP's view of a network: trusted flags, link capacities, demands between nodes."""
    return Topology.build(
        nodes=[(node.name, node.trusted) for node in config.nodes],
        links=[(*rate.between, rate.secret_key_rate_bps) for rate in rates],
        demands=[
            (config.node_of(d.source), config.node_of(d.target), d.rate_bps) for d in config.demands
        ],
    )


def plan_network(
    path: str | Path,
    method: Method = "auto",
    k_paths: int = 3,
    progress: Callable[[int], Callable[[], None]] | None = None,
) -> PlannedNetwork:
    """Read a network file, model its links and plan its demands.

    ``progress(total)`` returns a callback advanced once per link (the CLI's progress bar).
    """
    config = load_network_config(path)
    base_dir = Path(path).resolve().parent
    rates = link_rates(config, base_dir, progress(len(config.links)) if progress else None)
    topology = topology_of(config, rates)
    return PlannedNetwork(config, base_dir, rates, topology, plan(topology, method, k_paths))


def plan_document(planned: PlannedNetwork) -> dict[str, Any]:
    """The JSON of ``qdnet network plan --json`` (a public contract, see README)."""
    result = planned.plan
    capacity = planned.topology.capacity_bps
    links = []
    for rate, used in zip(planned.rates, result.link_used_bps, strict=True):
        entry = rate.to_json()
        entry["used_bps"] = float(used)
        entry["used_fraction"] = _fraction(used, rate.secret_key_rate_bps)
        links.append(entry)
    demands = []
    for k, demand in enumerate(planned.config.demands):
        demands.append(
            {
                "from": demand.source,
                "to": demand.target,
                "nodes": list(planned.topology.nodes[v] for v in planned.topology.demand_ends[k]),
                "rate_bps": demand.rate_bps,
                "max_rate_bps": float(result.planned_rate_bps[k]),
                "alone_max_rate_bps": float(result.alone_max_rate_bps[k]),
                "key_bits": demand.key_bits,
                "paths": [
                    {"nodes": list(path.nodes), "rate_bps": path.rate_bps}
                    for path in result.paths[k]
                ],
            }
        )
    bottlenecks = [
        {
            "between": list(planned.rates[e].between),
            "used_fraction": _fraction(result.link_used_bps[e], float(capacity[e])),
        }
        for e in result.saturated_links
    ]
    return {
        "network": planned.config.name,
        "concurrent_fraction": result.concurrent_fraction,
        "method": result.method,
        "path_lp": {
            "concurrent_fraction": result.path_concurrent_fraction,
            "gap_to_exact": result.path_gap,
            "rounds": result.rounds,
            "paths": result.path_count,
        },
        "links": links,
        "demands": demands,
        "bottlenecks": bottlenecks,
    }


def _fraction(used: float, capacity: float) -> float:
    return float(used) / capacity if capacity > 0 else 0.0


def draw_plan(planned: PlannedNetwork, path: str | Path) -> None:
    """PNG of the topology: links coloured by secret-key rate (log scale), width by use."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import networkx as nx
    from matplotlib.colors import LogNorm

    graph = nx.Graph()
    for node in planned.config.nodes:
        graph.add_node(node.name)
    for rate in planned.rates:
        graph.add_edge(*rate.between)
    positions = (
        nx.kamada_kawai_layout(graph) if len(graph) <= 60 else nx.spring_layout(graph, seed=1)
    )
    rates = np.array([max(r.secret_key_rate_bps, 1e-3) for r in planned.rates])
    norm = LogNorm(vmin=float(rates.min()), vmax=float(max(rates.max(), rates.min() * 10)))
    cmap = plt.get_cmap("viridis")
    used = [
        _fraction(u, r.secret_key_rate_bps)
        for u, r in zip(planned.plan.link_used_bps, planned.rates, strict=True)
    ]
    figure, axes = plt.subplots(figsize=(8, 6))
    nx.draw_networkx_edges(
        graph,
        positions,
        edgelist=[r.between for r in planned.rates],
        edge_color=[cmap(norm(v)) for v in rates],
        width=[1.5 + 4.0 * u for u in used],
        ax=axes,
    )
    trusted = [n.name for n in planned.config.nodes if n.trusted]
    untrusted = [n.name for n in planned.config.nodes if not n.trusted]
    nx.draw_networkx_nodes(graph, positions, nodelist=trusted, node_color="#dddddd", ax=axes)
    if untrusted:
        nx.draw_networkx_nodes(
            graph, positions, nodelist=untrusted, node_color="#f4a6a6", node_shape="s", ax=axes
        )
    if len(graph) <= 40:
        nx.draw_networkx_labels(graph, positions, font_size=9, ax=axes)
    mappable = plt.cm.ScalarMappable(norm=norm, cmap=cmap)
    figure.colorbar(mappable, ax=axes, label="link secret-key rate (bit/s)")
    lam = planned.plan.concurrent_fraction
    axes.set_title(
        f"{planned.config.name}: every demand served at {min(lam, 1.0):.3g} x its rate"
        + (f" (headroom x{lam:.3g})" if lam > 1 and math.isfinite(lam) else "")
        + "\nline width: share of the link's key used by the plan"
    )
    axes.set_axis_off()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
