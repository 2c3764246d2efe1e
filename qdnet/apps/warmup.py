"""Compile the demo's Numba kernels in child processes while the demo imports and runs its link model.

Every kernel of qdnet is compiled with ``cache=True``: the first process that needs one compiles
it (seconds) and writes it to Numba's on-disk cache, and every later process loads it in
milliseconds. A fresh clone has no cache, and ``qdnet demo`` would compile its kernels one after
the other, each when its step first runs. :func:`start` instead launches one child process per
group of :data:`CHILDREN` (two, of about equal CPU time: one per core of a small machine), which
runs its parts (:data:`PARTS`) in order, each calling a group of kernels once on small inputs of
the demo's types, and marks each part done with an empty file in a fresh folder; it does so as the
demo's first step, before the demo's own imports, so that compiling overlaps them and the
analytic link model. Before each step of the chain :func:`finish` waits for the parts that step
runs (:func:`parts_needed_by`: the Monte Carlo first, error correction and amplification by the
time keys are distilled), and the step then loads its kernels from the cache. Where the cache
already holds the demo's main kernels for this CPU (:func:`is_warm`: the index file Numba keeps
beside each cached function lists an entry for this machine's code generator, ``magic_tuple``),
no child is started. The children's output is discarded: a child that fails costs only its time,
as the chain compiles whatever it still lacks.

What a fresh clone compiles was cut to what the demo runs, with the CPU seconds of each kernel's
compilation measured with ``numba.core.event`` (fresh cache, 2-core machine): the children's CPU
went from ~16 s to ~7.5 s. The xoshiro steps are Numba intrinsics (qdnet.simulation.rng: the
event kernel compiles in 1.1 s instead of 3.2 s), the seed expansion, the verification hash and
the LDPC code's CSR and syndromes are Python, NumPy or SciPy (four kernels fewer), the LDPC
kernels share one flag set (NumPy's helpers compile once, not once per set) and take their
workspaces from the caller, and the children run small inputs (compiling does not depend on the
length) and exit without the interpreter's teardown.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: Frames of the reconciliation warm-up: as many as make the LDPC decoder use its lanes kernel
#: (qdnet.postprocessing.ldpc.LANES_MIN_BUSY and more), short (the compiled code is the same).
LDPC_FRAME_BITS = 2_000
LDPC_FRAMES = 8
#: A parity-check matrix for the one-frame kernel's warm-up (any code has its types).
SMALL_CODE = ((1, 1, 0, 1, 0, 0), (0, 1, 1, 0, 1, 0), (1, 0, 1, 0, 0, 1))
#: Pulses of the Monte Carlo warm-up (the event kernel is compiled whole on its first call).
WARM_PULSES = 100_000
#: Seconds a child may take before the demo stops waiting for it.
TIMEOUT_S = 300.0
#: Seconds between two looks at a child's progress.
POLL_S = 0.02


def _monte_carlo(link_file: Path, reconciliation: str) -> None:
    """The event kernel, on the demo's link."""
    from qdnet.config import load_link_config
    from qdnet.simulation.runner import simulate

    link = load_link_config(link_file).build()
    simulate(link, WARM_PULSES, np.random.default_rng(0), keep_records=False, seed=0)


def _reconciliation(link_file: Path, reconciliation: str) -> None:
    """Error correction (LDPC: the code construction and the lanes kernel; or Cascade)."""
    rng = np.random.default_rng(1)
    alice = rng.integers(0, 2, LDPC_FRAME_BITS, dtype=np.uint8)
    bob = alice ^ (rng.random(LDPC_FRAME_BITS) < 0.02).astype(np.uint8)
    if reconciliation == "ldpc":
        from qdnet.postprocessing import ldpc

        # A block of identical frames runs the lanes kernel only: they all finish together, so
        # none is left to the one-frame kernel (part "ldpc-frame", which can then go elsewhere).
        ldpc.reconcile_frames_local([alice] * LDPC_FRAMES, [bob] * LDPC_FRAMES, 0.02, 1)
    else:
        from qdnet.postprocessing import cascade

        cascade.reconcile_frames_local([alice, alice], [bob, bob], 0.02, 1)


def _ldpc_frame(link_file: Path, reconciliation: str) -> None:
    """The LDPC one-frame kernel (a block's last frames), on a small hand-written code (the
    kernel's types do not depend on the code)."""
    if reconciliation != "ldpc":
        return
    import scipy.sparse as sp

    from qdnet.postprocessing import ldpc

    h = sp.csr_matrix(np.array(SMALL_CODE, dtype=np.uint8))
    bits = np.zeros(h.shape[1], dtype=np.uint8)
    ldpc.LdpcBob(bits, h, ldpc.syndrome(h, bits), 0.02, ldpc.LdpcConfig()).decode()


def _amplification(link_file: Path, reconciliation: str) -> None:
    """Privacy amplification (Toeplitz hashing; the verification hash is NumPy)."""
    from qdnet.postprocessing.amplification import fresh_seed, toeplitz_hash

    key = np.random.default_rng(2).integers(0, 2, 4096, dtype=np.uint8)
    toeplitz_hash(key, fresh_seed(len(key), 1024), 1024)


#: The groups of kernels, by name.
PARTS: dict[str, Callable[[Path, str], None]] = {
    "monte-carlo": _monte_carlo,
    "reconciliation": _reconciliation,
    "ldpc-frame": _ldpc_frame,
    "amplification": _amplification,
}
#: The parts each child runs, in order: the Monte Carlo first (the chain needs it first), and two
#: compile loads of about equal CPU time side by side (measured: ~4.5 s each on a fresh clone).
CHILDREN: tuple[tuple[str, ...], ...] = (
    ("monte-carlo", "amplification"),
    ("reconciliation", "ldpc-frame"),
)


def _main_kernels(part: str, reconciliation: str) -> list[Any]:
    """The slowest-compiling kernels of a part (for :func:`is_warm`)."""
    if part == "monte-carlo":
        from qdnet.simulation.prepare_measure import event_kernel

        return [event_kernel]
    if part == "amplification":
        from qdnet.postprocessing import amplification

        lanes = amplification.HOST_CLMUL_LANES  # 0: the FFT path, nothing to compile
        return [amplification._TOEPLITZ_WORDS[lanes]] if lanes else []
    if reconciliation == "cascade":
        from qdnet.postprocessing import cascade

        return [cascade._bob_round] if part == "reconciliation" else []
    from qdnet.postprocessing import ldpc_bp

    return [ldpc_bp.layered_bp_lanes if part == "reconciliation" else ldpc_bp.layered_bp_frame]


#: The order in which :func:`is_warm` looks: the modules quickest to import first (on a fresh
#: clone the first answers, and the children start ~0.5 s sooner).
_CHECK_ORDER = ("reconciliation", "ldpc-frame", "amplification", "monte-carlo")


def is_warm(reconciliation: str) -> bool:
    """Whether Numba's cache holds the main kernels of every part compiled for this CPU (Numba
    internals: any surprise reads as a cold cache, which only costs the warm-up)."""
    try:
        for part in _CHECK_ORDER:
            for kernel in _main_kernels(part, reconciliation):
                magic = kernel.targetctx.codegen().magic_tuple()
                index = kernel._cache._cache_file._load_index()
                if not any(key[1] == magic for key in index):
                    return False
    except Exception:  # Numba's private cache layout may change
        return False
    return True


@dataclass
class Warmup:
    """The children of one demo run and the folder where they mark their parts done."""

    children: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    folder: tempfile.TemporaryDirectory[str] | None = None

    def done(self, part: str) -> bool:
        """Whether the child running ``part`` marked it compiled."""
        return self.folder is not None and (Path(self.folder.name) / f"{part}.done").exists()


def start(link_file: Path, reconciliation: str) -> Warmup:
    """One child process per group of :data:`CHILDREN` (they inherit NUMBA_CACHE_DIR and the
    rest of the environment); none where the cache is warm."""
    if is_warm(reconciliation):
        return Warmup()
    warm = Warmup(folder=tempfile.TemporaryDirectory(prefix="qdnet-warmup-"))
    for parts in CHILDREN:
        child = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "qdnet.apps.warmup",
                ",".join(parts),
                str(link_file),
                reconciliation,
                warm.folder.name if warm.folder else "",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for part in parts:
            warm.children[part] = child
    return warm


def parts_needed_by(step: str) -> tuple[str, ...]:
    """The parts a step of :func:`qdnet.apps.chain.run_chain` runs (by its name): the chain can
    start its Monte Carlo while error correction and amplification still compile."""
    if step.startswith("simulate"):
        return ("monte-carlo",)
    if step.startswith("distil"):
        return ("reconciliation", "ldpc-frame", "amplification")
    return ()


def finish(warm: Warmup, parts: tuple[str, ...], timeout_s: float = TIMEOUT_S) -> None:
    """Wait until each of ``parts`` is marked done or its child has exited (each at most
    ``timeout_s``); a child that runs past that is stopped."""
    for part in parts:
        child = warm.children.get(part)
        if child is None:
            continue
        deadline = time.monotonic() + timeout_s
        while not warm.done(part) and child.poll() is None:
            if time.monotonic() > deadline:
                stop(Warmup({part: child}))
                break
            time.sleep(POLL_S)


def stop(warm: Warmup) -> None:
    """Stop the children still running (the demo ended, failed or gave up waiting) and remove
    the markers' folder."""
    for child in warm.children.values():
        if child.poll() is None:
            child.kill()
            child.wait()
    if warm.folder is not None:
        warm.folder.cleanup()


def main(argv: list[str]) -> int:
    """``python -m qdnet.apps.warmup PART[,PART...] LINK_FILE RECONCILIATION [FOLDER]``: run the
    parts in order, each marked done in FOLDER (if given) once compiled."""
    parts, link_file, reconciliation, *folder = argv
    for part in parts.split(","):
        PARTS[part](Path(link_file), reconciliation)
        if folder and folder[0]:
            (Path(folder[0]) / f"{part}.done").touch()
    return 0


if __name__ == "__main__":
    status = main(sys.argv[1:])
    # Every part is compiled, cached and marked: skip the interpreter's teardown (~0.5 s of CPU
    # freeing Numba's compiler state, taken from the demo and the other child).
    os._exit(status)
