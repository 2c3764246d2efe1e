"""SIGKILL of a real endpoint process at a point of the session, then an honest session from the
folders it left: the one-time keys, the pools and the key folders must come through.

A proxy in the test relays the frames between ``qdnet endpoint alice`` and ``qdnet endpoint bob``
(two real processes over TCP) and kills the chosen endpoint with SIGKILL right after it has relayed
the chosen frame. Afterwards both folders are reopened (which completes whatever the kill
interrupted) and checked: no block differs between the ends, Bob keeps no block Alice lacks, the
honest session that follows gives identical confirmed blocks, and both pools agree on the next
session slot (every slot either end drew is spent on both)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
from pathlib import Path

import pytest

from qdnet.postprocessing.keyblock import KeyFolder
from qdnet.postprocessing.session import SessionReport
from qdnet.protocols.records import save_records
from qdnet.transport.authentication import write_psk
from qdnet.transport.messages import decode_message, frame_length
from tests.adversarial.harness import Endpoints, records
from tests.adversarial.test_attack_suite import HONEST

QDNET = [sys.executable, "-c", "from qdnet.cli import app; app()"]
#: (victim, direction of the frame after which it dies, kind, occurrence)
DEFAULT_POINTS = [("bob", "ba", "AUTH_TAG", 0), ("alice", "ba", "AUTH_TAG", 0)]
KINDS = [
    ("ab", "HELLO"),
    ("ba", "HELLO_ACK"),
    ("ba", "SIFT_REQUEST"),
    ("ab", "SIFT_REPLY"),
    ("ba", "TEST_BITS"),
    ("ab", "EC_START"),
    ("ba", "EC_QUESTIONS"),
    ("ab", "EC_ANSWERS"),
    ("ab", "VERIFY_HASH"),
    ("ba", "VERIFY_RESULT"),
    ("ab", "PA_SEED"),
    ("ab", "AUTH_TAG"),
    ("ba", "AUTH_TAG"),
    ("ab", "CONFIRM"),
]
EXHAUSTIVE_POINTS = [(v, d, k, 0) for v in ("alice", "bob") for d, k in KINDS]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _endpoint(role: str, run: Path, keys: Path, psk: Path, address: str) -> list[str]:
    where = "--listen" if role == "alice" else "--connect"
    return [
        *QDNET,
        "endpoint",
        role,
        "--records",
        str(run),
        "--keys",
        str(keys),
        "--psk",
        str(psk),
        where,
        address,
        "--frame-bits",
        "6000",
        "--timeout",
        "30",
        "--recv-timeout",
        "5",
        "--json",
    ]


async def _pump(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    direction: str,
    point: tuple[str, str, str, int],
    seen: dict[tuple[str, str], int],
    victims: dict[str, asyncio.subprocess.Process],
) -> None:
    try:
        while True:
            prefix = await reader.readexactly(4)
            body = await reader.readexactly(frame_length(prefix))
            kind = decode_message(prefix + body).kind.name
            occurrence = seen.get((direction, kind), 0)
            seen[(direction, kind)] = occurrence + 1
            writer.write(prefix + body)
            await writer.drain()
            if (direction, kind, occurrence) == point[1:]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(victims[point[0]].pid, signal.SIGKILL)
    except (asyncio.IncompleteReadError, ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def _killed_session(
    run: Path, keys: dict[str, Path], psk: Path, point: tuple[str, str, str, int]
) -> dict[str, int]:
    """One session through the killing proxy; returns both exit codes."""
    port_a, port_p = _free_port(), _free_port()
    alice = await asyncio.create_subprocess_exec(
        *_endpoint("alice", run, keys["alice"], psk, f"127.0.0.1:{port_a}"),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    victims = {"alice": alice}
    seen: dict[tuple[str, str], int] = {}
    pumps: list[asyncio.Task[None]] = []

    async def on_bob(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(300):
            try:
                a_reader, a_writer = await asyncio.open_connection("127.0.0.1", port_a)
                break
            except OSError:
                await asyncio.sleep(0.1)
        else:
            writer.close()
            return
        pumps.append(asyncio.create_task(_pump(reader, a_writer, "ba", point, seen, victims)))
        pumps.append(asyncio.create_task(_pump(a_reader, writer, "ab", point, seen, victims)))

    server = await asyncio.start_server(on_bob, "127.0.0.1", port_p)
    bob = await asyncio.create_subprocess_exec(
        *_endpoint("bob", run, keys["bob"], psk, f"127.0.0.1:{port_p}"),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    victims["bob"] = bob
    codes = {
        "alice": await asyncio.wait_for(alice.wait(), 120),
        "bob": await asyncio.wait_for(bob.wait(), 120),
    }
    server.close()
    for task in pumps:
        task.cancel()
    return codes


def _honest(seed: int, keys: dict[str, Path]) -> tuple[SessionReport, SessionReport]:
    """The next session, in this process, from the folders as the killed processes left them."""
    ends = Endpoints.__new__(Endpoints)
    ends.alice = KeyFolder.open(keys["alice"], None, "alice")
    ends.bob = KeyFolder.open(keys["bob"], None, "bob")
    return ends.session(records(seed), HONEST, recv_timeout_s=30)


def _invariants(keys: dict[str, Path]) -> list[str]:
    alice = KeyFolder.open(keys["alice"], None, "alice")
    bob = KeyFolder.open(keys["bob"], None, "bob")
    a = {b.block_id: b.key for b in alice.blocks()}
    kept = {b.block_id: b.key for b in bob.blocks()}
    pending = {b.block_id: b.key for b in bob.pending()}
    out = []
    for block_id, key in {**kept, **pending}.items():
        if block_id in a and a[block_id] != key:
            out.append(f"block {block_id} differs")
    out += [f"Bob kept {i} that Alice lacks" for i in kept if i not in a]
    if alice.pending():
        out.append("Alice holds a pending block")
    return out


def _run_points(tmp_path: Path, points: list[tuple[str, str, str, int]]) -> tuple[int, list[str]]:
    psk = tmp_path / "psk.bin"
    write_psk(psk)
    keys = {"alice": tmp_path / "ka", "bob": tmp_path / "kb"}
    violations: list[str] = []
    for n, point in enumerate(points):
        run_k = tmp_path / f"run-{n}"
        save_records(records(7000 + 2 * n), run_k)
        asyncio.run(_killed_session(run_k, keys, psk, point))
        label = f"kill {point[0]} after {point[1]} {point[2]}#{point[3]}"
        violations += [f"{label}: {v}" for v in _invariants(keys)]
        rep_a, rep_b = _honest(7001 + 2 * n, keys)
        if rep_a.aborted or rep_b.aborted or not rep_b.confirmed:
            reason = rep_a.reason or rep_b.reason
            violations.append(f"{label}: the honest session failed: {reason}")
        violations += [f"{label} + honest: {v}" for v in _invariants(keys)]
        slots = [
            json.loads((keys[r] / "auth" / "pool.json").read_text())["next_slot"]
            for r in ("alice", "bob")
        ]
        if slots[0] != slots[1]:
            violations.append(f"{label}: pools out of step after the honest session {slots}")
        if list((keys["bob"] / "pending").glob("*.json")):
            violations.append(f"{label}: a block is still pending after the honest session")
    return len(points), violations


def test_sigkill_of_either_endpoint(tmp_path: Path) -> None:
    cases, violations = _run_points(tmp_path, DEFAULT_POINTS)
    print(json.dumps({"sweep": "kill", "cases": cases, "violations": len(violations)}))
    assert violations == []


@pytest.mark.slow
def test_sigkill_of_either_endpoint_exhaustive(tmp_path: Path) -> None:
    cases, violations = _run_points(tmp_path, EXHAUSTIVE_POINTS)
    print(json.dumps({"sweep": "kill-exhaustive", "cases": cases, "violations": len(violations)}))
    assert violations == []
