"""Frame transports: asyncio TCP and an in-memory pair for tests.

A :class:`Channel` moves whole frames (see :mod:`qdnet.transport.messages`). A peer that closes
mid-frame yields :class:`ProtocolError` ("truncated"), never a partial frame.
"""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable

from qdnet.transport.messages import MAX_FRAME_BYTES, ProtocolError, frame_length

FrameTap = Callable[[bytes], list[bytes]]
"""Test hook on an in-memory link: maps one frame in transit to the frames delivered instead."""


class Channel(ABC):
    """A bidirectional, ordered frame pipe to the peer."""

    @abstractmethod
    async def send_frame(self, frame: bytes) -> None:
        """Send one complete frame."""

    @abstractmethod
    async def recv_frame(self, max_bytes: int = MAX_FRAME_BYTES) -> bytes:
        """Receive one complete frame of at most ``max_bytes`` (after the prefix); raises
        :class:`ProtocolError` on EOF, truncation or a longer announced frame."""

    @abstractmethod
    async def close(self) -> None:
        """Close the channel (idempotent)."""


class MemoryChannel(Channel):
    """One end of an in-memory link; frames are delivered through ``asyncio.Queue`` objects."""

    def __init__(
        self,
        inbox: asyncio.Queue[bytes | None],
        outbox: asyncio.Queue[bytes | None],
        tap: FrameTap | None = None,
    ) -> None:
        self._inbox = inbox
        self._outbox = outbox
        self._tap = tap
        self._closed = False

    async def send_frame(self, frame: bytes) -> None:
        if self._closed:
            raise ProtocolError("channel closed")
        for delivered in self._tap(frame) if self._tap else [frame]:
            await self._outbox.put(delivered)

    async def recv_frame(self, max_bytes: int = MAX_FRAME_BYTES) -> bytes:
        frame = await self._inbox.get()
        if frame is None:
            raise ProtocolError("peer closed the channel")
        if len(frame) < 4 or frame_length(frame[:4], max_bytes) != len(frame) - 4:
            raise ProtocolError("truncated frame")
        return frame

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            await self._outbox.put(None)


def memory_pair(
    tap_a_to_b: FrameTap | None = None, tap_b_to_a: FrameTap | None = None
) -> tuple[MemoryChannel, MemoryChannel]:
    """Two connected in-memory channel ends (Alice's, Bob's), with optional in-transit taps."""
    a_to_b: asyncio.Queue[bytes | None] = asyncio.Queue()
    b_to_a: asyncio.Queue[bytes | None] = asyncio.Queue()
    return MemoryChannel(b_to_a, a_to_b, tap_a_to_b), MemoryChannel(a_to_b, b_to_a, tap_b_to_a)


class TcpChannel(Channel):
    """Frames over an asyncio TCP stream."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    async def send_frame(self, frame: bytes) -> None:
        try:
            self._writer.write(frame)
            await self._writer.drain()
        except (ConnectionError, OSError) as exc:
            raise ProtocolError(f"send failed: {exc}") from None

    async def recv_frame(self, max_bytes: int = MAX_FRAME_BYTES) -> bytes:
        try:
            prefix = await self._reader.readexactly(4)
            body = await self._reader.readexactly(frame_length(prefix, max_bytes))
        except asyncio.IncompleteReadError as exc:
            raise ProtocolError(
                "peer closed the connection" if not exc.partial else "truncated frame"
            ) from None
        except (ConnectionError, OSError) as exc:
            raise ProtocolError(f"receive failed: {exc}") from None
        return prefix + body

    async def close(self) -> None:
        if not self._writer.is_closing():
            self._writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await self._writer.wait_closed()

    @classmethod
    async def connect(
        cls, host: str, port: int, retry_s: float = 10.0, interval_s: float = 0.1
    ) -> TcpChannel:
        """Connect to a listening peer, retrying while it is not up yet (up to ``retry_s``)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + retry_s
        while True:
            try:
                reader, writer = await asyncio.open_connection(host, port)
                return cls(reader, writer)
            except OSError as exc:
                if loop.time() >= deadline:
                    raise ProtocolError(f"cannot connect to {host}:{port}: {exc}") from None
                await asyncio.sleep(interval_s)

    @classmethod
    async def accept_one(
        cls,
        host: str,
        port: int,
        timeout_s: float | None = None,
        on_listening: Callable[[int], None] | None = None,
    ) -> TcpChannel:
        """Listen on ``host:port``, accept exactly one peer, stop listening and return its channel.

        ``port=0`` picks a free port; ``on_listening`` receives the bound port.
        """
        accepted: asyncio.Future[TcpChannel] = asyncio.get_running_loop().create_future()

        def _on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            if accepted.done():
                writer.close()
            else:
                accepted.set_result(cls(reader, writer))

        try:
            server = await asyncio.start_server(_on_client, host, port)
        except OSError as exc:
            raise ProtocolError(f"cannot listen on {host}:{port}: {exc}") from None
        try:
            if on_listening is not None:
                on_listening(int(server.sockets[0].getsockname()[1]))
            try:
                return await asyncio.wait_for(accepted, timeout_s)
            except TimeoutError:
                raise ProtocolError(
                    f"no peer connected to {host}:{port} in {timeout_s} s"
                ) from None
        finally:
            server.close()
