"""The compiled BP kernels: the SIMD lanes kernel computes the same sum-product messages as the
table-driven one-frame kernel, decodes the same frames, keeps lanes independent, and hands a
mostly idle vector back to the caller."""

from __future__ import annotations

import math

import numpy as np
import pytest

from qdnet.postprocessing import ldpc, ldpc_bp
from qdnet.postprocessing.ldpc_bp import LANES
from qdnet.security.entropy import binary_entropy


def test_exp_and_log_approximations_are_accurate() -> None:
    """Both to the ~1e-4 of the hardware reciprocal estimate the kernel divides with."""
    x = np.linspace(0.0, 30.0, 20001, dtype=np.float32)
    approx = np.array([ldpc_bp.exp_neg(v) for v in x[::50]], dtype=np.float64)
    exact = np.exp(-x[::50].astype(np.float64))
    assert np.max(np.abs(approx / exact - 1.0)) < 8e-5
    y = np.exp(np.linspace(-18.0, 18.0, 401)).astype(np.float32)
    logs = np.array([ldpc_bp.log_pos(v) for v in y], dtype=np.float64)
    assert np.max(np.abs(logs - np.log(y.astype(np.float64)))) < 8e-5


def _setup(
    n: int, qber: float, seed: int, efficiency: float | None = None
) -> tuple[np.ndarray, ...]:
    """Code rows/columns, LANES syndromes and their error patterns: the reconciliation's start
    code, or m = efficiency n h(Q) checks."""
    m = (
        ldpc.check_count(n, qber, ldpc.LdpcConfig())
        if efficiency is None
        else math.ceil(efficiency * n * binary_entropy(qber))
    )
    h = ldpc.make_code(n, m)
    row_ptr = h.indptr.astype(np.int32)
    col = h.indices.astype(np.int32)
    rng = np.random.default_rng(seed)
    errors = (rng.random((n, LANES)) < qber).astype(np.uint8)
    target = np.stack([ldpc.syndrome(h, errors[:, j]) for j in range(LANES)], axis=1)
    return row_ptr, col, np.ascontiguousarray(target), errors


def _frame(
    row_ptr: np.ndarray, col: np.ndarray, target: np.ndarray, prior: np.float32, iterations: int
) -> tuple[bool, np.ndarray, np.ndarray]:
    """The one-frame kernel from the prior, without early stop: (solved, post, msg)."""
    post = np.full(int(col.max()) + 1, prior, np.float32)
    msg = np.zeros(len(col), np.float32)
    ok, _ = ldpc_bp.layered_bp_frame(
        row_ptr,
        col,
        np.ascontiguousarray(target),
        post,
        msg,
        iterations,
        iterations,
        0.0,
        ldpc_bp.PHI_TABLE,
        ldpc_bp.PHI_INV_STEP,
        ldpc_bp.frame_workspace(iterations),
    )
    return bool(ok), post, msg


def _lanes(row_ptr: np.ndarray, col: np.ndarray, n: int, prior: float) -> tuple[np.ndarray, ...]:
    post = np.full((n, LANES), prior, dtype=np.float32)
    msg = np.zeros((len(col), LANES), dtype=np.float32)
    return (
        post,
        msg,
        np.zeros(LANES, bool),
        np.zeros((n, LANES), np.uint8),
        np.zeros(LANES, np.int32),
    )


def _run_lanes(
    row_ptr: np.ndarray,
    col: np.ndarray,
    target: np.ndarray,
    state: tuple[np.ndarray, ...],
    active: np.ndarray,
    max_iter: int,
    stall: int,
    progress: float = 0.0,
    min_busy: int = 0,
) -> int:
    """``layered_bp_lanes`` on ``state`` (from :func:`_lanes`) with a workspace of its size."""
    post, msg, solved, decided, its = state
    return int(
        ldpc_bp.layered_bp_lanes(
            row_ptr, col, target, post, msg, active, solved, decided, its,
            max_iter, stall, progress, min_busy, *ldpc_bp.lanes_workspace(max_iter),
        )
    )  # fmt: skip


def test_lanes_messages_match_the_table_kernel_after_one_iteration() -> None:
    n, qber = 4000, 0.03
    row_ptr, col, target, _ = _setup(n, qber, 1)
    prior = ldpc.prior_llr(qber)
    state = _lanes(row_ptr, col, n, prior)
    _run_lanes(row_ptr, col, target, state, np.ones(LANES, bool), 1, 100)
    post, msg = state[:2]
    for lane in (0, 7, 15):
        _, p1, m1 = _frame(row_ptr, col, target[:, lane], prior, 1)
        # the table has steps of 1/1024 in x: messages agree to ~1e-3 (measured 6e-4)
        np.testing.assert_allclose(msg[:, lane], m1, atol=2e-3)
        np.testing.assert_allclose(post[:, lane], p1, atol=2e-2)


def test_lanes_check_update_matches_the_exact_rule_with_saturated_and_tiny_inputs() -> None:
    """One check of degree 12 (one variable per edge, so one iteration is one check update):
    r_k = 2 atanh((-1)^s prod_{j != k} tanh(x_j / 2)) in float64, per lane, for inputs that
    include |x| >= 17 (tanh rounds to 1 in float32) with either sign, and |x| < 1e-4. Within
    1e-2 where |r| <= 12; beyond, float32 saturates: the sign must hold and |r| > 10."""
    degree = 12
    rng = np.random.default_rng(4)
    x = rng.uniform(-20.0, 20.0, (degree, LANES))
    x[:, 0] = 30.0
    x[0, 0] = -30.0  # every other input saturated, this one negative
    x[:, 1] = -25.0
    x[:, 2] = rng.choice([-30.0, 30.0], degree)
    x[3, 3] = 1e-5
    x[:6, 4] = rng.uniform(-1e-4, 1e-4, 6)
    x[:, 5] = rng.uniform(-3.0, 3.0, degree)
    target = np.zeros((1, LANES), np.uint8)
    target[0, 1::2] = 1
    post = np.ascontiguousarray(x.astype(np.float32))
    msg = np.zeros((degree, LANES), np.float32)
    row_ptr = np.array([0, degree], np.int32)
    col = np.arange(degree, dtype=np.int32)
    ldpc_bp.layered_bp_lanes(
        row_ptr,
        col,
        target,
        post,
        msg,
        np.ones(LANES, bool),
        np.zeros(LANES, bool),
        np.zeros((degree, LANES), np.uint8),
        np.zeros(LANES, np.int32),
        1,
        100,
        0.0,
        0,
        *ldpc_bp.lanes_workspace(1),
    )
    t = np.tanh(x / 2.0)
    for lane in range(LANES):
        sign = -1.0 if target[0, lane] else 1.0
        for k in range(degree):
            others = sign * np.prod(np.delete(t[:, lane], k))
            exact = 2.0 * np.arctanh(np.clip(others, -1 + 1e-15, 1 - 1e-15))
            got = float(msg[k, lane])
            if abs(exact) <= 12.0:
                assert abs(got - exact) < 1e-2, (lane, k, got, exact)
            else:
                assert np.sign(got) == np.sign(exact) and abs(got) > 10.0, (lane, k, got, exact)


@pytest.mark.parametrize("qber", [0.01, 0.05])
def test_lanes_kernel_decodes_what_the_frame_kernel_decodes(qber: float) -> None:
    """16 frames at an efficiency where BP alone usually succeeds (m = 1.4 n h(Q))."""
    n = 4000
    row_ptr, col, target, errors = _setup(n, qber, 7, efficiency=1.4)
    prior = ldpc.prior_llr(qber)
    state = _lanes(row_ptr, col, n, prior)
    _run_lanes(row_ptr, col, target, state, np.ones(LANES, bool), 60, 60)
    solved, decided, its = state[2:]
    frame_ok = [_frame(row_ptr, col, target[:, lane], prior, 60)[0] for lane in range(LANES)]
    assert sum(frame_ok) >= 12
    np.testing.assert_array_equal(solved, frame_ok)
    for lane in np.flatnonzero(solved):
        np.testing.assert_array_equal(decided[:, lane], errors[:, lane])
        assert 0 < its[lane] < 60


def test_lanes_are_independent_and_idle_lanes_are_not_tracked() -> None:
    """A lane's result does not depend on what the other lanes hold."""
    n, qber = 4000, 0.02
    row_ptr, col, target, errors = _setup(n, qber, 3, efficiency=1.3)
    prior = ldpc.prior_llr(qber)
    post, msg, solved, decided, its = _lanes(row_ptr, col, n, prior)
    active = np.zeros(LANES, bool)
    active[:3] = True
    _run_lanes(row_ptr, col, target, (post, msg, solved, decided, its), active, 60, 60)
    assert not active.any()
    assert not solved[3:].any() and not its[3:].any()  # not tracked
    other = target.copy()
    other[:, 1:] = np.roll(target[:, 1:], 5, axis=0)
    post2, msg2, solved2, decided2, its2 = _lanes(row_ptr, col, n, prior)
    one = np.zeros(LANES, bool)
    one[0] = True
    _run_lanes(row_ptr, col, other, (post2, msg2, solved2, decided2, its2), one, 60, 60)
    assert solved[0] and solved2[0] and its[0] == its2[0]
    np.testing.assert_array_equal(decided[:, 0], decided2[:, 0])
    np.testing.assert_array_equal(decided2[:, 0], errors[:, 0])


def test_lanes_kernel_returns_a_mostly_idle_vector() -> None:
    """With min_busy = LANES + 1 the kernel returns after one iteration, the lanes still busy
    stay active and their iteration is counted."""
    n, qber = 4000, 0.03
    row_ptr, col, target, _ = _setup(n, qber, 2)
    prior = ldpc.prior_llr(qber)
    state = _lanes(row_ptr, col, n, prior)
    active = np.ones(LANES, bool)
    ran = _run_lanes(row_ptr, col, target, state, active, 40, 3, 0.9, LANES + 1)
    its = state[4]
    assert ran == 1
    assert active.all() and np.all(its == 1)


def test_kernels_refuse_workspaces_too_small() -> None:
    # Bounds are not checked inside the kernels: a short workspace must be refused up front.
    row_ptr, col, target, _ = _setup(400, 0.03, 1)
    post = np.zeros(400, np.float32)
    msg = np.zeros(len(col), np.float32)
    with pytest.raises(ValueError, match="workspace too small"):
        ldpc_bp.layered_bp_frame(
            row_ptr,
            col,
            target[:, 0].copy(),
            post,
            msg,
            10,
            3,
            0.9,
            ldpc_bp.PHI_TABLE,
            ldpc_bp.PHI_INV_STEP,
            ldpc_bp.frame_workspace(9),
        )
    lanes = _lanes(row_ptr, col, 400, 1.0)
    unsat, hist = ldpc_bp.lanes_workspace(10)
    with pytest.raises(ValueError, match="workspace too small"):
        ldpc_bp.layered_bp_lanes(
            row_ptr,
            col,
            target,
            *lanes[:2],
            np.ones(LANES, bool),
            *lanes[2:],
            10,
            3,
            0.9,
            0,
            unsat,
            hist[:-1],
        )


def test_copy_lane() -> None:
    src = np.arange(48, dtype=np.float32).reshape(3, LANES)
    dst = np.zeros_like(src)
    ldpc_bp.copy_lane(src, 5, dst, 2)
    np.testing.assert_array_equal(dst[:, 2], src[:, 5])
    assert np.count_nonzero(dst) == 3
