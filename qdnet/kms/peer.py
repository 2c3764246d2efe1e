"""KMS-to-KMS channel: the peer API (served over its own mTLS listener) and its client.

Protocol (JSON over HTTPS, mutual TLS, only the peer KME's certificate is accepted):

``POST /peer/v1/blocks`` ``{"block_ids": [...]}`` -> ``{"held": [...]}``
    Inventory: which of these blocks the receiver holds. Both sides then mark those blocks
    *shared*: only shared bytes are ever carved into keys.

``POST /peer/v1/allocations`` ``{"segment_bytes": 4096, "items": [{"pieces": [[block_id, offset,
length], ...], "keys": [[key_ID, size_bits, master_SAE_ID, [slave SAE IDs served by the
receiver]], ...]}, ...]}`` -> ``{"accepted": [true, ...]}``
    The sender carved ``pieces`` (in this order) from its copy of the pool; the receiver carves
    the same bytes from its own copy, cuts the keys in order and keeps those with slaves here.
    An item overlapping bytes the receiver already consumed is refused and changes nothing; the
    sender then answers its SAE 503 and never hands those bytes out.

The sender carves from the front of the pool if it is the leader (smaller KME ID) and from the
back otherwise, so the two KMS only ever meet when the pool is nearly empty.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import httpx

from qdnet.kms.store import SEGMENT_BYTES, Piece
from qdnet.kms.tls import client_context

BLOCKS_PATH = "/peer/v1/blocks"
ALLOCATIONS_PATH = "/peer/v1/allocations"

KeySpec = tuple[str, int, str, list[str]]
"""``(key_ID, size_bits, master_SAE_ID, slaves served by the receiver)``"""


class PeerError(RuntimeError):
    """The peer KMS could not be reached or refused the call."""


def parse_allocations(raw: Any) -> list[tuple[list[Piece], list[KeySpec]]]:
    """Validate an allocations body; raises ``ValueError`` on anything malformed."""
    if not isinstance(raw, dict) or raw.get("segment_bytes") != SEGMENT_BYTES:
        raise ValueError(f"segment_bytes must be {SEGMENT_BYTES}")
    items = raw.get("items")
    if not isinstance(items, list):
        raise ValueError("items must be a list")
    out: list[tuple[list[Piece], list[KeySpec]]] = []
    for item in items:
        if not isinstance(item, dict):
            raise ValueError("item must be an object")
        pieces = [Piece.from_json(p) for p in item.get("pieces", [])]
        specs: list[KeySpec] = []
        for k in item.get("keys", []):
            if (
                not isinstance(k, list)
                or len(k) != 4
                or not isinstance(k[0], str)
                or not isinstance(k[1], int)
                or k[1] <= 0
                or k[1] % 8
                or not isinstance(k[2], str)
                or not isinstance(k[3], list)
                or not all(isinstance(s, str) for s in k[3])
            ):
                raise ValueError("key must be [key_ID, size_bits, master, [slaves]]")
            specs.append((k[0], k[1], k[2], list(k[3])))
        out.append((pieces, specs))
    return out


class PeerClient:
    """Client of the peer KMS (keep-alive mTLS with this KME's certificate)."""

    def __init__(self, url: str, ca: Path, cert: Path, key: Path, timeout_s: float = 5.0) -> None:
        self.url = url.rstrip("/")
        ctx = client_context(ca, cert, key)
        self._client = httpx.AsyncClient(
            base_url=self.url,
            verify=ctx,
            timeout=timeout_s,
            transport=httpx.AsyncHTTPTransport(
                verify=ctx,
                socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
                limits=httpx.Limits(max_connections=4, max_keepalive_connections=4),
            ),
        )

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            resp = await self._client.post(
                path,
                content=json.dumps(body, separators=(",", ":")),
                headers={"content-type": "application/json"},
            )
        except httpx.HTTPError as err:
            raise PeerError(f"peer KMS {self.url} unreachable: {type(err).__name__}") from None
        if resp.status_code != 200:
            raise PeerError(f"peer KMS {self.url} answered HTTP {resp.status_code}")
        data = resp.json()
        if not isinstance(data, dict):
            raise PeerError("peer KMS answered a non-object")
        return data

    async def blocks(self, block_ids: list[str]) -> list[str]:
        """Ask which of ``block_ids`` the peer holds (it marks them shared on its side)."""
        data = await self._post(BLOCKS_PATH, {"block_ids": block_ids})
        held = data.get("held")
        if not isinstance(held, list) or not all(isinstance(h, str) for h in held):
            raise PeerError("peer KMS answered a malformed inventory")
        return [h for h in held if h in set(block_ids)]

    async def allocations(self, items: list[tuple[list[Piece], list[KeySpec]]]) -> list[bool]:
        """Have the peer apply our allocations; one flag per item."""
        body = {
            "segment_bytes": SEGMENT_BYTES,
            "items": [
                {"pieces": [p.to_json() for p in pieces], "keys": [list(k) for k in specs]}
                for pieces, specs in items
            ],
        }
        data = await self._post(ALLOCATIONS_PATH, body)
        accepted = data.get("accepted")
        if (
            not isinstance(accepted, list)
            or len(accepted) != len(items)
            or not all(isinstance(a, bool) for a in accepted)
        ):
            raise PeerError("peer KMS answered a malformed allocation result")
        return accepted
