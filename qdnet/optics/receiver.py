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

Time-bin encoding (``protocol.encoding: time-bin``; Gisin, Ribordy, Tittel, Zbinden, Rev. Mod.
Phys. 74, 145 (2002), Sec. IV.C; Boaron et al., PRL 121, 190502 (2018)): the Z basis is the
arrival time (early or late bin), measured directly, with the receiver's ``misalignment`` as its
optical error. The X basis is measured behind an unbalanced interferometer whose delay is the
bin separation: a photon leaves it in one of three time slots, and only the central slot, where
the early bin through the long arm meets the late bin through the short arm, interferes. Whatever
the qubit, the central slot holds exactly half of the photons (:data:`TIME_BIN_X_SHARE`), so the X
basis detects with half the Z basis's efficiency; in that slot a photon of the X state reaches the
wrong port with probability ``(1 - V)/2`` for an interference visibility V
(``receiver.interferometer_visibility``), and a Z-basis state (one bin only) reaches each port with
probability 1/2.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import NDArray

from qdnet.optics.detectors import Detector

FloatArray = NDArray[np.float64]

#: Share of a time-bin photon in the central (interfering) slot of the X-basis interferometer.
TIME_BIN_X_SHARE = 0.5


@dataclass(frozen=True)
class Receiver:
    """Bob's (or an arm's) receiver."""

    detector: Detector
    misalignment: float = 0.0
    #: Visibility of the time-bin X-basis interferometer (time-bin encoding only).
    interferometer_visibility: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.misalignment <= 0.5:
            raise ValueError(f"receiver.misalignment must be in [0, 0.5], got {self.misalignment}")
        if not 0.0 <= self.interferometer_visibility <= 1.0:
            raise ValueError(
                "receiver.interferometer_visibility must be in [0, 1], got "
                f"{self.interferometer_visibility}"
            )

    @property
    def time_bin_x_error(self) -> float:
        """Probability that a photon of the time-bin X state reaches the wrong interferometer
        port: ``(1 - V)/2``."""
        return (1.0 - self.interferometer_visibility) / 2.0

    def with_wrong_port_probability(self, probability: float) -> Receiver:
        """The same detectors with another per-photon wrong-detector probability (a time-bin X
        measurement: ``time_bin_x_error`` for the X state, 1/2 for a Z state)."""
        return replace(self, misalignment=probability)

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
