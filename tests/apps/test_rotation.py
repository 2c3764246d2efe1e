"""Key rotation over the control channel with a real KMS pair (in this process, 127.0.0.1)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from qdnet.apps.control import ChannelAuth, connect
from qdnet.apps.keys import AppKeys, KMSAccess
from qdnet.apps.rotation import EventLog, RotationSettings, Rotator
from qdnet.kms.client import DeliveredKey
from qdnet.kms.link import KMSLink, free_port
from qdnet.kms.pki import PKI


@dataclass
class RecordingSink:
    keys: list[tuple[str, bytes]] = field(default_factory=list)
    closes: int = 0
    stopped: bool = False

    def apply(self, key: bytes, key_id: str) -> None:
        self.keys.append((key_id, key))

    def close(self) -> None:
        self.closes += 1

    def stop(self) -> None:
        self.stopped = True


class RecordingKeys(AppKeys):
    """The real KMS calls, remembering what the KMS delivered (to compare with the sink)."""

    def __init__(self, access: KMSAccess) -> None:
        super().__init__(access)
        self.delivered: list[DeliveredKey] = []

    def new_key(self) -> DeliveredKey:
        k = super().new_key()
        self.delivered.append(k)
        return k

    def key_by_id(self, key_id: str) -> DeliveredKey:
        k = super().key_by_id(key_id)
        self.delivered.append(k)
        return k


@dataclass
class End:
    rotator: Rotator
    sink: RecordingSink
    keys: RecordingKeys


def _access(link: KMSLink, pki: PKI, sae: str, peer: str) -> KMSAccess:
    return KMSAccess.from_pki(link.node_of(sae).url, sae, peer, pki.root)


def _tls(pki: PKI, sae: str, peer: str, cert_of: str | None = None) -> ChannelAuth:
    cred = pki.credential(cert_of or sae)
    return ChannelAuth(sae, peer, ca=pki.ca_cert, cert=cred.cert, key=cred.key)


@contextmanager
def pair(
    link: KMSLink,
    pki: PKI,
    tmp_path: Path,
    *,
    auth: tuple[ChannelAuth, ChannelAuth] | None = None,
    interval_s: float = 0.3,
    hybrid: tuple[bool, bool] = (False, False),
    on_missed: str = "close",
    max_missed: int = 2,
    stale_connection: bool = False,
) -> Iterator[tuple[End, End]]:
    """Initiator app-a and responder app-b rotating in two threads; both stop on exit."""
    port = free_port()
    auth = auth or (_tls(pki, "app-a", "app-b"), _tls(pki, "app-b", "app-a"))
    ends = []
    for i, (sae, peer, role) in enumerate(
        (("app-a", "app-b", "initiator"), ("app-b", "app-a", "responder"))
    ):
        settings = RotationSettings(
            role=role,  # type: ignore[arg-type]
            interval_s=interval_s,
            max_missed=max_missed,
            on_missed=on_missed,  # type: ignore[arg-type]
            hybrid=hybrid[i],
            peer_host="127.0.0.1",
            peer_port=port,
            listen_host="127.0.0.1",
            listen_port=port,
        )
        keys = RecordingKeys(_access(link, pki, sae, peer))
        sink = RecordingSink()
        events = EventLog(tmp_path / f"{role}.jsonl")
        ends.append(End(Rotator(settings, keys, auth[i], sink, events), sink, keys))
    stop = threading.Event()
    threads = [threading.Thread(target=e.rotator.run, args=(stop,)) for e in reversed(ends)]
    stale = []
    for t in threads:
        t.start()
        time.sleep(0.1)  # the responder listens first
        if stale_connection and not stale:  # an authenticated connection left idle
            stale.append(connect("127.0.0.1", port, auth[0]))
            assert stale[0].recv(5)["type"] == "hello"
    try:
        yield ends[0], ends[1]
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        for e in ends:
            e.keys.close()
        for c in stale:
            c.close()
        assert not any(t.is_alive() for t in threads)
        assert all(e.sink.stopped for e in ends)


def wait_for(condition: Callable[[], bool], timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def test_both_ends_take_the_same_fresh_kms_key_at_each_rotation(
    kms_link: KMSLink, app_pki: PKI, tmp_path: Path
) -> None:
    with pair(kms_link, app_pki, tmp_path) as (ini, resp):
        wait_for(lambda: len(ini.sink.keys) >= 3)
    n = len(ini.sink.keys)
    assert resp.sink.keys[:n] == ini.sink.keys
    assert [(k.key_id, k.key) for k in ini.keys.delivered][:n] == ini.sink.keys
    assert [(k.key_id, k.key) for k in resp.keys.delivered][:n] == resp.sink.keys[:n]
    assert len({key for _, key in ini.sink.keys}) == n  # a new key each time
    assert all(len(key) == 32 for _, key in ini.sink.keys)
    assert (tmp_path / "initiator.jsonl").read_text().count('"applied"') == n


def test_hybrid_key_mixes_ml_kem_into_the_qkd_key(
    kms_link: KMSLink, app_pki: PKI, tmp_path: Path
) -> None:
    with pair(kms_link, app_pki, tmp_path, hybrid=(True, True)) as (ini, resp):
        wait_for(lambda: len(ini.sink.keys) >= 2)
    n = len(ini.sink.keys)
    assert resp.sink.keys[:n] == ini.sink.keys
    qkd = {k.key_id: k.key for k in ini.keys.delivered}
    for key_id, key in ini.sink.keys:
        assert key != qkd[key_id] and len(key) == 32


def test_hybrid_on_one_side_only_gives_no_key(
    kms_link: KMSLink, app_pki: PKI, tmp_path: Path
) -> None:
    with pair(kms_link, app_pki, tmp_path, hybrid=(False, True)) as (ini, resp):
        wait_for(lambda: ini.rotator.missed >= 2)
    assert ini.sink.keys == [] and resp.sink.keys == []
    assert "hybrid option differs" in (tmp_path / "initiator.jsonl").read_text()


def test_mac_channel_rotates_with_the_shared_secret(
    kms_link: KMSLink, app_pki: PKI, tmp_path: Path
) -> None:
    secret = os.urandom(32)
    auth = (
        ChannelAuth("app-a", "app-b", mac_secret=secret),
        ChannelAuth("app-b", "app-a", mac_secret=secret),
    )
    with pair(kms_link, app_pki, tmp_path, auth=auth) as (ini, resp):
        wait_for(lambda: len(ini.sink.keys) >= 2)
    assert resp.sink.keys[: len(ini.sink.keys)] == ini.sink.keys


def test_mac_channel_with_another_secret_is_refused(
    kms_link: KMSLink, app_pki: PKI, tmp_path: Path
) -> None:
    auth = (
        ChannelAuth("app-a", "app-b", mac_secret=os.urandom(32)),
        ChannelAuth("app-b", "app-a", mac_secret=os.urandom(32)),
    )
    with pair(kms_link, app_pki, tmp_path, auth=auth) as (ini, resp):
        wait_for(lambda: ini.rotator.missed >= 2)
    assert ini.sink.keys == [] and resp.sink.keys == []
    assert ini.keys.delivered == []  # refused before any key was taken from the pool


def test_another_sae_certificate_is_refused_on_the_control_channel(
    kms_link: KMSLink, app_pki: PKI, tmp_path: Path
) -> None:
    # The initiator presents app-x's certificate (valid, same CA) while claiming to be app-a.
    auth = (_tls(app_pki, "app-a", "app-b", cert_of="app-x"), _tls(app_pki, "app-b", "app-a"))
    with pair(kms_link, app_pki, tmp_path, auth=auth) as (ini, resp):
        wait_for(lambda: ini.rotator.missed >= 2)
    assert resp.sink.keys == []


def test_a_responder_with_another_sae_certificate_is_refused(
    kms_link: KMSLink, app_pki: PKI, tmp_path: Path
) -> None:
    auth = (_tls(app_pki, "app-a", "app-b"), _tls(app_pki, "app-b", "app-a", cert_of="app-x"))
    with pair(kms_link, app_pki, tmp_path, auth=auth) as (ini, resp):
        wait_for(lambda: ini.rotator.missed >= 2)
    assert ini.sink.keys == [] and resp.sink.keys == []
    assert "expected 'app-b'" in (tmp_path / "initiator.jsonl").read_text()


@pytest.mark.parametrize("policy", ["close", "keep"])
def test_kms_down_closes_or_keeps_after_max_missed(
    kms_link: KMSLink, app_pki: PKI, tmp_path: Path, policy: str
) -> None:
    with pair(kms_link, app_pki, tmp_path, on_missed=policy, max_missed=2) as (ini, resp):
        wait_for(lambda: len(ini.sink.keys) >= 1)
        kms_link.a.stop()  # the initiator's KME goes down
        wait_for(lambda: ini.rotator.missed >= 3 and resp.rotator.missed >= 3)
    expected = 1 if policy == "close" else 0
    assert ini.sink.closes == expected and resp.sink.closes == expected
    log = (tmp_path / "initiator.jsonl").read_text()
    assert ('"closed"' in log) == (policy == "close") and ('"kept"' in log) == (policy == "keep")


def test_a_new_connection_replaces_one_left_idle(
    kms_link: KMSLink, app_pki: PKI, tmp_path: Path
) -> None:
    # The old connection of an initiator whose host vanished (no FIN) must not block the new one.
    with pair(kms_link, app_pki, tmp_path, stale_connection=True) as (ini, resp):
        wait_for(lambda: len(ini.sink.keys) >= 2, timeout_s=5)
    assert resp.sink.keys[: len(ini.sink.keys)] == ini.sink.keys


@pytest.mark.parametrize("key_id", ["a\nforged log line", "x" * 129, ""])
def test_a_malformed_key_id_never_reaches_the_kms(
    kms_link: KMSLink, app_pki: PKI, tmp_path: Path, key_id: str
) -> None:
    port = free_port()
    settings = RotationSettings(
        role="responder", interval_s=5, listen_host="127.0.0.1", listen_port=port
    )
    keys = RecordingKeys(_access(kms_link, app_pki, "app-b", "app-a"))
    sink = RecordingSink()
    rotator = Rotator(settings, keys, _tls(app_pki, "app-b", "app-a"), sink)
    stop = threading.Event()
    thread = threading.Thread(target=rotator.run, args=(stop,))
    thread.start()
    try:
        time.sleep(0.2)
        channel = connect("127.0.0.1", port, _tls(app_pki, "app-a", "app-b"))
        assert channel.recv(5)["type"] == "hello"
        channel.send({"type": "rotate", "key_id": key_id})
        with pytest.raises(ConnectionError):  # the responder hangs up
            channel.recv(5)
        channel.close()
    finally:
        stop.set()
        thread.join(10)
        keys.close()
    assert keys.delivered == [] and sink.keys == []
