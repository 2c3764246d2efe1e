"""Classical channel between the two endpoints: framed messages, TCP and in-memory transports,
and Wegman-Carter transcript authentication with one-time keys from a key pool."""

from qdnet.transport.authentication import AuthenticatedChannel, AuthKeyPool
from qdnet.transport.channel import Channel, MemoryChannel, TcpChannel, memory_pair
from qdnet.transport.messages import (
    PROTOCOL_VERSION,
    Message,
    MessageKind,
    ProtocolError,
    decode_message,
    encode_message,
)

__all__ = [
    "PROTOCOL_VERSION",
    "AuthKeyPool",
    "AuthenticatedChannel",
    "Channel",
    "MemoryChannel",
    "Message",
    "MessageKind",
    "ProtocolError",
    "TcpChannel",
    "decode_message",
    "encode_message",
    "memory_pair",
]
