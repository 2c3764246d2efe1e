"""Polarisation receiver: basis choice, two threshold detectors per basis, misalignment.

For a pulse carrying n photons that reach the receiver, each photon is absorbed with probability
eta (channel x receiver efficiency); it lands in the wrong detector with probability e_d (optical
misalignment; Ma, Qi, Zhao, Lo, PRA 72, 012326 (2005), Eq. 9). With independent noise clicks of
probability p per detector, the exact outcome probabilities are::

    P(correct silent) = (1-p) (1 - eta (1-e_d))^n
    P(wrong silent)   = (1-p) (1 - eta e_d)^n
    P(both silent)    = (1-p)^2 (1 - eta)^n

For a photon-number distribution p_n these are averaged with the generating function
``G(x) = sum_n p_n x^n`` evaluated at ``x = 1 - eta (1-e_d)``, ``1 - eta e_d`` and ``1 - eta``.
A double click is squashed to a random bit (Luetkenhaus, PRA 59, 3301 (1999)), so
``error = P(wrong only) + P(both)/2`` and ``yield = 1 - P(both silent)``. The Monte Carlo draws
exactly these events.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from qdnet.optics.detectors import Detector

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class Receiver:
    """Bob's (or an arm's) receiver."""

    detector: Detector
    misalignment: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.misalignment <= 0.5:
            raise ValueError(f"receiver.misalignment must be in [0, 0.5], got {self.misalignment}")

    def averaged_click_probabilities(
        self,
        transmittance: float,
        generating_function: Callable[[float], float],
        noise_probability: float,
    ) -> tuple[float, float]:
        """(yield, error) per pulse for a photon-number distribution given by its generating function."""
        eta, e_d, p = transmittance, self.misalignment, noise_probability
        correct_silent = (1 - p) * generating_function(1 - eta * (1 - e_d))
        wrong_silent = (1 - p) * generating_function(1 - eta * e_d)
        both_silent = (1 - p) ** 2 * generating_function(1 - eta)
        both = 1 - correct_silent - wrong_silent + both_silent
        return 1 - both_silent, correct_silent - both_silent + both / 2
