"""Pluggable channel interceptors for the Monte Carlo of :mod:`qdnet.simulation`.

A prepare-and-measure interceptor maps the photon-number distribution of one intensity class
(what Alice emits) to the joint distribution of what reaches Bob's detectors::

    table[m, kind] = P(m photons are absorbed by Bob's detectors, carrying state `kind`)

``kind`` 0: the photons are in Alice's state (basis, bit); ``kind`` 1: they were re-prepared by Eve
in her measurement basis (Z with probability ``eve_basis_z_probability``) with her outcome (Alice's
bit if the bases agree, a random bit otherwise). Noise clicks, basis choices and the click model are
applied after the table by the engine, so every interceptor is exact and works with the per-pulse
and the event-skipping paths alike. BBM92 interceptors act on one arm's photon instead
(:class:`PairInterceptor`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from qdnet.sources.photon_statistics import thin

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class ChannelContext:
    """What an interceptor may know about the link it attacks (all public characterisation)."""

    eta_channel: float
    eta_detector: float
    signal_distribution: FloatArray


@runtime_checkable
class Interceptor(Protocol):
    """An eavesdropper on a prepare-and-measure channel."""

    @property
    def name(self) -> str:
        """CLI name of the attack."""
        ...

    @property
    def eve_basis_z_probability(self) -> float:
        """P(Z) of Eve's measurement basis for re-prepared photons."""
        ...

    def arrival_table(self, distribution: FloatArray, context: ChannelContext) -> FloatArray:
        """``table[m, kind]`` for one intensity class (see module docstring)."""
        ...

    def describe(self) -> dict[str, object]:
        """Parameters for reports and metadata."""
        ...


@runtime_checkable
class PairInterceptor(Protocol):
    """An eavesdropper on one arm of an entanglement-based link."""

    @property
    def name(self) -> str:
        """CLI name of the attack."""
        ...

    @property
    def fraction(self) -> float:
        """Fraction of the arm's photons intercepted."""
        ...

    @property
    def eve_basis_z_probability(self) -> float:
        """P(Z) of Eve's measurement basis."""
        ...

    @property
    def arm(self) -> str:
        """'a' or 'b'."""
        ...

    def describe(self) -> dict[str, object]:
        """Parameters for reports and metadata."""
        ...


def faithful_table(distribution: FloatArray, transmittance: float) -> FloatArray:
    """No interception: absorbed photons are the binomial thinning of the emitted ones."""
    absorbed = thin(np.asarray(distribution, dtype=np.float64), transmittance)
    table = np.zeros((len(absorbed), 2))
    table[:, 0] = absorbed
    return table


@dataclass(frozen=True)
class NoAttack:
    """The honest channel."""

    name: str = "none"
    eve_basis_z_probability: float = 0.5

    def arrival_table(self, distribution: FloatArray, context: ChannelContext) -> FloatArray:
        """Binomial loss over channel and detector."""
        return faithful_table(distribution, context.eta_channel * context.eta_detector)

    def describe(self) -> dict[str, object]:
        """No parameters."""
        return {"attack": self.name}
