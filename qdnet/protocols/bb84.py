"""BB84 with one intensity (single-photon source, or a laser without decoys).

Bennett, Brassard, Proc. IEEE ICCSSP 1984; biased basis choice: Lo, Chau, Ardehali,
J. Cryptology 18, 133 (2005). Expected statistics from :mod:`qdnet.protocols.prepare_measure`.
"""

from __future__ import annotations

from qdnet.protocols.link import Link, PrepareMeasureSource
from qdnet.protocols.prepare_measure import expected_statistics, link_intensities
from qdnet.protocols.statistics import LinkStatistics


def expected(link: Link, mean_photon_number: float | None = None) -> LinkStatistics:
    """Expected statistics at the source's (or the given) mean photon number."""
    source = link.source
    if not isinstance(source, PrepareMeasureSource):
        raise ValueError("protocol bb84 needs source.kind single-photon or weak-coherent")
    if mean_photon_number is not None:
        return expected_statistics(link, (mean_photon_number,))
    return expected_statistics(link, link_intensities(link))
