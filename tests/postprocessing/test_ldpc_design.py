"""Density evolution and the LDPC ensemble optimiser: the (3, 6) threshold of Richardson and
Urbanke, a shipped rate class's threshold reproduced, and an LP step that raises the rate."""

from __future__ import annotations

import pytest

from qdnet.postprocessing import ldpc
from qdnet.postprocessing.ldpc_design import (
    Grid,
    density_evolution,
    design_rate,
    efficiency_at_threshold,
    optimise,
    rho_for,
    threshold,
)


def test_regular_3_6_threshold_matches_richardson_urbanke() -> None:
    # Richardson and Urbanke, IEEE TIT 47 (2001) 599, Table: (3, 6) on the BSC, p* = 0.084
    p_star = threshold(Grid(0.125, 25.0), {3: 1.0}, {6: 1.0}, 0.07, 0.10, steps=8)
    assert p_star == pytest.approx(0.084, abs=6e-4)


def test_shipped_class_threshold_is_reproduced() -> None:
    """The 8 % class's stored f* (fine grid) follows from its lambda and check degree."""
    dist = next(d for d in ldpc.DISTRIBUTIONS if d.qber == 0.08)
    lam, rho = dict(dist.variable), rho_for(dist.check_degree)
    assert density_evolution(Grid(), dist.qber, lam, rho).converged
    p_star = threshold(Grid(), lam, rho, dist.qber, 1.12 * dist.qber, steps=6)
    assert efficiency_at_threshold(lam, rho, p_star) == pytest.approx(dist.threshold, abs=3e-3)
    assert design_rate(lam, rho) == pytest.approx(dist.rate, abs=1e-9)


def test_lp_step_raises_the_rate_and_still_converges() -> None:
    grid, p = Grid(0.25, 20.0), 0.08
    rho = rho_for(6.0)
    start = {3: 1.0}
    lam = optimise(grid, p, rho, range(2, 9), start, steps=3)
    assert abs(sum(lam.values()) - 1.0) < 1e-9
    assert design_rate(lam, rho) > design_rate(start, rho) + 1e-3
    assert density_evolution(grid, p, lam, rho, max_iter=300, tol=2e-7).converged
