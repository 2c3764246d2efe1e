"""An ETSI GS QKD 014 SAE client (httpx, mutual TLS, keep-alive)."""

from __future__ import annotations

import base64
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from qdnet.kms.tls import client_context

NODELAY = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
"""Without it a POST's header and body segments wait on delayed ACKs (about 40 ms each)."""


class KMEError(RuntimeError):
    """A non-200 answer: HTTP status and the spec ``message``."""

    def __init__(self, status: int, message: str, body: Any = None) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message
        self.body = body


@dataclass(frozen=True)
class DeliveredKey:
    """A key from ``enc_keys``/``dec_keys`` (``key`` is never shown in ``repr``)."""

    key_id: str
    key: bytes = field(repr=False)


class SAEClient:
    """Calls one KME's ETSI GS QKD 014 API as the SAE named in ``cert``."""

    def __init__(
        self,
        base_url: str,
        ca: str | Path,
        cert: str | Path,
        key: str | Path,
        timeout_s: float = 10.0,
    ) -> None:
        ctx = client_context(ca, cert, key)
        self._http = httpx.Client(
            base_url=base_url.rstrip("/") + "/api/v1/keys",
            verify=ctx,
            timeout=timeout_s,
            transport=httpx.HTTPTransport(verify=ctx, socket_options=NODELAY),
        )

    def close(self) -> None:
        """Close the keep-alive connection."""
        self._http.close()

    def __enter__(self) -> SAEClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _check(self, resp: httpx.Response) -> Any:
        try:
            body = resp.json()
        except ValueError:
            body = None
        if resp.status_code != 200:
            message = body.get("message", "") if isinstance(body, dict) else resp.text
            raise KMEError(resp.status_code, str(message), body)
        return body

    @staticmethod
    def _keys(body: Any) -> list[DeliveredKey]:
        return [DeliveredKey(k["key_ID"], base64.b64decode(k["key"])) for k in body["keys"]]

    def status(self, slave_sae_id: str) -> dict[str, Any]:
        """``GET /status`` for keys shared with ``slave_sae_id``."""
        return dict(self._check(self._http.get(f"/{slave_sae_id}/status")))

    def enc_keys(
        self,
        slave_sae_id: str,
        number: int = 1,
        size: int | None = None,
        *,
        additional_slave_sae_ids: list[str] | None = None,
        extension_mandatory: list[dict[str, Any]] | None = None,
        extension_optional: list[dict[str, Any]] | None = None,
        method: str = "POST",
    ) -> list[DeliveredKey]:
        """New keys shared with ``slave_sae_id`` (this SAE is the master)."""
        url = f"/{slave_sae_id}/enc_keys"
        if method == "GET":
            params: dict[str, int] = {"number": number}
            if size is not None:
                params["size"] = size
            return self._keys(self._check(self._http.get(url, params=params)))
        body: dict[str, Any] = {"number": number}
        if size is not None:
            body["size"] = size
        if additional_slave_sae_ids:
            body["additional_slave_SAE_IDs"] = additional_slave_sae_ids
        if extension_mandatory:
            body["extension_mandatory"] = extension_mandatory
        if extension_optional:
            body["extension_optional"] = extension_optional
        return self._keys(self._check(self._http.post(url, json=body)))

    def dec_keys(
        self, master_sae_id: str, key_ids: list[str], method: str = "POST"
    ) -> list[DeliveredKey]:
        """The keys ``key_ids`` that ``master_sae_id`` obtained for this SAE."""
        url = f"/{master_sae_id}/dec_keys"
        if method == "GET":
            if len(key_ids) != 1:
                raise ValueError("GET dec_keys takes exactly one key ID")
            return self._keys(self._check(self._http.get(url, params={"key_ID": key_ids[0]})))
        body = {"key_IDs": [{"key_ID": k} for k in key_ids]}
        return self._keys(self._check(self._http.post(url, json=body)))
