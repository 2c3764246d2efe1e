"""Expected link statistics, the common currency of the analytic model and the Monte Carlo."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class LinkStatistics:
    """Per-pulse expectations for each intensity class (signal first).

    ``gain[k]``: probability per pulse of class k that Bob registers a click (prepare-and-measure)
    or that both receivers click in one window (BBM92: a coincidence), whatever the bases.
    ``qber_z[k]``/``qber_x[k]``: error probability of such an event when both chose Z (resp. X).
    ``photon_yields`` and ``photon_errors`` (prepare-and-measure) are Y_n and e_n Y_n for n photons
    sent, which the infinite-decoy bound and the tests use.
    """

    protocol: str
    intensities: tuple[float, ...]
    gain: tuple[float, ...]
    qber_z: tuple[float, ...]
    qber_x: tuple[float, ...]
    multiphoton_probability: tuple[float, ...]
    photon_yields: tuple[float, ...] = field(default_factory=tuple)
    photon_errors: tuple[float, ...] = field(default_factory=tuple)
    single_click_probability_alice: float = 0.0
    single_click_probability_bob: float = 0.0
    true_coincidence_probability: float = 0.0
