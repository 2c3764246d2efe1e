"""Finite-key lengths against the closed forms of the papers they come from."""

import math

import pytest

from qdnet.security.entropy import binary_entropy as h
from qdnet.security.finite_key import ObservedCounts, secret_key_length


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
