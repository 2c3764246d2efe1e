"""Mutual TLS: server and client SSL contexts, and the caller's identity from its certificate.

The SAE API asks for a client certificate (``CERT_OPTIONAL``): a certificate that does not chain
to the CA, or has expired, fails the TLS handshake (the spec's "reject the connection"); a client
that sends none gets through TLS and is answered 401 with a JSON ``message``. The KMS-to-KMS
listener requires a certificate (``CERT_REQUIRED``) and accepts only a peer KME, identified by
the SAN URI ``urn:qdnet:kme:<id>`` of a certificate with the serverAuth usage (what
``qdnet pki init`` issues to KMEs only), never by the CN.

Every connection is held to the limits of :class:`ConnectionGuard`: a cap on open connections
with headroom that only clients with a certificate may use, a deadline for the first request
(``idle_s``, again between requests), for a request's headers (``header_s``), and (set on the
listener) for the TLS handshake.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from uvicorn.protocols.http.h11_impl import H11Protocol

try:  # the fast HTTP/1.1 parser (C); h11 (pure Python) is the fallback
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # pragma: no cover - httptools not installed
    HttpToolsProtocol = None  # type: ignore[assignment,misc]

from qdnet.kms.settings import TLSSettings

PEER_IDENTITY_KEY = "tls_identity"
"""Key of the per-connection identity dict in the ASGI ``scope["state"]``."""
GUARD_KEY = "qdnet_connection_guard"
"""Key of the listener's :class:`ConnectionGuard` in uvicorn's ``app_state``."""
KME_URI_PREFIX = "urn:qdnet:kme:"
SAE_URI_PREFIX = "urn:qdnet:sae:"


def _minimum(version: str) -> ssl.TLSVersion:
    return ssl.TLSVersion.TLSv1_3 if version == "1.3" else ssl.TLSVersion.TLSv1_2


def server_context(tls: TLSSettings, *, require_client_cert: bool) -> ssl.SSLContext:
    """Server context: TLS >= ``tls.minimum_version``, client certificates checked against CA."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = _minimum(tls.minimum_version)
    ctx.load_cert_chain(str(tls.cert), str(tls.key))
    ctx.load_verify_locations(cafile=str(tls.ca))
    ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    ctx.options |= ssl.OP_NO_COMPRESSION
    return ctx


def client_context(
    ca: str | Path, cert: str | Path | None = None, key: str | Path | None = None
) -> ssl.SSLContext:
    """Client context that verifies the server against ``ca`` and presents ``cert``/``key``.

    Pass the context itself to httpx (``verify=ctx``): with httpx 0.28 a path in ``verify`` plus
    ``cert=`` silently drops the client certificate.
    """
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert is not None:
        ctx.load_cert_chain(str(cert), str(key) if key is not None else None)
    return ctx


def identities(peercert: dict[str, Any] | None, der: bytes | None = None) -> dict[str, Any]:
    """The CN and SAN URIs of a verified peer certificate (``ssl.getpeercert()`` form), and
    the certificate itself (DER) for :func:`kme_identity`."""
    if not peercert:
        return {"cn": None, "uris": [], "der": None}
    cn = None
    for rdn in peercert.get("subject", ()):
        for attr, value in rdn:
            if attr == "commonName":
                cn = value
    uris = [v for t, v in peercert.get("subjectAltName", ()) if t == "URI"]
    return {"cn": cn, "uris": uris, "der": der}


def kme_of_certificate(der: bytes | None) -> str | None:
    """The KME ID of a KME certificate: its one SAN URI ``urn:qdnet:kme:<id>``, with the
    serverAuth extended key usage and no SAE URI; None for anything else (an SAE certificate,
    even one whose CN is a KME ID)."""
    if not der:
        return None
    try:
        cert = x509.load_der_x509_certificate(der)
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except (ValueError, x509.ExtensionNotFound):
        return None
    uris = sans.get_values_for_type(x509.UniformResourceIdentifier)
    kmes = [u[len(KME_URI_PREFIX) :] for u in uris if u.startswith(KME_URI_PREFIX)]
    if len(kmes) != 1 or not kmes[0] or any(u.startswith(SAE_URI_PREFIX) for u in uris):
        return None
    if ExtendedKeyUsageOID.SERVER_AUTH not in usage:
        return None
    return kmes[0]


def kme_identity(ident: dict[str, Any] | None) -> str | None:
    """:func:`kme_of_certificate` of a connection's identity dict (cached in it)."""
    if not ident:
        return None
    if "kme" not in ident:
        ident["kme"] = kme_of_certificate(ident.get("der"))
    kme = ident["kme"]
    return kme if isinstance(kme, str) else None


def identity_of(ident: dict[str, Any] | None, source: str, uri_prefix: str) -> str | None:
    """The ID named by ``source`` (``"cn"`` or ``"san_uri"``) in an :func:`identities` dict."""
    if not ident:
        return None
    if source == "cn":
        cn = ident.get("cn")
        return cn if isinstance(cn, str) and cn else None
    for uri in ident.get("uris", []):
        if uri.startswith(uri_prefix) and len(uri) > len(uri_prefix):
            return str(uri[len(uri_prefix) :])
    return None


@dataclass
class ConnectionGuard:
    """Per-listener connection cap and deadlines (seconds).

    At most ``max_connections`` connections are open once their handshake is done; a client
    without a certificate is turned away (connection closed) once ``max_connections -
    reserved_connections`` are open, so an attacker without a certificate cannot lock out
    the SAEs. A connection that sends no request within ``idle_s`` (after the handshake or the
    previous answer), or whose request headers take longer than ``header_s``, is closed.
    """

    max_connections: int
    reserved_connections: int
    idle_s: float
    header_s: float
    open: int = 0
    open_without_cert: int = 0
    refused: int = 0
    timed_out: int = 0

    def admit(self, with_cert: bool) -> bool:
        """Count a new connection in; False: refuse it."""
        if self.open >= self.max_connections or (
            not with_cert
            and self.open_without_cert >= self.max_connections - self.reserved_connections
        ):
            self.refused += 1
            return False
        self.open += 1
        self.open_without_cert += not with_cert
        return True

    def release(self, with_cert: bool) -> None:
        """Count a connection out."""
        self.open -= 1
        self.open_without_cert -= not with_cert


class _MTLSMixin:
    """Per-connection identity, limits and quick shutdown, for uvicorn's h11 and httptools
    protocols.

    uvicorn copies ``app_state`` into each request's ``scope["state"]``; the identities are read
    once per connection, after the handshake has verified the certificate.
    """

    app_state: dict[str, Any]
    cycle: Any
    transport: asyncio.Transport
    loop: asyncio.AbstractEventLoop
    _guard: ConnectionGuard | None = None
    _with_cert = False
    _timer: asyncio.TimerHandle | None = None
    _phase = "idle"  # idle: no request; header: a request's headers are arriving; busy

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # header and body go out as separate TLS records: without this each response
            # waits for the client's delayed ACK (about 40 ms)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peercert = transport.get_extra_info("peercert")
        ssl_object = transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        self.app_state = dict(self.app_state)
        self.app_state[PEER_IDENTITY_KEY] = identities(peercert, der)
        guard = self.app_state.get(GUARD_KEY)
        if isinstance(guard, ConnectionGuard):
            self._with_cert = bool(peercert)
            if not guard.admit(self._with_cert):
                transport.abort()
                return
            self._guard = guard
            self._arm("idle", guard.idle_s)

    def _arm(self, phase: str, delay_s: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._phase = phase
        self._timer = self.loop.call_later(delay_s, self._expire)

    def _expire(self) -> None:
        self._timer = None
        if self._phase != "busy" and self._guard is not None:
            self._guard.timed_out += 1
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        if self._guard is None:
            super().data_received(data)  # type: ignore[misc]
            return
        if self._phase == "idle":  # first bytes of a request: headers due within header_s
            self._arm("header", self._guard.header_s)
        before = self.cycle
        super().data_received(data)  # type: ignore[misc]
        if self._phase == "header" and self.cycle is not before:  # the headers are in
            self._phase = "busy"
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        pipelined = getattr(self, "pipeline", None)  # httptools only
        if self._guard is not None and not self.transport.is_closing() and not pipelined:
            self._arm("idle", self._guard.idle_s)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._guard is not None:
            self._guard.release(self._with_cert)
            self._guard = None
        super().connection_lost(exc)  # type: ignore[misc]

    def shutdown(self) -> None:
        """Server stopping: drop idle keep-alive connections at once.

        A graceful TLS close waits for the client's close_notify, which an idle pooled client
        only sends when it next reads; uvicorn would wait for that (up to 30 s).
        """
        idle = self.cycle is None or self.cycle.response_complete
        super().shutdown()  # type: ignore[misc]
        if idle:
            self.transport.abort()


class MTLSProtocol(_MTLSMixin, H11Protocol):  # type: ignore[misc]
    """uvicorn's h11 protocol with the client certificate's identities in ``scope["state"]``."""


if HttpToolsProtocol is not None:

    class MTLSHttpToolsProtocol(_MTLSMixin, HttpToolsProtocol):  # type: ignore[misc]
        """uvicorn's httptools protocol (C parser) with the client certificate's identities."""

    FAST_PROTOCOL: type[asyncio.Protocol] = MTLSHttpToolsProtocol
else:  # pragma: no cover
    FAST_PROTOCOL = MTLSProtocol
