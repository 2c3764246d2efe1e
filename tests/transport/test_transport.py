"""Framing, in-memory and TCP channels, transcript authentication and attack rejection."""

from __future__ import annotations

import asyncio
import contextlib
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qdnet.transport import (
    AuthenticatedChannel,
    AuthKeyPool,
    Message,
    MessageKind,
    ProtocolError,
    TcpChannel,
    decode_message,
    encode_message,
    memory_pair,
)
from qdnet.transport.authentication import AuthenticationError, poly1305_forgery_bound


def _msg(i: int) -> Message:
    return Message(
        MessageKind.EC_QUESTIONS,
        fields={"round": i, "name": "x", "ok": True},
        arrays={"q": np.arange(i, i + 5, dtype=np.int64), "p": np.array([1, 0, 1], np.uint8)},
    )


def test_encode_decode_roundtrip() -> None:
    frame = encode_message(_msg(3), seq=7)
    back = decode_message(frame)
    assert back.kind == MessageKind.EC_QUESTIONS and back.seq == 7
    assert back.fields == {"round": 3, "name": "x", "ok": True}
    np.testing.assert_array_equal(back.arrays["q"], np.arange(3, 8))
    np.testing.assert_array_equal(back.arrays["p"], [1, 0, 1])


@pytest.mark.parametrize("cut", [1, 5, 20])
def test_truncated_or_padded_frames_rejected(cut: int) -> None:
    frame = encode_message(_msg(1), seq=0)
    with pytest.raises(ProtocolError):
        decode_message(frame[:-cut])
    with pytest.raises(ProtocolError):
        decode_message(frame + b"\0" * cut)


def test_bad_version_and_kind_rejected() -> None:
    frame = bytearray(encode_message(_msg(1), seq=0))
    bad_version = bytes(frame[:4]) + b"\x09" + bytes(frame[5:])
    with pytest.raises(ProtocolError, match="version"):
        decode_message(bad_version)
    frame[5:7] = (999).to_bytes(2, "big")
    with pytest.raises(ProtocolError, match="kind"):
        decode_message(bytes(frame))


async def _exchange(
    chan_a: AuthenticatedChannel, chan_b: AuthenticatedChannel, rounds: int
) -> tuple[list[Message], list[Message]]:
    got_b: list[Message] = []
    got_a: list[Message] = []

    async def alice() -> None:
        for i in range(rounds):
            got_a.append(await chan_a.request(_msg(i), MessageKind.EC_QUESTIONS))
        await chan_a.checkpoint()

    async def bob() -> None:
        for i in range(rounds):
            got_b.append(await chan_b.recv(MessageKind.EC_QUESTIONS))
            await chan_b.send(_msg(100 + i))
        await chan_b.checkpoint()

    await asyncio.gather(alice(), bob())
    return got_a, got_b


def _pools() -> tuple[AuthKeyPool, AuthKeyPool]:
    secret = os.urandom(256)
    return AuthKeyPool(secret), AuthKeyPool(secret)


def test_authenticated_exchange_consumes_512_bits_per_checkpoint() -> None:
    pool_a, pool_b = _pools()
    end_a, end_b = memory_pair()
    chan_a = AuthenticatedChannel(end_a, pool_a, "alice")
    chan_b = AuthenticatedChannel(end_b, pool_b, "bob")
    _got_a, got_b = asyncio.run(_exchange(chan_a, chan_b, 20))
    assert [m.fields["round"] for m in got_b] == list(range(20))
    assert chan_a.round_trips == 20
    assert pool_a.consumed_bits == pool_b.consumed_bits == 512
    assert pool_a.available_bits == 256 * 8 - 512
    assert 0 < chan_a.max_forgery_probability < 1e-25
    assert poly1305_forgery_bound(1 << 20) == pytest.approx(8 * 65536 / 2**106)


def _run_with_tap(tap: object) -> None:
    pool_a, pool_b = _pools()
    end_a, end_b = memory_pair(tap_a_to_b=tap)  # type: ignore[arg-type]
    chan_a = AuthenticatedChannel(end_a, pool_a, "alice")
    chan_b = AuthenticatedChannel(end_b, pool_b, "bob")

    async def go() -> None:
        task = asyncio.gather(_exchange(chan_a, chan_b, 4))
        await asyncio.wait_for(task, 5)

    asyncio.run(go())


def test_tampered_message_fails_checkpoint() -> None:
    count = {"n": 0}

    def flip_one_byte(frame: bytes) -> list[bytes]:
        count["n"] += 1
        if count["n"] == 2:
            raw = bytearray(frame)
            raw[-1] ^= 1  # last byte of an array payload: still parses
            return [bytes(raw)]
        return [frame]

    with pytest.raises(AuthenticationError):
        _run_with_tap(flip_one_byte)


def test_replayed_message_rejected() -> None:
    count = {"n": 0}
    seen: list[bytes] = []

    def replay(frame: bytes) -> list[bytes]:
        count["n"] += 1
        seen.append(frame)
        return [frame, seen[0]] if count["n"] == 2 else [frame]

    with pytest.raises(ProtocolError, match="sequence"):
        _run_with_tap(replay)


def test_reordered_message_rejected() -> None:
    held: list[bytes] = []

    def swap(frame: bytes) -> list[bytes]:
        if not held and decode_message(frame).seq == 1:
            held.append(frame)
            return []
        if held and decode_message(frame).seq == 2:
            return [frame, held.pop()]
        return [frame]

    async def go() -> None:
        pool_a, pool_b = _pools()
        end_a, end_b = memory_pair(tap_a_to_b=swap)
        chan_a = AuthenticatedChannel(end_a, pool_a, "alice")
        chan_b = AuthenticatedChannel(end_b, pool_b, "bob")
        for i in range(3):
            await chan_a.send(_msg(i))
        await chan_b.recv()
        await chan_b.recv()

    with pytest.raises(ProtocolError, match="sequence"):
        asyncio.run(go())


def test_truncated_frame_rejected() -> None:
    def truncate(frame: bytes) -> list[bytes]:
        return [frame[:-3]]

    with pytest.raises(ProtocolError, match="truncated"):
        _run_with_tap(truncate)


def test_pool_exhaustion_is_an_error() -> None:
    pool = AuthKeyPool(b"\1" * 40)
    pool.take(32)
    with pytest.raises(AuthenticationError, match="exhausted"):
        pool.take(32)
    pool.replenish(b"\2" * 32)
    assert len(pool.take(32)) == 32
    assert "\\x" not in repr(pool) and "available_bits" in repr(pool)


def test_tcp_roundtrip_and_truncation() -> None:
    async def go() -> None:
        ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        server = asyncio.create_task(
            TcpChannel.accept_one("127.0.0.1", 0, 5, on_listening=ready.set_result)
        )
        port = await ready
        client = await TcpChannel.connect("127.0.0.1", port)
        srv = await server
        pool_a, pool_b = _pools()
        chan_a = AuthenticatedChannel(client, pool_a, "alice")
        chan_b = AuthenticatedChannel(srv, pool_b, "bob")
        got_a, _got_b = await _exchange(chan_a, chan_b, 3)
        assert [m.fields["round"] for m in got_a] == [100, 101, 102]
        # a peer that dies mid-frame: the receiver sees a truncated frame, not garbage
        frame = encode_message(_msg(9), seq=0)
        client._writer.write(frame[:10])
        await client._writer.drain()
        await client.close()
        with pytest.raises(ProtocolError, match="truncated"):
            await srv.recv_frame()
        await srv.close()

    asyncio.run(go())


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_mutated_frames_raise_protocol_error_or_decode(data: st.DataObject) -> None:
    frame = bytearray(encode_message(_msg(2), seq=3))
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(frame) - 1))
        frame[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(frame)))
    with contextlib.suppress(ProtocolError):
        decode_message(bytes(frame[:cut]))
