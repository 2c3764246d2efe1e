"""Key blocks: the secret output of post-processing, handed to the key-management layer.

File format (one JSON document per block, ``<block_id>.json``, format version 1)::

    {"format_version": 1, "block_id": "0b6f...-uuid4", "link_name": "telecom-dot-bb84",
     "created_utc": "2026-11-26T10:00:00+00:00", "length_bits": 8192, "protocol": "bb84",
     "eps_sec": 1e-10, "eps_cor": 1e-15, "qber": 0.021, "key_b64": "..."}

Blocks are written atomically (temporary file, fsync, rename) so a crash leaves either the whole
block or nothing. The key bytes never appear in ``repr``/``str`` or in logs.
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

KEYBLOCK_FORMAT_VERSION = 1


@dataclass(frozen=True)
class KeyBlock:
    """A block of identical secret key held by both endpoints of a link."""

    block_id: str
    link_name: str
    key: bytes = field(repr=False)
    length_bits: int
    protocol: str
    eps_sec: float
    eps_cor: float
    qber: float
    created_utc: str = field(default_factory=lambda: datetime.now(UTC).isoformat())

    def __post_init__(self) -> None:
        if self.length_bits <= 0 or self.length_bits % 8:
            raise ValueError(
                f"KeyBlock.length_bits must be a positive multiple of 8, got {self.length_bits}"
            )
        if len(self.key) * 8 != self.length_bits:
            raise ValueError(
                f"KeyBlock.key holds {len(self.key) * 8} bits, length_bits says {self.length_bits}"
            )

    def to_json(self) -> dict[str, Any]:
        """The on-disk JSON document (contains the key: never log it)."""
        return {
            "format_version": KEYBLOCK_FORMAT_VERSION,
            "block_id": self.block_id,
            "link_name": self.link_name,
            "created_utc": self.created_utc,
            "length_bits": self.length_bits,
            "protocol": self.protocol,
            "eps_sec": self.eps_sec,
            "eps_cor": self.eps_cor,
            "qber": self.qber,
            "key_b64": base64.b64encode(self.key).decode("ascii"),
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> KeyBlock:
        """Parse the on-disk document; raises ``ValueError`` naming the bad field."""
        if raw.get("format_version") != KEYBLOCK_FORMAT_VERSION:
            raise ValueError(
                f"key block format_version {raw.get('format_version')!r}, "
                f"expected {KEYBLOCK_FORMAT_VERSION}"
            )
        try:
            return cls(
                block_id=str(raw["block_id"]),
                link_name=str(raw["link_name"]),
                created_utc=str(raw["created_utc"]),
                length_bits=int(raw["length_bits"]),
                protocol=str(raw["protocol"]),
                eps_sec=float(raw["eps_sec"]),
                eps_cor=float(raw["eps_cor"]),
                qber=float(raw["qber"]),
                key=base64.b64decode(raw["key_b64"], validate=True),
            )
        except KeyError as missing:
            raise ValueError(f"key block is missing field {missing}") from None


def write_key_block(directory: str | os.PathLike[str], block: KeyBlock) -> Path:
    """Write ``<block_id>.json`` atomically (tmp + fsync + rename + directory fsync)."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"{block.block_id}.json"
    fd, tmp = tempfile.mkstemp(dir=out, prefix=".keyblock.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(block.to_json(), handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(out, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return target


def read_key_block(path: str | os.PathLike[str]) -> KeyBlock:
    """Read one block file."""
    return KeyBlock.from_json(json.loads(Path(path).read_text()))


def iter_key_blocks(directory: str | os.PathLike[str]) -> Iterator[KeyBlock]:
    """All complete blocks in a folder, oldest first (temporary files are skipped)."""
    blocks = [read_key_block(p) for p in Path(directory).glob("*.json")]
    yield from sorted(blocks, key=lambda b: (b.created_utc, b.block_id))
