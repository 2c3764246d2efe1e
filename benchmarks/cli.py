"""Benchmark: start-up time of the command line (``qdnet --help``), best of N runs.

Usage: ``python benchmarks/cli.py [--runs 7] [--tiny]``. Prints one JSON line and a table.
Goal (issue 14): under 0.5 s. The structural check (no heavy library imported at start-up) is
``tests/cli/test_startup.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def main() -> None:
    """Run the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--tiny", action="store_true", help="2 runs (CI smoke run)")
    args = parser.parse_args()
    runs = 2 if args.tiny else args.runs
    qdnet = Path(sys.executable).with_name("qdnet")
    command = [str(qdnet)] if qdnet.exists() else [sys.executable, "-m", "qdnet.cli.main"]
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([*command, "--help"], check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    record = {
        "benchmark": "cli_startup",
        "command": "qdnet --help",
        "runs": runs,
        "best_s": round(min(times), 3),
        "median_s": round(sorted(times)[len(times) // 2], 3),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "goal_s": 0.5,
    }
    print(json.dumps(record))
    print(f"\n{'command':16s} {'best s':>7s} {'median s':>9s} {'load':>6s}")
    print(
        f"{'qdnet --help':16s} {record['best_s']:>7} {record['median_s']:>9} "
        f"{record['load_average_1min']:>6}"
    )


if __name__ == "__main__":
    main()
