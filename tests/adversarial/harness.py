"""Two post-processing endpoints with real key folders, an in-memory channel with taps, and the
instrumentation the attack suite checks its invariants with."""

from __future__ import annotations

import asyncio
import hashlib
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from qdnet.postprocessing.cascade import CascadeConfig
from qdnet.postprocessing.keyblock import KeyBlock, KeyFolder
from qdnet.postprocessing.session import SessionConfig, SessionReport, run_alice, run_bob
from qdnet.protocols.records import RawRecords
from qdnet.transport import AuthenticatedChannel, memory_pair
from qdnet.transport.authentication import OneTimeKey, write_psk
from qdnet.transport.messages import PROTOCOL_VERSION, MessageKind
from tests.postprocessing.synthetic import synthetic_records

Tap = Callable[[bytes], list[bytes]]

#: A short session (40 000 detections at 1 % QBER, about 6 000 secret bits): Cascade in 6000-bit
#: frames with 6 passes, the later ones together (about 90 frames in all). LDPC runs on 60 000
#: detections at 2 % in one or two frames (about 20-75 frames, by the number of reveal rounds);
#: at this size it fails to converge in about 1 session of 7 (as before issue 12), which the
#: suite tolerates in attacked sessions only.
SMALL_DETECTIONS = 40_000
SMALL_QBER = 0.01
SMALL_CASCADE = SessionConfig(
    method="cascade",
    frame_bits=6000,
    cascade=CascadeConfig(passes=6, concurrent_from=1, priority=0),
)
SMALL_LDPC = SessionConfig(method="ldpc", ldpc_frame_bits=40_000)
#: Session parameters and (detections, QBER) of the records per method.
CONFIGS = {"cascade": (SMALL_CASCADE, 40_000, 0.01), "ldpc": (SMALL_LDPC, 60_000, 0.02)}


def raw_frame(kind: int, seq: int, header: bytes, payload: bytes = b"") -> bytes:
    """A frame built by hand (what a hostile peer can put on the wire)."""
    body = struct.pack(">BHII", PROTOCOL_VERSION, kind, seq, len(header)) + header + payload
    return struct.pack(">I", len(body)) + body


def hostile_frames(kind: MessageKind, seq: int) -> dict[str, bytes]:
    """Frames that parse only up to a point: huge shapes, huge numbers, deep nesting, a wrong
    or unknown kind, an announced length past the cap."""
    nested = b'{"fields":{"x":' + b"[" * 100_000 + b"]" * 100_000 + b'},"arrays":[]}'
    return {
        "huge-shape": raw_frame(
            kind, seq, b'{"fields":{},"arrays":[["tag","uint8",[4294967296,4294967296]]]}'
        ),
        "huge-number": raw_frame(
            kind, seq, b'{"fields":{"m":1e300,"nbits":1e300,"ok":1e300},"arrays":[]}'
        ),
        "float-shape": raw_frame(kind, seq, b'{"fields":{},"arrays":[["tag","uint8",[1e300]]]}'),
        "infinity": raw_frame(kind, seq, b'{"fields":{"m":Infinity},"arrays":[]}'),
        "nested-json": raw_frame(kind, seq, nested),
        "wrong-kind": raw_frame(
            MessageKind.EC_ANSWERS if kind != MessageKind.EC_ANSWERS else MessageKind.HELLO,
            seq,
            b'{"fields":{},"arrays":[]}',
        ),
        "unknown-kind": raw_frame(999, seq, b'{"fields":{},"arrays":[]}'),
        "oversized": struct.pack(">I", 1 << 30) + b"\0" * 64,
    }


@dataclass
class KeyLedger:
    """Every one-time key an endpoint revealed a tag under, with the digest of what it tagged."""

    uses: dict[int, set[str]] = field(default_factory=dict)

    def record(self, key: OneTimeKey, data: bytes) -> None:
        self.uses.setdefault(key.key_id, set()).add(hashlib.sha256(data).hexdigest())

    def reused(self) -> dict[int, set[str]]:
        """Keys that tagged two different messages (must stay empty)."""
        return {k: v for k, v in self.uses.items() if len(v) > 1}


@contextmanager
def instrumented(monkeypatch: pytest.MonkeyPatch) -> Iterator[KeyLedger]:
    """Record every revealed tag (key ID, digest of the tagged message) in one ledger."""
    ledger = KeyLedger()
    original = AuthenticatedChannel._sign

    def sign(self: AuthenticatedChannel, key: OneTimeKey, data: bytes) -> bytes:
        ledger.record(key, data)
        return original(self, key, data)

    monkeypatch.setattr(AuthenticatedChannel, "_sign", sign)
    yield ledger


def records(seed: int, detections: int = SMALL_DETECTIONS, qber: float = SMALL_QBER) -> RawRecords:
    """Fresh synthetic records (every session distils a run of its own)."""
    return synthetic_records(np.random.default_rng(seed), detections, qber=qber)


class Endpoints:
    """Alice's and Bob's key folders, started from one fresh pre-shared secret."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.psk = root / "psk.bin"
        write_psk(self.psk)
        self.alice = KeyFolder.open(root / "alice", self.psk, "alice")
        self.bob = KeyFolder.open(root / "bob", self.psk, "bob")

    def restart(self) -> None:
        """Both ends reload their folders from disk (as after a crash)."""
        self.alice = KeyFolder.open(self.root / "alice", None, "alice")
        self.bob = KeyFolder.open(self.root / "bob", None, "bob")

    def session(
        self,
        rec: RawRecords,
        cfg: SessionConfig = SMALL_CASCADE,
        tap_ab: Tap | None = None,
        tap_ba: Tap | None = None,
        recv_timeout_s: float = 5.0,
    ) -> tuple[SessionReport, SessionReport]:
        """One session over an in-memory channel with optional taps."""

        async def go() -> tuple[SessionReport, SessionReport]:
            end_a, end_b = memory_pair(tap_ab, tap_ba)
            chan_a = AuthenticatedChannel(end_a, self.alice.pool, "alice", recv_timeout_s)
            chan_b = AuthenticatedChannel(end_b, self.bob.pool, "bob", recv_timeout_s)
            return await asyncio.wait_for(
                asyncio.gather(
                    run_alice(chan_a, rec.alice, rec.meta, self.alice, cfg),
                    run_bob(chan_b, rec.bob, rec.meta, self.bob),
                ),
                120,
            )

        return asyncio.run(go())

    def blocks(self) -> tuple[dict[str, KeyBlock], dict[str, KeyBlock], dict[str, KeyBlock]]:
        """Alice's kept blocks, Bob's kept blocks, Bob's pending blocks (by block ID)."""
        return (
            {b.block_id: b for b in self.alice.blocks()},
            {b.block_id: b for b in self.bob.blocks()},
            {b.block_id: b for b in self.bob.pending()},
        )

    def violations(self) -> list[str]:
        """Key-folder invariants: no block differs between the ends, Bob keeps (offers to a KMS)
        no block Alice lacks, Alice never holds a pending block."""
        alice, bob, pending = self.blocks()
        out = []
        for block_id, block in {**bob, **pending}.items():
            if block_id in alice and alice[block_id].key != block.key:
                out.append(f"block {block_id} differs between the ends")
        for block_id in bob:
            if block_id not in alice:
                out.append(f"Bob kept block {block_id} that Alice does not hold")
        if self.alice.pending():
            out.append("Alice holds a pending block")
        if len(pending) > 1:
            out.append("Bob holds more than one pending block")
        return out
