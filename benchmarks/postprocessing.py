"""Post-processing benchmark: Cascade and LDPC reconciliation, privacy amplification, and
(optionally) Rijsman's cascade-cpp on the same sizes and error rates in the same run.

Prints a table per figure and one JSON line per figure (prefixed ``JSON ``).

    python benchmarks/postprocessing.py                 # full grid (1e4, 1e5, 1e6 bits)
    python benchmarks/postprocessing.py --tiny          # seconds, for CI
    python benchmarks/postprocessing.py --peer /tmp/cascade-cpp/bin/run_experiments

Privacy amplification is measured beside HSLU's reference library randextract (PyPI
``randextract``, installed by ``pip install -e '.[bench]'``) on the same input and seed when it is
importable: the outputs must be identical (its seed layout is mapped onto ours) and the table
prints the speed ratio.

Definitions (as in cascade-cpp, see the notes): f = disclosed parity/syndrome bits / (n h(Q))
with Q the actual error fraction (exactly round(Q n) errors per frame); FER = fraction of frames
with residual errors before verification; round trips = request/reply exchanges; throughput =
n / median CPU time per frame of both ends on one core (time.process_time), Cascade with a fresh
permutation seed per frame (its permutations are timed). LDPC runs each point's frames as one
block, as the session does (one QBER estimate and one code for all frames, decoded 16 at a time
by the SIMD kernel, one reveal round trip for all failing frames): throughput = block bits / CPU
time, with the code built once per block and timed apart (``code_build_s``), and the one-frame
decoder's throughput beside it (``frame_mbit_s_per_core``); a block has bits-per-point / 4 / n
frames and at least 16 (one full SIMD batch) up to n = 1e5. The Cascade block
sizes and the LDPC code rate use a QBER *estimated* from a binomial test sample of
max(1e5, n/10) bits (the X-basis sample of a block), not the true value. cascade-cpp draws its own random frames with the same n and Q (it cannot read ours).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from qdnet.postprocessing import cascade, ldpc
from qdnet.postprocessing.amplification import HOST_CLMUL_LANES, fresh_seed, toeplitz_hash
from qdnet.security.entropy import binary_entropy

TEST_SAMPLE_BITS = 100_000
"""Test-basis bits behind the QBER estimate (a block's X-basis sample, shared by its frames)."""


def _frame(rng: np.random.Generator, n: int, qber: float) -> tuple[np.ndarray, np.ndarray, float]:
    a = rng.integers(0, 2, n, dtype=np.uint8)
    b = a.copy()
    b[rng.choice(n, round(qber * n), replace=False)] ^= 1
    sample = max(TEST_SAMPLE_BITS, n // 10)
    est = max(rng.binomial(sample, qber) / sample, 1e-3)
    return a, b, est


def run_ec(method: str, n: int, qber: float, runs: int, rng: np.random.Generator) -> dict[str, Any]:
    """Reconcile ``runs`` frames; returns the figure's fields."""
    if method == "ldpc":
        return run_ldpc_block(n, qber, runs, rng)
    fs, trips, times = [], [], []
    failures = 0
    for _ in range(runs):
        a, b, est = _frame(rng, n, qber)
        seed = int(rng.integers(1 << 62))  # fresh permutations per frame (timed)
        start = time.process_time()
        res = cascade.reconcile_local(a, b, est, seed)
        times.append(time.process_time() - start)
        failures += int(not np.array_equal(res.corrected, a))
        fs.append(res.leaked_bits / (n * binary_entropy(round(qber * n) / n)))
        trips.append(res.round_trips)
    return _ec_row(
        method, n, qber, fs, failures, float(np.mean(trips)), n / float(np.median(times))
    )


def _ec_row(
    method: str, n: int, qber: float, fs: list[float], failures: int, trips: float, bit_s: float
) -> dict[str, Any]:
    """The reconciliation figure's common fields."""
    return {
        "figure": "reconciliation",
        "method": method,
        "n": n,
        "qber": qber,
        "runs": len(fs),
        "f_mean": float(np.mean(fs)),
        "f_std": float(np.std(fs)),
        "fer": failures / len(fs),
        "round_trips": trips,
        "mbit_s_per_core": bit_s / 1e6,
    }


def run_ldpc_block(n: int, qber: float, runs: int, rng: np.random.Generator) -> dict[str, Any]:
    """LDPC as the session runs it: the ``runs`` frames form one block with one QBER estimate
    (from the block's test sample) and one code, decoded together (16 frames per SIMD batch)
    with one reveal round trip for all failing frames. Throughput = block bits / CPU time of
    both ends; the code is built once per block and timed apart (``code_build_s``). The
    one-frame decoder's throughput (``frame_mbit_s_per_core``) is measured on up to
    FRAME_SPEED_FRAMES of the same frames decoded alone."""
    pairs = [_frame(rng, n, qber) for _ in range(runs)]
    est = pairs[0][2]
    cfg = ldpc.LdpcConfig()
    start = time.process_time()
    ldpc.make_code(n, ldpc.check_count(n, est, cfg))
    build = time.process_time() - start
    seed = int(rng.integers(1 << 62))
    start = time.process_time()
    corrected, leaks, trips, _ = ldpc.reconcile_frames_local(
        [p[0] for p in pairs], [p[1] for p in pairs], est, seed
    )
    elapsed = time.process_time() - start
    failures = sum(not np.array_equal(c, p[0]) for c, p in zip(corrected, pairs, strict=True))
    fs = [leak / (n * binary_entropy(round(qber * n) / n)) for leak in leaks]
    alone = []
    for a, b, _ in pairs[:FRAME_SPEED_FRAMES]:
        start = time.process_time()
        ldpc.reconcile_local(a, b, est, seed)
        alone.append(time.process_time() - start)
    return {
        **_ec_row("ldpc", n, qber, fs, failures, float(trips), runs * n / elapsed),
        "frame_mbit_s_per_core": n / float(np.median(alone)) / 1e6,
        "code_build_s": build,
    }


FRAME_SPEED_FRAMES = 8
#: LDPC points up to this frame size get at least one full batch of SIMD lanes.
LDPC_FULL_BATCH_MAX_N = 100_000


def run_block(n: int, qber: float, block_bits: int, rng: np.random.Generator) -> dict[str, Any]:
    """Cascade on one block of ``block_bits`` split into n-bit frames run in lockstep (one round
    trip carries every frame's questions, as the session does): round trips per 1e6 bits."""
    frames = max(1, block_bits // n)
    pairs = [_frame(rng, n, qber) for _ in range(frames)]
    est = pairs[0][2]
    start = time.process_time()
    res = cascade.reconcile_frames_local(
        [p[0] for p in pairs], [p[1] for p in pairs], est, int(rng.integers(1 << 62))
    )
    elapsed = time.process_time() - start
    bad = sum(not np.array_equal(c, p[0]) for c, p in zip(res.corrected, pairs, strict=True))
    bits = frames * n
    return {
        "figure": "cascade_block",
        "n": n,
        "qber": qber,
        "frames": frames,
        "block_round_trips": res.round_trips,
        "round_trips_per_1e6_bits": res.round_trips / (bits / 1e6),
        "block_f": res.leaked_bits / (bits * binary_entropy(round(qber * n) / n)),
        "block_frame_errors": bad,
        "block_mbit_s_per_core": bits / elapsed / 1e6,
    }


def _randextract_seed(seed: np.ndarray, n: int, m: int) -> np.ndarray:
    """Our seed in randextract's default layout: its seed[t] sets diagonal i - j = t (t < m) or
    t - (n + m - 1) (t >= m); ours sets diagonal d at seed[d + n - 1]."""
    t = np.arange(n + m - 1)
    return seed[np.where(t < m, t, t - (n + m - 1)) + n - 1]


def run_pa(n: int, reps: int, peer_max_bits: int) -> dict[str, Any]:
    """Toeplitz hashing of n bits to n/2 with a fresh seed per block, CPU time of one core, and
    randextract on the same input and seed (n <= ``peer_max_bits``, if installed)."""
    rng = np.random.default_rng(0)
    key = rng.integers(0, 2, n, dtype=np.uint8)
    m = n // 2
    times = []
    for _ in range(reps):
        seed = fresh_seed(n, m)
        start = time.process_time()
        ours = toeplitz_hash(key, seed, m)
        times.append(time.process_time() - start)
    t = float(np.median(times))
    row: dict[str, Any] = {
        "figure": "privacy_amplification",
        "n": n,
        "m": m,
        "path": f"clmul x{HOST_CLMUL_LANES}" if HOST_CLMUL_LANES else "fft",
        "reps": reps,
        "seconds": t,
        "mbit_s": n / t / 1e6,
    }
    try:
        from randextract import ToeplitzHashing  # type: ignore[import-untyped]
    except ImportError:
        return row
    if n > peer_max_bits:
        return row
    start = time.process_time()
    theirs = np.asarray(
        ToeplitzHashing(n, m).extract(key, _randextract_seed(seed, n, m)), dtype=np.uint8
    )
    peer_t = time.process_time() - start
    row["randextract_mbit_s"] = n / peer_t / 1e6
    row["ratio_speed_ours_over_randextract"] = peer_t / t
    row["identical_to_randextract"] = bool(np.array_equal(ours, theirs))
    return row


def run_peer(
    binary: Path, algorithm: str, n: int, qber: float, runs: int, seed: int
) -> dict[str, Any]:
    """cascade-cpp's run_experiments, single-threaded (-d), one data point."""
    with tempfile.TemporaryDirectory() as tmp:
        exp = Path(tmp) / "exp.json"
        exp.write_text(
            json.dumps(
                [
                    {
                        "independent_variable": "error_rate",
                        "algorithm": algorithm,
                        "error_rate": [qber],
                        "key_size": [n],
                        "runs": runs,
                    }
                ]
            )
        )
        out = Path(tmp) / "out"
        out.mkdir()
        subprocess.run(
            [str(binary), str(exp), "-d", "-s", str(seed), "-o", str(out)],
            check=True,
            capture_output=True,
            timeout=3600,
        )
        [data_file] = list(out.glob("data__*"))
        point = json.loads(data_file.read_text().splitlines()[0])
    return {
        "figure": "peer_cascade_cpp",
        "algorithm": algorithm,
        "n": n,
        "qber": qber,
        "runs": runs,
        "actual_qber": point["actual_bit_error_rate"]["average"],
        "f_mean": point["efficiency"]["average"],
        "fer": point["remaining_frame_error_rate"]["average"],
        "round_trips": point["ask_parity_messages"]["average"],
        "mbit_s_per_core": n / point["elapsed_process_time"]["average"] / 1e6,
    }


def _print(rows: list[dict[str, Any]], cols: list[str]) -> None:
    print("  ".join(f"{c:>14}" for c in cols))
    for r in rows:
        print("  ".join(f"{_fmt(r.get(c)):>14}" for c in cols))


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--tiny", action="store_true", help="one small point per figure (CI)")
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--qbers", default="0.01,0.02,0.03,0.05,0.08")
    ap.add_argument("--methods", default="cascade,ldpc")
    ap.add_argument(
        "--bits-per-point",
        type=float,
        default=4e6,
        help="frames per point = max(min_runs, this / n)",
    )
    ap.add_argument("--min-runs", type=int, default=2)
    ap.add_argument("--pa-sizes", default="1000000,10000000")
    ap.add_argument(
        "--pa-peer-max-bits",
        type=float,
        default=1e6,
        help="run randextract (if installed) up to this input size (it takes ~1 s per 1e6 bits)",
    )
    ap.add_argument("--peer", type=Path, default=None, help="cascade-cpp bin/run_experiments")
    ap.add_argument("--peer-algorithms", default="original,yanetal,option7")
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument(
        "--block-bits",
        type=float,
        default=1e7,
        help="Cascade lockstep block (frames of n bits) for round trips per 1e6 bits; 0: skip",
    )
    args = ap.parse_args()
    if args.tiny:
        args.sizes, args.qbers, args.pa_sizes = "10000", "0.02", "1000000"
        args.bits_per_point, args.min_runs, args.block_bits = 2e4, 2, 4e4
    sizes = [int(float(s)) for s in args.sizes.split(",")]
    qbers = [float(q) for q in args.qbers.split(",")]
    rng = np.random.default_rng(args.seed)
    # warm up the compiled kernels so that compilation is not timed
    a, b, _ = _frame(rng, 2000, 0.02)
    cascade.reconcile_local(a, b, 0.02, 1)
    cascade.reconcile_frames_local([a, a], [b, b], 0.02, 1)
    ldpc.reconcile_frames_local([a] * ldpc.LANES, [b] * ldpc.LANES, 0.02, 1)
    toeplitz_hash(a, fresh_seed(len(a), 1000), 1000)
    rows: list[dict[str, Any]] = []
    for method in args.methods.split(","):
        for n in sizes:
            runs = max(args.min_runs, math.ceil(args.bits_per_point / n))
            if method == "ldpc":  # at least one full SIMD batch up to 1e5 bits (a session's
                # block holds many frames); 1e6-bit frames run one at a time
                runs = max(
                    args.min_runs, runs // 4, ldpc.LANES if n <= LDPC_FULL_BATCH_MAX_N else 0
                )
            for q in qbers:
                row = run_ec(method, n, q, runs, rng)
                rows.append(row)
                print("JSON " + json.dumps(row), flush=True)
    block_rows: list[dict[str, Any]] = []
    if "cascade" in args.methods and args.block_bits > 0:
        for n in sizes:
            for q in qbers:
                br = run_block(n, q, int(args.block_bits), rng)
                block_rows.append(br)
                print("JSON " + json.dumps(br), flush=True)
    peer_rows: list[dict[str, Any]] = []
    if args.peer is not None:
        for alg in args.peer_algorithms.split(","):
            for n in sizes:
                runs = max(args.min_runs, math.ceil(args.bits_per_point / n))
                for q in qbers:
                    pr = run_peer(args.peer, alg, n, q, runs, args.seed)
                    ours = next(
                        r
                        for r in rows
                        if r["method"] == "cascade" and r["n"] == n and r["qber"] == q
                    )
                    pr["ratio_f_ours_over_peer"] = ours["f_mean"] / pr["f_mean"]
                    pr["ratio_speed_ours_over_peer"] = (
                        ours["mbit_s_per_core"] / pr["mbit_s_per_core"]
                    )
                    pr["ratio_round_trips_ours_over_peer"] = ours["round_trips"] / pr["round_trips"]
                    peer_rows.append(pr)
                    print("JSON " + json.dumps(pr), flush=True)
    pa_rows = [
        run_pa(int(float(n)), 3 if float(n) >= 1e7 else 7, int(args.pa_peer_max_bits))
        for n in args.pa_sizes.split(",")
    ]
    for r in pa_rows:
        print("JSON " + json.dumps(r), flush=True)
    print("\nReconciliation (f, FER before verification, round trips, Mbit/s per core)")
    _print(
        rows,
        ["method", "n", "qber", "runs", "f_mean", "fer", "round_trips", "mbit_s_per_core"]
        + (["frame_mbit_s_per_core", "code_build_s"] if "ldpc" in args.methods else []),
    )
    if block_rows:
        print("\nCascade, one block of frames in lockstep (round trips per 1e6 bits)")
        _print(
            block_rows,
            [
                "n",
                "qber",
                "frames",
                "block_round_trips",
                "round_trips_per_1e6_bits",
                "block_f",
                "block_frame_errors",
                "block_mbit_s_per_core",
            ],
        )
    if peer_rows:
        print("\ncascade-cpp on the same n and Q (ratios: ours / peer)")
        _print(
            peer_rows,
            [
                "algorithm",
                "n",
                "qber",
                "f_mean",
                "fer",
                "round_trips",
                "mbit_s_per_core",
                "ratio_f_ours_over_peer",
                "ratio_speed_ours_over_peer",
                "ratio_round_trips_ours_over_peer",
            ],
        )
    print("\nPrivacy amplification (Toeplitz, m = n/2, fresh seed per block, one core)")
    cols = ["n", "m", "path", "seconds", "mbit_s"]
    if any("randextract_mbit_s" in r for r in pa_rows):
        cols += [
            "randextract_mbit_s",
            "ratio_speed_ours_over_randextract",
            "identical_to_randextract",
        ]
    _print([{c: r.get(c, "-") for c in cols} for r in pa_rows], cols)


if __name__ == "__main__":
    main()
