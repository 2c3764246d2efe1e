"""Probes of two real KMS processes (issue 13): helpers to run a pair and to speak raw TLS."""

from __future__ import annotations

import contextlib
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from qdnet.kms.link import free_port, ingest, link_settings, spawn_kms, wait_until_serving
from qdnet.kms.pki import PKI
from qdnet.kms.settings import KMSSettings
from qdnet.kms.tls import client_context
from qdnet.postprocessing.keyblock import KeyBlock
from tests.kms.conftest import PG_ENV, pg_admin_url, pg_databases, write_blocks


class KMSProcesses:
    """KMS processes by name: kill one (kill -9 by default), stop all (SIGTERM, then SIGKILL)."""

    procs: dict[str, subprocess.Popen[bytes]]

    def kill(self, side: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs.pop(side)
        proc.send_signal(sig)
        proc.wait(20)

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()


@dataclass
class Pair(KMSProcesses):
    """Two KMS processes: kme-alice serves app-a (and app-c), kme-bob serves app-b."""

    work: Path
    pki: PKI
    settings: tuple[KMSSettings, KMSSettings]
    ports: tuple[int, int, int, int]
    blocks: list[KeyBlock]
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def url_a(self) -> str:
        return f"https://127.0.0.1:{self.ports[0]}"

    @property
    def url_b(self) -> str:
        return f"https://127.0.0.1:{self.ports[2]}"

    @property
    def peer_url_a(self) -> str:
        return f"https://127.0.0.1:{self.ports[1]}"

    def start(self, side: str) -> None:
        name = "kme-alice" if side == "a" else "kme-bob"
        self.procs[side] = spawn_kms(self.work / f"{name}.yaml", self.work / "kms.log")
        url, sae, slave = (
            (self.url_a, "app-a", "app-b") if side == "a" else (self.url_b, "app-b", "app-a")
        )
        wait_until_serving(url, self.pki, sae, slave, timeout_s=30)

    def log(self) -> str:
        path = self.work / "kms.log"
        return path.read_text(errors="replace") if path.exists() else ""


@contextlib.contextmanager
def spawned_pair(
    work: Path,
    pki: PKI,
    *,
    extra: dict[str, Any] | None = None,
    blocks: int = 4,
    block_bytes: int = 8192,
    database_urls: tuple[str | None, str | None] = (None, None),
    saes: tuple[list[str], list[str]] = (["app-a", "app-c"], ["app-b"]),
) -> Iterator[Pair]:
    """Two KMS processes with ``blocks`` shared blocks ingested (block files removed)."""
    ports = (free_port(), free_port(), free_port(), free_port())
    settings = link_settings(
        work,
        pki,
        saes=saes,
        ports=ports,
        database_urls=database_urls,
        extra={"ingest_interval_s": 0.1, **(extra or {})},
    )
    made = write_blocks([work / "ka", work / "kb"], blocks, block_bytes)
    ingest(settings[0], work / "ka", remove=True)
    ingest(settings[1], work / "kb", remove=True)
    pair = Pair(work, pki, settings, ports, made)
    try:
        pair.start("a")
        pair.start("b")
        yield pair
    finally:
        pair.stop()


def wait_shared(pair: Pair, timeout_s: float = 20.0) -> None:
    """Until kme-alice offers the whole pool (blocks confirmed by the peer)."""
    import httpx

    cred = pair.pki.credential("app-a")
    total_bits = sum(len(b.key) for b in pair.blocks) * 8
    ctx = client_context(pair.pki.ca_cert, cred.cert, cred.key)
    deadline = time.monotonic() + timeout_s
    with httpx.Client(verify=ctx, timeout=5) as h:
        while True:
            st = h.get(f"{pair.url_a}/api/v1/keys/app-b/status").json()
            if st["stored_key_count"] >= total_bits // st["key_size"]:
                return
            assert time.monotonic() < deadline, "blocks never shared"
            time.sleep(0.05)


def tls_socket(
    url: str, pki: PKI, who: str | None = None, timeout_s: float = 10.0
) -> ssl.SSLSocket:
    """A raw TLS connection to ``url`` (as ``who``, or without a client certificate)."""
    host, port = url.removeprefix("https://").split(":")
    if who is None:
        ctx = client_context(pki.ca_cert)
    else:
        cred = pki.credential(who)
        ctx = client_context(pki.ca_cert, cred.cert, cred.key)
    raw = socket.create_connection((host, int(port)), timeout=timeout_s)
    return ctx.wrap_socket(raw, server_hostname=host)


def read_response(sock: ssl.SSLSocket) -> tuple[int, bytes]:
    """Status and body of one HTTP/1.1 answer with Content-Length."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the answer")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(head[9:12]), body


def is_closed(sock: ssl.SSLSocket, wait_s: float) -> bool:
    """True if the server closes ``sock`` within ``wait_s`` seconds."""
    sock.settimeout(wait_s)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except (ConnectionError, ssl.SSLError, OSError):
        return True


@pytest.fixture(params=["sqlite", "postgresql"])
def dbs(request: pytest.FixtureRequest) -> Iterator[tuple[str | None, str | None]]:
    """Database URLs of the two stores: SQLite files (None) or two fresh PostgreSQL databases."""
    if request.param == "sqlite":
        yield (None, None)
        return
    url = pg_admin_url()
    if url is None:
        pytest.skip(f"no PostgreSQL server at {PG_ENV}")
    with pg_databases(url, 2) as (a, b):
        yield (a, b)
