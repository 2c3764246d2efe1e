"""Expected statistics of prepare-and-measure polarisation BB84 (with or without decoys).

Gain and error per intensity class: ``Q = sum_n p_n Y_n``, ``E Q = sum_n p_n e_n Y_n`` with the exact
per-photon-number click model of :mod:`qdnet.optics.receiver` (Lo, Ma, Chen, PRL 94, 230504 (2005),
Eqs. 2-6, generalised to double clicks). Dead time lowers the efficiency by ``1/(1 + R tau)`` at the
click rate R; afterpulsing adds ``p_ap x click probability`` of random clicks (see
:mod:`qdnet.optics.detectors`). The misalignment error is the same in both bases.
"""

from __future__ import annotations

import math
from dataclasses import replace
from functools import partial

import numpy as np

from qdnet.protocols.link import Link, PrepareMeasureSource
from qdnet.protocols.statistics import LinkStatistics
from qdnet.sources.photon_statistics import FloatArray
from qdnet.sources.quantum_dot import SinglePhotonSource
from qdnet.sources.time_profile import gate_acceptance


def link_intensities(link: Link) -> tuple[float, ...]:
    """Signal intensity, then the decoys for ``decoy-bb84``, as configured on the source."""
    source = link.source
    if not isinstance(source, PrepareMeasureSource):
        raise ValueError(
            f"protocol {link.protocol.kind} needs source.kind single-photon or weak-coherent"
        )
    if source.mean_photon_number is None:
        raise ValueError(
            "source.mean_photon_number is needed here (it is optional only for keyrate, which "
            "optimises it)"
        )
    if link.protocol.kind != "decoy-bb84":
        return (float(source.mean_photon_number),)
    if not source.decoy_intensities:
        raise ValueError(
            "protocol decoy-bb84 needs source.decoy_intensities here (they are optional only for "
            "keyrate, which optimises them)"
        )
    return (float(source.mean_photon_number), *source.decoy_intensities)


def emission_lifetime_ns(link: Link) -> float:
    """Lifetime of the source's emission (a laser pulse: 0, shorter than any detector's jitter)."""
    source = link.source
    return source.lifetime_ns if isinstance(source, SinglePhotonSource) else 0.0


def gate_share(link: Link, gate_ns: float) -> float:
    """Share of the photons detected in the receiver's window that a time gate of ``gate_ns``
    keeps (``receiver.efficiency`` holds for the whole window, so a gate as wide as the window
    keeps them all)."""
    detector = link.receiver.detector
    profile = (emission_lifetime_ns(link), detector.jitter_ps * 1e-3)
    return gate_acceptance(gate_ns, *profile) / gate_acceptance(detector.window_ns, *profile)


def detected_g2(link: Link) -> float:
    """Pulsed g2(0) of the clicks a Hanbury Brown-Twiss pair of the link's detectors would record
    at the end of the channel (a 50:50 splitter, the gate if any, dark and background counts
    included): the zero-delay peak over a side peak, ``P(A B) / P(A)^2`` with
    ``P(no A) = (1-d) G(1 - eta/2)`` and ``P(no A, no B) = (1-d)^2 G(1 - eta)`` for the source's
    photon-number generating function G, detection probability eta and noise d per detector.
    Noise clicks are uncorrelated, so they raise the measured g2 above the source's; a narrower
    gate removes them faster than signal (the g2 fall Kupko et al. 2020 measured)."""
    source = link.source
    if not isinstance(source, PrepareMeasureSource):
        raise ValueError("detected g2 is for single-photon and weak-coherent sources")
    mu = link_intensities(link)[0]
    eta, noise = detection_parameters(link)
    silent_one = (1 - noise) * source.generating_function(1 - eta / 2, mean_photon_number=mu)
    silent_both = (1 - noise) ** 2 * source.generating_function(1 - eta, mean_photon_number=mu)
    click = 1 - silent_one
    both = 1 - 2 * silent_one + silent_both
    return both / (click * click) if click > 0 else math.nan


def detection_parameters(link: Link, signal_gain_guess: float | None = None) -> tuple[float, float]:
    """Effective (transmittance to detection, noise click probability per detector).

    A frequency converter on the path passes its efficiency of the photons; its noise photons and
    daylight are background counts (``link.background_rate_hz``). A receiver time gate
    (``link.gate_ns``) keeps :func:`gate_share` of the photons and counts noise over the gate only.

    The dead-time and afterpulse corrections use the click rate, taken from ``signal_gain_guess``
    (a first pass without them when None).
    """
    detector = link.receiver.detector
    eta = link.channel_transmittance * link.arm_conversion_efficiency("b") * detector.efficiency
    noise = detector.noise_probability(link.background_rate_hz)
    if link.gate_ns is not None:
        if link.gate_ns == "optimise":
            raise ValueError(
                "receiver.gate_ns optimise: only keyrate chooses a gate; give a width in ns here"
            )
        eta *= gate_share(link, link.gate_ns)
        noise = replace(detector, window_ns=link.gate_ns).noise_probability(link.background_rate_hz)
    if signal_gain_guess is not None:
        click_rate_hz = signal_gain_guess * link.repetition_rate_hz
        eta *= detector.dead_time_factor(click_rate_hz)
        noise = min(1.0, noise + detector.afterpulse_probability * signal_gain_guess / 2.0)
    return eta, noise


def _fock_generating(x: float, photons: int) -> float:
    """Generating function of the n-photon Fock state: x^n."""
    return float(x**photons)


def yields_and_errors(
    link: Link, eta: float, noise: float, max_photons: int
) -> tuple[FloatArray, FloatArray]:
    """Y_n and e_n Y_n for n = 0..max_photons."""
    pairs = [
        link.receiver.averaged_click_probabilities(eta, partial(_fock_generating, photons=n), noise)
        for n in range(max_photons + 1)
    ]
    return np.array([y for y, _ in pairs]), np.array([e for _, e in pairs])


#: Photon numbers for which Y_n and e_n Y_n are reported (the infinite-decoy bound needs n = 1).
REPORTED_PHOTON_NUMBERS = 4


def _gains_and_qbers(
    link: Link,
    source: PrepareMeasureSource,
    intensities: tuple[float, ...],
    eta: float,
    noise: float,
) -> tuple[list[float], list[float]]:
    gains, qbers = [], []
    for mu in intensities:
        q, eq = link.receiver.averaged_click_probabilities(
            eta, partial(source.generating_function, mean_photon_number=mu), noise
        )
        gains.append(q)
        qbers.append(eq / q if q > 0 else 0.5)
    return gains, qbers


def expected_statistics(
    link: Link, intensities: tuple[float, ...], photon_yields: bool = True
) -> LinkStatistics:
    """Statistics for each intensity class of a prepare-and-measure link (exact averages over the
    photon-number distribution via its generating function); ``photon_yields`` False leaves Y_n
    and e_n Y_n out (the optimiser does not need them)."""
    source = link.source
    if not isinstance(source, PrepareMeasureSource):
        raise ValueError(
            f"protocol {link.protocol.kind} needs source.kind single-photon or weak-coherent"
        )
    detector = link.receiver.detector
    eta, noise = detection_parameters(link)
    gains, qbers = _gains_and_qbers(link, source, intensities, eta, noise)
    if detector.dead_time_ns > 0 or detector.afterpulse_probability > 0:
        eta, noise = detection_parameters(link, gains[0])
        gains, qbers = _gains_and_qbers(link, source, intensities, eta, noise)
    yields, errors = (
        yields_and_errors(link, eta, noise, REPORTED_PHOTON_NUMBERS - 1)
        if photon_yields
        else (np.zeros(0), np.zeros(0))
    )
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
