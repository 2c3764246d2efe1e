"""Shared pieces of the Monte Carlo engines: a figure compared with its model, and event skipping.

* :class:`Estimate`: a Monte Carlo figure with its standard error, the analytic value and the
  deviation in sigma (the engines' tests require |deviation| < 4); :func:`binomial_estimate` for
  a count of events among trials.
* :func:`bernoulli_positions`: the trials where a Bernoulli process fires, from geometric gaps
  (work proportional to the firings, not the trials).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class Estimate:
    """A Monte Carlo figure, its standard error, the analytic value and the deviation in sigma."""

    value: float
    sigma: float
    expected: float
    #: The deviation when a normal approximation would mislead (few events expected).
    exact_deviation: float | None = None

    @property
    def deviation_sigma(self) -> float:
        """(value - expected) / sigma (0 when both are exact; nan without data)."""
        if math.isnan(self.value):
            return math.nan
        if self.exact_deviation is not None:
            return self.exact_deviation
        if self.sigma > 0:
            return (self.value - self.expected) / self.sigma
        return 0.0 if math.isclose(self.value, self.expected, abs_tol=1e-12) else math.inf

    def to_json(self) -> dict[str, float | None]:
        """JSON fields of one figure (null where the run recorded no data for it)."""
        fields = {
            "value": self.value,
            "sigma": self.sigma,
            "expected": self.expected,
            "deviation_sigma": self.deviation_sigma,
        }
        return {k: None if math.isnan(v) else v for k, v in fields.items()}


#: Below this many expected events a count's deviation comes from the exact binomial tail.
SMALL_COUNT = 25.0


def binomial_estimate(events: int, trials: int, probability: float) -> Estimate:
    """``events / trials`` against the model's ``probability``, with the binomial standard error
    of the model. Where fewer than :data:`SMALL_COUNT` events are expected the normal reading
    misleads (1 event against 0.008 expected would read 11 sigma), so the deviation is the normal
    quantile of the exact binomial mid-p tail, P(X < k) + P(X = k)/2 (Lancaster 1961), which
    reads that case as 2.4 sigma and agrees with the normal reading for large counts."""
    if trials <= 0:
        return Estimate(math.nan, math.nan, probability)
    sigma = math.sqrt(max(probability * (1.0 - probability), 0.0) / trials)
    value = events / trials
    if trials * probability >= SMALL_COUNT:
        return Estimate(value, sigma, probability)
    from scipy.special import bdtr, ndtri

    p = min(max(probability, 0.0), 1.0)
    below = float(bdtr(events - 1, trials, p)) if events > 0 else 0.0
    at_most = float(bdtr(events, trials, p))
    mid = below + 0.5 * (at_most - below)
    mid = min(max(mid, 1e-300), 1.0 - 1e-16)
    return Estimate(value, sigma, probability, exact_deviation=float(ndtri(mid)))


def bernoulli_positions(
    rng: np.random.Generator, probability: float, attempts: int
) -> NDArray[np.int64]:
    """Sorted attempt indices where a Bernoulli(probability) process fires (geometric gaps)."""
    if probability <= 0.0 or attempts <= 0:
        return np.empty(0, dtype=np.int64)
    if probability >= 1.0:
        return np.arange(attempts, dtype=np.int64)
    expected = attempts * probability
    chunks = []
    last = -1
    while True:
        size = int(expected + 6.0 * math.sqrt(expected) + 16)
        gaps = rng.geometric(probability, size=size).astype(np.int64)
        positions = last + np.cumsum(gaps)
        chunks.append(positions[positions < attempts])
        if positions[-1] >= attempts:
            break
        last = int(positions[-1])
        expected = (attempts - last) * probability
    return np.concatenate(chunks)
