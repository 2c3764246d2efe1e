"""Key blocks as the KMS takes them in: which files of a folder, and what the store keeps.

The file format (versions 1 and 2) is read by :func:`qdnet.postprocessing.keyblock.read_key_block`.
Version 2 adds ``simulated`` (the key came from a simulated link and is NOT secret), which the
KMS keeps with every byte of the block and shows to SAEs (``status_extension``,
``key_container_extension``). A version-1 block counts as simulated, as the reader has it: its
provenance is not recorded, and qdnet wrote version-1 blocks only from simulated records.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from qdnet.postprocessing.keyblock import KeyBlock, read_key_block


@dataclass(frozen=True)
class IngestBlock:
    """One key block ready for the store (the key never appears in ``repr``)."""

    block_id: str
    link_name: str
    created_utc: str
    protocol: str
    eps_sec: float
    qber: float
    key: bytes = field(repr=False)
    simulated: bool = False

    @classmethod
    def of(cls, block: KeyBlock) -> IngestBlock:
        """From a parsed key block (format 1 or 2)."""
        return cls(
            block_id=block.block_id,
            link_name=block.link_name,
            created_utc=block.created_utc,
            protocol=block.protocol,
            eps_sec=float(block.eps_sec),
            qber=float(block.qber),
            key=bytes(block.key),
            simulated=bool(getattr(block, "simulated", True)),
        )


def read_block(path: str | os.PathLike[str]) -> IngestBlock:
    """Read one block file (``ValueError`` for a malformed one, ``OSError`` if unreadable)."""
    try:
        return IngestBlock.of(read_key_block(path))
    except RecursionError:
        raise ValueError("key block is nested too deeply") from None


def block_files(folder: str | os.PathLike[str]) -> list[Path]:
    """The block files directly in ``folder``, sorted; never a subfolder such as ``pending/``
    (blocks the post-processing has not confirmed yet), a link or a temporary file."""
    return sorted(
        p
        for p in Path(folder).glob("*.json")
        if p.is_file() and not p.is_symlink() and not p.name.startswith(".")
    )
