"""Optical fibre channel: ``eta = 10^(-(alpha L + extra)/10)``.

Default attenuation by wavelength for standard single-mode fibre (G.652.D, Corning SMF-28 Ultra
data sheet: <= 0.18 dB/km at 1550 nm, <= 0.32 dB/km at 1310 nm); below the single-mode cutoff
region the loss of 780HP / 830-nm-class fibre rises steeply (Thorlabs 780HP: <= 3.5 dB/km at 850 nm,
~4 dB/km at 780 nm; 930 nm: ~2 dB/km). Deployed links are worse (Hannover-Braunschweig,
Yang et al., Light Sci. Appl. 13, 150 (2024): 79 km, 25.49 dB).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: (wavelength_nm, attenuation_db_per_km) anchor points, interpolated linearly in between.
DEFAULT_ATTENUATION_DB_PER_KM: tuple[tuple[float, float], ...] = (
    (780.0, 4.0),
    (850.0, 3.5),
    (930.0, 2.0),
    (1310.0, 0.32),
    (1550.0, 0.18),
    (1625.0, 0.2),
)


def default_attenuation_db_per_km(wavelength_nm: float) -> float:
    """Typical single-mode fibre attenuation at a wavelength (see module docstring for sources)."""
    waves, values = zip(*DEFAULT_ATTENUATION_DB_PER_KM, strict=True)
    if not waves[0] <= wavelength_nm <= waves[-1]:
        raise ValueError(
            f"no default fibre attenuation at {wavelength_nm} nm (known {waves[0]}-{waves[-1]} nm); "
            "set channel.attenuation_db_per_km"
        )
    return float(np.interp(wavelength_nm, waves, values))


def transmittance_from_loss_db(loss_db: float) -> float:
    """eta = 10^(-loss/10)."""
    return float(10.0 ** (-loss_db / 10.0))


@dataclass(frozen=True)
class FibreChannel:
    """Fibre of a given length; ``loss_db`` (if set) overrides the computed total."""

    length_km: float
    attenuation_db_per_km: float
    extra_loss_db: float = 0.0
    loss_db_override: float | None = None

    def __post_init__(self) -> None:
        if self.length_km < 0:
            raise ValueError(f"channel.length_km must be >= 0, got {self.length_km}")
        if self.attenuation_db_per_km < 0:
            raise ValueError(
                f"channel.attenuation_db_per_km must be >= 0, got {self.attenuation_db_per_km}"
            )
        if self.extra_loss_db < 0:
            raise ValueError(f"channel.extra_loss_db must be >= 0, got {self.extra_loss_db}")
        if self.loss_db_override is not None and self.loss_db_override < 0:
            raise ValueError(f"channel.loss_db must be >= 0, got {self.loss_db_override}")

    @property
    def loss_db(self) -> float:
        """Total channel loss in dB."""
        if self.loss_db_override is not None:
            return self.loss_db_override
        return self.attenuation_db_per_km * self.length_km + self.extra_loss_db

    @property
    def transmittance(self) -> float:
        """Channel transmittance eta."""
        return transmittance_from_loss_db(self.loss_db)

    @property
    def background_rate_hz(self) -> float:
        """Fibre adds no background light in this model (Raman noise of co-propagating classical
        channels is not modelled)."""
        return 0.0
