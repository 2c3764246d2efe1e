"""Decoy-state BB84 (Hwang, PRL 91, 057901 (2003); Lo, Ma, Chen, PRL 94, 230504 (2005)).

Signal intensity first, then the decoys (weak, then vacuum-like). Expected statistics from
:mod:`qdnet.protocols.prepare_measure`.
"""

from __future__ import annotations

from qdnet.protocols.link import Link
from qdnet.protocols.prepare_measure import expected_statistics, link_intensities
from qdnet.protocols.statistics import LinkStatistics


def expected(link: Link, intensities: tuple[float, ...] | None = None) -> LinkStatistics:
    """Expected statistics for each intensity (signal first)."""
    return expected_statistics(link, link_intensities(link) if intensities is None else intensities)
