"""Photon-level Monte Carlo of prepare-and-measure BB84 (one intensity, or decoy classes).

Model (identical to the analytic expectation of :mod:`qdnet.protocols.prepare_measure`, so the two
compare field by field): per pulse Alice picks an intensity class k (probabilities ``p_k``), a basis
(Z with ``P(Z) = basis_bias``) and a bit; the photon number follows the source's distribution at that
intensity (:meth:`photon_number_distribution`); each photon is absorbed by Bob's detectors with the
channel x detector transmittance (binomial loss, Loudon Sec. 5.8; dead time as the efficiency factor
``1/(1 + R tau)`` and afterpulsing as extra noise ``p_ap Q/2`` exactly as
:func:`qdnet.protocols.prepare_measure.detection_parameters`); Bob picks his basis; an absorbed photon
in the matching basis lands in the wrong detector with the misalignment ``e_d`` and in the conjugate
basis in either detector with 1/2; each detector has independent noise clicks with probability p;
a double click is squashed to a random bit (Luetkenhaus, PRA 59, 3301 (1999)). An interceptor
(:mod:`qdnet.attacks`) replaces the binomial loss by its own table of absorbed photons.

Sampling. The per-pulse outcome "(class, absorbed photons, photon state, any noise click)" has a
small finite distribution; the engine samples it exactly in one of two ways:

- ``method="pulse"``: one uniform per pulse, inverted against the cumulative table (trivial outcomes
  first), with a xoshiro256** stream per chunk (:mod:`qdnet.simulation.rng`);
- ``method="event"``: event skipping. Pulses where nothing is absorbed and no noise clicks are
  independent with probability ``P_0`` each, so the gap to the next non-trivial pulse is geometric,
  ``G = floor(ln U / ln P_0)`` (Devroye, *Non-Uniform Random Variate Generation*, 1986, Sec. X.2);
  the event's outcome is then drawn from the table conditioned on being non-trivial, and the trivial
  pulses are split over the classes by one multinomial draw per chunk (per-class thinning). By the
  memorylessness of the geometric law both paths give the same distribution of records.

Bases, bits and detector outcomes are drawn only for non-trivial pulses (they are independent of
whether the pulse is trivial, so the law is unchanged). Work proceeds in chunks whose seeds come in
order from the caller's generator, so a seed gives bit-identical records whatever ``workers`` is.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from numba import njit
from numpy.typing import NDArray

from qdnet.attacks.base import ChannelContext, Interceptor, NoAttack
from qdnet.protocols.link import Link, PrepareMeasureSource
from qdnet.protocols.prepare_measure import (
    detection_parameters,
    expected_statistics,
    link_intensities,
)
from qdnet.protocols.statistics import LinkStatistics
from qdnet.simulation.rng import _TWO53, U64, State, fair_bit, load, new_state, step, store, u53

Progress = Callable[[int, int], None]
#: Receives each batch of records (the six columns of ``PrepareMeasureRun.records``) in slot order.
RecordSink = Callable[[tuple[NDArray[np.generic], ...]], None]
FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

#: Pulses per chunk; memory per chunk is bounded by the event buffer below, whatever the run length.
DEFAULT_CHUNK_PULSES = 1 << 25
#: Events held per kernel call before they are handed back.
EVENT_BUFFER = 1 << 20
#: Columns of the per-class counters: detections, ZZ sifted, ZZ errors, XX sifted, XX errors.
COUNT_COLUMNS = ("detections", "zz", "zz_errors", "xx", "xx_errors")


@dataclass(frozen=True)
class PulsePlan:
    """Everything the kernels need, derived once from the link (plain arrays, picklable)."""

    intensities: tuple[float, ...]
    class_probabilities: tuple[float, ...]
    tables: FloatArray  # (classes, max photons + 1, 2)
    noise: float
    misalignment: float
    basis_bias: float
    eve_basis_z_probability: float
    outcome_class: IntArray = field(repr=False)
    outcome_photons: IntArray = field(repr=False)
    outcome_kind: IntArray = field(repr=False)
    outcome_noise: IntArray = field(repr=False)
    outcome_trivial: IntArray = field(repr=False)
    outcome_cumulative: FloatArray = field(repr=False)
    event_probability: float = 0.0
    event_cumulative: FloatArray = field(default_factory=lambda: np.zeros(0), repr=False)
    event_index: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64), repr=False)
    trivial_by_class: FloatArray = field(default_factory=lambda: np.zeros(0), repr=False)


def default_class_probabilities(n_classes: int) -> tuple[float, ...]:
    """Signal 0.7, then the decoys share the rest (0.2, 0.1 for three classes)."""
    if n_classes == 1:
        return (1.0,)
    if n_classes == 3:
        return (0.7, 0.2, 0.1)
    rest = 0.3 / (n_classes - 1)
    return (0.7, *([rest] * (n_classes - 1)))


def make_plan(
    link: Link,
    intensities: tuple[float, ...] | None = None,
    class_probabilities: tuple[float, ...] | None = None,
    attack: Interceptor | None = None,
) -> tuple[PulsePlan, LinkStatistics]:
    """The sampling plan of a link, and its analytic expectation (honest channel)."""
    source = link.source
    if not isinstance(source, PrepareMeasureSource):
        raise ValueError(
            f"protocol {link.protocol.kind} needs source.kind single-photon or weak-coherent"
        )
    mus = link_intensities(link) if intensities is None else tuple(intensities)
    probs = (
        default_class_probabilities(len(mus))
        if class_probabilities is None
        else class_probabilities
    )
    if len(probs) != len(mus) or abs(sum(probs) - 1.0) > 1e-9 or min(probs) < 0:
        raise ValueError(
            f"class probabilities {probs} must be {len(mus)} numbers >= 0 summing to 1"
        )
    expected = expected_statistics(link, mus)
    detector = link.receiver.detector
    needs_second_pass = detector.dead_time_ns > 0 or detector.afterpulse_probability > 0
    eta, noise = detection_parameters(link, expected.gain[0] if needs_second_pass else None)
    first_eta, _ = detection_parameters(link)
    # The same effective efficiency as the analytic model, split into channel and detector parts.
    context = ChannelContext(
        eta_channel=link.channel_transmittance,
        eta_detector=eta / link.channel_transmittance
        if link.channel_transmittance > 0
        else first_eta,
        signal_distribution=source.photon_number_distribution(mus[0]),
    )
    interceptor: Interceptor = attack if attack is not None else NoAttack()
    dists = [source.photon_number_distribution(mu) for mu in mus]
    size = max(len(d) for d in dists)
    tables = np.zeros((len(mus), size, 2))
    for k, dist in enumerate(dists):
        padded = np.zeros(size)
        padded[: len(dist)] = dist
        table = interceptor.arrival_table(padded, context)
        tables[k, : table.shape[0]] = table
    plan = _outcomes(
        mus,
        tuple(float(p) for p in probs),
        tables,
        noise,
        link.receiver.misalignment,
        link.protocol.basis_bias or 0.5,
        interceptor.eve_basis_z_probability,
    )
    return plan, expected


def _outcomes(
    mus: tuple[float, ...],
    probs: tuple[float, ...],
    tables: FloatArray,
    noise: float,
    misalignment: float,
    bias: float,
    eve_pz: float,
) -> PulsePlan:
    p_any = 1.0 - (1.0 - noise) ** 2
    rows: list[tuple[float, int, int, int, int, int]] = []
    for k, pk in enumerate(probs):
        table = tables[k]
        silent = float(table[0].sum())
        rows.append((pk * silent * (1.0 - p_any), k, 0, 0, 0, 1))
        if p_any > 0:
            rows.append((pk * silent * p_any, k, 0, 0, 1, 0))
        for m in range(1, table.shape[0]):
            for kind in (0, 1):
                p = pk * float(table[m, kind])
                if p <= 0:
                    continue
                rows.append((p * (1.0 - p_any), k, m, kind, 0, 0))
                if p_any > 0:
                    rows.append((p * p_any, k, m, kind, 1, 0))
    rows = [r for r in rows if r[0] > 0]
    rows.sort(key=lambda r: -r[0])
    weights = np.array([r[0] for r in rows])
    weights /= weights.sum()
    columns = np.array([r[1:] for r in rows], dtype=np.int64)
    trivial = columns[:, 4] == 1
    cumulative = np.cumsum(weights)
    cumulative[-1] = 1.0
    event_weights = weights[~trivial]
    event_probability = float(event_weights.sum())
    event_cum = (
        np.cumsum(event_weights) / event_probability if event_probability > 0 else np.ones(0)
    )
    if len(event_cum):
        event_cum[-1] = 1.0
    trivial_by_class = np.zeros(len(probs))
    for w, row in zip(weights[trivial], columns[trivial], strict=True):
        trivial_by_class[row[0]] += w
    return PulsePlan(
        intensities=mus,
        class_probabilities=probs,
        tables=tables,
        noise=noise,
        misalignment=misalignment,
        basis_bias=bias,
        eve_basis_z_probability=eve_pz,
        outcome_class=columns[:, 0].copy(),
        outcome_photons=columns[:, 1].copy(),
        outcome_kind=columns[:, 2].copy(),
        outcome_noise=columns[:, 3].copy(),
        outcome_trivial=columns[:, 4].copy(),
        outcome_cumulative=cumulative,
        event_probability=event_probability,
        event_cumulative=event_cum,
        event_index=np.flatnonzero(~trivial).astype(np.int64),
        trivial_by_class=trivial_by_class,
    )


@njit(inline="always")
def _event(  # pragma: no cover - compiled
    st: State,
    slot: int,
    k: int,
    m: int,
    kind: int,
    noisy: int,
    bias53: float,
    eve_pz53: float,
    e_d53: float,
    p_both53: float,
    n: int,
    o_slot: IntArray,
    o_abasis: NDArray[np.uint8],
    o_abit: NDArray[np.uint8],
    o_class: NDArray[np.uint8],
    o_bbasis: NDArray[np.uint8],
    o_bbit: NDArray[np.uint8],
    counts: IntArray,
) -> State:
    """Bases, bit and detector outcome of one non-trivial pulse; branch-free on random values."""
    w, st = step(st)
    a = 0 if u53(w) < bias53 else 1
    w, st = step(st)
    b = 0 if u53(w) < bias53 else 1
    x, st = fair_bit(st)
    basis = a
    value = x
    if kind == 1:
        w, st = step(st)
        basis = 0 if u53(w) < eve_pz53 else 1
        r, st = fair_bit(st)
        value = x if basis == a else r
    clicks = 0
    for _ in range(m):
        w, st = step(st)
        r, st = fair_bit(st)
        aligned = value ^ (1 if u53(w) < e_d53 else 0)
        det = aligned if b == basis else r
        clicks |= 1 << det
    if noisy:
        w, st = step(st)
        r, st = fair_bit(st)
        clicks |= 3 if u53(w) < p_both53 else 1 << r
    r, st = fair_bit(st)
    y = r if clicks == 3 else clicks >> 1
    o_slot[n] = slot
    o_abasis[n] = a
    o_abit[n] = x
    o_class[n] = k
    o_bbasis[n] = b
    o_bbit[n] = y
    counts[k, 0] += 1
    sifted = 1 if a == b else 0
    col = 1 + 2 * a
    counts[k, col] += sifted
    counts[k, col + 1] += sifted & (y ^ x)
    return st


@njit(cache=True, nogil=True)
def per_pulse_kernel(  # pragma: no cover - compiled
    s: U64,
    start: int,
    end: int,
    cum53: FloatArray,
    o_k: IntArray,
    o_m: IntArray,
    o_kind: IntArray,
    o_noise: IntArray,
    o_triv: IntArray,
    bias53: float,
    eve_pz53: float,
    e_d53: float,
    p_both53: float,
    o_slot: IntArray,
    o_abasis: NDArray[np.uint8],
    o_abit: NDArray[np.uint8],
    o_class: NDArray[np.uint8],
    o_bbasis: NDArray[np.uint8],
    o_bbit: NDArray[np.uint8],
    counts: IntArray,
    class_pulses: IntArray,
) -> tuple[int, int]:
    """One uniform per pulse; returns (next pulse, events written)."""
    n = 0
    cap = len(o_slot)
    last = len(cum53) - 1
    st = load(s)
    # Outcome 0 is the most probable one (trivial at any distance): count it in a local.
    first_trivial = o_triv[0] == 1
    first_hits = 0
    first = cum53[0]
    i = start
    while i < end:
        if n == cap:
            break
        w, st = step(st)
        u = u53(w)
        if first_trivial and u < first:
            first_hits += 1
            i += 1
            continue
        j = 0
        while j < last and u >= cum53[j]:
            j += 1
        class_pulses[o_k[j]] += 1
        if o_triv[j] == 0:
            st = _event(
                st,
                i,
                o_k[j],
                o_m[j],
                o_kind[j],
                o_noise[j],
                bias53,
                eve_pz53,
                e_d53,
                p_both53,
                n,
                o_slot,
                o_abasis,
                o_abit,
                o_class,
                o_bbasis,
                o_bbit,
                counts,
            )
            n += 1
        i += 1
    class_pulses[o_k[0]] += first_hits
    store(st, s)
    return i, n


@njit(cache=True, nogil=True)
def event_kernel(  # pragma: no cover - compiled
    s: U64,
    start: int,
    end: int,
    inv_log_trivial: float,
    cum53: FloatArray,
    index: IntArray,
    o_k: IntArray,
    o_m: IntArray,
    o_kind: IntArray,
    o_noise: IntArray,
    bias53: float,
    eve_pz53: float,
    e_d53: float,
    p_both53: float,
    o_slot: IntArray,
    o_abasis: NDArray[np.uint8],
    o_abit: NDArray[np.uint8],
    o_class: NDArray[np.uint8],
    o_bbasis: NDArray[np.uint8],
    o_bbit: NDArray[np.uint8],
    counts: IntArray,
) -> tuple[int, int]:
    """Geometric gaps between non-trivial pulses; returns (next pulse, events written).

    ``inv_log_trivial`` is ``1 / ln(1 - P_event)`` (0 when every pulse is an event)."""
    n = 0
    cap = len(o_slot)
    last = len(cum53) - 1
    pos = start
    st = load(s)
    while True:
        if n == cap:
            break
        w, st = step(st)
        if inv_log_trivial < 0.0:
            # U = 1 - uniform in (0, 1]; G = floor(ln U / ln P_0)
            u = (_TWO53 - u53(w)) * (1.0 / _TWO53)
            gap = math.floor(math.log(u) * inv_log_trivial)
            if gap >= end - pos:
                pos = end
                break
            pos += int(gap)
        w, st = step(st)
        v = u53(w)
        j = 0
        while j < last and v >= cum53[j]:
            j += 1
        r = index[j]
        st = _event(
            st,
            pos,
            o_k[r],
            o_m[r],
            o_kind[r],
            o_noise[r],
            bias53,
            eve_pz53,
            e_d53,
            p_both53,
            n,
            o_slot,
            o_abasis,
            o_abit,
            o_class,
            o_bbasis,
            o_bbit,
            counts,
        )
        n += 1
        pos += 1
        if pos >= end:
            break
    store(st, s)
    return pos, n


@dataclass
class ChunkResult:
    """Counts (and optionally records) of one chunk."""

    class_pulses: IntArray
    counts: IntArray
    records: tuple[NDArray[np.generic], ...] | None


def run_chunk(
    plan: PulsePlan,
    method: str,
    start: int,
    length: int,
    seed_words: U64,
    keep_records: bool,
    sink: RecordSink | None = None,
) -> ChunkResult:
    """Simulate pulses ``start .. start+length`` with the stream seeded by ``seed_words``.

    With ``sink`` each filled event buffer is handed to it (and not kept): memory is then bounded
    by :data:`EVENT_BUFFER` whatever the chunk length."""
    seeder = np.random.Generator(np.random.PCG64(seed_words.astype(np.uint64)))
    state = new_state(seeder)
    k = len(plan.intensities)
    counts = np.zeros((k, len(COUNT_COLUMNS)), dtype=np.int64)
    class_pulses = np.zeros(k, dtype=np.int64)
    capacity = min(
        EVENT_BUFFER, max(1024, int(length * max(plan.event_probability, 1e-9) * 1.2) + 1024)
    )
    b_slot = np.empty(capacity, dtype=np.int64)
    b_abasis, b_abit, b_class, b_bbasis, b_bbit = (
        np.empty(capacity, dtype=np.uint8) for _ in range(5)
    )
    buffers: tuple[NDArray[np.generic], ...] = (b_slot, b_abasis, b_abit, b_class, b_bbasis, b_bbit)
    kept: list[tuple[NDArray[np.generic], ...]] = []
    noise = plan.noise
    p_any = 1.0 - (1.0 - noise) ** 2
    p_both = noise * noise / p_any if p_any > 0 else 0.0
    end = start + length
    pos = start
    inv_log_trivial = (
        1.0 / math.log1p(-plan.event_probability) if plan.event_probability < 1 else 0.0
    )
    # Probabilities scaled by 2**53: ``uniform < p`` is then ``top 53 bits < p * 2**53`` exactly.
    scaled = (
        plan.basis_bias * _TWO53,
        plan.eve_basis_z_probability * _TWO53,
        plan.misalignment * _TWO53,
        p_both * _TWO53,
    )
    event_cum53 = plan.event_cumulative * _TWO53
    while pos < end:
        if method == "pulse":
            pos, n = per_pulse_kernel(
                state,
                pos,
                end,
                plan.outcome_cumulative * _TWO53,
                plan.outcome_class,
                plan.outcome_photons,
                plan.outcome_kind,
                plan.outcome_noise,
                plan.outcome_trivial,
                *scaled,
                b_slot,
                b_abasis,
                b_abit,
                b_class,
                b_bbasis,
                b_bbit,
                counts,
                class_pulses,
            )
        elif plan.event_probability <= 0.0:
            pos, n = end, 0
        else:
            pos, n = event_kernel(
                state,
                pos,
                end,
                inv_log_trivial,
                event_cum53,
                plan.event_index,
                plan.outcome_class,
                plan.outcome_photons,
                plan.outcome_kind,
                plan.outcome_noise,
                *scaled,
                b_slot,
                b_abasis,
                b_abit,
                b_class,
                b_bbasis,
                b_bbit,
                counts,
            )
        if sink is not None and n:
            sink(tuple(b[:n] for b in buffers))
        elif keep_records and n:
            kept.append(tuple(b[:n].copy() for b in buffers))
    if method != "pulse":
        events = counts[:, 0]
        trivial = length - int(events.sum())
        weights = plan.trivial_by_class / plan.trivial_by_class.sum() if trivial else None
        class_pulses = events.copy()
        if weights is not None:
            class_pulses += seeder.multinomial(trivial, weights)
    records = None
    if keep_records and sink is None:
        records = tuple(
            np.concatenate([part[i] for part in kept]) if kept else buffers[i][:0].copy()
            for i in range(6)
        )
    return ChunkResult(class_pulses=class_pulses, counts=counts, records=records)


def chunk_jobs(pulses: int, chunk: int, rng: np.random.Generator) -> Iterator[tuple[int, int, U64]]:
    """(start, length, seed words) for each chunk, seeds drawn in order from ``rng``."""
    start = 0
    while start < pulses:
        length = min(chunk, pulses - start)
        words = rng.integers(0, 2**64 - 1, size=4, dtype=np.uint64, endpoint=True)
        yield start, length, words
        start += length


@dataclass
class PrepareMeasureRun:
    """Result of a prepare-and-measure simulation."""

    plan: PulsePlan
    expected: LinkStatistics
    pulses: int
    class_pulses: IntArray
    counts: IntArray
    records: tuple[NDArray[np.generic], ...] | None
    method: str


def simulate_prepare_measure(
    link: Link,
    pulses: int,
    rng: np.random.Generator,
    *,
    method: str = "event",
    intensities: tuple[float, ...] | None = None,
    class_probabilities: tuple[float, ...] | None = None,
    attack: Interceptor | None = None,
    keep_records: bool = True,
    chunk_pulses: int = DEFAULT_CHUNK_PULSES,
    workers: int = 1,
    progress: Progress | None = None,
    sink: RecordSink | None = None,
) -> PrepareMeasureRun:
    """Simulate ``pulses`` pulses of a BB84 / decoy-BB84 link (see module docstring).

    With ``sink`` the records are handed over batch by batch in slot order (and ``records`` of the
    result is None); they are the same records, batch for batch, as with ``keep_records``."""
    if method not in ("event", "pulse"):
        raise ValueError(f"method must be 'event' or 'pulse', got {method!r}")
    pulses = int(pulses)
    if pulses <= 0:
        raise ValueError(f"pulses must be > 0, got {pulses}")
    plan, expected = make_plan(link, intensities, class_probabilities, attack)
    k = len(plan.intensities)
    class_pulses = np.zeros(k, dtype=np.int64)
    counts = np.zeros((k, len(COUNT_COLUMNS)), dtype=np.int64)
    parts: list[tuple[NDArray[np.generic], ...]] = []
    done = 0

    def absorb(result: ChunkResult, length: int) -> None:
        nonlocal done
        class_pulses[:] += result.class_pulses
        counts[:] += result.counts
        if result.records is not None:
            if sink is not None:
                sink(result.records)
            else:
                parts.append(result.records)
        done += length
        if progress is not None:
            progress(done, pulses)

    jobs = chunk_jobs(pulses, chunk_pulses, rng)
    if workers <= 1:
        for start, length, words in jobs:
            absorb(run_chunk(plan, method, start, length, words, keep_records, sink), length)
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            pending: list[tuple[int, object]] = []
            for start, length, words in jobs:
                pending.append(
                    (
                        length,
                        pool.submit(
                            run_chunk,
                            plan,
                            method,
                            start,
                            length,
                            words,
                            keep_records or sink is not None,
                        ),
                    )
                )
                if len(pending) >= 2 * workers:
                    length0, future = pending.pop(0)
                    absorb(future.result(), length0)  # type: ignore[attr-defined]
            for length0, future in pending:
                absorb(future.result(), length0)  # type: ignore[attr-defined]
    records = None
    if keep_records and sink is None:
        records = tuple(
            np.concatenate([p[i] for p in parts]) if parts else np.zeros(0) for i in range(6)
        )
    return PrepareMeasureRun(plan, expected, pulses, class_pulses, counts, records, method)
