"""LDPC reconciliation: identical keys at QBER 0.5-10 %, leak = syndrome + disclosed bits, a code
family that both ends rebuild identically, and the efficiency the blind protocol reaches."""

from __future__ import annotations

import asyncio
import itertools
import os

import numpy as np
import pytest
import scipy.sparse as sp

from qdnet.postprocessing import ldpc
from qdnet.security.entropy import binary_entropy
from qdnet.transport import AuthenticatedChannel, AuthKeyPool, memory_pair


def _pair(rng: np.random.Generator, n: int, qber: float) -> tuple[np.ndarray, np.ndarray]:
    """Alice's random frame and Bob's copy with exactly round(qber n) flipped bits."""
    a = rng.integers(0, 2, n, dtype=np.uint8)
    b = a.copy()
    b[rng.choice(n, round(qber * n), replace=False)] ^= 1
    return a, b


@pytest.mark.parametrize("qber", [0.005, 0.02, 0.05, 0.10])
def test_ldpc_identical_keys(qber: float) -> None:
    # BP accepts a wrong codeword (verification then discards the frame) in ~1 % of frames at
    # 0.5 % (measured: 12 in 1000 at 4000 bits, 5 in 600 at 1e4) and < 2e-3 above; this frame
    # is a typical one
    rng = np.random.default_rng(int(qber * 1000) + 1)
    n = 10_000
    a, b = _pair(rng, n, qber)
    corrected, leak, trips, ok = ldpc.reconcile_local(a, b, qber, seed=5)
    assert ok
    np.testing.assert_array_equal(corrected, a)
    f = leak / (n * binary_entropy(qber))
    assert 1.0 < f < 1.8
    assert trips <= ldpc.LdpcConfig().max_rounds + 1


def test_ldpc_code_family_is_deterministic_and_sized() -> None:
    cfg = ldpc.LdpcConfig()
    h1 = ldpc.make_code(2000, 300, 4, cfg)
    h2 = ldpc.make_code(2000, 300, 9, ldpc.LdpcConfig(max_iter=61))
    assert h1.shape == (300, 2000)
    assert (h1 - h2).count_nonzero() == 0
    assert set(np.unique(h1.data)) == {1}
    assert int(h1.sum(axis=0).min()) >= 1


@pytest.mark.parametrize(("n", "m"), [(4000, 360), (4000, 1300), (20_000, 10_000)])
def test_ldpc_construction_matches_its_degree_distribution(n: int, m: int) -> None:
    """No repeated edges, column degrees as the chosen ensemble prescribes (node fractions
    L_d = (lambda_d / d) / sum(lambda / d) to within rounding), balanced check degrees and the
    degree-2 columns on a cycle-free staircase (column j on checks j and j + 1)."""
    dist = ldpc.distribution_for(n, m)
    h = ldpc.make_code(n, m)
    degrees = ldpc.column_degrees(n, m, dist)
    coo = h.tocoo()
    assert h.nnz == int(degrees.sum())  # no edge cancelled or merged: no repeated edges
    np.testing.assert_array_equal(np.bincount(coo.col, minlength=n), degrees)
    row_deg = np.diff(h.indptr)
    assert int(row_deg.max() - row_deg.min()) <= 1
    lam = dict(dist.variable)
    node = {d: (w / d) / sum(v / k for k, v in lam.items()) for d, w in lam.items()}
    counts = np.bincount(degrees, minlength=max(lam) + 1)
    n2 = int(counts[2])
    for d, frac in node.items():
        # a full staircase (m - 1 columns) sends the remaining degree-2 columns to degree 3
        overflow = d == 3 and n2 == m - 1
        extra = node[2] * n - n2 if overflow else 0.0
        assert abs(int(counts[d]) - frac * n - extra) <= (2 if overflow else 1)
    stair = h[:, :n2].tocsc()
    assert np.all(np.diff(stair.indptr) == 2)
    np.testing.assert_array_equal(
        stair.indices.reshape(n2, 2), np.c_[np.arange(n2), np.arange(1, n2 + 1)]
    )


def _staircase_weight_excess(h: sp.csr_matrix) -> int:
    """Pairs of degree-3 columns (or single columns) whose checks the staircase joins with fewer
    than _STAIR_GAP steps: each such pair spans a codeword of weight < 2 + _STAIR_GAP."""
    hc = h.tocsc()
    deg = np.diff(hc.indptr)
    n2 = int(np.count_nonzero(deg == 2))
    far = 10**9

    def dist(x: int, y: int) -> int:
        return 0 if x == y else (far if max(x, y) > n2 else abs(x - y))

    checks = {
        int(v): hc.indices[hc.indptr[v] : hc.indptr[v + 1]].tolist()
        for v in np.flatnonzero(deg == 3)
    }
    near: dict[int, list[int]] = {}
    for v, cs in checks.items():
        for c in cs:
            near.setdefault(c, []).append(v)
    gap = ldpc._STAIR_GAP
    bad = sum(
        min(dist(a, b) for a, b in itertools.combinations(cs, 2)) < gap for cs in checks.values()
    )
    for v, cs in checks.items():
        others = {u for w in range(cs[0] - gap + 1, cs[0] + gap) for u in near.get(w, []) if u > v}
        for u in others:
            cost = min(
                sum(dist(x, y) for x, y in zip(checks[u], p, strict=True))
                for p in itertools.permutations(cs)
            )
            bad += cost < gap
    return bad


@pytest.mark.parametrize(("n", "m"), [(4000, 360), (4000, 1300)])
def test_ldpc_construction_keeps_degree3_columns_apart_on_the_staircase(n: int, m: int) -> None:
    assert _staircase_weight_excess(ldpc.make_code(n, m)) == 0


def test_ldpc_family_is_fixed_and_shared_across_nearby_estimates() -> None:
    cfg = ldpc.LdpcConfig()
    n = 5000
    ms = {ldpc.check_count(n, q, cfg) for q in np.linspace(0.0300, 0.0302, 5)}
    assert len(ms) <= 2  # 1 % grid
    m = ms.pop()
    assert ldpc.make_code(n, m, 1, cfg) is ldpc.make_code(n, m, 2, cfg)  # cached, seed-free
    assert m <= (cfg.start_efficiency + 0.2) * n * binary_entropy(0.0302)


def test_ldpc_leak_is_syndrome_plus_reveals() -> None:
    rng = np.random.default_rng(3)
    n, qber = 3000, 0.04
    a, b = _pair(rng, n, qber)
    cfg = ldpc.LdpcConfig()
    m = ldpc.check_count(n, qber, cfg)
    h = ldpc.make_code(n, m, 0, cfg)
    bob = ldpc.LdpcBob(b, h, ldpc.syndrome(h, a), qber, cfg)
    revealed, rnd = 0, 0
    while not bob.decode():
        pos = bob.least_reliable(ldpc.reveal_count(n, qber, rnd, cfg))
        bob.learn(pos, a[pos])
        revealed += len(pos)
        rnd += 1
    np.testing.assert_array_equal(bob.corrected, a)
    corrected, leak, trips, ok = ldpc.reconcile_local(a, b, qber, seed=0, cfg=cfg)
    np.testing.assert_array_equal(corrected, a)
    assert ok and leak == m + revealed and trips == rnd + 1
    with pytest.raises(ValueError):
        bob.learn(pos, a[pos])  # a position cannot be disclosed twice


# Mean efficiency bounds at n = 1e4 over EFFICIENCY_FRAMES frames (measured means 1.121 at 1 % and
# 1.090 at 3 % on these frames, 1.113-1.121 and 1.087-1.093 on other seeds; per-frame standard
# deviation about 0.02, so the bound sits > 4.5 standard errors above the measured mean and fails
# only if the code family or the blind schedule regresses; the old family measured 1.157/1.118).
EFFICIENCY_FRAMES = 12
EFFICIENCY_BOUNDS = {0.01: 1.15, 0.03: 1.12}


@pytest.mark.parametrize("qber", sorted(EFFICIENCY_BOUNDS))
def test_ldpc_efficiency_within_bound(qber: float) -> None:
    rng = np.random.default_rng(int(qber * 1e4))
    n = 10_000
    fs = []
    for _ in range(EFFICIENCY_FRAMES):
        a, b = _pair(rng, n, qber)
        corrected, leak, _, ok = ldpc.reconcile_local(a, b, qber, seed=0)
        assert ok
        np.testing.assert_array_equal(corrected, a)
        fs.append(leak / (n * binary_entropy(round(qber * n) / n)))
    assert 1.0 < float(np.mean(fs)) < EFFICIENCY_BOUNDS[qber]


def test_block_of_frames_decodes_in_lanes_with_per_frame_leak() -> None:
    """A block of 2 x LANES + 5 frames (three lane batches) and 3 shorter frames (another code,
    too few for lanes: one-frame decoders) ends with every syndrome solved and every frame
    corrected, except that BP may accept a wrong codeword (~1e-3 per frame at these sizes,
    measured; here frame 23 ends 7 bits off, a weight-7 codeword of the 4000-bit code:
    verification discards such frames); each frame's leak is its syndrome plus its own
    reveals."""
    rng = np.random.default_rng(11)
    qber = 0.03
    sizes = [4000] * (2 * ldpc.LANES + 5) + [3999] * 3
    pairs = [_pair(rng, n, qber) for n in sizes]
    corrected, leaks, trips, ok = ldpc.reconcile_frames_local(
        [a for a, _ in pairs], [b for _, b in pairs], qber, seed=1
    )
    assert all(ok) and 1 < trips <= ldpc.LdpcConfig().max_rounds + 1
    cfg = ldpc.LdpcConfig()
    wrong = [
        i for i, ((a, _), c) in enumerate(zip(pairs, corrected, strict=True)) if np.any(c != a)
    ]
    assert len(wrong) <= 1
    for i in wrong:  # a codeword: same syndrome as Alice's frame
        h = ldpc.make_code(sizes[i], ldpc.check_count(sizes[i], qber, cfg), 1, cfg)
        assert not np.any(ldpc.syndrome(h, corrected[i] ^ pairs[i][0]))
    for n, leak in zip(sizes, leaks, strict=True):
        assert leak >= ldpc.check_count(n, qber, cfg)
    fs = [leak / (n * binary_entropy(qber)) for n, leak in zip(sizes, leaks, strict=True)]
    assert 1.0 < float(np.mean(fs)) < 1.25


def test_block_and_single_frame_decoding_reach_the_same_efficiency() -> None:
    """The lanes kernel (polynomial tanh rule) and the one-frame kernel (phi table) are the
    same algorithm: on the same 32 frames the mean f agrees to within the noise (measured on
    these frames: 1.0701 in lanes, 1.0717 alone; per-frame differences -0.0017 +- 0.011, so
    the mean of 32 has a standard error of 0.002 and the bound is ~5 of them)."""
    rng = np.random.default_rng(5)
    n, qber = 10_000, 0.02
    pairs = [_pair(rng, n, qber) for _ in range(2 * ldpc.LANES)]
    _, leaks, _, ok = ldpc.reconcile_frames_local(
        [a for a, _ in pairs], [b for _, b in pairs], qber, seed=3
    )
    single = [ldpc.reconcile_local(a, b, qber, seed=3) for a, b in pairs]
    assert all(ok) and all(s[3] for s in single)
    diff = np.array(leaks) - np.array([s[1] for s in single])
    assert abs(float(np.mean(diff))) / (n * binary_entropy(qber)) < 0.012


def test_networked_endpoints_reconcile_a_block_in_lanes() -> None:
    """alice_reconcile / bob_reconcile over the in-memory channel pair with LANES + 4 frames."""
    rng = np.random.default_rng(9)
    qber, n_frames, size = 0.04, ldpc.LANES + 4, 3000
    a, b = _pair(rng, n_frames * size, qber)
    frames = [(i * size, (i + 1) * size) for i in range(n_frames)]
    psk = os.urandom(1024)

    async def go() -> tuple[int, tuple[np.ndarray, int]]:
        end_a, end_b = memory_pair()
        chan_a = AuthenticatedChannel(end_a, AuthKeyPool(psk), "alice")
        chan_b = AuthenticatedChannel(end_b, AuthKeyPool(psk), "bob")
        return await asyncio.wait_for(
            asyncio.gather(
                ldpc.alice_reconcile(chan_a, a, frames, qber),
                ldpc.bob_reconcile(chan_b, b, frames),
            ),
            60,
        )

    leak_alice, (corrected, leak_bob) = asyncio.run(go())
    np.testing.assert_array_equal(corrected, a)
    assert leak_alice == leak_bob > ldpc.check_count(size, qber, ldpc.LdpcConfig()) * n_frames


def test_block_decode_reports_stalled_frames_and_defers_progressing_ones() -> None:
    """decode() returns only frames that stalled (a frame cut off while BP still progressed is
    unsolved but asks for nothing); decode(defer=False) reports every unsolved frame."""
    rng = np.random.default_rng(21)
    qber, n, count = 0.03, 4000, 3 * ldpc.LANES
    cfg = ldpc.LdpcConfig()
    pairs = [_pair(rng, n, qber) for _ in range(count)]
    h = ldpc.make_code(n, ldpc.check_count(n, qber, cfg))
    bobs = ldpc.LdpcBobFrames(
        [b for _, b in pairs], [h] * count, [ldpc.syndrome(h, a) for a, _ in pairs], qber, cfg
    )
    stalled = bobs.decode()
    unsolved = {i for i, ok in enumerate(bobs.done) if not ok}
    assert stalled and set(stalled) <= unsolved
    for i in stalled:
        pos = bobs.least_reliable(i, 40)
        bobs.learn(i, pos, pairs[i][0][pos])
    final = bobs.decode(defer=False)
    assert set(final) == {i for i, ok in enumerate(bobs.done) if not ok}
    for i, (a, _) in enumerate(pairs):
        if bobs.done[i]:
            np.testing.assert_array_equal(bobs.corrected(i), a)
