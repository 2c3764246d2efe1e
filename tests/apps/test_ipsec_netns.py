"""IKEv2 with RFC 8784 post-quantum preshared keys: one strongSwan charon per namespace (ESP in
the userspace kernel-libipsec plugin: these kernels have XFRM but no ESP), each keyed by
``qdnet app ipsec`` with keys from its own KMS."""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import vici
import yaml

from qdnet.kms.pki import PKI
from tests.apps.netns import (
    UNDERLAY,
    KMSPair,
    NetPair,
    app_command,
    read_events,
    report,
    wait_until,
)

CHARON = "/usr/lib/ipsec/charon"
PROGRAMS = ("ping", "unshare", "mount", CHARON)
INNER = ("10.203.1.1", "10.203.2.1")
"""Addresses behind each gateway (on lo), joined by the ESP tunnel."""
IDS = ("gw-a", "gw-b")
CONN = "qkd"
PLUGINS = (
    "random nonce aes sha1 sha2 hmac pem pkcs1 x509 revocation constraints pubkey gmp kdf "
    "kernel-libipsec kernel-netlink socket-default vici updown"
)


@dataclass
class Charons:
    pair: NetPair
    vici_paths: tuple[Path, Path]
    logs: tuple[Path, Path]
    conn_files: tuple[Path, Path]

    def session(self, side: int) -> Iterator[vici.Session]:
        sock = socket.socket(socket.AF_UNIX)
        sock.settimeout(30)
        sock.connect(str(self.vici_paths[side]))
        try:
            yield vici.Session(sock)
        finally:
            sock.close()

    def ike_sas(self, side: int) -> list[dict[str, object]]:
        for s in self.session(side):
            return [sa[CONN] for sa in s.list_sas() if CONN in sa]
        return []


@pytest.fixture
def charons(netpair: NetPair, tmp_path: Path) -> Charons:
    """A charon in each namespace, its own config, VICI socket and /run (private mount
    namespace: charon's pid file is fixed at /run/charon.pid); an IKE PSK loaded."""
    vicis, logs, confs = [], [], []
    psk = os.urandom(32).hex()
    for side in (0, 1):
        wd = tmp_path / f"strongswan-{side}"
        (wd / "run").mkdir(parents=True)
        vicis.append(wd / "charon.vici")
        logs.append(wd / "charon.log")
        (wd / "strongswan.conf").write_text(
            "charon {\n"
            f"  load = {PLUGINS}\n"
            "  make_before_break = yes\n"
            f"  filelog {{\n    log {{\n      path = {logs[side]}\n      default = 1\n"
            "      ike = 2\n    }\n  }\n"
            f"  plugins {{\n    vici {{\n      socket = unix://{vicis[side]}\n    }}\n  }}\n"
            "}\n"
        )
        netpair.run(side, "ip", "addr", "add", f"{INNER[side]}/32", "dev", "lo")
        conn = {
            CONN: {
                "version": 2,
                "local_addrs": [UNDERLAY[side]],
                "remote_addrs": [UNDERLAY[1 - side]],
                "proposals": ["aes256-sha256-modp3072"],
                "local": {"auth": "psk", "id": IDS[side]},
                "remote": {"auth": "psk", "id": IDS[1 - side]},
                "children": {
                    "net": {
                        "local_ts": [f"{INNER[side]}/32"],
                        "remote_ts": [f"{INNER[1 - side]}/32"],
                        "esp_proposals": ["aes256-sha256"],
                        "start_action": "none",
                    }
                },
            }
        }
        confs.append(wd / "connection.yaml")
        confs[side].write_text(yaml.safe_dump(conn))
        netpair.spawn(
            side,
            [
                "unshare",
                "-m",
                "--propagation",
                "private",
                "sh",
                "-c",
                f"mount --bind {wd / 'run'} /run && exec {CHARON}",
            ],
            f"charon-{side}.out",
            env={**os.environ, "STRONGSWAN_CONF": str(wd / "strongswan.conf")},
        )
    ch = Charons(netpair, (vicis[0], vicis[1]), (logs[0], logs[1]), (confs[0], confs[1]))
    for side in (0, 1):
        wait_until(lambda s=side: ch.vici_paths[s].exists(), 20, "charon's VICI socket")
        for s in ch.session(side):
            s.load_shared({"type": "IKE", "data": psk, "owners": list(IDS)})
    return ch


def _start_apps(
    ch: Charons, kp: KMSPair, pki: PKI, tmp_path: Path, *extra: str
) -> list[subprocess.Popen[bytes]]:
    procs = {}
    for side in (1, 0):
        cmd = app_command(
            "ipsec",
            kp,
            side,
            pki,
            "--connection",
            CONN,
            "--connection-file",
            str(ch.conn_files[side]),
            "--vici",
            f"unix://{ch.vici_paths[side]}",
            *extra,
            interval="3s",
            events=tmp_path / f"events-{side}.jsonl",
        )
        procs[side] = ch.pair.spawn(side, cmd, f"app-{side}.log")
    return [procs[0], procs[1]]


def _applied(path: Path) -> list[str]:
    return [str(e["key_id"]) for e in read_events(path) if e["event"] == "applied"]


def test_ikev2_comes_up_with_the_qkd_ppk_and_reauthenticates_with_each_new_key(
    charons: Charons, kms_pair: KMSPair, app_pki: PKI, tmp_path: Path
) -> None:
    pair = charons.pair
    apps = _start_apps(charons, kms_pair, app_pki, tmp_path)
    events = tmp_path / "events-0.jsonl"
    wait_until(lambda: len(_applied(events)) >= 1, 40, "the first PPK")
    sa = charons.ike_sas(0)[0]
    assert sa["state"] == b"ESTABLISHED" and sa["ppk"] == b"yes"
    assert pair.ping(0, INNER[1], source=INNER[0])  # ESP through kernel-libipsec

    # Traffic flows on while the IKE SA is replaced (make before break) with each new key.
    first = len(_applied(events))
    pinger = pair.spawn(
        0, ["ping", "-n", "-c", "30", "-i", "0.25", "-I", INNER[0], INNER[1]], "ping.log"
    )
    assert pinger.wait(30) == 0
    assert len(_applied(events)) >= first + 2
    ping_log = (pair.workdir / "ping.log").read_text()
    assert " 0% packet loss" in ping_log, ping_log
    ids = _applied(events)
    responder_log = charons.logs[1].read_text()
    for key_id in ids[:3]:  # each IKE SA authenticated with its own QKD key as PPK
        assert f"using PPK for PPK_ID '{key_id}'" in responder_log
    assert len(set(ids)) == len(ids)
    assert pair.ping(0, INNER[1], source=INNER[0])

    # With a different PPK at the responder the IKE SA does not come up (ppk_required).
    for proc in apps:
        pair.stop(proc)
    for s in charons.session(1):
        s.load_shared(
            {"id": f"qdnet-ppk-{CONN}", "type": "PPK", "data": os.urandom(32), "owners": [ids[-1]]}
        )
    for s in charons.session(0):
        for _ in s.terminate({"ike": CONN, "force": "yes", "timeout": 5000}):
            pass
        with pytest.raises(vici.exception.CommandException):
            for _ in s.initiate({"child": "net", "ike": CONN, "timeout": 10000}):
                pass
    assert not pair.ping(0, INNER[1], count=2, source=INNER[0])


def test_kms_down_terminates_the_ike_sa_and_the_next_key_brings_it_back(
    charons: Charons, kms_pair: KMSPair, app_pki: PKI, tmp_path: Path
) -> None:
    pair = charons.pair
    _start_apps(charons, kms_pair, app_pki, tmp_path, "--max-missed", "2")
    events = [tmp_path / "events-0.jsonl", tmp_path / "events-1.jsonl"]
    wait_until(lambda: len(_applied(events[0])) >= 1, 40, "the first PPK")
    assert pair.ping(0, INNER[1], source=INNER[0])
    kms_pair.kill(1)  # kill -9 the responder's KME: the initiator's refuses enc_keys (503)
    for path in events:
        wait_until(lambda p=path: any(e["event"] == "closed" for e in read_events(p)), 30, "close")
    assert charons.ike_sas(0) == [] and charons.ike_sas(1) == []
    assert not pair.ping(0, INNER[1], count=2, source=INNER[0])
    n = len(_applied(events[0]))
    kms_pair.start(1)
    wait_until(lambda: len(_applied(events[0])) > n, 40, "a PPK after the outage")
    assert pair.ping(0, INNER[1], source=INNER[0])


@pytest.mark.slow
def test_measure_ike_with_and_without_the_kms(
    charons: Charons, kms_pair: KMSPair, app_pki: PKI, tmp_path: Path
) -> None:
    """Figures for the documentation (``-m slow -s``; also ``$QDNET_APPS_FIGURES``)."""
    pair = charons.pair
    apps = _start_apps(charons, kms_pair, app_pki, tmp_path)
    events = [tmp_path / "events-0.jsonl", tmp_path / "events-1.jsonl"]
    wait_until(lambda: len(_applied(events[0])) >= 6, 60, "six PPKs")
    for proc in apps:
        pair.stop(proc)
    ini = [e for e in read_events(events[0]) if e["event"] == "applied"]
    resp = [e for e in read_events(events[1]) if e["event"] == "applied"]

    # The same IKE SA set-up with a PPK already loaded at both ends (no KMS).
    ppk = os.urandom(32)
    for side in (0, 1):
        conn = yaml.safe_load(charons.conn_files[side].read_text())[CONN]
        conn.update({"ppk_id": "static", "ppk_required": "yes"})
        for s in charons.session(side):
            s.load_shared({"id": "static", "type": "PPK", "data": ppk, "owners": ["static"]})
            s.load_conn({CONN: {k: _text(v) for k, v in conn.items()}})
    setup_ms = []
    for _ in range(5):
        for s in charons.session(0):
            for _ in s.terminate({"ike": CONN, "force": "yes", "timeout": 5000}):
                pass
            start = time.perf_counter()
            for _ in s.initiate({"child": "net", "ike": CONN, "timeout": 10000}):
                pass
            setup_ms.append(1000 * (time.perf_counter() - start))
    assert pair.ping(0, INNER[1], source=INNER[0])
    report(
        "ipsec",
        {
            "interval_s": 3,
            "reauthentications": len(ini),
            "same_key_ids": [e["key_id"] for e in ini] == [e["key_id"] for e in resp][: len(ini)],
            "enc_keys_ms_median": round(
                1000 * statistics.median(float(e["kms_s"]) for e in ini), 2
            ),
            "dec_keys_ms_median": round(
                1000 * statistics.median(float(e["kms_s"]) for e in resp), 2
            ),
            "rotation_with_ike_ms_median": round(
                1000 * statistics.median(float(e["rotation_s"]) for e in ini), 2
            ),
            "ike_sa_setup_static_ppk_ms_median": round(statistics.median(setup_ms), 2),
        },
    )


def _text(value: object) -> object:
    if isinstance(value, dict):
        return {k: _text(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_text(v) for v in value]
    return str(value)
