"""Free-space channel as a fixed loss with background light.

Background counts enter the receiver like dark counts: ``p_bg = rate x window`` per detector
(e.g. Bourgoin et al., NJP 15, 023006 (2013), Sec. 3 for the link budget of such channels).
"""

from __future__ import annotations

from dataclasses import dataclass

from qdnet.optics.fibre import transmittance_from_loss_db


@dataclass(frozen=True)
class FreeSpaceChannel:
    """A free-space path with a fixed total loss and background counts per detector."""

    loss_db: float
    background_rate_hz: float = 0.0
    length_km: float = 0.0

    def __post_init__(self) -> None:
        if self.loss_db < 0:
            raise ValueError(f"channel.loss_db must be >= 0, got {self.loss_db}")
        if self.background_rate_hz < 0:
            raise ValueError(
                f"channel.background_rate_hz must be >= 0, got {self.background_rate_hz}"
            )

    @property
    def transmittance(self) -> float:
        """Channel transmittance eta."""
        return transmittance_from_loss_db(self.loss_db)
