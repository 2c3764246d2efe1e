"""The control channel between the two ends of an application: key IDs (never keys) and, with
the hybrid option, ML-KEM public keys and ciphertexts, over an authenticated TCP connection.

Frames are a 4-byte big-endian length and a JSON object. Two ways to authenticate (as Arnika
does for WireGuard):

* **mutual TLS 1.3** with the SAE certificates of ``qdnet pki init``: the responder listens and
  asks for a client certificate chained to the CA; each side then checks that the other's
  certificate names the expected peer SAE (SAN URI ``urn:qdnet:sae:<id>``). SAE certificates
  carry the clientAuth usage only, so the initiator verifies the responder's certificate itself
  (``cryptography``'s X.509 client verifier against the CA) after the handshake, in which TLS 1.3
  has already checked the responder's signature with that certificate's key (RFC 8446 §4.4.3).
* **a MAC with a configured secret** (at least 32 bytes, in a file): both sides exchange fresh
  16-byte nonces, derive a session key HMAC-SHA-256(secret, label || nonce_i || nonce_r), and
  every later frame carries HMAC-SHA-256(session key, direction || counter || payload), so a
  frame that was changed, replayed, reordered or sent from another session is refused.

Any authentication failure closes the connection (:class:`ChannelError`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import hmac
import json
import os
import select
import socket
import ssl
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

MAX_FRAME_BYTES = 64 * 1024
MIN_SECRET_BYTES = 32
NONCE_BYTES = 16
MAC_BYTES = 32
FRAME_TIMEOUT_S = 10.0
HANDSHAKE_TIMEOUT_S = 3.0
SAE_URI_PREFIX = "urn:qdnet:sae:"
_LABEL = b"qdnet control channel v1"
_HELLO = "qdnet-control/1"


class ChannelError(ConnectionError):
    """The peer could not be authenticated, or sent a malformed or forged frame."""


@dataclass(frozen=True)
class ChannelAuth:
    """How this side proves itself and recognises the peer SAE ``peer_sae``.

    Either ``ca``/``cert``/``key`` (mutual TLS) or ``mac_secret`` (HMAC), not both.
    """

    sae: str
    peer_sae: str
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    mac_secret: bytes | None = None

    def __post_init__(self) -> None:
        tls = self.ca is not None and self.cert is not None and self.key is not None
        if tls == (self.mac_secret is not None):
            raise ValueError("control channel: give either the PKI (mutual TLS) or a MAC secret")
        if self.mac_secret is not None and len(self.mac_secret) < MIN_SECRET_BYTES:
            raise ValueError(
                f"--control-secret: the MAC secret must be at least {MIN_SECRET_BYTES} bytes"
            )

    @staticmethod
    def read_secret(path: str | Path) -> bytes:
        """A MAC secret from a file (raw bytes, at least 32)."""
        data = Path(path).read_bytes()
        if len(data) < MIN_SECRET_BYTES:
            raise ValueError(
                f"--control-secret {path}: at least {MIN_SECRET_BYTES} bytes, got {len(data)}"
            )
        return data


def sae_of_certificate(der: bytes | None) -> str | None:
    """The SAE ID in a certificate's SAN URI ``urn:qdnet:sae:<id>`` (None if absent)."""
    if not der:
        return None
    cert = x509.load_der_x509_certificate(der)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    for uri in san.get_values_for_type(x509.UniformResourceIdentifier):
        if uri.startswith(SAE_URI_PREFIX):
            return uri[len(SAE_URI_PREFIX) :]
    return None


def _verify_sae_certificate(der: bytes | None, ca: Path) -> None:
    """Raise ChannelError unless ``der`` chains to ``ca`` as a valid client certificate."""
    if not der:
        raise ChannelError("the peer sent no certificate")
    store = Store(x509.load_pem_x509_certificates(ca.read_bytes()))
    verifier = PolicyBuilder().store(store).time(dt.datetime.now(dt.UTC)).build_client_verifier()
    try:
        verifier.verify(x509.load_der_x509_certificate(der), [])
    except VerificationError as error:
        raise ChannelError(f"the peer's certificate does not verify: {error}") from None


class Channel:
    """One authenticated connection (``send``/``recv`` JSON objects)."""

    def __init__(self, sock: socket.socket, peer: str, mac_key: bytes | None, initiator: bool):
        self._sock = sock
        self.peer = peer
        self._mac_key = mac_key
        self._out_dir = b"I" if initiator else b"R"
        self._in_dir = b"R" if initiator else b"I"
        self._sent = 0
        self._received = 0

    def close(self) -> None:
        """Close the connection."""
        with contextlib.suppress(OSError):
            self._sock.close()

    def _mac(self, direction: bytes, counter: int, payload: bytes) -> bytes:
        assert self._mac_key is not None
        msg = direction + struct.pack(">Q", counter) + payload
        return hmac.new(self._mac_key, msg, hashlib.sha256).digest()

    def send(self, message: dict[str, Any]) -> None:
        """Send one message (a JSON object)."""
        payload = json.dumps(message, separators=(",", ":")).encode()
        if self._mac_key is not None:
            payload += self._mac(self._out_dir, self._sent, payload)
        self._sent += 1
        _send_frame(self._sock, payload)

    def recv(self, timeout_s: float) -> dict[str, Any]:
        """The next message; TimeoutError if none starts within ``timeout_s``.

        Once a frame has started, the rest of it has :data:`FRAME_TIMEOUT_S` to arrive.
        """
        pending = isinstance(self._sock, ssl.SSLSocket) and self._sock.pending() > 0
        if not pending and not select.select([self._sock], [], [], timeout_s)[0]:
            raise TimeoutError(f"no control message in {timeout_s:g} s")
        self._sock.settimeout(FRAME_TIMEOUT_S)
        payload = _recv_frame(self._sock)
        if self._mac_key is not None:
            if len(payload) < MAC_BYTES:
                raise ChannelError("control frame shorter than its MAC")
            payload, tag = payload[:-MAC_BYTES], payload[-MAC_BYTES:]
            if not hmac.compare_digest(tag, self._mac(self._in_dir, self._received, payload)):
                raise ChannelError("control frame with a wrong MAC (forged, changed or replayed)")
        self._received += 1
        try:
            message = json.loads(payload)
        except ValueError:
            raise ChannelError("control frame is not JSON") from None
        if not isinstance(message, dict):
            raise ChannelError("control frame is not a JSON object")
        return message


def _send_frame(sock: socket.socket, payload: bytes) -> None:
    sock.sendall(struct.pack(">I", len(payload)) + payload)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < n:
        chunk = sock.recv(n - len(chunks))
        if not chunk:
            raise ConnectionError("control channel closed by the peer")
        chunks += chunk
    return bytes(chunks)


def _recv_frame(sock: socket.socket) -> bytes:
    (size,) = struct.unpack(">I", _recv_exact(sock, 4))
    if size > MAX_FRAME_BYTES:
        raise ChannelError(f"control frame of {size} bytes (at most {MAX_FRAME_BYTES})")
    return _recv_exact(sock, size)


def _mac_handshake(sock: socket.socket, auth: ChannelAuth, initiator: bool) -> Channel:
    """Exchange hellos with fresh nonces; derive the session MAC key."""
    assert auth.mac_secret is not None
    nonce = os.urandom(NONCE_BYTES)
    hello = {"hello": _HELLO, "sae": auth.sae, "nonce": nonce.hex()}
    _send_frame(sock, json.dumps(hello).encode())
    try:
        theirs = json.loads(_recv_frame(sock))
        peer_nonce = bytes.fromhex(theirs["nonce"])
        peer_sae = theirs["sae"]
        ok = theirs["hello"] == _HELLO and len(peer_nonce) == NONCE_BYTES
    except (ValueError, KeyError, TypeError):
        raise ChannelError("malformed control hello") from None
    if not ok or peer_sae != auth.peer_sae:
        raise ChannelError(f"control hello from {peer_sae!r}, expected {auth.peer_sae!r}")
    n_i, n_r = (nonce, peer_nonce) if initiator else (peer_nonce, nonce)
    key = hmac.new(auth.mac_secret, _LABEL + n_i + n_r, hashlib.sha256).digest()
    channel = Channel(sock, auth.peer_sae, key, initiator)
    # A first MACed exchange proves that the peer holds the secret before anything else is used.
    channel.send({"auth": auth.sae})
    if channel.recv(FRAME_TIMEOUT_S).get("auth") != auth.peer_sae:
        raise ChannelError("control channel: the peer's proof names another SAE")
    return channel


def _tls_context(auth: ChannelAuth, server: bool) -> ssl.SSLContext:
    assert auth.cert is not None and auth.ca is not None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(str(auth.cert), str(auth.key))
    if server:
        ctx.load_verify_locations(cafile=str(auth.ca))
        ctx.verify_mode = ssl.CERT_REQUIRED
    else:
        # Checked after the handshake (SAE certificates are client certificates).
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _tls_peer(tls: ssl.SSLSocket, auth: ChannelAuth, server: bool) -> None:
    assert auth.ca is not None
    der = tls.getpeercert(binary_form=True)
    if not server:
        _verify_sae_certificate(der, auth.ca)
    sae = sae_of_certificate(der)
    if sae != auth.peer_sae:
        raise ChannelError(f"control peer is SAE {sae!r}, expected {auth.peer_sae!r}")


def connect(host: str, port: int, auth: ChannelAuth, timeout_s: float = 5.0) -> Channel:
    """The initiator's side: connect to the responder and authenticate both ways."""
    sock = socket.create_connection((host, port), timeout=timeout_s)
    conn: socket.socket = sock
    try:
        if auth.mac_secret is not None:
            return _mac_handshake(sock, auth, initiator=True)
        conn = _tls_context(auth, server=False).wrap_socket(sock)
        _tls_peer(conn, auth, server=False)
        return Channel(conn, auth.peer_sae, None, initiator=True)
    except BaseException:
        conn.close()
        raise


class Listener:
    """The responder's side: accepts the initiator's connections on ``host:port``."""

    def __init__(self, host: str, port: int, auth: ChannelAuth) -> None:
        self.auth = auth
        self._sock = socket.create_server((host, port), reuse_port=False)
        self.port = int(self._sock.getsockname()[1])
        self._ctx = None if auth.mac_secret is not None else _tls_context(auth, server=True)

    def close(self) -> None:
        """Stop listening."""
        self._sock.close()

    def accept(self, timeout_s: float) -> Channel | None:
        """The next authenticated connection, or None after ``timeout_s`` without one."""
        self._sock.settimeout(timeout_s)
        try:
            sock, _addr = self._sock.accept()
        except (TimeoutError, BlockingIOError):  # BlockingIOError: timeout 0 and nobody waiting
            return None
        # One peer at a time: a short handshake deadline limits how long a stranger that
        # connects and stalls can hold the responder.
        sock.settimeout(HANDSHAKE_TIMEOUT_S)
        conn: socket.socket = sock
        try:
            if self._ctx is None:
                return _mac_handshake(sock, self.auth, initiator=False)
            conn = self._ctx.wrap_socket(sock, server_side=True)
            _tls_peer(conn, self.auth, server=True)
            return Channel(conn, self.auth.peer_sae, None, initiator=False)
        except BaseException:
            conn.close()
            raise
