"""Quantum frequency conversion (QFC) as an optical element of a path.

A difference-frequency converter (e.g. 780 nm -> telecom in a PPLN waveguide; Strobel et al.,
arXiv 2405.14557 (2024), polarisation-preserving) passes each photon to ``output_wavelength_nm``
with the end-to-end ``efficiency`` (coupling, conversion, filtering) and adds noise photons
(anti-Stokes Raman and SPDC of the pump; Strassmann et al., Opt. Express 27, 14298 (2019)) at the
output wavelength, unpolarised and uniform in time. ``noise_counts_per_gate`` is their number per
receiver window (``receiver.window_ns``) at the converter's output; the converter sits at the
start of its arm, so the noise crosses the channel and the detector like the signal, and each of
the receiver's two detectors of a basis counts half of it:

    background per detector (Hz) = noise_counts_per_gate / window x T_channel x eta_det / 2

The fibre after the converter has the attenuation of the output wavelength.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Arms = Literal["both", "a", "b"]


def on_arm(arms: Arms, arm: Literal["a", "b"]) -> bool:
    """Whether an element configured on ``arms`` acts on ``arm`` (prepare and measure: arm b)."""
    return arms in ("both", arm)


@dataclass(frozen=True)
class FrequencyConversion:
    """A converter at the start of the arm(s) it is on (BBM92: ``arms``; one path: ``both``)."""

    efficiency: float
    output_wavelength_nm: float
    noise_counts_per_gate: float = 0.0
    arms: Arms = "both"

    def __post_init__(self) -> None:
        if not 0.0 < self.efficiency <= 1.0:
            raise ValueError(
                f"channel.frequency_conversion.efficiency must be in (0, 1], got {self.efficiency}"
            )
        if not self.output_wavelength_nm > 0:
            raise ValueError(
                "channel.frequency_conversion.output_wavelength_nm must be > 0, got "
                f"{self.output_wavelength_nm}"
            )
        if self.noise_counts_per_gate < 0:
            raise ValueError(
                "channel.frequency_conversion.noise_counts_per_gate must be >= 0, got "
                f"{self.noise_counts_per_gate}"
            )

    def background_rate_hz(
        self, channel_transmittance: float, detector_efficiency: float, window_ns: float
    ) -> float:
        """Background counts per second per detector from the converter's noise photons."""
        per_second = self.noise_counts_per_gate / (window_ns * 1e-9)
        return per_second * channel_transmittance * detector_efficiency / 2.0
