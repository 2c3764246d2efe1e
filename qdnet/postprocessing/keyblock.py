"""Key blocks: the secret output of post-processing, handed to the key-management layer.

File format (one JSON document per block, ``<block_id>.json``, format version 2)::

    {"format_version": 2, "block_id": "0b6f...-uuid4", "link_name": "telecom-dot-bb84",
     "created_utc": "2026-11-26T10:00:00+00:00", "length_bits": 8192, "protocol": "bb84",
     "eps_sec": 1e-10, "eps_cor": 1e-15, "eps_auth": 2.1e-28, "eps_total": 1.00001e-10,
     "qber": 0.021, "simulated": true, "key_b64": "..."}

``eps_total = eps_sec + eps_cor + eps_auth``: the block is eps_total-secure in the composable
sense (secrecy of the finite-key analysis, correctness of the verification hash, and the
probability that a forged Wegman-Carter tag went unnoticed). ``simulated`` is true for keys
distilled from Monte Carlo records: anyone with the run's seed can recompute them, so they are
*not secret*. Version 1 (no ``simulated``/``eps_auth``/``eps_total``) is still read.

Blocks are written atomically (temporary file, fsync, rename, directory fsync) so a crash leaves
either the whole block or nothing. The key bytes never appear in ``repr``/``str`` or in logs.

An endpoint's key folder (:class:`KeyFolder`)::

    KEYS/<block_id>.json          kept blocks: the only files a KMS ingests (``*.json``, top level)
    KEYS/pending/<block_id>.json  Bob's block without Alice's authentic CONFIRM (never ingested)
    KEYS/auth/pool.json           the authentication pool (secret, mode 0600)

A pending block is moved into ``KEYS`` or deleted by a later authenticated session (see
:meth:`KeyFolder.resolve_pending`). Every step is ordered so that a crash at any point leaves a
state that :meth:`KeyFolder.open` completes: the pool file decides (a pending file whose block is
a pool segment is moved in, the one the pool holds as pending stays, any other is deleted).
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from qdnet.files import atomic_file, fsync_directory
from qdnet.transport.authentication import AuthKeyPool, PoolError

KEYBLOCK_FORMAT_VERSION = 2
#: Versions :meth:`KeyBlock.from_json` reads.
READABLE_FORMAT_VERSIONS = (1, 2)


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
    #: True when the raw records came from a simulation (the key is then not secret).
    simulated: bool = True
    #: Probability that a forged authentication tag went unnoticed in the block's session.
    eps_auth: float = 0.0

    @property
    def eps_total(self) -> float:
        """eps_sec + eps_cor + eps_auth: the block's overall security parameter."""
        return self.eps_sec + self.eps_cor + self.eps_auth

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
            "eps_auth": self.eps_auth,
            "eps_total": self.eps_total,
            "qber": self.qber,
            "simulated": self.simulated,
            "key_b64": base64.b64encode(self.key).decode("ascii"),
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> KeyBlock:
        """Parse the on-disk document; raises ``ValueError`` naming the bad field."""
        version = raw.get("format_version")
        if version not in READABLE_FORMAT_VERSIONS:
            raise ValueError(
                f"key block format_version {version!r}, expected one of {READABLE_FORMAT_VERSIONS}"
            )
        try:
            v2: dict[str, Any] = (
                {"simulated": bool(raw["simulated"]), "eps_auth": float(raw["eps_auth"])}
                if version == 2
                else {}
            )
            return cls(
                **v2,
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
    """Write ``<block_id>.json`` atomically (tmp + fsync + rename + directory fsync), mode 0600."""
    target = Path(directory) / f"{block.block_id}.json"
    with atomic_file(target, 0o600, text=True) as handle:
        json.dump(block.to_json(), handle)
    return target


def read_key_block(path: str | os.PathLike[str]) -> KeyBlock:
    """Read one block file."""
    return KeyBlock.from_json(json.loads(Path(path).read_text()))


def iter_key_blocks(directory: str | os.PathLike[str]) -> Iterator[KeyBlock]:
    """All complete blocks in a folder, oldest first (temporary files are skipped)."""
    blocks = [read_key_block(p) for p in Path(directory).glob("*.json")]
    yield from sorted(blocks, key=lambda b: (b.created_utc, b.block_id))


class KeyFolder:
    """One endpoint's key folder: kept blocks, pending blocks and the authentication pool."""

    POOL = Path("auth") / "pool.json"
    PENDING = "pending"

    def __init__(self, directory: Path, pool: AuthKeyPool) -> None:
        self.directory = directory
        self.pool = pool

    @classmethod
    def open(cls, directory: str | os.PathLike[str], psk: Path | None, role: str) -> KeyFolder:
        """Open ``directory`` for ``role``; the first time, start its pool from ``psk``.

        Completes whatever a crash interrupted (see the module docstring).
        """
        folder = Path(directory)
        state = folder / cls.POOL
        if state.is_file():
            pool = AuthKeyPool.open(state)
            if pool.role != role:
                raise PoolError(f"{folder}: holds {pool.role}'s authentication pool, not {role}'s")
        elif psk is None:
            raise PoolError(
                f"{folder} has no authentication pool yet: give --psk FILE, a pre-shared secret "
                "written by `qdnet auth init FILE` and copied to both hosts"
            )
        else:
            pool = AuthKeyPool.start(state, psk, role)
        keys = cls(folder, pool)
        keys.recover()
        return keys

    @property
    def pending_dir(self) -> Path:
        """``KEYS/pending``."""
        return self.directory / self.PENDING

    def blocks(self) -> list[KeyBlock]:
        """Kept blocks (what a KMS may ingest)."""
        return list(iter_key_blocks(self.directory)) if self.directory.is_dir() else []

    def pending(self) -> list[KeyBlock]:
        """Blocks waiting for the peer's confirmation."""
        return list(iter_key_blocks(self.pending_dir)) if self.pending_dir.is_dir() else []

    def recover(self) -> None:
        """Finish a step a crash interrupted: the pool file says which pending files are kept."""
        if not self.pending_dir.is_dir():
            return
        kept = set(self.pool.segment_ids)
        for path in self.pending_dir.glob("*.json"):
            if path.stem in kept:
                self._move_in(path.stem)
            elif path.stem != self.pool.pending_id:
                path.unlink()
        fsync_directory(self.pending_dir)

    def _move_in(self, block_id: str) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        os.replace(self.pending_dir / f"{block_id}.json", self.directory / f"{block_id}.json")
        fsync_directory(self.pending_dir)
        fsync_directory(self.directory)

    def keep(self, block: KeyBlock, refill: bytes) -> None:
        """Alice keeps a block (Bob's tag verified): pending file, pool segment, move in."""
        write_key_block(self.pending_dir, block)
        self.pool.add_segment(block.block_id, refill)
        self._move_in(block.block_id)

    def hold(self, block: KeyBlock, refill: bytes) -> None:
        """Bob holds a block pending (Alice's tag verified, before his own tag is revealed)."""
        write_key_block(self.pending_dir, block)
        self.pool.set_pending(block.block_id, refill)

    def confirm(self) -> str:
        """Alice confirmed the pending block: its refill joins the pool, the block moves in."""
        block_id = self.pool.confirm_pending()
        self._move_in(block_id)
        return block_id

    def discard(self) -> str:
        """Alice did not keep the pending block: forget it."""
        block_id = self.pool.drop_pending()
        (self.pending_dir / f"{block_id}.json").unlink(missing_ok=True)
        fsync_directory(self.pending_dir)
        return block_id

    def resolve_pending(self, peer_segments: int, peer_tail: list[str]) -> str | None:
        """Bob, after an *authentic* HELLO of Alice: confirm the pending block if her pool holds
        it (her last segment, one more than Bob's), else discard it. Returns what was done."""
        pending = self.pool.pending_id
        if pending is None:
            return None
        if peer_segments == len(self.pool.segment_ids) + 1 and peer_tail[-1:] == [pending]:
            self.confirm()
            return f"confirmed pending block {pending}"
        self.discard()
        return f"discarded pending block {pending}"
