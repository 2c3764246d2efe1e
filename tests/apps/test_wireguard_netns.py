"""WireGuard (wireguard-go) between two namespaces, its preshared key rotated by
``qdnet app wireguard`` on both sides with keys from two KMS."""

from __future__ import annotations

import base64
import os
import re
import statistics
import subprocess
import time
from pathlib import Path

import pytest

from qdnet.apps.wireguard import preshared_keys
from qdnet.kms.pki import PKI
from tests.apps.netns import (
    UNDERLAY,
    KMSPair,
    NetPair,
    app_command,
    read_events,
    report,
    run,
    wait_until,
)

PROGRAMS = ("wireguard-go", "wg", "ping")
TUNNEL = ("10.202.0.1", "10.202.0.2")
WG_PORT = 51820


class Tunnel:
    """A wireguard-go interface in each namespace, peered over the veth pair, no PSK yet."""

    def __init__(self, pair: NetPair) -> None:
        self.pair = pair
        # wireguard-go's control sockets (/var/run/wireguard/IF.sock) are shared by all
        # namespaces: the names must differ.
        self.ifname = (f"wg{pair.tag}a", f"wg{pair.tag}b")
        self.private = [pair.run(0, "wg", "genkey").stdout.strip() for _ in (0, 1)]
        self.public = [_pubkey(k) for k in self.private]
        for side in (0, 1):
            pair.spawn(side, ["wireguard-go", "-f", self.ifname[side]], f"wg-{side}.log")
        for side in (0, 1):
            wait_until(
                lambda s=side: (
                    pair.run(s, "ip", "link", "show", self.ifname[s], check=False).returncode == 0
                ),
                10,
                "the wireguard-go interface",
            )
            key_file = pair.workdir / f"wg-{side}.key"
            key_file.write_text(self.private[side] + "\n")
            os.chmod(key_file, 0o600)
            pair.run(
                side,
                "wg",
                "set",
                self.ifname[side],
                "private-key",
                str(key_file),
                "listen-port",
                str(WG_PORT),
            )
            self.add_peer(side)
            pair.run(side, "ip", "addr", "add", f"{TUNNEL[side]}/24", "dev", self.ifname[side])
            pair.run(side, "ip", "link", "set", self.ifname[side], "up")

    def add_peer(self, side: int, psk: str | None = None) -> None:
        cmd = [
            "wg",
            "set",
            self.ifname[side],
            "peer",
            self.public[1 - side],
            "allowed-ips",
            f"{TUNNEL[1 - side]}/32",
            "endpoint",
            f"{UNDERLAY[1 - side]}:{WG_PORT}",
        ]
        if psk is not None:
            key_file = self.pair.workdir / f"psk-{side}"
            key_file.write_text(psk + "\n")
            cmd += ["preshared-key", str(key_file)]
        self.pair.run(side, *cmd)

    def rehandshake(self, side: int, psk: str) -> None:
        """Remove and re-add the peer: the next packet starts a handshake with ``psk``."""
        self.pair.run(side, "wg", "set", self.ifname[side], "peer", self.public[1 - side], "remove")
        self.add_peer(side, psk)

    def psk(self, side: int) -> str | None:
        return preshared_keys(self.ifname[side]).get(self.public[1 - side])


def _pubkey(private: str) -> str:
    return run(["wg", "pubkey"], input=private + "\n").stdout.strip()


@pytest.fixture
def tunnel(netpair: NetPair) -> Tunnel:
    return Tunnel(netpair)


def _start_apps(
    tunnel: Tunnel, kms_pair: KMSPair, app_pki: PKI, tmp_path: Path, *extra: str
) -> tuple[list[Path], list[subprocess.Popen[bytes]]]:
    """``qdnet app wireguard`` on both sides: (event files, processes), side 0 first."""
    events = [tmp_path / "events-0.jsonl", tmp_path / "events-1.jsonl"]
    procs = {}
    for side in (1, 0):  # the responder listens first
        cmd = app_command(
            "wireguard",
            kms_pair,
            side,
            app_pki,
            "--interface",
            tunnel.ifname[side],
            "--peer-public-key",
            tunnel.public[1 - side],
            *extra,
            events=events[side],
        )
        procs[side] = tunnel.pair.spawn(side, cmd, f"app-{side}.log")
    return events, [procs[0], procs[1]]


def _applied(path: Path) -> list[dict[str, object]]:
    return [e for e in read_events(path) if e["event"] == "applied"]


def test_preshared_key_rotates_from_the_kms_and_is_really_used(
    tunnel: Tunnel, kms_pair: KMSPair, app_pki: PKI, tmp_path: Path
) -> None:
    pair = tunnel.pair
    events, apps = _start_apps(tunnel, kms_pair, app_pki, tmp_path)
    wait_until(lambda: len(_applied(events[0])) >= 1, 30, "the first rotation")
    assert pair.ping(0, TUNNEL[1], count=2)

    # Watch the keys change while traffic flows through the tunnel.
    seen: list[tuple[str | None, str | None]] = []
    pinger = pair.spawn(0, ["ping", "-n", "-c", "24", "-i", "0.25", TUNNEL[1]], "ping.log")
    while pinger.poll() is None:
        seen.append((tunnel.psk(0), tunnel.psk(1)))
        time.sleep(0.2)
    assert pinger.returncode == 0  # every ping answered across the rotations
    log = (pair.workdir / "ping.log").read_text()
    assert " 0% packet loss" in log, log
    distinct = {a for a, b in seen if a == b}
    assert len(distinct) >= 2 and "(none)" not in distinct and None not in distinct
    ids = [e["key_id"] for e in _applied(events[0])]
    assert len(set(ids)) == len(ids) >= 3
    assert [e["key_id"] for e in _applied(events[1])][: len(ids) - 1] == ids[: len(ids) - 1]

    # Freeze the keys: the current QKD key carries a fresh handshake ...
    for proc in apps:
        pair.stop(proc)
    psk = tunnel.psk(0)
    assert psk == tunnel.psk(1) and psk is not None and len(base64.b64decode(psk)) == 32
    for side in (0, 1):
        tunnel.rehandshake(side, psk)
    assert pair.ping(0, TUNNEL[1])
    # ... and a wrong key at one side stops the traffic.
    tunnel.rehandshake(1, base64.b64encode(os.urandom(32)).decode())
    tunnel.rehandshake(0, psk)
    assert not pair.ping(0, TUNNEL[1], count=3)


@pytest.mark.parametrize("policy", ["close", "keep"])
def test_kms_down_tears_the_tunnel_down_or_keeps_it_as_chosen(
    tunnel: Tunnel, kms_pair: KMSPair, app_pki: PKI, tmp_path: Path, policy: str
) -> None:
    pair = tunnel.pair
    extra = ("--max-missed", "2", "--on-missed-key", policy)
    events, _apps = _start_apps(tunnel, kms_pair, app_pki, tmp_path, *extra)
    wait_until(lambda: len(_applied(events[1])) >= 1, 30, "the first rotation")
    assert pair.ping(0, TUNNEL[1], count=2)

    kms_pair.kill(0)  # kill -9 the initiator's KME
    verdict = "closed" if policy == "close" else "kept"
    for path in events:
        wait_until(lambda p=path: any(e["event"] == verdict for e in read_events(p)), 30, verdict)
    if policy == "keep":  # fail open: the tunnel runs on, on its last key
        assert tunnel.psk(0) == tunnel.psk(1) not in (None, "(none)")
        assert pair.ping(0, TUNNEL[1], count=2)
        return
    assert tunnel.psk(0) is None and tunnel.psk(1) is None  # the peer is gone on both sides
    assert not pair.ping(0, TUNNEL[1], count=2)

    kms_pair.start(0)  # the KME comes back: the next key restores the peer
    before = [len(_applied(p)) for p in events]
    for side, path in enumerate(events):
        wait_until(
            lambda p=path, n=before[side]: len(_applied(p)) > n, 30, "a key after the outage"
        )
    assert tunnel.psk(0) == tunnel.psk(1) not in (None, "(none)")
    assert pair.ping(0, TUNNEL[1], count=3)


@pytest.mark.slow
def test_measure_rotations_handshakes_and_a_kms_outage(
    tunnel: Tunnel, kms_pair: KMSPair, app_pki: PKI, tmp_path: Path
) -> None:
    """Figures for the documentation (``-m slow -s``; also ``$QDNET_APPS_FIGURES``)."""
    pair = tunnel.pair
    run_s = 20.0
    extra = ("--max-missed", "2", "--on-missed-key", "close")
    events, apps = _start_apps(tunnel, kms_pair, app_pki, tmp_path, *extra)
    wait_until(lambda: len(_applied(events[0])) >= 1, 30, "the first rotation")
    assert pair.ping(0, TUNNEL[1], count=2)
    pinger = pair.spawn(
        0, ["ping", "-n", "-c", str(int(run_s * 4)), "-i", "0.25", TUNNEL[1]], "p.log"
    )
    assert pinger.wait(run_s + 10) == 0
    ini, resp = _applied(events[0]), _applied(events[1])
    ms = lambda xs: round(1000 * statistics.median(xs), 2)  # noqa: E731
    figures: dict[str, object] = {
        "interval_s": 2,
        "rotations_initiator": len(ini),
        "rotations_responder": len(resp),
        "same_key_ids": [e["key_id"] for e in ini] == [e["key_id"] for e in resp][: len(ini)],
        "ping_loss_during_rotations": (pair.workdir / "p.log").read_text().count(" 0% packet loss")
        == 1,
        "enc_keys_ms_median": ms([float(e["kms_s"]) for e in ini]),
        "dec_keys_ms_median": ms([float(e["kms_s"]) for e in resp]),
        "rotation_ms_median": ms([float(e["rotation_s"]) for e in ini]),
    }

    # The initiator's KME is killed: both ends tear the tunnel down after 2 missed rotations.
    t_kill = time.time()
    kms_pair.kill(0)
    for path in events:
        wait_until(lambda p=path: any(e["event"] == "closed" for e in read_events(p)), 30, "close")
    closed = [next(e["t"] for e in read_events(p) if e["event"] == "closed") for p in events]
    assert not pair.ping(0, TUNNEL[1], count=2)
    t_start = time.time()
    kms_pair.start(0)
    n = [len(_applied(p)) for p in events]
    for side, path in enumerate(events):
        wait_until(lambda p=path, k=n[side]: len(_applied(p)) > k, 30, "restore")
    restored = [_applied(p)[-1]["t"] for p in events]
    assert pair.ping(0, TUNNEL[1], count=2)
    figures["kms_down"] = {
        "closed_after_kill_s": [round(float(t) - t_kill, 2) for t in closed],
        "restored_after_kms_start_s": [round(float(t) - t_start, 2) for t in restored],
        "ping_while_closed": "100% loss",
    }

    # WireGuard handshake with the key already in place, against a ping on a live session.
    for proc in apps:
        pair.stop(proc)
    psk = tunnel.psk(0)
    assert psk is not None

    def ping1_ms() -> float:  # the first packet waits in wireguard-go for the handshake
        out = pair.run(0, "ping", "-n", "-c", "1", "-W", "2", TUNNEL[1]).stdout
        return float(re.search(r"time=([0-9.]+) ms", out).group(1))  # type: ignore[union-attr]

    readd = (
        f"wg set {tunnel.ifname[0]} peer {tunnel.public[1]} remove; "
        f"wg set {tunnel.ifname[0]} peer {tunnel.public[1]} allowed-ips {TUNNEL[1]}/32 "
        f"endpoint {UNDERLAY[1]}:{WG_PORT} preshared-key {pair.workdir / 'psk-0'}"
    )
    (pair.workdir / "psk-0").write_text(psk + "\n")
    with_handshake, live = [], []
    for _ in range(10):
        tunnel.rehandshake(1, psk)
        pair.run(0, "bash", "-c", readd)
        with_handshake.append(ping1_ms())
        live.append(ping1_ms())
    figures["ping_rtt_with_handshake_ms_median"] = round(statistics.median(with_handshake), 2)
    figures["ping_rtt_on_live_session_ms_median"] = round(statistics.median(live), 2)
    report("wireguard", figures)
    assert len(ini) >= run_s / 2 - 1 and figures["same_key_ids"]
