"""Monte Carlo throughput: pulses/s of the per-pulse and event-skipping paths, peak memory, SeQUeNCe.

    .venv/bin/python benchmarks/montecarlo.py [--tiny] [--repeats 3] [--workers N] [--only TEXT]

Prints a table and one JSON line per figure. Every case runs in its own subprocess, so its peak
resident memory (``ru_maxrss``, imports and Numba included) is its own; rates are medians of
``--repeats`` timed runs after one warm-up run (which loads the cached Numba kernels).

Cases: BB84 with the quantum-dot source of ``examples/links/telecom-dot-bb84.yaml`` at 0, 50 and
100 km (per-pulse and event-skipping paths); BBM92 with the GaAs dot at 10 km (extraction 0.2, so
coincidences remain); the 50 km dot link with its records streamed to disk (``--out``), at two run
lengths, to show that memory does not grow with the pulse count; a bright link (0.4 photons per
pulse at 228 MHz, 50 km of 0.2 dB/km fibre, receiver efficiency 0.7: 2.8e7 detections per 1e9
pulses) as detections per second, kernel alone and with its records on disk (``det/s`` column;
issue 14's goal is >= 2e7 with records, on one core); and the BB84 link that SeQUeNCe
simulates (attenuated laser, mean photon number 0.1, 80 MHz, 10 km of 0.2 dB/km fibre), run with
SeQUeNCe's ``QKDNode``/``BB84`` (PyPI ``sequence``, benchmark-only extra ``bench``) and with qdnet,
as a ratio of simulated pulses per wall second. Without ``sequence`` installed the comparison is
skipped with a printed reason. Entanglement swapping between the two GaAs dots of
``examples/entanglement/two-dot-swap.yaml`` (``swap_two_dots``: attempts, i.e. pulse pairs, per
second, and heralds per second in the ``det/s`` column). MDI-QKD over 2 x 10 km (relay in the
middle) with the telecom dots and the decoy lasers of ``examples/links/telecom-*-mdi.yaml``
(``mdi_*_2x10km``: pulse pairs per second, announcements per second in ``det/s``; issue 16's
goal: >= 1e9 pulse pairs/s per core for dots, 1e8 for lasers; one Numba kernel per run, single
threaded).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DOT = "telecom-dot-bb84"
#: The link SeQUeNCe's BB84 example simulates, expressed as overrides of the telecom link.
SEQUENCE_LINK = [
    "channel.length_km=10",
    "channel.attenuation_db_per_km=0.2",
    "source.kind=weak-coherent",
    "source.mean_photon_number=0.1",
]
#: The bright link of issue 14, as overrides of the telecom link.
BRIGHT_LINK = [
    "source.repetition_rate_hz=228e6",
    "source.mean_photon_number=0.4",
    "channel.length_km=50",
    "channel.attenuation_db_per_km=0.2",
    "receiver.efficiency=0.7",
]


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _qdnet_case(case: dict[str, Any]) -> dict[str, Any]:
    """Run one qdnet case in this (child) process."""
    import numpy as np

    from qdnet.config import load_link
    from qdnet.simulation.runner import simulate

    link = load_link(ROOT / "examples" / "links" / f"{case['link']}.yaml", case["overrides"])
    pulses = int(case["pulses"])
    method = case["method"]
    workers = int(case.get("workers", 1))
    simulate(link, min(pulses, 1_000_000), np.random.default_rng(0), method=method)
    times: list[float] = []
    detections = 0
    for repeat in range(int(case["repeats"])):
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "run" if case.get("records") else None
            start = time.perf_counter()
            result = simulate(
                link,
                pulses,
                np.random.default_rng(1 + repeat),
                method=method,
                keep_records=False,
                workers=workers,
                out=out,
            )
            times.append(time.perf_counter() - start)
        detections = int(sum(result.statistics.detections))
    median = statistics.median(times)
    return {
        "pulses_per_s": pulses / median,
        "detections_per_s": detections / median,
        "seconds": median,
        "detections": detections,
        "peak_rss_mib": _peak_mib(),
    }


def _swap_case(case: dict[str, Any]) -> dict[str, Any]:
    """The swapping Monte Carlo of one scenario (attempts = pulse pairs)."""
    import numpy as np

    from qdnet.interference.scenario import swap_setup
    from qdnet.simulation.swapping import simulate_swap

    setup = swap_setup(ROOT / "examples" / "entanglement" / f"{case['scenario']}.yaml")
    left, right = setup.pairs
    bsm = setup.measurements[0]
    attempts = int(case["pulses"])
    times: list[float] = []
    heralds = 0
    for repeat in range(int(case["repeats"])):
        start = time.perf_counter()
        result = simulate_swap(left, right, bsm, attempts, np.random.default_rng(1 + repeat))
        times.append(time.perf_counter() - start)
        heralds = sum(result.heralds.values())
    median = statistics.median(times)
    return {
        "pulses_per_s": attempts / median,
        "detections_per_s": heralds / median,
        "seconds": median,
        "detections": heralds,
        "peak_rss_mib": _peak_mib(),
    }


def _mdi_case(case: dict[str, Any]) -> dict[str, Any]:
    """The MDI-QKD Monte Carlo of one link (pulses = pulse pairs)."""
    import numpy as np

    from qdnet.config import load_link
    from qdnet.simulation.mdi import simulate_mdi

    link = load_link(ROOT / "examples" / "links" / f"{case['link']}.yaml", case["overrides"])
    pulses = int(case["pulses"])
    simulate_mdi(link, min(pulses, 1_000_000), np.random.default_rng(0))  # warm-up
    times: list[float] = []
    announced = 0
    for repeat in range(int(case["repeats"])):
        start = time.perf_counter()
        result = simulate_mdi(link, pulses, np.random.default_rng(1 + repeat))
        times.append(time.perf_counter() - start)
        announced = sum(row.successes for row in result.rows)
    median = statistics.median(times)
    return {
        "pulses_per_s": pulses / median,
        "detections_per_s": announced / median,
        "seconds": median,
        "detections": announced,
        "peak_rss_mib": _peak_mib(),
    }


def _sequence_case(case: dict[str, Any]) -> dict[str, Any]:
    """SeQUeNCe BB84 between two QKDNodes (polarisation encoding) over the same link."""
    try:
        import numpy as np
        from sequence.components.optical_channel import ClassicalChannel, QuantumChannel
        from sequence.kernel.timeline import Timeline
        from sequence.qkd.BB84 import pair_bb84_protocols
        from sequence.topology.node import QKDNode
    except ImportError as error:
        return {"skipped": f"SeQUeNCe not installed ({error}); pip install -e '.[bench]'"}

    frequency, mu, km = 80e6, 0.1, 10.0
    times: list[float] = []
    rates: list[float] = []
    sifted: list[int] = []
    for repeat in range(int(case["repeats"])):
        np.random.seed(repeat)  # SeQUeNCe's BB84 draws bases and bits from NumPy's global state
        tl = Timeline()
        tl.show_progress = False
        alice = QKDNode("alice", tl, stack_size=1)
        bob = QKDNode("bob", tl, stack_size=1)
        alice.set_seed(2 * repeat)
        bob.set_seed(2 * repeat + 1)
        alice.update_lightsource_params("frequency", frequency)
        alice.update_lightsource_params("mean_photon_num", mu)
        pair_bb84_protocols(alice.protocol_stack[0], bob.protocol_stack[0])
        for src, dst in ((alice, bob), (bob, alice)):
            QuantumChannel(f"qc.{src.name}", tl, attenuation=0.2e-3, distance=km * 1e3).set_ends(
                src, dst.name
            )
            ClassicalChannel(f"cc.{src.name}", tl, distance=km * 1e3).set_ends(src, dst.name)
        protocol = alice.protocol_stack[0]
        source = alice.components[protocol.ls_name]
        sent = [0]
        emit = source.emit

        def counting_emit(states: list[Any], emit: Any = emit, sent: list[int] = sent) -> None:
            sent[0] += len(states)
            emit(states)

        source.emit = counting_emit
        # Simulated time of the requested pulse count bounds the wall time of the run.
        tl.stop_time = int(case["pulses"] / frequency * 1e12)
        tl.init()
        protocol.push(256, 10**9)
        start = time.perf_counter()
        tl.run()
        elapsed = time.perf_counter() - start
        times.append(elapsed)
        rates.append(sent[0] / elapsed)
        sifted.append(len(protocol.throughputs) * 256 + len(protocol.key_bits))
    return {
        "pulses_per_s": statistics.median(rates),
        "seconds": statistics.median(times),
        "sifted_bits": sifted[-1],
        "peak_rss_mib": _peak_mib(),
    }


def _run_child(case: dict[str, Any]) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, __file__, "--case", json.dumps(case)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"}
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tiny", action="store_true", help="small runs for CI (seconds)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per case (median)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--only", default="", help="run only the cases whose name contains this")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        case = json.loads(args.case)
        runners = {"sequence": _sequence_case, "swap": _swap_case, "mdi": _mdi_case}
        runner = runners.get(case["kind"], _qdnet_case)
        print(json.dumps(runner(case)))
        return
    scale = 1e-3 if args.tiny else 1.0
    repeats = 1 if args.tiny else args.repeats
    cases: list[dict[str, Any]] = []
    for km in (0, 50, 100):
        for method, pulses in (("pulse", 1e9), ("event", 1e10 if km else 1e9)):
            cases.append(
                {
                    "figure": f"bb84_dot_{km}km_{method}",
                    "link": DOT,
                    "overrides": [f"channel.length_km={km}"],
                    "method": method,
                    "pulses": pulses * scale,
                    "workers": args.workers,
                }
            )
    cases.append(
        {
            "figure": "bbm92_dot_10km_event",
            "link": "gaas-dot-bbm92",
            "overrides": ["channel.length_km=10", "source.extraction_efficiency=0.2"],
            "method": "event",
            "pulses": 1e10 * scale,
        }
    )
    for pulses in (1e9, 4e9):
        cases.append(
            {
                "figure": f"bb84_dot_50km_event_records_{pulses:.0e}",
                "link": DOT,
                "overrides": ["channel.length_km=50"],
                "method": "event",
                "pulses": pulses * scale,
                "records": True,
            }
        )
    for records in (False, True):
        cases.append(
            {
                "figure": f"bright_dot_50km_event_{'records' if records else 'kernel'}",
                "link": DOT,
                "overrides": BRIGHT_LINK,
                "method": "event",
                "pulses": 1e9 * scale,
                "records": records,
            }
        )
    for method in ("pulse", "event"):
        cases.append(
            {
                "figure": f"sequence_link_qdnet_{method}",
                "link": DOT,
                "overrides": SEQUENCE_LINK,
                "method": method,
                "pulses": 1e9 * scale,
            }
        )
    cases.append(
        {
            "figure": "swap_two_dots",
            "kind": "swap",
            "scenario": "two-dot-swap",
            "pulses": 1e10 * scale,
        }
    )
    for name, pulses in (("dot", 1e11), ("laser", 5e8)):
        cases.append(
            {
                "figure": f"mdi_{name}_2x10km",
                "kind": "mdi",
                "link": f"telecom-{name}-mdi",
                "overrides": ["channel.length_km=20"],
                "pulses": pulses * scale,
            }
        )
    cases.append(
        {"figure": "sequence_bb84_10km", "kind": "sequence", "pulses": 1e5 if args.tiny else 6e5}
    )
    cases = [case for case in cases if args.only in case["figure"]]
    results: dict[str, dict[str, Any]] = {}
    header = f"{'case':<38} {'pulses':>9} {'pulses/s':>11} {'det/s':>11} {'s':>7} {'peak MiB':>9}"
    print(header, flush=True)
    for case in cases:
        case.setdefault("kind", "qdnet")
        case["repeats"] = repeats
        out = _run_child(case)
        results[case["figure"]] = out
        if "pulses_per_s" in out:
            print(
                f"{case['figure']:<38} {case['pulses']:>9.3g} {out['pulses_per_s']:>11.4g}"
                f" {out.get('detections_per_s', float('nan')):>11.4g}"
                f" {out['seconds']:>7.3f} {out['peak_rss_mib']:>9.1f}",
                flush=True,
            )
        else:
            print(f"{case['figure']:<38} {out.get('skipped') or out.get('error')}", flush=True)
    theirs = results.get("sequence_bb84_10km", {}).get("pulses_per_s")
    for method in ("pulse", "event"):
        ours = results.get(f"sequence_link_qdnet_{method}", {}).get("pulses_per_s")
        if theirs and ours:
            ratio = ours / theirs
            results[f"ratio_qdnet_{method}_vs_sequence"] = {"value": ratio}
            print(f"{'ratio qdnet ' + method + ' / SeQUeNCe':<38} {ratio:>21.4g}x")
    peak = max(r.get("peak_rss_mib", 0.0) for r in results.values())
    results["peak_rss_mib_max"] = {"value": peak}
    for name, out in results.items():
        print(json.dumps({"figure": name, **out}))


if __name__ == "__main__":
    main()
