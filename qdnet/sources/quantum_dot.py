"""Quantum-dot single-photon source described by measured figures.

Photon-number model (truncated at two photons): with mean photon number mu and g = g2(0),
``<n(n-1)> = g mu^2`` and for n <= 2, ``P(2) = g mu^2 / 2``, ``P(1) = mu - 2 P(2)``, ``P(0) = 1 - P(1) - P(2)``.
``P(n>=2) <= g mu^2 / 2`` holds for any distribution (Waks et al., Nature 420, 762 (2002)), so the
truncated model is the worst case for security at given mu and g2.

Brightness B = P(n>=1) (as experimental papers and Perceval's ``Source(emission_probability=B,
multiphoton_component=g2)`` specify it): then ``P(0) = 1 - B`` and P(2) solves
``g2 = 2 P(2) / (B + P(2))^2``, i.e. ``P(2) = (1 - g B - sqrt(1 - 2 g B)) / g`` — the same
convention as Perceval (Pont et al., PRX 12, 031033 (2022)).

Decoy intensities for a dot are made by changing the excitation power (e.g. Barnes et al. 2025,
arXiv:2512.05101); each decoy scales the mean photon number and keeps the dot's g2 unless
``decoy_g2`` gives the g2 measured at each decoy's power (lowering the pump changes it too).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from qdnet.sources.photon_statistics import FloatArray, thin


def _check_range(name: str, value: float, low: float, high: float) -> None:
    if not (low <= value <= high) or math.isnan(value):
        raise ValueError(f"{name} must be in [{low}, {high}], got {value}")


@dataclass(frozen=True)
class SinglePhotonSource:
    """Quantum-dot single photons, per pulse, at the output of Alice's apparatus (into the channel)."""

    mean_photon_number: float
    g2: float
    repetition_rate_hz: float
    wavelength_nm: float = 1550.0
    indistinguishability: float = 1.0
    decoy_intensities: tuple[float, ...] = field(default_factory=tuple)
    #: Radiative lifetime of the emitting transition (the time profile a receiver gate cuts).
    lifetime_ns: float = 0.0
    #: g2 at each decoy intensity (``source.decoy_g2``); empty: the dot's g2 at every power.
    decoy_g2: tuple[float, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        _check_range("source.g2", self.g2, 0.0, 1.0)
        if not self.lifetime_ns >= 0:
            raise ValueError(f"source.exciton_lifetime_ns must be >= 0, got {self.lifetime_ns}")
        _check_range("source.indistinguishability", self.indistinguishability, 0.0, 1.0)
        if self.repetition_rate_hz <= 0:
            raise ValueError(
                f"source.repetition_rate_hz must be > 0, got {self.repetition_rate_hz}"
            )
        if self.wavelength_nm <= 0:
            raise ValueError(f"source.wavelength_nm must be > 0, got {self.wavelength_nm}")
        mu = self.mean_photon_number
        # p1 = mu - g mu^2 >= 0 and p0 >= 0 require mu <= 1/g and mu - g mu^2/2 <= 1.
        max_mu = self.max_mean_photon_number(self.g2)
        if not 0.0 <= mu <= max_mu:
            raise ValueError(
                f"source.mean_photon_number must be in [0, {max_mu:.4g}] for g2 = {self.g2}, got {mu}"
            )
        for k, nu in enumerate(self.decoy_intensities):
            if not 0.0 <= nu < mu:
                raise ValueError(
                    f"source.decoy_intensities[{k}] must be in [0, mean_photon_number), got {nu}"
                )
        if self.decoy_g2 and len(self.decoy_g2) != len(self.decoy_intensities):
            raise ValueError(
                f"source.decoy_g2 needs one g2 per decoy intensity ({len(self.decoy_intensities)}), "
                f"got {len(self.decoy_g2)}"
            )
        for k, (nu, g2) in enumerate(zip(self.decoy_intensities, self.decoy_g2, strict=False)):
            _check_range(f"source.decoy_g2[{k}]", g2, 0.0, 1.0)
            if nu > self.max_mean_photon_number(g2):
                raise ValueError(
                    f"source.decoy_intensities[{k}] = {nu} is above the largest mean photon number "
                    f"{self.max_mean_photon_number(g2):.4g} for its g2 {g2}"
                )

    def operating_point(self, index: int) -> SinglePhotonSource:
        """The dot at intensity class ``index`` (0: the signal, k: decoy k-1) with the g2 of that
        excitation power, as a source of its own."""
        if index == 0:
            return replace(self, decoy_intensities=(), decoy_g2=())
        g2 = self.decoy_g2[index - 1] if self.decoy_g2 else self.g2
        mu = self.decoy_intensities[index - 1]
        return replace(self, mean_photon_number=mu, g2=g2, decoy_intensities=(), decoy_g2=())

    @staticmethod
    def max_mean_photon_number(g2: float) -> float:
        """Largest mu for which the two-photon-truncated model is a probability distribution."""
        if g2 <= 0.0:
            return 1.0
        # p0 = 1 - mu + g mu^2/2 >= 0 always for g <= 1/2 ... ; p1 = mu(1 - g mu) >= 0 -> mu <= 1/g.
        roots = [1.0 / g2]
        disc = 1.0 - 2.0 * g2
        if disc >= 0.0:
            roots.append(2.0 / (1.0 + math.sqrt(disc)))  # (1 - sqrt(disc))/g2 without cancellation
        return min(roots)

    @classmethod
    def from_brightness(
        cls,
        brightness: float,
        g2: float,
        repetition_rate_hz: float,
        wavelength_nm: float = 1550.0,
        indistinguishability: float = 1.0,
        lifetime_ns: float = 0.0,
    ) -> SinglePhotonSource:
        """Build from B = P(n>=1) and g2 with Perceval's convention (see module docstring)."""
        _check_range("source.brightness", brightness, 0.0, 1.0)
        _check_range("source.g2", g2, 0.0, 1.0)
        if 2.0 * g2 * brightness > 1.0:
            # P(2) = (1 - gB - sqrt(1 - 2gB))/g is real only for g B <= 1/2 (then P(1) = B - P(2)
            # >= 0); at g B = 1/2 every emission is a photon pair.
            raise ValueError(
                f"source.g2 x source.brightness must be <= 0.5 (Perceval's convention), got "
                f"g2 = {g2} and brightness = {brightness}"
            )
        p2 = _two_photon_probability_from_brightness(brightness, g2)
        return cls(
            mean_photon_number=brightness + p2,
            g2=g2,
            repetition_rate_hz=repetition_rate_hz,
            wavelength_nm=wavelength_nm,
            indistinguishability=indistinguishability,
            lifetime_ns=lifetime_ns,
        )

    def photon_number_distribution(self, mean_photon_number: float | None = None) -> FloatArray:
        """[P(0), P(1), P(2)] for the given (or the source's own) mean photon number."""
        mu = self.mean_photon_number if mean_photon_number is None else mean_photon_number
        p2 = self.g2 * mu * mu / 2.0
        p1 = mu - 2.0 * p2
        return np.array([1.0 - p1 - p2, p1, p2])

    def generating_function(self, x: float, mean_photon_number: float | None = None) -> float:
        """E[x^n] = p0 + p1 x + p2 x^2 (exact photon-number moments for the click model)."""
        mu = self.mean_photon_number if mean_photon_number is None else mean_photon_number
        p2 = self.g2 * mu * mu / 2.0
        p1 = mu - 2.0 * p2
        return 1.0 - p1 - p2 + p1 * x + p2 * x * x

    def multiphoton_probability(self, mean_photon_number: float | None = None) -> float:
        """Upper bound on P(n>=2) = g2 mu^2 / 2 (Waks et al. 2002)."""
        mu = self.mean_photon_number if mean_photon_number is None else mean_photon_number
        return self.g2 * mu * mu / 2.0

    def after_loss(self, transmittance: float) -> FloatArray:
        """Photon-number distribution after a loss (binomial thinning; g2 is unchanged)."""
        return thin(self.photon_number_distribution(), transmittance)

    def with_mean_photon_number(self, mean_photon_number: float) -> SinglePhotonSource:
        """The same dot attenuated (or pumped less) to another mean photon number."""
        return replace(
            self, mean_photon_number=mean_photon_number, decoy_intensities=(), decoy_g2=()
        )


def _two_photon_probability_from_brightness(brightness: float, g2: float) -> float:
    """P(2) from B and g2 with P(1) + P(2) = B and g2 = 2 P(2)/(B + P(2))^2 (Perceval's convention)."""
    if g2 == 0.0 or brightness == 0.0:
        return 0.0
    gb = g2 * brightness
    root = math.sqrt(1.0 - 2.0 * gb)
    # (1 - gB - sqrt(1 - 2gB))/g rewritten without cancellation for small gB:
    return g2 * brightness * brightness / ((1.0 - gb) + root)
