"""Fundamental limits."""

from __future__ import annotations

import math


def plob_bits_per_channel_use(transmittance: float) -> float:
    """Repeaterless bound -log2(1 - eta) (Pirandola, Laurenza, Ottaviani, Banchi,
    Nat. Commun. 8, 15043 (2017), Eq. 3)."""
    if not 0.0 <= transmittance <= 1.0:
        raise ValueError(f"transmittance must be in [0, 1], got {transmittance}")
    if transmittance == 1.0:
        return math.inf
    return -math.log2(1.0 - transmittance)
