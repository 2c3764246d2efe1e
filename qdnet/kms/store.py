"""Key store of one KMS: SQLAlchemy 2 Core on a SQLite file (default) or PostgreSQL (by URL).

Model
-----
* A **block** (from post-processing, identical at both KMS of a link) is cut into fixed
  **segments** of :data:`SEGMENT_BYTES`. A segment row holds only the bytes not yet consumed:
  ``data`` is the slice ``[start + lo, start + length - hi)`` of the block. Consumed bytes are
  deleted from the database as they are consumed, and an exhausted segment row is deleted.
* The two KMS of a link carve from opposite ends so they never need a lock across the link: the
  *leader* (smaller KME ID) consumes from the front of the pool (``lo``), the *follower* from the
  back (``hi``). Each allocation is sent to the peer, which applies the same byte ranges to its
  own copy and refuses a range that overlaps anything it already consumed (see :mod:`.peer`).
* A **reserved key** (``kms_keys`` + ``kms_key_slaves``) is a key waiting for its slave SAE(s):
  ``dec_keys`` hands it to each slave once and deletes it when the last slave has it.
* Block IDs are remembered after their bytes are gone, so re-ingesting a block never brings
  consumed key material back.

Every state change is one database transaction, so a crash at any moment leaves either the
old state or the new one: no key is lost silently and none is handed out twice.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Engine,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    and_,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Connection

from qdnet.postprocessing.keyblock import KeyBlock

SEGMENT_BYTES = 4096
"""Segment size: both KMS of a link must use the same value (it is part of the peer protocol)."""

metadata = MetaData()

blocks = Table(
    "kms_blocks",
    metadata,
    Column("block_id", String(128), primary_key=True),
    Column("link_name", String(256), nullable=False),
    Column("protocol", String(64), nullable=False),
    Column("length_bytes", Integer, nullable=False),
    Column("created_utc", String(64), nullable=False),
    Column("qber", Float, nullable=False),
    Column("eps_sec", Float, nullable=False),
    Column("ingested_at", Float, nullable=False),
    Column("shared", Boolean, nullable=False, default=False),
)

segments = Table(
    "kms_segments",
    metadata,
    Column("block_id", String(128), primary_key=True),
    Column("idx", Integer, primary_key=True),
    Column("sort_key", String(256), nullable=False, index=True),
    Column("start", Integer, nullable=False),
    Column("length", Integer, nullable=False),
    Column("lo", Integer, nullable=False),
    Column("hi", Integer, nullable=False),
    Column("shared", Boolean, nullable=False, index=True),
    Column("data", LargeBinary, nullable=False),
)

pool_order = Index("ix_kms_segments_pool", segments.c.shared, segments.c.sort_key, segments.c.idx)
"""Carving walks this index from either end: no sort, no scan of the pool."""

keys = Table(
    "kms_keys",
    metadata,
    Column("key_id", String(36), primary_key=True),
    Column("master_sae", String(256), nullable=False),
    Column("size_bits", Integer, nullable=False),
    Column("material", LargeBinary, nullable=False),
    Column("created_at", Float, nullable=False),
)

key_slaves = Table(
    "kms_key_slaves",
    metadata,
    Column("key_id", String(36), primary_key=True),
    Column("sae_id", String(256), primary_key=True),
)


@dataclass(frozen=True)
class Piece:
    """A byte range of one block: ``[offset, offset + length)``."""

    block_id: str
    offset: int
    length: int

    def to_json(self) -> list[Any]:
        """Compact wire form ``[block_id, offset, length]``."""
        return [self.block_id, self.offset, self.length]

    @classmethod
    def from_json(cls, raw: Any) -> Piece:
        """Parse the wire form; raises ``ValueError`` on anything else."""
        if (
            not isinstance(raw, list)
            or len(raw) != 3
            or not isinstance(raw[0], str)
            or not all(isinstance(x, int) and not isinstance(x, bool) for x in raw[1:])
        ):
            raise ValueError("piece must be [block_id, offset, length]")
        return cls(raw[0], raw[1], raw[2])


@dataclass
class Allocation:
    """Bytes carved from the pool for one request, with where they came from."""

    pieces: list[Piece]
    material: bytes = field(repr=False)


@dataclass(frozen=True)
class StoredKey:
    """A key handed out by ``dec_keys``."""

    key_id: str
    material: bytes = field(repr=False)


class TakeOutcome(Enum):
    """Result of :meth:`KeyStore.take_keys`."""

    OK = "ok"
    NOT_FOUND = "not_found"
    UNAUTHORIZED = "unauthorized"


class _RacedError(Exception):
    """Rolls a transaction back when a concurrent call won the race."""


@dataclass
class _Seg:
    block_id: str
    idx: int
    start: int
    length: int
    lo: int
    hi: int
    data: bytes = field(repr=False)
    dirty: bool = False

    @property
    def avail(self) -> int:
        return self.length - self.lo - self.hi


_SEG_COLS = (
    segments.c.block_id,
    segments.c.idx,
    segments.c.start,
    segments.c.length,
    segments.c.lo,
    segments.c.hi,
    segments.c.data,
)


def _seg(row: Any) -> _Seg:
    return _Seg(row[0], row[1], row[2], row[3], row[4], row[5], bytes(row[6]))


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")  # survives a killed process; readers never block
    # FULL: a commit is on disk before the key it hands out leaves (power loss included);
    # NORMAL would only survive a killed process. Commits are per batch, so it costs little.
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite files get WAL mode and a busy timeout."""
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_size=4, max_overflow=4, pool_pre_ping=True)


class KeyStore:
    """All persistent state of one KMS."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self._for_update = not url.startswith("sqlite")
        metadata.create_all(self.engine)
        with self.engine.begin() as conn:  # stores made before the index existed
            pool_order.create(conn, checkfirst=True)

    def close(self) -> None:
        """Release the connection pool."""
        self.engine.dispose()

    # --- ingestion -------------------------------------------------------------------------

    def ingest(self, block: KeyBlock, capacity_bytes: int | None = None) -> bool:
        """Store a block's key in segments; False if the block ID was seen before.

        Raises ``OverflowError`` if storing it would exceed ``capacity_bytes``.
        """
        with self.engine.begin() as conn:
            seen = conn.execute(
                select(blocks.c.block_id).where(blocks.c.block_id == block.block_id)
            ).first()
            if seen is not None:
                return False
            if capacity_bytes is not None:
                held = self._remaining(conn, shared_only=False)
                if held + len(block.key) > capacity_bytes:
                    raise OverflowError("key pool is full (limits.max_key_count)")
            conn.execute(
                insert(blocks).values(
                    block_id=block.block_id,
                    link_name=block.link_name,
                    protocol=block.protocol,
                    length_bytes=len(block.key),
                    created_utc=block.created_utc,
                    qber=block.qber,
                    eps_sec=block.eps_sec,
                    ingested_at=time.time(),
                    shared=False,
                )
            )
            sort_key = f"{block.created_utc}|{block.block_id}"
            rows = []
            for idx, start in enumerate(range(0, len(block.key), SEGMENT_BYTES)):
                chunk = block.key[start : start + SEGMENT_BYTES]
                rows.append(
                    {
                        "block_id": block.block_id,
                        "idx": idx,
                        "sort_key": sort_key,
                        "start": start,
                        "length": len(chunk),
                        "lo": 0,
                        "hi": 0,
                        "shared": False,
                        "data": chunk,
                    }
                )
            conn.execute(insert(segments), rows)
        return True

    def unshared_block_ids(self, limit: int = 1000) -> list[str]:
        """Blocks the peer has not yet confirmed holding."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(blocks.c.block_id)
                .where(blocks.c.shared.is_(False))
                .order_by(blocks.c.created_utc, blocks.c.block_id)
                .limit(limit)
            )
            return [r[0] for r in rows]

    def held_block_ids(self, block_ids: Iterable[str]) -> list[str]:
        """Which of ``block_ids`` this store has ingested (consumed or not)."""
        ids = list(block_ids)
        if not ids:
            return []
        with self.engine.connect() as conn:
            rows = conn.execute(select(blocks.c.block_id).where(blocks.c.block_id.in_(ids)))
            return [r[0] for r in rows]

    def mark_shared(self, block_ids: Iterable[str]) -> None:
        """Record that the peer KMS holds these blocks: their bytes become allocatable."""
        ids = list(block_ids)
        if not ids:
            return
        with self.engine.begin() as conn:
            conn.execute(update(blocks).where(blocks.c.block_id.in_(ids)).values(shared=True))
            conn.execute(update(segments).where(segments.c.block_id.in_(ids)).values(shared=True))

    # --- pool --------------------------------------------------------------------------------

    @staticmethod
    def _remaining(conn: Connection, shared_only: bool) -> int:
        q = select(func.coalesce(func.sum(segments.c.length - segments.c.lo - segments.c.hi), 0))
        if shared_only:
            q = q.where(segments.c.shared.is_(True))
        return int(conn.execute(q).scalar_one())

    def available_bytes(self) -> int:
        """Unconsumed bytes of blocks both KMS hold."""
        with self.engine.connect() as conn:
            return self._remaining(conn, shared_only=True)

    def pool_summary(self) -> dict[str, int]:
        """Counts for status pages and accounting (no key material)."""
        with self.engine.connect() as conn:
            return {
                "blocks": int(conn.execute(select(func.count()).select_from(blocks)).scalar_one()),
                "shared_bytes": self._remaining(conn, shared_only=True),
                "held_bytes": self._remaining(conn, shared_only=False),
                "reserved_keys": int(
                    conn.execute(select(func.count()).select_from(keys)).scalar_one()
                ),
            }

    def allocate(self, sizes: Sequence[int], from_front: bool) -> list[Allocation | None]:
        """Carve ``sizes[i]`` bytes for each request, in one transaction.

        A request that cannot be met in full gets ``None`` and consumes nothing.
        """
        out: list[Allocation | None] = [None] * len(sizes)
        with self.engine.begin() as conn:
            order = (
                (segments.c.sort_key, segments.c.idx)
                if from_front
                else (segments.c.sort_key.desc(), segments.c.idx.desc())
            )
            q = select(*_SEG_COLS).where(segments.c.shared.is_(True)).order_by(*order)
            if self._for_update:
                q = q.with_for_update()
            total = sum(n for n in sizes if n > 0)
            # common case: the first few segments hold enough for every request, and the pool
            # is not summed at all (a full scan on a large pool)
            segs = [_seg(r) for r in conn.execute(q.limit(total // SEGMENT_BYTES + 4))]
            got = sum(s.avail for s in segs)
            if got >= total:
                want = [i for i, n in enumerate(sizes) if n > 0]
            else:
                segs = [_seg(r) for r in conn.execute(q)]  # take the rest in one go
                avail = sum(s.avail for s in segs)
                want = []
                for i, n in enumerate(sizes):
                    if 0 < n <= avail:
                        want.append(i)
                        avail -= n
            if not want:
                return out
            pos = 0
            for i in want:
                left = sizes[i]
                pieces: list[Piece] = []
                parts: list[bytes] = []
                while left:
                    s = segs[pos]
                    t = min(left, s.avail)
                    if t == 0:
                        pos += 1
                        continue
                    if from_front:
                        pieces.append(Piece(s.block_id, s.start + s.lo, t))
                        parts.append(s.data[:t])
                        s.data = s.data[t:]
                        s.lo += t
                    else:
                        off = s.start + s.length - s.hi - t
                        pieces.append(Piece(s.block_id, off, t))
                        parts.append(s.data[len(s.data) - t :])
                        s.data = s.data[: len(s.data) - t]
                        s.hi += t
                    s.dirty = True
                    left -= t
                out[i] = Allocation(pieces, b"".join(parts))
            self._write_back(conn, segs)
        return out

    @staticmethod
    def _write_back(conn: Connection, segs: Iterable[_Seg]) -> None:
        for s in segs:
            if not s.dirty:
                continue
            key = and_(segments.c.block_id == s.block_id, segments.c.idx == s.idx)
            if s.avail == 0:
                conn.execute(delete(segments).where(key))
            else:
                conn.execute(update(segments).where(key).values(lo=s.lo, hi=s.hi, data=s.data))

    def apply_peer_allocations(
        self,
        batch: Sequence[tuple[list[Piece], list[tuple[str, int, str, list[str]]]]],
        peer_from_front: bool,
    ) -> list[bool]:
        """Apply allocations made by the peer KMS (one transaction for the whole batch).

        Each item is ``(pieces, reservations)``; ``reservations`` lists
        ``(key_id, size_bits, master_sae, slave_saes)`` for the keys cut, in order, from the
        pieces' bytes, to be kept for the slaves served here. An item whose pieces overlap bytes
        already consumed here (or name unknown bytes) is refused: it changes nothing.
        """
        results: list[bool] = []
        with self.engine.begin() as conn:
            cache: dict[tuple[str, int], _Seg | None] = {}

            def seg_for(block_id: str, offset: int) -> _Seg | None:
                idx = offset // SEGMENT_BYTES
                k = (block_id, idx)
                if k not in cache:
                    q = select(*_SEG_COLS).where(
                        and_(segments.c.block_id == block_id, segments.c.idx == idx)
                    )
                    if self._for_update:
                        q = q.with_for_update()
                    row = conn.execute(q).first()
                    cache[k] = _seg(row) if row is not None else None
                return cache[k]

            key_rows: list[dict[str, Any]] = []
            slave_rows: list[dict[str, str]] = []
            now = time.time()
            for pieces, reservations in batch:
                plan: list[tuple[_Seg, int, int]] = []
                parts: list[bytes] = []
                ok = True
                shadow: dict[int, tuple[int, int]] = {}
                for p in pieces:
                    s = seg_for(p.block_id, p.offset)
                    if s is None or p.length <= 0:
                        ok = False
                        break
                    lo, hi = shadow.get(id(s), (s.lo, s.hi))
                    first = s.start + lo
                    end = s.start + s.length - hi
                    if p.offset < first or p.offset + p.length > end:
                        ok = False
                        break
                    rel = p.offset - first
                    cur = s.data[(lo - s.lo) : len(s.data) - (hi - s.hi)]
                    parts.append(cur[rel : rel + p.length])
                    if peer_from_front:
                        shadow[id(s)] = (p.offset + p.length - s.start, hi)
                    else:
                        shadow[id(s)] = (lo, s.start + s.length - p.offset)
                    plan.append((s, *shadow[id(s)]))
                material = b"".join(parts)
                total_bits = sum(r[1] for r in reservations)
                if not ok or total_bits != 8 * len(material):
                    results.append(False)
                    continue
                for s, lo, hi in plan:
                    s.data = s.data[(lo - s.lo) : len(s.data) - (hi - s.hi)]
                    s.lo, s.hi, s.dirty = lo, hi, True
                pos = 0
                for key_id, size_bits, master, slaves in reservations:
                    n = size_bits // 8
                    if slaves:
                        key_rows.append(
                            {
                                "key_id": key_id,
                                "master_sae": master,
                                "size_bits": size_bits,
                                "material": material[pos : pos + n],
                                "created_at": now,
                            }
                        )
                        slave_rows.extend({"key_id": key_id, "sae_id": sae} for sae in slaves)
                    pos += n
                results.append(True)
            self._write_back(conn, (s for s in cache.values() if s is not None))
            if key_rows:
                conn.execute(insert(keys), key_rows)
                conn.execute(insert(key_slaves), slave_rows)
        return results

    # --- reserved keys -------------------------------------------------------------------------

    def reserve(self, items: Sequence[tuple[str, int, bytes, str, Sequence[str]]]) -> None:
        """Keep keys ``(key_id, size_bits, material, master, slaves)`` for local slave SAEs."""
        if not items:
            return
        now = time.time()
        with self.engine.begin() as conn:
            conn.execute(
                insert(keys),
                [
                    {
                        "key_id": k,
                        "master_sae": m,
                        "size_bits": b,
                        "material": mat,
                        "created_at": now,
                    }
                    for k, b, mat, m, _ in items
                ],
            )
            conn.execute(
                insert(key_slaves),
                [{"key_id": k, "sae_id": s} for k, _, _, _, sl in items for s in sl],
            )

    def take_keys(
        self, key_ids: Sequence[str], master: str, caller: str
    ) -> tuple[TakeOutcome, list[StoredKey]]:
        """Hand ``caller`` the keys ``key_ids`` made for ``master``, all or none, exactly once."""
        ids = list(key_ids)
        try:
            return self._take(ids, master, caller)
        except _RacedError:
            return TakeOutcome.NOT_FOUND, []

    def _take(
        self, ids: list[str], master: str, caller: str
    ) -> tuple[TakeOutcome, list[StoredKey]]:
        with self.engine.begin() as conn:
            # one query: each key with its number of waiting slaves and whether caller is one
            n_slaves = (
                select(func.count()).where(key_slaves.c.key_id == keys.c.key_id).scalar_subquery()
            )
            is_mine = (
                select(func.count())
                .where(and_(key_slaves.c.key_id == keys.c.key_id, key_slaves.c.sae_id == caller))
                .scalar_subquery()
            )
            q = select(keys.c.key_id, keys.c.master_sae, keys.c.material, n_slaves, is_mine).where(
                keys.c.key_id.in_(ids)
            )
            if self._for_update:
                q = q.with_for_update(of=keys)
            rows = conn.execute(q).all()
            found = {r[0]: (r[1], bytes(r[2])) for r in rows}
            if len(found) != len(ids) or any(m != master for m, _ in found.values()):
                return TakeOutcome.NOT_FOUND, []
            if not all(r[4] for r in rows):
                return TakeOutcome.UNAUTHORIZED, []
            res = conn.execute(
                delete(key_slaves).where(
                    and_(key_slaves.c.key_id.in_(ids), key_slaves.c.sae_id == caller)
                )
            )
            if res.rowcount != len(ids):  # a concurrent call took them first
                raise _RacedError
            # the key rows are locked (FOR UPDATE; SQLite: one writer), so the counts hold
            done = [r[0] for r in rows if r[3] == 1]
            if done:
                conn.execute(delete(keys).where(keys.c.key_id.in_(done)))
        return TakeOutcome.OK, [StoredKey(k, found[k][1]) for k in ids]

    def reserved_key_ids(self) -> dict[str, list[str]]:
        """Every key still waiting, with its remaining slaves (IDs only; for audits and tests)."""
        with self.engine.connect() as conn:
            out: dict[str, list[str]] = {}
            for k, s in conn.execute(select(key_slaves.c.key_id, key_slaves.c.sae_id)):
                out.setdefault(k, []).append(s)
            return out
