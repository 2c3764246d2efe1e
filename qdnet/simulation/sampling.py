"""Shared pieces of the Monte Carlo engines: a figure compared with its model, and event skipping.

* :class:`Estimate`: a Monte Carlo figure with its standard error, the analytic value and the
  deviation in sigma (the engines' tests require |deviation| < 4).
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

    @property
    def deviation_sigma(self) -> float:
        """(value - expected) / sigma (0 when both are exact; nan without data)."""
        if math.isnan(self.value):
            return math.nan
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
