"""Wegman-Carter transcript authentication with one-time Poly1305 keys.

Model. Each direction's transcript (every frame sent since the last checkpoint, sequence numbers
included) is authenticated once, at a checkpoint, by a Poly1305 tag under a *fresh one-time key*
(r, s) of 32 bytes drawn from a pool of secret key shared by both endpoints. Poly1305 with a
uniformly random one-time key is a Wegman-Carter MAC (hash r over GF(2^130-5), one-time pad s):
forging a tag for a different L-byte message succeeds with probability at most
8 * ceil(L/16) / 2^106 against an unbounded adversary (D. J. Bernstein, "The Poly1305-AES
message-authentication code", FSE 2005, Theorem 3.3 with the AES part replaced by a one-time
pad; Wegman and Carter, JCSS 22, 265 (1981)). Authenticating transcripts rather than messages
keeps interactive error correction from eating key (notes: 2x256 bits per checkpoint instead of
per round trip).

Both tags of a checkpoint cover the *whole* transcript segment, both directions (each side hashes
what it sent and what it received in one canonical order), so a modification in either direction
is detected by *both* endpoints, not only by the one that received the modified frame.

Closing a key block (:meth:`AuthenticatedChannel.commit`) is a checkpoint plus an authenticated
verdict: Alice sends her tag, Bob verifies it and answers with his, Alice verifies that and sends
CONFIRM or ABORT carrying a Poly1305 tag under a third one-time key. Every message that decides
whether a block is kept is thus authenticated. Bob, once he has verified Alice's tag and sent his
own, keeps the block unless an *authentic* ABORT arrives; a forged, modified or missing closing
message leaves both ends with the same block. (No finite protocol over a channel the adversary
controls can guarantee agreement when more than the last message is suppressed -- the two-generals
problem: if Bob's tag and Alice's ABORT are both suppressed, Bob holds an authentic block Alice
lacks, recognisable by its block ID. Secrecy is never affected: each end keeps a block only after
verifying the peer's tag on the whole transcript.)

Sequence numbers are checked on every frame, so a replayed, dropped or reordered frame aborts
at once; a modified frame is caught by the tag at the next checkpoint, before any key derived
from the segment is accepted. The pool is bootstrapped from a pre-shared secret and refilled
from distilled key (:meth:`AuthKeyPool.replenish`); both endpoints consume it in the same order.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import math
import struct
from dataclasses import dataclass

import numpy as np
from cryptography.hazmat.primitives.poly1305 import Poly1305
from numpy.typing import NDArray

from qdnet.transport.channel import Channel
from qdnet.transport.messages import (
    FieldValue,
    Message,
    MessageKind,
    ProtocolError,
    decode_message,
    encode_message,
)

TAG_KEY_BYTES = 32
#: One-time key bits one :meth:`AuthenticatedChannel.commit` draws (two tags and the verdict).
COMMIT_KEY_BITS = 3 * TAG_KEY_BYTES * 8
_VERDICT_LABEL = b"qdnet-verdict-v1"


class AuthenticationError(ProtocolError):
    """A transcript tag did not verify, or the authentication key pool ran dry."""


class PeerAbortedError(ProtocolError):
    """The peer sent an ABORT message."""


class AuthKeyPool:
    """Secret key for one-time authentication keys; consumption is accounted in bits.

    The pool is secret: it is never logged and its ``repr`` shows only sizes.
    """

    def __init__(self, secret: bytes) -> None:
        self._buffer = bytearray(secret)
        self.consumed_bits = 0
        self.replenished_bits = 0

    def __repr__(self) -> str:
        return (
            f"AuthKeyPool(available_bits={self.available_bits}, consumed_bits={self.consumed_bits})"
        )

    @property
    def available_bits(self) -> int:
        """Unused secret bits left in the pool."""
        return len(self._buffer) * 8

    def take(self, nbytes: int) -> bytes:
        """Remove and return the next ``nbytes`` of one-time key (both ends draw in one order)."""
        if nbytes > len(self._buffer):
            raise AuthenticationError(
                f"authentication key pool exhausted: need {nbytes * 8} bits, "
                f"have {self.available_bits}"
            )
        out = bytes(self._buffer[:nbytes])
        del self._buffer[:nbytes]
        self.consumed_bits += nbytes * 8
        return out

    def replenish(self, secret: bytes) -> None:
        """Append fresh secret key (taken from a distilled block before it is handed out)."""
        self._buffer.extend(secret)
        self.replenished_bits += len(secret) * 8

    def export(self) -> bytes:
        """The remaining secret bytes, for persisting the pool between sessions."""
        return bytes(self._buffer)


def poly1305_forgery_bound(message_bytes: int) -> float:
    """Forgery probability of one-time Poly1305 on an L-byte message (Bernstein 2005, Thm 3.3)."""
    return 8.0 * math.ceil(max(message_bytes, 1) / 16) / 2.0**106


@dataclass
class TranscriptMac:
    """Frames of one direction since the last checkpoint (hashed only when the tag is due)."""

    frames: list[bytes]

    def tag(self, key: bytes) -> bytes:
        """Poly1305 tag of the concatenated frames under a one-time key."""
        mac = Poly1305(key)
        for frame in self.frames:
            mac.update(frame)
        return mac.finalize()

    @property
    def nbytes(self) -> int:
        """Transcript length in bytes."""
        return sum(len(f) for f in self.frames)


def transcript_tag(key: bytes, a_to_b: TranscriptMac, b_to_a: TranscriptMac) -> bytes:
    """Poly1305 tag of a segment, both directions: lengths, Alice's frames, then Bob's frames."""
    mac = Poly1305(key)
    mac.update(struct.pack(">QQ", a_to_b.nbytes, b_to_a.nbytes))
    for frame in a_to_b.frames:
        mac.update(frame)
    for frame in b_to_a.frames:
        mac.update(frame)
    return mac.finalize()


def _verdict_tag(key: bytes, kind: MessageKind, context: bytes) -> bytes:
    mac = Poly1305(key)
    mac.update(_VERDICT_LABEL + struct.pack(">H", int(kind)) + context)
    return mac.finalize()


class AuthenticatedChannel:
    """A channel with sequence numbers and Wegman-Carter transcript checkpoints.

    ``role`` is ``"alice"`` or ``"bob"``; Alice's outgoing direction uses the first one-time key
    of each checkpoint, Bob's the second, so both sides draw the pool identically.
    """

    def __init__(self, channel: Channel, pool: AuthKeyPool, role: str) -> None:
        if role not in ("alice", "bob"):
            raise ValueError(f"role must be 'alice' or 'bob', got {role!r}")
        self.channel = channel
        self.pool = pool
        self.role = role
        self._send_seq = 0
        self._recv_seq = 0
        self._sent = TranscriptMac([])
        self._received = TranscriptMac([])
        self.round_trips = 0
        self._last_was_send = False
        self.bytes_sent = 0
        self.bytes_received = 0
        self.checkpoints = 0
        self.max_forgery_probability = 0.0

    async def send(self, message: Message) -> None:
        """Send a message as part of the current transcript segment."""
        frame = encode_message(message, self._send_seq)
        self._send_seq += 1
        self._sent.frames.append(frame)
        self.bytes_sent += len(frame)
        self._last_was_send = True
        await self.channel.send_frame(frame)

    async def recv(self, *expected: MessageKind) -> Message:
        """Receive the next message; it must carry the next sequence number and an expected kind."""
        frame = await self.channel.recv_frame()
        message = decode_message(frame)
        if message.seq != self._recv_seq:
            raise ProtocolError(
                f"message out of sequence (got {message.seq}, expected {self._recv_seq}): "
                "replayed, dropped or reordered"
            )
        self._recv_seq += 1
        self.bytes_received += len(frame)
        if self._last_was_send:
            self.round_trips += 1  # a reply after our own message: one round trip
            self._last_was_send = False
        if message.kind == MessageKind.ABORT:
            raise _peer_aborted(message)
        self._received.frames.append(frame)
        if expected and message.kind not in expected:
            names = "/".join(k.name for k in expected)
            raise ProtocolError(f"unexpected {message.kind.name} message, expected {names}")
        return message

    async def request(self, message: Message, *expected: MessageKind) -> Message:
        """Send and wait for the reply: one round trip."""
        await self.send(message)
        return await self.recv(*expected)

    async def checkpoint(self) -> None:
        """Exchange and verify transcript tags for everything since the last checkpoint.

        Draws 2 x 256 bits of one-time key. Raises :class:`AuthenticationError` on a mismatch.
        """
        key_ab = self.pool.take(TAG_KEY_BYTES)
        key_ba = self.pool.take(TAG_KEY_BYTES)
        await self._exchange_tags(key_ab, key_ba)

    async def commit(self, context: bytes, verdict_timeout_s: float = 30.0) -> bool:
        """Close a key block: transcript checkpoint plus Alice's authenticated verdict.

        Draws 3 x 256 bits of one-time key. Alice: raises if Bob's tag does not verify (after
        sending an authenticated ABORT), else sends an authenticated CONFIRM and returns True.
        Bob: raises if Alice's tag does not verify or an authentic ABORT follows his tag; returns
        True when an authentic CONFIRM arrived and False when the closing message was missing,
        modified or forged -- he keeps the block then, as Alice does (see the module docstring).
        ``context`` (the block ID) is bound into the verdict tag.
        """
        key_ab = self.pool.take(TAG_KEY_BYTES)
        key_ba = self.pool.take(TAG_KEY_BYTES)
        key_verdict = self.pool.take(TAG_KEY_BYTES)
        if self.role == "alice":
            try:
                await self._exchange_tags(key_ab, key_ba)
            except ProtocolError as exc:
                with contextlib.suppress(ProtocolError):
                    await self._send_verdict(
                        MessageKind.ABORT, key_verdict, context, f"closing tag rejected: {exc}"
                    )
                raise
            with contextlib.suppress(ProtocolError):  # best effort: Bob keeps the block anyway
                await self._send_verdict(MessageKind.CONFIRM, key_verdict, context)
            return True
        await self._exchange_tags(key_ab, key_ba)
        try:
            frame = await asyncio.wait_for(self.channel.recv_frame(), verdict_timeout_s)
            message = decode_message(frame)
        except (ProtocolError, TimeoutError):
            return False
        if message.seq != self._recv_seq or message.kind not in (
            MessageKind.CONFIRM,
            MessageKind.ABORT,
        ):
            return False
        self._recv_seq += 1
        self.bytes_received += len(frame)
        try:
            tag = message.array("tag", "uint8", 16).tobytes()
        except ProtocolError:
            return False
        if not hmac.compare_digest(tag, _verdict_tag(key_verdict, message.kind, context)):
            return False
        if message.kind == MessageKind.ABORT:
            raise _peer_aborted(message)
        return True

    async def _exchange_tags(self, key_ab: bytes, key_ba: bytes) -> None:
        a_to_b, b_to_a = (
            (self._sent, self._received) if self.role == "alice" else (self._received, self._sent)
        )
        tag_ab = transcript_tag(key_ab, a_to_b, b_to_a)
        tag_ba = transcript_tag(key_ba, a_to_b, b_to_a)
        self.max_forgery_probability = max(
            self.max_forgery_probability,
            poly1305_forgery_bound(16 + self._sent.nbytes + self._received.nbytes),
        )
        my_tag, expected_tag = (tag_ab, tag_ba) if self.role == "alice" else (tag_ba, tag_ab)
        tag_message = Message(MessageKind.AUTH_TAG, arrays={"tag": _bytes_array(my_tag)})
        if self.role == "alice":
            await self._send_unauthenticated(tag_message)
            self._check_tag(await self._recv_tag(), expected_tag)
        else:
            self._check_tag(await self._recv_tag(), expected_tag)
            await self._send_unauthenticated(tag_message)
        self._sent = TranscriptMac([])
        self._received = TranscriptMac([])
        self.checkpoints += 1

    async def _send_verdict(
        self, kind: MessageKind, key: bytes, context: bytes, reason: str | None = None
    ) -> None:
        fields: dict[str, FieldValue] = {} if reason is None else {"reason": reason}
        await self._send_unauthenticated(
            Message(
                kind,
                fields=fields,
                arrays={"tag": _bytes_array(_verdict_tag(key, kind, context))},
            )
        )

    async def abort(self, reason: str) -> None:
        """Tell the peer (best effort) that this endpoint aborts, then close."""
        with contextlib.suppress(ProtocolError):
            await self._send_unauthenticated(Message(MessageKind.ABORT, fields={"reason": reason}))
        await self.channel.close()

    async def close(self) -> None:
        """Close the underlying channel."""
        await self.channel.close()

    async def _send_unauthenticated(self, message: Message) -> None:
        frame = encode_message(message, self._send_seq)
        self._send_seq += 1
        self.bytes_sent += len(frame)
        await self.channel.send_frame(frame)

    async def _recv_tag(self) -> bytes:
        frame = await self.channel.recv_frame()
        message = decode_message(frame)
        if message.seq != self._recv_seq:
            raise ProtocolError("authentication tag out of sequence")
        self._recv_seq += 1
        self.bytes_received += len(frame)
        if message.kind == MessageKind.ABORT:
            raise _peer_aborted(message)
        if message.kind != MessageKind.AUTH_TAG:
            raise ProtocolError(f"unexpected {message.kind.name} message, expected AUTH_TAG")
        return message.array("tag", "uint8", 16).tobytes()

    @staticmethod
    def _check_tag(received: bytes, expected: bytes) -> None:
        if not hmac.compare_digest(received, expected):
            raise AuthenticationError("transcript authentication failed: messages were modified")


def _bytes_array(data: bytes) -> NDArray[np.uint8]:
    return np.frombuffer(data, dtype=np.uint8).copy()


def _peer_aborted(message: Message) -> PeerAbortedError:
    reason = message.fields.get("reason")
    return PeerAbortedError(f"peer aborted: {reason if isinstance(reason, str) else 'no reason'}")
