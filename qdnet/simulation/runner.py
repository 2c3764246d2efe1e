"""One entry point for every protocol: simulate a link, build the raw records, compare, judge.

``simulate(link, pulses, rng)`` dispatches on ``link.protocol.kind`` to the prepare-and-measure
engine (:mod:`qdnet.simulation.prepare_measure`) or the BBM92 engine
(:mod:`qdnet.simulation.entangled`), packs the records in the format of
:mod:`qdnet.protocols.records` and sets the observed statistics beside the analytic expectation
(:mod:`qdnet.simulation.analysis`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qdnet.attacks.base import Interceptor, PairInterceptor
from qdnet.protocols.link import Link
from qdnet.protocols.records import PartyRecords, RawRecords, RecordsMeta
from qdnet.protocols.statistics import LinkStatistics
from qdnet.simulation.analysis import RunStatistics, Verdict, compare, pm_statistics, verdict
from qdnet.simulation.prepare_measure import (
    DEFAULT_CHUNK_PULSES,
    Progress,
    simulate_prepare_measure,
)


@dataclass
class SimulationResult:
    """Records, observed statistics, expectation, deviations and verdict of one run."""

    records: RawRecords | None
    statistics: RunStatistics
    expected: LinkStatistics
    deviation_sigma: dict[str, float]
    verdict: Verdict
    extra_files: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The documented ``--json`` document."""
        st, ex = self.statistics, self.expected
        classes = range(len(st.pulses))
        return {
            "protocol": st.protocol,
            "pulses": int(sum(st.pulses)),
            "detections": int(sum(st.detections)),
            "gain": st.gain(0),
            "qber": {"z": st.qber_z(0), "x": st.qber_x(0)},
            "per_class": [
                {
                    "intensity": st.intensities[k],
                    "pulses": st.pulses[k],
                    "detections": st.detections[k],
                    "gain": st.gain(k),
                    "qber": {"z": st.qber_z(k), "x": st.qber_x(k)},
                }
                for k in classes
            ],
            "expected": {
                "gain": ex.gain[0],
                "qber": {"z": ex.qber_z[0], "x": ex.qber_x[0]},
                "per_class": [
                    {"gain": ex.gain[k], "qber": {"z": ex.qber_z[k], "x": ex.qber_x[k]}}
                    for k in range(len(ex.gain))
                ],
            },
            "deviation_sigma": self.deviation_sigma,
            "extra": st.extra,
            "verdict": self.verdict.verdict,
            "reason": self.verdict.reason,
            "key_possible": self.verdict.key_possible,
            "asymptotic_bits_per_pulse": self.verdict.asymptotic_bits_per_pulse,
            "finite_key_bits": self.verdict.finite_key_bits,
            "estimates": self.verdict.estimates,
        }


def simulate(
    link: Link,
    pulses: int,
    rng: np.random.Generator,
    *,
    attack: Interceptor | PairInterceptor | None = None,
    method: str = "event",
    class_probabilities: tuple[float, ...] | None = None,
    keep_records: bool = True,
    workers: int = 1,
    chunk_pulses: int = DEFAULT_CHUNK_PULSES,
    progress: Progress | None = None,
    seed: int | None = None,
    link_document: dict[str, Any] | None = None,
) -> SimulationResult:
    """Simulate ``pulses`` pulses of ``link`` (see module docstring)."""
    if link.protocol.kind == "bbm92":
        from qdnet.simulation.entangled import simulate_bbm92_result

        if attack is not None and not isinstance(attack, PairInterceptor):
            raise ValueError(f"attack {attack.name!r} does not apply to bbm92 links")
        return simulate_bbm92_result(
            link,
            pulses,
            rng,
            attack=attack,
            keep_records=keep_records,
            progress=progress,
            seed=seed,
            link_document=link_document,
        )
    if attack is not None and not isinstance(attack, Interceptor):
        raise ValueError(f"attack {attack.name!r} applies to bbm92 links only")
    run = simulate_prepare_measure(
        link,
        pulses,
        rng,
        method=method,
        class_probabilities=class_probabilities,
        attack=attack,
        keep_records=keep_records,
        workers=workers,
        chunk_pulses=chunk_pulses,
        progress=progress,
    )
    plan = run.plan
    stats = pm_statistics(run.counts, run.class_pulses, link, plan.intensities, plan.basis_bias)
    records = None
    if run.records is not None:
        slot, a_basis, a_bit, klass, b_basis, b_bit = run.records
        meta = RecordsMeta(
            protocol=link.protocol.kind,
            link_name=link.name,
            pulses=run.pulses,
            intensities=plan.intensities,
            pulses_per_intensity=tuple(int(v) for v in run.class_pulses),
            basis_bias=plan.basis_bias,
            repetition_rate_hz=link.repetition_rate_hz,
            seed=seed,
            link=link_document or {},
        )
        records = RawRecords(
            meta=meta,
            alice=PartyRecords(
                slot=slot.astype(np.int64),
                basis=a_basis.astype(np.uint8),
                bit=a_bit.astype(np.uint8),
                intensity=klass.astype(np.uint8),
            ),
            bob=PartyRecords(
                slot=slot.astype(np.int64),
                basis=b_basis.astype(np.uint8),
                bit=b_bit.astype(np.uint8),
                intensity=np.zeros(len(slot), dtype=np.uint8),
            ),
        )
    return SimulationResult(
        records=records,
        statistics=stats,
        expected=run.expected,
        deviation_sigma=compare(stats, run.expected),
        verdict=verdict(stats, run.expected, link),
    )
