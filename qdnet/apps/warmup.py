"""Compile the demo's Numba kernels in child processes while the link model runs.

Every kernel of qdnet is compiled with ``cache=True``: the first process that needs one compiles
it (seconds to tens of seconds) and writes it to Numba's on-disk cache, and every later process
loads it in milliseconds. A fresh clone has no cache, and ``qdnet demo`` would compile its kernels
one after the other, each when its step first runs. :func:`start` instead launches one child
process per group of kernels (:data:`PARTS`), each calling those kernels once on small inputs of
the demo's types, so that they compile side by side on all cores, while the demo's first part
(the analytic link model) runs; before each step of the chain :func:`finish` waits for the parts
that step runs (:func:`parts_needed_by`: the Monte Carlo first, error correction and amplification
by the time keys are distilled), and the step then loads its kernels from the cache. Where the cache already holds the demo's main kernels for this
CPU (:func:`is_warm`: the index file Numba keeps beside each cached function lists an entry for
this machine's code generator, ``magic_tuple``), no child is started. The children's output is
discarded: a child that fails costs only its time, as the chain compiles whatever it still lacks.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

#: Frames of the reconciliation warm-up: the session's default length, as many as make the LDPC
#: decoder use its lanes kernel (qdnet.postprocessing.ldpc.LANES_MIN_BUSY and more).
LDPC_FRAME_BITS = 20_000
LDPC_FRAMES = 8
#: Pulses of the Monte Carlo warm-up (enough to reach every branch of the event kernel).
WARM_PULSES = 1_000_000
#: Seconds a child may take before the demo stops waiting for it.
TIMEOUT_S = 300.0


def _monte_carlo(link_file: Path, distance_km: float, reconciliation: str) -> None:
    """The event kernel and the records writer, as :mod:`qdnet.apps.chain` runs them."""
    from qdnet.attacks import make_attack
    from qdnet.config import load_link_config
    from qdnet.simulation.runner import simulate

    config = load_link_config(link_file)
    link = config.build().with_distance_km(distance_km)
    attack = make_attack("intercept-resend", 0.5, "random", link.protocol.kind)
    with tempfile.TemporaryDirectory(prefix="qdnet-warmup-") as folder:
        for index, eve in enumerate((None, attack)):
            simulate(
                link,
                WARM_PULSES,
                np.random.default_rng(index),
                attack=eve,
                keep_records=False,
                seed=index,
                link_document=config.model_dump(mode="json"),
                out=Path(folder) / f"run-{index}",
            )


def _reconciliation(link_file: Path, distance_km: float, reconciliation: str) -> None:
    """Error correction (LDPC or Cascade) on frames of the session's length and types."""
    rng = np.random.default_rng(1)
    alice = [rng.integers(0, 2, LDPC_FRAME_BITS, dtype=np.uint8) for _ in range(LDPC_FRAMES)]
    flips = [(rng.random(LDPC_FRAME_BITS) < 0.02).astype(np.uint8) for _ in alice]
    bob = [a ^ f for a, f in zip(alice, flips, strict=True)]
    if reconciliation == "ldpc":
        from qdnet.postprocessing import ldpc

        # A block of frames runs the lanes kernel, a lone frame the one-frame kernel.
        ldpc.reconcile_frames_local(alice, bob, 0.02, 1)
        ldpc.reconcile_frames_local(alice[:1], bob[:1], 0.02, 1)
    else:
        from qdnet.postprocessing import cascade

        cascade.reconcile_frames_local(alice[:2], bob[:2], 0.02, 1)


def _amplification(link_file: Path, distance_km: float, reconciliation: str) -> None:
    """Privacy amplification (Toeplitz hashing) and the verification hash."""
    from qdnet.postprocessing.amplification import fresh_seed, toeplitz_hash
    from qdnet.postprocessing.verification import VerificationHash

    key = np.random.default_rng(2).integers(0, 2, 4096, dtype=np.uint8)
    toeplitz_hash(key, fresh_seed(len(key), 1024), 1024)
    VerificationHash.fresh(len(key), 1e-15).digest(key)


#: The groups of kernels, one child process each.
PARTS: dict[str, Callable[[Path, float, str], None]] = {
    "monte-carlo": _monte_carlo,
    "reconciliation": _reconciliation,
    "amplification": _amplification,
}


def _main_kernels(reconciliation: str) -> list[Any]:
    """The slowest-compiling kernel of each part (for :func:`is_warm`)."""
    from qdnet.postprocessing import ldpc_bp, verification
    from qdnet.simulation.prepare_measure import event_kernel

    corrector: Any = ldpc_bp.layered_bp_lanes
    if reconciliation == "cascade":
        from qdnet.postprocessing import cascade

        corrector = cascade._bob_round
    return [event_kernel, corrector, verification._poly_hash]


def is_warm(reconciliation: str) -> bool:
    """Whether Numba's cache holds the main kernels compiled for this CPU (Numba internals:
    any surprise reads as a cold cache, which only costs the warm-up)."""
    try:
        for kernel in _main_kernels(reconciliation):
            magic = kernel.targetctx.codegen().magic_tuple()
            index = kernel._cache._cache_file._load_index()
            if not any(key[1] == magic for key in index):
                return False
    except Exception:  # Numba's private cache layout may change
        return False
    return True


def start(
    link_file: Path, distance_km: float, reconciliation: str
) -> dict[str, subprocess.Popen[bytes]]:
    """One child process per part of :data:`PARTS`, by part (they inherit NUMBA_CACHE_DIR and
    the rest of the environment); none where the cache is warm."""
    if is_warm(reconciliation):
        return {}
    return {
        part: subprocess.Popen(
            [
                sys.executable,
                "-m",
                "qdnet.apps.warmup",
                part,
                str(link_file),
                repr(distance_km),
                reconciliation,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for part in PARTS
    }


def parts_needed_by(step: str) -> tuple[str, ...]:
    """The parts a step of :func:`qdnet.apps.chain.run_chain` runs (by its name): the chain can
    start its Monte Carlo while error correction and amplification still compile."""
    if step.startswith("simulate"):
        return ("monte-carlo",)
    if step.startswith("distil"):
        return ("reconciliation", "amplification")
    return ()


def finish(children: list[subprocess.Popen[bytes]], timeout_s: float = TIMEOUT_S) -> None:
    """Wait for the children (each at most ``timeout_s``); stop any still running."""
    try:
        for child in children:
            child.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        pass
    finally:
        stop(children)


def stop(children: list[subprocess.Popen[bytes]]) -> None:
    """Stop the children still running (the demo failed or gave up waiting)."""
    for child in children:
        if child.poll() is None:
            child.kill()
            child.wait()


def main(argv: list[str]) -> int:
    """``python -m qdnet.apps.warmup PART LINK_FILE DISTANCE_KM RECONCILIATION``."""
    part, link_file, distance_km, reconciliation = argv
    PARTS[part](Path(link_file), float(distance_km), reconciliation)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
