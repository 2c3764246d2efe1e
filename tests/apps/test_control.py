"""The control channel refuses forged, changed, replayed and reordered frames (MAC mode), and
peers without the right certificate (mutual TLS)."""

from __future__ import annotations

import os
import socket
import struct
import threading
from pathlib import Path

import pytest

from qdnet.apps.control import Channel, ChannelAuth, ChannelError, Listener, connect
from qdnet.kms.pki import PKI

SECRET = os.urandom(32)


def _pair(auth_i: ChannelAuth, auth_r: ChannelAuth) -> tuple[Channel, Channel]:
    listener = Listener("127.0.0.1", 0, auth_r)
    got: dict[str, Channel | BaseException | None] = {}

    def accept() -> None:
        try:
            got["r"] = listener.accept(10)
        except BaseException as error:  # reported by the test
            got["r"] = error

    t = threading.Thread(target=accept)
    t.start()
    try:
        ini = connect("127.0.0.1", listener.port, auth_i)
    finally:
        t.join(10)
        listener.close()
    resp = got["r"]
    if isinstance(resp, BaseException):
        raise resp
    assert resp is not None
    return ini, resp


def _mac_pair() -> tuple[Channel, Channel]:
    return _pair(
        ChannelAuth("app-a", "app-b", mac_secret=SECRET),
        ChannelAuth("app-b", "app-a", mac_secret=SECRET),
    )


def test_mac_frames_pass_in_order() -> None:
    ini, resp = _mac_pair()
    ini.send({"type": "rotate", "key_id": "k1"})
    ini.send({"type": "rotate", "key_id": "k2"})
    assert resp.recv(5)["key_id"] == "k1"
    assert resp.recv(5)["key_id"] == "k2"
    resp.send({"type": "applied"})
    assert ini.recv(5) == {"type": "applied"}


def test_a_changed_frame_is_refused() -> None:
    ini, resp = _mac_pair()
    payload = b'{"type":"rotate","key_id":"evil"}'
    ini._sock.sendall(struct.pack(">I", len(payload) + 32) + payload + os.urandom(32))
    with pytest.raises(ChannelError, match="wrong MAC"):
        resp.recv(5)


class Relay:
    """A man in the middle: forwards both directions, records every byte, injects at will."""

    def __init__(self, upstream_port: int) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._server.getsockname()[1])
        self.upstream_port = upstream_port
        self.to_responder = bytearray()
        self.to_initiator = bytearray()
        self.up: socket.socket | None = None
        self.down: socket.socket | None = None
        threading.Thread(target=self._run, daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, log: bytearray) -> None:
        while data := src.recv(65536):
            log += data
            dst.sendall(data)

    def _run(self) -> None:
        self.down, _ = self._server.accept()
        self.up = socket.create_connection(("127.0.0.1", self.upstream_port))
        threading.Thread(
            target=self._pump, args=(self.down, self.up, self.to_responder), daemon=True
        ).start()
        self._pump(self.up, self.down, self.to_initiator)

    @staticmethod
    def frames(stream: bytes) -> list[bytes]:
        out, i = [], 0
        while i + 4 <= len(stream):
            (n,) = struct.unpack(">I", stream[i : i + 4])
            out.append(stream[i : i + 4 + n])
            i += 4 + n
        return out


def _relayed_mac_pair() -> tuple[Channel, Channel, Relay]:
    listener = Listener("127.0.0.1", 0, ChannelAuth("app-b", "app-a", mac_secret=SECRET))
    relay = Relay(listener.port)
    got: dict[str, Channel | None] = {}
    t = threading.Thread(target=lambda: got.update(r=listener.accept(10)))
    t.start()
    ini = connect("127.0.0.1", relay.port, ChannelAuth("app-a", "app-b", mac_secret=SECRET))
    t.join(10)
    listener.close()
    assert got["r"] is not None
    return ini, got["r"], relay


def test_a_replayed_frame_is_refused() -> None:
    ini, resp, relay = _relayed_mac_pair()
    ini.send({"type": "rotate", "key_id": "k1"})
    assert resp.recv(5)["key_id"] == "k1"
    assert relay.up is not None
    relay.up.sendall(Relay.frames(bytes(relay.to_responder))[-1])  # the same frame again
    with pytest.raises(ChannelError, match="wrong MAC"):
        resp.recv(5)


def test_a_frame_reflected_back_is_refused() -> None:
    ini, resp, relay = _relayed_mac_pair()
    resp.send({"type": "applied", "key_id": "k1"})
    assert ini.recv(5)["type"] == "applied"
    assert relay.up is not None
    relay.up.sendall(Relay.frames(bytes(relay.to_initiator))[-1])  # back at its sender
    with pytest.raises(ChannelError, match="wrong MAC"):
        resp.recv(5)


def test_a_frame_from_another_session_is_refused() -> None:
    ini1, resp1, relay1 = _relayed_mac_pair()
    ini1.send({"type": "rotate", "key_id": "old"})
    assert resp1.recv(5)["key_id"] == "old"
    _ini2, resp2, relay2 = _relayed_mac_pair()
    assert relay2.up is not None
    relay2.up.sendall(Relay.frames(bytes(relay1.to_responder))[-1])
    with pytest.raises(ChannelError, match="wrong MAC"):
        resp2.recv(5)


def test_another_secret_fails_the_handshake() -> None:
    with pytest.raises((ChannelError, ConnectionError)):
        _pair(
            ChannelAuth("app-a", "app-b", mac_secret=os.urandom(32)),
            ChannelAuth("app-b", "app-a", mac_secret=os.urandom(32)),
        )


def test_short_secrets_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least 32 bytes"):
        ChannelAuth("app-a", "app-b", mac_secret=b"short")
    (tmp_path / "s").write_bytes(b"x" * 31)
    with pytest.raises(ValueError, match="--control-secret"):
        ChannelAuth.read_secret(tmp_path / "s")


def _tls(pki: PKI, sae: str, peer: str, cert_of: str | None = None) -> ChannelAuth:
    cred = pki.credential(cert_of or sae)
    return ChannelAuth(sae, peer, ca=pki.ca_cert, cert=cred.cert, key=cred.key)


def test_mutual_tls_between_the_right_saes(app_pki: PKI) -> None:
    ini, resp = _pair(_tls(app_pki, "app-a", "app-b"), _tls(app_pki, "app-b", "app-a"))
    ini.send({"type": "rotate", "key_id": "k"})
    assert resp.recv(5)["key_id"] == "k"


def test_a_certificate_from_another_ca_is_refused(app_pki: PKI, tmp_path: Path) -> None:
    from qdnet.kms.pki import create_pki

    rogue = create_pki(tmp_path / "rogue", ["kme-x"], ["app-b"])
    # The rogue responder has a certificate for "app-b", from a CA the initiator does not trust.
    auth_r = ChannelAuth(
        "app-b",
        "app-a",
        ca=app_pki.ca_cert,
        cert=rogue.credential("app-b").cert,
        key=rogue.credential("app-b").key,
    )
    with pytest.raises(ChannelError, match="does not verify"):
        _pair(_tls(app_pki, "app-a", "app-b"), auth_r)
