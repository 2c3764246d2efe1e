"""Finite-key secret-key length from observed counts, for every protocol of qdnet.

The same function serves the analytic model (fed with expected counts) and the post-processing
endpoints (fed with the counts they observed), so the two cannot drift apart.

- Decoy BB84 with three intensities mu1 > mu2 > mu3 >= 0: Lim, Curty, Walenta, Xu, Zbinden,
  PRA 89, 022307 (2014), Eqs. (1)-(5) and the length formula (their key basis "X" is our Z)::

      l = s_Z0 + s_Z1 (1 - h(phi)) - lambda_EC - 6 log2(21/eps_sec) - log2(2/eps_cor)

- Single-photon source, one intensity: the number of multi-photon (tagged) detections in each basis
  is bounded above by the multiplicative Chernoff bound on the multi-photon emissions,
  ``P(n>=2) <= g2 mu^2/2`` per pulse (Morrison et al., Nat. Commun. (2023), "Single-emitter quantum
  key distribution over 175 km of fibre with optimised finite key rates"); the untagged detections
  s_1 = n - tagged^+ carry the key, with the phase error of the untagged test bits sampled onto the
  key bits by Serfling's bound (Tomamichel et al. 2012), with the epsilon budget of Lim et al.
  A laser without decoys falls under the same analysis with its Poisson multi-photon probability
  (GLLP, the regime the photon-number-splitting attack exploits).
- BBM92: phase error from the test basis, ``phi = e_X + mu(n, k)`` with Serfling's sampling margin
  (Tomamichel, Lim, Gisin, Renner, Nat. Commun. 3, 634 (2012), Eq. (2)),
  ``l = n (1 - h(phi)) - lambda_EC - log2(2/(eps_sec^2 eps_cor))``. Their key is
  (2 eps + eps_PA)-secret, eps the smoothing parameter (the sampling bound fails with probability
  eps^2) and eps_PA = 2^((l - H_min)/2)/2 the leftover-hash term; qdnet takes eps = eps_sec/4 and
  eps_PA = eps_sec/2, so that 2 eps + eps_PA = eps_sec.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from qdnet.security.entropy import binary_entropy as h

#: Lim et al. 2014 split eps_sec into 21 parts (their Eq. 6 and Appendix B).
LIM_EPSILON_PARTS = 21.0


@dataclass(frozen=True)
class ObservedCounts:
    """Sifted counts per intensity class (signal first) after parameter estimation.

    Key basis = Z (basis 0), test basis = X (basis 1). ``basis_bias`` is P(Z) for both parties
    (None: unknown, then the tagged bound assumes every pulse could land in either basis).
    Observed counts are integers; the link model passes expected (fractional) counts.
    """

    protocol: str
    intensities: tuple[float, ...]
    pulses: tuple[float, ...]
    key_detections: tuple[float, ...]
    test_detections: tuple[float, ...]
    test_errors: tuple[float, ...]
    multiphoton_probability: float = 0.0
    basis_bias: float | None = None

    def __post_init__(self) -> None:
        sizes = {
            len(self.intensities),
            len(self.pulses),
            len(self.key_detections),
            len(self.test_detections),
            len(self.test_errors),
        }
        if len(sizes) != 1:
            raise ValueError("ObservedCounts: every per-class tuple needs one entry per intensity")
        for name in ("pulses", "key_detections", "test_detections", "test_errors"):
            if any(v < 0 for v in getattr(self, name)):
                raise ValueError(f"ObservedCounts.{name} must be >= 0")


@dataclass(frozen=True)
class KeyLength:
    """Secret bits extractable (0 if none) and the finite-key terms behind them; ``length_bits``
    is the length formula's value before rounding down and clipping at 0 (the expected key of the
    link model; 0 where the analysis stops early for want of single-photon or test bits)."""

    bits: int
    terms: dict[str, float] = field(default_factory=dict)
    length_bits: float = 0.0


def gamma(eps: float, error_rate: float, key_count: float, test_count: float) -> float:
    """Random-sampling correction gamma(a, b, c, d) of Lim et al. 2014 (after Eq. 2)::

    sqrt((c+d)(1-b)b/(c d ln 2) * log2((c+d)/(c d (1-b) b) * 21^2/a^2))
    """
    b, c, d = error_rate, key_count, test_count
    if c <= 0 or d <= 0:
        return math.inf
    b = min(max(b, 1e-12), 0.5)
    inner = (c + d) / (c * d * (1 - b) * b) * (LIM_EPSILON_PARTS / eps) ** 2
    if inner <= 1.0:
        return 0.0
    return math.sqrt((c + d) * (1 - b) * b / (c * d * math.log(2)) * math.log2(inner))


def serfling_margin(eps: float, key_count: float, test_count: float) -> float:
    """Sampling margin between a test subset of size k and key set of size n, valid for any error
    rate: ``sqrt((n+k)/(n k) (k+1)/k ln(1/eps))`` (Tomamichel, Lim, Gisin, Renner, Nat. Commun. 3,
    634 (2012), Supplementary Eq. (S15), from Serfling's bound)."""
    n, k = key_count, test_count
    if n <= 0 or k <= 0:
        return math.inf
    return math.sqrt((n + k) / (n * k) * (k + 1) / k * math.log(1.0 / eps))


def chernoff_upper(expected: float, eps: float) -> float:
    """Upper bound on a sum of independent Bernoullis with mean ``expected``, failing with
    probability <= eps: ``mu + (L + sqrt(L^2 + 8 mu L))/2``, L = ln(1/eps) (multiplicative
    Chernoff bound P(X >= (1+d)mu) <= exp(-d^2 mu/(2+d)))."""
    if expected <= 0:
        return 0.0
    log_term = math.log(1.0 / eps)
    return expected + (log_term + math.sqrt(log_term * log_term + 8.0 * expected * log_term)) / 2.0


def _hoeffding(total: float, eps: float) -> float:
    return math.sqrt(total / 2.0 * math.log(LIM_EPSILON_PARTS / eps))


def _lim_single_photon(
    counts: tuple[float, ...],
    intensities: tuple[float, ...],
    probabilities: tuple[float, ...],
    eps: float,
) -> tuple[float, float]:
    """(s_0 lower, s_1 lower) for one basis, Lim et al. 2014 Eqs. (2)-(3), with counts per class."""
    mu1, mu2, mu3 = intensities
    dev = _hoeffding(sum(counts), eps)
    up = [
        math.exp(k) / p * (n + dev)
        for k, p, n in zip(intensities, probabilities, counts, strict=True)
    ]
    lo = [
        math.exp(k) / p * (n - dev)
        for k, p, n in zip(intensities, probabilities, counts, strict=True)
    ]
    tau0 = sum(p * math.exp(-k) for k, p in zip(intensities, probabilities, strict=True))
    tau1 = sum(p * math.exp(-k) * k for k, p in zip(intensities, probabilities, strict=True))
    s0 = max(0.0, tau0 * (mu2 * lo[2] - mu3 * up[1]) / (mu2 - mu3))
    numerator = tau1 * mu1 * (lo[1] - up[2] - (mu2**2 - mu3**2) / mu1**2 * (up[0] - s0 / tau0))
    s1 = max(0.0, numerator / (mu1 * (mu2 - mu3) - mu2**2 + mu3**2))
    return s0, s1


def _penalties(eps_sec: float, eps_cor: float, parts: float) -> float:
    return parts * math.log2(LIM_EPSILON_PARTS / eps_sec) + math.log2(2.0 / eps_cor)


def decoy_key_length(
    counts: ObservedCounts, leak_ec_bits: float, eps_sec: float, eps_cor: float
) -> KeyLength:
    """Lim et al. 2014 three-intensity decoy BB84 (see module docstring)."""
    if len(counts.intensities) != 3:
        raise ValueError(
            "decoy finite-key analysis needs exactly three intensities mu1 > mu2 > mu3"
        )
    mu1, mu2, mu3 = counts.intensities
    if not (mu1 > mu2 + mu3 and mu2 > mu3 >= 0):
        raise ValueError(
            f"decoy intensities must satisfy mu1 > mu2 + mu3, mu2 > mu3 >= 0; got {counts.intensities}"
        )
    total = sum(counts.pulses)
    probs = tuple(n / total for n in counts.pulses)
    s_z0, s_z1 = _lim_single_photon(counts.key_detections, counts.intensities, probs, eps_sec)
    _, s_x1 = _lim_single_photon(counts.test_detections, counts.intensities, probs, eps_sec)
    dev = _hoeffding(sum(counts.test_errors), eps_sec)
    m_up = math.exp(mu2) / probs[1] * (counts.test_errors[1] + dev)
    m_lo = math.exp(mu3) / probs[2] * (counts.test_errors[2] - dev)
    tau1 = sum(p * math.exp(-k) * k for k, p in zip(counts.intensities, probs, strict=True))
    v_x1 = max(0.0, tau1 * (m_up - m_lo) / (mu2 - mu3))
    terms: dict[str, float] = {
        "key_bits_sifted": float(sum(counts.key_detections)),
        "vacuum_key_bits_lower": s_z0,
        "single_photon_key_bits_lower": s_z1,
        "single_photon_test_bits_lower": s_x1,
        "single_photon_test_errors_upper": v_x1,
        "leak_ec_bits": leak_ec_bits,
    }
    if s_x1 <= 0 or s_z1 <= 0:
        terms["phase_error_upper"] = 0.5
        return KeyLength(0, terms)
    ratio = min(v_x1 / s_x1, 0.5)
    phi = min(0.5, ratio + gamma(eps_sec, ratio, s_z1, s_x1))
    penalty = _penalties(eps_sec, eps_cor, 6.0)
    length = s_z0 + s_z1 * (1.0 - h(phi)) - leak_ec_bits - penalty
    terms.update({"phase_error_upper": phi, "penalty_bits": penalty})
    return KeyLength(max(0, math.floor(length)), terms, length)


def tagged_key_length(
    counts: ObservedCounts, leak_ec_bits: float, eps_sec: float, eps_cor: float
) -> KeyLength:
    """One intensity with a known multi-photon probability (single-photon source, or GLLP laser)."""
    if len(counts.intensities) != 1:
        raise ValueError("a one-intensity analysis needs exactly one intensity class")
    n_pulses = counts.pulses[0]
    n_key, n_test, m_test = (
        counts.key_detections[0],
        counts.test_detections[0],
        counts.test_errors[0],
    )
    eps = eps_sec / LIM_EPSILON_PARTS
    bias = counts.basis_bias
    key_fraction = 1.0 if bias is None else bias * bias
    test_fraction = 1.0 if bias is None else (1 - bias) * (1 - bias)
    p_multi = counts.multiphoton_probability
    tagged_key = min(float(n_key), chernoff_upper(n_pulses * key_fraction * p_multi, eps))
    tagged_test = min(float(n_test), chernoff_upper(n_pulses * test_fraction * p_multi, eps))
    s_key = n_key - tagged_key
    s_test = n_test - tagged_test
    terms: dict[str, float] = {
        "key_bits_sifted": float(n_key),
        "tagged_key_bits_upper": tagged_key,
        "single_photon_key_bits_lower": s_key,
        "single_photon_test_bits_lower": s_test,
        "test_errors": float(m_test),
        "leak_ec_bits": leak_ec_bits,
    }
    if s_key <= 0 or s_test <= 0:
        terms["phase_error_upper"] = 0.5
        return KeyLength(0, terms)
    ratio = min(m_test / s_test, 0.5)
    phi = min(0.5, ratio + serfling_margin(eps, s_key, s_test))
    penalty = _penalties(eps_sec, eps_cor, 4.0)
    length = s_key * (1.0 - h(phi)) - leak_ec_bits - penalty
    terms.update({"phase_error_upper": phi, "penalty_bits": penalty})
    return KeyLength(max(0, math.floor(length)), terms, length)


def bbm92_key_length(
    counts: ObservedCounts, leak_ec_bits: float, eps_sec: float, eps_cor: float
) -> KeyLength:
    """BBM92: key from Z coincidences, phase error sampled from X coincidences."""
    n_key, n_test, m_test = (
        counts.key_detections[0],
        counts.test_detections[0],
        counts.test_errors[0],
    )
    terms: dict[str, float] = {
        "key_bits_sifted": float(n_key),
        "test_bits": float(n_test),
        "test_errors": float(m_test),
        "leak_ec_bits": leak_ec_bits,
    }
    if n_key <= 0 or n_test <= 0:
        terms["phase_error_upper"] = 0.5
        return KeyLength(0, terms)
    ratio = min(m_test / n_test, 0.5)
    # Smoothing eps = eps_sec/4 (sampling), leftover hash eps_PA = eps_sec/2: 2 eps + eps_PA = eps_sec.
    phi = min(0.5, ratio + serfling_margin(eps_sec / 4.0, n_key, n_test))
    penalty = 2.0 * math.log2(1.0 / eps_sec) + math.log2(2.0 / eps_cor)
    length = n_key * (1.0 - h(phi)) - leak_ec_bits - penalty
    terms.update({"phase_error_upper": phi, "penalty_bits": penalty})
    return KeyLength(max(0, math.floor(length)), terms, length)


def secret_key_length(
    counts: ObservedCounts, leak_ec_bits: float, eps_sec: float, eps_cor: float
) -> KeyLength:
    """Dispatch on the protocol: the finite-key length for observed counts and a given leak."""
    if not (0 < eps_sec < 1 and 0 < eps_cor < 1):
        raise ValueError(f"eps_sec and eps_cor must be in (0, 1), got {eps_sec}, {eps_cor}")
    if counts.protocol == "decoy-bb84":
        return decoy_key_length(counts, leak_ec_bits, eps_sec, eps_cor)
    if counts.protocol == "bb84":
        return tagged_key_length(counts, leak_ec_bits, eps_sec, eps_cor)
    if counts.protocol == "bbm92":
        return bbm92_key_length(counts, leak_ec_bits, eps_sec, eps_cor)
    raise ValueError(f"unknown protocol {counts.protocol!r}; expected bb84, decoy-bb84 or bbm92")
