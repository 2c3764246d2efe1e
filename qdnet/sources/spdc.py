"""Spontaneous parametric down-conversion pairs, for comparison with quantum-dot pairs.

The pair number per pulse of a single-mode SPDC source is thermal,
``P(n) = mu^n / (1 + mu)^(n+1)`` with mu the mean pair number (Ma, Fung, Lo, PRA 76, 012307
(2007), Eq. 1): multi-pair emission grows with brightness, ``P(2)/P(1) ~ mu``.
"""

from __future__ import annotations

from dataclasses import dataclass

from qdnet.sources.photon_statistics import FloatArray, thermal_distribution

#: Pair numbers kept explicitly; the thermal tail beyond is folded into the last bin.
MAX_PAIRS_EXPLICIT = 8


@dataclass(frozen=True)
class SpdcSource:
    """Thermal pair statistics; each pair carries an ideal Phi+ up to ``intrinsic_error``."""

    mean_pair_number: float
    repetition_rate_hz: float
    wavelength_nm: float = 1550.0
    intrinsic_error: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 < self.mean_pair_number <= 2.0:
            raise ValueError(
                f"source.mean_photon_number must be in (0, 2], got {self.mean_pair_number}"
            )
        if self.repetition_rate_hz <= 0:
            raise ValueError(
                f"source.repetition_rate_hz must be > 0, got {self.repetition_rate_hz}"
            )
        if not 0.0 <= self.intrinsic_error <= 0.5:
            raise ValueError(
                f"source.intrinsic_error must be in [0, 0.5], got {self.intrinsic_error}"
            )

    def pair_number_distribution(self, mean_pair_number: float | None = None) -> FloatArray:
        """Thermal pair-number distribution."""
        mu = self.mean_pair_number if mean_pair_number is None else mean_pair_number
        return thermal_distribution(mu, MAX_PAIRS_EXPLICIT)

    def qber_z(self) -> float:
        """Error per true pair in the H/V basis."""
        return self.intrinsic_error

    def qber_x(self) -> float:
        """Error per true pair in the D/A basis."""
        return self.intrinsic_error

    @property
    def g2(self) -> float:
        """Unheralded g2 of one arm of a single-mode thermal source is 2."""
        return 2.0
