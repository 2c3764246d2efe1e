"""Secret-key bounds of measurement-device-independent BB84 (:mod:`qdnet.protocols.mdi`).

Key from the Z basis, the phase error of the pairs that carry it from the X basis (Lo, Curty, Qi,
PRL 108, 130503 (2012), Eq. (1))::

    R = P11 Y11^Z [1 - h(e11^X)] - Q^Z f h(E^Z)

**Decoy lasers, asymptotic.** Each party sends a signal mu, a weak decoy nu < mu and vacuum, in
both bases. With ``G_ab = e^(a+b) Q_ab = sum_nm a^n b^m / (n! m!) Y_nm`` (Poisson photon numbers;
Xu, Curty, Qi, Lo, New J. Phys. 15, 113007 (2013), Sec. 3) the vacuum classes cancel every term
with n = 0 or m = 0::

    H(a) = G_aa - G_a0 - G_0a + G_00 = sum_{n,m>=1} a^(n+m) / (n! m!) Y_nm

and ``mu^3 H(nu) - nu^3 H(mu)`` keeps Y11 with the weight mu^2 nu^2 (mu - nu) while every term
with n + m >= 3 gets ``mu^3 nu^3 (nu^(k-3) - mu^(k-3)) <= 0``, so (the two-decoy elimination of
Ma, Qi, Zhao, Lo, PRA 72, 012326 (2005), Eq. 34, applied to the pair's total photon number as in
Xu et al. 2013)::

    Y11 >= [mu^3 H(nu) - nu^3 H(mu)] / (mu^2 nu^2 (mu - nu))                              (Y)
    e11 Y11 <= [T_nunu - T_nu0 - T_0nu + T_00] / nu^2,   T_ab = e^(a+b) E_ab Q_ab          (E)

(Xu et al. 2013, the bound on e11^X, Sec. 3). Y11^Z from the Z gains, Y11^X and e11^X from the X
gains; P11 = mu^2 e^(-2 mu), key from the signal pair in Z.

**Decoy lasers, finite key.** Lim, Curty, Walenta, Xu, Zbinden, PRA 89, 022307 (2014) carried to
two senders, as Curty et al., Nat. Commun. 5, 3732 (2014) do: N pulse pairs, each party choosing
mu, nu, 0 with probabilities p_mu, p_nu, p_0 and Z with probability q. Given the n^Z detections
in Z, the expected count of class (a, b) is ``n*_ab = sum_nm p_(a|n) p_(b|m) s_nm`` with
``p_(a|n) = p_a e^-a a^n / (n! tau_n)``, ``tau_n = sum_a p_a e^-a a^n / n!`` (Lim et al., Eq. 2
before the bound); given the photon numbers of the detected pairs, each one's class is an
independent choice, so n*_ab lies within the multiplicative Chernoff bounds around the observed
n_ab (Curty et al. 2014, Methods; :func:`qdnet.security.finite_key.expectation_lower` and
``expectation_upper``), each failing with probability eps. Then ``G*_ab = e^(a+b) / (p_a p_b) n*_ab = sum_nm a^n b^m /
(n! m!) s_nm / (tau_n tau_m)`` has the form above, and (Y) and (E) bound ``s11 / tau_1^2`` and
``t11 / tau_1^2`` (t: errors) with each G* at the end of its interval that makes the bound worst.
The phase error of the Z-basis (1,1) bits is ``phi = t11^X / s11^X + gamma(eps, ., s11^Z,
s11^X)`` (Lim et al.'s random-sampling term, :func:`qdnet.security.finite_key.gamma`), and::

    l = s11^Z [1 - h(phi)] - lambda_EC - 6 log2(1/eps_PA) - log2(2/eps_cor)

with Lim et al.'s privacy-amplification and verification terms (their six eps terms in the
length formula, here each eps_PA). Key from the Z detections of every class (as Lim et al.);
the vacuum-sent events give no key here (Curty et al.'s choice, conservative). eps_sec: 19
estimation bounds (seven class counts in each basis, four error counts, one sampling bound) and
6 privacy-amplification terms; ``protocol.eps_split`` shares eps_sec between the two groups
(default 19/25 and 6/25, every term eps_sec/25, as Lim et al.'s eps_sec/21).

**Quantum-dot single photons** (one intensity, no decoys): tagging as GLLP (Gottesman, Lo,
Luetkenhaus, Preskill, QIC 4, 325 (2004), Eq. 52), with the photon numbers of both parties. The
pairs in which each party sent 0 or 1 photon carry states that do not depend on the basis (the
average of either basis's two states is the same, I/2 or the vacuum), so their phase error in Z
equals their bit error in X (GLLP's basis-independence, for each party's virtual qubit as in
Lo-Curty-Qi's proof). The others are tagged, assumed known to Eve and error-free in X:

- both parties sent photons, one of them two or more: at most ``P_both = P_a(2+) P_b(1+) +
  P_a(1+) P_b(2+) - P_a(2+) P_b(2+)`` per pulse pair, P(n>=2) <= g2 mu^2/2 (Waks et al., Nature
  420, 762 (2002));
- one party sent two or more, the other nothing (``P_vac = P_a(2+) P_b(0) + P_a(0) P_b(2+)``):
  the silent party's bit is uniform and independent of everything Eve holds, so each such
  announced pair is an error with probability exactly 1/2 and their number V in a basis obeys
  ``V/2 <= E Q`` (the errors observed in that basis); derived here, it keeps a dot's
  ``P_a(2+) P_b(0) ~ g2 mu^2/2`` from swamping the ``mu^2 eta_a eta_b / 2`` pairs that carry the
  key.

Asymptotically, with ``tagged_B = P_both + min(P_vac, 2 E_B Q_B)`` in basis B::

    R = (Q_Z - tagged_Z) [1 - h(E_X Q_X / (Q_X - tagged_X))] - Q_Z f h(E_Z)

Finite keys (:func:`dot_key_length`): the multiplicative Chernoff bound of
:func:`qdnet.security.finite_key.chernoff_upper` on the tagged counts of each basis, the vacuum-
side count from its errors by Hoeffding (``V/2 - sqrt(V L/2) <= m``, so ``V <= (sqrt(L/2) +
sqrt(L/2 + 2 m))^2``, with L = ln(n/eps): a union bound over the counts V <= n, the basis's
detections, since Eve chooses V), the phase error by Serfling's bound
(:func:`qdnet.security.finite_key.serfling_margin`) and the one-intensity length formula of
:func:`qdnet.security.finite_key.tagged_key_length`: ``l = s (1 - h(phi)) - lambda_EC -
4 log2(1/eps_PA) - log2(2/eps_cor)``; seven estimation terms (four Chernoff, two vacuum-side,
one sampling) and four privacy-amplification terms share eps_sec (default eps_sec/11 each).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from qdnet.security.entropy import binary_entropy as h
from qdnet.security.finite_key import (
    EpsSplit,
    KeyLength,
    chernoff_upper,
    expectation_lower,
    expectation_upper,
    lim_key_length,
    serfling_margin,
)

#: Estimation bounds and privacy-amplification terms of the finite decoy analysis (docstring).
ESTIMATION_TERMS = 19
PRIVACY_AMPLIFICATION_TERMS = 6


def default_eps_split() -> EpsSplit:
    """Every term eps_sec/25 (docstring)."""
    total = ESTIMATION_TERMS + PRIVACY_AMPLIFICATION_TERMS
    return EpsSplit(ESTIMATION_TERMS / total, PRIVACY_AMPLIFICATION_TERMS / total)


#: Intensity classes (a, b) are (index of a, index of b) into (mu, nu, 0).
#: Sign of each class's term in (Y) (mu^3 - nu^3 > 0 for the (0, 0) class) and in (E).
YIELD_SIGNS = {(1, 1): 1, (1, 2): -1, (2, 1): -1, (2, 2): 1, (0, 0): -1, (0, 2): 1, (2, 0): 1}
ERROR_SIGNS = {(1, 1): 1, (1, 2): -1, (2, 1): -1, (2, 2): 1}


def single_pair_yield_lower(
    scaled_gains: dict[tuple[int, int], float], signal: float, decoy: float
) -> float:
    """Lower bound (Y) on Y11 from ``scaled_gains[(i, j)]`` = e^(a+b) Q_ab over the classes of
    YIELD_SIGNS (indices into (mu, nu, 0)); with statistical intervals, the caller passes each
    class at the end that makes the bound worst (the lower end where YIELD_SIGNS is +1)."""
    if not 0.0 < decoy < signal:
        return 0.0
    mu3, nu3 = signal**3, decoy**3
    g = scaled_gains
    total = mu3 * (g[(1, 1)] - g[(1, 2)] - g[(2, 1)]) + (mu3 - nu3) * g[(2, 2)]
    total += nu3 * (g[(0, 2)] + g[(2, 0)] - g[(0, 0)])
    return max(0.0, total / (signal**2 * decoy**2 * (signal - decoy)))


def single_pair_error_upper(
    scaled_error_gains: dict[tuple[int, int], float], decoy: float
) -> float:
    """Upper bound (E) on e11 Y11 from e^(a+b) E_ab Q_ab over the classes of ERROR_SIGNS (with
    intervals: the upper end where ERROR_SIGNS is +1)."""
    t = scaled_error_gains
    return max(0.0, (t[(1, 1)] - t[(1, 2)] - t[(2, 1)] + t[(2, 2)]) / decoy**2)


@dataclass(frozen=True)
class DecoyGains:
    """Per basis and class (i, j) (indices into (mu, nu, 0)): Q_ab and E_ab Q_ab."""

    intensities: tuple[float, float, float]
    gain_z: dict[tuple[int, int], float]
    error_gain_z: dict[tuple[int, int], float]
    gain_x: dict[tuple[int, int], float]
    error_gain_x: dict[tuple[int, int], float]

    def scaled(self, values: dict[tuple[int, int], float]) -> dict[tuple[int, int], float]:
        """``e^(a+b) values[(a, b)]``."""
        k = self.intensities
        return {(i, j): math.exp(k[i] + k[j]) * v for (i, j), v in values.items()}


@dataclass(frozen=True)
class AsymptoticDecoy:
    """Key per pulse pair and the bounds behind it."""

    bits_per_pulse: float
    yield_z_lower: float
    yield_x_lower: float
    error_x_upper: float


def decoy_key_per_pulse(gains: DecoyGains, error_correction_efficiency: float) -> AsymptoticDecoy:
    """Lo-Curty-Qi Eq. (1) with Y11^Z, Y11^X from (Y) and e11^X from (E) (module docstring)."""
    mu, nu, _ = gains.intensities
    y_z = single_pair_yield_lower(gains.scaled(gains.gain_z), mu, nu)
    y_x = single_pair_yield_lower(gains.scaled(gains.gain_x), mu, nu)
    if y_z <= 0 or y_x <= 0:
        return AsymptoticDecoy(0.0, y_z, y_x, 0.5)
    e_x = min(0.5, single_pair_error_upper(gains.scaled(gains.error_gain_x), nu) / y_x)
    q_z = gains.gain_z[(0, 0)]
    e_z = gains.error_gain_z[(0, 0)] / q_z if q_z > 0 else 0.5
    p11 = (mu * math.exp(-mu)) ** 2
    value = p11 * y_z * (1.0 - h(e_x)) - q_z * error_correction_efficiency * h(e_z)
    return AsymptoticDecoy(max(0.0, value), y_z, y_x, e_x)


@dataclass(frozen=True)
class TaggedPairs:
    """Per pulse pair: P_both and P_vac of the module docstring."""

    both: float
    vacuum_side: float

    def bound(self, error_gain: float) -> float:
        """Tagged announced pairs per pulse pair in a basis of error gain E Q (asymptotic)."""
        return self.both + min(self.vacuum_side, 2.0 * error_gain)


def tagged_pairs(
    multiphoton_a: float, emitting_a: float, multiphoton_b: float, emitting_b: float
) -> TaggedPairs:
    """P_both and P_vac from each party's P(n>=2) and P(n>=1)."""
    both = multiphoton_a * emitting_b + emitting_a * multiphoton_b - multiphoton_a * multiphoton_b
    vacuum_side = multiphoton_a * (1.0 - emitting_b) + (1.0 - emitting_a) * multiphoton_b
    return TaggedPairs(both, vacuum_side)


def tagged_key_per_pulse(
    gain_z: float,
    qber_z: float,
    gain_x: float,
    qber_x: float,
    tagged: TaggedPairs,
    error_correction_efficiency: float,
) -> float:
    """Single-photon sources, asymptotic (module docstring). Clipped to 0."""
    untagged_z = gain_z - tagged.bound(qber_z * gain_z)
    untagged_x = gain_x - tagged.bound(qber_x * gain_x)
    if untagged_z <= 0 or untagged_x <= 0:
        return 0.0
    phase = qber_x * gain_x / untagged_x
    if phase >= 0.5:
        return 0.0
    value = untagged_z * (1.0 - h(phase)) - gain_z * error_correction_efficiency * h(qber_z)
    return max(0.0, value)


#: Estimation and privacy-amplification terms of :func:`dot_key_length` (module docstring).
DOT_ESTIMATION_TERMS = 7
DOT_PRIVACY_AMPLIFICATION_TERMS = 4


def vacuum_side_upper(errors: float, eps: float, most: float) -> float:
    """Most announced pairs with a silent party consistent with ``errors`` errors among them,
    failing with probability <= eps: ``(sqrt(L/2) + sqrt(L/2 + 2 m))^2``, L = ln(most/eps), where
    ``most`` bounds their number (Eve chooses it: a union bound over every count up to it;
    module docstring)."""
    log_term = math.log(max(most, 1.0) / eps)
    return (math.sqrt(log_term / 2.0) + math.sqrt(log_term / 2.0 + 2.0 * max(errors, 0.0))) ** 2


@dataclass(frozen=True)
class DotCounts:
    """A block of a dot-pair link: pulse pairs, P(Z), sifted key bits and their errors, test
    (X) detections and errors; observed or expected."""

    pulses: float
    basis_bias: float
    key_detections: float
    key_errors: float
    test_detections: float
    test_errors: float


def dot_key_length(
    counts: DotCounts,
    tagged: TaggedPairs,
    leak_ec_bits: float,
    eps_sec: float,
    eps_cor: float,
    eps_split: EpsSplit | None = None,
) -> KeyLength:
    """Finite-key length of an MDI link with a quantum-dot source at each end (docstring)."""
    total = DOT_ESTIMATION_TERMS + DOT_PRIVACY_AMPLIFICATION_TERMS
    split = eps_split or EpsSplit(
        DOT_ESTIMATION_TERMS / total, DOT_PRIVACY_AMPLIFICATION_TERMS / total
    )
    eps = split.estimation * eps_sec / DOT_ESTIMATION_TERMS
    eps_pa = split.privacy_amplification * eps_sec / DOT_PRIVACY_AMPLIFICATION_TERMS
    bias = counts.basis_bias
    tagged_counts = []
    for share, detections, errors in (
        (bias * bias, counts.key_detections, counts.key_errors),
        ((1.0 - bias) ** 2, counts.test_detections, counts.test_errors),
    ):
        pairs = counts.pulses * share
        both = chernoff_upper(pairs * tagged.both, eps)
        silent = min(
            chernoff_upper(pairs * tagged.vacuum_side, eps),
            vacuum_side_upper(errors, eps, detections),
        )
        tagged_counts.append(min(detections, both + silent))
    s_key = counts.key_detections - tagged_counts[0]
    s_test = counts.test_detections - tagged_counts[1]
    terms: dict[str, float] = {
        "key_bits_sifted": counts.key_detections,
        "tagged_key_bits_upper": tagged_counts[0],
        "single_pair_key_bits_lower": s_key,
        "single_pair_test_bits_lower": s_test,
        "test_errors": counts.test_errors,
        "leak_ec_bits": leak_ec_bits,
    }
    if s_key <= 0 or s_test <= 0:
        terms["phase_error_upper"] = 0.5
        return KeyLength(0, terms)
    ratio = min(counts.test_errors / s_test, 0.5)
    phi = min(0.5, ratio + serfling_margin(eps, s_key, s_test))
    penalty = DOT_PRIVACY_AMPLIFICATION_TERMS * math.log2(1.0 / eps_pa) + math.log2(2.0 / eps_cor)
    length = s_key * (1.0 - h(phi)) - leak_ec_bits - penalty
    terms.update({"phase_error_upper": phi, "penalty_bits": penalty})
    return KeyLength(max(0, math.floor(length)), terms, length)


@dataclass(frozen=True)
class DecoyCounts:
    """Detections (and X-basis errors) per class (i, j) of a finite block, with the parties'
    intensities (mu, nu, 0) and their probabilities; observed or expected."""

    intensities: tuple[float, float, float]
    probabilities: tuple[float, float, float]
    key_detections: dict[tuple[int, int], float]
    test_detections: dict[tuple[int, int], float]
    test_errors: dict[tuple[int, int], float]


def _scaled_counts(
    counts: dict[tuple[int, int], float],
    intensities: tuple[float, float, float],
    probabilities: tuple[float, float, float],
    eps: float,
    lower_where: dict[tuple[int, int], bool],
) -> dict[tuple[int, int], float]:
    """``G*_ab = e^(a+b)/(p_a p_b) n*_ab`` at the end of its interval given by ``lower_where``:
    the expected count n*_ab of each class from its observed n_ab by the multiplicative Chernoff
    bound (:func:`~qdnet.security.finite_key.expectation_lower` or ``_upper``; the class of each
    detection is an independent choice given the photon numbers, Curty et al. 2014)."""
    bounds = {}
    for (i, j), lower in lower_where.items():
        scale = math.exp(intensities[i] + intensities[j]) / (probabilities[i] * probabilities[j])
        n = counts.get((i, j), 0.0)
        bounds[(i, j)] = scale * (expectation_lower(n, eps) if lower else expectation_upper(n, eps))
    return bounds


def decoy_key_length(
    counts: DecoyCounts,
    leak_ec_bits: float,
    eps_sec: float,
    eps_cor: float,
    eps_split: EpsSplit | None = None,
) -> KeyLength:
    """Finite-key length of decoy MDI-QKD (module docstring)."""
    mu, nu, vacuum = counts.intensities
    if not (mu > nu > vacuum == 0.0):
        raise ValueError(
            f"mdi-bb84 decoy intensities must be mu > nu > 0 and a vacuum decoy; got "
            f"{counts.intensities}"
        )
    split = eps_split or default_eps_split()
    eps_est = split.estimation * eps_sec / ESTIMATION_TERMS
    eps_pa = split.privacy_amplification * eps_sec / PRIVACY_AMPLIFICATION_TERMS
    probs = counts.probabilities
    tau1 = sum(p * math.exp(-k) * k for k, p in zip(counts.intensities, probs, strict=True))
    s11 = []
    for detections in (counts.key_detections, counts.test_detections):
        lower = {key: sign > 0 for key, sign in YIELD_SIGNS.items()}
        bounds = _scaled_counts(detections, counts.intensities, probs, eps_est, lower)
        s11.append(tau1 * tau1 * single_pair_yield_lower(bounds, mu, nu))
    s_z, s_x = s11
    lower = {key: sign < 0 for key, sign in ERROR_SIGNS.items()}
    bounds = _scaled_counts(counts.test_errors, counts.intensities, probs, eps_est, lower)
    t_x = tau1 * tau1 * single_pair_error_upper(bounds, nu)
    terms: dict[str, float] = {
        "key_bits_sifted": float(sum(counts.key_detections.values())),
        "single_pair_key_bits_lower": s_z,
        "single_pair_test_bits_lower": s_x,
        "single_pair_test_errors_upper": t_x,
        "leak_ec_bits": leak_ec_bits,
    }
    if s_z <= 0 or s_x <= 0:
        terms["phase_error_upper"] = 0.5
        return KeyLength(0, terms)
    ratio = min(t_x / s_x, 0.5)
    return lim_key_length(
        terms, s_z, s_x, ratio, leak_ec_bits, eps_est, eps_pa, eps_cor, PRIVACY_AMPLIFICATION_TERMS
    )
