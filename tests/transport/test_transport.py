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
        await chan_a.open_session({})
        for i in range(rounds):
            got_a.append(await chan_a.request(_msg(i), MessageKind.EC_QUESTIONS))
        assert await chan_a.commit(b"ctx", lambda: None)

    async def bob() -> None:
        await chan_b.accept_session(await chan_b.recv(MessageKind.HELLO), {})
        for i in range(rounds):
            got_b.append(await chan_b.recv(MessageKind.EC_QUESTIONS))
            await chan_b.send(_msg(100 + i))
        assert await chan_b.commit(b"ctx", lambda: None)

    await asyncio.gather(alice(), bob())
    return got_a, got_b


def _pools() -> tuple[AuthKeyPool, AuthKeyPool]:
    secret = os.urandom(256)
    return AuthKeyPool(secret), AuthKeyPool(secret)


def test_authenticated_exchange_consumes_one_slot() -> None:
    pool_a, pool_b = _pools()
    end_a, end_b = memory_pair()
    chan_a = AuthenticatedChannel(end_a, pool_a, "alice")
    chan_b = AuthenticatedChannel(end_b, pool_b, "bob")
    _got_a, got_b = asyncio.run(_exchange(chan_a, chan_b, 20))
    assert [m.fields["round"] for m in got_b] == list(range(20))
    assert chan_a.round_trips == 21  # the handshake and 20 requests
    assert pool_a.consumed_bits == pool_b.consumed_bits == 768
    assert pool_a.available_bits == (256 - 32) // 96 * 768 - 768
    assert 0 < chan_a.eps_auth == chan_b.eps_auth < 1e-25
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


def test_pool_exhaustion_is_an_error_that_says_how_to_rekey() -> None:
    pool = AuthKeyPool(b"\1" * (32 + 96))
    assert len(pool.reserve(0, 1)) == 3
    with pytest.raises(AuthenticationError, match=r"exhausted.*qdnet auth init"):
        pool.reserve(1, 1)
    pool.add_segment("refill", b"\2" * 96)
    assert [k.key_id for k in pool.reserve(1, 2)] == [3, 4, 5]
    with pytest.raises(AuthenticationError, match="already used"):
        pool.reserve(0, 2)
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


@pytest.mark.parametrize(
    "name",
    [
        "huge-shape",
        "float-shape",
        "huge-number",
        "infinity",
        "nested-json",
        "wrong-kind",
        "unknown-kind",
    ],
)
def test_hostile_frames_raise_protocol_error_only(name: str) -> None:
    """Finding 1: decoding must not let ValueError, OverflowError or RecursionError escape."""
    from tests.adversarial.harness import hostile_frames

    frame = hostile_frames(MessageKind.PA_SEED, 0)[name]
    try:
        msg = decode_message(frame)
    except ProtocolError:
        return
    # what parses must still be refused by the typed accessors, with a ProtocolError
    with pytest.raises(ProtocolError):
        msg.field_int("m")


@pytest.mark.parametrize(
    ("expected", "size", "accepted"),
    [
        ((MessageKind.HELLO,), 70_000, False),
        ((MessageKind.HELLO,), 1_000, True),
        ((MessageKind.SIFT_REQUEST,), 70_000, True),
        ((MessageKind.SIFT_REQUEST,), (1 << 28) + 1, False),
    ],
)
def test_frames_are_capped_by_what_the_receiver_expects(
    expected: tuple[MessageKind, ...], size: int, accepted: bool
) -> None:
    """Finding 9: an unauthenticated peer cannot make an endpoint read a 1 GiB frame."""
    from qdnet.transport.messages import MAX_FRAME_BYTES, frame_cap, frame_length

    prefix = size.to_bytes(4, "big")
    if accepted:
        assert frame_length(prefix, frame_cap(expected)) == size
    else:
        with pytest.raises(ProtocolError, match="out of range"):
            frame_length(prefix, frame_cap(expected))
    # a 1e9-detection run: SIFT_REQUEST chunks of SIFT_CHUNK detections fit the bulk cap
    from qdnet.postprocessing.session import SIFT_CHUNK

    assert 9 * SIFT_CHUNK + 4096 < MAX_FRAME_BYTES and 1e9 / SIFT_CHUNK < 300


def test_receive_has_a_deadline() -> None:
    """Finding 5: a peer that stops sending does not hang the endpoint."""

    async def go() -> None:
        pool_a, _pool_b = _pools()
        end_a, _end_b = memory_pair()
        chan = AuthenticatedChannel(end_a, pool_a, "alice", recv_timeout_s=0.2)
        await chan.recv()

    with pytest.raises(ProtocolError, match=r"no message from the peer in 0\.2 s"):
        asyncio.run(go())


def test_tcp_receiver_refuses_an_oversized_announcement_without_reading_it() -> None:
    async def go() -> None:
        ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        server = asyncio.create_task(
            TcpChannel.accept_one("127.0.0.1", 0, 5, on_listening=ready.set_result)
        )
        client = await TcpChannel.connect("127.0.0.1", await ready)
        srv = await server
        _pool_a, pool_b = _pools()
        chan_b = AuthenticatedChannel(srv, pool_b, "bob", recv_timeout_s=2)
        await client.send_frame((1 << 30).to_bytes(4, "big") + b"\0" * 16)
        with pytest.raises(ProtocolError, match="out of range"):
            await chan_b.recv(MessageKind.HELLO)
        await client.close()
        await srv.close()

    asyncio.run(go())
