"""TLS 1.3 with the QKD key as external PSK: ``openssl s_server -nocert`` and ``s_client`` in two
namespaces, each started by ``qdnet app tls-psk`` with the key from its own KMS."""

from __future__ import annotations

import os
import statistics
import subprocess
from pathlib import Path

import pytest

from qdnet.kms.pki import PKI
from tests.apps.netns import (
    UNDERLAY,
    KMSPair,
    NetPair,
    app_command,
    read_events,
    report,
    timed_ms,
    wait_port,
    wait_until,
)

PROGRAMS = ("openssl", "bash")
TLS_PORT = 4433
# OpenSSL binds a -psk key to SHA-256: a SHA-256 suite.
SUITE = ["-tls1_3", "-ciphersuites", "TLS_AES_128_GCM_SHA256"]
PSK = '-psk "$QDNET_PSK_HEX" -psk_identity "$QDNET_PSK_IDENTITY"'
WRONG_PSK = '-psk "$(openssl rand -hex 32)" -psk_identity "$QDNET_PSK_IDENTITY"'


def _server(pair: NetPair, kp: KMSPair, pki: PKI, tmp_path: Path, *extra: str) -> None:
    # -nocert: no certificate to fall back on, only the PSK can authenticate; -rev echoes
    # each line reversed.
    server = (
        f"exec openssl s_server -nocert {' '.join(SUITE)} {PSK} "
        f"-accept {UNDERLAY[1]}:{TLS_PORT} -rev </dev/null"
    )
    cmd = app_command("tls-psk", kp, 1, pki, *extra, "--", "sh", "-c", server, interval=None)
    pair.spawn(1, cmd, "app-1.log")


def _client(pair: NetPair, kp: KMSPair, pki: PKI, tmp_path: Path, psk: str, *extra: str) -> int:
    wait = (
        f"for i in $(seq 100); do (exec 3<>/dev/tcp/{UNDERLAY[1]}/{TLS_PORT}) 2>/dev/null "
        "&& break; sleep 0.1; done"
    )
    client = (
        f"{wait}; (echo hello-qkd; sleep 0.5) | openssl s_client "
        f"-connect {UNDERLAY[1]}:{TLS_PORT} {' '.join(SUITE)} {psk} -brief"
    )
    events = tmp_path / "events-0.jsonl"
    cmd = app_command(
        "tls-psk", kp, 0, pki, *extra, "--", "bash", "-c", client, interval=None, events=events
    )
    proc = pair.spawn(0, cmd, "app-0.log")
    return proc.wait(60)


@pytest.mark.parametrize("hybrid", [False, True], ids=["qkd", "hybrid"])
def test_tls13_handshake_with_the_qkd_key_as_psk(
    netpair: NetPair, kms_pair: KMSPair, app_pki: PKI, tmp_path: Path, hybrid: bool
) -> None:
    extra = ("--hybrid",) if hybrid else ()  # ML-KEM-768 mixed in: same key at both ends
    _server(netpair, kms_pair, app_pki, tmp_path, *extra)
    assert _client(netpair, kms_pair, app_pki, tmp_path, PSK, *extra) == 0
    client_log = (tmp_path / "app-0.log").read_text()
    assert "dkq-olleh" in client_log  # the server's reversed echo came back over TLS 1.3
    assert "Protocol version: TLSv1.3" in client_log and "No peer certificate" in client_log
    key_id = [e for e in read_events(tmp_path / "events-0.jsonl") if e["event"] == "applied"]
    assert len(key_id) == 1  # one key for the command's lifetime (no --interval)
    assert key_id[0]["hybrid"] is hybrid


def test_a_different_key_fails_the_handshake(
    netpair: NetPair, kms_pair: KMSPair, app_pki: PKI, tmp_path: Path
) -> None:
    _server(netpair, kms_pair, app_pki, tmp_path)
    assert _client(netpair, kms_pair, app_pki, tmp_path, WRONG_PSK) != 0
    assert "dkq-olleh" not in (tmp_path / "app-0.log").read_text()
    wait_until(
        lambda: "binder does not verify" in (tmp_path / "app-1.log").read_text(),
        10,
        "the server to refuse the PSK binder",
    )


@pytest.mark.slow
def test_measure_tls_handshake_with_and_without_the_kms(
    netpair: NetPair, kms_pair: KMSPair, app_pki: PKI, tmp_path: Path
) -> None:
    """Figures for the documentation (``-m slow -s``; also ``$QDNET_APPS_FIGURES``)."""
    pair = netpair
    static = os.urandom(32).hex()
    server = netpair.spawn(
        1,
        [
            "openssl",
            "s_server",
            "-nocert",
            *SUITE,
            "-psk",
            static,
            "-psk_identity",
            "static",
            "-accept",
            f"{UNDERLAY[1]}:{TLS_PORT + 1}",
            "-rev",
        ],
        "static-server.log",
        stdin=subprocess.DEVNULL,
    )
    wait_port(pair, 0, UNDERLAY[1], TLS_PORT + 1)
    client = (
        f"openssl s_client -connect {UNDERLAY[1]}:{TLS_PORT + 1} {' '.join(SUITE)} "
        f"-psk {static} -psk_identity static -brief </dev/null"
    )
    handshake = [timed_ms(pair, 0, client) for _ in range(10)]
    process = [timed_ms(pair, 0, "openssl version") for _ in range(10)]
    pair.stop(server)

    _server(netpair, kms_pair, app_pki, tmp_path)
    assert _client(netpair, kms_pair, app_pki, tmp_path, PSK) == 0
    applied = [e for e in read_events(tmp_path / "events-0.jsonl") if e["event"] == "applied"]
    report(
        "tls-psk",
        {
            "openssl_s_client_static_psk_ms_median": round(statistics.median(handshake), 2),
            "openssl_process_start_ms_median": round(statistics.median(process), 2),
            "kms_enc_keys_ms": round(1000 * float(applied[0]["kms_s"]), 2),
            "kms_rotation_ms": round(1000 * float(applied[0]["rotation_s"]), 2),
        },
    )
    assert statistics.median(handshake) < 2000
