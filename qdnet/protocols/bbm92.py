"""BBM92 with entangled pairs (Bennett, Brassard, Mermin, PRL 68, 557 (1992)).

The source sits at ``protocol.source_position`` along the channel (0 = at Alice, 0.5 = middle):
arm A has that fraction of the channel loss, arm B the rest. Both receivers use the link's receiver.

Coincidence model per pulse with n pairs (pair-number distribution of the source): each receiver
clicks with ``1 - (1-p)^2 (1-eta)^n`` (p: noise per detector). A coincidence is *true* when exactly
one photon of one pair is detected on each side and nothing else clicks:
``n eta_A eta_B ((1-eta_A)(1-eta_B))^(n-1) (1-p_A)^2 (1-p_B)^2``; its error is the state's error
combined with both receivers' misalignment; every other coincidence (noise, photons of different
pairs) carries a random bit (error 1/2). This is the accidental-coincidence picture of Ma, Fung, Lo,
PRA 76, 012307 (2007), Sec. III, for independent pairs.

Each arm has its own noise (daylight and a frequency converter's noise photons can be on one arm:
``Link.arm_background_rate_hz``) and its own transmittance (a converter's efficiency); the state's
errors are those of the pair after the polarisation channel (:func:`path_state_errors`).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from qdnet.optics.polarisation import compose_errors, pair_errors
from qdnet.protocols.link import Link, PairSource
from qdnet.protocols.statistics import LinkStatistics
from qdnet.sources.entangled import EntangledPairSource


def arm_transmittances(link: Link) -> tuple[float, float]:
    """(eta_A, eta_B): source extraction x converter (if on the arm) x arm channel x detector
    efficiency."""
    source = link.source
    extraction = source.extraction_efficiency if isinstance(source, EntangledPairSource) else 1.0
    efficiency = link.receiver.detector.efficiency
    eta_a, eta_b = (
        extraction
        * link.arm_conversion_efficiency(arm)
        * link.arm_channel_transmittance(arm)
        * efficiency
        for arm in ("a", "b")
    )
    return eta_a, eta_b


def path_density_matrix(link: Link) -> NDArray[np.complex128]:
    """Two-photon state of a quantum-dot pair after the polarisation channel (on the photon that
    crosses it; :mod:`qdnet.optics.polarisation`)."""
    source = link.source
    if not isinstance(source, EntangledPairSource):
        raise ValueError("the pair's density matrix is modelled for source.kind entangled-pair")
    rho = source.density_matrix()
    if link.polarisation is None or link.polarisation.is_identity:
        return rho
    return link.polarisation.apply_to_second_photon(rho)


def path_state_errors(link: Link) -> tuple[float, float]:
    """(Z, X) error of a pair after the polarisation channel: exact from the density matrix for a
    quantum dot; for SPDC (a Werner state) the channel's photon error composed with the state's,
    which is exact for a Werner state."""
    source = link.source
    if not isinstance(source, PairSource):
        raise ValueError("protocol bbm92 needs source.kind entangled-pair or spdc")
    channel = link.polarisation
    if channel is None or channel.is_identity:
        return source.qber_z(), source.qber_x()
    if isinstance(source, EntangledPairSource):
        return pair_errors(path_density_matrix(link))
    error = channel.photon_error()
    return compose_errors(source.qber_z(), error), compose_errors(source.qber_x(), error)


def pair_distribution(source: PairSource, mean_pair_number: float | None) -> np.ndarray:
    """Pair-number distribution, optionally at another mean pair number (SPDC pump power)."""
    if isinstance(source, EntangledPairSource):
        return source.pair_number_distribution()
    return source.pair_number_distribution(mean_pair_number)


def expected(link: Link, mean_pair_number: float | None = None) -> LinkStatistics:
    """Coincidence probability and per-basis QBER of sifted coincidences."""
    source = link.source
    if not isinstance(source, PairSource):
        raise ValueError("protocol bbm92 needs source.kind entangled-pair or spdc")
    dist = pair_distribution(source, mean_pair_number)
    n = np.arange(len(dist), dtype=np.float64)
    eta_a, eta_b = arm_transmittances(link)
    detector = link.receiver.detector
    noise_a = detector.noise_probability(link.arm_background_rate_hz("a"))
    noise_b = detector.noise_probability(link.arm_background_rate_hz("b"))
    if detector.dead_time_ns > 0 or detector.afterpulse_probability > 0:
        noise = max(noise_a, noise_b)
        single = float(np.dot(dist, 1 - (1 - noise) ** 2 * (1 - max(eta_a, eta_b)) ** n))
        factor = detector.dead_time_factor(single * link.repetition_rate_hz)
        eta_a, eta_b = eta_a * factor, eta_b * factor
        noise_a = min(1.0, noise_a + detector.afterpulse_probability * single / 2)
        noise_b = min(1.0, noise_b + detector.afterpulse_probability * single / 2)
    click_a = 1 - (1 - noise_a) ** 2 * (1 - eta_a) ** n
    click_b = 1 - (1 - noise_b) ** 2 * (1 - eta_b) ** n
    coincidence = float(np.dot(dist, click_a * click_b))
    true_terms = (
        n
        * eta_a
        * eta_b
        * ((1 - eta_a) * (1 - eta_b)) ** np.maximum(n - 1, 0)
        * ((1 - noise_a) * (1 - noise_b)) ** 2
    )
    true = float(np.dot(dist, true_terms))
    e_m = link.receiver.misalignment
    misalignment_total = 2 * e_m * (1 - e_m)
    qbers = []
    for state_error in path_state_errors(link):
        err = compose_errors(state_error, misalignment_total)
        qbers.append(
            (err * true + 0.5 * (coincidence - true)) / coincidence if coincidence > 0 else 0.5
        )
    mean_pairs = float(np.dot(n, dist))
    return LinkStatistics(
        protocol="bbm92",
        intensities=(mean_pairs,),
        gain=(coincidence,),
        qber_z=(qbers[0],),
        qber_x=(qbers[1],),
        multiphoton_probability=(float(dist[2:].sum()),),
        single_click_probability_alice=float(np.dot(dist, click_a)),
        single_click_probability_bob=float(np.dot(dist, click_b)),
        true_coincidence_probability=true,
    )
