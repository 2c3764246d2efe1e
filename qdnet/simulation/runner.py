"""One entry point for every protocol: simulate a link, build the raw records, compare, judge.

``simulate(link, pulses, rng)`` dispatches on ``link.protocol.kind`` to the prepare-and-measure
engine (:mod:`qdnet.simulation.prepare_measure`) or the BBM92 engine
(:mod:`qdnet.simulation.entangled`), packs the records in the format of
:mod:`qdnet.protocols.records` and sets the observed statistics beside the analytic expectation
(:mod:`qdnet.simulation.analysis`).

With ``out`` the records go to that directory in the format of :mod:`qdnet.protocols.records`
(plus ``timetags.npz`` for BBM92). Prepare-and-measure records are streamed there batch by batch
(:mod:`qdnet.simulation.stream`), so memory does not grow with the pulse count; they are the same
records a run with ``keep_records`` holds in memory.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from qdnet.attacks.base import Interceptor, PairInterceptor
from qdnet.protocols.link import Link, PrepareMeasureSource
from qdnet.protocols.records import PartyRecords, RawRecords, RecordsMeta
from qdnet.simulation.analysis import compare, pm_statistics, verdict
from qdnet.simulation.entangled import simulate_bbm92_result
from qdnet.simulation.prepare_measure import (
    DEFAULT_CHUNK_PULSES,
    Progress,
    simulate_prepare_measure,
)
from qdnet.simulation.result import SimulationResult
from qdnet.simulation.stream import RecordStream


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
    out: str | os.PathLike[str] | None = None,
) -> SimulationResult:
    """Simulate ``pulses`` pulses of ``link`` (see module docstring)."""
    if link.protocol.encoding == "time-bin":
        raise ValueError(
            f"protocol.kind {link.protocol.kind}: the Monte Carlo models polarisation BB84 and "
            "BBM92, not time-bin encoding; qdnet keyrate gives its key"
        )
    if link.protocol.kind == "bbm92":
        if attack is not None and not isinstance(attack, PairInterceptor):
            raise ValueError(f"attack {attack.name!r} does not apply to bbm92 links")
        result = simulate_bbm92_result(
            link,
            pulses,
            rng,
            attack=attack,
            keep_records=keep_records,
            progress=progress,
            seed=seed,
            link_document=link_document,
            out=out,
        )
        return result
    if attack is not None and not isinstance(attack, Interceptor):
        raise ValueError(f"attack {attack.name!r} applies to bbm92 links only")
    stream = RecordStream(out) if out is not None else None
    try:
        run = simulate_prepare_measure(
            link,
            pulses,
            rng,
            method=method,
            class_probabilities=class_probabilities,
            attack=attack,
            keep_records=keep_records and stream is None,
            workers=workers,
            chunk_pulses=chunk_pulses,
            progress=progress,
            sink=stream.append if stream is not None else None,
        )
    except BaseException:
        if stream is not None:
            stream.abort()
        raise
    plan = run.plan
    stats = pm_statistics(run.counts, run.class_pulses, link, plan.intensities, plan.basis_bias)
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
        multiphoton_probability=_multiphoton_probabilities(link, plan.intensities),
    )
    records = None
    if stream is not None:
        stream.finish(meta)
    if run.records is not None:
        slot, a_basis, a_bit, klass, b_basis, b_bit = run.records
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


def _multiphoton_probabilities(link: Link, intensities: tuple[float, ...]) -> tuple[float, ...]:
    """Alice's characterised P(n>=2) per intensity class, published in the run's metadata."""
    source = link.source
    if not isinstance(source, PrepareMeasureSource):
        return ()
    return tuple(float(source.multiphoton_probability(mu)) for mu in intensities)
