"""Statistics of a Monte Carlo run beside the analytic expectation, and the security verdict.

Deviation of an observed frequency k/N from its expectation p in standard deviations:
``(k/N - p) / sqrt(p (1-p) / N)`` (binomial). The verdict feeds the observed counts to
:mod:`qdnet.security`: the finite-key length (:func:`qdnet.security.finite_key.secret_key_length`),
and the asymptotic estimates (GLLP for one intensity, Gottesman et al., QIC 4, 325 (2004); the
vacuum + weak decoy bounds of Ma, Qi, Zhao, Lo, PRA 72, 012326 (2005); BBM92 per coincidence,
Ma, Fung, Lo, PRA 76, 012307 (2007)). Interception is declared when an estimate crosses a bound
(phase error above the threshold, single-photon yield bound below what the characterised link gives,
no key left) or when an observed statistic leaves the characterised link's expectation by more than
``threshold_sigma`` (the link is then not the one whose loss and noise were characterised).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from qdnet.protocols.link import Link
from qdnet.protocols.statistics import LinkStatistics
from qdnet.security.asymptotic import (
    bbm92_key_per_coincidence,
    decoy_key_per_pulse,
    decoy_vacuum_weak_bounds,
    gllp_key_per_pulse,
)
from qdnet.security.entropy import binary_entropy as h
from qdnet.security.finite_key import ObservedCounts, secret_key_length

#: Observed-vs-expected deviation beyond which the link is declared tampered with.
DEFAULT_THRESHOLD_SIGMA = 5.0


def deviation_sigma(successes: int, trials: int, expected: float) -> float:
    """Binomial deviation of ``successes/trials`` from ``expected`` in standard deviations."""
    if trials <= 0:
        return 0.0
    var = expected * (1.0 - expected) / trials
    observed = successes / trials
    if var <= 0.0:
        return 0.0 if observed == expected else math.copysign(math.inf, observed - expected)
    return (observed - expected) / math.sqrt(var)


@dataclass(frozen=True)
class RunStatistics:
    """Observed counts per class: pulses, detections (or coincidences), sifted and errors per basis."""

    protocol: str
    intensities: tuple[float, ...]
    pulses: tuple[int, ...]
    detections: tuple[int, ...]
    zz: tuple[int, ...]
    zz_errors: tuple[int, ...]
    xx: tuple[int, ...]
    xx_errors: tuple[int, ...]
    basis_bias: float
    multiphoton_probability: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)

    def gain(self, k: int = 0) -> float:
        """Detections per pulse of class k."""
        return self.detections[k] / self.pulses[k] if self.pulses[k] else 0.0

    def qber_z(self, k: int = 0) -> float:
        """Error rate of class k's Z-Z sifted events."""
        return self.zz_errors[k] / self.zz[k] if self.zz[k] else 0.0

    def qber_x(self, k: int = 0) -> float:
        """Error rate of class k's X-X sifted events."""
        return self.xx_errors[k] / self.xx[k] if self.xx[k] else 0.0


def compare(run: RunStatistics, expected: LinkStatistics) -> dict[str, float]:
    """Deviation in sigma for every field both carry (gain, QBER per basis, per class)."""
    out: dict[str, float] = {}
    for k in range(len(run.pulses)):
        tag = "" if len(run.pulses) == 1 else f"[{k}]"
        out[f"gain{tag}"] = deviation_sigma(run.detections[k], run.pulses[k], expected.gain[k])
        out[f"qber_z{tag}"] = deviation_sigma(run.zz_errors[k], run.zz[k], expected.qber_z[k])
        out[f"qber_x{tag}"] = deviation_sigma(run.xx_errors[k], run.xx[k], expected.qber_x[k])
    return out


@dataclass(frozen=True)
class Verdict:
    """What the security layer allows from the observed statistics."""

    key_possible: bool
    verdict: str
    reason: str
    asymptotic_bits_per_pulse: float
    finite_key_bits: int
    estimates: dict[str, float] = field(default_factory=dict)


def _observed_counts(run: RunStatistics) -> ObservedCounts:
    return ObservedCounts(
        protocol=run.protocol,
        intensities=run.intensities,
        pulses=run.pulses,
        key_detections=run.zz,
        test_detections=run.xx,
        test_errors=run.xx_errors,
        multiphoton_probability=run.multiphoton_probability,
        basis_bias=run.basis_bias,
    )


def _asymptotic(
    run: RunStatistics, expected: LinkStatistics, f_ec: float
) -> tuple[float, dict[str, float], list[str]]:
    """Asymptotic key per pulse from the observed statistics; estimates and crossed bounds."""
    crossed: list[str] = []
    estimates: dict[str, float] = {}
    if run.protocol == "bbm92":
        e_bit, e_ph = run.qber_z(), run.qber_x()
        estimates.update({"qber_z": e_bit, "qber_x": e_ph})
        rate = run.gain() * bbm92_key_per_coincidence(e_bit, e_ph, f_ec)
        if rate <= 0:
            crossed.append(
                f"1 - f h(E_Z) - h(E_X) = {1 - f_ec * h(e_bit) - h(e_ph):.3f} <= 0 "
                f"(E_Z {e_bit:.2%}, E_X {e_ph:.2%}; expected {expected.qber_z[0]:.2%}, {expected.qber_x[0]:.2%})"
            )
        return rate, estimates, crossed
    if run.protocol == "decoy-bb84" and len(run.intensities) >= 2:
        mu, nu = run.intensities[0], run.intensities[1]
        y0 = run.gain(len(run.intensities) - 1) if len(run.intensities) >= 3 else 0.0
        y1, e1 = decoy_vacuum_weak_bounds(
            mu, nu, run.gain(0), run.qber_x(0), run.gain(1), run.qber_x(1), y0
        )
        y1_exp, _e1_exp = decoy_vacuum_weak_bounds(
            mu,
            nu,
            expected.gain[0],
            expected.qber_x[0],
            expected.gain[1],
            expected.qber_x[1],
            expected.gain[-1] if len(expected.gain) >= 3 else 0.0,
        )
        estimates.update(
            {
                "single_photon_yield_lower": y1,
                "single_photon_error_upper": e1,
                "expected_single_photon_yield_lower": y1_exp,
            }
        )
        rate = decoy_key_per_pulse(mu, run.gain(0), run.qber_z(0), y1, e1, f_ec)
        if rate <= 0:
            crossed.append(
                f"decoy estimate Y1 >= {y1:.3e} (link gives {y1_exp:.3e}), e1 <= {e1:.2%}: "
                f"Q1 (1 - h(e1)) = {y1 * mu * math.exp(-mu) * (1 - h(e1)):.3e} "
                f"<= f Q h(E) = {run.gain(0) * f_ec * h(run.qber_z(0)):.3e}"
            )
        return rate, estimates, crossed
    p_multi = run.multiphoton_probability
    rate = gllp_key_per_pulse(run.gain(0), run.qber_z(0), run.qber_x(0), p_multi, f_ec)
    estimates.update({"tagged_fraction": p_multi / run.gain(0) if run.gain(0) else math.inf})
    if rate <= 0:
        crossed.append(
            f"GLLP: tagged fraction {estimates['tagged_fraction']:.3f}, phase error "
            f"{run.qber_x(0):.2%} leave no key"
        )
    return rate, estimates, crossed


def verdict(
    run: RunStatistics,
    expected: LinkStatistics,
    link: Link,
    threshold_sigma: float = DEFAULT_THRESHOLD_SIGMA,
) -> Verdict:
    """Secret key possible, or interception detected (which estimate crossed which bound)."""
    f_ec = link.protocol.error_correction_efficiency
    rate, estimates, crossed = _asymptotic(run, expected, f_ec)
    deviations = compare(run, expected)
    anomalies = [
        f"{name} {value:+.1f} sigma from the characterised link"
        for name, value in deviations.items()
        if abs(value) > threshold_sigma
    ]
    counts = _observed_counts(run)
    leak = f_ec * sum(run.zz) * h(run.qber_z(0)) if sum(run.zz) else 0.0
    try:
        finite = secret_key_length(counts, leak, link.protocol.eps_sec, link.protocol.eps_cor).bits
    except ValueError:
        finite = 0
    if anomalies or crossed:
        reason = "; ".join(crossed + anomalies)
        return Verdict(False, "interception detected", reason, 0.0, 0, estimates)
    reason = (
        f"asymptotic {rate:.3e} bits/pulse from the observed statistics; finite key {finite} bits"
    )
    if finite <= 0:
        reason += " (block too short for a finite key)"
    return Verdict(True, "secret key possible", reason, rate, finite, estimates)


def pm_statistics(
    run_counts: np.ndarray,
    class_pulses: np.ndarray,
    link: Link,
    intensities: tuple[float, ...],
    bias: float,
) -> RunStatistics:
    """RunStatistics from the engine's per-class counters."""
    source = link.source
    p_multi = float(source.multiphoton_probability(intensities[0]))  # type: ignore[union-attr]
    return RunStatistics(
        protocol=link.protocol.kind,
        intensities=intensities,
        pulses=tuple(int(v) for v in class_pulses),
        detections=tuple(int(v) for v in run_counts[:, 0]),
        zz=tuple(int(v) for v in run_counts[:, 1]),
        zz_errors=tuple(int(v) for v in run_counts[:, 2]),
        xx=tuple(int(v) for v in run_counts[:, 3]),
        xx_errors=tuple(int(v) for v in run_counts[:, 4]),
        basis_bias=bias,
        multiphoton_probability=p_multi,
    )
