"""Beam-splitting attack (Bennett, Bessette, Brassard, Salvail, Smolin, J. Cryptol. 5, 3 (1992);
Luetkenhaus, PRA 61, 052304 (2000)).

Eve taps a fraction of the light at Alice's output with a beam splitter and keeps it (every pulse
that leaves a photon with her and one with Bob is fully known to her after sifting). Here the tap
comes on top of the characterised fibre (Eve cannot make the installed fibre less lossy without
also replacing it; the replacement variant is :class:`~qdnet.attacks.photon_number_splitting.PhotonNumberSplitting`):
each photon survives with ``1 - fraction`` more, which shows as a gain deficit in every class.
"""

from __future__ import annotations

from dataclasses import dataclass

from qdnet.attacks.base import ChannelContext, FloatArray, faithful_table


@dataclass(frozen=True)
class BeamSplittingTap:
    """Tap ``fraction`` of the photons at the channel input."""

    fraction: float = 0.5
    name: str = "beam-splitting"
    eve_basis_z_probability: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 <= self.fraction <= 1.0:
            raise ValueError(f"attack fraction must be in [0, 1], got {self.fraction}")

    def arrival_table(self, distribution: FloatArray, context: ChannelContext) -> FloatArray:
        """Binomial loss with the tap's extra transmittance ``1 - fraction``."""
        eta = context.eta_channel * context.eta_detector * (1.0 - self.fraction)
        return faithful_table(distribution, eta)

    def describe(self) -> dict[str, object]:
        """Parameters for reports."""
        return {"attack": self.name, "fraction": self.fraction}
