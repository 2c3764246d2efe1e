"""A trusted-node network over time: key blocks fill pools, demands draw relayed keys from them.

Model (time-stepped, step ``step_s``; every random draw from the caller's seeded
``numpy.random.Generator``, passed into the Numba kernel):

- **Links** deliver post-processed key blocks. A block of ``n`` sifted bits fills in a time
  Gamma(n, T/n) (sifted bits arrive as a Poisson process of mean rate n/T, so the time to the n-th
  is Erlang), T = secret bits per block / secret-key rate; it then adds its secret bits to the
  link's **pool** (the same key at both ends), up to ``pool_bits``; key beyond it is discarded. A
  modelled link's block is ``protocol.block_size`` sifted bits and its secret bits per block come
  from the finite-key model (an asymptotic link delivers one-second blocks); a link given by
  ``key_rate_bps`` delivers ``block_bits`` sifted bits with ``block_bits * (1 - 1.16 h(q) - h(q))``
  secret bits (the one-way bound at its ``qber`` with a typical EC efficiency, Shor and Preskill,
  PRL 85, 441 (2000)).
- **Taps** (intercept-resend on a fraction f of the photons, Bennett et al. 1992) add 0.25 f to the
  error rate from their start: a modelled link is re-optimised with its misalignment raised by
  0.25 f, a given link's QBER rises by 0.25 f; where that leaves no secret key the link's
  post-processing refuses every block (counted as refused), otherwise each block is shorter.
- **Failures** stop a link's blocks for their duration.
- **Demands** issue requests of ``key_bits`` as a Poisson process of rate ``rate_bps / key_bits``;
  a request is served at once if every link of its path holds ``key_bits`` in its pool (each hop
  then spends them: one-time-pad relay), else it is **blocked** (not queued). Demands are served in
  a rotating order each step. The relay latency of a request is 5 us per km of fibre plus
  ``hop_processing_s`` per hop.
- **Routing**: ``shortest`` always takes the demand's fewest-hop path; ``key-aware`` takes, request
  batch by batch, the candidate path (k shortest) whose emptiest pool holds the most key, so a
  drained (tapped, failed) link is routed around; ``planned`` admits on each path of the flow plan
  (:mod:`qdnet.network.plan`) at most the plan's rate (a token bucket of ``burst_s`` seconds), so
  that served rates converge to the plan's where the network delivers it.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, fields
from typing import Any, Literal

import networkx as nx
import numpy as np
from numba import njit
from numpy.typing import NDArray

from qdnet.network.plan import Plan, Topology

#: Fibre propagation delay, s per km (group index ~1.47: c / 1.47 = 2.04e5 km/s).
FIBRE_DELAY_S_PER_KM = 5e-6
#: Error-correction efficiency assumed for links given by their key rate.
GIVEN_LINK_EC_EFFICIENCY = 1.16
#: Error rate an intercept-resend attack adds per unit of intercepted fraction (BB84, Z basis).
INTERCEPT_RESEND_QBER = 0.25

Routing = Literal["shortest", "key-aware", "planned"]
_ROUTING_CODES = {"shortest": 0, "key-aware": 1, "planned": 2}


@dataclass(frozen=True)
class LinkEvent:
    """A tap (``fraction`` > 0) or a failure (``fraction`` None) of one link from a time."""

    link: int
    start_s: float
    duration_s: float = math.inf
    fraction: float | None = None


@dataclass(frozen=True)
class LinkSchedule:
    """What one link delivers: blocks of ``block_sifted_bits`` every ``block_time_s`` on average
    (inf: never), and from each of ``times_s`` on, the secret bits per block and whether it is up.
    A block that completes while the link is down is lost; one with 0 secret bits is refused."""

    block_sifted_bits: float
    block_time_s: float
    times_s: tuple[float, ...]
    secret_bits_per_block: tuple[float, ...]
    up: tuple[bool, ...]


@dataclass
class Counts:
    """What a run counted (arrays by demand, path or link), filled in place by the kernel."""

    arrived: NDArray[np.int64]
    served: NDArray[np.int64]
    path_served: NDArray[np.int64]
    latency_sum_s: NDArray[np.float64]
    produced_bits: NDArray[np.float64]
    consumed_bits: NDArray[np.float64]
    discarded_bits: NDArray[np.float64]
    blocks_delivered: NDArray[np.int64]
    blocks_refused: NDArray[np.int64]
    pool_samples_bits: NDArray[np.float64]
    final_pool_bits: NDArray[np.float64]


def kernel_outputs(counts: Counts) -> tuple[NDArray[Any], ...]:
    """The arrays of ``counts`` in field order (the kernel's trailing arguments)."""
    return tuple(getattr(counts, f.name) for f in fields(counts))


@dataclass
class SimulationResult:
    """One run: its counts, the candidate paths per demand and the engine's speed."""

    duration_s: float
    step_s: float
    routing: str
    paths: list[list[tuple[int, ...]]]
    counts: Counts
    pool_times_s: NDArray[np.float64]
    events: int
    wall_s: float = 0.0


def shor_preskill_fraction(qber: float) -> float:
    """Secret fraction 1 - f h(q) - h(q) of a given link's sifted bits (0 when negative)."""
    if qber <= 0:
        return 1.0
    if qber >= 0.5:
        return 0.0
    h = -qber * math.log2(qber) - (1 - qber) * math.log2(1 - qber)
    return max(0.0, 1.0 - GIVEN_LINK_EC_EFFICIENCY * h - h)


def candidate_paths(topology: Topology, k_paths: int) -> list[list[tuple[int, ...]]]:
    """Each demand's k fewest-hop paths through trusted relays (Yen's algorithm)."""
    graph = topology.graph()
    out: list[list[tuple[int, ...]]] = []
    for s, t in topology.demand_ends:
        sub = graph.subgraph(topology.relay_nodes(s, t))
        out.append(
            [tuple(p) for p in itertools.islice(nx.shortest_simple_paths(sub, s, t), k_paths)]
        )
    return out


def _csr(rows: list[list[int]]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    pointer = np.zeros(len(rows) + 1, dtype=np.int64)
    pointer[1:] = np.cumsum([len(r) for r in rows])
    flat = np.array([v for r in rows for v in r], dtype=np.int64)
    return pointer, flat


def simulate_network(
    topology: Topology,
    schedules: list[LinkSchedule],
    length_km: list[float | None],
    key_bits: list[int],
    rng: np.random.Generator,
    duration_s: float,
    step_s: float = 1.0,
    routing: Routing = "key-aware",
    plan: Plan | None = None,
    k_paths: int = 3,
    pool_bits: float = 1e8,
    hop_processing_s: float = 1e-3,
    burst_s: float = 60.0,
    pool_samples: int = 240,
) -> SimulationResult:
    """Run the network for ``duration_s`` (see the module docstring for the model)."""
    import time

    if duration_s <= 0 or step_s <= 0 or step_s > duration_s:
        raise ValueError(
            f"--duration and --step must be > 0 with step <= duration, got {duration_s} s, {step_s} s"
        )
    if routing not in _ROUTING_CODES:
        raise ValueError(f"--routing {routing!r}: expected shortest, key-aware or planned")
    if routing == "planned" and plan is None:
        raise ValueError("planned routing needs the network's plan")
    steps = math.ceil(duration_s / step_s)
    paths = candidate_paths(topology, k_paths)
    path_rate = [[0.0] * len(p) for p in paths]
    if plan is not None and routing == "planned":
        name_index = {name: i for i, name in enumerate(topology.nodes)}
        paths, path_rate = [], []
        for flows in plan.paths:
            paths.append([tuple(name_index[n] for n in flow.nodes) for flow in flows])
            path_rate.append([flow.rate_bps for flow in flows])
    edge_of = {}
    for e, (u, v) in enumerate(topology.edges):
        edge_of[(u, v)] = edge_of[(v, u)] = e
    flat_paths = [p for per_demand in paths for p in per_demand]
    demand_path_ptr, _ = _csr([list(range(len(p))) for p in paths])
    path_edges_ptr, path_edges = _csr(
        [[edge_of[h] for h in itertools.pairwise(p)] for p in flat_paths]
    )
    latency = np.array(
        [
            sum(
                FIBRE_DELAY_S_PER_KM * (length_km[edge_of[h]] or 0.0) + hop_processing_s
                for h in itertools.pairwise(p)
            )
            for p in flat_paths
        ]
    )
    token_rate = np.array([r for per_demand in path_rate for r in per_demand], dtype=np.float64)
    sched_ptr, _ = _csr([list(range(len(s.times_s))) for s in schedules])
    sched_time = np.array([t for s in schedules for t in s.times_s], dtype=np.float64)
    sched_bits = np.array([b for s in schedules for b in s.secret_bits_per_block], dtype=np.float64)
    sched_up = np.array([u for s in schedules for u in s.up], dtype=np.bool_)
    shape = np.array([max(s.block_sifted_bits, 1.0) for s in schedules], dtype=np.float64)
    block_s = np.array([s.block_time_s for s in schedules], dtype=np.float64)
    sample_every = max(1, steps // max(pool_samples, 1))
    n_samples = steps // sample_every
    K, E, P = len(key_bits), len(schedules), len(flat_paths)
    counts = Counts(
        arrived=np.zeros(K, dtype=np.int64),
        served=np.zeros(K, dtype=np.int64),
        path_served=np.zeros(P, dtype=np.int64),
        latency_sum_s=np.zeros(K),
        produced_bits=np.zeros(E),
        consumed_bits=np.zeros(E),
        discarded_bits=np.zeros(E),
        blocks_delivered=np.zeros(E, dtype=np.int64),
        blocks_refused=np.zeros(E, dtype=np.int64),
        pool_samples_bits=np.zeros((n_samples, E)),
        final_pool_bits=np.zeros(E),
    )
    start = time.perf_counter()
    events = _run(
        rng,
        steps,
        float(step_s),
        _ROUTING_CODES[routing],
        topology.demand_rate_bps / np.array(key_bits, dtype=np.float64),
        np.array(key_bits, dtype=np.float64),
        demand_path_ptr,
        path_edges_ptr,
        path_edges,
        latency,
        token_rate,
        float(burst_s),
        sched_ptr,
        sched_time,
        sched_bits,
        sched_up,
        shape,
        block_s,
        float(pool_bits),
        sample_every,
        *kernel_outputs(counts),
    )
    wall = time.perf_counter() - start
    return SimulationResult(
        duration_s=steps * step_s,
        step_s=step_s,
        routing=routing,
        paths=paths,
        counts=counts,
        pool_times_s=(np.arange(n_samples, dtype=np.float64) + 1.0) * (sample_every * step_s),
        events=int(events),
        wall_s=wall,
    )


@njit(cache=True)
def _bottleneck(
    pool: NDArray[np.float64],
    path_edges_ptr: NDArray[np.int64],
    path_edges: NDArray[np.int64],
    p: int,
    bits: float,
) -> int:  # pragma: no cover
    """How many requests of ``bits`` path p's emptiest pool can serve."""
    least = np.inf
    for i in range(path_edges_ptr[p], path_edges_ptr[p + 1]):
        least = min(least, pool[path_edges[i]])
    return int(least // bits)


@njit(cache=True)
def _run(  # pragma: no cover - compiled
    rng: np.random.Generator,
    steps: int,
    dt: float,
    routing: int,
    request_rate_hz: NDArray[np.float64],
    key_bits: NDArray[np.float64],
    demand_path_ptr: NDArray[np.int64],
    path_edges_ptr: NDArray[np.int64],
    path_edges: NDArray[np.int64],
    latency_s: NDArray[np.float64],
    token_rate_bps: NDArray[np.float64],
    burst_s: float,
    sched_ptr: NDArray[np.int64],
    sched_time: NDArray[np.float64],
    sched_bits: NDArray[np.float64],
    sched_up: NDArray[np.bool_],
    shape: NDArray[np.float64],
    block_s: NDArray[np.float64],
    pool_bits: float,
    sample_every: int,
    arrived: NDArray[np.int64],
    served: NDArray[np.int64],
    path_served: NDArray[np.int64],
    latency_sum: NDArray[np.float64],
    produced: NDArray[np.float64],
    consumed: NDArray[np.float64],
    discarded: NDArray[np.float64],
    delivered: NDArray[np.int64],
    refused: NDArray[np.int64],
    samples: NDArray[np.float64],
    pool: NDArray[np.float64],
) -> int:
    K = request_rate_hz.shape[0]
    E = shape.shape[0]
    P = latency_s.shape[0]
    n_samples = samples.shape[0]
    tokens = np.zeros(P)
    period = np.zeros(E, dtype=np.int64)
    next_block = np.zeros(E)
    for e in range(E):
        period[e] = sched_ptr[e]
        if np.isfinite(block_s[e]):
            next_block[e] = rng.gamma(shape[e], block_s[e] / shape[e])
        else:
            next_block[e] = np.inf
    events = 0
    for step in range(steps):
        t_end = (step + 1) * dt
        for e in range(E):
            while next_block[e] <= t_end:
                t_block = next_block[e]
                while period[e] + 1 < sched_ptr[e + 1] and sched_time[period[e] + 1] <= t_block:
                    period[e] += 1
                j = period[e]
                if sched_up[j]:
                    if sched_bits[j] > 0:
                        room = pool_bits - pool[e]
                        add = min(room, sched_bits[j])
                        pool[e] += add
                        discarded[e] += sched_bits[j] - add
                        produced[e] += sched_bits[j]
                        delivered[e] += 1
                    else:
                        refused[e] += 1
                    events += 1
                next_block[e] = t_block + rng.gamma(shape[e], block_s[e] / shape[e])
        if routing == 2:
            for p in range(P):
                tokens[p] = min(tokens[p] + token_rate_bps[p] * dt, token_rate_bps[p] * burst_s)
        offset = step % K if K > 0 else 0
        for jk in range(K):
            k = (offset + jk) % K
            n = rng.poisson(request_rate_hz[k] * dt)
            if n == 0:
                continue
            arrived[k] += n
            events += n
            bits = key_bits[k]
            remaining = n
            first, last = demand_path_ptr[k], demand_path_ptr[k + 1]
            while remaining > 0:
                best = -1
                best_count = 0
                if routing == 0:
                    best = first
                    best_count = _bottleneck(pool, path_edges_ptr, path_edges, first, bits)
                else:
                    for p in range(first, last):
                        count = _bottleneck(pool, path_edges_ptr, path_edges, p, bits)
                        if routing == 2:
                            count = min(count, int(tokens[p] // bits))
                        if count > best_count:
                            best, best_count = p, count
                if best < 0 or best_count <= 0:
                    break
                take = min(remaining, best_count)
                for i in range(path_edges_ptr[best], path_edges_ptr[best + 1]):
                    pool[path_edges[i]] -= take * bits
                    consumed[path_edges[i]] += take * bits
                if routing == 2:
                    tokens[best] -= take * bits
                served[k] += take
                path_served[best] += take
                latency_sum[k] += take * latency_s[best]
                remaining -= take
                if routing == 0:
                    break
        if (step + 1) % sample_every == 0 and (step + 1) // sample_every <= n_samples:
            samples[(step + 1) // sample_every - 1, :] = pool
    return events
