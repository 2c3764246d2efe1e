"""One link of a running network: key blocks into its two KMSs' folders, in a loop.

``python -m qdnet.network.runtime.linkloop DIR/links/A-B/spec.json`` (started by the supervisor).

* A **modelled** link runs, block after block, the photon-level Monte Carlo of its link model
  (:func:`qdnet.simulation.runner.simulate`, records streamed to ``DIR/links/A-B/run``) and then
  the two post-processing endpoints, Alice (the link's first node) and Bob, as ``qdnet distill``
  does: two sessions that share nothing but framed messages over a loopback TCP connection,
  authenticated with the link's own pool (started from the link's own pre-shared secret). Each
  side's session writes its block into its node's folder for that link, which the node's KMS
  ingests. A block aims at :data:`DETECTIONS_PER_BLOCK` detections (the pulse count follows the
  observed gain), small enough that keys flow within seconds on two cores; a link whose blocks
  are refused for their size (not their QBER) doubles its detections per block. Without ``--fast`` a
  block takes at least the time the link needs to send its pulses (pulses / repetition rate).
* A link **given by** ``key_rate_bps`` has no physics to simulate: every
  :data:`GIVEN_BLOCK_S` it writes a block of ``key_rate_bps * GIVEN_BLOCK_S`` bits from the
  operating system's CSPRNG (:func:`secrets.token_bytes`), identical at both ends (format 2,
  ``simulated``: the key stands in for a measured link's and is no secret of any QKD link).
* A **tap** (``--tap A-B@T:F``) puts an intercept-resend eavesdropper on a fraction F of the pulses
  from T seconds after start. A modelled link's post-processing then finds the QBER above its
  threshold and aborts: no block. A given link's QBER becomes ``qber + F * 25 %``; its blocks are
  refused when no key survives at that QBER (the Shor-Preskill fraction of ``network simulate``).
  Every session, kept or aborted, spends one slot of the link's authentication pool and a kept
  block refills two: a link tapped for long exhausts its pool and its loop ends (``halted`` in
  ``stats.json`` says why): it needs a new pre-shared secret, as a real link would. A link whose
  Monte Carlo or post-processing refuses its model (``ValueError``) halts the same way.

CPU use is bounded across all link processes by ``cpu_slots`` lock files (``flock``): a block's
Monte Carlo and post-processing run only while holding its link's slot (link index modulo
``cpu_slots``). A folder holding
:data:`MAX_BACKLOG_BLOCKS` blocks its KMS has not taken yet pauses the link. After every block
the loop rewrites ``stats.json`` (no key material). The loop ends on SIGTERM or SIGINT, or when
its parent (the supervisor) is gone.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import secrets
import shutil
import signal
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from qdnet.kms.blocks import block_files
from qdnet.network.runtime.state import write_json_atomic
from qdnet.postprocessing.keyblock import KeyBlock, write_key_block

#: Detections per Monte Carlo block (about 1e5 sifted bits: some 3e4 key bits after the finite-key
#: analysis, in well under a second of Monte Carlo and post-processing per block).
DETECTIONS_PER_BLOCK = 200_000
#: Most detections per block: a block refused for its size (QBER below the threshold, no key left
#: after the finite-key terms, e.g. a decoy-state link) doubles the link's detections up to this.
MAX_DETECTIONS_PER_BLOCK = 3_200_000
#: Pulses of the first block, before the gain is known.
PROBE_PULSES = 2_000_000
#: Bounds on the pulses of one block.
MAX_PULSES = 2_000_000_000
#: Seconds of key per block of a link given by its rate.
GIVEN_BLOCK_S = 1.0
#: Unread blocks in a KMS folder that pause the link.
MAX_BACKLOG_BLOCKS = 32


@dataclass
class LinkStats:
    """What ``stats.json`` holds (``key_rate_bps``: delivered key bits per second since start)."""

    name: str
    kind: str
    started_utc: str
    elapsed_s: float = 0.0
    blocks_delivered: int = 0
    blocks_refused: int = 0
    key_bits_delivered: int = 0
    key_rate_bps: float = 0.0
    pulses: int = 0
    tapped: bool = False
    last_qber: float | None = None
    last_refusal: str | None = None
    busy_s: float = 0.0
    auth_slots_left: int | None = None
    halted: str | None = None


class _Stop:
    """Set by SIGTERM/SIGINT; also true once the parent process is gone."""

    def __init__(self) -> None:
        self.requested = False
        self.parent = os.getppid()

    def __call__(self, *_args: object) -> None:
        self.requested = True

    def __bool__(self) -> bool:
        return self.requested or os.getppid() != self.parent

    def sleep(self, seconds: float) -> None:
        """Sleep up to ``seconds``, waking when stopped."""
        end = time.monotonic() + seconds
        while not self and time.monotonic() < end:
            time.sleep(min(0.1, max(0.0, end - time.monotonic())))


@contextmanager
def cpu_slot(slots_dir: Path, slot: int, stop: _Stop) -> Iterator[bool]:
    """Hold lock file ``slot`` (yields False when stopped while waiting). The wait blocks in
    ``flock``, whose waiters the kernel wakes on release, so links sharing a slot take turns."""
    slots_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(slots_dir / f"slot-{slot}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield not stop
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


class LinkLoop:
    """The loop of one link (see the module docstring)."""

    def __init__(self, spec: dict[str, Any], stop: _Stop) -> None:
        self.spec = spec
        self.stop = stop
        self.folder = Path(spec["folder"])
        self.alice_dir = Path(spec["folders"]["alice"])
        self.bob_dir = Path(spec["folders"]["bob"])
        self.started = time.monotonic()
        self.stats = LinkStats(
            spec["name"], spec["kind"], datetime.now(UTC).isoformat(timespec="seconds")
        )

    def tap_fraction(self) -> float:
        """The intercepted fraction now (0 before the tap starts or without one)."""
        tap = self.spec["tap"]
        if tap is None or time.monotonic() - self.started < float(tap["from_s"]):
            return 0.0
        return float(tap["fraction"])

    def backlog(self) -> bool:
        """True while either KMS has not taken enough of the link's blocks."""
        return any(
            len(block_files(d)) >= MAX_BACKLOG_BLOCKS
            for d in (self.alice_dir, self.bob_dir)
            if d.is_dir()
        )

    def record(self, delivered_bits: int | None, qber: float | None, refusal: str | None) -> None:
        """Count one block (``delivered_bits`` None: refused) and rewrite ``stats.json``."""
        s = self.stats
        if delivered_bits is None:
            s.blocks_refused += 1
            s.last_refusal = refusal
        else:
            s.blocks_delivered += 1
            s.key_bits_delivered += delivered_bits
        s.last_qber = qber
        s.tapped = self.tap_fraction() > 0
        s.elapsed_s = time.monotonic() - self.started
        s.key_rate_bps = s.key_bits_delivered / s.elapsed_s if s.elapsed_s > 0 else 0.0
        self.record_stats()

    def record_stats(self) -> None:
        """Rewrite ``stats.json``."""
        write_json_atomic(self.folder / "stats.json", asdict(self.stats))

    def run(self) -> None:
        """Produce blocks until stopped."""
        self.record_stats()
        if self.spec["kind"] == "given":
            self._run_given()
        else:
            asyncio.run(self._run_modelled())

    def _run_given(self) -> None:
        from qdnet.network.simulation import INTERCEPT_RESEND_QBER, shor_preskill_fraction

        rate = float(self.spec["key_rate_bps"])
        carry_bits = 0.0
        next_at = time.monotonic() + GIVEN_BLOCK_S
        while not self.stop:
            self.stop.sleep(next_at - time.monotonic())
            if self.stop:
                return
            next_at += GIVEN_BLOCK_S
            carry_bits += rate * GIVEN_BLOCK_S
            nbytes = int(carry_bits // 8)
            if nbytes == 0 or self.backlog():
                continue
            carry_bits -= 8 * nbytes
            qber = float(self.spec["qber"]) + self.tap_fraction() * INTERCEPT_RESEND_QBER
            if shor_preskill_fraction(qber) <= 0:
                self.record(None, qber, f"QBER {qber:.3f}: no secret key at this error rate")
                continue
            block = KeyBlock(
                block_id=str(uuid.uuid4()),
                link_name=self.spec["name"],
                key=secrets.token_bytes(nbytes),
                length_bits=8 * nbytes,
                protocol="given-rate",
                eps_sec=0.0,
                eps_cor=0.0,
                qber=qber,
                simulated=True,
            )
            write_key_block(self.bob_dir, block)
            write_key_block(self.alice_dir, block)
            self.record(8 * nbytes, qber, None)

    async def _run_modelled(self) -> None:
        import numpy as np

        from qdnet.attacks import make_attack
        from qdnet.config import LinkConfig
        from qdnet.postprocessing.keyblock import KeyFolder
        from qdnet.postprocessing.loopback import distill_loopback_async
        from qdnet.postprocessing.session import SessionConfig
        from qdnet.simulation.runner import simulate

        document = self.spec["link_document"]
        config = LinkConfig.model_validate(document)
        link = config.build()
        session = SessionConfig(eps_sec=config.protocol.eps_sec, eps_cor=config.protocol.eps_cor)
        keys_a = KeyFolder.open(self.alice_dir, None, "alice")
        keys_b = KeyFolder.open(self.bob_dir, None, "bob")
        run_dir = self.folder / "run"
        pulses = PROBE_PULSES
        target = DETECTIONS_PER_BLOCK
        block = 0
        while not self.stop:
            slots_left = min(keys_a.pool.slots_left, keys_b.pool.slots_left)
            if slots_left == 0:  # every session, kept or aborted, costs one slot
                self.stats.auth_slots_left = 0
                self.stats.halted = (
                    "authentication pool exhausted (too many aborted sessions): the link needs "
                    "a new pre-shared secret"
                )
                self.record_stats()
                return
            if self.backlog():
                self.stop.sleep(0.2)
                continue
            fraction = self.tap_fraction()
            attack = (
                make_attack("intercept-resend", fraction, "random", link.protocol.kind)
                if fraction > 0
                else None
            )
            seq = np.random.SeedSequence([int(self.spec["seed"]), int(self.spec["index"]), block])
            block += 1
            slot = int(self.spec["index"]) % int(self.spec["cpu_slots"])
            with cpu_slot(Path(self.spec["slots_dir"]), slot, self.stop) as held:
                if not held:
                    return
                start = time.monotonic()
                shutil.rmtree(run_dir, ignore_errors=True)
                try:
                    if link.protocol.kind == "mdi-bb84":
                        detections, qber = self.simulate_mdi(link, pulses, seq, attack, run_dir)
                    else:
                        result = simulate(
                            link,
                            pulses,
                            np.random.default_rng(seq),
                            attack=attack,
                            keep_records=False,
                            link_document=document,
                            out=run_dir,
                        )
                        detections = int(sum(result.statistics.detections))
                        qber = result.statistics.qber_z(0)
                    distilled = await distill_loopback_async(run_dir, keys_a, keys_b, session)
                except ValueError as error:  # a link the Monte Carlo or the sessions refuse
                    self.stats.halted = f"this link cannot run: {error}"
                    self.record_stats()
                    return
                finally:
                    shutil.rmtree(run_dir, ignore_errors=True)
                self.stats.busy_s += time.monotonic() - start
            self.stats.pulses += pulses
            if distilled.aborted:
                reason = distilled.alice.reason or distilled.bob.reason
                self.record(None, qber, reason)
                upper = distilled.alice.estimate.get("qber_test_upper")
                if isinstance(upper, float) and upper <= session.qber_threshold:
                    # Refused for its size, not its errors: the finite-key terms need more bits.
                    target = min(MAX_DETECTIONS_PER_BLOCK, 2 * target)
            else:
                self.record(distilled.alice.final_key_bits, qber, None)
            self.stats.auth_slots_left = min(keys_a.pool.slots_left, keys_b.pool.slots_left)
            link_time_s = pulses / link.repetition_rate_hz
            pulses = (
                min(MAX_PULSES, 10 * pulses)
                if detections == 0
                else int(min(MAX_PULSES, max(1000, target * pulses / detections)))
            )
            if not self.spec["fast"]:
                self.stop.sleep(start + link_time_s - time.monotonic())

    def simulate_mdi(
        self, link: Any, pulses: int, seq: Any, attack: Any, run_dir: Path
    ) -> tuple[int, float]:
        """One block of an MDI link (:mod:`qdnet.simulation.mdi`): its announcements and the
        signal pair's Z-basis QBER. A tap is refused: the MDI Monte Carlo has no eavesdropper
        (the relay itself is untrusted by design)."""
        import numpy as np

        from qdnet.simulation.mdi import simulate_mdi

        if attack is not None:
            raise ValueError(
                "a tap on an MDI link is not modelled in up (the MDI Monte Carlo has no "
                "eavesdropper; network simulate models it)"
            )
        run = simulate_mdi(
            link,
            pulses,
            np.random.default_rng(seq),
            out=run_dir,
            seed=int(seq.generate_state(1)[0]),
            link_document=self.spec["link_document"],
        )
        signal_z = next(r for r in run.rows if r.classes == (0, 0) and r.basis == "z")
        qber = signal_z.qber.value
        return sum(r.successes for r in run.rows), 0.0 if qber != qber else float(qber)


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``python -m qdnet.network.runtime.linkloop SPEC.json``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m qdnet.network.runtime.linkloop SPEC.json", file=sys.stderr)
        return 2
    spec = json.loads(Path(args[0]).read_text())
    stop = _Stop()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    LinkLoop(spec, stop).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
