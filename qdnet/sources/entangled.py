"""Polarisation-entangled photon pairs from the biexciton-exciton cascade of a quantum dot.

State per pair: ``(|HH> + e^{i S t / hbar} |VV>) / sqrt(2)`` with S the fine-structure splitting and
t the exciton emission time (Keil et al., Nat. Commun. 8, 15501 (2017)). Averaged over the exciton's
exponential decay (lifetime tau), including spin scattering (tau_SS) and cross-dephasing (tau_HV)
and a background (uncorrelated) fraction 1 - k, the two-photon density matrix in the basis
HH, HV, VH, VV is (Hudson et al., PRL 99, 266802 (2007), Eq. 2)::

    rho = 1/4 diag(1 + k g_H, 1 - k g_H, 1 - k g_H, 1 + k g_H),  rho[HH,VV] = k c / 2

    g_H = 1 / (1 + tau/tau_SS)
    c   = 1 / (1 + tau/tau_SS + tau/tau_HV - i S tau / hbar)            (time-integrated)
    c   = exp(-(S sigma / hbar)^2 / 2) / (1 + tau/tau_SS + tau/tau_HV)     (time-resolved, phase tracked)

with sigma the detectors' timing resolution. Fidelity to Phi+ ``F = (1 + k g_H + 2 k Re c)/4``;
Z-basis error ``(1 - k g_H)/2``; X-basis error ``(1 - k Re c)/2``; concurrence of this X-state
``C = 2 max(0, |rho_HH,VV| - sqrt(rho_HV,HV rho_VH,VH))`` (Wootters, PRL 80, 2245 (1998)).
Multi-pair emission: ``P(2 pairs)``, ~1.5e-4 for GaAs dots under two-photon excitation
(Neuwirth et al., PRB 106, L241402 (2022)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from qdnet.sources.photon_statistics import FloatArray

#: Reduced Planck constant in ueV ns (CODATA 2018: 6.582119569e-16 eV s).
HBAR_UEV_NS = 0.6582119569


@dataclass(frozen=True)
class EntangledPairSource:
    """A quantum dot emitting one polarisation-entangled pair per excitation pulse (at most)."""

    pair_efficiency: float
    repetition_rate_hz: float
    fss_uev: float = 0.0
    exciton_lifetime_ns: float = 0.25
    extraction_efficiency: float = 1.0
    spin_scattering_time_ns: float | None = None
    cross_dephasing_time_ns: float | None = None
    background_fraction: float = 0.0
    time_resolved: bool = False
    detector_time_resolution_ps: float = 0.0
    multi_pair_probability: float = 0.0
    wavelength_nm: float = 785.0

    def __post_init__(self) -> None:
        checks = {
            "source.pair_efficiency": (self.pair_efficiency, 0.0, 1.0),
            "source.extraction_efficiency": (self.extraction_efficiency, 0.0, 1.0),
            "source.background_fraction": (self.background_fraction, 0.0, 1.0),
            "source.multi_pair_probability": (self.multi_pair_probability, 0.0, 0.5),
        }
        for name, (value, low, high) in checks.items():
            if not low <= value <= high:
                raise ValueError(f"{name} must be in [{low}, {high}], got {value}")
        if self.multi_pair_probability > self.pair_efficiency:
            raise ValueError(
                "source.multi_pair_probability must not exceed source.pair_efficiency, got "
                f"{self.multi_pair_probability} > {self.pair_efficiency}"
            )
        positive = {
            "source.repetition_rate_hz": self.repetition_rate_hz,
            "source.exciton_lifetime_ns": self.exciton_lifetime_ns,
            "source.wavelength_nm": self.wavelength_nm,
        }
        for name, value in positive.items():
            if not value > 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        for name, opt in (
            ("source.spin_scattering_time_ns", self.spin_scattering_time_ns),
            ("source.cross_dephasing_time_ns", self.cross_dephasing_time_ns),
        ):
            if opt is not None and not opt > 0:
                raise ValueError(f"{name} must be > 0 or null (no such process), got {opt}")
        if self.fss_uev < 0 or self.detector_time_resolution_ps < 0:
            raise ValueError("source.fss_uev and source.detector_time_resolution_ps must be >= 0")

    @property
    def phase_rate(self) -> float:
        """x = S tau / hbar, the fine-structure phase accumulated per exciton lifetime."""
        return self.fss_uev * self.exciton_lifetime_ns / HBAR_UEV_NS

    def _decay_ratio(self, time_ns: float | None) -> float:
        return 0.0 if time_ns is None else self.exciton_lifetime_ns / time_ns

    @property
    def population_contrast(self) -> float:
        """g_H = 1/(1 + tau/tau_SS) (Hudson et al. 2007)."""
        return 1.0 / (1.0 + self._decay_ratio(self.spin_scattering_time_ns))

    @property
    def coherence(self) -> complex:
        """c, the HH-VV coherence of the cascade part (see module docstring)."""
        damping = (
            1.0
            + self._decay_ratio(self.spin_scattering_time_ns)
            + self._decay_ratio(self.cross_dephasing_time_ns)
        )
        if self.time_resolved:
            sigma_ns = self.detector_time_resolution_ps * 1e-3
            blur = math.exp(-((self.fss_uev * sigma_ns / HBAR_UEV_NS) ** 2) / 2.0)
            return complex(blur / damping, 0.0)
        return 1.0 / complex(damping, -self.phase_rate)

    @property
    def cascade_fraction(self) -> float:
        """k = 1 - background fraction."""
        return 1.0 - self.background_fraction

    def density_matrix(self) -> NDArray[np.complex128]:
        """4x4 two-photon density matrix in the basis HH, HV, VH, VV."""
        k, g_h, c = self.cascade_fraction, self.population_contrast, self.coherence
        rho = (
            np.diag([1 + k * g_h, 1 - k * g_h, 1 - k * g_h, 1 + k * g_h]).astype(np.complex128) / 4
        )
        rho[0, 3] = k * c / 2
        rho[3, 0] = np.conj(k * c / 2)
        return rho

    def fidelity(self) -> float:
        """Fidelity to Phi+ = (1 + k g_H + 2 k Re c)/4."""
        k = self.cascade_fraction
        return (1.0 + k * self.population_contrast + 2.0 * k * self.coherence.real) / 4.0

    def concurrence(self) -> float:
        """Wootters concurrence of the X-shaped state."""
        rho = self.density_matrix()
        value = 2.0 * (abs(rho[0, 3]) - math.sqrt(rho[1, 1].real * rho[2, 2].real))
        return max(0.0, float(value))

    def qber_z(self) -> float:
        """Error in the H/V basis from the state alone: (1 - k g_H)/2."""
        return (1.0 - self.cascade_fraction * self.population_contrast) / 2.0

    def qber_x(self) -> float:
        """Error in the D/A basis from the state alone: (1 - k Re c)/2."""
        return (1.0 - self.cascade_fraction * self.coherence.real) / 2.0

    def pair_number_distribution(self) -> FloatArray:
        """[P(0), P(1), P(2)] pairs per excitation pulse at the source."""
        p2 = self.multi_pair_probability
        return np.array([1.0 - self.pair_efficiency, self.pair_efficiency - p2, p2])

    def error_budget(self) -> dict[str, float]:
        """Contribution of each imperfection to the X-basis error (each alone, others ideal)."""
        x = self.phase_rate
        fss_only = (1.0 - 1.0 / (1.0 + x * x)) / 2.0 if not self.time_resolved else 0.0
        return {
            "fine_structure_splitting": fss_only,
            "spin_scattering": (1.0 - 1.0 / (1.0 + self._decay_ratio(self.spin_scattering_time_ns)))
            / 2.0,
            "cross_dephasing": (1.0 - 1.0 / (1.0 + self._decay_ratio(self.cross_dephasing_time_ns)))
            / 2.0,
            "background": self.background_fraction / 2.0,
            "multi_pair": self.multi_pair_probability / max(self.pair_efficiency, 1e-300) / 2.0,
        }
