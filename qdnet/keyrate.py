"""Secret-key rate of a link: expected statistics + security bound, optimised over free parameters.

Free parameters per protocol (each bounded):

- ``bb84``: mean photon number (Alice may attenuate her dot or laser, never exceed the source's own
  mu), and P(Z) for finite keys;
- ``decoy-bb84``: signal and weak-decoy intensities (asymptotic: vacuum + weak decoy, Ma et al. 2005;
  finite: the three-intensity protocol of Lim et al. 2014 with the weakest decoy of the source,
  ``decoy_intensities[-1]``, or a vacuum decoy when none is configured), plus their probabilities
  and P(Z) for finite keys; a quantum dot's classes are bounded by the linear program over its
  photon-number distributions, in finite size with Chernoff intervals
  (:func:`qdnet.security.finite_key.lp_decoy_key_length`); with ``source.decoy_g2`` the classes
  are the configured operating points (each decoy with its own g2) and only the probabilities
  and P(Z) are free;
- ``three-state-time-bin``: the intensity, and P(Z) for finite keys (:mod:`qdnet.protocols.three_state`);
  with ``source.decoy_intensities`` the classes are the configured intensities and the free
  parameters the decoys' probabilities and P(Z);
- ``bbm92``: P(Z) for finite keys, and the mean pair number of an SPDC source;
- any prepare-and-measure link with ``receiver.gate_ns: optimise``: the width of the receiver's
  time gate (:mod:`qdnet.sources.time_profile`).

The configured intensities are not used as starting values: the result depends on the link only.

Search (:func:`optimise`): intensities and probabilities in log space, P(Z) as log(1 - P(Z)). A
global stage evaluates a fixed Halton set of points over the whole box (Halton, Numer. Math. 2, 84
(1960)) and polishes the best with SciPy's Nelder-Mead (in sin-transformed coordinates, restarted
from its own result); it runs at a sweep's first point and wherever the local search from the
previous optimum (warm start) finds no key, so that a flat zero region around a poor start never
hides key that exists elsewhere in the box. Where no point has key, finite keys are followed down
from a block 1e8 times larger (continuation). The objective is the expected key: expected counts
and the length formula before rounding down, smooth in the parameters. Random sampling of the box
never beats the result by more than 1 % (``tests/test_keyrate.py``).

Key bases (``protocol.key_bases``): ``z`` keys the Z basis only and tests the phase error in X;
``both`` also keys the X basis, whose phase error is estimated from the Z basis (Lo, Chau, Ardehali,
J. Cryptology 18, 133 (2005), the refined data analysis: each basis's key pays error correction on
its own error rate and privacy amplification on the other basis's). Asymptotically with a fixed
bias p the key per detection is ``p^2 [1 - f h(e_Z) - h(e_X)] + (1-p)^2 [1 - f h(e_X) - h(e_Z)]``
(the second term with ``both`` only); with a free bias q -> 1 (efficient BB84). Finite keys with
``both`` run the one-basis analysis of the protocol twice, once per key basis with the other basis
as the test sample, each at eps_sec/2 and eps_cor/2, and hash each basis's bits separately: the
Z-basis bound holds conditioned on everything of the X rounds (including their final key), so the
two secrecy and correctness failures add up to eps_sec and eps_cor (composability, Portmann,
Renner, Rev. Mod. Phys. 94, 025008 (2022), Sec. 4). ``protocol.block_size`` is the number of sifted
key bits per block over the key bases (n_X of Lim et al. for ``z``). ``protocol.eps_split`` moves
eps_sec between parameter estimation and privacy amplification
(:class:`qdnet.security.finite_key.EpsSplit`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import minimize

from qdnet.protocols import bbm92, mdi, prepare_measure, three_state
from qdnet.protocols.link import Link
from qdnet.protocols.statistics import LinkStatistics
from qdnet.security import decoy_lp
from qdnet.security.asymptotic import (
    bbm92_key_per_coincidence,
    decoy_vacuum_weak_bounds,
    gllp_key_per_pulse,
    single_photon_key_per_pulse,
)
from qdnet.security.bounds import plob_bits_per_channel_use
from qdnet.security.entropy import binary_entropy as h
from qdnet.security.finite_key import ObservedCounts, secret_key_length
from qdnet.sources.laser import WeakCoherentSource
from qdnet.sources.quantum_dot import SinglePhotonSource
from qdnet.sources.spdc import SpdcSource

#: Largest signal intensity the optimiser tries for a laser (photons per pulse).
MAX_LASER_INTENSITY = 1.0
#: Smallest intensity or probability the optimiser tries (keeps logs finite).
MIN_PARAMETER = 1e-4
#: Narrowest receiver time gate the optimiser tries (ns).
GATE_MIN_NS = 1e-3
#: Points of the global stage per free parameter, and how many of the best are polished.
GLOBAL_POINTS_PER_PARAMETER = 24
GLOBAL_POLISHED = 1
#: Nelder-Mead: first simplex steps (x pi in the sin-transformed coordinates; warm start, global
#: stage) and the tolerances there and in -log(key per pulse) (1e-3: 0.1 % of the key).
WARM_STEP = 0.02
GLOBAL_STEP = 0.05
XATOL = 3e-2
FATOL = 1e-3
#: Continuation for finite keys: from CONTINUATION_FACTOR times the block, steps in block size
#: down to CONTINUATION_MIN_RATIO.
CONTINUATION_FACTOR = 1e8
#: Halton points per parameter at the largest block (where key fills more of the box), and the
#: tolerance factor of the local searches on the way down (only the last one is precise).
CONTINUATION_POINTS_PER_PARAMETER = 8
LOOSE = 10.0
CONTINUATION_MIN_RATIO = 1.1
#: Nelder-Mead restarts from its own result (Nelder-Mead can stall at a non-optimal point).
RESTARTS = 2
#: Objective (-log key per pulse) where there is no key: above any value with key.
NO_KEY = 1e3


@dataclass(frozen=True)
class KeyRatePoint:
    """One point of a key-rate curve (the JSON ``points[]`` entry)."""

    distance_km: float | None
    loss_db: float
    qber: dict[str, float]
    gain: float
    secret_key_rate_bps: float
    secret_bits_per_pulse: float
    plob_bits_per_pulse: float
    parameters: dict[str, float] = field(default_factory=dict)
    finite_key_terms: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        """The documented JSON form."""
        return {
            "distance_km": self.distance_km,
            "loss_db": self.loss_db,
            "qber": self.qber,
            "gain": self.gain,
            "secret_key_rate_bps": self.secret_key_rate_bps,
            "secret_bits_per_pulse": self.secret_bits_per_pulse,
            "plob_bits_per_pulse": self.plob_bits_per_pulse,
            "parameters": self.parameters,
            "finite_key_terms": self.finite_key_terms,
        }


@dataclass(frozen=True)
class Evaluation:
    """Key per pulse at one parameter choice, with what produced it."""

    bits_per_pulse: float
    statistics: LinkStatistics
    parameters: dict[str, float]
    terms: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Parameter:
    """One free parameter and its bounds; ``near_one`` ones are searched as log(1 - x)."""

    name: str
    lower: float
    upper: float
    near_one: bool = False


@dataclass(frozen=True)
class ParameterSpace:
    """Named bounded parameters and the evaluation function over them."""

    parameters: tuple[Parameter, ...]
    evaluate: Callable[[Sequence[float]], Evaluation]

    @property
    def names(self) -> tuple[str, ...]:
        """Parameter names, in the order ``evaluate`` takes them."""
        return tuple(p.name for p in self.parameters)

    @property
    def lower(self) -> tuple[float, ...]:
        """Lower bounds."""
        return tuple(p.lower for p in self.parameters)

    @property
    def upper(self) -> tuple[float, ...]:
        """Upper bounds."""
        return tuple(p.upper for p in self.parameters)

    @cached_property
    def _arrays(self) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.bool_]]:
        return (
            np.array(self.lower),
            np.array(self.upper),
            np.array([p.near_one for p in self.parameters]),
        )

    def to_search(self, values: Sequence[float]) -> NDArray[np.float64]:
        """Search coordinates (log x, or log(1 - x) for ``near_one``) of parameter values."""
        lower, upper, near_one = self._arrays
        x = np.minimum(np.maximum(np.asarray(values, dtype=np.float64), lower), upper)
        z = np.log(x)
        z[near_one] = np.log1p(-x[near_one])
        return z

    def from_search(self, z: NDArray[np.float64]) -> tuple[float, ...]:
        """Parameter values (inside the bounds) at search coordinates."""
        lower, upper, near_one = self._arrays
        x = np.exp(z)
        x[near_one] = -np.expm1(z[near_one])
        return tuple(np.minimum(np.maximum(x, lower), upper).tolist())

    def search_box(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """(lower, upper) corners of the box in search coordinates."""
        a, b = self.to_search(self.lower), self.to_search(self.upper)
        return np.minimum(a, b), np.maximum(a, b)


#: P(Z) for both parties.
BASIS_BIAS = Parameter("basis_bias", 0.5, 1 - MIN_PARAMETER, near_one=True)


def _max_intensity(link: Link) -> float:
    source = link.source
    if isinstance(source, SinglePhotonSource):
        return source.mean_photon_number
    if isinstance(source, WeakCoherentSource):
        return max(MAX_LASER_INTENSITY, source.mean_photon_number or 0.0)
    raise ValueError(f"protocol {link.protocol.kind} needs a single-photon or weak-coherent source")


def _basis_weights(link: Link, bias: float | None) -> tuple[float, ...]:
    """Fraction of detections that give key in Z (and X with ``key_bases: both``); a free bias is
    q -> 1 asymptotically (Z only)."""
    if bias is None:
        return (1.0,)
    if link.protocol.key_bases == "both":
        return (bias * bias, (1 - bias) * (1 - bias))
    return (bias * bias,)


def _pair_by_key_basis(
    weights: tuple[float, ...], qber_z: float, qber_x: float
) -> list[tuple[float, float, float]]:
    """(weight, key-basis error, test-basis error) per key basis, Z first."""
    return [(w, *((qber_z, qber_x) if b == 0 else (qber_x, qber_z))) for b, w in enumerate(weights)]


@dataclass(frozen=True)
class _Classes:
    """Expected per-class figures of a finite block, the input of the finite-key analysis."""

    protocol: str
    intensities: tuple[float, ...]
    probabilities: tuple[float, ...]
    gain: tuple[float, ...]
    qber_z: tuple[float, ...]
    qber_x: tuple[float, ...]
    multiphoton_probability: float = 0.0
    #: A quantum dot's photon-number distribution per class (the LP decoy bound); None: Poisson.
    distributions: tuple[tuple[float, ...], ...] | None = None


def _finite_key(
    link: Link, classes: _Classes, bias: float
) -> tuple[float, float, dict[str, float]]:
    """(secret bits per pulse, pulses per block, terms) of one block of ``protocol.block_size``
    sifted key bits, with key from each configured key basis (module docstring). The counts are
    the expected ones and the length is not rounded down: the expected key, smooth in the
    parameters as the local search needs."""
    settings = link.protocol
    block = float(settings.block_size or 0)
    weights = _basis_weights(link, bias)
    probs, gains = classes.probabilities, classes.gain
    mean_gain = sum(p * g for p, g in zip(probs, gains, strict=True))
    if mean_gain <= 0:
        return 0.0, math.inf, {}
    pulses = block / (sum(weights) * mean_gain)
    parts = len(weights)
    bits = 0.0
    terms: dict[str, float] = {}
    for basis, weight in enumerate(weights):
        key_q, test_q = (
            (classes.qber_z, classes.qber_x) if basis == 0 else (classes.qber_x, classes.qber_z)
        )
        key_fraction, test_fraction = (bias, 1 - bias) if basis == 0 else (1 - bias, bias)
        # = pulses p weight g, written so that one class and one key basis give the block exactly
        key = [
            block * weight / sum(weights) * p * g / mean_gain
            for p, g in zip(probs, gains, strict=True)
        ]
        test = [pulses * p * test_fraction**2 * g for p, g in zip(probs, gains, strict=True)]
        counts = ObservedCounts(
            protocol=classes.protocol,
            intensities=classes.intensities,
            pulses=tuple(pulses * p for p in probs),
            key_detections=tuple(key),
            test_detections=tuple(test),
            test_errors=tuple(t * e for t, e in zip(test, test_q, strict=True)),
            multiphoton_probability=classes.multiphoton_probability,
            basis_bias=key_fraction,
            photon_number_distributions=classes.distributions,
        )
        key_bits = sum(key)
        mean_qber = sum(k * e for k, e in zip(key, key_q, strict=True)) / key_bits
        leak = settings.error_correction_efficiency * key_bits * h(mean_qber)
        result = secret_key_length(
            counts, leak, settings.eps_sec / parts, settings.eps_cor / parts, settings.eps_split
        )
        bits += max(0.0, result.length_bits)
        prefix = "" if parts == 1 else ("z_", "x_")[basis]
        terms.update({prefix + k: v for k, v in result.terms.items()})
    return bits / pulses, pulses, terms


def _bb84_space(link: Link) -> ParameterSpace:
    settings = link.protocol
    source = link.source
    assert isinstance(source, SinglePhotonSource | WeakCoherentSource)
    finite = settings.block_size is not None
    free_bias = finite and settings.basis_bias is None
    free_mu = settings.optimise_intensity
    if not free_mu and source.mean_photon_number is None:
        raise ValueError(
            "protocol.optimise_intensity false needs source.mean_photon_number (the fixed intensity)"
        )

    def evaluate(x: Sequence[float]) -> Evaluation:
        values = list(x)
        mu = values.pop(0) if free_mu else float(source.mean_photon_number or 0.0)
        bias = values.pop(0) if free_bias else settings.basis_bias
        stats = prepare_measure.expected_statistics(link, (mu,), photon_yields=False)
        multiphoton = source.multiphoton_probability(mu)
        params = {"mean_photon_number": mu}
        if not finite:
            weights = _basis_weights(link, bias)
            rate = sum(
                w
                * gllp_key_per_pulse(
                    stats.gain[0], e_key, e_test, multiphoton, settings.error_correction_efficiency
                )
                for w, e_key, e_test in _pair_by_key_basis(
                    weights, stats.qber_z[0], stats.qber_x[0]
                )
            )
            params["sifting_factor"] = sum(weights)
            return Evaluation(rate, stats, params)
        bias = 0.5 if bias is None else bias
        classes = _Classes(
            "bb84", (mu,), (1.0,), stats.gain, stats.qber_z, stats.qber_x, multiphoton
        )
        rate, pulses, terms = _finite_key(link, classes, bias)
        params.update({"basis_bias": bias, "pulses_per_block": min(pulses, 1e30)})
        return Evaluation(rate, stats, params, terms)

    parameters = []
    if free_mu:
        parameters.append(Parameter("mean_photon_number", MIN_PARAMETER, _max_intensity(link)))
    if free_bias:
        parameters.append(BASIS_BIAS)
    return ParameterSpace(tuple(parameters), evaluate)


def _single_photon_bounds(
    source: SinglePhotonSource | WeakCoherentSource, stats: LinkStatistics, mu: float, nu: float
) -> tuple[float, float, float]:
    """(Y1 lower, e1 upper, P(1 photon) at the signal) from signal, weak and vacuum statistics:
    Ma et al. 2005 closed form for a laser, the linear program for any other known distribution."""
    if isinstance(source, WeakCoherentSource):
        y1, e1 = decoy_vacuum_weak_bounds(
            mu, nu, stats.gain[0], stats.qber_z[0], stats.gain[1], stats.qber_z[1], stats.gain[2]
        )
        return y1, e1, mu * math.exp(-mu)
    distributions = [source.photon_number_distribution(k) for k in (mu, nu, 0.0)]
    error_gains = [g * e for g, e in zip(stats.gain, stats.qber_z, strict=True)]
    y1, e1 = decoy_lp.single_photon_bounds(distributions, stats.gain, error_gains)
    return y1, e1, float(distributions[0][1])


def weakest_decoy_intensity(source: SinglePhotonSource | WeakCoherentSource) -> float:
    """The vacuum-like third intensity of Lim et al.'s finite-key protocol: the last configured
    decoy when two are given (what the modulator makes), else a vacuum decoy."""
    decoys = source.decoy_intensities
    return float(decoys[-1]) if len(decoys) >= 2 else 0.0


def _decoy_space(link: Link) -> ParameterSpace:
    settings = link.protocol
    source = link.source
    assert isinstance(source, SinglePhotonSource | WeakCoherentSource)
    finite = settings.block_size is not None
    if isinstance(source, SinglePhotonSource) and source.decoy_g2:
        return _dot_operating_points_space(link, source)
    mu_max = _max_intensity(link)
    weakest = weakest_decoy_intensity(source) if finite else 0.0
    nu_lower = weakest + MIN_PARAMETER
    nu_upper = (mu_max - weakest) / 2
    if nu_upper <= nu_lower:
        raise ValueError(
            f"source.decoy_intensities: the weakest decoy {weakest:g} leaves no room for a signal "
            f"mu and a weak decoy nu with mu > nu + {weakest:g} below mu = {mu_max:g}"
        )

    def evaluate(x: Sequence[float]) -> Evaluation:
        mu, nu = x[0], x[1]
        if not finite:
            stats = prepare_measure.expected_statistics(link, (mu, nu, 0.0), photon_yields=False)
            if nu >= mu:  # the decoy must be the weaker intensity
                return Evaluation(0.0, stats, {})
            y1, e1, p1 = _single_photon_bounds(source, stats, mu, nu)
            weights = _basis_weights(link, settings.basis_bias)
            rate = sum(
                w
                * single_photon_key_per_pulse(
                    p1 * y1, stats.gain[0], e_key, e1, settings.error_correction_efficiency
                )
                for w, e_key, _ in _pair_by_key_basis(weights, stats.qber_z[0], stats.qber_x[0])
            )
            params = {
                "mean_photon_number": mu,
                "decoy_intensity": nu,
                "single_photon_yield_lower": y1,
                "single_photon_error_upper": e1,
                "sifting_factor": sum(weights),
            }
            return Evaluation(rate, stats, params)
        p_mu, p_nu = x[2], x[3]
        bias = x[4] if settings.basis_bias is None else settings.basis_bias
        stats = prepare_measure.expected_statistics(link, (mu, nu, weakest), photon_yields=False)
        # Lim et al.'s conditions on the intensities and probabilities.
        if not (mu > nu + weakest and nu > weakest) or p_mu + p_nu >= 1.0:
            return Evaluation(0.0, stats, {})
        probs = (p_mu, p_nu, 1.0 - p_mu - p_nu)
        dists = (
            tuple(tuple(source.photon_number_distribution(k)) for k in (mu, nu, weakest))
            if isinstance(source, SinglePhotonSource)
            else None
        )
        classes = _Classes(
            "decoy-bb84",
            (mu, nu, weakest),
            probs,
            stats.gain,
            stats.qber_z,
            stats.qber_x,
            0.0,
            dists,
        )
        rate, pulses, terms = _finite_key(link, classes, bias)
        params = {
            "mean_photon_number": mu,
            "decoy_intensity": nu,
            "weakest_intensity": weakest,
            "signal_probability": p_mu,
            "decoy_probability": p_nu,
            "basis_bias": bias,
            "pulses_per_block": pulses,
        }
        return Evaluation(rate, stats, params, terms)

    parameters = [
        Parameter("mean_photon_number", nu_lower + weakest + MIN_PARAMETER, mu_max),
        Parameter("decoy_intensity", nu_lower, nu_upper),
    ]
    if finite:
        parameters += [
            Parameter("signal_probability", 0.05, 0.95),
            Parameter("decoy_probability", 0.02, 0.6),
        ]
        if settings.basis_bias is None:
            parameters.append(BASIS_BIAS)
    return ParameterSpace(tuple(parameters), evaluate)


def _dot_operating_points_space(link: Link, source: SinglePhotonSource) -> ParameterSpace:
    """Decoy BB84 with a dot whose decoys are measured operating points (``source.decoy_g2``):
    each class is the dot at its configured intensity with its own g2, bounded by the linear
    program (:mod:`qdnet.security.decoy_lp`; finite keys :func:`lp_decoy_key_length`); the free
    parameters are the class probabilities and, for finite keys, P(Z)."""
    settings = link.protocol
    finite = settings.block_size is not None
    points = [source.operating_point(k) for k in range(len(source.decoy_intensities) + 1)]
    intensities = tuple(p.mean_photon_number for p in points)
    per_class = [
        prepare_measure.expected_statistics(replace(link, source=p), (p.mean_photon_number,), False)
        for p in points
    ]
    stats = LinkStatistics(
        protocol="decoy-bb84",
        intensities=intensities,
        gain=tuple(s.gain[0] for s in per_class),
        qber_z=tuple(s.qber_z[0] for s in per_class),
        qber_x=tuple(s.qber_x[0] for s in per_class),
        multiphoton_probability=tuple(s.multiphoton_probability[0] for s in per_class),
    )
    dists = tuple(tuple(p.photon_number_distribution()) for p in points)
    free_bias = finite and settings.basis_bias is None
    decoy_classes = len(points) - 1

    def evaluate(x: Sequence[float]) -> Evaluation:
        params = {"mean_photon_number": intensities[0]}
        if not finite:
            error_gains = [g * e for g, e in zip(stats.gain, stats.qber_z, strict=True)]
            y1, e1 = decoy_lp.single_photon_bounds(
                [np.asarray(d) for d in dists], stats.gain, error_gains
            )
            weights = _basis_weights(link, settings.basis_bias)
            rate = sum(
                w
                * single_photon_key_per_pulse(
                    dists[0][1] * y1, stats.gain[0], e_key, e1, settings.error_correction_efficiency
                )
                for w, e_key, _ in _pair_by_key_basis(weights, stats.qber_z[0], stats.qber_x[0])
            )
            params.update(
                {
                    "single_photon_yield_lower": y1,
                    "single_photon_error_upper": e1,
                    "sifting_factor": sum(weights),
                }
            )
            return Evaluation(rate, stats, params)
        values = list(x)
        shares = [values.pop(0) for _ in range(decoy_classes)]
        bias = values.pop(0) if free_bias else settings.basis_bias
        if sum(shares) >= 1.0:
            return Evaluation(0.0, stats, {})
        probs = (1.0 - sum(shares), *shares)
        classes = _Classes(
            "decoy-bb84", intensities, probs, stats.gain, stats.qber_z, stats.qber_x, 0.0, dists
        )
        rate, pulses, terms = _finite_key(link, classes, 0.5 if bias is None else bias)
        params.update({f"decoy_{k}_probability": p for k, p in enumerate(shares)})
        params.update(
            {"signal_probability": probs[0], "basis_bias": bias or 0.5, "pulses_per_block": pulses}
        )
        return Evaluation(rate, stats, params, terms)

    parameters = []
    if finite:
        parameters = [
            Parameter(f"decoy_{k}_probability", MIN_PARAMETER, 0.6) for k in range(decoy_classes)
        ]
        if free_bias:
            parameters.append(BASIS_BIAS)
    return ParameterSpace(tuple(parameters), evaluate)


def _bbm92_space(link: Link) -> ParameterSpace:
    settings = link.protocol
    source = link.source
    finite = settings.block_size is not None
    free_bias = finite and settings.basis_bias is None
    free_mu = isinstance(source, SpdcSource) and settings.optimise_intensity

    def evaluate(x: Sequence[float]) -> Evaluation:
        values = list(x)
        mean_pairs = values.pop(0) if free_mu else None
        bias = values.pop(0) if free_bias else settings.basis_bias
        stats = bbm92.expected(link, mean_pairs)
        params: dict[str, float] = {"mean_pair_number": stats.intensities[0]}
        if not finite:
            weights = _basis_weights(link, bias)
            rate = stats.gain[0] * sum(
                w * bbm92_key_per_coincidence(e_key, e_test, settings.error_correction_efficiency)
                for w, e_key, e_test in _pair_by_key_basis(
                    weights, stats.qber_z[0], stats.qber_x[0]
                )
            )
            params["sifting_factor"] = sum(weights)
            return Evaluation(rate, stats, params)
        bias = 0.5 if bias is None else bias
        classes = _Classes(
            "bbm92", stats.intensities, (1.0,), stats.gain, stats.qber_z, stats.qber_x
        )
        rate, pulses, terms = _finite_key(link, classes, bias)
        params.update({"basis_bias": bias, "pulses_per_block": min(pulses, 1e30)})
        return Evaluation(rate, stats, params, terms)

    parameters = []
    if free_mu:
        assert isinstance(source, SpdcSource)
        upper = max(0.5, source.mean_pair_number)
        parameters.append(Parameter("mean_pair_number", MIN_PARAMETER, upper))
    if free_bias:
        parameters.append(BASIS_BIAS)
    return ParameterSpace(tuple(parameters), evaluate)


def _three_state_space(link: Link) -> ParameterSpace:
    """Three-state time-bin (:mod:`qdnet.protocols.three_state`): the intensity and, for finite
    keys, P(Z); with decoys the decoys' probabilities and, for finite keys, P(Z)."""
    settings = link.protocol
    if isinstance(link.source, WeakCoherentSource | SinglePhotonSource) and (
        link.source.decoy_intensities
    ):
        return _three_state_decoy_space(link, len(link.source.decoy_intensities))
    free_bias = settings.block_size is not None and settings.basis_bias is None
    free_mu = settings.optimise_intensity
    fixed_mu = (
        link.source.mean_photon_number
        if isinstance(link.source, WeakCoherentSource | SinglePhotonSource)
        else None
    )
    if not free_mu and fixed_mu is None:
        raise ValueError(
            "protocol.optimise_intensity false needs source.mean_photon_number (the fixed intensity)"
        )

    def evaluate(x: Sequence[float]) -> Evaluation:
        values = list(x)
        mu = values.pop(0) if free_mu else float(fixed_mu or 0.0)
        bias = values.pop(0) if free_bias else settings.basis_bias
        key = three_state.key_per_pulse(link, mu, bias)
        stats = key.expectation.statistics()
        return Evaluation(key.bits_per_pulse, stats, key.parameters, key.terms)

    parameters = []
    if free_mu:
        parameters.append(Parameter("mean_photon_number", MIN_PARAMETER, _max_intensity(link)))
    if free_bias:
        parameters.append(BASIS_BIAS)
    return ParameterSpace(tuple(parameters), evaluate)


def _three_state_decoy_space(link: Link, decoys: int) -> ParameterSpace:
    """Three-state time-bin with decoys at the configured intensities
    (:func:`qdnet.protocols.three_state.decoy_key_per_pulse`)."""
    settings = link.protocol
    finite = settings.block_size is not None
    free_bias = finite and settings.basis_bias is None

    def evaluate(x: Sequence[float]) -> Evaluation:
        values = list(x)
        shares = [values.pop(0) for _ in range(decoys)] if finite else [0.0] * decoys
        bias = values.pop(0) if free_bias else settings.basis_bias
        if sum(shares) >= 1.0:
            stats = three_state.expected(
                link, three_state.class_sources(link)[0].mean_photon_number or 0.0
            )
            return Evaluation(0.0, stats.statistics(), {})
        key = three_state.decoy_key_per_pulse(link, (1.0 - sum(shares), *shares), bias)
        return Evaluation(
            key.bits_per_pulse, key.expectation.statistics(), key.parameters, key.terms
        )

    parameters = []
    if finite:
        parameters = [
            Parameter(f"class_{k + 1}_probability", MIN_PARAMETER, 0.6) for k in range(decoys)
        ]
    if free_bias:
        parameters.append(BASIS_BIAS)
    return ParameterSpace(tuple(parameters), evaluate)


def _mdi_space(link: Link) -> ParameterSpace:
    """MDI-QKD (:mod:`qdnet.protocols.mdi`): the parameters of :func:`mdi.free_parameters`."""
    parameters = tuple(Parameter(*p) for p in mdi.free_parameters(link))
    names = [p.name for p in parameters]

    def evaluate(x: Sequence[float]) -> Evaluation:
        key = mdi.key_per_pulse(link, dict(zip(names, x, strict=True)))
        return Evaluation(key.bits_per_pulse, key.statistics, key.parameters, key.terms)

    return ParameterSpace(parameters, evaluate)


def _gated_space(link: Link) -> ParameterSpace:
    """The protocol's parameters and the receiver's time-gate width (``receiver.gate_ns:
    optimise``), between GATE_MIN_NS and the detection window."""
    window_ns = link.receiver.detector.window_ns
    inner = parameter_space(link.with_gate_ns(window_ns))

    def evaluate(x: Sequence[float]) -> Evaluation:
        gate_ns = x[-1]
        result = parameter_space(link.with_gate_ns(gate_ns)).evaluate(x[:-1])
        parameters = {**result.parameters, "gate_ns": gate_ns}
        return Evaluation(result.bits_per_pulse, result.statistics, parameters, result.terms)

    gate = Parameter("gate_ns", min(GATE_MIN_NS, window_ns / 2), window_ns)
    return ParameterSpace((*inner.parameters, gate), evaluate)


def parameter_space(link: Link) -> ParameterSpace:
    """The free parameters of a link's protocol and how to evaluate them."""
    if link.gate_ns == "optimise":
        return _gated_space(link)
    kind = link.protocol.kind
    if kind == "bb84":
        return _bb84_space(link)
    if kind == "decoy-bb84":
        return _decoy_space(link)
    if kind == "bbm92":
        return _bbm92_space(link)
    if kind == "three-state-time-bin":
        return _three_state_space(link)
    if kind == "mdi-bb84":
        return _mdi_space(link)
    raise ValueError(f"unknown protocol.kind {kind!r}")


def halton(count: int, dimension: int) -> NDArray[np.float64]:
    """The first ``count`` points of the Halton sequence in [0, 1)^dimension (bases: the first
    primes; point 0, the corner, skipped)."""
    primes = [2, 3, 5, 7, 11, 13, 17, 19, 23, 29][:dimension]
    if len(primes) < dimension:
        raise ValueError(f"halton: at most 10 dimensions, got {dimension}")
    points = np.zeros((count, dimension))
    index = np.arange(1, count + 1)
    for column, base in enumerate(primes):
        remaining, scale = index.copy(), 1.0
        while np.any(remaining > 0):
            scale /= base
            points[:, column] += scale * (remaining % base)
            remaining //= base
    return points


def _objective(space: ParameterSpace, z: NDArray[np.float64]) -> float:
    value = space.evaluate(space.from_search(z)).bits_per_pulse
    return -math.log(value) if value > 0 else NO_KEY


def _polish(
    space: ParameterSpace, z0: NDArray[np.float64], step: float, loose: float = 1.0
) -> tuple[float, NDArray[np.float64]]:
    """Nelder-Mead from z0, unconstrained in u with z = lower + (upper - lower)(1 + sin u)/2 (the
    bounds transform of MINUIT, James, Roos, CPC 10, 343 (1975)), so that the simplex never
    collapses onto a bound; the first simplex steps ``step`` x pi in u along each axis; restarted
    from its result (up to RESTARTS times) while that still gains; ``loose`` scales the
    tolerances."""
    lower, upper = space.search_box()
    half = (upper - lower) / 2

    def to_z(u: NDArray[np.float64]) -> NDArray[np.float64]:
        return np.asarray(lower + half * (1 + np.sin(u)))

    u = np.arcsin(np.clip((z0 - lower) / half - 1, -1.0, 1.0))
    value = _objective(space, to_z(u))
    for _ in range(RESTARTS + 1):
        # A fresh simplex at the last result (a restart) gets Nelder-Mead out of a stalled simplex.
        simplex = [u] + [u + step * math.pi * np.eye(len(u))[axis] for axis in range(len(u))]
        result = minimize(
            lambda v: _objective(space, to_z(v)),
            u,
            method="Nelder-Mead",
            options={
                "xatol": XATOL * loose,
                "fatol": FATOL * loose,
                "maxfev": 100 * len(z0),
                "initial_simplex": np.array(simplex),
            },
        )
        improvement = value - float(result.fun)
        if improvement > 0:
            value, u = float(result.fun), np.asarray(result.x)
        if improvement < FATOL * loose:
            break
    return value, to_z(u)


def _global(
    space: ParameterSpace, per_parameter: int = GLOBAL_POINTS_PER_PARAMETER, loose: float = 1.0
) -> tuple[float, NDArray[np.float64]]:
    """Halton points over the whole box (``per_parameter`` x dimension), the best ones polished."""
    lower, upper = space.search_box()
    dimension = len(lower)
    points = lower + halton(per_parameter * dimension, dimension) * (upper - lower)
    values = np.array([_objective(space, z) for z in points])
    best_value, best_z = NO_KEY, points[int(np.argmin(values))]
    for index in np.argsort(values)[:GLOBAL_POLISHED]:
        if values[index] >= NO_KEY:
            break
        value, z = _polish(space, points[index], GLOBAL_STEP, loose)
        if value < best_value:
            best_value, best_z = value, z
    return best_value, best_z


def _continuation(link: Link) -> tuple[float, NDArray[np.float64]]:
    """Feasibility by continuation in the block size: the region with key shrinks as the block
    does, so the optimum of a block CONTINUATION_FACTOR times larger, followed down with local
    searches (the step in block size halved in log while the last optimum has no key at the next
    size), finds key that the global stage's points missed."""
    target = float(link.protocol.block_size or 0)
    size = target * CONTINUATION_FACTOR
    wide = parameter_space(link.with_protocol(block_size=size))
    value, z = _global(wide, CONTINUATION_POINTS_PER_PARAMETER, LOOSE)
    ratio = CONTINUATION_FACTOR
    while value < NO_KEY and size > target:
        next_size = max(target, size / ratio)
        space = parameter_space(link.with_protocol(block_size=next_size))
        if _objective(space, z) >= NO_KEY:
            if ratio < CONTINUATION_MIN_RATIO:
                return NO_KEY, z
            ratio = math.sqrt(ratio)
            continue
        value, z = _polish(space, z, WARM_STEP, 1.0 if next_size == target else LOOSE)
        size, ratio = next_size, min(CONTINUATION_FACTOR, ratio * ratio)
    return value, z


def optimise(
    link: Link, start: Sequence[float] | None = None
) -> tuple[Evaluation, tuple[float, ...]]:
    """Maximise key per pulse over the free parameters (module docstring): local search from a
    warm ``start``; the global stage when there is none or it finds no key; then, for finite keys
    still without key, the continuation in the block size."""
    space = parameter_space(link)
    if not space.names:
        return space.evaluate(()), ()
    best_value, best_z = NO_KEY, np.mean(space.search_box(), axis=0)
    if start is not None and len(start) == len(space.names):
        z0 = space.to_search(start)
        if _objective(space, z0) < NO_KEY:
            best_value, best_z = _polish(space, z0, WARM_STEP)
    if best_value >= NO_KEY:
        best_value, best_z = _global(space)
    if best_value >= NO_KEY and link.protocol.block_size is not None:
        value, z = _continuation(link)
        if value < NO_KEY:
            best_value, best_z = value, z
    if best_value >= NO_KEY and start is not None and len(start) == len(space.names):
        best_z = space.to_search(start)  # no key: report the statistics at the last optimum
    best = space.from_search(best_z)
    evaluation = space.evaluate(best)
    if best_value >= NO_KEY:
        return Evaluation(0.0, evaluation.statistics, evaluation.parameters), best
    return evaluation, best


def key_rate_point(
    link: Link, distance_km: float | None, start: Sequence[float] | None = None
) -> tuple[KeyRatePoint, tuple[float, ...]]:
    """Optimised secret-key rate of a link as configured (one sweep point)."""
    evaluation, best = optimise(link, start)
    stats = evaluation.statistics
    bits = evaluation.bits_per_pulse
    point = KeyRatePoint(
        distance_km=distance_km,
        loss_db=link.channel_loss_db,
        qber={"z": stats.qber_z[0], "x": stats.qber_x[0]},
        gain=stats.gain[0],
        secret_key_rate_bps=bits * link.repetition_rate_hz,
        secret_bits_per_pulse=bits,
        plob_bits_per_pulse=plob_bits_per_channel_use(link.channel_transmittance),
        parameters=evaluation.parameters,
        finite_key_terms=evaluation.terms,
    )
    return point, best


def sweep(
    links: Sequence[tuple[Link, float | None]], progress: Callable[[], None] | None = None
) -> list[KeyRatePoint]:
    """Key-rate points along a sweep, each optimisation warm-started from the last optimum with
    key (points without key are reported at it)."""
    points: list[KeyRatePoint] = []
    start: tuple[float, ...] | None = None
    for link, distance in links:
        point, best = key_rate_point(link, distance, start)
        if point.secret_bits_per_pulse > 0:
            start = best
        points.append(point)
        if progress is not None:
            progress()
    return points
