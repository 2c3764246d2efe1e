"""A channel that depolarises and rotates polarisation, and the two-photon state after it.

Per photon the channel is a depolarising map of visibility V followed by a rotation of the linear
polarisation by an angle theta (a rotation about the circular axis of the Poincare sphere by
2 theta; Nielsen & Chuang, *Quantum Computation and Quantum Information*, Sec. 8.3.4 for the
depolarising map). ``theta`` is the uncompensated rotation ``rotation_deg`` plus a Gaussian drift of
r.m.s. ``drift_deg_rms`` over the key's integration time (residual of a polarisation controller),
so the averages over theta are closed forms::

    E[cos 2 theta] = exp(-2 sigma^2) cos 2 theta_0,  E[sin 2 theta] = exp(-2 sigma^2) sin 2 theta_0

A single photon prepared in any BB84 state then lands in the wrong detector with probability
``e_c = (1 - V)/2 + V (1 - E[cos 2 theta])/2`` in both bases (a rotation of the linear polarisation
turns D/A by the same angle as H/V); with the receiver's own misalignment e_d the flips compose as
``e_d (1 - e_c) + e_c (1 - e_d)`` (independent per photon, so exact in the click model).

For a pair only the photon that travels the channel is affected (``apply_to_second_photon``):
``rho -> V R rho R^T + (1 - V) rho_A (x) I/2`` with R = 1 (x) R(theta) averaged over the drift.
Fidelity to Phi+ is ``<Phi+|rho|Phi+>``, the concurrence Wootters' (PRL 80, 2245 (1998)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

ComplexMatrix = NDArray[np.complex128]

_PHI_PLUS = np.array([1.0, 0.0, 0.0, 1.0]) / math.sqrt(2.0)
_HADAMARD = np.array([[1.0, 1.0], [1.0, -1.0]]) / math.sqrt(2.0)
_SIGMA_Y = np.array([[0.0, -1j], [1j, 0.0]])


@dataclass(frozen=True)
class PolarisationChannel:
    """Depolarising visibility, fixed rotation and r.m.s. drift of a polarisation channel."""

    visibility: float = 1.0
    rotation_deg: float = 0.0
    drift_deg_rms: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.visibility <= 1.0:
            raise ValueError(
                f"channel.polarisation_visibility must be in [0, 1], got {self.visibility}"
            )
        if not -180.0 <= self.rotation_deg <= 180.0:
            raise ValueError(
                f"channel.polarisation_rotation_deg must be in [-180, 180], got {self.rotation_deg}"
            )
        if self.drift_deg_rms < 0:
            raise ValueError(
                f"channel.polarisation_drift_deg_rms must be >= 0, got {self.drift_deg_rms}"
            )

    @property
    def is_identity(self) -> bool:
        """True when the channel leaves every polarisation unchanged."""
        return self.visibility == 1.0 and self.rotation_deg == 0.0 and self.drift_deg_rms == 0.0

    def _damping(self) -> float:
        return math.exp(-2.0 * math.radians(self.drift_deg_rms) ** 2)

    def mean_cos_2theta(self) -> float:
        """E[cos 2 theta] over the drift."""
        return self._damping() * math.cos(2.0 * math.radians(self.rotation_deg))

    def mean_sin_2theta(self) -> float:
        """E[sin 2 theta] over the drift."""
        return self._damping() * math.sin(2.0 * math.radians(self.rotation_deg))

    def photon_error(self) -> float:
        """e_c: probability that a BB84 photon lands in the wrong detector (either basis)."""
        v = self.visibility
        return (1.0 - v) / 2.0 + v * (1.0 - self.mean_cos_2theta()) / 2.0

    def apply_to_second_photon(self, rho: ComplexMatrix) -> ComplexMatrix:
        """The two-photon state (basis HH, HV, VH, VV) after the second photon crosses the channel."""

        def rotated(theta: float) -> ComplexMatrix:
            c, s = math.cos(theta), math.sin(theta)
            op = np.kron(np.eye(2), np.array([[c, -s], [s, c]]))
            return np.asarray(op @ rho @ op.T, dtype=np.complex128)

        # R rho R^T is a + b cos 2 theta + d sin 2 theta: three angles give a, b, d exactly.
        at_0, at_90, at_45 = rotated(0.0), rotated(math.pi / 2), rotated(math.pi / 4)
        a = (at_0 + at_90) / 2
        b = (at_0 - at_90) / 2
        d = at_45 - a
        turned = a + b * self.mean_cos_2theta() + d * self.mean_sin_2theta()
        first = np.einsum("ijkj->ik", rho.reshape(2, 2, 2, 2))
        mixed = np.kron(first, np.eye(2) / 2)
        return np.asarray(
            self.visibility * turned + (1 - self.visibility) * mixed, dtype=np.complex128
        )


def fidelity_phi_plus(rho: ComplexMatrix) -> float:
    """<Phi+|rho|Phi+>."""
    return float(np.real(_PHI_PLUS @ rho @ _PHI_PLUS))


def concurrence(rho: ComplexMatrix) -> float:
    """Wootters concurrence max(0, l1 - l2 - l3 - l4), l_i the decreasing square roots of the
    eigenvalues of rho (sy x sy) rho* (sy x sy)."""
    flip = np.kron(_SIGMA_Y, _SIGMA_Y)
    eigenvalues = np.linalg.eigvals(rho @ flip @ rho.conj() @ flip)
    roots = np.sort(np.sqrt(np.clip(eigenvalues.real, 0.0, None)))[::-1]
    return max(0.0, float(roots[0] - roots[1:].sum()))


def pair_errors(rho: ComplexMatrix) -> tuple[float, float]:
    """(Z error, X error): probability of anti-correlated outcomes in H/V and in D/A (Phi+ gives 0)."""
    e_z = float(np.real(rho[1, 1] + rho[2, 2]))
    h2 = np.kron(_HADAMARD, _HADAMARD)
    in_x = h2 @ rho @ h2
    e_x = float(np.real(in_x[1, 1] + in_x[2, 2]))
    return e_z, e_x


def with_accidentals(rho: ComplexMatrix, true_fraction: float) -> ComplexMatrix:
    """The state of detected coincidences when a share ``1 - true_fraction`` of them are accidental
    (uncorrelated: I/4)."""
    return np.asarray(
        true_fraction * rho + (1.0 - true_fraction) * np.eye(4) / 4, dtype=np.complex128
    )


def compose_errors(first: float, second: float) -> float:
    """Probability of an odd number of flips from two independent flips."""
    return first * (1.0 - second) + second * (1.0 - first)
