"""Security of the three-state time-bin protocol (simplified BB84), asymptotic and finite key.

Rusca, Boaron, Curty, Martin, Zbinden, PRA 98, 052336 (2018), "Security proof for a simplified
Bennett-Brassard 1984 quantum-key-distribution protocol": Alice sends |0> and |1> (Z, the key) and
|+> (X, monitoring) only; Bob measures Z or X. The phase error of the Z key is the error rate an X
measurement would show on |+> and |->; |-> is never sent, but for the untagged emissions
(vacuum and single photon, whose state is linear in Alice's qubit) ``|-><-| = |0><0| + |1><1| -
|+><+|``, so the yield of Bob's "+" outcome on a virtual |-> is ``Y+_0 + Y+_1 - Y+_+`` and::

    e_ph = (Y-_+ + Y+_0 + Y+_1 - Y+_+) / (Y_0 + Y_1)

(``Y^o_j``: yield of outcome o of Bob's X measurement for Alice's state j, per pulse; ``Y_0 + Y_1
= Y_+ + Y_-``, the X-basis yield of the virtual |+>, |-> pair). The interferometer's side slots
lose half of every photon whatever its state (:mod:`qdnet.optics.receiver`), a loss common to
numerator and denominator. Tagged (multi-photon) emissions are bounded as in the one-intensity
BB84 analysis (:func:`qdnet.security.finite_key.tagged_key_length`): at most
``P(n >= 2) <= g2 mu^2 / 2`` per pulse for a quantum dot (Poisson for a laser without decoys, GLLP),
so each untagged yield lies within ``p_multi`` of the whole one.

Finite key: each X-basis count gives its expectation through a multiplicative Chernoff bound
(:func:`qdnet.security.finite_key.expectation_upper` / ``_lower``; independent pulses, as Lim et al.
2014 assume for their Hoeffding bounds), the tagged detections of the key and test sets through
:func:`qdnet.security.finite_key.chernoff_upper`, and the phase error of the key bits is sampled
from the rate with Lim et al.'s gamma (PRA 89, 022307 (2014)), as Rusca et al. do::

    l = s_Z (1 - h(e_ph + gamma)) - lambda_EC - 4 log2(1/eps_PA) - log2(2/eps_cor)

with seven estimation terms and four privacy-amplification terms of eps_sec (``protocol.eps_split``
moves budget between them). With decoy intensities (:func:`decoy_key_length`: a laser with a
weak and a vacuum decoy, or a dot whose decoys are made by its pump, each with its own g2) the
single-photon yields come from the linear program of :mod:`qdnet.security.decoy_lp`
(:func:`~qdnet.security.decoy_lp.linked_single_photon_bounds`) instead of the tagged bound: per
count and class a two-sided Chernoff interval; one vacuum yield for all of Alice's states measured
in a basis (a vacuum pulse carries nothing of her state); in the key basis half of the vacuum
clicks are errors (her bit is uniform), which bounds them even without a vacuum decoy. In the X
basis Alice's "bit" is always +, so nothing but a vacuum decoy bounds the vacuum's "+" clicks
there: with a single decoy and no vacuum (the one-decoy setting of Rusca, Boaron, Grunenfelder,
Martin, Zbinden, APL 112, 171104 (2018)) qdnet's X-basis bounds, and the key, are zero; how
their one-decoy analysis bounds it is not reproduced here. Single-photon and multi-photon yields
are free per state.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from qdnet.security import decoy_lp
from qdnet.security.entropy import binary_entropy as h
from qdnet.security.finite_key import (
    EpsSplit,
    KeyLength,
    chernoff_upper,
    eps_per_term,
    expectation_lower,
    expectation_upper,
    lim_key_length,
)

PROTOCOL = "three-state-time-bin"


@dataclass(frozen=True)
class ThreeStateCounts:
    """Counts of one block (observed integers, or the link model's expectations).

    ``key_pulses``/``key_detections``: Alice sent |0> or |1>, Bob measured Z (sifted key).
    ``z_in_x_*``: Alice sent |0> or |1>, Bob measured X (central slot): pulses, "+" clicks, all
    clicks. ``x_in_x_*``: Alice sent |+>, Bob measured X: pulses, "+" clicks, "-" clicks (errors).
    ``multiphoton_probability``: upper bound on P(n >= 2) per pulse.
    """

    key_pulses: float
    key_detections: float
    z_in_x_pulses: float
    z_in_x_plus: float
    z_in_x_detections: float
    x_in_x_pulses: float
    x_in_x_plus: float
    x_in_x_minus: float
    multiphoton_probability: float
    #: Errors of the sifted key (known after error correction; the decoy analysis bounds the
    #: vacuum yield with them).
    key_errors: float = 0.0

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if not value >= 0:
                raise ValueError(f"ThreeStateCounts.{name} must be >= 0, got {value}")
        if self.z_in_x_plus > self.z_in_x_detections:
            raise ValueError("ThreeStateCounts: z_in_x_plus cannot exceed z_in_x_detections")


def phase_error(
    minus_of_plus: float,
    plus_of_z_states: float,
    plus_of_plus: float,
    z_states: float,
) -> float:
    """``(Y-_+ + (Y+_0 + Y+_1) - Y+_+) / (Y_0 + Y_1)`` from untagged yields per pulse (upper,
    upper, lower, lower bounds for a bound on e_ph); 1/2 where the denominator vanishes."""
    if z_states <= 0:
        return 0.5
    return min(0.5, max(0.0, (minus_of_plus + plus_of_z_states - plus_of_plus) / z_states))


def asymptotic_phase_error(counts: ThreeStateCounts) -> float:
    """e_ph from expected counts (no statistical fluctuations): untagged yields within
    ``multiphoton_probability`` of the whole ones (module docstring)."""
    p_multi = counts.multiphoton_probability
    if counts.z_in_x_pulses <= 0 or counts.x_in_x_pulses <= 0:
        return 0.5
    # Y+_0 + Y+_1 = 2 x (the "+" yield of the pulses carrying |0> or |1>, half each).
    z_plus = 2.0 * counts.z_in_x_plus / counts.z_in_x_pulses
    z_all = 2.0 * (counts.z_in_x_detections / counts.z_in_x_pulses - p_multi)
    plus_plus = counts.x_in_x_plus / counts.x_in_x_pulses - p_multi
    minus_plus = counts.x_in_x_minus / counts.x_in_x_pulses
    return phase_error(minus_plus, z_plus, plus_plus, z_all)


def asymptotic_key_per_pulse(
    gain_z: float,
    qber_z: float,
    phase_error_rate: float,
    multiphoton_probability: float,
    error_correction_efficiency: float,
) -> float:
    """``(Q_Z - p_multi)(1 - h(e_ph)) - Q_Z f h(E_Z)`` per Z-basis pulse (GLLP with the untagged
    gain and the three-state phase error), clipped at 0."""
    untagged = gain_z - multiphoton_probability
    if untagged <= 0:
        return 0.0
    value = untagged * (1.0 - h(phase_error_rate)) - gain_z * error_correction_efficiency * h(
        qber_z
    )
    return max(0.0, value)


def key_length(
    counts: ThreeStateCounts,
    leak_ec_bits: float,
    eps_sec: float,
    eps_cor: float,
    eps_split: EpsSplit | None = None,
) -> KeyLength:
    """Finite-key length of one block (module docstring)."""
    if not (0 < eps_sec < 1 and 0 < eps_cor < 1):
        raise ValueError(f"eps_sec and eps_cor must be in (0, 1), got {eps_sec}, {eps_cor}")
    eps, eps_pa = eps_per_term(PROTOCOL, eps_sec, eps_split)
    p_multi = counts.multiphoton_probability
    tagged_key = min(counts.key_detections, chernoff_upper(counts.key_pulses * p_multi, eps))
    tagged_test = min(counts.x_in_x_plus, chernoff_upper(counts.x_in_x_pulses * p_multi, eps))
    s_key = counts.key_detections - tagged_key
    s_test = counts.x_in_x_plus + counts.x_in_x_minus - tagged_test
    terms: dict[str, float] = {
        "key_bits_sifted": counts.key_detections,
        "tagged_key_bits_upper": tagged_key,
        "single_photon_key_bits_lower": s_key,
        "single_photon_test_bits_lower": s_test,
        "test_errors": counts.x_in_x_minus,
        "leak_ec_bits": leak_ec_bits,
    }
    if s_key <= 0 or s_test <= 0 or counts.z_in_x_pulses <= 0 or counts.x_in_x_pulses <= 0:
        terms["phase_error_upper"] = 0.5
        return KeyLength(0, terms)
    n_zx, n_xx = counts.z_in_x_pulses, counts.x_in_x_pulses
    rate = phase_error(
        expectation_upper(counts.x_in_x_minus, eps) / n_xx,
        2.0 * expectation_upper(counts.z_in_x_plus, eps) / n_zx,
        expectation_lower(counts.x_in_x_plus, eps) / n_xx - p_multi,
        2.0 * (expectation_lower(counts.z_in_x_detections, eps) / n_zx - p_multi),
    )
    terms["phase_error_rate_upper"] = rate
    return lim_key_length(terms, s_key, s_test, rate, leak_ec_bits, eps, eps_pa, eps_cor, 4.0)


@dataclass(frozen=True)
class DecoyEstimates:
    """Single-photon bounds of one block: key-basis yield (lower), test-basis yield (lower), the
    phase error rate (upper), and the single-photon key and test detections (lower)."""

    key_yield: float
    test_yield: float
    phase_error_rate: float
    key_bits: float
    test_bits: float


def decoy_estimates(
    classes: Sequence[ThreeStateCounts],
    distributions: Sequence[Sequence[float]],
    tails: Sequence[float],
    eps: float | None,
) -> DecoyEstimates:
    """The bounds of :func:`decoy_key_length`, each statistical term failing with probability
    ``eps`` (None: the counts are exact expectations, the asymptotic limit)."""
    if len(distributions) != len(classes) or len(tails) != len(classes) or len(classes) < 2:
        raise ValueError("decoy three-state analysis: one distribution and tail per class, >= 2")
    dists = [np.asarray(d, dtype=np.float64) for d in distributions]

    def per_pulse(count: float, pulses: float) -> tuple[float, float]:
        if pulses <= 0:
            return 0.0, 1.0
        if eps is None:
            return count / pulses, count / pulses
        upper = min(1.0, expectation_upper(count, eps) / pulses)
        return expectation_lower(count, eps) / pulses, upper

    def intervals(counts: Sequence[float], pulses: Sequence[float]) -> list[tuple[float, float]]:
        return [per_pulse(c, n) for c, n in zip(counts, pulses, strict=True)]

    key_pulses = [c.key_pulses for c in classes]
    zx_pulses = [c.z_in_x_pulses for c in classes]
    xx_pulses = [c.x_in_x_pulses for c in classes]
    key = decoy_lp.linked_single_photon_bounds(
        dists,
        [
            (
                intervals([c.key_detections for c in classes], key_pulses),
                intervals([c.key_errors for c in classes], key_pulses),
            )
        ],
        tails,
        [(0, "y1_min")],
        vacuum_half_error=True,
    )
    # X basis: |+> (errors: "-") and the Z states (errors: "-" too), one vacuum yield and one
    # vacuum "-" yield; Alice's X "bit" is always +, so nothing makes vacuum errors half.
    x_basis = decoy_lp.linked_single_photon_bounds(
        dists,
        [
            (
                intervals([c.x_in_x_plus + c.x_in_x_minus for c in classes], xx_pulses),
                intervals([c.x_in_x_minus for c in classes], xx_pulses),
            ),
            (
                intervals([c.z_in_x_detections for c in classes], zx_pulses),
                intervals([c.z_in_x_detections - c.z_in_x_plus for c in classes], zx_pulses),
            ),
        ],
        tails,
        [(0, "y1_min"), (0, "e1_max"), (0, "c1_min"), (1, "c1_max"), (1, "y1_min")],
        vacuum_half_error=False,
    )
    if key is None or x_basis is None:
        return DecoyEstimates(0.0, 0.0, 0.5, 0.0, 0.0)
    key_yield = key[0]
    test_yield, minus_plus, plus_plus, z_plus, z_all = x_basis
    # Y+_0 + Y+_1 = 2 x the "+" yield of the Z-state pulses (half |0>, half |1>).
    rate = phase_error(minus_plus, 2.0 * z_plus, plus_plus, 2.0 * z_all)
    p1 = [float(d[1]) if len(d) > 1 else 0.0 for d in dists]
    key_bits = key_yield * sum(n * p for n, p in zip(key_pulses, p1, strict=True))
    test_bits = test_yield * sum(n * p for n, p in zip(xx_pulses, p1, strict=True))
    if eps is not None:
        key_bits, test_bits = _actual_lower(key_bits, eps), _actual_lower(test_bits, eps)
    return DecoyEstimates(key_yield, test_yield, rate, key_bits, test_bits)


def decoy_key_length(
    classes: Sequence[ThreeStateCounts],
    distributions: Sequence[Sequence[float]],
    tails: Sequence[float],
    leak_ec_bits: float,
    eps_sec: float,
    eps_cor: float,
    eps_split: EpsSplit | None = None,
) -> KeyLength:
    """The three-state protocol with decoy intensities (a laser, or a dot whose decoys are made
    by its pump; a vacuum decoy is needed, module docstring): the phase error
    of the module docstring from single-photon yields, each bounded by the linear program over
    the classes' photon-number distributions (``distributions[k]``, the mass beyond them
    ``tails[k]``) with a two-sided Chernoff interval per count and class. Key from the
    single-photon Z detections of every class (vacuum detections not credited), phase error
    sampled with Lim et al.'s gamma. eps_sec: 10K + 3 estimation terms for K classes (five
    two-sided counts per class, two single-photon counts, gamma) and four privacy-amplification
    terms."""
    if not (0 < eps_sec < 1 and 0 < eps_cor < 1):
        raise ValueError(f"eps_sec and eps_cor must be in (0, 1), got {eps_sec}, {eps_cor}")
    eps, eps_pa = eps_per_term(PROTOCOL, eps_sec, eps_split, (10.0 * len(classes) + 3.0, 4.0))
    est = decoy_estimates(classes, distributions, tails, eps)
    terms: dict[str, float] = {
        "key_bits_sifted": float(sum(c.key_detections for c in classes)),
        "single_photon_key_bits_lower": est.key_bits,
        "single_photon_test_bits_lower": est.test_bits,
        "leak_ec_bits": leak_ec_bits,
    }
    if est.key_bits <= 0 or est.test_bits <= 0:
        terms["phase_error_upper"] = 0.5
        return KeyLength(0, terms)
    rate = est.phase_error_rate
    terms["phase_error_rate_upper"] = rate
    return lim_key_length(
        terms, est.key_bits, est.test_bits, rate, leak_ec_bits, eps, eps_pa, eps_cor, 4.0
    )


def _actual_lower(expected: float, eps: float) -> float:
    """A sum of independent Bernoullis of mean ``expected`` is at least
    ``mu - sqrt(2 mu ln(1/eps))`` but with probability eps."""
    return max(0.0, expected - math.sqrt(2.0 * expected * math.log(1.0 / eps)))
