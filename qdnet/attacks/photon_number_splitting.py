"""Photon-number-splitting attack (Brassard, Luetkenhaus, Mor, Sanders, PRL 85, 1330 (2000);
Huttner, Imoto, Gisin, Mor, PRA 51, 1863 (1995)).

Eve measures the photon number of every pulse non-destructively at Alice's output. From each
multi-photon pulse she keeps one photon (stored until the bases are announced, so she learns that
bit perfectly) and forwards the other n-1 over a lossless channel; single photons she forwards
losslessly only with probability ``t1`` and blocks otherwise. She chooses the forwarding
probabilities so that Bob's *signal* gain equals that of the honest lossy fibre (she knows the link's
characterisation), preferring multi-photon pulses: ``t_multi = min(1, G/G_multi)``, then
``t1 = (G - G_multi)/G_1`` if needed. The QBER is untouched. Eve cannot tell intensity classes
apart, so the decoy classes see the same per-photon-number yields and their gains no longer fit
one single-photon yield (Hwang, PRL 91, 057901 (2003); Lo, Ma, Chen, PRL 94, 230504 (2005)).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qdnet.attacks.base import ChannelContext, FloatArray
from qdnet.sources.photon_statistics import thin


def _photon_click(distribution: FloatArray, eta: float) -> float:
    n = np.arange(len(distribution))
    return float(np.dot(distribution, 1.0 - (1.0 - eta) ** n))


@dataclass(frozen=True)
class PhotonNumberSplitting:
    """PNS with a lossless channel, matching the honest signal gain."""

    name: str = "pns"
    eve_basis_z_probability: float = 0.5

    def forwarding(self, context: ChannelContext) -> tuple[float, float]:
        """(t_multi, t1): probabilities of forwarding multi-photon and single-photon pulses."""
        signal = np.asarray(context.signal_distribution, dtype=np.float64)
        eta_d = context.eta_detector
        target = _photon_click(signal, context.eta_channel * eta_d)
        n = np.arange(len(signal))
        multi = float(np.dot(signal[2:], 1.0 - (1.0 - eta_d) ** (n[2:] - 1)))
        single = float(signal[1]) * eta_d if len(signal) > 1 else 0.0
        if multi >= target:
            return (target / multi if multi > 0 else 0.0), 0.0
        t1 = min(1.0, (target - multi) / single) if single > 0 else 0.0
        return 1.0, t1

    def arrival_table(self, distribution: FloatArray, context: ChannelContext) -> FloatArray:
        """Forwarded n-1 photons (n >= 2) or the single photon reach Bob's detectors losslessly."""
        t_multi, t1 = self.forwarding(context)
        dist = np.asarray(distribution, dtype=np.float64)
        forwarded = np.zeros(len(dist))
        forwarded[0] = dist[0] + (1.0 - t1) * dist[1] + (1.0 - t_multi) * dist[2:].sum()
        forwarded[1] = t1 * dist[1]
        forwarded[1:-1] += t_multi * dist[2:]
        table = np.zeros((len(dist), 2))
        table[:, 0] = thin(forwarded, context.eta_detector)
        return table

    def describe(self) -> dict[str, object]:
        """Parameters for reports."""
        return {"attack": self.name}
