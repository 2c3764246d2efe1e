"""Attenuated laser (weak coherent pulses) with decoy intensities.

Phase-randomised coherent states have Poisson photon numbers ``P(n) = e^-mu mu^n / n!``
(Lo, Ma, Chen, PRL 94, 230504 (2005)); decoy intensities mu > nu_1 > nu_2 >= 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from qdnet.sources.photon_statistics import FloatArray, poisson_distribution

#: Photon numbers kept explicitly; the Poisson tail beyond is folded into the last bin.
MAX_PHOTONS_EXPLICIT = 12


@dataclass(frozen=True)
class WeakCoherentSource:
    """Weak coherent pulses; ``decoy_intensities`` are the weaker intensities, strongest first.

    ``mean_photon_number`` may be None: the key-rate optimiser chooses every intensity, and what
    needs a fixed one (a Monte Carlo run) asks for it by name.
    """

    mean_photon_number: float | None
    repetition_rate_hz: float
    wavelength_nm: float = 1550.0
    decoy_intensities: tuple[float, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        mu = self.mean_photon_number
        if mu is not None and not 0.0 < mu <= 10.0:
            raise ValueError(f"source.mean_photon_number must be in (0, 10], got {mu}")
        if self.repetition_rate_hz <= 0:
            raise ValueError(
                f"source.repetition_rate_hz must be > 0, got {self.repetition_rate_hz}"
            )
        previous = 10.0 if mu is None else mu
        for k, nu in enumerate(self.decoy_intensities):
            if not 0.0 <= nu < previous:
                raise ValueError(
                    f"source.decoy_intensities[{k}] must be in [0, {previous}) (strongest first), got {nu}"
                )
            previous = nu

    def intensity(self, mean_photon_number: float | None = None) -> float:
        """The given intensity, else the configured signal (an error naming the field if none)."""
        if mean_photon_number is not None:
            return mean_photon_number
        if self.mean_photon_number is None:
            raise ValueError(
                "source.mean_photon_number is needed here (it is optional only for keyrate, "
                "which optimises it)"
            )
        return self.mean_photon_number

    @property
    def g2(self) -> float:
        """Coherent light has g2(0) = 1."""
        return 1.0

    def photon_number_distribution(self, mean_photon_number: float | None = None) -> FloatArray:
        """Poisson distribution for the given (or the signal) intensity."""
        mu = self.intensity(mean_photon_number)
        return poisson_distribution(mu, MAX_PHOTONS_EXPLICIT)

    def generating_function(self, x: float, mean_photon_number: float | None = None) -> float:
        """E[x^n] = exp(-mu (1 - x)) for Poisson photon numbers (exact, no truncation)."""
        mu = self.intensity(mean_photon_number)
        return math.exp(-mu * (1.0 - x))

    def multiphoton_probability(self, mean_photon_number: float | None = None) -> float:
        """P(n>=2) = 1 - e^-mu (1 + mu)."""
        mu = self.intensity(mean_photon_number)
        return 1.0 - math.exp(-mu) * (1.0 + mu)
