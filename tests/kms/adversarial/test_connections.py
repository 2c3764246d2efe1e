"""Finding 2: handshake, header and idle deadlines and a connection cap with headroom for
clients with a certificate: idle TLS connections, silent TCP connections and slow headers from
an attacker without a certificate do not lock out a legitimate SAE (p99 < 1 s)."""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import resource
import socket
import ssl
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from qdnet.kms.pki import PKI
from qdnet.kms.tls import client_context
from tests.kms.adversarial.conftest import Pair, is_closed, read_response, spawned_pair, tls_socket

SMALL = {
    "limits": {"max_connections": 60, "reserved_connections": 20},
    "timeouts": {"handshake_s": 1.0, "header_s": 1.0, "idle_s": 2.0},
}


def _legit_p99_s(pair: Pair, requests: int) -> float:
    """A legitimate SAE: each request on a new connection (admission) to status."""
    cred = pair.pki.credential("app-a")
    ctx = client_context(pair.pki.ca_cert, cred.cert, cred.key)
    lat = []
    for _ in range(requests):
        t0 = time.perf_counter()
        with httpx.Client(verify=ctx, timeout=10) as h:
            r = h.get(pair.url_a + "/api/v1/keys/app-b/status")
        lat.append(time.perf_counter() - t0)
        assert r.status_code == 200
    lat.sort()
    return lat[min(len(lat) - 1, int(0.99 * len(lat)))]


def _flood(url: str, pki_root: str, idle_tls: int, silent_tcp: int, ready: Any, stop: Any) -> None:
    """An attacker process: hold ``silent_tcp`` TCP connections that never start TLS and
    ``idle_tls`` TLS connections without a certificate that never send a request."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = idle_tls + silent_tcp + 256
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    pki = PKI.at(pki_root)
    host, port = url.removeprefix("https://").split(":")
    held: list[socket.socket] = []
    for _ in range(silent_tcp):
        with contextlib.suppress(OSError):
            held.append(socket.create_connection((host, int(port)), timeout=10))
    for _ in range(idle_tls):
        with contextlib.suppress(OSError, ssl.SSLError):  # refused over the cap
            held.append(tls_socket(url, pki, None))
    ready.put(len(held))
    stop.wait(600)
    for s in held:
        s.close()


def _attack(pair: Pair, idle_tls: int, silent_tcp: int, requests: int, procs: int = 1) -> None:
    """``procs`` attacker processes (each with its own descriptor limit) share the flood."""
    ctx = mp.get_context("fork")  # the test process has no threads of its own here
    ready, stop = ctx.Queue(), ctx.Event()
    workers = [
        ctx.Process(
            target=_flood,
            args=(
                pair.url_a,
                str(pair.pki.root),
                idle_tls // procs,
                silent_tcp // procs,
                ready,
                stop,
            ),
        )
        for _ in range(procs)
    ]
    for w in workers:
        w.start()
    try:
        held = sum(ready.get(timeout=600) for _ in workers)
        p99 = _legit_p99_s(pair, requests)
        print(
            f"connection flood: {silent_tcp} silent TCP + {idle_tls} idle TLS without certificate"
            f" ({held} sockets still held by the attacker), legitimate SAE p99 {p99:.3f} s"
        )
        assert p99 < 1.0, f"legitimate SAE p99 {p99:.2f} s under attack"
    finally:
        stop.set()
        for w in workers:
            w.join(60)


def test_idle_connections_do_not_lock_out_saes(tmp_path: Path, pki: PKI) -> None:
    with spawned_pair(tmp_path, pki, extra=SMALL) as pair:
        _attack(pair, idle_tls=300, silent_tcp=100, requests=60)


@pytest.mark.slow
def test_twenty_thousand_idle_connections(tmp_path: Path, pki: PKI) -> None:
    with spawned_pair(tmp_path, pki) as pair:  # default limits and deadlines
        _attack(pair, idle_tls=20_000, silent_tcp=2_000, requests=200, procs=4)


def test_deadlines_close_idle_silent_and_slow_connections(tmp_path: Path, pki: PKI) -> None:
    with spawned_pair(tmp_path, pki, extra=SMALL) as pair:
        host, port = pair.url_a.removeprefix("https://").split(":")
        silent = socket.create_connection((host, int(port)))  # no ClientHello
        idle = tls_socket(pair.url_a, pki, "app-a")  # a certificate, but never a request
        slow = tls_socket(pair.url_a, pki, "app-a")
        slow.sendall(b"GET /api/v1/keys/app-b/status HTTP/1.1\r\n")
        t0 = time.monotonic()
        for i in range(8):  # one header line every 0.4 s: never finishes within header_s
            try:
                slow.sendall(b"X-Slow-%d: 1\r\n" % i)
            except (OSError, ssl.SSLError):
                break
            time.sleep(0.4)
        assert is_closed(slow, 1.0) and time.monotonic() - t0 < 4.5
        assert is_closed(silent, 2.0)
        assert is_closed(idle, 3.0)
        # a normal keep-alive client is served, then closed after idle_s without a request
        with tls_socket(pair.url_a, pki, "app-a") as ok:
            ok.sendall(b"GET /api/v1/keys/app-b/status HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_response(ok)[0] == 200
            ok.sendall(b"GET /api/v1/keys/app-b/status HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_response(ok)[0] == 200
            assert is_closed(ok, 4.0)


def test_connections_without_certificate_are_capped(tmp_path: Path, pki: PKI) -> None:
    with spawned_pair(tmp_path, pki, extra=SMALL) as pair:
        held = [tls_socket(pair.url_a, pki, None) for _ in range(40)]  # the cap: 60 - 20
        extra = tls_socket(pair.url_a, pki, None)
        assert is_closed(extra, 2.0)  # turned away at once
        for _ in range(20):  # the reserve is for clients with a certificate
            s = tls_socket(pair.url_a, pki, "app-a")
            s.sendall(b"GET /api/v1/keys/app-b/status HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_response(s)[0] == 200
            held.append(s)
        for s in held:
            s.close()
