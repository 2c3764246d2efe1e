"""Finite-key lengths against the closed forms of the papers they come from."""

import math

import pytest

from qdnet.security.entropy import binary_entropy as h
from qdnet.security.finite_key import (
    EpsSplit,
    ObservedCounts,
    default_eps_split,
    secret_key_length,
)


@pytest.mark.parametrize("n", [1e4, 1e5, 1e6])
def test_bbm92_length_spends_eps_sec_once(n: float) -> None:
    # Tomamichel, Lim, Gisin, Renner, Nat. Commun. 3, 634 (2012): the key is (2 eps + eps_PA)-secret
    # (eps: smoothing, the sampling bound failing with probability eps^2; eps_PA: leftover hash).
    # With eps = eps_sec/4 and eps_PA = eps_sec/2 the total is eps_sec:
    #   mu = sqrt((n+k)/(n k) (k+1)/k ln(4/eps_sec)),
    #   l = n (1 - h(e + mu)) - leak - log2(2/(eps_sec^2 eps_cor)).
    # The old split (sampling at eps_sec/2, hash at eps_sec) spent 2 eps_sec: 35/144/519 bits more.
    eps_sec, eps_cor, qber, k = 1e-10, 1e-15, 0.02, int(n)
    errors = round(qber * k)
    leak = 1.16 * n * h(qber)
    counts = ObservedCounts("bbm92", (0.1,), (10**12,), (int(n),), (k,), (errors,))
    mu = math.sqrt((n + k) / (n * k) * (k + 1) / k * math.log(4 / eps_sec))
    expected = n * (1 - h(errors / k + mu)) - leak - math.log2(2 / (eps_sec**2 * eps_cor))
    assert secret_key_length(counts, leak, eps_sec, eps_cor).bits == math.floor(expected)


def _decoy_counts() -> ObservedCounts:
    # Expected counts of a three-intensity block (eta 0.05, P(Z) 0.7, 2 % error in X).
    return ObservedCounts(
        "decoy-bb84",
        (0.5, 0.1, 2e-4),
        (1e10, 3e9, 1e9),
        (120986331, 7333126, 5390),
        (22221979, 1346901, 990),
        (444440, 26938, 20),
    )


@pytest.mark.parametrize(
    ("counts", "parts"),
    [
        (_decoy_counts(), (15, 6)),
        (ObservedCounts("bb84", (0.1,), (1e9,), (1e6,), (1e5,), (2e3,), 1e-4, 0.9), (17, 4)),
        (ObservedCounts("bbm92", (0.1,), (1e12,), (1e6,), (1e6,), (2e4,)), (2, 1)),
    ],
)
def test_default_eps_split_is_the_published_one(counts: ObservedCounts, parts: tuple) -> None:
    # The default is each analysis's own budget (Lim et al. 2014: 21 equal parts, six in the
    # length formula; BBM92: 2 eps + eps_PA with eps = eps_sec/4): giving it explicitly changes
    # nothing.
    n_est, n_pa = parts
    split = EpsSplit(n_est / (n_est + n_pa), n_pa / (n_est + n_pa))
    if counts.protocol == "bbm92":
        split = EpsSplit(0.5, 0.5)
    assert default_eps_split(counts.protocol) == split
    base = secret_key_length(counts, 1e4, 1e-10, 1e-15)
    assert secret_key_length(counts, 1e4, 1e-10, 1e-15, split) == base


def test_eps_split_moves_budget_as_the_closed_form_says() -> None:
    # BBM92 with 90 % of eps_sec on estimation: smoothing eps = 0.9 eps_sec/2 in Serfling's margin,
    # eps_PA = 0.1 eps_sec in the leftover-hash penalty 2 log2(1/(2 eps_PA)) (Tomamichel et al. 2012).
    eps_sec, eps_cor, n, k, errors = 1e-10, 1e-15, 1e5, 1e5, 2000.0
    counts = ObservedCounts("bbm92", (0.1,), (1e12,), (n,), (k,), (errors,))
    leak = 1.16 * n * h(errors / k)
    mu = math.sqrt((n + k) / (n * k) * (k + 1) / k * math.log(1 / (0.45 * eps_sec)))
    penalty = 2 * math.log2(1 / (2 * 0.1 * eps_sec)) + math.log2(2 / eps_cor)
    expected = n * (1 - h(errors / k + mu)) - leak - penalty
    result = secret_key_length(counts, leak, eps_sec, eps_cor, EpsSplit(0.9, 0.1))
    assert result.length_bits == pytest.approx(expected, rel=1e-12)
    assert result.terms["penalty_bits"] == pytest.approx(penalty)
    # Decoy BB84: the six privacy-amplification terms at 0.5 eps_sec/6 each.
    decoy = secret_key_length(_decoy_counts(), 1e4, eps_sec, eps_cor, EpsSplit(0.5, 0.5))
    assert decoy.terms["penalty_bits"] == pytest.approx(
        6 * math.log2(6 / (0.5 * eps_sec)) + math.log2(2 / eps_cor)
    )


@pytest.mark.parametrize(
    ("shares", "message"),
    [
        ((0.5, 0.6), "must be 1"),
        ((0.0, 1.0), "eps_split.estimation"),
        ((1.2, -0.2), "in \\(0, 1\\)"),
    ],
)
def test_eps_split_rejects_shares_that_do_not_split_eps_sec(shares: tuple, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        EpsSplit(*shares)
