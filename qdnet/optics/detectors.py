"""Threshold single-photon detectors: efficiency, dark counts, dead time, afterpulsing.

- Click probability for n photons: ``1 - (1 - eta)^n`` (independent absorption; Lo, Ma, Chen 2005).
- Dark (and background) counts per window: ``p_d = rate x window``.
- Dead time: a non-paralysable detector of dead time tau at click rate R loses the fraction
  ``R tau / (1 + R tau)`` of its windows; we apply it as an efficiency factor ``1/(1 + R tau)``
  (Knoll, *Radiation Detection and Measurement*, 4th ed., Eq. 4.6).
- Afterpulsing: each click causes, with probability ``p_ap``, a spurious click in a later window;
  to first order this adds ``p_ap x (click probability)`` of uniformly random noise clicks per
  window (Yuan et al., APL 91, 041114 (2007)).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Detector:
    """One detector type used for every output port of a receiver."""

    efficiency: float
    dark_count_rate_hz: float = 0.0
    window_ns: float = 1.0
    dead_time_ns: float = 0.0
    afterpulse_probability: float = 0.0
    jitter_ps: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 < self.efficiency <= 1.0:
            raise ValueError(f"receiver.efficiency must be in (0, 1], got {self.efficiency}")
        if self.dark_count_rate_hz < 0:
            raise ValueError(
                f"receiver.dark_count_rate_hz must be >= 0, got {self.dark_count_rate_hz}"
            )
        if self.window_ns <= 0:
            raise ValueError(f"receiver.window_ns must be > 0, got {self.window_ns}")
        if self.dead_time_ns < 0:
            raise ValueError(f"receiver.dead_time_ns must be >= 0, got {self.dead_time_ns}")
        if not 0.0 <= self.afterpulse_probability < 1.0:
            raise ValueError(
                f"receiver.afterpulse_probability must be in [0, 1), got {self.afterpulse_probability}"
            )

    def noise_probability(self, background_rate_hz: float = 0.0) -> float:
        """Probability of a dark or background click in one window (before afterpulsing)."""
        return min(1.0, (self.dark_count_rate_hz + background_rate_hz) * self.window_ns * 1e-9)

    def dead_time_factor(self, click_rate_hz: float) -> float:
        """Fraction of windows in which the detector is live: 1/(1 + R tau)."""
        return 1.0 / (1.0 + click_rate_hz * self.dead_time_ns * 1e-9)
