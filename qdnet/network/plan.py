"""How much key a trusted-node network can relay to each demand: maximum concurrent flow.

One-time-pad relay (Elliott et al., "Current status of the DARPA quantum network", SPIE 5815 (2005);
ITU-T Y.3803): a key relayed from node s to node t along a path is XORed with one fresh link key
on every hop, so every relayed bit costs one secret bit of every link on its path; link keys are
symmetric, so both directions of a link share its rate ``c_e``. Intermediate nodes must be trusted.

All demands at once, as a **maximum concurrent multi-commodity flow** (Shahrokhi and Matula,
J. ACM 37, 318 (1990)): maximise lambda such that every demand k gets lambda * d_k,

    max lambda   s.t.   sum_k f_k(e) <= c_e  for every link e,   f_k a flow of value lambda d_k,

solved as a linear programme with SciPy's HiGHS (Huangfu and Hall, Math. Prog. Comp. 10, 119
(2018)) in two forms:

- **exact** (arc form): one flow variable per demand and directed arc, flow conservation at every
  node; its size grows as demands x links, so it is for small networks;
- **paths** (path form): one variable per demand and path, started from each demand's k shortest
  paths (Yen's algorithm, by hops) and improved by column generation (Ford and Fulkerson, Manag.
  Sci. 5, 97 (1958)): the capacity duals y_e price every link, a Dijkstra search per source node
  finds each demand's cheapest path, and a path whose price is below the demand's dual enters the
  programme; it stops when none does (then it is optimal, up to the tolerance) or after
  ``max_rounds``. Where both forms run, the plan reports the path form's gap to the exact one.

A demand's **planned rate** is ``min(lambda, 1) * rate_bps``; its **alone** rate is the maximum
flow from its node to its peer's node with the network to itself (a Gomory-Hu tree). The **bottlenecks** are the links that
are saturated at lambda: the cut that limits every demand at once.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import networkx as nx
import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray
from scipy.optimize import linprog
from scipy.sparse.csgraph import dijkstra

#: Arc-form LPs larger than this (demands x directed arcs) use the path form in ``auto``.
EXACT_MAX_VARIABLES = 200_000
#: Relative tolerance of the column-generation pricing.
PRICING_TOLERANCE = 1e-9
#: Flows below this fraction of the demand are dropped from the reported paths.
PATH_FLOW_FLOOR = 1e-9

Method = Literal["auto", "exact", "paths"]


class PlanError(RuntimeError):
    """The linear programme failed (reported with HiGHS's message)."""


@dataclass(frozen=True)
class Topology:
    """Nodes (with trust), undirected links with capacities in bit/s, and demands between nodes."""

    nodes: tuple[str, ...]
    trusted: tuple[bool, ...]
    edges: tuple[tuple[int, int], ...]
    capacity_bps: NDArray[np.float64]
    demand_ends: tuple[tuple[int, int], ...]
    demand_rate_bps: NDArray[np.float64]

    @classmethod
    def build(
        cls,
        nodes: Sequence[tuple[str, bool]],
        links: Sequence[tuple[str, str, float]],
        demands: Sequence[tuple[str, str, float]],
    ) -> Topology:
        """From names: ``nodes`` (name, trusted), ``links`` (a, b, rate), ``demands`` (a, b, rate)."""
        index = {name: i for i, (name, _) in enumerate(nodes)}
        return cls(
            nodes=tuple(name for name, _ in nodes),
            trusted=tuple(trusted for _, trusted in nodes),
            edges=tuple((index[a], index[b]) for a, b, _ in links),
            capacity_bps=np.array([rate for _, _, rate in links], dtype=np.float64),
            demand_ends=tuple((index[a], index[b]) for a, b, _ in demands),
            demand_rate_bps=np.array([rate for _, _, rate in demands], dtype=np.float64),
        )

    @property
    def node_count(self) -> int:
        """Number of nodes."""
        return len(self.nodes)

    def graph(self) -> nx.Graph:
        """Undirected graph of node indices, edge attributes ``index`` and ``capacity``."""
        graph = nx.Graph()
        graph.add_nodes_from(range(self.node_count))
        for e, (u, v) in enumerate(self.edges):
            graph.add_edge(u, v, index=e, capacity=float(self.capacity_bps[e]))
        return graph

    def relay_nodes(self, source: int, target: int) -> list[int]:
        """Nodes a path from source to target may visit: the trusted ones and its two ends."""
        return [v for v in range(self.node_count) if self.trusted[v] or v in (source, target)]


@dataclass(frozen=True)
class PathFlow:
    """Key relayed along one path (node names), bit/s."""

    nodes: tuple[str, ...]
    rate_bps: float


@dataclass
class Plan:
    """The solved plan. ``link_used_bps`` is at the planned rates (lambda capped at 1) and the
    ``saturated_links`` are those whose capacity binds lambda (positive dual price)."""

    concurrent_fraction: float
    method: str
    planned_rate_bps: NDArray[np.float64]
    alone_max_rate_bps: NDArray[np.float64]
    paths: list[list[PathFlow]]
    link_used_bps: NDArray[np.float64]
    saturated_links: list[int]
    rounds: int = 0
    path_count: int = 0
    exact_concurrent_fraction: float | None = None
    path_concurrent_fraction: float | None = None

    @property
    def path_gap(self) -> float | None:
        """Relative gap of the path form's lambda to the exact LP's, where both ran."""
        exact, paths = self.exact_concurrent_fraction, self.path_concurrent_fraction
        if exact is None or paths is None or exact <= 0:
            return None
        return 1.0 - paths / exact


def _arc_lp(topology: Topology) -> tuple[float, NDArray[np.float64], list[int]]:
    """Exact arc-form LP: (lambda, flows[k, arc], binding links); arc 2e = u->v, 2e+1 = v->u."""
    K = len(topology.demand_ends)
    E = len(topology.edges)
    N = topology.node_count
    A = 2 * E
    tails = np.empty(A, dtype=np.int64)
    heads = np.empty(A, dtype=np.int64)
    for e, (u, v) in enumerate(topology.edges):
        tails[2 * e], heads[2 * e] = u, v
        tails[2 * e + 1], heads[2 * e + 1] = v, u
    trusted = np.array(topology.trusted, dtype=bool)
    n_var = K * A + 1
    lam = K * A
    bounds = np.zeros((n_var, 2))
    bounds[:, 1] = np.inf
    rows, cols, vals = [], [], []
    for k, (s, t) in enumerate(topology.demand_ends):
        base = k * A
        allowed = (trusted[tails] | (tails == s)) & (trusted[heads] | (heads == t))
        allowed &= (heads != s) & (tails != t)
        bounds[base : base + A, 1] = np.where(allowed, np.inf, 0.0)
        arcs = np.arange(A)
        rows.extend([k * N + tails, k * N + heads])
        cols.extend([base + arcs, base + arcs])
        vals.extend([np.ones(A), -np.ones(A)])
        d = topology.demand_rate_bps[k]
        rows.append(np.array([k * N + s, k * N + t]))
        cols.append(np.array([lam, lam]))
        vals.append(np.array([-d, d]))
    a_eq = sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(K * N, n_var)
    )
    ub_rows = np.tile(np.repeat(np.arange(E), 2), K)
    ub_cols = np.arange(K * A)
    a_ub = sp.csr_matrix((np.ones(K * A), (ub_rows, ub_cols)), shape=(E, n_var))
    cost = np.zeros(n_var)
    cost[lam] = -1.0
    result = _solve(cost, a_ub, topology.capacity_bps, a_eq, bounds, "exact multi-commodity LP")
    best = float(result.x[lam])
    binding = _binding(np.asarray(result.ineqlin.marginals))
    # Phase 2: at the planned lambda, spend the least link key (no detours, no circulations).
    bounds[lam] = _planned_lambda(best)
    cost = np.ones(n_var)
    cost[lam] = 0.0
    result = _solve(cost, a_ub, topology.capacity_bps, a_eq, bounds, "least-key routing LP")
    return best, np.asarray(result.x[:lam]).reshape(K, A), binding


def _solve(
    cost: NDArray[np.float64],
    a_ub: sp.csr_matrix,
    b_ub: NDArray[np.float64],
    a_eq: sp.csr_matrix,
    bounds: NDArray[np.float64],
    what: str,
) -> Any:
    """HiGHS on ``min cost.x, a_ub x <= b_ub, a_eq x = 0, bounds``; PlanError if it fails."""
    result = linprog(
        cost,
        A_ub=a_ub,
        b_ub=b_ub,
        A_eq=a_eq,
        b_eq=np.zeros(a_eq.shape[0]),
        bounds=bounds,
        method="highs",
    )
    if result.status != 0:
        raise PlanError(f"{what} failed: {result.message}")
    return result


def _binding(marginals: NDArray[np.float64]) -> list[int]:
    """Links whose capacity has a positive price at the optimum: the ones that limit lambda."""
    prices = -marginals
    floor = PRICING_TOLERANCE * max(float(prices.max(initial=0.0)), 1e-300)
    return [int(e) for e in np.flatnonzero(prices > floor)]


def _planned_lambda(best: float) -> float:
    """The lambda a plan routes at: the optimum capped at 1, a hair below it for HiGHS."""
    return min(best, 1.0) * (1.0 - 1e-9)


def _decompose(
    topology: Topology, k: int, arc_flow: NDArray[np.float64]
) -> list[tuple[list[int], float]]:
    """Paths (node indices) and rates of one demand's arc flow; circulations are dropped."""
    s, t = topology.demand_ends[k]
    floor = PATH_FLOW_FLOOR * max(float(arc_flow.max(initial=0.0)), 1e-300)
    residual: dict[tuple[int, int], float] = {}
    for e, (u, v) in enumerate(topology.edges):
        if arc_flow[2 * e] > floor:
            residual[(u, v)] = float(arc_flow[2 * e])
        if arc_flow[2 * e + 1] > floor:
            residual[(v, u)] = float(arc_flow[2 * e + 1])
    paths: list[tuple[list[int], float]] = []
    while True:
        graph = nx.DiGraph()
        graph.add_edges_from((u, v) for (u, v), f in residual.items() if f > floor)
        if s not in graph or t not in graph or not nx.has_path(graph, s, t):
            return paths
        path = nx.shortest_path(graph, s, t)
        hops = list(itertools.pairwise(path))
        amount = min(residual[hop] for hop in hops)
        for hop in hops:
            residual[hop] -= amount
        paths.append((path, amount))


class _PathProgramme:
    """The restricted master LP of the path form and its column generation."""

    def __init__(self, topology: Topology) -> None:
        self.topology = topology
        self.edge_of = {}
        for e, (u, v) in enumerate(topology.edges):
            self.edge_of[(u, v)] = e
            self.edge_of[(v, u)] = e
        self.paths: list[list[tuple[int, ...]]] = [[] for _ in topology.demand_ends]
        self.known: set[tuple[int, tuple[int, ...]]] = set()

    def add(self, k: int, path: Sequence[int]) -> bool:
        """Add a path (node indices) to demand k; False if it was there."""
        key = (k, tuple(path))
        if key in self.known:
            return False
        self.known.add(key)
        self.paths[k].append(tuple(path))
        return True

    def edges_of(self, path: tuple[int, ...]) -> list[int]:
        """Link indices along a path."""
        return [self.edge_of[hop] for hop in itertools.pairwise(path)]

    def solve(
        self, route_at: float | None = None
    ) -> tuple[float, NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
        """(lambda, path flows in column order, capacity duals y_e >= 0, demand duals).

        With ``route_at`` lambda is fixed there and the LP spends the least link key instead.
        """
        topology = self.topology
        K, E = len(topology.demand_ends), len(topology.edges)
        columns = [(k, p) for k in range(K) for p in self.paths[k]]
        n_var = len(columns) + 1
        lam = n_var - 1
        eq_rows = [k for k, _ in columns] + list(range(K))
        eq_cols = list(range(len(columns))) + [lam] * K
        eq_vals = [1.0] * len(columns) + list(-topology.demand_rate_bps)
        a_eq = sp.csr_matrix((eq_vals, (eq_rows, eq_cols)), shape=(K, n_var))
        ub_rows: list[int] = []
        ub_cols: list[int] = []
        for j, (_, path) in enumerate(columns):
            edges = self.edges_of(path)
            ub_rows.extend(edges)
            ub_cols.extend([j] * len(edges))
        a_ub = sp.csr_matrix((np.ones(len(ub_rows)), (ub_rows, ub_cols)), shape=(E, n_var))
        cost = np.zeros(n_var)
        cost[lam] = -1.0
        bounds = np.zeros((n_var, 2))
        bounds[:, 1] = np.inf
        if route_at is not None:
            cost = np.array([len(path) - 1.0 for _, path in columns] + [0.0])
            bounds[lam] = route_at
        result = _solve(cost, a_ub, topology.capacity_bps, a_eq, bounds, "path-form LP")
        y = -np.asarray(result.ineqlin.marginals)
        z = np.asarray(result.eqlin.marginals)
        return float(result.x[lam]), np.asarray(result.x[:lam]), np.maximum(y, 0.0), z

    def price(self, y: NDArray[np.float64], z: NDArray[np.float64]) -> int:
        """Add every demand's cheapest path under prices y if it beats its dual; count added."""
        topology = self.topology
        N = topology.node_count
        weight = y + max(float(y.max(initial=0.0)), 1.0) * 1e-9
        rows, cols, vals = [], [], []
        trusted = topology.trusted
        for e, (u, v) in enumerate(topology.edges):
            for a, b in ((u, v), (v, u)):
                rows.append(a)
                cols.append(b)
                vals.append(weight[e])
        matrix = sp.csr_matrix((vals, (rows, cols)), shape=(N, N))
        # Arcs out of an untrusted node are usable only when it is the source: cut them, and
        # search from an untrusted source on a graph where its own arcs are restored.
        keep = np.array([trusted[a] for a in rows], dtype=bool)
        relay = sp.csr_matrix(
            (np.array(vals)[keep], (np.array(rows)[keep], np.array(cols)[keep])), shape=(N, N)
        )
        added = 0
        by_source: dict[int, list[int]] = {}
        for k, (s, _) in enumerate(topology.demand_ends):
            by_source.setdefault(s, []).append(k)
        trusted_sources = [s for s in by_source if trusted[s]]
        searches: dict[int, tuple[NDArray[np.float64], NDArray[np.int32]]] = {}
        if trusted_sources:
            dist, pred = dijkstra(relay, indices=trusted_sources, return_predecessors=True)
            for i, s in enumerate(trusted_sources):
                searches[s] = (dist[i], pred[i])
        for s in by_source:
            if not trusted[s]:
                own = relay.tolil()
                own[s] = matrix[s]
                dist1, pred1 = dijkstra(own.tocsr(), indices=s, return_predecessors=True)
                searches[s] = (dist1, pred1)
        for s, demands in by_source.items():
            dist, pred = searches[s]
            for k in demands:
                t = topology.demand_ends[k][1]
                if not np.isfinite(dist[t]):
                    continue
                path = [t]
                while path[-1] != s:
                    path.append(int(pred[path[-1]]))
                path.reverse()
                price = float(sum(y[e] for e in self.edges_of(tuple(path))))
                if price < z[k] - PRICING_TOLERANCE * max(abs(float(z[k])), 1e-12) and self.add(
                    k, path
                ):
                    added += 1
        return added


def _initial_paths(programme: _PathProgramme, topology: Topology, k_paths: int) -> None:
    graph = topology.graph()
    for k, (s, t) in enumerate(topology.demand_ends):
        sub = graph.subgraph(topology.relay_nodes(s, t))
        for path in itertools.islice(nx.shortest_simple_paths(sub, s, t), k_paths):
            programme.add(k, path)


def _path_lp(
    topology: Topology, k_paths: int, max_rounds: int
) -> tuple[float, list[list[tuple[list[int], float]]], list[int], int, int]:
    """Path form with column generation: (lambda, paths per demand, binding, rounds, columns)."""
    programme = _PathProgramme(topology)
    _initial_paths(programme, topology, k_paths)
    rounds = 0
    while True:
        lam, flows, y, z = programme.solve()
        rounds += 1
        if rounds >= max_rounds or programme.price(y, z) == 0:
            break
    binding = _binding(-y)
    # Phase 2 on the generated paths: at the planned lambda, spend the least link key.
    _, flows, _, _ = programme.solve(route_at=_planned_lambda(lam))
    per_demand: list[list[tuple[list[int], float]]] = [[] for _ in topology.demand_ends]
    j = 0
    for k, paths in enumerate(programme.paths):
        for path in paths:
            if flows[j] > PATH_FLOW_FLOOR * topology.demand_rate_bps[k] * max(lam, 1e-300):
                per_demand[k].append((list(path), float(flows[j])))
            j += 1
    return lam, per_demand, binding, rounds, j


def alone_max_flow(topology: Topology) -> NDArray[np.float64]:
    """Each demand's maximum flow with the network to itself, bit/s.

    Pairs of trusted nodes read it off a Gomory-Hu tree of the trusted subgraph (Gomory and Hu,
    J. SIAM 9, 551 (1961): all-pairs minimum cuts from N - 1 max flows); a pair with an untrusted
    end gets its own max flow on the nodes it may use.
    """
    graph = topology.graph()
    trusted_nodes = [v for v in range(topology.node_count) if topology.trusted[v]]
    trusted_graph = graph.subgraph(trusted_nodes)
    component_of: dict[int, int] = {}
    trees: list[nx.Graph] = []
    for c, nodes in enumerate(nx.connected_components(trusted_graph)):
        for v in nodes:
            component_of[v] = c
        sub = trusted_graph.subgraph(nodes)
        trees.append(nx.gomory_hu_tree(sub, capacity="capacity") if len(nodes) > 1 else sub)
    out = np.zeros(len(topology.demand_ends))
    for k, (s, t) in enumerate(topology.demand_ends):
        if topology.trusted[s] and topology.trusted[t]:
            if component_of[s] != component_of[t]:
                continue
            tree = trees[component_of[s]]
            path = nx.shortest_path(tree, s, t)
            out[k] = min(tree[a][b]["weight"] for a, b in itertools.pairwise(path))
        else:
            sub = graph.subgraph(topology.relay_nodes(s, t))
            out[k] = nx.maximum_flow_value(sub, s, t, capacity="capacity")
    return out


def plan(
    topology: Topology,
    method: Method = "auto",
    k_paths: int = 3,
    max_rounds: int = 200,
) -> Plan:
    """Solve the maximum concurrent flow of a network (see the module docstring)."""
    K = len(topology.demand_ends)
    if K == 0:
        raise ValueError("the network has no demands to plan")
    if k_paths < 1:
        raise ValueError(f"--paths must be >= 1, got {k_paths}")
    arc_variables = K * 2 * len(topology.edges)
    small = arc_variables <= EXACT_MAX_VARIABLES
    exact_lambda: float | None = None
    path_lambda: float | None = None
    chosen: list[list[tuple[list[int], float]]] = []
    binding: list[int] = []
    rounds = columns = 0
    if method in ("paths", "auto"):
        path_lambda, chosen, binding, rounds, columns = _path_lp(topology, k_paths, max_rounds)
    if method == "exact" or (method == "auto" and small):
        exact_lambda, arc_flows, binding = _arc_lp(topology)
        chosen = [_decompose(topology, k, arc_flows[k]) for k in range(K)]
    chosen_lambda = exact_lambda if exact_lambda is not None else path_lambda
    assert chosen_lambda is not None
    # Flows were routed a hair below the planned lambda (HiGHS feasibility); undo the hair.
    scale = 1.0 / (1.0 - 1e-9)
    used = np.zeros(len(topology.edges))
    edge_of = {}
    for e, (u, v) in enumerate(topology.edges):
        edge_of[(u, v)] = edge_of[(v, u)] = e
    paths: list[list[PathFlow]] = []
    for per_demand in chosen:
        entries = []
        for path, rate in sorted(per_demand, key=lambda item: -item[1]):
            for hop in itertools.pairwise(path):
                used[edge_of[hop]] += rate * scale
            entries.append(PathFlow(tuple(topology.nodes[v] for v in path), rate * scale))
        paths.append(entries)
    return Plan(
        concurrent_fraction=chosen_lambda,
        method="paths" if exact_lambda is None else "exact",
        planned_rate_bps=np.minimum(chosen_lambda, 1.0) * topology.demand_rate_bps,
        alone_max_rate_bps=alone_max_flow(topology),
        paths=paths,
        link_used_bps=used,
        saturated_links=binding,
        rounds=rounds,
        path_count=columns,
        exact_concurrent_fraction=exact_lambda,
        path_concurrent_fraction=path_lambda,
    )
