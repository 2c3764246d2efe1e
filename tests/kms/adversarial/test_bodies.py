"""Finding 1: the caller and Content-Length are checked before any body is read; bodies are
read up to the limit and no further; slow bodies time out. Memory stays bounded."""

from __future__ import annotations

import ssl
import time
from pathlib import Path

import pytest

from qdnet.kms.pki import PKI
from tests.kms.adversarial.conftest import Pair, is_closed, read_response, spawned_pair, tls_socket

MIB = 1 << 20


def peak_rss_bytes(pid: int) -> int:
    """Peak resident set (VmHWM) of a process."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM")


def push_body(
    pair: Pair, who: str | None, total: int, chunked: bool = False
) -> tuple[int | None, int]:
    """POST an enc_keys body of ``total`` bytes; (status answered or None, bytes sent)."""
    sock = tls_socket(pair.url_a, pair.pki, who)
    head = (
        "POST /api/v1/keys/app-b/enc_keys HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    )
    head += "Transfer-Encoding: chunked\r\n\r\n" if chunked else f"Content-Length: {total}\r\n\r\n"
    sent = 0
    chunk = b"[" * MIB
    try:
        sock.sendall(head.encode())
        while sent < total:
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
            sent += len(chunk)
        if chunked:
            sock.sendall(b"0\r\n\r\n")
    except (OSError, ssl.SSLError):
        pass
    try:
        status, _ = read_response(sock)
    except (OSError, ssl.SSLError):
        status = None
    sock.close()
    return status, sent


def _attack(pair: Pair, size: int) -> None:
    pid = pair.procs["a"].pid
    before = peak_rss_bytes(pid)
    for who, chunked in ((None, False), (None, False), ("app-a", False), ("app-a", True)):
        status, sent = push_body(pair, who, size, chunked)
        assert status in (401, 400, None), status
        assert sent < size or status is not None
    grown = peak_rss_bytes(pid) - before
    assert grown < 50 * MIB, f"server peak RSS grew by {grown / MIB:.0f} MiB"
    with tls_socket(pair.url_a, pair.pki, "app-a") as s:  # still serving
        s.sendall(b"GET /api/v1/keys/app-b/status HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(s)[0] == 200


def test_huge_bodies_do_not_grow_memory(tmp_path: Path, pki: PKI) -> None:
    with spawned_pair(tmp_path, pki) as pair:
        _attack(pair, 128 * MIB)


@pytest.mark.slow
def test_gigabyte_bodies_do_not_grow_memory(tmp_path: Path, pki: PKI) -> None:
    with spawned_pair(tmp_path, pki) as pair:
        _attack(pair, 1024 * MIB)


def test_caller_and_length_are_checked_before_the_body(tmp_path: Path, pki: PKI) -> None:
    with spawned_pair(tmp_path, pki) as pair:
        # no certificate: 401 at once, although the body never comes; the connection closes
        sock = tls_socket(pair.url_a, pair.pki)
        sock.sendall(
            b"POST /api/v1/keys/app-b/enc_keys HTTP/1.1\r\nHost: x\r\n"
            b"Content-Length: 1073741824\r\n\r\n"
        )
        t0 = time.monotonic()
        status, body = read_response(sock)
        assert status == 401 and b"message" in body and time.monotonic() - t0 < 2
        assert is_closed(sock, 2)
        # a client with a certificate announcing too much: 400 before the body
        sock = tls_socket(pair.url_a, pair.pki, "app-a")
        sock.sendall(
            b"POST /api/v1/keys/app-b/enc_keys HTTP/1.1\r\nHost: x\r\n"
            b"Content-Length: 1073741824\r\n\r\n"
        )
        status, body = read_response(sock)
        assert status == 400 and b"too large" in body
        assert is_closed(sock, 2)


def test_slow_body_times_out(tmp_path: Path, pki: PKI) -> None:
    with spawned_pair(tmp_path, pki, extra={"timeouts": {"body_s": 1.0}}) as pair:
        sock = tls_socket(pair.url_a, pair.pki, "app-a")
        sock.sendall(
            b"POST /api/v1/keys/app-b/enc_keys HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"
        )
        t0 = time.monotonic()
        status, body = read_response(sock)  # one byte of a hundred, then nothing
        assert status == 400 and b"not received within" in body
        assert time.monotonic() - t0 < 5
        assert is_closed(sock, 2)
