"""Key store: carving from both ends, peer application, exactly-once delivery, reconciliation,
expiry, and the keyring (sealed bytes, erased keys, private files)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidTag
from sqlalchemy import select

from qdnet.kms.keyring import ratchet, unseal
from qdnet.kms.store import (
    SEGMENT_BYTES,
    Allocation,
    KeyStore,
    Piece,
    Reservation,
    TakeOutcome,
    segments,
)
from tests.kms.conftest import make_block, reserved_leaves, store_with_block


def store(tmp_path: Path, name: str) -> KeyStore:
    return KeyStore(f"sqlite:///{tmp_path / name}.sqlite")


def carve(
    s: KeyStore, sizes: list[int], front: bool, keep: list[str] | None = None
) -> list[Allocation | None]:
    """Plan and consume at once (one key per request, kept for ``keep``)."""
    out = s.plan(sizes, front)
    batch: list[tuple[list[Piece], list[Reservation]]] = [
        (a.pieces, [(f"own-{i}", 8 * len(a.material), "m", keep or [])])
        for i, a in enumerate(out)
        if a is not None
    ]
    assert all(s.apply_allocations(batch, front))
    return out


@pytest.fixture
def pair(tmp_path: Path) -> tuple[KeyStore, KeyStore]:
    a, b = store(tmp_path, "a"), store(tmp_path, "b")
    for blk in (make_block(10000), make_block(3000)):
        assert a.ingest(blk) and b.ingest(blk)
    for s in (a, b):
        s.mark_shared(s.unshared_block_ids())
    return a, b


def test_ingest_is_idempotent_and_never_resurrects(tmp_path: Path) -> None:
    s = store(tmp_path, "s")
    blk = make_block(100)
    assert s.ingest(blk)
    s.mark_shared([blk.block_id])
    (alloc,) = carve(s, [100], True)
    assert alloc is not None and alloc.material == blk.key
    assert s.available_bytes() == 0
    assert not s.ingest(blk)  # consumed bytes do not come back
    assert s.available_bytes() == 0


def test_plan_consumes_nothing(tmp_path: Path) -> None:
    s = store(tmp_path, "s")
    blk = make_block(100)
    s.ingest(blk)
    s.mark_shared([blk.block_id])
    first = s.plan([40], True)
    assert s.plan([40], True) == first and s.available_bytes() == 100


def test_unshared_blocks_are_not_allocated(tmp_path: Path) -> None:
    s = store(tmp_path, "s")
    s.ingest(make_block(64))
    assert s.plan([32], True) == [None]
    s.mark_shared(s.unshared_block_ids())
    assert s.plan([32], True)[0] is not None


def test_both_ends_carve_disjoint_bytes_and_peer_gets_same_keys(
    pair: tuple[KeyStore, KeyStore],
) -> None:
    a, b = pair
    total = a.available_bytes()
    fa = carve(a, [32, 5000, 64], True)  # spans a segment boundary
    fb = carve(b, [32, 100], False)
    assert all(x is not None for x in fa + fb)
    # each side applies the other's carvings and keeps the keys for its slaves
    specs_a: list[tuple[list[Piece], list[Reservation]]] = [
        (x.pieces, [(f"00000000-0000-4000-8000-00000000000{i}", len(x.material) * 8, "m", ["s"])])
        for i, x in enumerate(fa)
        if x is not None
    ]
    assert b.apply_allocations(specs_a, True) == [True, True, True]
    specs_b: list[tuple[list[Piece], list[Reservation]]] = [
        (x.pieces, [(f"k{i}", len(x.material) * 8, "n", [])]) for i, x in enumerate(fb) if x
    ]
    assert a.apply_allocations(specs_b, False) == [True, True]
    used = sum(len(x.material) for x in fa + fb if x)
    assert a.available_bytes() == b.available_bytes() == total - used
    outcome, got = b.take_keys(["00000000-0000-4000-8000-000000000001"], "m", "s")
    assert outcome is TakeOutcome.OK and fa[1] is not None and got[0].material == fa[1].material
    # replaying an allocation is refused and changes nothing
    assert b.apply_allocations(specs_a[:1], True) == [False]
    assert a.available_bytes() == b.available_bytes()


def test_overlap_when_both_ends_meet_is_refused(tmp_path: Path) -> None:
    a, b = store(tmp_path, "a"), store(tmp_path, "b")
    blk = make_block(100)
    for s in (a, b):
        s.ingest(blk)
        s.mark_shared([blk.block_id])
    (x,) = carve(a, [60], True)
    (y,) = carve(b, [60], False)  # concurrently, overlapping in the middle
    assert x is not None and y is not None
    assert b.apply_allocations([(x.pieces, [("k", 480, "m", [])])], True) == [False]
    assert a.apply_allocations([(y.pieces, [("k", 480, "m", [])])], False) == [False]
    assert a.plan([41], True) == [None]  # 40 bytes are left
    bogus = [Piece(blk.block_id, 10**9, 8)], [Piece("nope", 0, 8)]
    assert b.apply_allocations([(p, [("k", 64, "m", [])]) for p in bogus], True) == [False, False]


def test_take_keys_once_only_and_only_for_slaves(tmp_path: Path) -> None:
    s, blk, x = store_with_block(tmp_path, 64)
    keep: list[tuple[list[Piece], list[Reservation]]] = [
        (x.pieces, [("k1", 256, "app-a", ["app-b", "app-c"]), ("k2", 256, "app-a", ["app-b"])])
    ]
    assert s.apply_allocations(keep, True) == [True]
    leaves = reserved_leaves(s)
    assert len(set(leaves.values())) == 2 and all(map(s.keyring.holds, leaves.values()))
    assert s.take_keys(["k1"], "app-a", "app-x")[0] is TakeOutcome.UNAUTHORIZED
    assert s.take_keys(["k1"], "app-z", "app-b")[0] is TakeOutcome.NOT_FOUND
    assert s.take_keys(["k1", "nope"], "app-a", "app-b")[0] is TakeOutcome.NOT_FOUND
    outcome, got = s.take_keys(["k1", "k2"], "app-a", "app-b")
    assert outcome is TakeOutcome.OK and [g.material for g in got] == [blk.key[:32], blk.key[32:]]
    assert s.take_keys(["k2"], "app-a", "app-b")[0] is TakeOutcome.NOT_FOUND
    assert s.take_keys(["k1"], "app-a", "app-b")[0] is TakeOutcome.UNAUTHORIZED
    assert s.reserved_key_ids() == {"k1": ["app-c"]}
    # k2's leaf is punctured with its only delivery; k1's waits for its last slave
    assert not s.keyring.holds(leaves["k2"]) and s.keyring.holds(leaves["k1"])
    assert s.take_keys(["k1"], "app-a", "app-c")[0] is TakeOutcome.OK
    assert s.reserved_key_ids() == {}
    assert s.pool_summary()["reserved_keys"] == 0
    assert not s.keyring.holds(leaves["k1"])  # erased with the last delivery


def test_take_many_answers_a_batch_as_one_request_after_the_other(tmp_path: Path) -> None:
    """Group commit of dec_keys: one transaction, but each request sees the ones before it (a
    key fetched twice in one batch goes to the first request only)."""
    s, blk, x = store_with_block(tmp_path, 96)
    specs: list[Reservation] = [
        ("k1", 256, "app-a", ["app-b", "app-c"]),
        ("k2", 256, "app-a", ["app-b"]),
        ("k3", 256, "app-a", ["app-b"]),
    ]
    assert s.apply_allocations([(x.pieces, specs)], True) == [True]
    leaves = reserved_leaves(s)
    answers = s.take_many(
        [
            (["k2"], "app-a", "app-b"),
            (["k2"], "app-a", "app-b"),  # the same key again: already handed out
            (["k1", "k3"], "app-a", "app-x"),  # not a slave: nothing taken
            (["k1", "k3"], "app-a", "app-b"),
            (["k1"], "app-a", "app-b"),  # k1 still waits for app-c, not for app-b
            (["k1"], "app-a", "app-c"),
        ]
    )
    outcomes = [a[0] for a in answers]
    assert outcomes == [
        TakeOutcome.OK,
        TakeOutcome.NOT_FOUND,
        TakeOutcome.UNAUTHORIZED,
        TakeOutcome.OK,
        TakeOutcome.UNAUTHORIZED,
        TakeOutcome.OK,
    ]
    assert [k.material for k in answers[0][1]] == [blk.key[32:64]]
    assert [k.material for k in answers[3][1]] == [blk.key[:32], blk.key[64:]]
    assert [k.material for k in answers[5][1]] == [blk.key[:32]]
    assert s.reserved_key_ids() == {} and not any(map(s.keyring.holds, leaves.values()))


def test_segments_cover_whole_block(tmp_path: Path) -> None:
    s = store(tmp_path, "s")
    blk = make_block(SEGMENT_BYTES * 2 + 8)
    s.ingest(blk)
    s.mark_shared([blk.block_id])
    out = carve(s, [8, SEGMENT_BYTES * 2], False)
    assert out[0] is not None and out[0].material == blk.key[-8:]
    # from the back: the last segments first, each segment's bytes in their own order
    n = SEGMENT_BYTES
    assert out[1] is not None and out[1].material == blk.key[n : 2 * n] + blk.key[:n]
    assert [p.offset for p in out[1].pieces] == [n, 0]
    assert s.available_bytes() == 0


def test_reconciliation_takes_the_union_of_consumed_bytes(pair: tuple[KeyStore, KeyStore]) -> None:
    a, b = pair
    total = a.available_bytes()
    carve(a, [100, SEGMENT_BYTES + 50], True)  # a crash: never applied at b
    carve(b, [70], False)  # a lost answer: never applied at a
    ids = a.shared_block_ids()
    assert sorted(ids) == sorted(b.shared_block_ids())
    gained_b = b.merge_segment_state(a.segment_state(ids))
    gained_a = a.merge_segment_state(b.segment_state(ids))
    assert (gained_a, gained_b) == (70, 100 + SEGMENT_BYTES + 50)
    assert a.segment_state(ids) == b.segment_state(ids)
    assert a.available_bytes() == b.available_bytes() == total - 100 - SEGMENT_BYTES - 50 - 70
    assert b.merge_segment_state(a.segment_state(ids)) == 0  # idempotent
    # the pools go on in step: a carve from either end is accepted by the other
    (x,) = a.plan([64], True)
    assert x is not None
    assert b.apply_allocations([(x.pieces, [("k", 512, "m", [])])], True) == [True]


def test_reserved_keys_expire_and_are_erased(tmp_path: Path) -> None:
    s = store(tmp_path, "s")
    blk = make_block(64)
    s.ingest(blk)
    s.mark_shared([blk.block_id])
    carve(s, [32, 32], True, keep=["app-b"])
    leaves = reserved_leaves(s)
    assert s.expire_reserved(3600) == 0 and len(s.reserved_key_ids()) == 2
    assert all(map(s.keyring.holds, leaves.values()))
    assert s.expire_reserved(0) == 2
    assert s.reserved_key_ids() == {} and not any(map(s.keyring.holds, leaves.values()))


def test_store_holds_only_sealed_bytes_and_old_versions_stay_sealed(tmp_path: Path) -> None:
    s = store(tmp_path, "s")
    blk = make_block(SEGMENT_BYTES)
    s.ingest(blk)
    s.mark_shared([blk.block_id])
    with s.engine.connect() as c:
        (v0,) = c.execute(select(segments.c.data)).one()
    carve(s, [100], True)
    with s.engine.connect() as c:
        (v1,) = c.execute(select(segments.c.data)).one()
    for blob in (v0, v1):
        assert blk.key[:16] not in blob and blk.key[200:216] not in blob
    seg = (blk.block_id, 0)
    current = s.keyring.segment_key(seg, 1)
    assert unseal(current, seg, 1, v1) == blk.key[100:]
    # the old version (still in the database files) opens with no key the keyring holds
    for candidate in (current, ratchet(current), ratchet(current, 2)):
        with pytest.raises(InvalidTag):
            unseal(candidate, seg, 0, v0)
    for path in (tmp_path / "s.sqlite", s.keyring.path):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path


def test_store_made_before_sealing_is_refused_clearly(tmp_path: Path) -> None:
    import sqlite3

    db = tmp_path / "old.sqlite"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE kms_segments (block_id TEXT, idx INTEGER, data BLOB)")
    con.close()
    with pytest.raises(RuntimeError, match="older qdnet"):
        KeyStore(f"sqlite:///{db}")


def test_startup_clean_up_erases_what_a_crash_left(tmp_path: Path) -> None:
    s = store(tmp_path, "s")
    blk, later = make_block(SEGMENT_BYTES * 2), make_block(64)
    s.ingest(blk)
    s.mark_shared([blk.block_id])
    s.keyring.new_segments([(later.block_id, 0)])  # an ingest under way in another process
    carve(s, [SEGMENT_BYTES], True)
    with s.engine.begin() as c:  # a crash between the store's commit and the keyring's
        c.execute(segments.delete().where(segments.c.idx == 1))
    assert (blk.block_id, 1) in s.keyring.segment_ids()
    assert s.collect_orphans() == 1
    assert s.keyring.segment_ids() == {(later.block_id, 0)}
