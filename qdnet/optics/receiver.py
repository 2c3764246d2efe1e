"""Polarisation receiver: basis choice, two threshold detectors per basis, misalignment.

For a pulse carrying n photons that reach the receiver, each photon is absorbed with probability
eta (channel x receiver efficiency); it lands in the wrong detector with probability e_d (optical
misalignment; Ma, Qi, Zhao, Lo, PRA 72, 012326 (2005), Eq. 9). With independent noise clicks of
probability p per detector, the exact outcome probabilities are::

    P(correct silent) = (1-p) (1 - eta (1-e_d))^n
    P(wrong silent)   = (1-p) (1 - eta e_d)^n
    P(both silent)    = (1-p)^2 (1 - eta)^n

A double click is squashed to a random bit (Luetkenhaus, PRA 59, 3301 (1999)), so
``error = P(wrong only) + P(both)/2`` and ``yield = 1 - P(both silent)``. The Monte Carlo draws
exactly these events.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from qdnet.optics.detectors import Detector

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class ClickProbabilities:
    """Per-photon-number outcome probabilities of one measurement (arrays over n)."""

    yield_: FloatArray
    error: FloatArray


@dataclass(frozen=True)
class Receiver:
    """Bob's (or an arm's) receiver."""

    detector: Detector
    misalignment: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.misalignment <= 0.5:
            raise ValueError(f"receiver.misalignment must be in [0, 0.5], got {self.misalignment}")

    def click_probabilities(
        self, transmittance: float, photon_numbers: NDArray[np.int64], noise_probability: float
    ) -> ClickProbabilities:
        """Yield and error (per pulse) for each photon number, see module docstring."""
        eta = transmittance
        e_d = self.misalignment
        p = noise_probability
        n = photon_numbers.astype(np.float64)
        correct_silent = (1 - p) * (1 - eta * (1 - e_d)) ** n
        wrong_silent = (1 - p) * (1 - eta * e_d) ** n
        both_silent = (1 - p) ** 2 * (1 - eta) ** n
        wrong_only = correct_silent - both_silent
        both = 1 - correct_silent - wrong_silent + both_silent
        return ClickProbabilities(yield_=1 - both_silent, error=wrong_only + both / 2)
