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
"""

from __future__ import annotations

import numpy as np

from qdnet.optics.fibre import transmittance_from_loss_db
from qdnet.protocols.link import Link, PairSource
from qdnet.protocols.statistics import LinkStatistics
from qdnet.sources.entangled import EntangledPairSource


def arm_transmittances(link: Link) -> tuple[float, float]:
    """(eta_A, eta_B): source extraction x arm channel x detector efficiency."""
    source = link.source
    extraction = source.extraction_efficiency if isinstance(source, EntangledPairSource) else 1.0
    loss_db = link.channel_loss_db
    position = link.protocol.source_position
    efficiency = link.receiver.detector.efficiency
    eta_a = extraction * transmittance_from_loss_db(position * loss_db) * efficiency
    eta_b = extraction * transmittance_from_loss_db((1.0 - position) * loss_db) * efficiency
    return eta_a, eta_b


def _combine(error_state: float, misalignment_total: float) -> float:
    return error_state * (1 - misalignment_total) + (1 - error_state) * misalignment_total


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
    noise = detector.noise_probability(link.background_rate_hz)
    if detector.dead_time_ns > 0 or detector.afterpulse_probability > 0:
        single = float(np.dot(dist, 1 - (1 - noise) ** 2 * (1 - max(eta_a, eta_b)) ** n))
        factor = detector.dead_time_factor(single * link.repetition_rate_hz)
        eta_a, eta_b = eta_a * factor, eta_b * factor
        noise = min(1.0, noise + detector.afterpulse_probability * single / 2)
    click_a = 1 - (1 - noise) ** 2 * (1 - eta_a) ** n
    click_b = 1 - (1 - noise) ** 2 * (1 - eta_b) ** n
    coincidence = float(np.dot(dist, click_a * click_b))
    true_terms = (
        n * eta_a * eta_b * ((1 - eta_a) * (1 - eta_b)) ** np.maximum(n - 1, 0) * (1 - noise) ** 4
    )
    true = float(np.dot(dist, true_terms))
    e_m = link.receiver.misalignment
    misalignment_total = 2 * e_m * (1 - e_m)
    qbers = []
    for state_error in (source.qber_z(), source.qber_x()):
        err = _combine(state_error, misalignment_total)
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
