"""Secret-key rate of a link: expected statistics + security bound, optimised over free parameters.

Free parameters per protocol (each bounded; SciPy's bounded Nelder-Mead on each point, warm-started
from the previous point of a sweep):

- ``bb84``: mean photon number (Alice may attenuate her dot or laser, never exceed the source's own
  mu), and P(Z) for finite keys;
- ``decoy-bb84``: signal and weak-decoy intensities (asymptotic: vacuum + weak decoy, Ma et al. 2005;
  finite: the three-intensity protocol of Lim et al. 2014 with the weakest decoy from the YAML),
  plus their probabilities and P(Z) for finite keys;
- ``bbm92``: P(Z) for finite keys, and the mean pair number of an SPDC source.

Asymptotic rates use q = P(Z)^2 + P(X)^2 for a configured ``basis_bias`` (both bases give key) and
q -> 1 when the bias is free (efficient BB84, Lo, Chau, Ardehali 2005). Finite keys take key bits
from Z only; ``protocol.block_size`` is the number of sifted key bits per block (n_X of Lim et al.).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize

from qdnet.protocols import bbm92, prepare_measure
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
class ParameterSpace:
    """Named bounded parameters and the evaluation function over them."""

    names: tuple[str, ...]
    lower: tuple[float, ...]
    upper: tuple[float, ...]
    start: tuple[float, ...]
    evaluate: Callable[[Sequence[float]], Evaluation]


@dataclass(frozen=True)
class Parameter:
    """One free parameter: name, bounds and a starting value."""

    name: str
    lower: float
    upper: float
    start: float


#: P(Z) for both parties; 0.9 is a good start for finite keys at any loss.
BASIS_BIAS = Parameter("basis_bias", 0.5, 1 - MIN_PARAMETER, 0.9)


def _space(
    parameters: Sequence[Parameter], evaluate: Callable[[Sequence[float]], Evaluation]
) -> ParameterSpace:
    return ParameterSpace(
        tuple(p.name for p in parameters),
        tuple(p.lower for p in parameters),
        tuple(p.upper for p in parameters),
        tuple(p.start for p in parameters),
        evaluate,
    )


def _max_intensity(link: Link) -> float:
    source = link.source
    if isinstance(source, SinglePhotonSource):
        return source.mean_photon_number
    if isinstance(source, WeakCoherentSource):
        return max(MAX_LASER_INTENSITY, source.mean_photon_number)
    raise ValueError(f"protocol {link.protocol.kind} needs a single-photon or weak-coherent source")


def _asymptotic_sifting(bias: float | None) -> float:
    return 1.0 if bias is None else bias * bias + (1 - bias) * (1 - bias)


def _finite_counts_one_class(
    link: Link, stats: LinkStatistics, bias: float, multiphoton: float
) -> tuple[ObservedCounts, float, int]:
    block = float(link.protocol.block_size or 0)
    gain = stats.gain[0]
    pulses = block / (bias * bias * gain) if gain > 0 else math.inf
    test = pulses * (1 - bias) ** 2 * gain
    counts = ObservedCounts(
        protocol=link.protocol.kind,
        intensities=stats.intensities,
        pulses=(int(min(pulses, 1e30)),),
        key_detections=(int(block),),
        test_detections=(int(test),),
        test_errors=(round(test * stats.qber_x[0]),),
        multiphoton_probability=multiphoton,
        basis_bias=bias,
    )
    leak = link.protocol.error_correction_efficiency * block * h(stats.qber_z[0])
    return counts, leak, int(min(pulses, 1e30))


def _bb84_space(link: Link) -> ParameterSpace:
    settings = link.protocol
    source = link.source
    assert isinstance(source, SinglePhotonSource | WeakCoherentSource)
    mu_max = _max_intensity(link)
    mu_start = source.mean_photon_number
    finite = settings.block_size is not None
    free_bias = finite and settings.basis_bias is None
    free_mu = settings.optimise_intensity

    def unpack(x: Sequence[float]) -> tuple[float, float]:
        values = list(x)
        mu = values.pop(0) if free_mu else mu_start
        bias = values.pop(0) if free_bias else (settings.basis_bias or 0.5)
        return mu, bias

    def evaluate(x: Sequence[float]) -> Evaluation:
        mu, bias = unpack(x)
        stats = prepare_measure.expected_statistics(link, (mu,))
        multiphoton = source.multiphoton_probability(mu)
        params = {"mean_photon_number": mu}
        if not finite:
            q = _asymptotic_sifting(settings.basis_bias)
            rate = q * gllp_key_per_pulse(
                stats.gain[0],
                stats.qber_z[0],
                stats.qber_x[0],
                multiphoton,
                settings.error_correction_efficiency,
            )
            params["sifting_factor"] = q
            return Evaluation(rate, stats, params)
        counts, leak, pulses = _finite_counts_one_class(link, stats, bias, multiphoton)
        result = secret_key_length(counts, leak, settings.eps_sec, settings.eps_cor)
        params.update({"basis_bias": bias, "pulses_per_block": float(pulses)})
        return Evaluation(result.bits / pulses if pulses > 0 else 0.0, stats, params, result.terms)

    parameters = []
    if free_mu:
        parameters.append(
            Parameter("mean_photon_number", MIN_PARAMETER, mu_max, min(mu_start, mu_max))
        )
    if free_bias:
        parameters.append(BASIS_BIAS)
    return _space(parameters, evaluate)


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


def _decoy_space(link: Link) -> ParameterSpace:
    settings = link.protocol
    source = link.source
    assert isinstance(source, SinglePhotonSource | WeakCoherentSource)
    finite = settings.block_size is not None
    if finite and not isinstance(source, WeakCoherentSource):
        raise ValueError(
            "finite-key decoy-bb84 (Lim et al. 2014) assumes Poisson photon numbers: use "
            "source.kind weak-coherent, or protocol.block_size null for a quantum-dot source"
        )
    mu_max = _max_intensity(link)
    decoys = source.decoy_intensities
    weakest = min(decoys) if decoys else 0.0
    weak_start = decoys[0] if decoys and decoys[0] > weakest else source.mean_photon_number / 5

    def evaluate(x: Sequence[float]) -> Evaluation:
        mu, nu = x[0], x[1]
        if not finite:
            stats = prepare_measure.expected_statistics(link, (mu, nu, 0.0))
            if nu >= mu:  # the decoy must be the weaker intensity
                return Evaluation(0.0, stats, {})
            y1, e1, p1 = _single_photon_bounds(source, stats, mu, nu)
            q = _asymptotic_sifting(settings.basis_bias)
            rate = q * single_photon_key_per_pulse(
                p1 * y1, stats.gain[0], stats.qber_z[0], e1, settings.error_correction_efficiency
            )
            params = {
                "mean_photon_number": mu,
                "decoy_intensity": nu,
                "single_photon_yield_lower": y1,
                "single_photon_error_upper": e1,
                "sifting_factor": q,
            }
            return Evaluation(rate, stats, params)
        p_mu, p_nu = x[2], x[3]
        bias = x[4] if settings.basis_bias is None else settings.basis_bias
        stats = prepare_measure.expected_statistics(link, (mu, nu, weakest))
        if mu <= nu + weakest or p_mu + p_nu >= 1.0:  # Lim et al.'s conditions on the intensities
            return Evaluation(0.0, stats, {})
        probs = (p_mu, p_nu, 1.0 - p_mu - p_nu)
        mean_gain = sum(p * q for p, q in zip(probs, stats.gain, strict=True))
        block = float(settings.block_size or 0)
        pulses = block / (bias * bias * mean_gain)
        key = [pulses * p * bias * bias * q for p, q in zip(probs, stats.gain, strict=True)]
        test = [pulses * p * (1 - bias) ** 2 * q for p, q in zip(probs, stats.gain, strict=True)]
        errors = [t * e for t, e in zip(test, stats.qber_x, strict=True)]
        counts = ObservedCounts(
            protocol="decoy-bb84",
            intensities=(mu, nu, weakest),
            pulses=tuple(int(pulses * p) for p in probs),
            key_detections=tuple(round(k) for k in key),
            test_detections=tuple(round(t) for t in test),
            test_errors=tuple(round(e) for e in errors),
            basis_bias=bias,
        )
        mean_qber = sum(k * e for k, e in zip(key, stats.qber_z, strict=True)) / sum(key)
        leak = settings.error_correction_efficiency * block * h(mean_qber)
        result = secret_key_length(counts, leak, settings.eps_sec, settings.eps_cor)
        params = {
            "mean_photon_number": mu,
            "decoy_intensity": nu,
            "weakest_intensity": weakest,
            "signal_probability": p_mu,
            "decoy_probability": p_nu,
            "basis_bias": bias,
            "pulses_per_block": pulses,
        }
        return Evaluation(result.bits / pulses, stats, params, result.terms)

    parameters = [
        Parameter("mean_photon_number", 2 * MIN_PARAMETER, mu_max, source.mean_photon_number),
        Parameter("decoy_intensity", MIN_PARAMETER, mu_max / 2, min(weak_start, mu_max / 2)),
    ]
    if finite:
        parameters += [
            Parameter("signal_probability", 0.05, 0.95, 0.7),
            Parameter("decoy_probability", 0.02, 0.6, 0.2),
        ]
        if settings.basis_bias is None:
            parameters.append(BASIS_BIAS)
    return _space(parameters, evaluate)


def _bbm92_space(link: Link) -> ParameterSpace:
    settings = link.protocol
    source = link.source
    finite = settings.block_size is not None
    free_bias = finite and settings.basis_bias is None
    free_mu = isinstance(source, SpdcSource) and settings.optimise_intensity

    def evaluate(x: Sequence[float]) -> Evaluation:
        values = list(x)
        mean_pairs = values.pop(0) if free_mu else None
        bias = values.pop(0) if free_bias else (settings.basis_bias or 0.5)
        stats = bbm92.expected(link, mean_pairs)
        params: dict[str, float] = {"mean_pair_number": stats.intensities[0]}
        if not finite:
            q = _asymptotic_sifting(settings.basis_bias)
            rate = (
                q
                * stats.gain[0]
                * bbm92_key_per_coincidence(
                    stats.qber_z[0], stats.qber_x[0], settings.error_correction_efficiency
                )
            )
            params["sifting_factor"] = q
            return Evaluation(rate, stats, params)
        counts, leak, pulses = _finite_counts_one_class(link, stats, bias, 0.0)
        result = secret_key_length(counts, leak, settings.eps_sec, settings.eps_cor)
        params.update({"basis_bias": bias, "pulses_per_block": float(pulses)})
        return Evaluation(result.bits / pulses if pulses > 0 else 0.0, stats, params, result.terms)

    parameters = []
    if free_mu:
        assert isinstance(source, SpdcSource)
        upper = max(0.5, source.mean_pair_number)
        parameters.append(
            Parameter("mean_pair_number", MIN_PARAMETER, upper, source.mean_pair_number)
        )
    if free_bias:
        parameters.append(BASIS_BIAS)
    return _space(parameters, evaluate)


def parameter_space(link: Link) -> ParameterSpace:
    """The free parameters of a link's protocol and how to evaluate them."""
    kind = link.protocol.kind
    if kind == "bb84":
        return _bb84_space(link)
    if kind == "decoy-bb84":
        return _decoy_space(link)
    if kind == "bbm92":
        return _bbm92_space(link)
    raise ValueError(f"unknown protocol.kind {kind!r}")


def optimise(
    link: Link, start: Sequence[float] | None = None
) -> tuple[Evaluation, tuple[float, ...]]:
    """Maximise key per pulse over the free parameters (bounded Nelder-Mead in log space)."""
    space = parameter_space(link)
    if not space.names:
        return space.evaluate(()), ()
    lower = np.log(np.array(space.lower))
    upper = np.log(np.array(space.upper))
    x0 = np.log(
        np.clip(np.array(start if start is not None else space.start), space.lower, space.upper)
    )

    def objective(z: np.ndarray) -> float:
        value = space.evaluate(tuple(np.exp(np.clip(z, lower, upper)))).bits_per_pulse
        return -math.log(value) if value > 0 else 1e3 + float(np.sum((z - x0) ** 2))

    candidates = [x0]
    if start is None or objective(x0) >= 1e3:
        # A coarse scan along the first parameter finds a region with key to start from.
        for fraction in (0.9, 0.5, 0.2, 0.05, 0.01):
            z = x0.copy()
            z[0] = lower[0] + fraction * (upper[0] - lower[0])
            candidates.append(z)
    best_start = min(candidates, key=objective)
    if objective(best_start) >= 1e3:
        evaluation = space.evaluate(tuple(np.exp(best_start)))
        return Evaluation(0.0, evaluation.statistics, evaluation.parameters), tuple(np.exp(x0))
    result = minimize(
        objective,
        best_start,
        method="Nelder-Mead",
        bounds=list(zip(lower, upper, strict=True)),
        options={"xatol": 1e-2, "fatol": 1e-3, "maxfev": 300},
    )
    best = tuple(float(v) for v in np.exp(np.clip(result.x, lower, upper)))
    return space.evaluate(best), best


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
    """Key-rate points along a sweep, each optimisation warm-started from the previous optimum."""
    points: list[KeyRatePoint] = []
    start: tuple[float, ...] | None = None
    for link, distance in links:
        point, best = key_rate_point(link, distance, start)
        start = best if point.secret_bits_per_pulse > 0 else None
        points.append(point)
        if progress is not None:
            progress()
    return points
