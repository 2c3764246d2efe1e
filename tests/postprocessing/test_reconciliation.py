"""Cascade reconciliation: identical keys at QBER 0.5-10 %, honest leak accounting."""

from __future__ import annotations

import numpy as np
import pytest

from qdnet.postprocessing import cascade
from qdnet.security.entropy import binary_entropy


def _pair(rng: np.random.Generator, n: int, qber: float) -> tuple[np.ndarray, np.ndarray]:
    a = rng.integers(0, 2, n, dtype=np.uint8)
    b = a.copy()
    b[rng.choice(n, round(qber * n), replace=False)] ^= 1
    return a, b


@pytest.mark.parametrize("qber", [0.005, 0.01, 0.02, 0.05, 0.08, 0.10])
def test_cascade_identical_keys(qber: float) -> None:
    rng = np.random.default_rng(int(qber * 1000))
    n = 20_000
    a, b = _pair(rng, n, qber)
    res = cascade.reconcile_local(a, b, qber, seed=int(rng.integers(1 << 62)))
    np.testing.assert_array_equal(res.corrected, a)
    assert res.flipped_bits == round(qber * n)
    f = res.leaked_bits / (n * binary_entropy(qber))
    assert 1.0 < f < 1.35
    assert res.round_trips < 400


def test_cascade_leak_counts_every_answer() -> None:
    rng = np.random.default_rng(7)
    a, b = _pair(rng, 5000, 0.03)
    cfg = cascade.CascadeConfig()
    alice = cascade.CascadeAlice(a, 0.03, 11, cfg)
    bob = cascade.CascadeBob(b, 0.03, 11, cfg)
    tops = alice.top_parities()
    asked = len(tops)
    q = bob.start(tops)
    while len(q[0]):
        asked += len(q[0])
        q = bob.step(alice.answer(*q))
    assert alice.leaked_bits == asked
    np.testing.assert_array_equal(bob.bits, a)


def test_cascade_permutations_are_shared_and_valid() -> None:
    perm, pos = cascade.permutations(99, 1000, 4)
    perm2, _ = cascade.permutations(99, 1000, 4)
    np.testing.assert_array_equal(perm, perm2)
    np.testing.assert_array_equal(perm[0], np.arange(1000))
    for p in range(4):
        np.testing.assert_array_equal(np.sort(perm[p]), np.arange(1000))
        np.testing.assert_array_equal(perm[p][pos[p]], np.arange(1000))
    assert not np.array_equal(perm[1], perm[2])


def test_cascade_rejects_bad_questions() -> None:
    a = np.zeros(100, np.uint8)
    alice = cascade.CascadeAlice(a, 0.02, 1, cascade.CascadeConfig())
    with pytest.raises(ValueError):
        alice.answer(np.array([99], np.uint8), np.array([0], np.uint8), np.array([0], np.int64))
    with pytest.raises(ValueError):
        alice.answer(np.array([0], np.uint8), np.array([0], np.uint8), np.array([500], np.int64))


def test_cascade_permutations_are_bijections_with_padding() -> None:
    from qdnet.postprocessing import cascade

    n = 12_345
    geo = cascade.CascadeConfig().geometry(n, 0.02)
    perm, pos = cascade.permutations(99, n, len(geo.depths), geo.width)
    for p in range(len(geo.depths)):
        np.testing.assert_array_equal(perm[p, pos[p]], np.arange(n))
        assert int(np.count_nonzero(perm[p] < n)) == n
        if p < cascade.SPREAD_FROM:
            assert int(pos[p].max()) < n  # padding stays at the end


def test_cascade_frames_in_lockstep() -> None:
    from qdnet.postprocessing import cascade

    rng = np.random.default_rng(31)
    alice = [rng.integers(0, 2, 20_000, dtype=np.uint8) for _ in range(3)]
    bob = [a ^ (rng.random(len(a)) < 0.03).astype(np.uint8) for a in alice]
    res = cascade.reconcile_frames_local(alice, bob, 0.03, 5)
    for a, b in zip(alice, res.corrected, strict=True):
        np.testing.assert_array_equal(a, b)
    single = [cascade.reconcile_local(a, b, 0.03, 5) for a, b in zip(alice, bob, strict=True)]
    assert res.round_trips == max(r.round_trips for r in single)
    assert res.leaked_bits == sum(r.leaked_bits for r in single)  # same questions, same answers


def test_cascade_frames_reject_questions_about_unknown_frames() -> None:
    rng = np.random.default_rng(4)
    frames = [rng.integers(0, 2, 3000, dtype=np.uint8) for _ in range(2)]
    alice = cascade.CascadeAliceFrames(frames, 0.02, 9, cascade.CascadeConfig())
    ask = (np.array([0], np.uint8), np.array([0], np.uint8), np.array([0], np.int64))
    assert len(alice.answer(np.array([1], np.int32), *ask)) == 1
    for bad in (2, -1):
        with pytest.raises(ValueError, match="out of range"):
            alice.answer(np.array([bad], np.int32), *ask)
    with pytest.raises(ValueError, match="at least one frame"):
        cascade.CascadeBobFrames([], 0.02, 9, cascade.CascadeConfig())


def test_cascade_lazy_packing_matches_eager_parities() -> None:
    """Late passes are packed only when searched; the packed copies that exist (both ends) equal
    a full repack of the current bits, and the keys agree."""
    rng = np.random.default_rng(21)
    n = 30_000
    a, b = _pair(rng, n, 0.02)
    cfg = cascade.CascadeConfig()
    alice = cascade.CascadeAlice(a, 0.02, 5, cfg)
    bob = cascade.CascadeBob(b, 0.02, 5, cfg)
    q = bob.start(alice.top_parities())
    while len(q[0]):
        q = bob.step(alice.answer(*q))
    np.testing.assert_array_equal(bob.bits, a)
    assert not bob._packed.all() and not alice.packed.all()
    _, pos = cascade.permutations(5, n, len(bob.depths), bob.geo.width)
    for p in np.flatnonzero(bob._packed):
        ref = np.zeros(bob.geo.width, np.uint8)
        ref[pos[p]] = a
        packed = np.unpackbits(bob._words[p].view(np.uint8), bitorder="little")
        np.testing.assert_array_equal(packed[: bob.geo.width], ref)


@pytest.mark.parametrize(
    ("probe", "defer", "priority"),
    [(0, False, 0), (3, True, 4), (3, True, 3), (1, False, 1), (8, True, 2)],
)
def test_cascade_late_scheduling_variants_reconcile(probe: int, defer: bool, priority: int) -> None:
    """Every combination of partner probes, deferred late halves and waiting searches ends with
    Alice's bits, and Alice's count of disclosed bits is what Bob asked."""
    rng = np.random.default_rng(priority * 10 + probe)
    cfg = cascade.CascadeConfig(partner_probe=probe, defer_late=defer, priority=priority)
    for frame in range(12):
        a, b = _pair(rng, 10_000, 0.02)
        res = cascade.reconcile_local(a, b, 0.02, frame, cfg)
        np.testing.assert_array_equal(res.corrected, a)
        assert res.flipped_bits == 200


def test_cascade_partner_probes_are_asked_counted_and_hit() -> None:
    """Frames whose late passes find an error pair ask single pass-0 bits (partner probes);
    each is counted by Alice as one disclosed bit, and the step-by-step exchange matches the
    compiled loop bit for bit."""
    rng = np.random.default_rng(3)
    cfg = cascade.CascadeConfig()
    probes = hits = 0
    for frame in range(40):
        a, b = _pair(rng, 10_000, 0.02)
        alice = cascade.CascadeAlice(a, 0.02, frame, cfg)
        bob = cascade.CascadeBob(b, 0.02, frame, cfg)
        tops = alice.top_parities()
        asked = len(tops)
        q = bob.start(tops)
        while len(q[0]):
            asked += len(q[0])
            flagged = bob._qk[: len(q[0])].astype(bool)
            answers = alice.answer(*q)
            if flagged.any():
                assert np.all(q[0][flagged] == 0) and np.all(q[1][flagged] == 0)
                probes += int(flagged.sum())
                hits += int(np.sum(answers[flagged] != bob.bits[q[2][flagged]]))
            q = bob.step(answers)
        assert alice.leaked_bits == asked
        np.testing.assert_array_equal(bob.bits, a)
        local = cascade.reconcile_local(a, b, 0.02, frame, cfg)
        assert local.leaked_bits == asked
        assert local.round_trips == bob.rounds + 1
    assert probes > 0 and hits > probes // 2


def test_cascade_partner_probes_lower_the_leak() -> None:
    rng = np.random.default_rng(11)
    off = cascade.CascadeConfig(partner_probe=0, defer_late=False, priority=0)
    on = cascade.CascadeConfig()
    leak_off = leak_on = 0
    for frame in range(60):
        a, b = _pair(rng, 10_000, 0.02)
        leak_off += cascade.reconcile_local(a, b, 0.02, frame, off).leaked_bits
        res = cascade.reconcile_local(a, b, 0.02, frame, on)
        np.testing.assert_array_equal(res.corrected, a)
        leak_on += res.leaked_bits
    assert leak_on < leak_off
