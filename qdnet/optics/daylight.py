"""Background light of a free-space receiver in daylight.

Sky photons collected per second by a receiver of aperture area A (diameter ``aperture_m``), full
field of view FOV (solid angle Omega = pi (FOV/2)^2) and spectral filter width d_lambda, looking at
a sky of spectral radiance L (W m^-2 sr^-1 nm^-1)::

    N = L Omega A d_lambda / (h c / lambda)

(Miao et al., New J. Phys. 7, 215 (2005), Eq. 1; the same budget in Liao et al., Nat. Photonics 11,
509 (2017), Methods). The light is unpolarised: each of the receiver's two detectors of a basis
gets N/2, detected with the receiver's efficiency, so the background counts per detector in a time
window tau are ``N eta_det tau / 2`` (they enter like dark counts; a narrower gate counts fewer).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from qdnet.optics.conversion import Arms

#: Planck constant (J s) and speed of light (m/s), exact SI values.
PLANCK_J_S = 6.62607015e-34
LIGHT_SPEED_M_S = 299792458.0


@dataclass(frozen=True)
class Daylight:
    """Sky background at the receiver(s) on ``arms`` (BBM92; one path: ``both``)."""

    sky_radiance_w_m2_sr_nm: float
    field_of_view_urad: float
    aperture_m: float
    filter_nm: float
    arms: Arms = "both"

    def __post_init__(self) -> None:
        if not self.sky_radiance_w_m2_sr_nm >= 0:
            raise ValueError(
                f"channel.daylight.sky_radiance_w_m2_sr_nm must be >= 0, got "
                f"{self.sky_radiance_w_m2_sr_nm}"
            )
        for name in ("field_of_view_urad", "aperture_m", "filter_nm"):
            value = getattr(self, name)
            if not value > 0:
                raise ValueError(f"channel.daylight.{name} must be > 0, got {value}")

    @property
    def solid_angle_sr(self) -> float:
        """Omega = pi (FOV/2)^2 (small angles)."""
        return math.pi * (self.field_of_view_urad * 1e-6 / 2.0) ** 2

    @property
    def aperture_area_m2(self) -> float:
        """pi (D/2)^2."""
        return math.pi * (self.aperture_m / 2.0) ** 2

    def photon_rate_hz(self, wavelength_nm: float) -> float:
        """Sky photons per second entering the receiver within the filter."""
        power_w = (
            self.sky_radiance_w_m2_sr_nm
            * self.solid_angle_sr
            * self.aperture_area_m2
            * self.filter_nm
        )
        photon_energy_j = PLANCK_J_S * LIGHT_SPEED_M_S / (wavelength_nm * 1e-9)
        return power_w / photon_energy_j

    def background_rate_hz(self, wavelength_nm: float, detector_efficiency: float) -> float:
        """Background counts per second per detector."""
        return self.photon_rate_hz(wavelength_nm) * detector_efficiency / 2.0
