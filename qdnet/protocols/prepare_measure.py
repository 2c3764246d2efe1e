"""Expected statistics of prepare-and-measure polarisation BB84 (with or without decoys).

Gain and error per intensity class: ``Q = sum_n p_n Y_n``, ``E Q = sum_n p_n e_n Y_n`` with the exact
per-photon-number click model of :mod:`qdnet.optics.receiver` (Lo, Ma, Chen, PRL 94, 230504 (2005),
Eqs. 2-6, generalised to double clicks). Dead time lowers the efficiency by ``1/(1 + R tau)`` at the
click rate R; afterpulsing adds ``p_ap x click probability`` of random clicks (see
:mod:`qdnet.optics.detectors`). The misalignment error is the same in both bases.
"""

from __future__ import annotations

import numpy as np

from qdnet.protocols.link import Link, PrepareMeasureSource
from qdnet.protocols.statistics import LinkStatistics
from qdnet.sources.photon_statistics import FloatArray


def photon_number_distribution(source: PrepareMeasureSource, intensity: float) -> FloatArray:
    """p_n of the source at a given mean photon number."""
    return source.photon_number_distribution(intensity)


def detection_parameters(link: Link, signal_gain_guess: float | None = None) -> tuple[float, float]:
    """Effective (transmittance to detection, noise click probability per detector).

    The dead-time and afterpulse corrections use the click rate, taken from ``signal_gain_guess``
    (a first pass without them when None).
    """
    detector = link.receiver.detector
    eta = link.channel_transmittance * detector.efficiency
    noise = detector.noise_probability(link.background_rate_hz)
    if signal_gain_guess is not None:
        click_rate_hz = signal_gain_guess * link.repetition_rate_hz
        eta *= detector.dead_time_factor(click_rate_hz)
        noise = min(1.0, noise + detector.afterpulse_probability * signal_gain_guess / 2.0)
    return eta, noise


def yields_and_errors(
    link: Link, eta: float, noise: float, max_photons: int
) -> tuple[FloatArray, FloatArray]:
    """Y_n and e_n Y_n for n = 0..max_photons."""
    probs = link.receiver.click_probabilities(eta, np.arange(max_photons + 1), noise)
    return probs.yield_, probs.error


def expected_statistics(link: Link, intensities: tuple[float, ...]) -> LinkStatistics:
    """Statistics for each intensity class of a prepare-and-measure link."""
    source = link.source
    if not isinstance(source, PrepareMeasureSource):
        raise ValueError(
            f"protocol {link.protocol.kind} needs source.kind single-photon or weak-coherent"
        )
    dists = [photon_number_distribution(source, mu) for mu in intensities]
    max_photons = max(len(d) for d in dists) - 1
    detector = link.receiver.detector
    needs_second_pass = detector.dead_time_ns > 0 or detector.afterpulse_probability > 0
    eta, noise = detection_parameters(link)
    yields, errors = yields_and_errors(link, eta, noise, max_photons)
    if needs_second_pass:
        first_gain = float(np.dot(dists[0], yields[: len(dists[0])]))
        eta, noise = detection_parameters(link, first_gain)
        yields, errors = yields_and_errors(link, eta, noise, max_photons)
    gains, qbers = [], []
    for dist in dists:
        q = float(np.dot(dist, yields[: len(dist)]))
        eq = float(np.dot(dist, errors[: len(dist)]))
        gains.append(q)
        qbers.append(eq / q if q > 0 else 0.5)
    return LinkStatistics(
        protocol=link.protocol.kind,
        intensities=tuple(intensities),
        gain=tuple(gains),
        qber_z=tuple(qbers),
        qber_x=tuple(qbers),
        multiphoton_probability=tuple(source.multiphoton_probability(mu) for mu in intensities),
        photon_yields=tuple(float(y) for y in yields),
        photon_errors=tuple(float(e) for e in errors),
    )
