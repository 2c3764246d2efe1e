"""Benchmark: time for a 100-point optimised finite-key curve per protocol.

Usage: ``python benchmarks/keyrate.py [--points 100] [--block-size 1e8] [--tiny]``.
Prints a table and one JSON line per protocol. Goal (issue 2): under 1 s per curve.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from qdnet.config import load_link
from qdnet.keyrate import sweep

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "links"
CASES = [
    ("bb84 (quantum dot)", "telecom-dot-bb84", (0.0, 40.0)),
    ("decoy-bb84 (laser, Lim 2014)", "telecom-laser-decoy", (0.0, 40.0)),
    ("bbm92 (GaAs dot)", "gaas-dot-bbm92", (0.0, 30.0)),
]


def main() -> None:
    """Run the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--points", type=int, default=100)
    parser.add_argument("--block-size", type=float, default=1e8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tiny", action="store_true", help="5 points, 1 repeat (CI smoke run)")
    args = parser.parse_args()
    points, repeats = (5, 1) if args.tiny else (args.points, args.repeats)
    rows = []
    for label, name, (lo, hi) in CASES:
        overrides = [f"protocol.block_size={args.block_size}", "protocol.basis_bias=null"]
        link = load_link(EXAMPLES / f"{name}.yaml", overrides)
        losses = np.linspace(lo, hi, points)
        items = [(link.with_loss_db(float(x)), None) for x in losses]
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            curve = sweep(items)
            times.append(time.perf_counter() - start)
        best = min(times)
        positive = sum(p.secret_bits_per_pulse > 0 for p in curve)
        rows.append((label, points, best, positive))
        record = {
            "benchmark": "keyrate_finite_curve",
            "protocol": label,
            "points": points,
            "block_size": args.block_size,
            "seconds": round(best, 4),
            "points_with_key": positive,
            "goal_seconds": 1.0,
        }
        print(json.dumps(record))
    print(f"\n{'protocol':32s} {'points':>6s} {'seconds':>8s} {'ms/point':>9s} {'with key':>8s}")
    for label, n, seconds, positive in rows:
        print(f"{label:32s} {n:6d} {seconds:8.3f} {1e3 * seconds / n:9.2f} {positive:8d}")


if __name__ == "__main__":
    main()
