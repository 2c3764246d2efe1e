"""Benchmark: ``qdnet network plan`` and ``simulate`` of trusted-node networks (issue 15).

Usage: ``python benchmarks/network.py [--nodes 100 --links 300 --demands 1000] [--tiny]``.
A random connected network (seeded) whose links are all modelled from the telecom quantum dot
(``examples/links/telecom-dot-bb84.yaml``, finite-key blocks of 1e6 bits) at 5-60 km in 1 km steps,
so equal lengths share one cached optimisation. Times the link rates (first and cached), the
path-form LP, and on the small networks the exact arc LP beside it with the gap. Prints one JSON
line per figure and a table. Goal: plan of 100 nodes / 300 links / 1000 demands under 10 s.

Simulation: 24 h of SECOQC (goal < 1 s) and 24 h of the 100-node network with links given by
their rates in one-second key blocks (goal < 60 s on one core), key-aware routing, one-second
steps; the engine's first call (Numba compilation or cache load) is timed apart.

Up (``--cases up``): ``qdnet network up`` of 5 nodes in a line (links given by 200 kbit/s of key,
780 keys of 256 bits per second and link: more than the relays use), then the load of
benchmarks/kms.py's ``relay_line`` case, whose load generator it reuses: over ``--up-connections``
keep-alive mTLS connections, half run relayed pairs (enc_keys 1 x 256 at node 1 for app-5, relayed
across 4 hops, dec_keys at node 5: ``relay4_pair``), half single-hop pairs beside them (1 -> 2:
``hop1_pair``); pairs per second and p50/p99 of each. Goal: relayed p99 under 50 ms.
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
import time
from pathlib import Path

import networkx as nx
import numpy as np
import yaml

from qdnet.network.config import load_network_config
from qdnet.network.plan import plan
from qdnet.network.planning import topology_of
from qdnet.network.rates import _optimised, link_rates
from qdnet.network.scenario import simulate_file, simulation_document
from qdnet.network.simulation import shor_preskill_fraction

LINK = Path(__file__).resolve().parent.parent / "examples" / "links" / "telecom-dot-bb84.yaml"


def random_network(nodes: int, links: int, demands: int, seed: int) -> dict[str, object]:
    """A connected random network document (a ring plus random chords)."""
    rng = np.random.default_rng(seed)
    graph = nx.cycle_graph(nodes)
    chords = [
        (int(a), int(b))
        for a, b in (rng.choice(nodes, 2, replace=False) for _ in range(20 * links))
        if not graph.has_edge(int(a), int(b))
    ]
    for a, b in chords:
        if graph.number_of_edges() >= links:
            break
        graph.add_edge(a, b)
    pairs = [tuple(int(v) for v in rng.choice(nodes, 2, replace=False)) for _ in range(demands)]
    return {
        "name": f"random-{nodes}",
        "link_defaults": str(LINK),
        "nodes": [{"name": f"N{i}"} for i in range(nodes)],
        "links": [
            {
                "between": [f"N{u}", f"N{v}"],
                "length_km": float(rng.integers(5, 61)),
                "set": {"protocol.block_size": 1e6},
            }
            for u, v in graph.edges
        ],
        "saes": [{"name": f"app{i}", "node": f"N{i}"} for i in range(nodes)],
        "demands": [
            {"from": f"app{a}", "to": f"app{b}", "rate_bps": float(rng.uniform(1e3, 5e4))}
            for a, b in pairs
        ],
    }


def simulation_network(nodes: int, links: int, demands: int, seed: int) -> dict[str, object]:
    """The random network with links given by rates (1-20 kbit/s) in one-second blocks."""
    document = random_network(nodes, links, demands, seed)
    rng = np.random.default_rng(seed + 1)
    del document["link_defaults"]
    fraction = shor_preskill_fraction(0.01)
    for link in document["links"]:  # type: ignore[attr-defined]
        rate = float(rng.uniform(1e3, 2e4))
        link.pop("set")
        link.update({"key_rate_bps": rate, "block_bits": max(rate / fraction, 1e3)})
    for demand in document["demands"]:  # type: ignore[attr-defined]
        demand["rate_bps"] = float(rng.uniform(100, 2000))
    return document


def run_simulation(label: str, path: Path, duration_s: float) -> dict[str, object]:
    """Time one simulation (the engine alone, after a warm-up call)."""
    simulate_file(path, 60.0, 0, [], [])
    start = time.perf_counter()
    run_ = simulate_file(path, duration_s, 1, [], [], routing="key-aware")
    total = time.perf_counter() - start
    engine = simulation_document(run_)["engine"]
    return {
        "benchmark": "network_simulate",
        "network": label,
        "simulated_h": duration_s / 3600,
        "engine_s": round(float(engine["wall_s"]), 3),
        "total_s": round(total, 3),
        "events": engine["events"],
        "events_per_s": round(float(engine["events_per_s"] or 0.0)),
        "goal_s": 1.0 if label == "secoqc" else 60.0,
    }


def run(nodes: int, links: int, demands: int, exact: bool, seed: int) -> dict[str, object]:
    """Time one plan; returns its JSON record."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "net.yaml"
        path.write_text(yaml.safe_dump(random_network(nodes, links, demands, seed)))
        _optimised.cache_clear()
        start = time.perf_counter()
        config = load_network_config(path)
        rates = link_rates(config, path.parent)
        rates_s = time.perf_counter() - start
        start = time.perf_counter()
        link_rates(config, path.parent)
        cached_s = time.perf_counter() - start
        topology = topology_of(config, rates)
        start = time.perf_counter()
        paths = plan(topology, "paths")
        paths_s = time.perf_counter() - start
        record: dict[str, object] = {
            "benchmark": "network_plan",
            "nodes": nodes,
            "links": links,
            "demands": demands,
            "link_rates_s": round(rates_s, 3),
            "link_rates_cached_s": round(cached_s, 4),
            "distinct_link_models": _optimised.cache_info().currsize,
            "path_lp_s": round(paths_s, 3),
            "plan_total_s": round(rates_s + paths_s, 3),
            "lambda": paths.concurrent_fraction,
            "path_lp_rounds": paths.rounds,
            "path_lp_columns": paths.path_count,
            "goal_s": 10.0,
        }
        if exact:
            start = time.perf_counter()
            arc = plan(topology, "exact")
            record["exact_lp_s"] = round(time.perf_counter() - start, 3)
            record["gap_to_exact"] = 1.0 - paths.concurrent_fraction / arc.concurrent_fraction
        return record


def line_network(key_rate_bps: float) -> dict[str, object]:
    """Nodes 1-2-3-4-5 in a line (KMEs kme-1 ... kme-5, as benchmarks/kms.py's relay_line),
    links given by their key rate, SAEs app-1, app-2 and app-5 at nodes 1, 2 and 5."""
    names = [str(i) for i in range(1, 6)]
    return {
        "name": "line-5",
        "nodes": [{"name": n} for n in names],
        "links": [
            {"between": [a, b], "key_rate_bps": key_rate_bps} for a, b in itertools.pairwise(names)
        ],
        "saes": [{"name": f"app-{n}", "node": n} for n in ("1", "2", "5")],
    }


def run_up(conns: int, duration_s: float, warmup_s: float) -> list[dict[str, object]]:
    """``qdnet network up`` of the 5-node line, then benchmarks/kms.py's relay_line load (its
    load generator, reused): relayed pairs 1 -> 5 beside single-hop pairs 1 -> 2."""
    import multiprocessing as mp

    from kms import _load_process, _summary  # benchmarks/kms.py (this script's folder)

    from qdnet.network.runtime.layout import prepare_workdir
    from qdnet.network.runtime.status import wait_for_pools
    from qdnet.network.runtime.supervisor import detach, down

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "line-5.yaml"
        path.write_text(yaml.safe_dump(line_network(2e5)))
        workdir = Path(folder) / "run"
        start = time.perf_counter()
        prepare_workdir(path, workdir, taps=[], fast=True, seed=1, cpu_slots=1)
        state = detach(workdir)
        up_s = time.perf_counter() - start
        try:
            wait_for_pools(workdir, min_bytes=16 * 1024, timeout_s=60)
            urls = {node["kme_id"]: node["kms_url"] for node in state["nodes"].values()}
            args = {
                "case": "relay_line", "urls": urls, "pki": str(Path(state["ca"]).parent),
                "conns": conns, "duration": duration_s, "warmup": warmup_s,
                "t0_wall": time.time() + 2.0,
            }  # fmt: skip
            queue = mp.get_context("spawn").Queue()
            load = mp.get_context("spawn").Process(target=_load_process, args=(args, queue))
            load.start()
            part = queue.get(timeout=duration_s + warmup_s + 120)
            load.join(30)
        finally:
            down(workdir)
    rows: list[dict[str, object]] = []
    for kind in ("relay4_pair", "hop1_pair"):
        res = _summary([{"lat": part["lat"][kind], "errors": part["errors"][kind]}], duration_s)
        rows.append(
            {
                "benchmark": "network_up",
                "network": "line-5 (4 links of 200 kbit/s)",
                "case": kind,
                "connections": conns // 2,
                "up_s": round(up_s, 2),
                "pairs_per_s": round(res["req_per_s"], 1),
                "p50_ms": round(res["p50_ms"], 2),
                "p99_ms": round(res["p99_ms"], 2),
                "errors": res["errors"],
                "first_error": part["first_error"].get(kind),
                "goal_p99_ms": 50.0 if kind == "relay4_pair" else None,
            }
        )
    return rows


def main() -> None:
    """Run the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--links", type=int, default=300)
    parser.add_argument("--demands", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--tiny", action="store_true", help="CI smoke size")
    parser.add_argument(
        "--cases", default="plan,simulate,up", help="comma-separated: plan, simulate, up"
    )
    parser.add_argument(
        "--up-connections", type=int, default=4, help="mTLS connections, half of them relayed"
    )
    args = parser.parse_args()
    cases_run = set(args.cases.split(","))
    if "up" in cases_run:
        duration, warmup = (1.0, 0.3) if args.tiny else (10.0, 1.0)
        for record in run_up(args.up_connections, duration, warmup):
            print(json.dumps(record))
            print(
                f"up {record['case']:>11s}: {record['pairs_per_s']} pairs/s  p50 "
                f"{record['p50_ms']} ms  p99 {record['p99_ms']} ms  ({record['connections']} conns)"
            )
    if "plan" not in cases_run and "simulate" not in cases_run:
        return
    cases = (
        [(12, 24, 20, True)]
        if args.tiny
        else [
            (20, 50, 50, True),
            (40, 100, 200, True),
            (args.nodes, args.links, args.demands, False),
        ]
    )
    records = [run(n, m, k, exact, args.seed) for n, m, k, exact in cases]
    for record in records:
        print(json.dumps(record))
    secoqc = Path(__file__).resolve().parent.parent / "examples" / "networks" / "secoqc-vienna.yaml"
    hours = 1.0 if args.tiny else 24.0
    size = (12, 24, 20) if args.tiny else (args.nodes, args.links, args.demands)
    with tempfile.TemporaryDirectory() as folder:
        big = Path(folder) / "net.yaml"
        big.write_text(yaml.safe_dump(simulation_network(*size, args.seed)))
        sims = [
            run_simulation("secoqc", secoqc, hours * 3600),
            run_simulation(f"random-{size[0]}", big, hours * 3600),
        ]
    for record in sims:
        print(json.dumps(record))
    header = (
        "nodes",
        "links",
        "demands",
        "rates s",
        "cached s",
        "path LP s",
        "total s",
        "exact s",
        "gap",
    )
    print("\n" + " ".join(f"{h:>10s}" for h in header))
    for r in records:
        cells = [
            r["nodes"],
            r["links"],
            r["demands"],
            r["link_rates_s"],
            r["link_rates_cached_s"],
            r["path_lp_s"],
            r["plan_total_s"],
            r.get("exact_lp_s", "-"),
            f"{r['gap_to_exact']:.1e}" if "gap_to_exact" in r else "-",
        ]
        print(" ".join(f"{c!s:>10s}" for c in cells))
    print(
        f"\n{'simulation':>14s} {'hours':>6s} {'engine s':>9s} {'total s':>8s} {'events':>11s} {'events/s':>11s}"
    )
    for r in sims:
        print(
            f"{r['network']!s:>14s} {r['simulated_h']!s:>6s} {r['engine_s']!s:>9s} "
            f"{r['total_s']!s:>8s} {r['events']!s:>11s} {r['events_per_s']!s:>11s}"
        )


if __name__ == "__main__":
    main()
