"""Monte Carlo throughput: pulses/s of the per-pulse and event-skipping paths, peak memory, SeQUeNCe.

    .venv/bin/python benchmarks/montecarlo.py [--tiny] [--workers N]

Prints a table and one JSON line per figure. BB84 with the quantum-dot source of
``examples/links/telecom-dot-bb84.yaml`` at 0, 50 and 100 km; BBM92 with the GaAs dot at 10 km
(extraction 0.2, so coincidences remain); the same BB84 link (10 km) with SeQUeNCe (``pip install
sequence``, benchmark-only extra ``bench``), as a ratio of simulated pulses per wall second.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

from qdnet.config import load_link
from qdnet.simulation.runner import simulate

ROOT = Path(__file__).resolve().parents[1]


def _rate(link_name: str, overrides: list[str], pulses: int, method: str, workers: int) -> float:
    link = load_link(ROOT / "examples" / "links" / f"{link_name}.yaml", overrides)
    simulate(
        link, min(pulses, 1_000_000), np.random.default_rng(0), method=method, keep_records=False
    )
    start = time.perf_counter()
    simulate(
        link, pulses, np.random.default_rng(1), method=method, keep_records=False, workers=workers
    )
    return pulses / (time.perf_counter() - start)


def _sequence_rate(pulses: int) -> float | None:
    """SeQUeNCe BB84 between two QKDNodes over 10 km at 80 MHz, mu 0.025: simulated pulses per second."""
    try:
        from sequence.components.optical_channel import ClassicalChannel, QuantumChannel
        from sequence.kernel.timeline import Timeline
        from sequence.qkd.BB84 import pair_bb84_protocols
        from sequence.topology.node import QKDNode
    except ImportError:
        return None

    class _Parent:
        def __init__(self, length: int) -> None:
            self.length = length
            self.keys: list[int] = []

        def get_key_event(self, key: int) -> None:
            self.keys.append(key)

    tl = Timeline(1e12)
    alice, bob = QKDNode("alice", tl, stack_size=1), QKDNode("bob", tl, stack_size=1)
    for node in (alice, bob):
        node.set_seed(0)
    alice.components[alice.lightsource_name].mean_photon_num = 0.025  # type: ignore[attr-defined]
    alice.components[alice.lightsource_name].frequency = 80e6  # type: ignore[attr-defined]
    pair_bb84_protocols(alice.protocol_stack[0], bob.protocol_stack[0])
    for src, dst in ((alice, bob), (bob, alice)):
        qc = QuantumChannel(f"qc_{src.name}", tl, attenuation=0.00018, distance=10_000)
        cc = ClassicalChannel(f"cc_{src.name}", tl, distance=10_000)
        qc.set_ends(src, dst.name)
        cc.set_ends(src, dst.name)
    parent = _Parent(256)
    alice.protocol_stack[0].upper_protocols.append(parent)
    alice.protocol_stack[0].push(256, 1, stop_time=int(pulses / 80e6 * 1e12))
    tl.init()
    start = time.perf_counter()
    tl.stop_time = int(pulses / 80e6 * 1e12) + int(1e9)
    tl.run()
    elapsed = time.perf_counter() - start
    sent = pulses
    return sent / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tiny", action="store_true", help="small runs for CI")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    scale = 1e-3 if args.tiny else 1.0
    figures: list[dict[str, object]] = []
    for km in (0, 50, 100):
        for method, pulses in (("pulse", 2e9), ("event", 1e10 if km else 2e9)):
            n = int(pulses * scale)
            rate = _rate("telecom-dot-bb84", [f"channel.length_km={km}"], n, method, args.workers)
            figures.append(
                {
                    "figure": f"bb84_dot_{km}km_{method}_pulses_per_s",
                    "value": rate,
                    "pulses": n,
                    "workers": args.workers,
                }
            )
    n = int(2e9 * scale)
    rate = _rate(
        "gaas-dot-bbm92",
        ["channel.length_km=10", "source.extraction_efficiency=0.2"],
        n,
        "event",
        1,
    )
    figures.append(
        {"figure": "bbm92_dot_10km_event_pulses_per_s", "value": rate, "pulses": n, "workers": 1}
    )
    ours = _rate("telecom-dot-bb84", ["channel.length_km=10"], int(2e9 * scale), "pulse", 1)
    seq_pulses = int(2e6 * scale) if args.tiny else 2_000_000
    try:
        theirs = _sequence_rate(seq_pulses)
    except Exception as error:  # SeQUeNCe's API differs between versions; report, do not fake
        print(f"SeQUeNCe run failed: {error!r}", file=sys.stderr)
        theirs = None
    if theirs is not None:
        figures.append(
            {"figure": "sequence_bb84_10km_pulses_per_s", "value": theirs, "pulses": seq_pulses}
        )
        figures.append({"figure": "ratio_qdnet_per_pulse_vs_sequence", "value": ours / theirs})
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    figures.append({"figure": "peak_memory_mib", "value": peak_mib})
    print(f"{'figure':<45} {'value':>14}")
    for fig in figures:
        print(f"{fig['figure']:<45} {float(fig['value']):>14.4g}")  # type: ignore[arg-type]
    for fig in figures:
        print(json.dumps(fig))


if __name__ == "__main__":
    main()
