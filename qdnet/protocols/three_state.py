"""The three-state time-bin protocol (simplified BB84): expected statistics and key per pulse.

Rusca, Boaron, Curty, Martin, Zbinden, PRA 98, 052336 (2018); the experiments: Boaron et al.,
PRL 121, 190502 (2018) (laser, 421 km) and Wang et al., Light Sci. Appl. (2026), arXiv 2506.15520
(a telecom quantum dot, 120 km). Alice sends |0>, |1> (early or late bin, the key) with
probability q and |+> with 1 - q; Bob measures Z (arrival time) with probability q and X (the
unbalanced interferometer) otherwise (``protocol.basis_bias`` is q for both). The receiver model
(:mod:`qdnet.optics.receiver`, time-bin): Z with the link's detection efficiency and
``receiver.misalignment``, X with half of it (the central slot) and a wrong port with probability
``(1 - V)/2`` for |+>, 1/2 for |0> and |1>. The exact click model of
:meth:`qdnet.optics.receiver.Receiver.averaged_click_probabilities` over the source's photon-number
distribution, with the link's dark counts, background, gate, converter, dead time and afterpulsing
(:func:`qdnet.protocols.prepare_measure.detection_parameters`). Security in
:mod:`qdnet.security.three_state`.

With ``source.decoy_intensities`` the protocol runs with decoys (a laser: a weak and a vacuum
decoy, :mod:`qdnet.security.three_state` says why the vacuum; a dot: decoys made by its pump,
each with its ``decoy_g2``): the
classes are the configured intensities (signal first), ``keyrate`` optimises the decoys'
probabilities and P(Z), and the single-photon yields come from the linear program
(:func:`qdnet.security.three_state.decoy_key_length`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import partial

import numpy as np
from scipy.stats import poisson

from qdnet.optics.receiver import TIME_BIN_X_SHARE
from qdnet.protocols.link import Link, PrepareMeasureSource
from qdnet.protocols.prepare_measure import detection_parameters
from qdnet.protocols.statistics import LinkStatistics
from qdnet.security import three_state
from qdnet.security.entropy import binary_entropy as h
from qdnet.security.three_state import ThreeStateCounts
from qdnet.sources.quantum_dot import SinglePhotonSource

#: Poisson photon numbers kept explicitly in the decoy program (the rest is its tail variable).
POISSON_PHOTONS = 12


@dataclass(frozen=True)
class ThreeStateExpectation:
    """Per-pulse probabilities at one intensity (each given Alice's state class and Bob's basis).

    ``gain_z``/``error_z``: click and error probability of a Z state measured in Z;
    ``z_in_x_plus``/``z_in_x``: "+" and any click of a Z state measured in X;
    ``x_in_x_plus``/``x_in_x_minus``: "+" and "-" (error) of |+> measured in X.
    """

    mean_photon_number: float
    gain_z: float
    error_z: float
    z_in_x_plus: float
    z_in_x: float
    x_in_x_plus: float
    x_in_x_minus: float
    multiphoton_probability: float

    @property
    def qber_z(self) -> float:
        """Error rate of the sifted key."""
        return self.error_z / self.gain_z if self.gain_z > 0 else 0.5

    @property
    def qber_x(self) -> float:
        """Error rate of |+> measured in X (the monitoring QBER experiments report)."""
        total = self.x_in_x_plus + self.x_in_x_minus
        return self.x_in_x_minus / total if total > 0 else 0.5

    def counts(self, pulses: float, bias: float) -> ThreeStateCounts:
        """Expected counts of ``pulses`` pulses with P(Z) = ``bias`` at Alice and Bob."""
        key, z_in_x, x_in_x = (
            pulses * bias * bias,
            pulses * bias * (1 - bias),
            pulses * (1 - bias) ** 2,
        )
        return ThreeStateCounts(
            key_pulses=key,
            key_detections=key * self.gain_z,
            key_errors=key * self.error_z,
            z_in_x_pulses=z_in_x,
            z_in_x_plus=z_in_x * self.z_in_x_plus,
            z_in_x_detections=z_in_x * self.z_in_x,
            x_in_x_pulses=x_in_x,
            x_in_x_plus=x_in_x * self.x_in_x_plus,
            x_in_x_minus=x_in_x * self.x_in_x_minus,
            multiphoton_probability=self.multiphoton_probability,
        )

    def statistics(self) -> LinkStatistics:
        """The common statistics (gain and QBER of the Z key, X QBER of |+>) for reports."""
        return LinkStatistics(
            protocol=three_state.PROTOCOL,
            intensities=(self.mean_photon_number,),
            gain=(self.gain_z,),
            qber_z=(self.qber_z,),
            qber_x=(self.qber_x,),
            multiphoton_probability=(self.multiphoton_probability,),
        )


def _source(link: Link) -> PrepareMeasureSource:
    source = link.source
    if not isinstance(source, PrepareMeasureSource):
        raise ValueError(
            "protocol three-state-time-bin needs source.kind single-photon or weak-coherent"
        )
    return source


def _expectation(
    link: Link, mean_photon_number: float, eta: float, noise: float
) -> ThreeStateExpectation:
    source = _source(link)
    receiver = link.receiver
    generating = partial(source.generating_function, mean_photon_number=mean_photon_number)
    gain_z, error_z = receiver.averaged_click_probabilities(eta, generating, noise)
    eta_x = eta * TIME_BIN_X_SHARE
    x_receiver = receiver.with_wrong_port_probability(receiver.time_bin_x_error)
    x_all, x_minus = x_receiver.averaged_click_probabilities(eta_x, generating, noise)
    z_receiver = receiver.with_wrong_port_probability(0.5)
    z_all, z_minus = z_receiver.averaged_click_probabilities(eta_x, generating, noise)
    return ThreeStateExpectation(
        mean_photon_number=mean_photon_number,
        gain_z=gain_z,
        error_z=error_z,
        z_in_x_plus=z_all - z_minus,
        z_in_x=z_all,
        x_in_x_plus=x_all - x_minus,
        x_in_x_minus=x_minus,
        multiphoton_probability=source.multiphoton_probability(mean_photon_number),
    )


def expected(link: Link, mean_photon_number: float) -> ThreeStateExpectation:
    """Expected per-pulse probabilities at a mean photon number (dead time and afterpulsing
    from the Z-basis click rate, as :mod:`qdnet.protocols.prepare_measure` does)."""
    detector = link.receiver.detector
    eta, noise = detection_parameters(link)
    result = _expectation(link, mean_photon_number, eta, noise)
    if detector.dead_time_ns > 0 or detector.afterpulse_probability > 0:
        eta, noise = detection_parameters(link, result.gain_z)
        result = _expectation(link, mean_photon_number, eta, noise)
    return result


@dataclass(frozen=True)
class ThreeStateKey:
    """Key per pulse at one parameter choice, with the statistics and terms behind it."""

    bits_per_pulse: float
    expectation: ThreeStateExpectation
    parameters: dict[str, float]
    terms: dict[str, float]


def key_per_pulse(link: Link, mean_photon_number: float, bias: float | None) -> ThreeStateKey:
    """Secret bits per pulse at a mean photon number and P(Z) (None: asymptotic with q -> 1);
    finite keys (``protocol.block_size`` sifted key bits per block) use the expected counts and
    the length before rounding down (smooth in the parameters, as :mod:`qdnet.keyrate` needs)."""
    settings = link.protocol
    result = expected(link, mean_photon_number)
    parameters = {"mean_photon_number": mean_photon_number}
    if settings.block_size is None:
        weight = 1.0 if bias is None else bias * bias
        counts = result.counts(1.0, 0.5)  # the rates do not depend on the split
        rate = weight * three_state.asymptotic_key_per_pulse(
            result.gain_z,
            result.qber_z,
            three_state.asymptotic_phase_error(counts),
            result.multiphoton_probability,
            settings.error_correction_efficiency,
        )
        parameters["sifting_factor"] = weight
        return ThreeStateKey(rate, result, parameters, {})
    bias = 0.5 if bias is None else bias
    parameters["basis_bias"] = bias
    if result.gain_z <= 0 or bias >= 1:
        parameters["pulses_per_block"] = math.inf
        return ThreeStateKey(0.0, result, parameters, {})
    block = float(settings.block_size)
    pulses = block / (bias * bias * result.gain_z)
    counts = result.counts(pulses, bias)
    leak = settings.error_correction_efficiency * block * h(result.qber_z)
    length = three_state.key_length(
        counts, leak, settings.eps_sec, settings.eps_cor, settings.eps_split
    )
    parameters["pulses_per_block"] = min(pulses, 1e30)
    return ThreeStateKey(max(0.0, length.length_bits) / pulses, result, parameters, length.terms)


def _intensity(source: PrepareMeasureSource) -> float:
    if isinstance(source, SinglePhotonSource):
        return source.mean_photon_number
    return source.intensity()


def class_sources(link: Link) -> list[PrepareMeasureSource]:
    """The source at each intensity class (signal, then the decoys): a dot at each operating
    point with its own g2, a laser at each intensity."""
    source = _source(link)
    if isinstance(source, SinglePhotonSource):
        return [source.operating_point(k) for k in range(len(source.decoy_intensities) + 1)]
    if source.mean_photon_number is None:
        raise ValueError(
            "protocol three-state-time-bin with decoys needs source.mean_photon_number (the "
            "signal intensity; the classes are the configured intensities)"
        )
    intensities = (source.mean_photon_number, *source.decoy_intensities)
    # A vacuum decoy is the vacuum, whatever makes it.
    vacuum = SinglePhotonSource(0.0, 0.0, source.repetition_rate_hz, source.wavelength_nm)
    return [
        replace(source, mean_photon_number=mu, decoy_intensities=()) if mu > 0 else vacuum
        for mu in intensities
    ]


def class_distributions(
    sources: Sequence[PrepareMeasureSource],
) -> tuple[list[list[float]], list[float]]:
    """Photon-number distribution of each class and the probability beyond it (the dot's
    two-photon model: none; a laser: Poisson beyond POISSON_PHOTONS)."""
    dists, tails = [], []
    for source in sources:
        if isinstance(source, SinglePhotonSource):
            dists.append([float(p) for p in source.photon_number_distribution()])
            tails.append(0.0)
        else:
            mu = _intensity(source)
            dists.append([float(p) for p in poisson.pmf(np.arange(POISSON_PHOTONS + 1), mu)])
            tails.append(float(poisson.sf(POISSON_PHOTONS, mu)))
    return dists, tails


def decoy_key_per_pulse(
    link: Link, probabilities: Sequence[float], bias: float | None
) -> ThreeStateKey:
    """Secret bits per pulse with decoys, at class probabilities (signal first) and P(Z) (None:
    asymptotic with q -> 1, key from the signal class); finite keys as :func:`key_per_pulse`."""
    settings = link.protocol
    sources = class_sources(link)
    if len(probabilities) != len(sources):
        raise ValueError(f"{len(sources)} intensity classes need as many probabilities")
    results = [expected(replace(link, source=s), _intensity(s)) for s in sources]
    dists, tails = class_distributions(sources)
    signal = results[0]
    parameters: dict[str, float] = {"mean_photon_number": signal.mean_photon_number}
    parameters.update({f"class_{k}_probability": p for k, p in enumerate(probabilities)})
    f = settings.error_correction_efficiency
    if settings.block_size is None:
        weight = 1.0 if bias is None else bias * bias
        exact = three_state.decoy_estimates(
            [r.counts(1.0, 0.5) for r in results], dists, tails, None
        )
        single = dists[0][1] * exact.key_yield * (1.0 - h(exact.phase_error_rate))
        rate = weight * max(0.0, single - signal.gain_z * f * h(signal.qber_z))
        parameters.update(
            {
                "single_photon_yield_lower": exact.key_yield,
                "phase_error_upper": exact.phase_error_rate,
                "sifting_factor": weight,
            }
        )
        return ThreeStateKey(rate, signal, parameters, {})
    bias = 0.5 if bias is None else bias
    parameters["basis_bias"] = bias
    mean_gain = sum(p * r.gain_z for p, r in zip(probabilities, results, strict=True))
    if mean_gain <= 0 or bias >= 1:
        parameters["pulses_per_block"] = math.inf
        return ThreeStateKey(0.0, signal, parameters, {})
    pulses = float(settings.block_size) / (bias * bias * mean_gain)
    classes = [r.counts(pulses * p, bias) for p, r in zip(probabilities, results, strict=True)]
    leak = f * sum(c.key_detections * h(r.qber_z) for c, r in zip(classes, results, strict=True))
    length = three_state.decoy_key_length(
        classes, dists, tails, leak, settings.eps_sec, settings.eps_cor, settings.eps_split
    )
    parameters["pulses_per_block"] = min(pulses, 1e30)
    return ThreeStateKey(max(0.0, length.length_bits) / pulses, signal, parameters, length.terms)
