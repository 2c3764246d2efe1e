"""LDPC belief-propagation kernels: time per edge update, one frame (scalar, phi table) against
16 frames in SIMD lanes (tanh rule, polynomial exp/log), on the family's codes.

Prints a table and one JSON line per point (prefixed ``JSON ``).

    python benchmarks/ldpc_kernels.py            # n = 1e4 and 1e5, QBER 1 / 3 / 8 %
    python benchmarks/ldpc_kernels.py --tiny     # seconds, for CI

Each point decodes LANES frames with a fixed number of iterations (no early stop, so both kernels
do the same work; the codes are the reconciliation's start codes, far below what the frames need,
so BP runs every iteration): ns per edge and iteration for the frame kernel (per frame) and the
lanes kernel (per frame in a lane), and their ratio. Wall time of one core (time.perf_counter).

When PyPI ``ldpc`` (Roffe's C++ BP, ``pip install -e '.[bench]'``) is importable, its
``BpDecoder`` runs on the same code and frames in syndrome mode (product-sum with the parallel
and the serial schedule, and min-sum scaled by 0.8, one thread): ns per edge and iteration and
the ratios to our kernels.
"""

from __future__ import annotations

import argparse
import importlib
import json
import time
from typing import Any

import numpy as np
import scipy.sparse as sp

from qdnet.postprocessing import ldpc, ldpc_bp
from qdnet.postprocessing.ldpc_bp import LANES


def measure(n: int, qber: float, iterations: int, seed: int) -> dict[str, Any]:
    """ns per edge update of both kernels on LANES frames of the (n, QBER) start code."""
    h = ldpc.make_code(n, ldpc.check_count(n, qber, ldpc.LdpcConfig()))
    row_ptr = h.indptr.astype(np.int32)
    col = h.indices.astype(np.int32)
    rng = np.random.default_rng(seed)
    errors = (rng.random((n, LANES)) < qber).astype(np.uint8)
    target = np.ascontiguousarray(
        np.stack([ldpc.syndrome(h, errors[:, j]) for j in range(LANES)], axis=1)
    )
    prior = ldpc.prior_llr(qber)
    edges = len(col)

    frame_s = 0.0
    frame_its = 0
    workspace = ldpc_bp.frame_workspace(iterations)
    for lane in range(LANES):
        post = np.full(n, prior, dtype=np.float32)
        msg = np.zeros(edges, dtype=np.float32)
        tgt = target[:, lane].copy()
        start = time.perf_counter()
        _, its = ldpc_bp.layered_bp_frame(
            row_ptr,
            col,
            tgt,
            post,
            msg,
            iterations,
            iterations,
            0.0,
            ldpc_bp.PHI_TABLE,
            ldpc_bp.PHI_INV_STEP,
            workspace,
        )
        frame_s += time.perf_counter() - start
        frame_its += its

    post2 = np.full((n, LANES), prior, dtype=np.float32)
    msg2 = np.zeros((edges, LANES), dtype=np.float32)
    solved = np.zeros(LANES, dtype=bool)
    decided = np.zeros((n, LANES), dtype=np.uint8)
    counts = np.zeros(LANES, dtype=np.int32)
    start = time.perf_counter()
    ran = ldpc_bp.layered_bp_lanes(
        row_ptr,
        col,
        target,
        post2,
        msg2,
        np.ones(LANES, dtype=bool),
        solved,
        decided,
        counts,
        iterations,
        iterations,
        0.0,
        0,
        *ldpc_bp.lanes_workspace(iterations),
    )
    lanes_s = time.perf_counter() - start
    frame_ns = frame_s / (frame_its * edges) * 1e9
    lanes_ns = lanes_s / (ran * edges * LANES) * 1e9
    peer = _peer(h, target, qber, iterations, edges)
    for key, value in list(peer.items()):
        peer[f"ratio_{key}_over_lanes"] = value / lanes_ns
    return {
        "figure": "ldpc_kernels",
        "n": n,
        "qber": qber,
        "edges_per_bit": edges / n,
        "iterations": iterations,
        "frame_ns_per_edge": frame_ns,
        "lanes_ns_per_edge_and_frame": lanes_ns,
        "ratio_frame_over_lanes": frame_ns / lanes_ns,
        **peer,
    }


PEER_METHODS = {
    "pypi_ldpc_product_sum_ns": ("product_sum", "parallel"),
    "pypi_ldpc_product_sum_serial_ns": ("product_sum", "serial"),
    "pypi_ldpc_min_sum_ns": ("minimum_sum", "parallel"),
}


def _peer(
    h: sp.csr_matrix, target: np.ndarray, qber: float, iterations: int, edges: int
) -> dict[str, float]:
    """PyPI ldpc's BpDecoder on the same frames (empty when it is not installed)."""
    try:
        bp_decoder = importlib.import_module("ldpc").BpDecoder
    except ImportError:
        return {}
    out = {}
    for key, (method, schedule) in PEER_METHODS.items():
        decoder = bp_decoder(
            h.astype(np.uint8),
            error_rate=qber,
            max_iter=iterations,
            bp_method=method,
            schedule=schedule,
            ms_scaling_factor=0.8 if method == "minimum_sum" else 1.0,
            input_vector_type="syndrome",
        )
        frames = range(PEER_FRAMES)
        total_s, total_its = 0.0, 0
        for lane in frames:
            start = time.perf_counter()
            decoder.decode(target[:, lane])
            total_s += time.perf_counter() - start
            total_its += int(decoder.iter)
        out[key] = total_s / (total_its * edges) * 1e9
    return out


PEER_FRAMES = 2


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--tiny", action="store_true", help="one small point (CI)")
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--qbers", default="0.01,0.03,0.08")
    ap.add_argument("--iterations", type=int, default=30)
    ap.add_argument("--seed", type=int, default=2024)
    args = ap.parse_args()
    if args.tiny:
        args.sizes, args.qbers, args.iterations = "2000", "0.03", 3
    measure(2000, 0.03, 1, args.seed)  # compile outside the timing
    rows = []
    for n in [int(float(s)) for s in args.sizes.split(",")]:
        for q in [float(q) for q in args.qbers.split(",")]:
            row = measure(n, q, args.iterations, args.seed)
            rows.append(row)
            print("JSON " + json.dumps(row), flush=True)
    cols = ["n", "qber", "edges_per_bit", "frame_ns_per_edge", "lanes_ns_per_edge_and_frame"]
    cols += [c for c in rows[0] if c.startswith("ratio_")]
    cols += [c for c in rows[0] if c.startswith("pypi_ldpc")]
    print("\nBP kernels: ns per edge update (frame kernel per frame, lanes kernel per lane;")
    print("pypi_ldpc: Roffe's ldpc BpDecoder on the same code and frames; ratios over lanes)")
    print("  ".join(f"{c:>16}" for c in cols))
    for r in rows:
        print(
            "  ".join(f"{r[c]:>16.4g}" if isinstance(r[c], float) else f"{r[c]:>16}" for c in cols)
        )


if __name__ == "__main__":
    main()
