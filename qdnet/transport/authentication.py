"""Wegman-Carter transcript authentication with one-time Poly1305 keys from a persistent pool.

Model. A session's transcript (every frame both ways, sequence numbers included) is authenticated
once, when the key block closes, by Poly1305 tags under *fresh one-time keys* (r, s) of 32 bytes
drawn from a pool of secret key shared by both endpoints. Poly1305 with a uniformly random
one-time key is a Wegman-Carter MAC (hash r over GF(2^130-5), one-time pad s): forging a tag for a
different L-byte message succeeds with probability at most 8 * ceil(L/16) / 2^106 against an
unbounded adversary (D. J. Bernstein, "The Poly1305-AES message-authentication code", FSE 2005,
Theorem 3.3 with the AES part replaced by a one-time pad; Wegman and Carter, JCSS 22, 265
(1981)). A one-time key that tags two different messages gives both (r, s) away (two equations in
two unknowns), so the whole design below is about never revealing two tags under one key.

Both tags cover the *whole* transcript, both directions (each side hashes what it sent and what
it received in one canonical order), so a modification in either direction is detected by *both*
endpoints.

The pool (:class:`AuthKeyPool`). Keys are numbered 0, 1, 2, ... along the concatenation of the
pool's *segments*: the pre-shared secret (less its first 32 bytes, which only give the secret's
public fingerprint), then the authentication refill of every key block this end kept, in order.
A session uses one *slot* of three keys, ``3s`` (Alice's transcript tag), ``3s + 1`` (Bob's
transcript tag) and ``3s + 2`` (Alice's verdict), so a key is only ever revealed by one role,
whatever slot an attacker makes either end use. The slot is agreed in the handshake: Alice's
HELLO and Bob's HELLO_ACK each carry the sender's next free slot, a fresh 128-bit nonce, the
fingerprint of the pre-shared secret and the sender's segment list (count and last two IDs); both
take the larger slot, check that the segments they share agree, and *persist* the slot as used
(file and directory fsynced) before the session goes on. So

- a drawn key is gone from the pool on disk before it is ever used, whatever happens next (crash,
  hostile frame, kill -9): the next session takes the next slot;
- a session that failed at any point leaves both pools able to agree on the next slot (the larger
  of the two), so one edited message never puts the pools out of step;
- a recorded session replayed to a restarted endpoint meets a later slot and a fresh nonce: its
  tags do not verify and it never yields a key block.

The pool starts from a pre-shared secret once per role (:meth:`AuthKeyPool.start` leaves a marker
beside the secret and refuses a second start) and is refilled from distilled key. A refill joins
the pool only when the block is kept: Alice's at once (she holds Bob's authentic tag), Bob's when
Alice's authentic CONFIRM arrives, or in a later session whose authenticated HELLO shows that
Alice kept it (:mod:`qdnet.postprocessing.keyblock` holds such a block in ``pending/``).

Closing a key block (:meth:`AuthenticatedChannel.commit`): Alice sends her tag, Bob verifies it and
answers with his, Alice verifies that and sends CONFIRM or ABORT carrying a Poly1305 tag under the
third key. No finite protocol over a channel the adversary controls can guarantee agreement when
the last message is suppressed (the two-generals problem): Bob then holds a *pending* block that no
KMS is offered until a later authenticated exchange confirms or discards it. Secrecy is never
affected: each end keeps a block only after verifying the peer's tag on the whole transcript.

Sequence numbers are checked on every frame, so a replayed, dropped or reordered frame aborts at
once; a modified frame is caught by the tags before any key derived from the session is kept.
Every receive has a deadline (``recv_timeout_s``) and a frame size cap that depends on the kinds
expected next (:func:`qdnet.transport.messages.frame_cap`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import math
import os
import secrets
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.poly1305 import Poly1305
from numpy.typing import NDArray

from qdnet.files import fsync_directory, write_atomic
from qdnet.transport.channel import Channel
from qdnet.transport.messages import (
    FieldValue,
    Message,
    MessageKind,
    ProtocolError,
    decode_message,
    encode_message,
    frame_cap,
)

TAG_KEY_BYTES = 32
#: Keys of one session slot: Alice's transcript tag, Bob's transcript tag, Alice's verdict.
SLOT_KEYS = 3
SLOT_BYTES = SLOT_KEYS * TAG_KEY_BYTES
#: One-time key bits one session draws (one slot).
COMMIT_KEY_BITS = SLOT_BYTES * 8
#: Bytes at the start of a pre-shared secret that only feed its public fingerprint.
FINGERPRINT_SOURCE_BYTES = 32
#: Below this many free slots an endpoint warns that the pool runs low.
LOW_POOL_SLOTS = 8
#: How far ahead of this end's next slot a peer's may be. Honest ends drift apart by one slot
#: per session in which only one of them reserved (the other never saw the handshake reply), and
#: catch up in the next; a larger gap means a forged handshake, which must not burn the pool.
MAX_SLOT_SKEW = 16
#: Seconds an endpoint waits for each message of its peer (``--recv-timeout``).
DEFAULT_RECV_TIMEOUT_S = 120.0
POOL_FORMAT_VERSION = 1
NONCE_BYTES = 16
_VERDICT_LABEL = b"qdnet-verdict-v2"
_FINGERPRINT_LABEL = b"qdnet-psk-fingerprint-v1"
_ROLES = ("alice", "bob")
REKEY_HINT = (
    "re-key: write a new pre-shared secret with `qdnet auth init FILE`, copy it to both hosts "
    "and start fresh --keys folders from it (a used secret is never taken again)"
)


class AuthenticationError(ProtocolError):
    """A transcript tag did not verify, the secrets differ, or the key pool ran dry."""


class PeerAbortedError(ProtocolError):
    """The peer sent an ABORT message."""


class AuthenticAbortError(PeerAbortedError):
    """The peer's ABORT verdict carried a valid tag: it really rejected the block."""


class PoolError(ValueError):
    """The pool state refuses an operation (second start, run already distilled, bad file)."""


@dataclass(frozen=True)
class OneTimeKey:
    """A 32-byte Poly1305 one-time key and its number in the pool (never shown)."""

    key_id: int
    key: bytes = field(repr=False)


def psk_fingerprint(secret: bytes) -> str:
    """Public fingerprint of a pre-shared secret: SHA-256 of its first 32 bytes, which are never
    used as key, so the fingerprint tells nothing about the one-time keys."""
    if len(secret) < FINGERPRINT_SOURCE_BYTES + SLOT_BYTES:
        raise PoolError(
            f"pre-shared secret of {len(secret)} bytes is too short "
            f"(at least {FINGERPRINT_SOURCE_BYTES + SLOT_BYTES})"
        )
    digest = hashlib.sha256(_FINGERPRINT_LABEL + secret[:FINGERPRINT_SOURCE_BYTES])
    return digest.hexdigest()[:32]


def atomic_write_private(path: Path, data: bytes) -> None:
    """Write ``path`` atomically with mode 0600: tmp + fsync + rename + directory fsync."""
    write_atomic(path, data, 0o600)


#: Size of a fresh pre-shared secret: 4064 key bytes after the fingerprint part, 42 sessions.
PSK_BYTES = 4096


def write_psk(path: Path, nbytes: int = PSK_BYTES) -> str:
    """Write a fresh pre-shared secret to a new file (mode 0600, refused if ``path`` exists);
    returns its fingerprint."""
    secret = secrets.token_bytes(nbytes)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise PoolError(
            f"{path} exists: a secret is never overwritten (choose a new file)"
        ) from None
    with os.fdopen(fd, "wb") as handle:
        handle.write(secret)
        handle.flush()
        os.fsync(handle.fileno())
    fsync_directory(path.parent)
    return psk_fingerprint(secret)


class AuthKeyPool:
    """Secret key for one-time authentication keys, in segments, with a persisted next slot.

    ``AuthKeyPool(secret)`` keeps its state in memory (tests); :meth:`start` and :meth:`open` keep
    it in a file that is rewritten (atomically, fsynced) on every change *before* the change is
    acted on. The pool is secret: it is never logged and its ``repr`` shows only sizes.
    """

    def __init__(self, secret: bytes, role: str = "alice", path: Path | None = None) -> None:
        if role not in _ROLES:
            raise PoolError(f"role must be 'alice' or 'bob', got {role!r}")
        self.role = role
        self.path = path
        self.fingerprint = psk_fingerprint(secret)
        self._segments: list[tuple[str, bytes]] = [
            ("psk", bytes(secret[FINGERPRINT_SOURCE_BYTES:]))
        ]
        self._pending: tuple[str, bytes] | None = None
        self.next_slot = 0
        self.claimed: list[str] = []
        self._start_slot = 0

    def __repr__(self) -> str:
        return (
            f"AuthKeyPool(role={self.role!r}, available_bits={self.available_bits}, "
            f"next_slot={self.next_slot}, segments={len(self._segments)})"
        )

    # -- persistence ------------------------------------------------------------------------

    @classmethod
    def start(cls, path: Path, psk_path: Path, role: str) -> AuthKeyPool:
        """Start ``role``'s pool at ``path`` from the secret in ``psk_path``, once per role.

        A marker ``<psk>.<role>-started`` (created exclusively, before the pool) refuses a second
        start, which would reuse the secret's one-time keys.
        """
        if path.exists():
            raise PoolError(f"{path}: an authentication pool is already there")
        if not psk_path.is_file():
            raise PoolError(
                f"pre-shared secret {psk_path} not found: create one with "
                f"`qdnet auth init {psk_path}` and copy it to both hosts"
            )
        secret = psk_path.read_bytes()
        pool = cls(secret, role, path)
        marker = psk_path.with_name(f"{psk_path.name}.{role}-started")
        try:
            fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            where = marker.read_text(errors="replace").strip() or "another folder"
            raise PoolError(
                f"pre-shared secret {psk_path} already started {role}'s authentication pool "
                f"({where}); starting it again would reuse one-time keys. Use that pool, or "
                + REKEY_HINT
            ) from None
        with os.fdopen(fd, "w") as handle:
            handle.write(f"{path.resolve()}\n")
            handle.flush()
            os.fsync(handle.fileno())
        fsync_directory(marker.parent)
        pool.save()
        return pool

    @classmethod
    def open(cls, path: Path) -> AuthKeyPool:
        """Load a pool saved by :meth:`start`; raises :class:`PoolError` naming the problem."""
        try:
            raw = json.loads(path.read_bytes())
            if raw["format_version"] != POOL_FORMAT_VERSION:
                raise PoolError(f"{path}: pool format_version {raw['format_version']!r}")
            pool = cls.__new__(cls)
            pool.role = str(raw["role"])
            pool.path = path
            pool.fingerprint = str(raw["psk_fingerprint"])
            pool._segments = [(str(i), base64.b64decode(b)) for i, b in raw["segments"]]
            pending = raw["pending_segment"]
            pool._pending = None if pending is None else (pending[0], base64.b64decode(pending[1]))
            pool.next_slot = int(raw["next_slot"])
            pool.claimed = [str(c) for c in raw["claimed_runs"]]
            pool._start_slot = pool.next_slot
        except PoolError:
            raise
        except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
            raise PoolError(f"{path}: unreadable authentication pool ({exc})") from None
        if pool.role not in _ROLES or not pool._segments:
            raise PoolError(f"{path}: bad authentication pool")
        return pool

    def save(self) -> None:
        """Persist the state (no-op for an in-memory pool)."""
        if self.path is None:
            return
        doc: dict[str, Any] = {
            "format_version": POOL_FORMAT_VERSION,
            "role": self.role,
            "psk_fingerprint": self.fingerprint,
            "segments": [[i, base64.b64encode(b).decode()] for i, b in self._segments],
            "pending_segment": None
            if self._pending is None
            else [self._pending[0], base64.b64encode(self._pending[1]).decode()],
            "next_slot": self.next_slot,
            "claimed_runs": self.claimed,
        }
        atomic_write_private(self.path, json.dumps(doc).encode())

    # -- accounting -------------------------------------------------------------------------

    @property
    def segment_ids(self) -> list[str]:
        """IDs of the pool's segments in order ("psk", then kept block IDs)."""
        return [i for i, _ in self._segments]

    def _slots(self, segments: int) -> int:
        return sum(len(b) for _, b in self._segments[:segments]) // SLOT_BYTES

    @property
    def slots_left(self) -> int:
        """Sessions this pool can still authenticate (its own segments)."""
        return max(0, self._slots(len(self._segments)) - self.next_slot)

    @property
    def available_bits(self) -> int:
        """Unused one-time key bits (whole slots)."""
        return self.slots_left * COMMIT_KEY_BITS

    @property
    def consumed_bits(self) -> int:
        """Bits of all slots before the next free one (used or skipped)."""
        return self.next_slot * COMMIT_KEY_BITS

    @property
    def pending_id(self) -> str | None:
        """Block ID of the refill waiting for the peer's confirmation (Bob only)."""
        return None if self._pending is None else self._pending[0]

    def low_warning(self) -> str | None:
        """A message when the pool runs low, else None."""
        if self.slots_left >= LOW_POOL_SLOTS:
            return None
        return (
            f"authentication pool low: {self.slots_left} sessions left (each failed session "
            f"costs one); {REKEY_HINT}"
        )

    # -- drawing ----------------------------------------------------------------------------

    def reserve(self, slot: int, segments: int) -> list[OneTimeKey]:
        """Mark ``slot`` (and every earlier one) used on disk, then return its three keys.

        ``segments``: how many leading segments both ends share (keys may come only from them).
        """
        if slot < self.next_slot:
            raise AuthenticationError(
                f"session slot {slot} already used (next is {self.next_slot})"
            )
        if slot >= self._slots(segments):
            raise AuthenticationError(
                f"authentication key pool exhausted: session slot {slot} needs "
                f"{(slot + 1) * SLOT_BYTES} bytes, the pool both ends share holds "
                f"{self._slots(segments) * SLOT_BYTES}; " + REKEY_HINT
            )
        self.next_slot = slot + 1
        self.save()  # persisted before any of these keys is used
        stream = b"".join(b for _, b in self._segments[:segments])
        base = slot * SLOT_BYTES
        return [
            OneTimeKey(
                slot * SLOT_KEYS + i,
                stream[base + i * TAG_KEY_BYTES : base + (i + 1) * TAG_KEY_BYTES],
            )
            for i in range(SLOT_KEYS)
        ]

    def claim(self, label: str) -> None:
        """Remember ``label`` (a records digest) on disk; refuse one claimed before."""
        if label in self.claimed:
            raise PoolError(
                "these records were already distilled with this pool: distilling the same raw "
                "bits again would give a second key block from them (and leak more about them)"
            )
        self.claimed.append(label)
        self.save()

    # -- refills ----------------------------------------------------------------------------

    def add_segment(self, block_id: str, secret: bytes) -> None:
        """Append a kept block's refill (Alice at her commit)."""
        if block_id in self.segment_ids:
            raise PoolError(f"segment {block_id} already in the pool")
        self._segments.append((block_id, bytes(secret)))
        self.save()

    def set_pending(self, block_id: str, secret: bytes) -> None:
        """Hold a refill until the peer confirms the block (Bob before revealing his tag)."""
        if self._pending is not None:
            raise PoolError(f"block {self._pending[0]} is still pending")
        self._pending = (block_id, bytes(secret))
        self.save()

    def confirm_pending(self) -> str:
        """The pending refill joins the pool; returns its block ID."""
        if self._pending is None:
            raise PoolError("no pending block")
        block_id, secret = self._pending
        self._pending = None
        self._segments.append((block_id, secret))
        self.save()
        return block_id

    def drop_pending(self) -> str:
        """Forget the pending refill (the peer did not keep the block); returns its block ID."""
        if self._pending is None:
            raise PoolError("no pending block")
        block_id = self._pending[0]
        self._pending = None
        self.save()
        return block_id

    def session_fields(self) -> dict[str, FieldValue]:
        """What the handshake announces about this pool (public)."""
        return {
            "auth_slot": self.next_slot,
            "auth_segments": len(self._segments),
            "auth_tail": self.segment_ids[-2:],
            "psk_fingerprint": self.fingerprint,
        }

    def shared_segments(self, peer: Message) -> int:
        """How many leading segments both ends hold, from the peer's handshake fields."""
        count = peer.field_int("auth_segments")
        tail = peer.fields.get("auth_tail")
        if not isinstance(tail, list) or not all(isinstance(t, str) for t in tail):
            raise ProtocolError(f"{peer.kind.name}: field 'auth_tail' missing or not a list")
        mine = self.segment_ids
        common = min(count, len(mine))
        if abs(count - len(mine)) > 1 or common < 1 or len(tail) > 2:
            raise AuthenticationError(
                f"authentication pools out of step ({len(mine)} segments here, {count} at the "
                f"peer); " + REKEY_HINT
            )
        # the peer's ID at index common - 1 is in its tail (it holds at most one more segment)
        index_in_tail = len(tail) - (count - common) - 1
        if index_in_tail < 0 or tail[index_in_tail] != mine[common - 1]:
            raise AuthenticationError(
                "authentication pools out of step (their refills differ); " + REKEY_HINT
            )
        return common


def poly1305_forgery_bound(message_bytes: int) -> float:
    """Forgery probability of one-time Poly1305 on an L-byte message (Bernstein 2005, Thm 3.3)."""
    return 8.0 * math.ceil(max(message_bytes, 1) / 16) / 2.0**106


def _transcript(a_to_b: list[bytes], b_to_a: list[bytes]) -> bytes:
    """The authenticated message of a session: lengths, Alice's frames, then Bob's frames."""
    head = struct.pack(">QQ", sum(map(len, a_to_b)), sum(map(len, b_to_a)))
    return b"".join([head, *a_to_b, *b_to_a])


def _verdict_message(kind: MessageKind, context: bytes) -> bytes:
    return _VERDICT_LABEL + struct.pack(">H", int(kind)) + context


def poly1305_tag(key: OneTimeKey, data: bytes) -> bytes:
    """Poly1305 tag of ``data`` under a one-time key."""
    mac = Poly1305(key.key)
    mac.update(data)
    return mac.finalize()


class AuthenticatedChannel:
    """A channel with sequence numbers, a keyed handshake and a Wegman-Carter commit.

    ``role`` is ``"alice"`` or ``"bob"``. Alice starts a session with :meth:`open_session`, Bob
    answers her HELLO with :meth:`accept_session`; both end it with :meth:`commit`.
    """

    def __init__(
        self,
        channel: Channel,
        pool: AuthKeyPool,
        role: str,
        recv_timeout_s: float = DEFAULT_RECV_TIMEOUT_S,
    ) -> None:
        if role not in _ROLES:
            raise ValueError(f"role must be 'alice' or 'bob', got {role!r}")
        if not recv_timeout_s > 0:
            raise ValueError(f"recv_timeout_s must be > 0, got {recv_timeout_s}")
        self.channel = channel
        self.pool = pool
        self.role = role
        self.recv_timeout_s = recv_timeout_s
        self._send_seq = 0
        self._recv_seq = 0
        self._sent: list[bytes] = []
        self._received: list[bytes] = []
        self._keys: list[OneTimeKey] | None = None
        self.peer_hello: Message | None = None
        self.round_trips = 0
        self._last_was_send = False
        self.bytes_sent = 0
        self.bytes_received = 0
        self.eps_auth = 0.0

    # -- framing ------------------------------------------------------------------------------

    async def send(self, message: Message) -> None:
        """Send a message as part of the authenticated transcript."""
        frame = encode_message(message, self._send_seq)
        self._send_seq += 1
        self._sent.append(frame)
        self.bytes_sent += len(frame)
        self._last_was_send = True
        await self.channel.send_frame(frame)

    async def _recv_message(self, *expected: MessageKind) -> tuple[Message, bytes]:
        """Next frame within the deadline and size cap, decoded, in sequence; ABORT raises."""
        try:
            frame = await asyncio.wait_for(
                self.channel.recv_frame(frame_cap(expected)), self.recv_timeout_s
            )
        except TimeoutError:
            raise ProtocolError(
                f"no message from the peer in {self.recv_timeout_s:g} s (--recv-timeout)"
            ) from None
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
        if expected and message.kind not in expected:
            names = "/".join(k.name for k in expected)
            raise ProtocolError(f"unexpected {message.kind.name} message, expected {names}")
        return message, frame

    async def recv(self, *expected: MessageKind) -> Message:
        """Receive the next message of the transcript; it must be of an expected kind."""
        message, frame = await self._recv_message(*expected)
        self._received.append(frame)
        return message

    async def request(self, message: Message, *expected: MessageKind) -> Message:
        """Send and wait for the reply: one round trip."""
        await self.send(message)
        return await self.recv(*expected)

    # -- handshake ----------------------------------------------------------------------------

    def _auth_fields(self) -> dict[str, FieldValue]:
        return {**self.pool.session_fields(), "nonce": secrets.token_hex(NONCE_BYTES)}

    def _agree(self, peer: Message) -> None:
        """Check the peer's secret and pool, then reserve (persist) the session's slot."""
        theirs = peer.field_str("psk_fingerprint")
        if theirs != self.pool.fingerprint:
            raise AuthenticationError(
                f"the pre-shared secrets differ (fingerprint {self.pool.fingerprint} here, "
                f"{theirs} at the peer): both ends must start from the same secret file"
            )
        nonce = peer.field_str("nonce")
        if len(nonce) != 2 * NONCE_BYTES:
            raise ProtocolError(f"{peer.kind.name}: bad nonce")
        peer_slot = peer.field_int("auth_slot")
        if peer_slot < 0:
            raise ProtocolError(f"{peer.kind.name}: negative auth_slot")
        if peer_slot > self.pool.next_slot + MAX_SLOT_SKEW:
            raise AuthenticationError(
                f"authentication pools out of step: the peer's next session slot {peer_slot} is "
                f"more than {MAX_SLOT_SKEW} ahead of this end's {self.pool.next_slot} (a forged "
                "HELLO would otherwise burn the pool); " + REKEY_HINT
            )
        shared = self.pool.shared_segments(peer)
        self.peer_hello = peer
        self._keys = self.pool.reserve(max(peer_slot, self.pool.next_slot), shared)

    async def open_session(self, fields: dict[str, FieldValue]) -> Message:
        """Alice: send HELLO (``fields`` plus the pool's), receive and check Bob's HELLO_ACK."""
        await self.send(Message(MessageKind.HELLO, fields={**fields, **self._auth_fields()}))
        ack = await self.recv(MessageKind.HELLO_ACK)
        self._agree(ack)
        return ack

    async def accept_session(self, hello: Message, fields: dict[str, FieldValue]) -> None:
        """Bob: check Alice's HELLO, reserve the slot, answer with HELLO_ACK."""
        own = self._auth_fields()  # announced before reserving: the slot Bob had free
        self._agree(hello)
        await self.send(Message(MessageKind.HELLO_ACK, fields={**fields, **own}))

    # -- closing ------------------------------------------------------------------------------

    async def commit(self, context: bytes, on_authentic: Callable[[], None]) -> bool:
        """Close a key block: both transcript tags plus Alice's authenticated verdict.

        ``on_authentic`` runs once the peer's tag has verified and before this end reveals
        anything more (Alice: before CONFIRM; Bob: before his own tag): it persists what this end
        keeps. Alice: raises if Bob's tag does not verify (after an authenticated ABORT), else
        sends an authenticated CONFIRM and returns True. Bob: raises if Alice's tag does not
        verify or an authentic ABORT follows his tag; returns True on an authentic CONFIRM and
        False when the closing message was missing, modified or forged (his block then stays
        pending). ``context`` (the block ID) is bound into the verdict tag.
        """
        if self._keys is None:
            raise ProtocolError("commit before the handshake")
        key_ab, key_ba, key_verdict = self._keys
        self._keys = None  # one commit per slot
        if self.role == "alice":
            transcript = _transcript(self._sent, self._received)
        else:
            transcript = _transcript(self._received, self._sent)
        self.eps_auth = 2 * poly1305_forgery_bound(len(transcript)) + poly1305_forgery_bound(
            len(_verdict_message(MessageKind.CONFIRM, context))
        )
        if self.role == "alice":
            await self._send_tag(self._sign(key_ab, transcript))
            try:
                self._check_tag(await self._recv_tag(), key_ba, transcript)
            except PeerAbortedError:
                raise
            except ProtocolError as exc:
                with contextlib.suppress(ProtocolError):
                    await self._send_verdict(
                        MessageKind.ABORT, key_verdict, context, f"closing tag rejected: {exc}"
                    )
                raise
            on_authentic()
            with contextlib.suppress(ProtocolError):  # best effort: Bob's block stays pending
                await self._send_verdict(MessageKind.CONFIRM, key_verdict, context)
            return True
        self._check_tag(await self._recv_tag(), key_ab, transcript)
        on_authentic()
        await self._send_tag(self._sign(key_ba, transcript))
        try:
            frame = await asyncio.wait_for(
                self.channel.recv_frame(frame_cap((MessageKind.CONFIRM,))), self.recv_timeout_s
            )
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
        expected = poly1305_tag(key_verdict, _verdict_message(message.kind, context))
        if not hmac.compare_digest(tag, expected):
            return False
        if message.kind == MessageKind.ABORT:
            raise AuthenticAbortError(str(_peer_aborted(message)))
        return True

    def _sign(self, key: OneTimeKey, data: bytes) -> bytes:
        """The tag this end reveals under ``key`` (the one place a one-time key is spent)."""
        return poly1305_tag(key, data)

    @staticmethod
    def _check_tag(received: bytes, key: OneTimeKey, data: bytes) -> None:
        if not hmac.compare_digest(received, poly1305_tag(key, data)):
            raise AuthenticationError("transcript authentication failed: messages were modified")

    async def _send_tag(self, tag: bytes) -> None:
        await self._send_unauthenticated(
            Message(MessageKind.AUTH_TAG, arrays={"tag": _bytes_array(tag)})
        )

    async def _recv_tag(self) -> bytes:
        message, _frame = await self._recv_message(MessageKind.AUTH_TAG)
        return message.array("tag", "uint8", 16).tobytes()

    async def _send_verdict(
        self, kind: MessageKind, key: OneTimeKey, context: bytes, reason: str | None = None
    ) -> None:
        fields: dict[str, FieldValue] = {} if reason is None else {"reason": reason}
        tag = self._sign(key, _verdict_message(kind, context))
        await self._send_unauthenticated(
            Message(kind, fields=fields, arrays={"tag": _bytes_array(tag)})
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


def _bytes_array(data: bytes) -> NDArray[np.uint8]:
    return np.frombuffer(data, dtype=np.uint8).copy()


def _peer_aborted(message: Message) -> PeerAbortedError:
    reason = message.fields.get("reason")
    text = reason[:300] if isinstance(reason, str) else "no reason"
    return PeerAbortedError(f"peer aborted: {text}")
