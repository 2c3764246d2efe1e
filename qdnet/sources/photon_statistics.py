"""Photon-number distributions and what linear loss does to them.

Loss acts on a photon-number distribution by binomial thinning: each photon survives a channel of
transmittance ``t`` independently (beam-splitter model of loss; e.g. Loudon, *The Quantum Theory of
Light*, 3rd ed., Sec. 5.8). g2(0) is invariant under this thinning; the mean is not.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray
from scipy.special import gammaln

FloatArray = NDArray[np.float64]


def thin(distribution: FloatArray, transmittance: float) -> FloatArray:
    """Photon-number distribution after a loss of ``transmittance`` (binomial thinning).

    ``p'_k = sum_n p_n C(n, k) t^k (1-t)^(n-k)``. The output has the same length as the input.
    """
    if not 0.0 <= transmittance <= 1.0:
        raise ValueError(f"transmittance must be in [0, 1], got {transmittance}")
    p = np.asarray(distribution, dtype=np.float64)
    size = len(p)
    out = np.zeros(size)
    t = transmittance
    for n in range(size):
        for k in range(n + 1):
            out[k] += p[n] * math.comb(n, k) * t**k * (1.0 - t) ** (n - k)
    return out


def mean_photon_number(distribution: FloatArray) -> float:
    """<n> of a photon-number distribution."""
    p = np.asarray(distribution, dtype=np.float64)
    return float(np.dot(np.arange(len(p)), p))


def g2_of(distribution: FloatArray) -> float:
    """Second-order autocorrelation g2(0) = <n(n-1)>/<n>^2 (Loudon, Eq. 6.3.7)."""
    p = np.asarray(distribution, dtype=np.float64)
    n = np.arange(len(p))
    mean = float(np.dot(n, p))
    if mean == 0.0:
        return 0.0
    return float(np.dot(n * (n - 1), p)) / mean**2


def poisson_distribution(mean: float, max_photons: int) -> FloatArray:
    """Poisson photon numbers of a coherent state, truncated at ``max_photons`` (tail in the last bin)."""
    p = np.zeros(max_photons + 1)
    if mean <= 0.0:
        p[0] = 1.0
        return p
    n = np.arange(max_photons + 1)
    p = np.exp(n * math.log(mean) - mean - gammaln(n + 1))
    p[-1] += max(0.0, 1.0 - p.sum())
    return p


def thermal_distribution(mean: float, max_photons: int) -> FloatArray:
    """Bose-Einstein (single-mode thermal) statistics ``p_n = m^n/(1+m)^(n+1)`` (Loudon, Eq. 5.4.16).

    Used for the pair number of a single-mode SPDC source (Ma, Fung, Lo, PRA 76, 012307 (2007)).
    The tail beyond ``max_photons`` is folded into the last bin.
    """
    n = np.arange(max_photons + 1)
    p = mean**n / (1.0 + mean) ** (n + 1)
    p[-1] += max(0.0, 1.0 - p.sum())
    return p
