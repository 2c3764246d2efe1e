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
  ``dec_keys`` hands it to each slave once and deletes it when the last slave has it. A key
  relayed from another KMS (:mod:`.relay`) is one too, with the ``relay_id`` it came with.
* A node with several QKD links keeps one **pool per link**: every block and segment carries
  ``link`` (the peer KME's ID), and every pool operation names its link, so bytes of one link
  are never carved, confirmed or reconciled by another link's peer.
* Block IDs are remembered after their bytes are gone, so re-ingesting a block never brings
  consumed key material back.
* Key material never reaches the database in clear: segment bytes are sealed under per-segment
  data keys that are ratcheted on every change, and reserved keys live in the
  :class:`~qdnet.kms.keyring.Keyring` (a local SQLite file that really erases), so no delivered
  key can be read back from the database files, old row versions or WAL.
* Every database call has a lock timeout (``lock_timeout_s``): a store held by someone else
  raises :class:`StoreBusyError` instead of waiting for ever.

Every state change is one database transaction, so a crash at any moment leaves either the
old state or the new one: no key is lost silently and none is handed out twice.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from cryptography.exceptions import InvalidTag
from sqlalchemy import (
    BigInteger,
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
    bindparam,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.engine import Connection, make_url

from qdnet.kms.blocks import IngestBlock
from qdnet.kms.keyring import (
    Keyring,
    SegKey,
    ratchet,
    seal,
    seal_reserved,
    unseal,
    unseal_reserved,
)
from qdnet.kms.puncturable import Leaf
from qdnet.postprocessing.keyblock import KeyBlock

SEGMENT_BYTES = 4096
"""Segment size: both KMS of a link must use the same value (it is part of the peer protocol)."""

metadata = MetaData()

blocks = Table(
    "kms_blocks",
    metadata,
    Column("block_id", String(128), primary_key=True),
    Column("link", String(128), nullable=False, server_default="", index=True),
    Column("link_name", String(256), nullable=False),
    Column("protocol", String(64), nullable=False),
    Column("length_bytes", Integer, nullable=False),
    Column("created_utc", String(64), nullable=False),
    Column("qber", Float, nullable=False),
    Column("eps_sec", Float, nullable=False),
    Column("ingested_at", Float, nullable=False),
    Column("shared", Boolean, nullable=False, default=False),
    Column("simulated", Boolean, nullable=False, default=False),
)

segments = Table(
    "kms_segments",
    metadata,
    Column("block_id", String(128), primary_key=True),
    Column("idx", Integer, primary_key=True),
    Column("link", String(128), nullable=False, server_default=""),
    Column("sort_key", String(256), nullable=False, index=True),
    Column("start", Integer, nullable=False),
    Column("length", Integer, nullable=False),
    Column("lo", Integer, nullable=False),
    Column("hi", Integer, nullable=False),
    Column("shared", Boolean, nullable=False, index=True),
    Column("simulated", Boolean, nullable=False),
    Column("version", Integer, nullable=False),
    Column("data", LargeBinary, nullable=False, comment="sealed: keyring.seal"),
)

pool_order = Index(
    "ix_kms_segments_link_pool",
    segments.c.link,
    segments.c.shared,
    segments.c.sort_key,
    segments.c.idx,
)
"""Carving walks this index from either end of one link's pool: no sort, no scan."""

keys = Table(
    "kms_keys",
    metadata,
    Column("key_id", String(36), primary_key=True),
    Column("master_sae", String(256), nullable=False),
    Column("size_bits", Integer, nullable=False),
    Column("simulated", Boolean, nullable=False),
    Column("created_at", Float, nullable=False, index=True),
    Column("relay_id", String(64), nullable=True, index=True, comment="relayed keys only"),
    Column("leaf_tree", BigInteger, nullable=True, comment="keyring tree of the sealing key"),
    Column("leaf", Integer, nullable=True, comment="leaf of the sealing key in that tree"),
    Column("material", LargeBinary, nullable=True, comment="sealed: keyring.seal_reserved"),
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
    simulated: bool = False


@dataclass(frozen=True)
class StoredKey:
    """A key handed out by ``dec_keys``."""

    key_id: str
    material: bytes = field(repr=False)
    simulated: bool = False


class TakeOutcome(Enum):
    """Result of :meth:`KeyStore.take_keys`."""

    OK = "ok"
    NOT_FOUND = "not_found"
    UNAUTHORIZED = "unauthorized"


class StoreBusyError(RuntimeError):
    """A database call hit its lock or statement timeout (someone else holds the store)."""


class _RacedError(Exception):
    """Rolls a transaction back when a concurrent call won the race."""


Reservation = tuple[str, int, str, list[str]]
"""``(key_id, size_bits, master_sae, slave_saes served here)``"""


@dataclass
class _Seg:
    block_id: str
    idx: int
    start: int
    length: int
    lo: int
    hi: int
    simulated: bool
    version: int
    data: bytes = field(repr=False)
    dirty: bool = False

    @property
    def avail(self) -> int:
        return self.length - self.lo - self.hi

    @property
    def key(self) -> SegKey:
        return (self.block_id, self.idx)


_SEG_COLS = (
    segments.c.block_id,
    segments.c.idx,
    segments.c.start,
    segments.c.length,
    segments.c.lo,
    segments.c.hi,
    segments.c.simulated,
    segments.c.version,
    segments.c.data,
)


# Statements of the request path, built once with bound parameters: building a SQLAlchemy
# expression per call (and its cache key) cost more CPU than running it (about a third of a
# relay hop's store time).
_SEG_ROW = select(*_SEG_COLS).where(
    segments.c.block_id == bindparam("b"),
    segments.c.idx == bindparam("i"),
    segments.c.link == bindparam("l"),
)
_SEG_ROW_LOCKED = _SEG_ROW.with_for_update()
_SEG_AT = and_(segments.c.block_id == bindparam("b"), segments.c.idx == bindparam("i"))
_SEG_UPDATE = (
    update(segments)
    .where(_SEG_AT)
    .values(lo=bindparam("lo_"), hi=bindparam("hi_"), version=bindparam("v_"), data=bindparam("d_"))
)
_SEG_DELETE = delete(segments).where(_SEG_AT)


def _plan_query(from_front: bool, half: bool, cursor: bool, limited: bool) -> Any:
    """The shared segments of link ``l`` in carving order from one end (see
    :meth:`KeyStore.plan`): only those whose half at that end is not used up (``half``), from
    the cursor ``(ck, ci)`` on (``cursor``), at most ``n`` rows (``limited``)."""
    order = (
        (segments.c.sort_key, segments.c.idx)
        if from_front
        else (segments.c.sort_key.desc(), segments.c.idx.desc())
    )
    q = (
        select(*_SEG_COLS, segments.c.sort_key)
        .where(and_(segments.c.link == bindparam("l"), segments.c.shared.is_(True)))
        .order_by(*order)
    )
    if half:  # segments whose half at this end is used up are not even read
        mid = segments.c.length // 2
        q = q.where(segments.c.lo < mid if from_front else segments.c.length - segments.c.hi > mid)
    if cursor:
        at = tuple_(segments.c.sort_key, segments.c.idx)
        mark = tuple_(bindparam("ck"), bindparam("ci"))
        q = q.where(at >= mark if from_front else at <= mark)
    return q.limit(bindparam("n")) if limited else q


_PLAN_QUERIES = {flags: _plan_query(*flags) for flags in itertools.product((False, True), repeat=4)}
"""``_plan_query`` for each ``(from_front, half, cursor, limited)``."""

_N_SLAVES = select(func.count()).where(key_slaves.c.key_id == keys.c.key_id).scalar_subquery()
_IS_SLAVE = (
    select(func.count())
    .where(and_(key_slaves.c.key_id == keys.c.key_id, key_slaves.c.sae_id == bindparam("caller")))
    .scalar_subquery()
)
_TAKE_ROWS = select(
    keys.c.key_id,
    keys.c.master_sae,
    keys.c.simulated,
    _N_SLAVES,
    _IS_SLAVE,
    keys.c.leaf_tree,
    keys.c.leaf,
    keys.c.material,
).where(keys.c.key_id.in_(bindparam("ids", expanding=True)))
_TAKE_ROWS_LOCKED = _TAKE_ROWS.with_for_update(of=keys)
_TAKE_SLAVES = delete(key_slaves).where(
    and_(
        key_slaves.c.key_id.in_(bindparam("ids", expanding=True)),
        key_slaves.c.sae_id == bindparam("caller"),
    )
)
_TAKE_KEYS = delete(keys).where(keys.c.key_id.in_(bindparam("ids", expanding=True)))
_INSERT_KEYS = insert(keys)
_INSERT_SLAVES = insert(key_slaves)


@dataclass(frozen=True)
class _SealedKey:
    """A reserved key's row as ``dec_keys`` reads it."""

    leaf: Leaf
    material: bytes | None = field(repr=False)
    simulated: bool


def _leaf_of(tree: Any, leaf: Any) -> Leaf:
    return (-1, -1) if tree is None or leaf is None else (int(tree), int(leaf))


def _open(key_id: str, row: _SealedKey, leaf_keys: dict[Leaf, bytes]) -> StoredKey | None:
    """The key in clear, or None if its leaf key is gone (a crash between store and keyring)."""
    leaf_key = leaf_keys.get(row.leaf)
    if leaf_key is None or row.material is None:
        return None
    try:
        plain = unseal_reserved(leaf_key, key_id, row.leaf, bytes(row.material))
    except InvalidTag:
        return None
    return StoredKey(key_id, plain, row.simulated)


def xor(a: bytes, b: bytes) -> bytes:
    """``a xor b`` (equal lengths): the one-time pad of a relay hop."""
    if len(a) != len(b):
        raise ValueError("xor of byte strings of different lengths")
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(len(a), "big")


@dataclass
class IncomingPad:
    """One relay request as :meth:`KeyStore.relay_receive` takes it."""

    pieces: list[Piece]
    from_front: bool
    link: str
    ciphertext: bytes | None = field(repr=False)
    keep: tuple[str, list[Reservation]] | None = None

    @property
    def nbytes(self) -> int:
        return sum(p.length for p in self.pieces)


@dataclass
class OnwardPads:
    """Pads a middle node carves for the next hops in the transaction of
    :meth:`KeyStore.relay_receive`: for the requests at ``requests`` (indices of the incoming
    pads), from this end (``from_front``) of ``link``'s pool; ``pads`` is filled in."""

    link: str
    from_front: bool
    requests: list[int]
    pads: dict[int, Allocation | None] = field(default_factory=dict)


@dataclass
class RelayHop:
    """What :meth:`KeyStore.relay_receive` got from one pad: the relayed key (only in this
    process's memory) and whether the pad is simulated."""

    key: bytes = field(repr=False)
    simulated: bool


@dataclass
class _Txn:
    """What one write transaction collects (see ``KeyStore._transaction``)."""

    conn: Connection
    cache: dict[tuple[str, str, int], _Seg | None] = field(default_factory=dict)
    key_rows: list[dict[str, Any]] = field(default_factory=list, repr=False)
    """rows of ``kms_keys`` with the key's ``material`` in clear (sealed at the commit)"""
    slave_rows: list[dict[str, str]] = field(default_factory=list)


def _usable(length: int, lo: int, hi: int, from_front: bool, half: bool) -> int:
    """Bytes of a segment one end may carve (with ``half``: only from its own half)."""
    avail = length - lo - hi
    if not half:
        return avail
    mid = length // 2
    return max(0, min(avail, mid - lo if from_front else length - hi - mid))


def _private_sqlite(url: str) -> None:
    """Create a SQLite store file with mode 0600 (its WAL and shm files inherit the mode)."""
    path = make_url(url).database
    if not path or path == ":memory:":
        return
    p = os.path.abspath(path)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    os.close(os.open(p, os.O_RDWR | os.O_CREAT, 0o600))
    os.chmod(p, 0o600)
    for suffix in ("-wal", "-shm"):
        if os.path.exists(p + suffix):
            os.chmod(p + suffix, 0o600)


def make_engine(url: str, lock_timeout_s: float = 3.0) -> Engine:
    """An engine for ``url``: SQLite files get WAL mode, mode 0600 and a busy timeout;
    PostgreSQL gets lock and statement timeouts."""
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    ms = int(lock_timeout_s * 1000)
    if url.startswith("sqlite"):
        _private_sqlite(url)

        def pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")  # survives a killed process; readers never block
            # FULL: a commit is on disk before the key it hands out leaves (power loss included)
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute(f"PRAGMA busy_timeout={ms}")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        engine = create_engine(
            url, connect_args={"check_same_thread": False}, pool_size=8, pool_timeout=lock_timeout_s
        )
        event.listen(engine, "connect", pragmas)
        return engine
    return create_engine(
        url,
        pool_size=8,
        max_overflow=4,
        pool_pre_ping=True,
        pool_timeout=lock_timeout_s,
        connect_args={
            "connect_timeout": max(1, int(lock_timeout_s)),
            "options": f"-c lock_timeout={ms} -c statement_timeout={2 * ms}",
        },
    )


def default_keyring_path(url: str) -> str:
    """Beside a SQLite store: ``<file>.keyring``; PostgreSQL needs an explicit path."""
    path = make_url(url).database if url.startswith("sqlite") else None
    if not path or path == ":memory:":
        raise ValueError("a keyring path is required for this database URL")
    return os.path.abspath(path) + ".keyring"


class KeyStore:
    """All persistent state of one KMS: the database and the keyring (see :mod:`.keyring`)."""

    def __init__(
        self,
        url: str,
        keyring_path: str | os.PathLike[str] | None = None,
        lock_timeout_s: float = 3.0,
    ) -> None:
        self.url = url
        self.engine = make_engine(url, lock_timeout_s)
        self._for_update = not url.startswith("sqlite")
        self.keyring = Keyring(keyring_path or default_keyring_path(url), lock_timeout_s)
        # SQLite has one writer: writers of this process queue here (woken at once) rather than
        # in SQLite's busy handler (which sleeps 1, 2, 5, 10... ms between tries)
        self._writer = threading.Lock()
        self._lock_timeout_s = lock_timeout_s
        # (link, from_front) -> (sort_key, idx) of the first segment whose half at that end was
        # not used up at the last relay carve: the ones before it stay used up (lo and hi only
        # grow), so the next carve starts there instead of scanning them (see _plan)
        self._half_cursor: dict[tuple[str, bool], tuple[str, int]] = {}
        try:
            self._guarded(self._create)
            self._guarded(self._seal_legacy)
        except BaseException:
            self.close()
            raise

    def _create(self) -> None:
        existing = sa_inspect(self.engine)
        if existing.has_table(segments.name):
            columns = {c["name"] for c in existing.get_columns(segments.name)}
            if "version" not in columns:
                raise RuntimeError(
                    f"{self.url}: key store made by an older qdnet (key bytes in clear): "
                    "start a new store and ingest the key blocks again"
                )
            if "link" not in columns:  # a store made before pools per link: one link, ""
                with self._writing(), self.engine.begin() as conn:
                    for table in (blocks, segments):
                        conn.execute(
                            text(
                                f"ALTER TABLE {table.name} ADD COLUMN link VARCHAR(128) "
                                "NOT NULL DEFAULT ''"
                            )
                        )
                    conn.execute(text("DROP INDEX IF EXISTS ix_kms_segments_pool"))
        if existing.has_table(keys.name):
            columns = {c["name"] for c in existing.get_columns(keys.name)}
            added = {
                "relay_id": "VARCHAR(64)",  # a store made before key relay
                "leaf_tree": "BIGINT",  # stores made before the reserved keys were sealed here
                "leaf": "INTEGER",
                "material": "BLOB" if self.url.startswith("sqlite") else "BYTEA",
            }
            with self._writing(), self.engine.begin() as conn:
                for name, sql_type in added.items():
                    if name not in columns:
                        conn.execute(text(f"ALTER TABLE kms_keys ADD COLUMN {name} {sql_type}"))
        metadata.create_all(self.engine)
        with self._writing(), self.engine.begin() as conn:  # stores made before the index existed
            pool_order.create(conn, checkfirst=True)

    def _seal_legacy(self) -> None:
        """Reserved keys kept in the keyring in clear by an older qdnet: sealed into the store
        under leaf keys, then erased from the keyring (a crash between the two repeats
        nothing: the sealed ones are skipped)."""
        legacy = self.keyring.legacy_materials()
        if legacy:
            with self._writing(), self.engine.begin() as conn:
                unsealed = select(keys.c.key_id).where(keys.c.material.is_(None))
                ids = [r[0] for r in conn.execute(unsealed) if r[0] in legacy]
                rows = [{"key_id": k, "material": legacy[k]} for k in ids]
                if rows:
                    self._seal_reserved(rows)
                    conn.execute(
                        update(keys)
                        .where(keys.c.key_id == bindparam("k"))
                        .values(leaf_tree=bindparam("t"), leaf=bindparam("l"),
                                material=bindparam("m")),
                        [{"k": r["key_id"], "t": r["leaf_tree"], "l": r["leaf"],
                          "m": r["material"]} for r in rows],
                    )  # fmt: skip
        self.keyring.drop_legacy()

    def adopt_unlinked(self, link: str) -> int:
        """Give the blocks of a store made before pools per link (link ``""``) to ``link``
        (a node with one peer); number of blocks adopted."""

        def run() -> int:
            with self._writing(), self.engine.begin() as conn:
                n = conn.execute(update(blocks).where(blocks.c.link == "").values(link=link))
                conn.execute(update(segments).where(segments.c.link == "").values(link=link))
                return int(n.rowcount or 0)

        return int(self._guarded(run))

    def close(self) -> None:
        """Release the connection pool and the keyring."""
        self.engine.dispose()
        self.keyring.close()

    @staticmethod
    def _guarded(fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except sa_exc.TimeoutError:
            raise StoreBusyError("key store busy: no database connection free in time") from None
        except (sa_exc.OperationalError, sqlite3.OperationalError) as err:
            cause = err.orig if isinstance(err, sa_exc.DBAPIError) else err
            raise StoreBusyError(
                f"key store busy or unreachable ({type(cause).__name__})"
            ) from None

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """One write transaction of this process at a time (see ``_writer``)."""
        if self._for_update:  # PostgreSQL: row locks, writers may run side by side
            yield
            return
        if not self._writer.acquire(timeout=self._lock_timeout_s):
            raise StoreBusyError("key store busy: another write did not finish in time")
        try:
            yield
        finally:
            self._writer.release()

    # --- sealing -------------------------------------------------------------------------------

    def _seg(self, row: Any) -> _Seg:
        seg = _Seg(row[0], row[1], row[2], row[3], row[4], row[5], bool(row[6]), row[7], b"")
        key = self.keyring.segment_key(seg.key, seg.version)
        seg.data = unseal(key, seg.key, seg.version, bytes(row[8]))
        return seg

    def _write_back(
        self, conn: Connection, segs: Iterable[_Seg]
    ) -> tuple[list[tuple[SegKey, int]], list[SegKey]]:
        """Store the dirty segments (resealed at the next version); what the keyring must do."""
        versions: list[tuple[SegKey, int]] = []
        gone: list[SegKey] = []
        changed: list[dict[str, Any]] = []
        for s in segs:
            if not s.dirty:
                continue
            if s.avail <= 0:
                gone.append(s.key)
                continue
            v = s.version + 1
            key = self.keyring.segment_key(s.key, s.version)
            sealed = seal(ratchet(key), s.key, v, s.data)
            changed.append({"b": s.block_id, "i": s.idx, "lo_": s.lo, "hi_": s.hi, "v_": v,
                            "d_": sealed})  # fmt: skip
            versions.append((s.key, v))
        if changed:
            conn.execute(_SEG_UPDATE, changed)
        if gone:
            conn.execute(_SEG_DELETE, [{"b": b, "i": i} for b, i in gone])
        return versions, gone

    # --- ingestion -------------------------------------------------------------------------

    def ingest(
        self,
        block: IngestBlock | KeyBlock,
        capacity_bytes: int | None = None,
        link: str = "",
    ) -> bool:
        """Store a block's key in segments of ``link``'s pool; False if the block ID was seen
        before (on any link).

        Raises ``OverflowError`` if storing it would exceed ``capacity_bytes`` (of that pool).
        """
        blk = block if isinstance(block, IngestBlock) else IngestBlock.of(block)
        return bool(self._guarded(self._ingest, blk, capacity_bytes, link))

    def _ingest(self, block: IngestBlock, capacity_bytes: int | None, link: str) -> bool:
        with self.engine.connect() as conn:
            seen = conn.execute(
                select(blocks.c.block_id).where(blocks.c.block_id == block.block_id)
            ).first()
        if seen is not None:
            return False
        starts = list(range(0, len(block.key), SEGMENT_BYTES))
        keys = self.keyring.new_segments([(block.block_id, i) for i in range(len(starts))])
        with self._writing(), self.engine.begin() as conn:
            seen = conn.execute(
                select(blocks.c.block_id).where(blocks.c.block_id == block.block_id)
            ).first()
            if seen is not None:
                return False
            if capacity_bytes is not None:
                held = self._remaining(conn, shared_only=False, link=link)
                if held + len(block.key) > capacity_bytes:
                    raise OverflowError("key pool is full (limits.max_key_count)")
            conn.execute(
                insert(blocks).values(
                    block_id=block.block_id,
                    link=link,
                    link_name=block.link_name,
                    protocol=block.protocol,
                    length_bytes=len(block.key),
                    created_utc=block.created_utc,
                    qber=block.qber,
                    eps_sec=block.eps_sec,
                    ingested_at=time.time(),
                    shared=False,
                    simulated=block.simulated,
                )
            )
            sort_key = f"{block.created_utc}|{block.block_id}"
            rows = []
            for idx, start in enumerate(starts):
                chunk = block.key[start : start + SEGMENT_BYTES]
                seg = (block.block_id, idx)
                rows.append(
                    {
                        "block_id": block.block_id,
                        "idx": idx,
                        "link": link,
                        "sort_key": sort_key,
                        "start": start,
                        "length": len(chunk),
                        "lo": 0,
                        "hi": 0,
                        "shared": False,
                        "simulated": block.simulated,
                        "version": 0,
                        "data": seal(keys[seg], seg, 0, chunk),
                    }
                )
            conn.execute(insert(segments), rows)
        return True

    def collect_orphans(self) -> int:
        """Startup clean-up after a crash: erase keyring entries the database no longer needs
        (segment keys, leaves of reserved keys not in the store) and reserved keys whose leaf
        key is gone; number removed."""
        return int(self._guarded(self._collect_orphans))

    def _collect_orphans(self) -> int:
        with self.engine.connect() as conn:
            segs = {
                (str(b), int(i))
                for b, i in conn.execute(select(segments.c.block_id, segments.c.idx))
            }
            known = {str(r[0]) for r in conn.execute(select(blocks.c.block_id))}
            reserved = {
                str(r[0]): _leaf_of(r[1], r[2])
                for r in conn.execute(select(keys.c.key_id, keys.c.leaf_tree, keys.c.leaf))
            }
        # keys of a block not in the database yet are left alone: an ingest may be under way
        stale_segs = sorted(s for s in self.keyring.segment_ids() - segs if s[0] in known)
        self.keyring.erase_segments(stale_segs)
        live: dict[int, set[int]] = {}
        for tree, leaf in reserved.values():
            live.setdefault(tree, set()).add(leaf)
        lost = self.keyring.compact(live)
        lacking = sorted(k for k, leaf in reserved.items() if leaf in lost)
        if lacking:
            with self._writing(), self.engine.begin() as conn:
                conn.execute(delete(key_slaves).where(key_slaves.c.key_id.in_(lacking)))
                conn.execute(delete(keys).where(keys.c.key_id.in_(lacking)))
        return len(stale_segs) + len(lacking)

    def unshared_block_ids(self, limit: int = 1000, link: str | None = None) -> list[str]:
        """Blocks of ``link`` (None: of any link) the peer has not yet confirmed holding."""

        def run() -> list[str]:
            q = select(blocks.c.block_id).where(blocks.c.shared.is_(False))
            if link is not None:
                q = q.where(blocks.c.link == link)
            with self.engine.connect() as conn:
                rows = conn.execute(
                    q.order_by(blocks.c.created_utc, blocks.c.block_id).limit(limit)
                )
                return [r[0] for r in rows]

        return list(self._guarded(run))

    def held_block_ids(self, block_ids: Iterable[str], link: str = "") -> list[str]:
        """Which of ``block_ids`` this store has ingested for ``link`` (consumed or not)."""
        ids = list(block_ids)
        if not ids:
            return []

        def run() -> list[str]:
            with self.engine.connect() as conn:
                rows = conn.execute(
                    select(blocks.c.block_id).where(
                        and_(blocks.c.block_id.in_(ids), blocks.c.link == link)
                    )
                )
                return [r[0] for r in rows]

        return list(self._guarded(run))

    def mark_shared(self, block_ids: Iterable[str], link: str = "") -> None:
        """Record that ``link``'s peer KMS holds these blocks: their bytes become allocatable."""
        ids = list(block_ids)
        if not ids:
            return

        def run() -> None:
            for front in (True, False):  # new segments may come before the cursor
                self._half_cursor.pop((link, front), None)
            with self._writing(), self.engine.begin() as conn:
                conn.execute(
                    update(blocks)
                    .where(and_(blocks.c.block_id.in_(ids), blocks.c.link == link))
                    .values(shared=True)
                )
                conn.execute(
                    update(segments)
                    .where(and_(segments.c.block_id.in_(ids), segments.c.link == link))
                    .values(shared=True)
                )

        self._guarded(run)

    # --- pool --------------------------------------------------------------------------------

    @staticmethod
    def _remaining(conn: Connection, shared_only: bool, link: str | None = None) -> int:
        q = select(func.coalesce(func.sum(segments.c.length - segments.c.lo - segments.c.hi), 0))
        if shared_only:
            q = q.where(segments.c.shared.is_(True))
        if link is not None:
            q = q.where(segments.c.link == link)
        return int(conn.execute(q).scalar_one())

    def available_bytes(self, link: str | None = None) -> int:
        """Unconsumed bytes of blocks both KMS of ``link`` hold (None: of every link)."""

        def run() -> int:
            with self.engine.connect() as conn:
                return self._remaining(conn, shared_only=True, link=link)

        return int(self._guarded(run))

    def link_summary(self) -> dict[str, dict[str, int]]:
        """Per link: ``stored_key_bytes`` (shared, unconsumed) and ``blocks_ingested``."""

        def run() -> dict[str, dict[str, int]]:
            left = func.coalesce(func.sum(segments.c.length - segments.c.lo - segments.c.hi), 0)
            out: dict[str, dict[str, int]] = {}
            with self.engine.connect() as conn:
                for link, n in conn.execute(
                    select(blocks.c.link, func.count()).group_by(blocks.c.link)
                ):
                    out[str(link)] = {"stored_key_bytes": 0, "blocks_ingested": int(n)}
                for link, n in conn.execute(
                    select(segments.c.link, left)
                    .where(segments.c.shared.is_(True))
                    .group_by(segments.c.link)
                ):
                    out.setdefault(str(link), {"stored_key_bytes": 0, "blocks_ingested": 0})
                    out[str(link)]["stored_key_bytes"] = int(n)
            return out

        return dict(self._guarded(run))

    def pool_summary(self, link: str | None = None) -> dict[str, int]:
        """Counts for status pages and accounting (no key material), of ``link``'s pool or
        (None) of every link; ``reserved_keys`` counts the whole node."""

        def run() -> dict[str, int]:
            with self.engine.connect() as conn:
                simulated = select(
                    func.coalesce(func.sum(segments.c.length - segments.c.lo - segments.c.hi), 0)
                ).where(and_(segments.c.shared.is_(True), segments.c.simulated.is_(True)))
                count = select(func.count()).select_from(blocks)
                if link is not None:
                    simulated = simulated.where(segments.c.link == link)
                    count = count.where(blocks.c.link == link)
                return {
                    "blocks": int(conn.execute(count).scalar_one()),
                    "shared_bytes": self._remaining(conn, shared_only=True, link=link),
                    "held_bytes": self._remaining(conn, shared_only=False, link=link),
                    "simulated_bytes": int(conn.execute(simulated).scalar_one()),
                    "reserved_keys": int(
                        conn.execute(select(func.count()).select_from(keys)).scalar_one()
                    ),
                }

        return dict(self._guarded(run))

    def plan(
        self, sizes: Sequence[int], from_front: bool, link: str = "", half: bool = False
    ) -> list[Allocation | None]:
        """Choose ``sizes[i]`` bytes for each request from this end of ``link``'s pool, consuming
        nothing: :meth:`apply_allocations` consumes them once the peer KMS agreed.

        A request that cannot be met in full gets ``None``. With ``half`` only this end's half
        of each segment is used (``[lo, length // 2)`` from the front, ``[length // 2,
        length - hi)`` from the back): the two ends of a link can then never carve the same byte,
        which relay pads need (see :mod:`.relay`).
        """
        return list(self._guarded(self._plan, sizes, from_front, link, half))

    def _plan(
        self, sizes: Sequence[int], from_front: bool, link: str, half: bool = False
    ) -> list[Allocation | None]:
        out: list[Allocation | None] = [None] * len(sizes)
        cursor = self._half_cursor.get((link, from_front)) if half else None
        args: dict[str, Any] = {"l": link}
        if cursor is not None:
            args["ck"], args["ci"] = cursor
        with self.engine.connect() as conn:
            total = sum(n for n in sizes if n > 0)
            # common case: the first few segments hold enough for every request, and the pool
            # is not summed at all (a full scan on a large pool)
            flags = (from_front, half, cursor is not None)
            q = _PLAN_QUERIES[(*flags, True)]
            rows = conn.execute(q, {**args, "n": total // SEGMENT_BYTES + 4}).all()
            if sum(_usable(r[3], r[4], r[5], from_front, half) for r in rows) < total:
                rows = conn.execute(_PLAN_QUERIES[(*flags, False)], args).all()  # the rest
        if half and rows:
            self._half_cursor[(link, from_front)] = (rows[0][9], rows[0][1])
        avail = sum(_usable(r[3], r[4], r[5], from_front, half) for r in rows)
        want = []
        for i, n in enumerate(sizes):
            if 0 < n <= avail:
                want.append(i)
                avail -= n
        if not want:
            return out
        need = sum(sizes[i] for i in want)
        segs: list[_Seg] = []
        for r in rows:  # unseal only the segments the requests use
            if need <= 0:
                break
            segs.append(self._seg(r))
            need -= _usable(r[3], r[4], r[5], from_front, half)
        pos = 0
        for i in want:
            left = sizes[i]
            pieces: list[Piece] = []
            parts: list[bytes] = []
            simulated = False
            while left:
                s = segs[pos]
                t = min(left, _usable(s.length, s.lo, s.hi, from_front, half))
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
                simulated |= s.simulated
                left -= t
            out[i] = Allocation(pieces, b"".join(parts), simulated)
        return out

    def apply_allocations(
        self,
        batch: Sequence[tuple[list[Piece], list[Reservation]]],
        from_front: bool,
        link: str = "",
    ) -> list[bool]:
        """Consume carved bytes and keep keys cut from them (one transaction for the batch).

        ``from_front`` is the end the carver takes from (this KMS's own end for its own carves,
        the other end for the peer's). Each item is ``(pieces, reservations)``; a reservation
        ``(key_id, size_bits, master_sae, slave_saes)`` is a key cut, in order, from the pieces'
        bytes, kept for the slaves served here (none: not kept). An item whose pieces overlap
        bytes already consumed here (or name unknown bytes, or bytes of another link's pool) is
        refused and changes nothing.
        """
        return list(self._guarded(self._apply, batch, from_front, link))

    def consume(
        self, items: Sequence[list[Piece]], from_front: bool, link: str
    ) -> list[tuple[bytes, bool] | None]:
        """Consume the bytes ``items`` name (one transaction) and return them with whether they
        come from a simulated link: the pads of a relay hop (:mod:`.relay`). An item
        overlapping bytes consumed here gets ``None`` and changes nothing."""
        out: list[tuple[bytes, bool]] = []
        items = list(items)
        batch: list[tuple[list[Piece], list[Reservation]]] = [
            (pieces, [("", 8 * sum(p.length for p in pieces), "", [])]) for pieces in items
        ]
        ok = self._guarded(self._apply, batch, from_front, link, out)
        return [m if good else None for m, good in zip(out, ok, strict=True)]

    def carve(
        self, sizes: Sequence[int], from_front: bool, link: str, half: bool = True
    ) -> list[Allocation | None]:
        """Plan and consume ``sizes[i]`` bytes for each request from this end of ``link``'s
        pool (by default from this end's half only: see :meth:`plan`), in one call; None for a
        request there is not enough for. The caller must be the only one carving from this end
        meanwhile (the link's carving lock)."""
        plans = self.plan(sizes, from_front, link, half)
        ready = [p for p in plans if p is not None]
        got = iter(self.consume([p.pieces for p in ready], from_front, link) if ready else [])
        out: list[Allocation | None] = []
        for plan in plans:
            pad = next(got) if plan is not None else None
            out.append(None if plan is None or pad is None else Allocation(plan.pieces, *pad))
        return out

    def _apply(
        self,
        batch: Sequence[tuple[list[Piece], list[Reservation]]],
        from_front: bool,
        link: str,
        material_out: list[tuple[bytes, bool]] | None = None,
    ) -> list[bool]:
        return list(
            self._transaction(
                lambda txn: self._apply_in(txn, batch, from_front, link, material_out)
            )
        )

    def _transaction(self, fn: Callable[[_Txn], Any]) -> Any:
        """Run ``fn`` in one write transaction, then store the segments it changed and the
        reserved keys it made (each sealed under a fresh leaf key of the keyring)."""
        leaves: list[Leaf] = []
        try:
            with self._writing(), self.engine.begin() as conn:
                txn = _Txn(conn)
                result = fn(txn)
                versions, gone = self._write_back(
                    conn, (s for s in txn.cache.values() if s is not None)
                )
                if txn.key_rows:
                    leaves = self._seal_reserved(txn.key_rows)
                    conn.execute(_INSERT_KEYS, txn.key_rows)
                    conn.execute(_INSERT_SLAVES, txn.slave_rows)
        except BaseException:
            # rolled back: nothing may open them later (if the keyring is busy too, the
            # start-up compaction punctures them: no reserved key in the store uses them)
            with contextlib.suppress(sqlite3.Error):
                self.keyring.puncture(leaves)
            raise
        self.keyring.commit(versions, gone)
        return result

    def _seal_reserved(self, rows: list[dict[str, Any]]) -> list[Leaf]:
        """Seal each row's ``material`` under a fresh leaf key (in place); the leaves used."""
        leaves = self.keyring.allocate(len(rows))
        for row, (leaf, key) in zip(rows, leaves, strict=True):
            row["material"] = seal_reserved(key, row["key_id"], leaf, row["material"])
            row["leaf_tree"], row["leaf"] = leaf
        return [leaf for leaf, _ in leaves]

    def _apply_in(
        self,
        txn: _Txn,
        batch: Sequence[tuple[list[Piece], list[Reservation]]],
        from_front: bool,
        link: str,
        material_out: list[tuple[bytes, bool]] | None = None,
    ) -> list[bool]:
        results: list[bool] = []

        def seg_for(block_id: str, offset: int) -> _Seg | None:
            idx = offset // SEGMENT_BYTES
            k = (link, block_id, idx)
            if k not in txn.cache:
                q = _SEG_ROW_LOCKED if self._for_update else _SEG_ROW
                row = txn.conn.execute(q, {"b": block_id, "i": idx, "l": link}).first()
                txn.cache[k] = self._seg(row) if row is not None else None
            return txn.cache[k]

        now = time.time()
        for pieces, reservations in batch:
            plan: list[tuple[_Seg, int, int]] = []
            parts: list[bytes] = []
            ok = True
            simulated = False
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
                if from_front:
                    shadow[id(s)] = (p.offset + p.length - s.start, hi)
                else:
                    shadow[id(s)] = (lo, s.start + s.length - p.offset)
                plan.append((s, *shadow[id(s)]))
                simulated |= s.simulated
            material = b"".join(parts)
            total_bits = sum(r[1] for r in reservations)
            if material_out is not None:
                material_out.append((material, simulated))
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
                    txn.key_rows.append(
                        {
                            "key_id": key_id,
                            "master_sae": master,
                            "size_bits": size_bits,
                            "simulated": simulated,
                            "created_at": now,
                            "relay_id": None,
                            "material": material[pos : pos + n],
                        }
                    )
                    txn.slave_rows.extend({"key_id": key_id, "sae_id": sae} for sae in slaves)
                pos += n
            results.append(True)
        return results

    # --- reconciliation ----------------------------------------------------------------------

    def segment_state(self, block_ids: Sequence[str], link: str = "") -> dict[str, list[list[int]]]:
        """``{block_id: [[idx, lo, hi], ...]}`` of ``link``'s shared blocks among ``block_ids`` (a
        segment not listed is consumed); the peer KMS merges it with its own."""

        def run() -> dict[str, list[list[int]]]:
            out: dict[str, list[list[int]]] = {}
            with self.engine.connect() as conn:
                shared = conn.execute(
                    select(blocks.c.block_id).where(
                        and_(
                            blocks.c.block_id.in_(list(block_ids)),
                            blocks.c.shared.is_(True),
                            blocks.c.link == link,
                        )
                    )
                )
                for (b,) in shared:
                    out[b] = []
                rows = conn.execute(
                    select(segments.c.block_id, segments.c.idx, segments.c.lo, segments.c.hi)
                    .where(segments.c.block_id.in_(list(out)))
                    .order_by(segments.c.block_id, segments.c.idx)
                )
                for b, i, lo, hi in rows:
                    out[b].append([i, lo, hi])
            return out

        return dict(self._guarded(run))

    def shared_block_ids(self, link: str = "") -> list[str]:
        """Every block of ``link`` both KMS hold (consumed or not), oldest first."""

        def run() -> list[str]:
            with self.engine.connect() as conn:
                rows = conn.execute(
                    select(blocks.c.block_id)
                    .where(and_(blocks.c.shared.is_(True), blocks.c.link == link))
                    .order_by(blocks.c.created_utc, blocks.c.block_id)
                )
                return [r[0] for r in rows]

        return list(self._guarded(run))

    def merge_segment_state(self, state: dict[str, list[list[int]]], link: str = "") -> int:
        """Consume here every byte the peer reports consumed (the union of both sides: a byte
        consumed on either side is consumed on both); number of bytes newly consumed."""
        return int(self._guarded(self._merge, state, link))

    def _merge(self, state: dict[str, list[list[int]]], link: str) -> int:
        consumed = 0
        with self._writing(), self.engine.begin() as conn:
            mine = conn.execute(
                select(blocks.c.block_id).where(
                    and_(
                        blocks.c.block_id.in_(list(state)),
                        blocks.c.shared.is_(True),
                        blocks.c.link == link,
                    )
                )
            )
            ids = [r[0] for r in mine]
            theirs = {(b, int(e[0])): (int(e[1]), int(e[2])) for b in ids for e in state[b]}
            q = select(
                segments.c.block_id, segments.c.idx, segments.c.length, segments.c.lo, segments.c.hi
            ).where(segments.c.block_id.in_(ids))
            if self._for_update:
                q = q.with_for_update()
            changed = []  # only these are unsealed and written
            for b, i, length, lo0, hi0 in conn.execute(q):
                lo, hi = theirs.get((b, i), (length, 0))
                if lo > lo0 or hi > hi0:
                    changed.append((b, i, max(lo, lo0), max(hi, hi0)))
            segs: list[_Seg] = []
            for b, i, lo, hi in changed:
                row = conn.execute(
                    select(*_SEG_COLS).where(and_(segments.c.block_id == b, segments.c.idx == i))
                ).one()
                s = self._seg(row)
                before = s.avail
                if lo + hi >= s.length:
                    s.lo, s.hi, s.data = lo, s.length - lo, b""
                else:
                    s.data = s.data[lo - s.lo : len(s.data) - (hi - s.hi)]
                    s.lo, s.hi = lo, hi
                s.dirty = True
                consumed += before - max(0, s.avail)
                segs.append(s)
            versions, gone = self._write_back(conn, segs)
        self.keyring.commit(versions, gone)
        return consumed

    # --- reserved keys -------------------------------------------------------------------------

    def take_keys(
        self, key_ids: Sequence[str], master: str, caller: str
    ) -> tuple[TakeOutcome, list[StoredKey]]:
        """Hand ``caller`` the keys ``key_ids`` made for ``master``, all or none, exactly once
        (one request of :meth:`take_many`)."""
        return self.take_many([(key_ids, master, caller)])[0]

    def take_many(
        self, requests: Sequence[tuple[Sequence[str], str, str]]
    ) -> list[tuple[TakeOutcome, list[StoredKey]]]:
        """Answer ``dec_keys`` requests ``(key_ids, master, caller)`` in one transaction, as if
        one after the other (group commit: one fsync for all of them): each hands ``caller`` the
        keys ``key_ids`` made for ``master``, all or none, exactly once.

        A key's leaf is punctured in the keyring (its material can no longer be opened) when
        its last slave has it, before the answer leaves.
        """
        reqs = [(list(ids), master, caller) for ids, master, caller in requests]
        try:
            taken = self._guarded(self._take, reqs)
        except _RacedError:  # PostgreSQL: another process took some of them first
            if len(reqs) == 1:
                return [(TakeOutcome.NOT_FOUND, [])]
            return [self.take_keys(*r) for r in reqs]
        wanted = [row.leaf for outcome, _, rows in taken if outcome is TakeOutcome.OK
                  for row in rows.values()]  # fmt: skip
        done = [rows[k].leaf for outcome, gone, rows in taken if outcome is TakeOutcome.OK
                for k in gone]  # fmt: skip
        leaf_keys = self._guarded(self.keyring.open_leaves, wanted, done) if wanted else {}
        out: list[tuple[TakeOutcome, list[StoredKey]]] = []
        for (ids, _, _), (outcome, _, rows) in zip(reqs, taken, strict=True):
            if outcome is not TakeOutcome.OK:
                out.append((outcome, []))
                continue
            got = [g for k in ids if (g := _open(k, rows[k], leaf_keys)) is not None]
            # a key that does not open: only after a crash between the store and the keyring
            out.append((outcome, got) if len(got) == len(ids) else (TakeOutcome.NOT_FOUND, []))
        return out

    def _take(
        self, reqs: list[tuple[list[str], str, str]]
    ) -> list[tuple[TakeOutcome, list[str], dict[str, _SealedKey]]]:
        out: list[tuple[TakeOutcome, list[str], dict[str, _SealedKey]]] = []
        q = _TAKE_ROWS_LOCKED if self._for_update else _TAKE_ROWS
        with self._writing(), self.engine.begin() as conn:
            for ids, master, caller in reqs:
                # one query: each key with its number of waiting slaves and whether caller is one
                rows = conn.execute(q, {"ids": ids, "caller": caller}).all()
                found = {r[0]: r[1] for r in rows}
                if len(found) != len(ids) or any(m != master for m in found.values()):
                    out.append((TakeOutcome.NOT_FOUND, [], {}))
                    continue
                if not all(r[4] for r in rows):
                    out.append((TakeOutcome.UNAUTHORIZED, [], {}))
                    continue
                res = conn.execute(_TAKE_SLAVES, {"ids": ids, "caller": caller})
                if res.rowcount != len(ids):  # a concurrent call took them first
                    raise _RacedError
                # the key rows are locked (FOR UPDATE; SQLite: one writer), so the counts hold
                done = [r[0] for r in rows if r[3] == 1]
                if done:
                    conn.execute(_TAKE_KEYS, {"ids": done})
                sealed = {r[0]: _SealedKey(_leaf_of(r[5], r[6]), r[7], bool(r[2])) for r in rows}
                out.append((TakeOutcome.OK, done, sealed))
        return out

    # --- relayed keys (see qdnet.kms.relay) ------------------------------------------------------

    def relay_receive(
        self, hops: Sequence[IncomingPad], onward: Sequence[OnwardPads] = ()
    ) -> list[RelayHop | None]:
        """The relay requests one neighbour sent in one message, at the receiving node, in one
        transaction and in the order they were carved (:mod:`qdnet.kms.relay`).

        For each: consume the incoming pad (its ``pieces`` of ``link``, carved from the
        ``from_front`` end by the sender) and recover the key (the pad itself on the first hop,
        ``ciphertext xor pad`` after); at the far end, ``keep = (relay_id, reservations)``
        keeps the keys cut from it for their slaves, in the same transaction. None for a pad
        that is refused (a byte of it already consumed here).

        A middle node also carves, in the same transaction (one commit instead of two), the
        pads of the next hops: for each :class:`OnwardPads`, the pads of the requests it names
        whose incoming pad was accepted, from this end's half of that link's pool (as
        :meth:`carve`; the caller holds that link's carving lock). They are filled in
        ``OnwardPads.pads`` (None: no key left on that link, or incoming pad refused).
        """

        def run(txn: _Txn) -> list[RelayHop | None]:
            out = receive(txn)
            for carve in onward:
                wanted = [i for i in carve.requests if out[i] is not None]
                sizes = [hops[i].nbytes for i in wanted]
                plans = self._plan(sizes, carve.from_front, carve.link, True) if wanted else []
                ready = [(i, p) for i, p in zip(wanted, plans, strict=True) if p is not None]
                got: list[tuple[bytes, bool]] = []
                batch: list[tuple[list[Piece], list[Reservation]]] = [
                    (p.pieces, [("", 8 * hops[i].nbytes, "", [])]) for i, p in ready
                ]
                oks = self._apply_in(txn, batch, carve.from_front, carve.link, got)
                carve.pads = {i: None for i in carve.requests}
                for (i, p), ok, (material, simulated) in zip(ready, oks, got, strict=True):
                    carve.pads[i] = Allocation(p.pieces, material, simulated) if ok else None
            return out

        def receive(txn: _Txn) -> list[RelayHop | None]:
            out: list[RelayHop | None] = []
            now = time.time()
            for hop in hops:
                got: list[tuple[bytes, bool]] = []
                n = sum(p.length for p in hop.pieces)
                spec: list[Reservation] = [("", 8 * n, "", [])]
                (ok,) = self._apply_in(txn, [(hop.pieces, spec)], hop.from_front, hop.link, got)
                if not ok:
                    out.append(None)
                    continue
                pad, simulated = got[0]
                key = pad if hop.ciphertext is None else xor(hop.ciphertext, pad)
                out.append(RelayHop(key, simulated))
                if hop.keep is None:
                    continue
                relay_id, reservations = hop.keep
                pos = 0
                for key_id, size_bits, master, slaves in reservations:
                    txn.key_rows.append(
                        {"key_id": key_id, "master_sae": master, "size_bits": size_bits,
                         "simulated": simulated, "created_at": now, "relay_id": relay_id,
                         "material": key[pos : pos + size_bits // 8]}
                    )  # fmt: skip
                    txn.slave_rows.extend({"key_id": key_id, "sae_id": s} for s in slaves)
                    pos += size_bits // 8
            return out

        result: list[RelayHop | None] = self._guarded(self._transaction, run)
        return result

    def expire_reserved(self, older_than_s: float) -> int:
        """Erase reserved keys no slave collected within ``older_than_s``; number erased."""

        def run() -> list[Leaf]:
            cutoff = time.time() - older_than_s
            with self._writing(), self.engine.begin() as conn:
                q = (
                    select(keys.c.key_id, keys.c.leaf_tree, keys.c.leaf)
                    .where(keys.c.created_at < cutoff)
                    .limit(10000)
                )
                if self._for_update:
                    q = q.with_for_update(skip_locked=True)
                rows = conn.execute(q).all()
                ids = [r[0] for r in rows]
                if ids:
                    conn.execute(delete(key_slaves).where(key_slaves.c.key_id.in_(ids)))
                    conn.execute(delete(keys).where(keys.c.key_id.in_(ids)))
            return [_leaf_of(r[1], r[2]) for r in rows]

        leaves: list[Leaf] = self._guarded(run)
        self._guarded(self.keyring.puncture, leaves)
        return len(leaves)

    def reserved_key_ids(self) -> dict[str, list[str]]:
        """Every key still waiting, with its remaining slaves (IDs only; for audits and tests)."""

        def run() -> dict[str, list[str]]:
            with self.engine.connect() as conn:
                out: dict[str, list[str]] = {}
                for k, s in conn.execute(select(key_slaves.c.key_id, key_slaves.c.sae_id)):
                    out.setdefault(k, []).append(s)
                return out

        return dict(self._guarded(run))
