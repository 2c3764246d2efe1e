"""The puncturable tree (GGM) and the keyring's reserved-key leaves: every leaf but the
punctured ones stays derivable with its original key, a punctured leaf has no known node above
it, leaves are never handed out twice (across restarts too), start-up compaction keeps exactly
the live leaves, and a keyring of an older qdnet (reserved keys in clear) is moved into the
store and erased."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy.exc import IntegrityError

from qdnet.kms.keyring import Keyring
from qdnet.kms.puncturable import DEPTH, Frontier, child, descend
from qdnet.kms.store import KeyStore, Reservation, TakeOutcome
from tests.kms.conftest import reserved_leaves, store_with_block

TREE = 7


def _reference_leaf(root: bytes, leaf: int) -> bytes:
    """Leaf ``leaf`` straight from the root, bit by bit (GGM's definition)."""
    key = root
    for level in range(DEPTH):
        bit = (leaf >> (DEPTH - 1 - level)) & 1
        key = hashlib.sha256(b"qdnet-kms reserved-key tree v1" + bytes((bit,)) + key).digest()
    return key


def test_children_are_sha256_of_label_bit_and_parent() -> None:
    root = bytes(range(32))
    assert child(root, 1) == hashlib.sha256(b"qdnet-kms reserved-key tree v1\x01" + root).digest()
    for leaf in (0, 1, 12345, (1 << DEPTH) - 1):
        assert descend(root, 0, leaf) == _reference_leaf(root, leaf)


def test_punctured_leaves_are_gone_and_the_others_unchanged() -> None:
    rng = np.random.default_rng(13)
    root = rng.bytes(32)
    frontier = Frontier({(TREE, 0, 0): root})
    sample = [int(x) for x in rng.choice(1 << DEPTH, size=400, replace=False)]
    punctured = set(sample[:150])
    batches = [sample[i : min(i + 20, 150)] for i in range(0, 150, 20)]
    on_disk = dict(frontier.nodes)
    for batch in batches:
        removed, added = frontier.puncture([(TREE, i) for i in batch])
        assert set(removed) <= set(on_disk) and not set(added) & set(removed)
        assert all(on_disk[n] == k for n, k in removed.items())
        for n in removed:
            del on_disk[n]
        on_disk.update(added)
        assert on_disk == frontier.nodes  # the changes replay the frontier exactly
    for i in punctured:
        assert frontier.leaf_key((TREE, i)) is None
        # no known node lies on its path: nothing left derives it
        assert all((TREE, d, i >> (DEPTH - d)) not in frontier.nodes for d in range(DEPTH + 1))
    for i in sample[150:]:
        assert frontier.leaf_key((TREE, i)) == _reference_leaf(root, i)
    assert frontier.puncture([(TREE, sample[0])]) == ({}, {})  # twice: nothing to do
    before = dict(frontier.nodes)
    frontier.undo(*frontier.puncture([(TREE, i) for i in sample[150:170]]))
    assert frontier.nodes == before  # a puncture whose write failed is taken back
    # known nodes never overlap: each is the only known node on its own path
    for tree, depth, idx in frontier.nodes:
        above = [(tree, d, idx >> (depth - d)) for d in range(depth)]
        assert not any(n in frontier.nodes for n in above)


def test_in_order_punctures_keep_the_frontier_small() -> None:
    frontier = Frontier({(TREE, 0, 0): bytes(32)})
    for i in range(5000):
        frontier.puncture([(TREE, i)])
        assert len(frontier.nodes) <= DEPTH
    assert frontier.leaf_key((TREE, 4999)) is None
    assert frontier.leaf_key((TREE, 5000)) == _reference_leaf(bytes(32), 5000)


def test_next_leaf_key_reuses_the_path_and_follows_punctures() -> None:
    root = bytes([5]) * 32
    frontier = Frontier({(TREE, 0, 0): root})
    for i in [0, 1, 2, 3, 8, 9, 1000, 1001, (1 << DEPTH) - 1, 4, 5]:
        assert frontier.next_leaf_key((TREE, i)) == _reference_leaf(root, i)
        frontier.puncture([(TREE, i - 1)] if i % 3 == 0 and i else [])
    frontier.puncture([(TREE, 1000), (TREE, 6)])
    assert frontier.next_leaf_key((TREE, 1000)) is None
    assert frontier.next_leaf_key((TREE, 7)) == _reference_leaf(root, 7)
    assert frontier.next_leaf_key((TREE, 1001)) == _reference_leaf(root, 1001)


def test_restrict_keeps_exactly_the_live_leaves() -> None:
    root = bytes([9]) * 32
    frontier = Frontier({(TREE, 0, 0): root, (TREE + 1, 0, 0): root})
    frontier.puncture([(TREE, 3)])
    removed, added, lost = frontier.restrict(TREE, {1, 3, 900})
    assert lost == {3}
    assert set(frontier.nodes) == {(TREE, DEPTH, 1), (TREE, DEPTH, 900), (TREE + 1, 0, 0)}
    assert frontier.leaf_key((TREE, 900)) == _reference_leaf(root, 900)
    assert frontier.leaf_key((TREE, 2)) is None
    assert set(added) == {(TREE, DEPTH, 1), (TREE, DEPTH, 900)} and (TREE, 0, 0) not in removed


def test_keyring_leaves_are_unique_across_restarts_and_compacted(tmp_path: Path) -> None:
    path = tmp_path / "k.keyring"
    ring = Keyring(path)
    first = ring.allocate(5)
    assert [leaf[1] for leaf, _ in first] == [0, 1, 2, 3, 4]
    ring.puncture([first[1][0]])
    ring.close()
    ring = Keyring(path)  # a restart (or a crash): a new tree, never the old leaves again
    second = ring.allocate(3)
    assert {leaf[0] for leaf, _ in second} != {first[0][0][0]}
    assert ring.holds(first[0][0]) and not ring.holds(first[1][0])
    # the old tree's unallocated leaves are still derivable until start-up compaction
    old_tree = first[0][0][0]
    assert ring.holds((old_tree, 99))
    lost = ring.compact({old_tree: {0, 1, 3}})
    assert lost == {(old_tree, 1)}  # punctured before: that reserved key cannot be opened
    assert ring.holds((old_tree, 0)) and ring.holds((old_tree, 3))
    assert not ring.holds((old_tree, 2)) and not ring.holds((old_tree, 99))
    assert all(ring.holds(leaf) for leaf, _ in second)  # this process's tree is left alone
    ring.close()
    # what the file holds after compaction: the two live leaves' keys and the new tree's root
    con = sqlite3.connect(path)
    rows = con.execute("SELECT tree, depth, idx, key FROM ggm_nodes").fetchall()
    con.close()
    assert sorted((t == old_tree, d, i) for t, d, i, _ in rows) == [
        (False, 0, 0),
        (True, DEPTH, 0),
        (True, DEPTH, 3),
    ]
    assert {bytes(k) for t, _, i, k in rows if t == old_tree} == {first[0][1], first[3][1]}


def test_reserved_keys_are_sealed_in_the_store_and_survive_a_restart(tmp_path: Path) -> None:
    s, blk, x = store_with_block(tmp_path, 96)
    url = s.url
    spec: list[Reservation] = [(f"k{i}", 256, "app-a", ["app-b"]) for i in range(3)]
    assert s.apply_allocations([(x.pieces, spec)], True) == [True]
    raw = b"".join(f.read_bytes() for f in tmp_path.glob("s.sqlite*"))  # WAL included
    s.close()
    assert all(blk.key[i : i + 32] not in raw for i in (0, 32, 64))  # never in clear
    s = KeyStore(url)  # restart: the keys open with the old tree's leaves
    assert s.collect_orphans() == 0
    assert s.take_keys(["k1"], "app-a", "app-b")[1][0].material == blk.key[32:64]
    s.close()
    s = KeyStore(url)
    leaves = reserved_leaves(s)
    assert s.collect_orphans() == 0 and all(map(s.keyring.holds, leaves.values()))
    got = s.take_many([(["k0"], "app-a", "app-b"), (["k2"], "app-a", "app-b")])
    assert [g[1][0].material for g in got] == [blk.key[:32], blk.key[64:]]
    assert not any(map(s.keyring.holds, leaves.values()))
    s.close()


def test_a_key_whose_leaf_is_gone_is_not_found_and_collected(tmp_path: Path) -> None:
    """A key whose leaf was punctured while its row stayed (a commit that raised after it had
    landed): never a wrong key, and the start-up clean-up removes the row."""
    s, blk, x = store_with_block(tmp_path, 64)
    spec: list[Reservation] = [("k0", 256, "app-a", ["app-b"]), ("k1", 256, "app-a", ["app-b"])]
    assert s.apply_allocations([(x.pieces, spec)], True) == [True]
    leaves = reserved_leaves(s)
    s.keyring.puncture([leaves["k0"]])
    assert s.collect_orphans() == 1  # k0's row: its key is gone
    assert set(s.reserved_key_ids()) == {"k1"}
    assert s.take_keys(["k0"], "app-a", "app-b")[0] is TakeOutcome.NOT_FOUND
    assert s.take_keys(["k1"], "app-a", "app-b")[1][0].material == blk.key[32:]
    s.close()


def test_a_keyring_of_an_older_qdnet_is_moved_into_the_store(tmp_path: Path) -> None:
    s, _, x = store_with_block(tmp_path, 64)
    url = s.url
    spec: list[Reservation] = [("old-1", 256, "app-a", ["app-b"]), ("old-2", 256, "app-a", ["b"])]
    assert s.apply_allocations([(x.pieces, spec)], True) == [True]
    keyring = s.keyring.path
    s.close()
    # what an older qdnet left: the material in the keyring in clear, none in the store
    con = sqlite3.connect(keyring)
    con.execute("CREATE TABLE key_material (key_id TEXT PRIMARY KEY, material BLOB NOT NULL)")
    con.execute("INSERT INTO key_material VALUES ('old-1', ?)", (b"\x11" * 32,))
    con.commit()
    con.close()
    con = sqlite3.connect(tmp_path / "s.sqlite")
    con.execute("UPDATE kms_keys SET leaf_tree = NULL, leaf = NULL, material = NULL")
    con.commit()
    con.close()
    s = KeyStore(url)
    assert s.collect_orphans() == 1  # old-2 had no material anywhere: gone, as before
    assert s.take_keys(["old-1"], "app-a", "app-b")[1][0].material == b"\x11" * 32
    s.close()
    con = sqlite3.connect(keyring)
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    con.close()
    assert "key_material" not in tables
    assert b"\x11" * 32 not in keyring.read_bytes()


def test_a_puncture_that_cannot_be_written_is_taken_back(tmp_path: Path) -> None:
    ring = Keyring(tmp_path / "k.keyring", busy_timeout_s=0.05)
    ((leaf, _),) = ring.allocate(1)
    other = sqlite3.connect(ring.path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")  # another process holds the file
    with pytest.raises(sqlite3.OperationalError):
        ring.puncture([leaf])
    assert ring.holds(leaf)  # memory and file still agree
    other.execute("ROLLBACK")
    other.close()
    ring.puncture([leaf])
    assert not ring.holds(leaf)
    ring.close()
    assert not Keyring(tmp_path / "k.keyring").holds(leaf)


def test_a_rolled_back_transaction_punctures_the_leaves_it_sealed_under(tmp_path: Path) -> None:
    s, _, x = store_with_block(tmp_path, 64)
    twice: list[Reservation] = [("dup", 256, "app-a", ["app-b"]), ("dup", 256, "app-a", ["b"])]
    with pytest.raises(IntegrityError):  # the second row breaks the primary key: rolled back
        s.apply_allocations([(x.pieces, twice)], True)
    ((tree, after), _) = s.keyring.allocate(1)[0]
    assert after == 2  # leaves 0 and 1 sealed the two rows that never landed
    assert not s.keyring.holds((tree, 0)) and not s.keyring.holds((tree, 1))
    assert s.reserved_key_ids() == {} and s.available_bytes() == 64
    s.close()
