"""KMS-to-KMS channel: the peer API (served over its own mTLS listener) and its client.

Protocol (JSON over HTTPS, mutual TLS, only the peer KME's certificate is accepted):

``POST /peer/v1/blocks`` ``{"block_ids": [...]}`` -> ``{"held": [...]}``
    Inventory: which of these blocks the receiver holds. Both sides then mark those blocks
    *shared*: only shared bytes are ever carved into keys.

``POST /peer/v1/consumed`` ``{"segment_bytes": 4096, "blocks": {block_id: [[idx, lo, hi], ...]}}``
-> ``{"blocks": {...}, "consumed": n}`` (reconciliation, sent by the leader of the link)
    The sender's remaining range of every segment of these shared blocks (a segment not listed
    is consumed); the receiver consumes every byte the sender consumed and answers its own
    state, which the sender merges the same way: afterwards a byte is consumed on both sides
    or on neither.

``POST /peer/v1/allocations`` ``{"segment_bytes": 4096, "items": [{"pieces": [[block_id, offset,
length], ...], "keys": [[key_ID, size_bits, master_SAE_ID, [slave SAE IDs served by the
receiver]], ...]}, ...]}`` -> ``{"accepted": [true, ...]}``
    The sender carved ``pieces`` (in this order) from its copy of the pool; the receiver carves
    the same bytes from its own copy, cuts the keys in order and keeps those with slaves here.
    An item overlapping bytes the receiver already consumed is refused and changes nothing; the
    sender then answers its SAE 503 and never hands those bytes out.

``POST /peer/v1/relay`` and ``POST /peer/v1/relay_completion``
    Key relay between trusted nodes (relay request and relay completion): see
    :mod:`qdnet.kms.relay`.

The sender carves from the front of the pool if it is the leader (smaller KME ID) and from the
back otherwise, so the two KMS only ever meet when the pool is nearly empty.
"""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from qdnet.kms.store import SEGMENT_BYTES, Piece
from qdnet.kms.tls import client_context, kme_of_certificate

BLOCKS_PATH = "/peer/v1/blocks"
ALLOCATIONS_PATH = "/peer/v1/allocations"
CONSUMED_PATH = "/peer/v1/consumed"
RELAY_PATH = "/peer/v1/relay"
RELAY_COMPLETION_PATH = "/peer/v1/relay_completion"

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


def parse_segment_state(raw: Any) -> dict[str, list[list[int]]]:
    """Validate the ``blocks`` of a reconciliation body; raises ``ValueError``."""
    if not isinstance(raw, dict) or raw.get("segment_bytes") != SEGMENT_BYTES:
        raise ValueError(f"segment_bytes must be {SEGMENT_BYTES}")
    blocks = raw.get("blocks")
    if not isinstance(blocks, dict):
        raise ValueError("blocks must be an object")
    out: dict[str, list[list[int]]] = {}
    for block_id, segs in blocks.items():
        if not isinstance(segs, list):
            raise ValueError("a block's segments must be a list")
        for seg in segs:
            if (
                not isinstance(seg, list)
                or len(seg) != 3
                or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in seg)
            ):
                raise ValueError("segment must be [idx, lo, hi]")
        out[str(block_id)] = segs
    return out


class _Conn:
    """One keep-alive HTTP/1.1 connection over mutual TLS (asyncio streams)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    def usable(self) -> bool:
        return not self.reader.at_eof() and not self.writer.is_closing()

    def close(self) -> None:
        self.writer.close()

    async def post(self, host: str, path: str, body: bytes) -> tuple[int, bytes]:
        self.writer.write(
            b"POST %s HTTP/1.1\r\nhost: %s\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n%s" % (path.encode(), host.encode(), len(body), body)
        )
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = -1
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            low = name.strip().lower()
            if low == b"content-length":
                length = int(value)
            elif low == b"transfer-encoding":
                raise ConnectionError("chunked answers are not expected from a peer KMS")
            elif low == b"connection" and value.strip().lower() == b"close":
                self.reader.feed_eof()  # not reused
        if length < 0:
            raise ConnectionError("answer without content-length")
        return status, await self.reader.readexactly(length)


class PeerClient:
    """Client of the peer KMS (keep-alive mTLS with this KME's certificate).

    A minimal HTTP/1.1 client on asyncio streams: one call at a time on one kept-alive
    connection, so calls reach the peer in the order they are made (allocations must).
    """

    def __init__(
        self,
        url: str,
        ca: Path,
        cert: Path,
        key: Path,
        timeout_s: float = 5.0,
        *,
        expected_kme: str,
    ) -> None:
        self.url = url.rstrip("/")
        parts = urlsplit(self.url)
        if parts.scheme != "https" or not parts.hostname:
            raise ValueError(f"peer URL must be https://host:port, not {url!r}")
        self._host, self._port = parts.hostname, parts.port or 443
        self._hostport = parts.netloc
        self._ctx = client_context(ca, cert, key)
        self._timeout = timeout_s
        self._conn: _Conn | None = None
        self._lock = asyncio.Lock()
        self._expected_kme = expected_kme
        self._connections = 0
        self.reconnected = False
        """Set when a connection had to be opened again (the peer may have restarted)."""

    async def aclose(self) -> None:
        """Close the connection."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def _connect(self) -> _Conn:
        reader, writer = await asyncio.open_connection(
            self._host, self._port, ssl=self._ctx, limit=1 << 22
        )
        ssl_object = writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if kme_of_certificate(der) != self._expected_kme:
            writer.close()
            raise ConnectionError(f"the server is not KME {self._expected_kme}")
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._connections += 1
        self.reconnected = self._connections > 1
        return _Conn(reader, writer)

    async def _call(self, path: str, body: bytes) -> tuple[int, bytes]:
        async with self._lock:
            for attempt in (0, 1):
                reused = self._conn is not None and self._conn.usable()
                if not reused:
                    if self._conn is not None:
                        self._conn.close()
                    self._conn = await self._connect()
                conn = self._conn
                assert conn is not None
                try:
                    return await conn.post(self._hostport, path, body)
                except (ConnectionError, asyncio.IncompleteReadError):
                    conn.close()
                    self._conn = None
                    # a kept-alive connection the peer closed meanwhile: try once on a fresh
                    # one (safe even for allocations: the peer refuses bytes it already applied)
                    if not reused or attempt:
                        raise
                except BaseException:
                    conn.close()
                    self._conn = None
                    raise
            raise AssertionError("unreachable")

    async def connect(self) -> None:
        """Open the connection now unless one is open (:class:`PeerError` if the peer cannot be
        reached): a caller about to spend key material on a message checks this first."""
        async with self._lock:
            if self._conn is not None and self._conn.usable():
                return
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            try:
                self._conn = await asyncio.wait_for(self._connect(), self._timeout)
            except (TimeoutError, OSError, ValueError) as err:
                raise PeerError(f"peer KMS {self.url} unreachable: {type(err).__name__}") from None

    async def post(
        self, path: str, body: dict[str, Any], timeout_s: float | None = None
    ) -> dict[str, Any]:
        """One call: the peer's JSON answer (an object); :class:`PeerError` otherwise."""
        raw = json.dumps(body, separators=(",", ":")).encode()
        timeout = self._timeout if timeout_s is None else timeout_s
        try:
            status, answer = await asyncio.wait_for(self._call(path, raw), timeout)
        except (
            TimeoutError,
            OSError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            ValueError,
        ) as err:
            raise PeerError(f"peer KMS {self.url} unreachable: {type(err).__name__}") from None
        if status != 200:
            raise PeerError(f"peer KMS {self.url} answered HTTP {status}")
        try:
            data = json.loads(answer)
        except ValueError:
            raise PeerError("peer KMS answered invalid JSON") from None
        if not isinstance(data, dict):
            raise PeerError("peer KMS answered a non-object")
        return data

    async def blocks(self, block_ids: list[str]) -> list[str]:
        """Ask which of ``block_ids`` the peer holds (it marks them shared on its side)."""
        data = await self.post(BLOCKS_PATH, {"block_ids": block_ids})
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
        data = await self.post(ALLOCATIONS_PATH, body)
        accepted = data.get("accepted")
        if (
            not isinstance(accepted, list)
            or len(accepted) != len(items)
            or not all(isinstance(a, bool) for a in accepted)
        ):
            raise PeerError("peer KMS answered a malformed allocation result")
        return accepted

    async def consumed(
        self, state: dict[str, list[list[int]]]
    ) -> tuple[dict[str, list[list[int]]], int]:
        """Reconciliation: send our segment state, get the peer's (after its merge) and the
        number of bytes it newly consumed."""
        data = await self.post(CONSUMED_PATH, {"segment_bytes": SEGMENT_BYTES, "blocks": state})
        count = data.get("consumed")
        if not isinstance(count, int):
            raise PeerError("peer KMS answered a malformed reconciliation")
        try:
            return parse_segment_state(
                {"segment_bytes": SEGMENT_BYTES, "blocks": data.get("blocks")}
            ), count
        except ValueError:
            raise PeerError("peer KMS answered a malformed reconciliation") from None
