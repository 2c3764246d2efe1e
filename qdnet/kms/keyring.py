"""The keyring: the one place where a KMS keeps secrets in a form it can destroy.

Attacker model (issue 13, finding 4): after keys were delivered the attacker kills the KMS
(``kill -9``) and takes every file it keeps: the store (SQLite main file and WAL, or PostgreSQL's
table files, old row versions and ``pg_wal``) and any key file. No delivered key may be
recoverable from them. Deleting a row does not meet this (SQLite and PostgreSQL both keep the old
bytes), nor does one store-wide encryption key (it decrypts the old row versions too).

Design:

* The store (SQLite or PostgreSQL) holds pool bytes only as AES-256-GCM ciphertext. Each segment
  of the pool has its own data key, and every change of a segment (bytes carved off it) writes a
  new ciphertext under the next key of a hash ratchet, ``k_{v+1} = SHA-256(label || k_v)``: the
  current key opens only the current version of the segment, never an older one (that would need
  a SHA-256 preimage), so old row versions anywhere in the store stay sealed once ``k_v`` is gone.
* Reserved keys (waiting for their slave SAE) are kept in the store too, each sealed under its
  own key: a leaf of a puncturable tree (:mod:`qdnet.kms.puncturable`) whose root is written
  here, fsynced, once per process (at its first reserved key, and then per 2**20 keys). Making a reserved key therefore
  writes nothing here (its store commit makes it durable); erasing it *punctures* its leaf: the
  node above it is replaced by the siblings of its path, and the leaf key cannot be derived
  from anything left.
* This file is a SQLite database with ``secure_delete=ON`` (freed cells and pages are overwritten
  with zeros) in rollback-journal ``TRUNCATE`` mode (the journal, which briefly holds the old
  page, is cut to zero length at each commit); it and its journal are created with mode 0600.
  A delivered key's leaf and every superseded segment key are thus gone from every file
  before the answer that delivers the key is sent.
* Commits that add keys (a new segment's key, a new tree's root) are fsynced
  (``synchronous=FULL``): losing them would lose keys. Commits that only ratchet or erase are
  not (``synchronous=OFF``, 0.1 ms instead of 0.9 ms on the test machine): after ``kill -9`` the
  files are what the process wrote (the page cache outlives it), and a ratchet lost to a power
  cut only leaves a key that lags the data, which reading ratchets forward. The price: across
  a power cut, an erasure is on the disk only once the OS has written it back (seconds).

Order of writes (so that a crash at any point loses at most keys nobody has received): a new
segment's key or tree root is written here *before* the store row that needs it; a carve
commits the store (with the sealed reserved keys it makes) and then ratchets the keys here, then
the answer goes out; a delivery commits the store, then punctures the leaves here, then
answers. After a crash a key here may lag the store by a few versions: reading ratchets it
forward (the old key had not been erased yet, but no key cut from those bytes was delivered:
the answer was never sent). At start-up every tree but the new one is cut down to the leaves
of the reserved keys still in the store (:meth:`Keyring.compact`).

Not covered: the raw disk under the files (use an encrypted file system), and a live process's
memory.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from qdnet.kms.puncturable import LEAVES, Frontier, Leaf, Node

SegKey = tuple[str, int]
"""(block_id, segment index)"""

_LABEL = b"qdnet-kms segment key ratchet v1"
NONCE_BYTES = 12


def ratchet(key: bytes, steps: int = 1) -> bytes:
    """The segment key ``steps`` versions later (one-way: SHA-256)."""
    for _ in range(steps):
        key = hashlib.sha256(_LABEL + key).digest()
    return key


def _aad(seg: SegKey, version: int) -> bytes:
    return f"{seg[0]}|{seg[1]}|{version}".encode()


def seal(key: bytes, seg: SegKey, version: int, plain: bytes) -> bytes:
    """``nonce || AES-256-GCM(plain)``, bound to the segment and its version."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plain, _aad(seg, version))


def unseal(key: bytes, seg: SegKey, version: int, blob: bytes) -> bytes:
    """Inverse of :func:`seal` (``cryptography.exceptions.InvalidTag`` if it does not match)."""
    return AESGCM(key).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], _aad(seg, version))


def _key_aad(key_id: str, leaf: Leaf) -> bytes:
    return f"reserved|{key_id}|{leaf[0]}|{leaf[1]}".encode()


def seal_reserved(leaf_key: bytes, key_id: str, leaf: Leaf, material: bytes) -> bytes:
    """A reserved key's material as the store keeps it: ``nonce || AES-256-GCM(material)``
    under its leaf key, bound to the key ID and the leaf."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(leaf_key).encrypt(nonce, material, _key_aad(key_id, leaf))


def unseal_reserved(leaf_key: bytes, key_id: str, leaf: Leaf, blob: bytes) -> bytes:
    """Inverse of :func:`seal_reserved` (``InvalidTag`` if it does not match)."""
    return AESGCM(leaf_key).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], _key_aad(key_id, leaf))


def _private_file(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)
    os.chmod(path, 0o600)


class Keyring:
    """Segment keys and reserved-key trees in one SQLite file (thread-safe, one connection; one
    KMS process per file).

    ``busy_timeout_s`` bounds the wait for another process holding the file.
    """

    def __init__(self, path: str | os.PathLike[str], busy_timeout_s: float = 3.0) -> None:
        self.path = Path(path)
        _private_file(self.path)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
        self._db.execute("PRAGMA secure_delete=ON")
        self._db.execute("PRAGMA journal_mode=TRUNCATE")
        self._db.execute("PRAGMA synchronous=FULL")
        self._durable = True
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS seg_keys (block_id TEXT NOT NULL, idx INTEGER NOT NULL, "
            "version INTEGER NOT NULL, key BLOB NOT NULL, PRIMARY KEY (block_id, idx))"
        )
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS ggm_nodes (tree INTEGER NOT NULL, depth INTEGER NOT NULL,"
            " idx INTEGER NOT NULL, key BLOB NOT NULL, PRIMARY KEY (tree, depth, idx))"
        )
        self._has_legacy = (
            self._db.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'key_material'"
            ).fetchone()
            is not None
        )
        self._cache: dict[SegKey, tuple[int, bytes]] = {}
        self._frontier = Frontier(
            {(int(t), int(d), int(i)): bytes(k)
             for t, d, i, k in self._db.execute("SELECT tree, depth, idx, key FROM ggm_nodes")}
        )  # fmt: skip
        self._tree: int | None = None  # this process's tree (made at the first allocate)
        self._next_leaf = 0

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            self._db.close()

    def _write(
        self, statements: Iterable[tuple[str, Sequence[object]]], durable: bool = False
    ) -> None:
        db = self._db
        if durable != self._durable:
            db.execute(f"PRAGMA synchronous={'FULL' if durable else 'OFF'}")
            self._durable = durable
        db.execute("BEGIN IMMEDIATE")
        try:
            for sql, args in statements:
                db.execute(sql, args)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    # --- segment keys ------------------------------------------------------------------------

    def new_segments(self, segs: Sequence[SegKey]) -> dict[SegKey, bytes]:
        """Fresh random keys (version 0) for new segments, durable before they are used."""
        keys = {s: os.urandom(32) for s in segs}
        with self._lock:
            self._write(
                (
                    ("INSERT OR REPLACE INTO seg_keys VALUES (?, ?, 0, ?)", (s[0], s[1], k))
                    for s, k in keys.items()
                ),
                durable=True,
            )
            for s, k in keys.items():
                self._cache[s] = (0, k)
        return keys

    def segment_key(self, seg: SegKey, version: int) -> bytes:
        """The key of version ``version`` of ``seg`` (ratcheted forward if the file lags)."""
        with self._lock:
            got = self._cache.get(seg)
            if got is None or got[0] > version:
                row = self._db.execute(
                    "SELECT version, key FROM seg_keys WHERE block_id = ? AND idx = ?", seg
                ).fetchone()
                if row is None:
                    raise LookupError(f"no key for segment {seg[1]} of block {seg[0]}")
                got = (int(row[0]), bytes(row[1]))
            have, key = got
            if have > version:
                raise LookupError(f"segment {seg[1]} of block {seg[0]}: key is newer than data")
            key = ratchet(key, version - have)
            self._cache[seg] = (version, key)
            return key

    def commit(
        self, versions: Sequence[tuple[SegKey, int]] = (), gone: Sequence[SegKey] = ()
    ) -> None:
        """After the store committed: segments now at ``versions`` (older keys erased) and
        segments ``gone`` (keys erased); one transaction, not fsynced (see the module notes)."""
        if not (versions or gone):
            return
        with self._lock:
            updates = []
            for seg, version in versions:
                got = self._cache.get(seg)
                if got is None or got[0] > version:
                    row = self._db.execute(
                        "SELECT version, key FROM seg_keys WHERE block_id = ? AND idx = ?", seg
                    ).fetchone()
                    if row is None:
                        continue
                    got = (int(row[0]), bytes(row[1]))
                key = ratchet(got[1], version - got[0])
                updates.append((seg, version, key))
            self._write(
                [
                    (
                        "UPDATE seg_keys SET version = ?, key = ? WHERE block_id = ? AND idx = ?",
                        (v, k, s[0], s[1]),
                    )
                    for s, v, k in updates
                ]
                + [("DELETE FROM seg_keys WHERE block_id = ? AND idx = ?", s) for s in gone]
            )
            for s, v, k in updates:
                self._cache[s] = (v, k)
            for s in gone:
                self._cache.pop(s, None)

    # --- reserved keys: leaves of puncturable trees (see qdnet.kms.puncturable) -------------

    def allocate(self, n: int) -> list[tuple[Leaf, bytes]]:
        """``n`` fresh leaves with their keys, to seal ``n`` new reserved keys under.

        Nothing is written unless a new tree is needed (its root is fsynced before any leaf of
        it is handed out); a leaf is never handed out twice, even across a crash (each start
        opens a new tree).
        """
        out: list[tuple[Leaf, bytes]] = []
        with self._lock:
            while len(out) < n:
                if self._tree is None or self._next_leaf >= LEAVES:
                    self._new_tree()
                assert self._tree is not None
                take = min(n - len(out), LEAVES - self._next_leaf)
                for i in range(self._next_leaf, self._next_leaf + take):
                    key = self._frontier.next_leaf_key((self._tree, i))
                    assert key is not None  # leaves after _next_leaf are never punctured
                    out.append(((self._tree, i), key))
                self._next_leaf += take
        return out

    def _new_tree(self) -> None:
        tree = int.from_bytes(os.urandom(8), "big") >> 1  # random: never reused
        root = os.urandom(32)
        self._write([("INSERT INTO ggm_nodes VALUES (?, 0, 0, ?)", (tree, root))], durable=True)
        self._frontier.nodes[(tree, 0, 0)] = root
        self._tree, self._next_leaf = tree, 0

    def open_leaves(self, wanted: Sequence[Leaf], erase: Sequence[Leaf]) -> dict[Leaf, bytes]:
        """Keys of the leaves ``wanted`` (those still held); the leaves in ``erase`` are then
        punctured, in one transaction, before this returns."""
        with self._lock:
            got = {}
            for leaf in wanted:
                key = self._frontier.leaf_key(leaf)
                if key is not None:
                    got[leaf] = key
            self._puncture(erase)
            return got

    def puncture(self, leaves: Sequence[Leaf]) -> None:
        """Erase the keys of ``leaves`` (delivered, expired or orphaned reserved keys)."""
        if leaves:
            with self._lock:
                self._puncture(leaves)

    def _puncture(self, leaves: Sequence[Leaf]) -> None:
        if not leaves:
            return
        removed, added = self._frontier.puncture(list(leaves))
        try:
            self._store_changes(removed, added)
        except BaseException:
            self._frontier.undo(removed, added)
            raise

    def _store_changes(self, removed: Iterable[Node], added: dict[Node, bytes]) -> None:
        deletes: list[tuple[str, Sequence[object]]] = [
            ("DELETE FROM ggm_nodes WHERE tree = ? AND depth = ? AND idx = ?", n) for n in removed
        ]
        inserts: list[tuple[str, Sequence[object]]] = [
            ("INSERT OR REPLACE INTO ggm_nodes VALUES (?, ?, ?, ?)", (*n, k))
            for n, k in added.items()
        ]
        self._write(deletes + inserts)

    def holds(self, leaf: Leaf) -> bool:
        """Whether ``leaf``'s key can still be derived from this file."""
        with self._lock:
            return self._frontier.ancestor(leaf) is not None

    def compact(self, live: dict[int, set[int]]) -> set[Leaf]:
        """Startup clean-up: puncture every leaf of every tree but this process's own except
        the ``live`` ones (reserved keys in the store, by tree); returns the live leaves whose
        key is gone (their reserved keys can no longer be opened)."""
        with self._lock:
            lost: set[Leaf] = set()
            trees = {n[0] for n in self._frontier.nodes} - {self._tree}
            removed: dict[Node, bytes] = {}
            added: dict[Node, bytes] = {}
            for tree in trees:  # trees do not share nodes: the changes add up
                gone, new, missing = self._frontier.restrict(tree, live.get(tree, set()))
                removed.update(gone)
                added.update(new)
                lost |= {(tree, i) for i in missing}
            try:
                self._store_changes(removed, added)
            except BaseException:
                self._frontier.undo(removed, added)
                raise
            for tree, leaves in live.items():
                if tree not in trees:  # this process's tree, or one with nothing left
                    lost |= {
                        (tree, i) for i in leaves if self._frontier.ancestor((tree, i)) is None
                    }
            return lost

    def legacy_materials(self) -> dict[str, bytes]:
        """Reserved keys kept here in clear by a qdnet before the trees (to be moved)."""
        with self._lock:
            if not self._has_legacy:
                return {}
            rows = self._db.execute("SELECT key_id, material FROM key_material").fetchall()
            return {str(k): bytes(m) for k, m in rows}

    def drop_legacy(self) -> None:
        """Erase the legacy reserved keys (once they are sealed in the store)."""
        with self._lock:
            if self._has_legacy:
                self._write([("DELETE FROM key_material", ()), ("DROP TABLE key_material", ())])
                self._has_legacy = False

    def segment_ids(self) -> set[SegKey]:
        """Every segment with a key here (for the startup clean-up)."""
        with self._lock:
            return {
                (str(b), int(i)) for b, i in self._db.execute("SELECT block_id, idx FROM seg_keys")
            }

    def erase_segments(self, segs: Sequence[SegKey]) -> None:
        """Erase the keys of segments the store no longer has."""
        if segs:
            with self._lock:
                self._write(
                    ("DELETE FROM seg_keys WHERE block_id = ? AND idx = ?", s) for s in segs
                )
                for s in segs:
                    self._cache.pop(s, None)
