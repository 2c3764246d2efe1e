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

Up (``--cases up``): ``qdnet network up`` of 5 nodes in a line (links given by 200 kbit/s of key:
780 keys of 256 bits per second and link, above what the relay asks, so supply is no limit), then from one client process, alternating: a relayed key across
4 hops (``enc_keys`` at N0 for the SAE at N4, ``dec_keys`` at N4) and a single-hop key (N0 to its
neighbour N1), one 256-bit key per request, each pair timed as one; p50/p99 of each, and relayed
keys per second from ``--up-clients`` threads requesting relayed keys at once. Goal: relayed
p99 under 50 ms.
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
import threading
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


def line_network(nodes: int, key_rate_bps: float) -> dict[str, object]:
    """``nodes`` nodes in a line, links given by their key rate, an SAE at each node."""
    names = [f"N{i}" for i in range(nodes)]
    return {
        "name": f"line-{nodes}",
        "nodes": [{"name": n} for n in names],
        "links": [
            {"between": [a, b], "key_rate_bps": key_rate_bps} for a, b in itertools.pairwise(names)
        ],
        "saes": [{"name": f"sae-{n}", "node": n} for n in names],
    }


def _percentiles(samples_ms: list[float]) -> dict[str, float]:
    values = np.sort(np.asarray(samples_ms))
    return {
        "p50_ms": round(float(np.percentile(values, 50)), 2),
        "p99_ms": round(float(np.percentile(values, 99)), 2),
        "count": len(values),
    }


def run_up(requests: int, clients: int, duration_s: float) -> dict[str, object]:
    """Time relayed (4 hops) and single-hop key requests on a running 5-node line."""
    import httpx

    from qdnet.kms.client import KMEError, SAEClient
    from qdnet.network.runtime.layout import prepare_workdir
    from qdnet.network.runtime.status import network_status, wait_for_pools
    from qdnet.network.runtime.supervisor import detach, down

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "line-5.yaml"
        path.write_text(yaml.safe_dump(line_network(5, 2e5)))
        workdir = Path(folder) / "run"
        start = time.perf_counter()
        prepare_workdir(path, workdir, taps=[], fast=True, seed=1, cpu_slots=1)
        state = detach(workdir)
        up_s = time.perf_counter() - start
        try:
            wait_for_pools(workdir, min_bytes=16 * 1024, timeout_s=60)

            def client(sae: str) -> SAEClient:
                c = state["saes"][sae]
                return SAEClient(c["kms_url"], c["ca"], c["cert"], c["key"])

            def pair(master: SAEClient, slave: SAEClient, slave_id: str) -> float:
                t = time.perf_counter()
                key = master.enc_keys(slave_id, number=1, size=256)[0]
                got = slave.dec_keys("sae-N0", [key.key_id])[0]
                assert got.key == key.key, "a relayed key differs at its two ends"
                return 1e3 * (time.perf_counter() - t)

            relayed: list[float] = []
            single: list[float] = []
            with client("sae-N0") as a, client("sae-N1") as b, client("sae-N4") as e:
                for _ in range(3):  # connections and handshakes
                    pair(a, e, "sae-N4")
                    pair(a, b, "sae-N1")
                for _ in range(requests):
                    relayed.append(pair(a, e, "sae-N4"))
                    single.append(pair(a, b, "sae-N1"))
            counts = [0] * clients
            failures: list[str] = []
            stop = threading.Event()

            def worker(i: int) -> None:
                with client("sae-N0") as a, client("sae-N4") as e:
                    while not stop.is_set():
                        try:
                            pair(a, e, "sae-N4")
                        except (KMEError, httpx.HTTPError) as error:
                            failures.append(str(error))
                            continue
                        counts[i] += 1

            threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
            t0 = time.perf_counter()
            for t in threads:
                t.start()
            time.sleep(duration_s)
            stop.set()
            for t in threads:
                t.join()
            elapsed = time.perf_counter() - t0
            relay = network_status(workdir)["nodes"]["N2"]["relay"]
        finally:
            down(workdir)
    return {
        "benchmark": "network_up",
        "network": "line-5 (4 links of 200 kbit/s)",
        "up_s": round(up_s, 2),
        "relayed_4_hops": _percentiles(relayed),
        "single_hop": _percentiles(single),
        "relayed_keys_per_s": round(sum(counts) / elapsed, 1),
        "relay_failures": len(failures),
        "first_failure": failures[0] if failures else None,
        "clients": clients,
        "forwarded_at_N2": relay,
        "goal_p99_ms": 50.0,
    }


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
    parser.add_argument("--up-requests", type=int, default=500, help="timed pairs of each kind")
    parser.add_argument("--up-clients", type=int, default=4, help="threads for relayed keys/s")
    args = parser.parse_args()
    cases_run = set(args.cases.split(","))
    if "up" in cases_run:
        record = run_up(
            20 if args.tiny else args.up_requests, args.up_clients, 1.0 if args.tiny else 10.0
        )
        print(json.dumps(record))
        for kind in ("relayed_4_hops", "single_hop"):
            r = record[kind]
            print(f"up {kind:>15s}: p50 {r['p50_ms']} ms  p99 {r['p99_ms']} ms  ({r['count']})")  # type: ignore[index]
        print(f"up relayed keys/s ({args.up_clients} clients): {record['relayed_keys_per_s']}")
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
