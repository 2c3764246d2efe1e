"""Key store: carving from both ends, peer application, exactly-once delivery."""

from __future__ import annotations

from pathlib import Path

import pytest

from qdnet.kms.store import SEGMENT_BYTES, KeyStore, Piece, TakeOutcome
from tests.kms.conftest import make_block


@pytest.fixture
def pair(tmp_path: Path) -> tuple[KeyStore, KeyStore]:
    a = KeyStore(f"sqlite:///{tmp_path / 'a.sqlite'}")
    b = KeyStore(f"sqlite:///{tmp_path / 'b.sqlite'}")
    for blk in (make_block(10000), make_block(3000)):
        assert a.ingest(blk) and b.ingest(blk)
    for s in (a, b):
        s.mark_shared(s.unshared_block_ids())
    return a, b


def test_ingest_is_idempotent_and_never_resurrects(tmp_path: Path) -> None:
    s = KeyStore(f"sqlite:///{tmp_path / 's.sqlite'}")
    blk = make_block(100)
    assert s.ingest(blk)
    s.mark_shared([blk.block_id])
    (alloc,) = s.allocate([100], from_front=True)
    assert alloc is not None and alloc.material == blk.key
    assert s.available_bytes() == 0
    assert not s.ingest(blk)  # consumed bytes do not come back
    assert s.available_bytes() == 0


def test_unshared_blocks_are_not_allocated(tmp_path: Path) -> None:
    s = KeyStore(f"sqlite:///{tmp_path / 's.sqlite'}")
    s.ingest(make_block(64))
    assert s.allocate([32], from_front=True) == [None]
    s.mark_shared(s.unshared_block_ids())
    assert s.allocate([32], from_front=True)[0] is not None


def test_both_ends_carve_disjoint_bytes_and_peer_gets_same_keys(
    pair: tuple[KeyStore, KeyStore],
) -> None:
    a, b = pair
    total = a.available_bytes()
    fa = a.allocate([32, 5000, 64], from_front=True)  # spans a segment boundary
    fb = b.allocate([32, 100], from_front=False)
    assert all(x is not None for x in fa + fb)
    # each side applies the other's carvings and keeps the keys for its slaves
    specs_a = [
        (x.pieces, [(f"00000000-0000-4000-8000-00000000000{i}", len(x.material) * 8, "m", ["s"])])
        for i, x in enumerate(fa)
        if x is not None
    ]
    assert b.apply_peer_allocations(specs_a, peer_from_front=True) == [True, True, True]
    specs_b = [(x.pieces, [(f"k{i}", len(x.material) * 8, "n", [])]) for i, x in enumerate(fb) if x]
    assert a.apply_peer_allocations(specs_b, peer_from_front=False) == [True, True]
    used = sum(len(x.material) for x in fa + fb if x)
    assert a.available_bytes() == b.available_bytes() == total - used
    outcome, got = b.take_keys(["00000000-0000-4000-8000-000000000001"], "m", "s")
    assert outcome is TakeOutcome.OK and fa[1] is not None and got[0].material == fa[1].material
    # replaying an allocation is refused and changes nothing
    assert b.apply_peer_allocations(specs_a[:1], peer_from_front=True) == [False]
    assert a.available_bytes() == b.available_bytes()


def test_overlap_when_both_ends_meet_is_refused(tmp_path: Path) -> None:
    a = KeyStore(f"sqlite:///{tmp_path / 'a.sqlite'}")
    b = KeyStore(f"sqlite:///{tmp_path / 'b.sqlite'}")
    blk = make_block(100)
    for s in (a, b):
        s.ingest(blk)
        s.mark_shared([blk.block_id])
    (x,) = a.allocate([60], from_front=True)
    (y,) = b.allocate([60], from_front=False)  # concurrently, overlapping in the middle
    assert x is not None and y is not None
    assert b.apply_peer_allocations([(x.pieces, [("k", 480, "m", [])])], True) == [False]
    assert a.apply_peer_allocations([(y.pieces, [("k", 480, "m", [])])], False) == [False]
    assert a.allocate([41], from_front=True) == [None]  # 40 bytes are left
    bogus = [Piece(blk.block_id, 10**9, 8)], [Piece("nope", 0, 8)]
    assert b.apply_peer_allocations([(p, [("k", 64, "m", [])]) for p in bogus], True) == [
        False,
        False,
    ]


def test_take_keys_once_only_and_only_for_slaves(tmp_path: Path) -> None:
    s = KeyStore(f"sqlite:///{tmp_path / 's.sqlite'}")
    s.reserve(
        [
            ("k1", 256, b"\x01" * 32, "app-a", ["app-b", "app-c"]),
            ("k2", 256, b"\x02" * 32, "app-a", ["app-b"]),
        ]
    )
    assert s.take_keys(["k1"], "app-a", "app-x")[0] is TakeOutcome.UNAUTHORIZED
    assert s.take_keys(["k1"], "app-z", "app-b")[0] is TakeOutcome.NOT_FOUND
    assert s.take_keys(["k1", "nope"], "app-a", "app-b")[0] is TakeOutcome.NOT_FOUND
    outcome, got = s.take_keys(["k1", "k2"], "app-a", "app-b")
    assert outcome is TakeOutcome.OK and [g.material for g in got] == [b"\x01" * 32, b"\x02" * 32]
    assert s.take_keys(["k2"], "app-a", "app-b")[0] is TakeOutcome.NOT_FOUND
    assert s.take_keys(["k1"], "app-a", "app-b")[0] is TakeOutcome.UNAUTHORIZED
    assert s.reserved_key_ids() == {"k1": ["app-c"]}
    assert s.take_keys(["k1"], "app-a", "app-c")[0] is TakeOutcome.OK
    assert s.reserved_key_ids() == {}
    assert s.pool_summary()["reserved_keys"] == 0


def test_segments_cover_whole_block(tmp_path: Path) -> None:
    s = KeyStore(f"sqlite:///{tmp_path / 's.sqlite'}")
    blk = make_block(SEGMENT_BYTES * 2 + 8)
    s.ingest(blk)
    s.mark_shared([blk.block_id])
    out = s.allocate([8, SEGMENT_BYTES * 2], from_front=False)
    assert out[0] is not None and out[0].material == blk.key[-8:]
    # from the back: the last segments first, each segment's bytes in their own order
    n = SEGMENT_BYTES
    assert out[1] is not None and out[1].material == blk.key[n : 2 * n] + blk.key[:n]
    assert [p.offset for p in out[1].pieces] == [n, 0]
    assert s.available_bytes() == 0
