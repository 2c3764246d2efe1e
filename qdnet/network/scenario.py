"""``qdnet network simulate``: taps and failures, link schedules, the run, its JSON and plot."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from qdnet.network.config import link_config
from qdnet.network.plan import Method
from qdnet.network.planning import PlannedNetwork, plan_network
from qdnet.network.rates import LinkRate, modelled_link_rate
from qdnet.network.simulation import (
    INTERCEPT_RESEND_QBER,
    LinkEvent,
    LinkSchedule,
    Routing,
    SimulationResult,
    shor_preskill_fraction,
    simulate_network,
)
from qdnet.units import parse_duration_s

#: Secret bits per block of a link modelled without a block size: one second of key.
ASYMPTOTIC_BLOCK_S = 1.0

_EVENT = re.compile(
    r"^(?P<a>[^-@\s]+)-(?P<b>[^@\s]+)@(?P<at>[^:+\s]+)(?::(?P<f>[^+\s]+)|\+(?P<d>\S+))?$"
)


def _find_link(planned: PlannedNetwork, a: str, b: str, option: str, text: str) -> int:
    for rate in planned.rates:
        if set(rate.between) == {a, b}:
            return rate.index
    raise ValueError(f"{option} {text!r}: no link between {a} and {b} in the network")


def parse_tap(text: str, planned: PlannedNetwork) -> LinkEvent:
    """``C-B@2h:0.5``: the link C-B (either order), from 2 h on, intercept fraction 0.5."""
    match = _EVENT.match(text)
    if match is None or match.group("f") is None:
        raise ValueError(f"--tap {text!r}: expected LINK@TIME:FRACTION, e.g. C-B@2h:0.5")
    try:
        fraction = float(match.group("f"))
    except ValueError:
        fraction = math.nan
    if not 0 < fraction <= 1:
        raise ValueError(f"--tap {text!r}: the intercepted fraction must be in (0, 1]")
    link = _find_link(planned, match.group("a"), match.group("b"), "--tap", text)
    return LinkEvent(link, parse_duration_s(match.group("at"), "--tap"), math.inf, fraction)


def parse_fail(text: str, planned: PlannedNetwork) -> LinkEvent:
    """``A-C@3h+1h``: the link A-C down from 3 h for 1 h (``A-C@3h``: for good)."""
    match = _EVENT.match(text)
    if match is None or match.group("f") is not None:
        raise ValueError(f"--fail {text!r}: expected LINK@TIME+DURATION, e.g. A-C@3h+1h")
    link = _find_link(planned, match.group("a"), match.group("b"), "--fail", text)
    start = parse_duration_s(match.group("at"), "--fail")
    duration = (
        math.inf if match.group("d") is None else parse_duration_s(match.group("d"), "--fail")
    )
    return LinkEvent(link, start, duration, None)


def _secret_bits_per_block(
    planned: PlannedNetwork, rate: LinkRate, tap: float
) -> tuple[float, float, float]:
    """(sifted bits per block, mean block time s, secret bits per block) with a tap of ``tap``."""
    config_link = planned.config.links[rate.index]
    if not rate.modelled:
        sifted = config_link.block_bits
        secret = sifted * shor_preskill_fraction(rate.qber)
        block_time = secret / rate.secret_key_rate_bps if secret > 0 else math.inf
        if tap > 0:
            secret = sifted * shor_preskill_fraction(rate.qber + INTERCEPT_RESEND_QBER * tap)
        return sifted, block_time, secret
    if rate.secret_bits_per_block is not None and rate.block_bits is not None:
        sifted, secret = rate.block_bits, rate.secret_bits_per_block
    else:
        sifted = 1.0
        secret = rate.secret_key_rate_bps * ASYMPTOTIC_BLOCK_S
    block_time = secret / rate.secret_key_rate_bps if rate.secret_key_rate_bps > 0 else math.inf
    if tap > 0 and secret > 0:
        config = link_config(planned.config, rate.index, planned.base_dir)
        receiver = config.receiver.model_copy(
            update={
                "misalignment": min(0.5, config.receiver.misalignment + INTERCEPT_RESEND_QBER * tap)
            }
        )
        tapped_rate, *_ = modelled_link_rate(config.model_copy(update={"receiver": receiver}))
        secret *= tapped_rate / rate.secret_key_rate_bps
    return sifted, block_time, secret


def link_schedules(planned: PlannedNetwork, events: list[LinkEvent]) -> list[LinkSchedule]:
    """Each link's blocks and, period by period, secret bits per block and up/down."""
    schedules = []
    for rate in planned.rates:
        mine = [e for e in events if e.link == rate.index]
        taps = [e for e in mine if e.fraction is not None]
        if len(taps) > 1:
            raise ValueError(f"--tap: link {rate.name} is tapped twice")
        sifted, block_time, clean = _secret_bits_per_block(planned, rate, 0.0)
        tapped = clean
        if taps:
            assert taps[0].fraction is not None
            tapped = _secret_bits_per_block(planned, rate, taps[0].fraction)[2]
        cuts = {0.0}
        for e in mine:
            cuts.add(e.start_s)
            if math.isfinite(e.start_s + e.duration_s):
                cuts.add(e.start_s + e.duration_s)
        times = sorted(cuts)
        bits, up = [], []
        for t in times:
            tap_on = any(e.start_s <= t for e in taps)
            down = any(
                e.fraction is None and e.start_s <= t < e.start_s + e.duration_s for e in mine
            )
            bits.append(tapped if tap_on else clean)
            up.append(not down)
        schedules.append(LinkSchedule(sifted, block_time, tuple(times), tuple(bits), tuple(up)))
    return schedules


@dataclass
class SimulatedNetwork:
    """A planned network, the events applied to it and the run."""

    planned: PlannedNetwork
    events: list[LinkEvent]
    result: SimulationResult
    seed: int


def simulate_file(
    path: str | Path,
    duration_s: float,
    seed: int,
    taps: list[str],
    fails: list[str],
    routing: Routing = "key-aware",
    step_s: float = 1.0,
    pool_bits: float = 1e8,
    hop_processing_s: float = 1e-3,
    k_paths: int = 3,
    method: Method = "auto",
    progress: Callable[[int], Callable[[], None]] | None = None,
) -> SimulatedNetwork:
    """Plan a network file, apply taps and failures, and run it for ``duration_s``."""
    planned = plan_network(path, method, k_paths, progress)
    events = [parse_tap(t, planned) for t in taps] + [parse_fail(f, planned) for f in fails]
    if pool_bits <= 0:
        raise ValueError(f"--pool-bits must be > 0, got {pool_bits}")
    schedules = link_schedules(planned, events)
    result = simulate_network(
        planned.topology,
        schedules,
        [rate.length_km for rate in planned.rates],
        [d.key_bits for d in planned.config.demands],
        np.random.default_rng(seed),
        duration_s,
        step_s=step_s,
        routing=routing,
        plan=planned.plan,
        k_paths=k_paths,
        pool_bits=pool_bits,
        hop_processing_s=hop_processing_s,
    )
    return SimulatedNetwork(planned, events, result, seed)


def simulation_document(run: SimulatedNetwork) -> dict[str, Any]:
    """The JSON of ``qdnet network simulate --json`` (a public contract, see README)."""
    planned, result = run.planned, run.result
    nodes = planned.topology.nodes
    demands = []
    j = 0
    for k, demand in enumerate(planned.config.demands):
        bits = demand.key_bits
        arrived, served = int(result.counts.arrived[k]), int(result.counts.served[k])
        paths: list[dict[str, Any]] = []
        for path in result.paths[k]:
            rate_bps = float(result.counts.path_served[j]) * bits / result.duration_s
            if rate_bps > 0:
                paths.append({"nodes": [nodes[v] for v in path], "served_bps": rate_bps})
            j += 1
        demands.append(
            {
                "from": demand.source,
                "to": demand.target,
                "rate_bps": demand.rate_bps,
                "planned_rate_bps": float(planned.plan.planned_rate_bps[k]),
                "offered_rate_bps": arrived * bits / result.duration_s,
                "served_rate_bps": served * bits / result.duration_s,
                "requests": arrived,
                "blocking_probability": (arrived - served) / arrived if arrived else 0.0,
                "mean_relay_latency_ms": 1e3 * float(result.counts.latency_sum_s[k]) / served
                if served
                else None,
                "paths": paths,
            }
        )
    links = []
    for e, rate in enumerate(planned.rates):
        links.append(
            {
                "between": list(rate.between),
                "secret_key_rate_bps": rate.secret_key_rate_bps,
                "key_produced_bits": float(result.counts.produced_bits[e]),
                "key_consumed_bits": float(result.counts.consumed_bits[e]),
                "key_discarded_bits": float(result.counts.discarded_bits[e]),
                "blocks_delivered": int(result.counts.blocks_delivered[e]),
                "blocks_refused": int(result.counts.blocks_refused[e]),
                "mean_pool_bits": float(np.mean(result.counts.pool_samples_bits[:, e]))
                if len(result.counts.pool_samples_bits)
                else 0.0,
                "final_pool_bits": float(result.counts.final_pool_bits[e]),
            }
        )
    return {
        "network": planned.config.name,
        "duration_s": result.duration_s,
        "step_s": result.step_s,
        "seed": run.seed,
        "routing": result.routing,
        "events": [
            {
                "kind": "tap" if ev.fraction is not None else "fail",
                "between": list(planned.rates[ev.link].between),
                "start_s": ev.start_s,
                "duration_s": ev.duration_s if math.isfinite(ev.duration_s) else None,
                "fraction": ev.fraction,
            }
            for ev in run.events
        ],
        "demands": demands,
        "links": links,
        "pools": {
            "times_s": result.pool_times_s.tolist(),
            "bits": {
                "-".join(rate.between): result.counts.pool_samples_bits[:, e].tolist()
                for e, rate in enumerate(planned.rates)
            },
        },
        "engine": {
            "events": result.events,
            "wall_s": result.wall_s,
            "events_per_s": result.events / result.wall_s if result.wall_s > 0 else None,
        },
    }


def draw_pools(run: SimulatedNetwork, path: str | Path) -> None:
    """PNG of every link's pool over time, taps and failures shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    result, planned = run.result, run.planned
    figure, axes = plt.subplots(figsize=(9, 5))
    hours = result.pool_times_s / 3600.0
    shown = range(len(planned.rates)) if len(planned.rates) <= 20 else []
    for e in shown:
        axes.plot(hours, result.counts.pool_samples_bits[:, e] / 1e6, label=planned.rates[e].name)
    end_h = result.duration_s / 3600.0
    for event in run.events:
        stop = min(event.start_s + event.duration_s, result.duration_s) / 3600.0
        colour = "#d62728" if event.fraction is not None else "#7f7f7f"
        axes.axvspan(event.start_s / 3600.0, stop, color=colour, alpha=0.12)
        label = "tap" if event.fraction is not None else "down"
        axes.text(
            event.start_s / 3600.0, 0, f" {label} {planned.rates[event.link].name}", color=colour
        )
    axes.set_xlim(0, end_h)
    axes.set_xlabel("time (h)")
    axes.set_ylabel("key in pool (Mbit)")
    axes.set_title(f"{planned.config.name}: key pools ({result.routing} routing)")
    if shown:
        axes.legend(fontsize=8, ncol=2)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
