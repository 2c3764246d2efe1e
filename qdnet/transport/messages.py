"""Versioned, length-prefixed messages.

Wire format of one frame (all integers big-endian)::

    u32 length of the rest | u8 version | u16 kind | u32 sequence number
    | u32 header length | header (UTF-8 JSON) | array payloads back to back

The JSON header holds scalar ``fields`` and a list of array descriptors ``[name, dtype, shape]``;
the raw array bytes follow in the same order. Decoding is strict: an unknown version or kind, a
header that does not parse (or nests deeper than :data:`MAX_HEADER_DEPTH`), array descriptors with
a bad name, dtype or shape (negative, overflowing, more than :data:`MAX_ARRAY_DIMS` axes), arrays
whose sizes do not add up to the frame, or trailing bytes all raise :class:`ProtocolError` -- and
only that: every decode failure is a :class:`ProtocolError`, which the endpoints turn into a clean
abort.

Frame size caps. A receiver knows which kinds may come next and reads no frame longer than the
largest of their caps (:func:`frame_cap`): :data:`SMALL_FRAME_BYTES` for the handshake, tags and
verdicts, :data:`MAX_FRAME_BYTES` for the bulk messages. The bulk cap is what a 1e9-detection run
needs: sifting is sent in chunks of at most ``qdnet.postprocessing.session.SIFT_CHUNK`` detections
(9 bytes each: 36 MiB), and the largest single message is the Toeplitz seed of privacy
amplification (n + m - 1 bits, 125 MB for n = 6e8 key bits and m = 4e8), so 256 MiB.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

import numpy as np
from numpy.typing import NDArray

PROTOCOL_VERSION = 1
#: Largest frame of the bulk message kinds (sifting chunks, test bits, EC, PA seed).
MAX_FRAME_BYTES = 1 << 28
#: Largest frame of the handshake, tag, verdict, verification and abort messages.
SMALL_FRAME_BYTES = 1 << 16
#: Deepest JSON nesting a header may have (the protocol uses 2 levels).
MAX_HEADER_DEPTH = 8
#: Largest JSON header (LDPC lists one syndrome count per frame: 32 000 frames at 6.4e8 bits).
MAX_HEADER_BYTES = 1 << 20
#: Most brackets a header may hold (the protocol uses a few per message).
MAX_HEADER_BRACKETS = 256
#: Most axes an array may have (the protocol sends 1-D arrays).
MAX_ARRAY_DIMS = 4
_PREFIX = struct.Struct(">I")
_HEAD = struct.Struct(">BHII")
_ALLOWED_DTYPES = frozenset({"uint8", "int8", "uint16", "int32", "uint32", "int64", "float64"})

Scalar = int | float | str | bool | None
FieldValue = Scalar | list[Any] | dict[str, Any]


class ProtocolError(Exception):
    """A message was malformed, unexpected, replayed, reordered, truncated or not authentic."""


class MessageKind(IntEnum):
    """Every message type the post-processing protocol uses."""

    HELLO = 1
    HELLO_ACK = 2
    SIFT_REQUEST = 3
    SIFT_REPLY = 4
    TEST_BITS = 5
    EC_START = 10
    EC_QUESTIONS = 11
    EC_ANSWERS = 12
    EC_SYNDROME = 13
    EC_RESULT = 14
    EC_REVEAL_REQUEST = 15
    EC_REVEAL = 16
    VERIFY_HASH = 20
    VERIFY_RESULT = 21
    PA_SEED = 30
    AUTH_TAG = 40
    CONFIRM = 41
    ABORT = 50


_SMALL_KINDS = frozenset(
    {
        MessageKind.HELLO,
        MessageKind.HELLO_ACK,
        MessageKind.VERIFY_HASH,
        MessageKind.VERIFY_RESULT,
        MessageKind.AUTH_TAG,
        MessageKind.CONFIRM,
        MessageKind.ABORT,
    }
)


def frame_cap(kinds: tuple[MessageKind, ...]) -> int:
    """Largest frame a receiver expecting one of ``kinds`` reads (none given: the bulk cap)."""
    if kinds and all(k in _SMALL_KINDS for k in kinds):
        return SMALL_FRAME_BYTES
    return MAX_FRAME_BYTES


@dataclass(frozen=True)
class Message:
    """One protocol message: a kind, scalar fields and NumPy arrays. ``seq`` is set on sending."""

    kind: MessageKind
    fields: dict[str, FieldValue] = field(default_factory=dict)
    arrays: dict[str, NDArray[Any]] = field(default_factory=dict)
    seq: int = 0

    def field_int(self, name: str) -> int:
        """An integer field, or :class:`ProtocolError` naming it."""
        value = self.fields.get(name)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ProtocolError(f"{self.kind.name}: field {name!r} missing or not an integer")
        return value

    def field_float(self, name: str) -> float:
        """A float field (integers accepted), or :class:`ProtocolError`."""
        value = self.fields.get(name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ProtocolError(f"{self.kind.name}: field {name!r} missing or not a number")
        return float(value)

    def field_str(self, name: str) -> str:
        """A string field, or :class:`ProtocolError`."""
        value = self.fields.get(name)
        if not isinstance(value, str):
            raise ProtocolError(f"{self.kind.name}: field {name!r} missing or not a string")
        return value

    def array(self, name: str, dtype: str, length: int | None = None) -> NDArray[Any]:
        """A 1-D array of the given dtype (and length), or :class:`ProtocolError`."""
        arr = self.arrays.get(name)
        if arr is None or arr.dtype != np.dtype(dtype) or arr.ndim != 1:
            raise ProtocolError(f"{self.kind.name}: array {name!r} missing or not 1-D {dtype}")
        if length is not None and len(arr) != length:
            raise ProtocolError(
                f"{self.kind.name}: array {name!r} has {len(arr)} entries, expected {length}"
            )
        return arr


def encode_message(message: Message, seq: int) -> bytes:
    """Serialise ``message`` with sequence number ``seq`` into one length-prefixed frame."""
    specs = []
    blobs = []
    for name, arr in message.arrays.items():
        a = np.ascontiguousarray(arr)
        if a.dtype.name not in _ALLOWED_DTYPES:
            raise ValueError(f"array {name!r}: dtype {a.dtype} not allowed on the wire")
        specs.append([name, a.dtype.name, list(a.shape)])
        blobs.append(a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes())
    header = json.dumps({"fields": message.fields, "arrays": specs}, separators=(",", ":")).encode()
    head = _HEAD.pack(PROTOCOL_VERSION, int(message.kind), seq, len(header))
    body = head + header + b"".join(blobs)
    if len(body) > MAX_FRAME_BYTES:
        raise ValueError(f"message of {len(body)} bytes exceeds the {MAX_FRAME_BYTES}-byte limit")
    return _PREFIX.pack(len(body)) + body


def frame_length(prefix: bytes, cap: int = MAX_FRAME_BYTES) -> int:
    """Length of the frame body announced by a 4-byte prefix (checked against ``cap``)."""
    if len(prefix) != _PREFIX.size:
        raise ProtocolError("truncated length prefix")
    (length,) = _PREFIX.unpack(prefix)
    if length < _HEAD.size or length > cap:
        raise ProtocolError(f"frame length {length} out of range (at most {cap} bytes here)")
    return int(length)


def _depth(value: Any, limit: int) -> int:
    """Nesting depth of a parsed JSON value, stopping once it exceeds ``limit``."""
    stack = [(value, 1)]
    deepest = 0
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if deepest > limit:
            return deepest
        if isinstance(item, dict):
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, level + 1) for v in item)
    return deepest


def decode_message(frame: bytes) -> Message:
    """Parse one whole frame (prefix included); strict, raises :class:`ProtocolError` only."""
    try:
        return _decode(frame)
    except ProtocolError:
        raise
    except Exception as exc:  # any other failure of a hostile frame is a protocol error too
        raise ProtocolError(f"malformed frame: {type(exc).__name__}") from None


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not allowed in a header")


def _decode(frame: bytes) -> Message:
    length = frame_length(frame[: _PREFIX.size])
    body = frame[_PREFIX.size :]
    if len(body) != length:
        raise ProtocolError(f"frame announces {length} bytes but holds {len(body)}")
    version, kind_raw, seq, header_len = _HEAD.unpack_from(body)
    if version != PROTOCOL_VERSION:
        raise ProtocolError(f"protocol version {version}, expected {PROTOCOL_VERSION}")
    try:
        kind = MessageKind(kind_raw)
    except ValueError:
        raise ProtocolError(f"unknown message kind {kind_raw}") from None
    start = _HEAD.size
    if start + header_len > len(body):
        raise ProtocolError("header runs past the end of the frame")
    raw_header = body[start : start + header_len]
    if header_len > MAX_HEADER_BYTES:
        raise ProtocolError(f"header of {header_len} bytes exceeds {MAX_HEADER_BYTES}")
    # json.loads recurses once per bracket: bound the brackets before parsing.
    if raw_header.count(b"[") + raw_header.count(b"{") > MAX_HEADER_BRACKETS:
        raise ProtocolError(f"malformed header: more than {MAX_HEADER_BRACKETS} brackets")
    try:
        header = json.loads(raw_header.decode(), parse_constant=_no_constant)
        fields = header["fields"]
        specs = header["arrays"]
        if not isinstance(fields, dict) or not isinstance(specs, list):
            raise TypeError("bad header layout")
    except (UnicodeDecodeError, ValueError, KeyError, TypeError, RecursionError) as exc:
        raise ProtocolError(f"malformed header: {type(exc).__name__}") from None
    if _depth(header, MAX_HEADER_DEPTH) > MAX_HEADER_DEPTH:
        raise ProtocolError(f"malformed header: nested deeper than {MAX_HEADER_DEPTH} levels")
    offset = start + header_len
    arrays: dict[str, NDArray[Any]] = {}
    for spec in specs:
        try:
            name, dtype_name, shape = spec
            if not isinstance(name, str) or name in arrays or dtype_name not in _ALLOWED_DTYPES:
                raise ValueError(dtype_name)
            dtype = np.dtype(dtype_name).newbyteorder("<")
            if not isinstance(shape, list) or len(shape) > MAX_ARRAY_DIMS:
                raise ValueError(shape)
            if not all(type(s) is int and 0 <= s <= len(body) for s in shape):
                raise ValueError(shape)
            shape_t = tuple(shape)
            count = math.prod(shape_t)  # exact integer: no overflow
        except (ValueError, TypeError):
            raise ProtocolError("malformed array descriptor") from None
        nbytes = count * dtype.itemsize
        if offset + nbytes > len(body):
            raise ProtocolError(f"array {name!r} runs past the end of the frame")
        arrays[str(name)] = (
            np.frombuffer(body, dtype=dtype, count=count, offset=offset)
            .astype(dtype.newbyteorder("="))
            .reshape(shape_t)
        )
        offset += nbytes
    if offset != len(body):
        raise ProtocolError(f"{len(body) - offset} trailing bytes after the last array")
    return Message(kind=kind, fields=fields, arrays=arrays, seq=seq)
