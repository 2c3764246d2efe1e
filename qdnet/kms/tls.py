"""Mutual TLS: server and client SSL contexts, and the caller's identity from its certificate.

The SAE API asks for a client certificate (``CERT_OPTIONAL``): a certificate that does not chain
to the CA, or has expired, fails the TLS handshake (the spec's "reject the connection"); a client
that sends none gets through TLS and is answered 401 with a JSON ``message``. The KMS-to-KMS
listener requires a certificate (``CERT_REQUIRED``) and accepts only the peer KME's identity.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from pathlib import Path
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

try:  # the fast HTTP/1.1 parser (C); h11 (pure Python) is the fallback
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # pragma: no cover - httptools not installed
    HttpToolsProtocol = None  # type: ignore[assignment,misc]

from qdnet.kms.settings import TLSSettings

PEER_IDENTITY_KEY = "tls_identity"
"""Key of the per-connection identity dict in the ASGI ``scope["state"]``."""


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


def identities(peercert: dict[str, Any] | None) -> dict[str, Any]:
    """The CN and SAN URIs of a verified peer certificate (``ssl.getpeercert()`` form)."""
    if not peercert:
        return {"cn": None, "uris": []}
    cn = None
    for rdn in peercert.get("subject", ()):
        for attr, value in rdn:
            if attr == "commonName":
                cn = value
    uris = [v for t, v in peercert.get("subjectAltName", ()) if t == "URI"]
    return {"cn": cn, "uris": uris}


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


class _MTLSMixin:
    """Per-connection identity and quick shutdown, for uvicorn's h11 and httptools protocols.

    uvicorn copies ``app_state`` into each request's ``scope["state"]``; the identities are read
    once per connection, after the handshake has verified the certificate.
    """

    app_state: dict[str, Any]
    cycle: Any
    transport: asyncio.Transport

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # header and body go out as separate TLS records: without this each response
            # waits for the client's delayed ACK (about 40 ms)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peercert = transport.get_extra_info("peercert")
        self.app_state = dict(self.app_state)
        self.app_state[PEER_IDENTITY_KEY] = identities(peercert)

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
