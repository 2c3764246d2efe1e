"""Finite-key secret-key length from observed counts, for every protocol of qdnet.

The same function serves the analytic model (fed with expected counts) and the post-processing
endpoints (fed with the counts they observed), so the two cannot drift apart.

- Decoy BB84 with three intensities mu1 > mu2 > mu3 >= 0: Lim, Curty, Walenta, Xu, Zbinden,
  PRA 89, 022307 (2014), Eqs. (1)-(5) and the length formula (their key basis "X" is our Z)::

      l = s_Z0 + s_Z1 (1 - h(phi)) - lambda_EC - 6 log2(21/eps_sec) - log2(2/eps_cor)

- Decoy BB84 for a known non-Poisson source (a quantum dot whose decoys are made by its pump, each
  class with its own photon-number distribution and g2): :func:`lp_decoy_key_length`, Lim et
  al.'s structure with the linear program of :mod:`qdnet.security.decoy_lp` and per-class
  multiplicative Chernoff intervals.
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

Splitting eps_sec (``protocol.eps_split``, :class:`EpsSplit`): each analysis spends eps_sec on two
kinds of term, the statistical bounds of parameter estimation (``estimation``) and the smoothing and
leftover-hash terms of privacy amplification (``privacy_amplification``); a user may move budget
between them (shares summing to 1), each share split evenly among its terms:

- decoy BB84: Lim et al. give each of their 21 terms eps_sec/21, six of which enter the length
  formula as ``6 log2(21/eps_sec)`` (privacy amplification, default share 6/21) and fifteen the
  Hoeffding and sampling bounds (estimation, 15/21);
- one intensity: two Chernoff bounds and one Serfling bound at eps_sec/21 each and ``4 log2(21/eps_sec)``
  (the same 21-part budget: estimation 17/21, privacy amplification 4/21);
- BBM92: smoothing eps (counted twice) = estimation x eps_sec/2, eps_PA = privacy_amplification x
  eps_sec (default 1/2 each).

The defaults reproduce the published splits exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from qdnet.security import decoy_lp
from qdnet.security.entropy import binary_entropy as h


@dataclass(frozen=True)
class EpsSplit:
    """Shares of eps_sec spent on parameter estimation and on privacy amplification (sum 1)."""

    estimation: float
    privacy_amplification: float

    def __post_init__(self) -> None:
        for name in ("estimation", "privacy_amplification"):
            value = getattr(self, name)
            if not 0.0 < value < 1.0:
                raise ValueError(f"protocol.eps_split.{name} must be in (0, 1), got {value}")
        total = self.estimation + self.privacy_amplification
        if not math.isclose(total, 1.0, rel_tol=1e-9, abs_tol=1e-12):
            raise ValueError(
                "protocol.eps_split: estimation + privacy_amplification must be 1, got "
                f"{self.estimation} + {self.privacy_amplification} = {total}"
            )


#: Terms of each analysis (estimation, privacy amplification); Lim et al. 2014 split eps_sec into
#: 21 parts (their Eq. 6 and Appendix B), BBM92 counts the smoothing eps twice.
_TERMS: dict[str, tuple[float, float]] = {
    "decoy-bb84": (15.0, 6.0),
    "bb84": (17.0, 4.0),
    "bbm92": (2.0, 1.0),
    # Three-state time-bin (qdnet.security.three_state): two Chernoff bounds on tagged
    # detections, four on the X-basis counts, one sampling term; the one-intensity length formula.
    "three-state-time-bin": (7.0, 4.0),
}


def default_eps_split(protocol: str) -> EpsSplit:
    """The published split of each analysis (module docstring)."""
    if protocol == "bbm92":
        return EpsSplit(0.5, 0.5)
    n_est, n_pa = _TERMS[protocol]
    return EpsSplit(n_est / (n_est + n_pa), n_pa / (n_est + n_pa))


def eps_per_term(
    protocol: str,
    eps_sec: float,
    split: EpsSplit | None,
    terms: tuple[float, float] | None = None,
) -> tuple[float, float]:
    """(eps of each estimation term, eps of each privacy-amplification term); ``terms`` overrides
    the protocol's (estimation, privacy amplification) term counts (an analysis whose count
    depends on the number of intensities); its default split is then in proportion to them."""
    n_est, n_pa = terms or _TERMS[protocol]
    split = split or (
        EpsSplit(n_est / (n_est + n_pa), n_pa / (n_est + n_pa))
        if terms
        else default_eps_split(protocol)
    )
    return split.estimation * eps_sec / n_est, split.privacy_amplification * eps_sec / n_pa


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
    #: decoy-bb84 with a known non-Poisson source (a quantum dot whose decoys are made by its
    #: pump): the photon-number distribution of each class ([P(0), P(1), ...]) and the probability
    #: mass beyond it; the analysis is then :func:`lp_decoy_key_length`.
    photon_number_distributions: tuple[tuple[float, ...], ...] | None = None
    distribution_tails: tuple[float, ...] | None = None

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
    """Random-sampling correction gamma(a, b, c, d) of Lim et al. 2014 (after Eq. 2), with
    ``eps`` the failure probability of this one bound (their eps_sec/21)::

    sqrt((c+d)(1-b)b/(c d ln 2) * log2((c+d)/(c d (1-b) b) / eps^2))
    """
    b, c, d = error_rate, key_count, test_count
    if c <= 0 or d <= 0:
        return math.inf
    b = min(max(b, 1e-12), 0.5)
    inner = (c + d) / (c * d * (1 - b) * b) / eps**2
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


def expectation_upper(observed: float, eps: float) -> float:
    """Upper bound on the expectation mu of a sum of independent Bernoullis observed at
    ``observed``, failing with probability <= eps: ``x + L + sqrt(L^2 + 2 L x)``, L = ln(1/eps)
    (the lower tail P(X <= mu - sqrt(2 mu L)) <= eps of the multiplicative Chernoff bound,
    solved for mu)."""
    log_term = math.log(1.0 / eps)
    x = max(observed, 0.0)
    return x + log_term + math.sqrt(log_term * log_term + 2.0 * log_term * x)


def expectation_lower(observed: float, eps: float) -> float:
    """Lower bound on the expectation mu of a sum of independent Bernoullis observed at
    ``observed``, failing with probability <= eps: ``x - (sqrt(L^2 + 8 L x) - L)/2`` (the upper
    tail of :func:`chernoff_upper` solved for mu), clipped at 0."""
    log_term = math.log(1.0 / eps)
    x = max(observed, 0.0)
    return max(0.0, x - (math.sqrt(log_term * log_term + 8.0 * log_term * x) - log_term) / 2.0)


def _hoeffding(total: float, eps: float) -> float:
    """Hoeffding deviation of a count failing with probability ``eps``."""
    return math.sqrt(total / 2.0 * math.log(1.0 / eps))


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


def _penalties(eps_term: float, eps_cor: float, parts: float) -> float:
    return parts * math.log2(1.0 / eps_term) + math.log2(2.0 / eps_cor)


def lim_key_length(
    terms: dict[str, float],
    key_bits: float,
    test_bits: float,
    phase_error_rate: float,
    leak_ec_bits: float,
    eps: float,
    eps_pa: float,
    eps_cor: float,
    pa_terms: float,
    credited_bits: float = 0.0,
) -> KeyLength:
    """The last step of Lim et al. 2014 (Eqs. 1-2), shared by every analysis built on it: the
    phase error of the ``key_bits`` is the test rate plus the sampling correction gamma, and
    ``l = credited_bits + key_bits (1 - h(phi)) - leak_EC - pa_terms log2(1/eps_pa) -
    log2(2/eps_cor)``. Adds ``phase_error_upper`` and ``penalty_bits`` to ``terms``."""
    phi = min(0.5, phase_error_rate + gamma(eps, phase_error_rate, key_bits, test_bits))
    penalty = _penalties(eps_pa, eps_cor, pa_terms)
    length = credited_bits + key_bits * (1.0 - h(phi)) - leak_ec_bits - penalty
    terms.update({"phase_error_upper": phi, "penalty_bits": penalty})
    return KeyLength(max(0, math.floor(length)), terms, length)


def decoy_key_length(
    counts: ObservedCounts,
    leak_ec_bits: float,
    eps_sec: float,
    eps_cor: float,
    eps_split: EpsSplit | None = None,
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
    eps_est, eps_pa = eps_per_term("decoy-bb84", eps_sec, eps_split)
    s_z0, s_z1 = _lim_single_photon(counts.key_detections, counts.intensities, probs, eps_est)
    _, s_x1 = _lim_single_photon(counts.test_detections, counts.intensities, probs, eps_est)
    dev = _hoeffding(sum(counts.test_errors), eps_est)
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
    return lim_key_length(
        terms, s_z1, s_x1, ratio, leak_ec_bits, eps_est, eps_pa, eps_cor, 6.0, credited_bits=s_z0
    )


def _chernoff_lower_actual(expected: float, eps: float) -> float:
    """Lower bound on a sum of independent Bernoullis with mean ``expected``, failing with
    probability <= eps: ``mu - sqrt(2 mu ln(1/eps))`` (multiplicative Chernoff lower tail)."""
    return max(0.0, expected - math.sqrt(2.0 * expected * math.log(1.0 / eps)))


def lp_decoy_key_length(
    counts: ObservedCounts,
    leak_ec_bits: float,
    eps_sec: float,
    eps_cor: float,
    eps_split: EpsSplit | None = None,
) -> KeyLength:
    """Decoy BB84 for any known photon-number distribution per intensity (a quantum dot whose
    decoys are made by lowering its pump, each with its own g2), in finite size.

    The structure of Lim et al. 2014 with the linear program of :mod:`qdnet.security.decoy_lp` in
    place of their Poisson closed forms: each class k's key-basis, test-basis and test-error counts
    give the interval of their expectation per pulse (:func:`expectation_lower`,
    :func:`expectation_upper`: multiplicative Chernoff, independent pulses, as Lim et al.'s
    Hoeffding bounds assume; the pulses of each basis pair are ``pulses_k q^2`` and
    ``pulses_k (1-q)^2``); the program gives Y_1 from below in each basis and E_1 in the test
    basis from above; the expected single-photon key detections ``sum_k pulses_k q^2 p_1^(k) Y_1``,
    test detections and test errors become counts through the Chernoff tails again; the phase
    error is Lim et al.'s ``e_1 + gamma`` and the length
    ``s_Z1 (1 - h(phi)) - lambda_EC - 6 log2(1/eps_PA) - log2(2/eps_cor)`` (vacuum detections
    not credited, unlike Lim et al.'s s_Z0: a small conservative difference). eps_sec is split
    among 6K + 5 estimation terms for K intensities and 6 privacy-amplification terms.
    """
    distributions = counts.photon_number_distributions
    bias = counts.basis_bias
    if distributions is None or bias is None:
        raise ValueError("lp_decoy_key_length needs the classes' distributions and the basis bias")
    classes = len(counts.intensities)
    if len(distributions) != classes or classes < 2:
        raise ValueError(
            f"decoy finite-key LP: one photon-number distribution per intensity and at least two "
            f"intensities, got {len(distributions)} for {classes}"
        )
    tails = counts.distribution_tails or (0.0,) * classes
    eps, eps_pa = eps_per_term("decoy-bb84", eps_sec, eps_split, (6.0 * classes + 5.0, 6.0))
    key_pulses = [n * bias * bias for n in counts.pulses]
    test_pulses = [n * (1 - bias) * (1 - bias) for n in counts.pulses]
    terms: dict[str, float] = {
        "key_bits_sifted": float(sum(counts.key_detections)),
        "leak_ec_bits": leak_ec_bits,
    }

    def interval(count: float, pulses: float) -> tuple[float, float]:
        if pulses <= 0:
            return 0.0, 1.0
        return expectation_lower(count, eps) / pulses, min(
            1.0, expectation_upper(count, eps) / pulses
        )

    dists = [np.asarray(d, dtype=np.float64) for d in distributions]
    no_errors = [(0.0, 1.0)] * classes
    key = decoy_lp.decoy_bounds(
        dists,
        [interval(n, p) for n, p in zip(counts.key_detections, key_pulses, strict=True)],
        no_errors,
        tails,
    )
    test = decoy_lp.decoy_bounds(
        dists,
        [interval(n, p) for n, p in zip(counts.test_detections, test_pulses, strict=True)],
        [interval(m, p) for m, p in zip(counts.test_errors, test_pulses, strict=True)],
        tails,
    )
    if key is None or test is None:
        terms["phase_error_upper"] = 0.5
        return KeyLength(0, terms)
    p1 = [float(d[1]) if len(d) > 1 else 0.0 for d in dists]
    s_key = _chernoff_lower_actual(
        key.single_photon_yield_lower * sum(n * p for n, p in zip(key_pulses, p1, strict=True)),
        eps,
    )
    s_test = _chernoff_lower_actual(
        test.single_photon_yield_lower * sum(n * p for n, p in zip(test_pulses, p1, strict=True)),
        eps,
    )
    v_test = chernoff_upper(
        test.single_photon_error_gain_upper
        * sum(n * p for n, p in zip(test_pulses, p1, strict=True)),
        eps,
    )
    terms.update(
        {
            "single_photon_key_bits_lower": s_key,
            "single_photon_test_bits_lower": s_test,
            "single_photon_test_errors_upper": v_test,
        }
    )
    if s_key <= 0 or s_test <= 0:
        terms["phase_error_upper"] = 0.5
        return KeyLength(0, terms)
    ratio = min(v_test / s_test, 0.5)
    return lim_key_length(terms, s_key, s_test, ratio, leak_ec_bits, eps, eps_pa, eps_cor, 6.0)


def tagged_key_length(
    counts: ObservedCounts,
    leak_ec_bits: float,
    eps_sec: float,
    eps_cor: float,
    eps_split: EpsSplit | None = None,
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
    eps, eps_pa = eps_per_term("bb84", eps_sec, eps_split)
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
    penalty = _penalties(eps_pa, eps_cor, 4.0)
    length = s_key * (1.0 - h(phi)) - leak_ec_bits - penalty
    terms.update({"phase_error_upper": phi, "penalty_bits": penalty})
    return KeyLength(max(0, math.floor(length)), terms, length)


def bbm92_key_length(
    counts: ObservedCounts,
    leak_ec_bits: float,
    eps_sec: float,
    eps_cor: float,
    eps_split: EpsSplit | None = None,
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
    # Smoothing eps (default eps_sec/4, counted twice), leftover hash eps_PA (default eps_sec/2):
    # 2 eps + eps_PA = eps_sec; l = H_min - 2 log2(1/(2 eps_PA)).
    eps_smooth, eps_pa = eps_per_term("bbm92", eps_sec, eps_split)
    phi = min(0.5, ratio + serfling_margin(eps_smooth, n_key, n_test))
    penalty = 2.0 * math.log2(1.0 / (2.0 * eps_pa)) + math.log2(2.0 / eps_cor)
    length = n_key * (1.0 - h(phi)) - leak_ec_bits - penalty
    terms.update({"phase_error_upper": phi, "penalty_bits": penalty})
    return KeyLength(max(0, math.floor(length)), terms, length)


def secret_key_length(
    counts: ObservedCounts,
    leak_ec_bits: float,
    eps_sec: float,
    eps_cor: float,
    eps_split: EpsSplit | None = None,
) -> KeyLength:
    """Dispatch on the protocol: the finite-key length for observed counts and a given leak."""
    if not (0 < eps_sec < 1 and 0 < eps_cor < 1):
        raise ValueError(f"eps_sec and eps_cor must be in (0, 1), got {eps_sec}, {eps_cor}")
    if counts.protocol == "decoy-bb84" and counts.photon_number_distributions is not None:
        return lp_decoy_key_length(counts, leak_ec_bits, eps_sec, eps_cor, eps_split)
    if counts.protocol == "decoy-bb84":
        return decoy_key_length(counts, leak_ec_bits, eps_sec, eps_cor, eps_split)
    if counts.protocol == "bb84":
        return tagged_key_length(counts, leak_ec_bits, eps_sec, eps_cor, eps_split)
    if counts.protocol == "bbm92":
        return bbm92_key_length(counts, leak_ec_bits, eps_sec, eps_cor, eps_split)
    raise ValueError(f"unknown protocol {counts.protocol!r}; expected bb84, decoy-bb84 or bbm92")
