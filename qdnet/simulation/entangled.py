"""Monte Carlo of BBM92 with time tags, coincidence analysis and the raw key.

Per excitation pulse the source emits n pairs (``pair_number_distribution``); each pair's photon
reaches and is absorbed by Alice's (Bob's) receiver with ``eta_A`` (``eta_B``) from
:func:`qdnet.protocols.bbm92.arm_transmittances` (dead time and afterpulsing as the same effective
efficiency and noise as :func:`qdnet.protocols.bbm92.expected`); every detector has independent noise
clicks with probability p per window. The pairs split multinomially into "both detected", "only A",
"only B" and "lost" (exact enumeration of the joint outcome, sampled by event skipping as in
:mod:`qdnet.simulation.prepare_measure`).

Correlations. For a cascade pair the exciton emission time t is drawn from Exp(tau) and the pair is
``(|HH> + e^{i S t/hbar}|VV>)/sqrt2`` (Keil et al., Nat. Commun. 8, 15501 (2017)) damped by
``exp(-t/tau_SS)`` (populations) and ``exp(-t(1/tau_SS + 1/tau_HV))`` (coherence), and with
probability ``background_fraction`` it is uncorrelated (Hudson et al., PRL 99, 266802 (2007)):
matched Z outcomes differ with ``(1 - e^{-t/tau_SS})/2`` and matched X outcomes with
``(1 - e^{-t gamma} cos(S t/hbar))/2``. Averaged over t these are exactly ``qber_z()`` and
``qber_x()`` of :class:`~qdnet.sources.entangled.EntangledPairSource`. With ``time_resolved`` the
phase is tracked from the time tags and only the timing error delta ~ N(0, sigma) remains,
``cos(S delta/hbar)``, whose mean is the source model's blur ``exp(-(S sigma/hbar)^2/2)``. SPDC
pairs carry ``intrinsic_error``. Each receiver flips a photon with its misalignment; photons of
different pairs and noise clicks are uncorrelated; double clicks are squashed to a random bit.

Path. Arm A and arm B have their own transmittance (converter efficiency on the arm included) and
their own noise per detector (``Link.arm_background_rate_hz``: channel background, daylight and
converter noise photons on that arm). The polarisation channel acts on photon B
(:meth:`~qdnet.optics.polarisation.PolarisationChannel.apply_to_second_photon`): per pair it flips
B's outcome with the channel's photon error ``e_c`` in either basis. This is exact, not an
approximation: the channel maps the correlators ``<ZZ> -> V E[cos 2 theta] <ZZ>`` and
``<XX> -> V E[cos 2 theta] <XX>`` plus terms in ``<ZX>`` and ``<XZ>``, which vanish for the dot's
state at every emission time (no coherence between HH and HV) and for a Werner state, so the error
after the path is ``compose_errors(error, e_c)`` pair by pair, and its average over t is the
analytic model's :func:`qdnet.protocols.bbm92.path_state_errors`.

Time tags (``timetags.npz``): each click is tagged ``slot x period + arm delay + emission time
(photons) or a uniform time in the window (noise) + Gaussian jitter`` in ps. The coincidence
analysis assigns every tag to the detection window (width ``receiver.window_ns``) of the pulse it
falls in and pairs Alice's and Bob's tags of the same window: these coincidences, true (one pair's
two photons and nothing else) or accidental, make the raw key (slot = coincidence index).
"""

from __future__ import annotations

import math
import os
from itertools import product
from typing import Any

import numpy as np
from numba import njit
from numpy.typing import NDArray

from qdnet.attacks.base import PairInterceptor
from qdnet.protocols.bbm92 import arm_transmittances, expected, pair_distribution
from qdnet.protocols.link import Link
from qdnet.protocols.records import PartyRecords, RawRecords, RecordsMeta
from qdnet.simulation.analysis import RunStatistics, compare, verdict
from qdnet.simulation.prepare_measure import Progress
from qdnet.simulation.result import SimulationResult
from qdnet.simulation.rng import U64, bit, new_state, uniform
from qdnet.simulation.stream import RecordStream, TagStream
from qdnet.sources.entangled import EntangledPairSource

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]
CHUNK_PULSES = 1 << 26
BUFFER = 1 << 18


def _outcome_table(
    dist: FloatArray, eta_a: float, eta_b: float, noise_a: float, noise_b: float
) -> tuple[FloatArray, IntArray]:
    """Rows (prob; j both, a only, b only, noise A, noise B) with at least one click, descending;
    ``noise_a`` (``noise_b``) is the noise probability per detector of Alice's (Bob's) receiver."""
    p_both, p_a, p_b = eta_a * eta_b, eta_a * (1 - eta_b), (1 - eta_a) * eta_b
    p_none = (1 - eta_a) * (1 - eta_b)
    q_a = 1.0 - (1.0 - noise_a) ** 2
    q_b = 1.0 - (1.0 - noise_b) ** 2
    rows: list[tuple[float, int, int, int, int, int]] = []
    for n, pn in enumerate(dist):
        if pn <= 0:
            continue
        for j in range(n + 1):
            for a in range(n - j + 1):
                for b in range(n - j - a + 1):
                    rest = n - j - a - b
                    coef = math.factorial(n) / (
                        math.factorial(j)
                        * math.factorial(a)
                        * math.factorial(b)
                        * math.factorial(rest)
                    )
                    p = pn * coef * p_both**j * p_a**a * p_b**b * p_none**rest
                    for na, nb in product((0, 1), repeat=2):
                        pw = p * (q_a if na else 1 - q_a) * (q_b if nb else 1 - q_b)
                        if pw > 0 and (j + a + b + na + nb) > 0:
                            rows.append((pw, j, a, b, na, nb))
    rows.sort(key=lambda r: -r[0])
    weights = np.array([r[0] for r in rows])
    columns = np.array([r[1:] for r in rows], dtype=np.int64).reshape(-1, 5)
    return weights, columns


@njit(cache=True)
def _side(s: U64, c: NDArray[np.bool_], noisy: int, p_both: float) -> int:  # pragma: no cover
    if noisy:
        if uniform(s) < p_both:
            c[0] = True
            c[1] = True
        elif bit(s) == 0:
            c[0] = True
        else:
            c[1] = True
    if c[0] and c[1]:
        return bit(s)
    return 0 if c[0] else 1


@njit(cache=True, nogil=True)
def bbm92_kernel(  # pragma: no cover - compiled
    s: U64,
    start: int,
    end: int,
    log_trivial: float,
    cum: FloatArray,
    cols: IntArray,
    bias: float,
    e_m: float,
    e_channel: float,
    p_both_a: float,
    p_both_b: float,
    tau: float,
    inv_ss: float,
    inv_hv: float,
    phase_rate: float,
    background: float,
    fixed_error: float,
    cascade: int,
    resolved_sigma: float,
    eve_fraction: float,
    eve_pz: float,
    o_slot: IntArray,
    o_a: IntArray,
    o_b: IntArray,
    o_abit: IntArray,
    o_bbit: IntArray,
    o_true: IntArray,
    o_click: IntArray,
    o_time: FloatArray,
) -> tuple[int, int]:
    """Event-skipping pulses; per event: bases, bits, clicks of both sides, emission time."""
    n = 0
    cap = len(o_slot)
    last = len(cum) - 1
    pos = start
    ca = np.zeros(2, dtype=np.bool_)
    cb = np.zeros(2, dtype=np.bool_)
    while True:
        if n == cap:
            return pos, n
        u = 1.0 - uniform(s)
        gap = math.floor(math.log(u) / log_trivial)
        if gap >= end - pos:
            return end, n
        pos += int(gap)
        v = uniform(s)
        r = 0
        while r < last and v >= cum[r]:
            r += 1
        j, na_only, nb_only, noise_a, noise_b = (
            cols[r, 0],
            cols[r, 1],
            cols[r, 2],
            cols[r, 3],
            cols[r, 4],
        )
        a = 0 if uniform(s) < bias else 1
        b = 0 if uniform(s) < bias else 1
        ca[0] = False
        ca[1] = False
        cb[0] = False
        cb[1] = False
        t_first = -1.0
        for _ in range(j):
            t = -tau * math.log(1.0 - uniform(s)) if cascade else 0.0
            if t_first < 0:
                t_first = t
            if cascade:
                if uniform(s) < background:
                    err = 0.5
                elif a == 0:
                    err = (1.0 - math.exp(-t * inv_ss)) / 2.0
                else:
                    phase = phase_rate * t / tau
                    if resolved_sigma > 0.0:
                        # phase tracked from the tags: only the timing error remains
                        phase = phase_rate / tau * resolved_sigma * np.random.standard_normal()
                    elif resolved_sigma == 0.0 and phase_rate == 0.0:
                        phase = 0.0
                    err = (1.0 - math.exp(-t * (inv_ss + inv_hv)) * math.cos(phase)) / 2.0
            else:
                err = fixed_error
            ra = bit(s)
            flip = 1 if uniform(s) < err else 0
            rb = bit(s)
            if eve_fraction > 0.0 and uniform(s) < eve_fraction:
                e = 0 if uniform(s) < eve_pz else 1
                r_eve = (ra ^ flip) if e == a else bit(s)
                if b == e:
                    rb = r_eve
            elif a == b:
                rb = ra ^ flip
            if uniform(s) < e_m:
                ra = 1 - ra
            if uniform(s) < e_m:
                rb = 1 - rb
            if e_channel > 0.0 and uniform(s) < e_channel:
                rb = 1 - rb
            ca[ra] = True
            cb[rb] = True
        for _ in range(na_only):
            ca[bit(s)] = True
        for _ in range(nb_only):
            cb[bit(s)] = True
        clicked_a = ca[0] or ca[1] or noise_a == 1
        clicked_b = cb[0] or cb[1] or noise_b == 1
        ya = _side(s, ca, noise_a, p_both_a) if clicked_a else 0
        yb = _side(s, cb, noise_b, p_both_b) if clicked_b else 0
        o_slot[n] = pos
        o_a[n] = a
        o_b[n] = b
        o_abit[n] = ya
        o_bbit[n] = yb
        o_true[n] = (
            1 if (j == 1 and na_only == 0 and nb_only == 0 and noise_a == 0 and noise_b == 0) else 0
        )
        o_click[n] = (1 if clicked_a else 0) + (2 if clicked_b else 0)
        o_time[n] = max(t_first, 0.0)
        n += 1
        pos += 1
        if pos >= end:
            return end, n


def _noise_and_etas(link: Link, dist: FloatArray) -> tuple[float, float, float, float]:
    """(eta_A, eta_B, noise_A, noise_B) as :func:`qdnet.protocols.bbm92.expected` sets them: each
    arm's transmittance and its own background, dead time and afterpulsing as effective values."""
    eta_a, eta_b = arm_transmittances(link)
    detector = link.receiver.detector
    noise_a = detector.noise_probability(link.arm_background_rate_hz("a"))
    noise_b = detector.noise_probability(link.arm_background_rate_hz("b"))
    if detector.dead_time_ns > 0 or detector.afterpulse_probability > 0:
        n = np.arange(len(dist), dtype=np.float64)
        noise = max(noise_a, noise_b)
        single = float(np.dot(dist, 1 - (1 - noise) ** 2 * (1 - max(eta_a, eta_b)) ** n))
        factor = detector.dead_time_factor(single * link.repetition_rate_hz)
        eta_a, eta_b = eta_a * factor, eta_b * factor
        noise_a = min(1.0, noise_a + detector.afterpulse_probability * single / 2)
        noise_b = min(1.0, noise_b + detector.afterpulse_probability * single / 2)
    return eta_a, eta_b, noise_a, noise_b


def _double_click_probability(noise: float) -> float:
    """P(both detectors of a receiver have a noise click | at least one has)."""
    q = 1.0 - (1.0 - noise) ** 2
    return noise * noise / q if q > 0 else 0.0


def simulate_bbm92_result(
    link: Link,
    pulses: int,
    rng: np.random.Generator,
    *,
    attack: PairInterceptor | None = None,
    keep_records: bool = True,
    progress: Progress | None = None,
    seed: int | None = None,
    link_document: dict[str, Any] | None = None,
    chunk_pulses: int = CHUNK_PULSES,
    out: str | os.PathLike[str] | None = None,
) -> SimulationResult:
    """Simulate BBM92; see module docstring.

    Work and memory are per batch of events: with ``out`` the records and ``timetags.npz`` are
    streamed to that directory, with ``keep_records`` they are also gathered in memory."""
    source = link.source
    pulses = int(pulses)
    dist = pair_distribution(source, None)  # type: ignore[arg-type]
    eta_a, eta_b, noise_a, noise_b = _noise_and_etas(link, dist)
    weights, cols = _outcome_table(dist, eta_a, eta_b, noise_a, noise_b)
    p_event = float(weights.sum())
    cum = np.cumsum(weights) / p_event
    cum[-1] = 1.0
    log_trivial = math.log1p(-p_event)
    p_both_a, p_both_b = _double_click_probability(noise_a), _double_click_probability(noise_b)
    e_channel = 0.0 if link.polarisation is None else link.polarisation.photon_error()
    cascade = isinstance(source, EntangledPairSource)
    tau = source.exciton_lifetime_ns if cascade else 1.0  # type: ignore[union-attr]
    inv_ss = inv_hv = 0.0
    phase_rate = background = fixed = sigma = 0.0
    if isinstance(source, EntangledPairSource):
        inv_ss = (
            0.0 if source.spin_scattering_time_ns is None else 1.0 / source.spin_scattering_time_ns
        )
        inv_hv = (
            0.0 if source.cross_dephasing_time_ns is None else 1.0 / source.cross_dephasing_time_ns
        )
        phase_rate = source.phase_rate
        background = source.background_fraction
        if source.time_resolved:
            sigma = max(source.detector_time_resolution_ps * 1e-3, 1e-300)
    else:
        fixed = source.qber_z()  # type: ignore[union-attr]
    bias = link.protocol.basis_bias or 0.5
    fraction = attack.fraction if attack is not None else 0.0
    eve_pz = attack.eve_basis_z_probability if attack is not None else 0.5
    _kernel: Any = bbm92_kernel
    # Running totals; records and time tags go to ``out`` (streamed) and/or memory, batch by batch.
    totals = dict.fromkeys(
        ("events", "zz", "zz_errors", "xx", "xx_errors", "singles_a", "singles_b", "true"), 0
    )
    record_parts: list[tuple[NDArray[np.generic], ...]] = []
    tag_parts: list[tuple[FloatArray, FloatArray]] = []
    stream = RecordStream(out) if out is not None else None
    tag_stream = TagStream(out) if out is not None else None
    bufs: list[Any] = [np.empty(BUFFER, dtype=np.int64) for _ in range(7)]
    times = np.empty(BUFFER)
    header: dict[str, np.ndarray] = {}
    try:
        start = 0
        while start < pulses:
            length = min(chunk_pulses, pulses - start)
            words = rng.integers(0, 2**64 - 1, size=4, dtype=np.uint64, endpoint=True)
            seeder = np.random.Generator(np.random.PCG64(words))
            state = new_state(seeder)
            _seed_numba(int(seeder.integers(0, 2**31)))
            pos, end = start, start + length
            while pos < end:
                pos, n = _kernel(
                    state,
                    pos,
                    end,
                    log_trivial,
                    cum,
                    cols,
                    bias,
                    link.receiver.misalignment,
                    e_channel,
                    p_both_a,
                    p_both_b,
                    tau,
                    inv_ss,
                    inv_hv,
                    phase_rate,
                    background,
                    fixed,
                    1 if cascade else 0,
                    sigma,
                    fraction,
                    eve_pz,
                    *bufs,
                    times,
                )
                if n == 0:
                    continue
                # Every event is one pulse and tags stay inside their window: the coincidence
                # analysis of a batch is that of the whole run restricted to the batch.
                slot, a, b, abit, bbit, true, click = (buf[:n] for buf in bufs)
                tags = time_tags(link, slot, click, times[:n], seeder)
                header = {k: v for k, v in tags.items() if not k.endswith("_tag_ps")}
                coincidence_slot, _, _ = coincidences(link, tags)
                ev = np.searchsorted(slot, coincidence_slot)
                a_c, b_c = a[ev].astype(np.uint8), b[ev].astype(np.uint8)
                abit_c, bbit_c = abit[ev].astype(np.uint8), bbit[ev].astype(np.uint8)
                zz = (a_c == 0) & (b_c == 0)
                xx = (a_c == 1) & (b_c == 1)
                first = totals["events"]
                totals["events"] += len(ev)
                totals["zz"] += int(zz.sum())
                totals["zz_errors"] += int((abit_c[zz] != bbit_c[zz]).sum())
                totals["xx"] += int(xx.sum())
                totals["xx_errors"] += int((abit_c[xx] != bbit_c[xx]).sum())
                totals["singles_a"] += int(((click & 1) > 0).sum())
                totals["singles_b"] += int(((click & 2) > 0).sum())
                totals["true"] += int(true[ev].sum())
                batch = (
                    np.arange(first, first + len(ev), dtype=np.int64),
                    a_c,
                    abit_c,
                    np.zeros(len(ev), dtype=np.uint8),
                    b_c,
                    bbit_c,
                )
                if stream is not None and tag_stream is not None:
                    stream.append(batch)
                    tag_stream.append(tags["alice_tag_ps"], tags["bob_tag_ps"])
                if keep_records:
                    record_parts.append(batch)
                    tag_parts.append((tags["alice_tag_ps"], tags["bob_tag_ps"]))
            start += length
            if progress is not None:
                progress(start, pulses)
    except BaseException:
        for writer in (stream, tag_stream):
            if writer is not None:
                writer.abort()
        raise
    if not header:
        header = {
            k: v
            for k, v in time_tags(
                link, np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0), rng
            ).items()
            if not k.endswith("_tag_ps")
        }
    stats = RunStatistics(
        protocol="bbm92",
        intensities=(float(np.dot(np.arange(len(dist)), dist)),),
        pulses=(pulses,),
        detections=(totals["events"],),
        zz=(totals["zz"],),
        zz_errors=(totals["zz_errors"],),
        xx=(totals["xx"],),
        xx_errors=(totals["xx_errors"],),
        basis_bias=bias,
        multiphoton_probability=float(dist[2:].sum()),
        extra={
            "singles_alice": totals["singles_a"],
            "singles_bob": totals["singles_b"],
            "true_coincidences": totals["true"],
            "accidental_coincidences": totals["events"] - totals["true"],
        },
    )
    ex = expected(link)
    deviations = compare(stats, ex)
    for name, count, p in (
        ("singles_alice", stats.extra["singles_alice"], ex.single_click_probability_alice),
        ("singles_bob", stats.extra["singles_bob"], ex.single_click_probability_bob),
        ("true_coincidences", stats.extra["true_coincidences"], ex.true_coincidence_probability),
    ):
        deviations[name] = (count / pulses - p) / math.sqrt(max(p * (1 - p) / pulses, 1e-300))
    meta = RecordsMeta(
        protocol="bbm92",
        link_name=link.name,
        pulses=pulses,
        intensities=stats.intensities,
        pulses_per_intensity=(pulses,),
        basis_bias=bias,
        repetition_rate_hz=link.repetition_rate_hz,
        seed=seed,
        link=link_document or {},
    )
    if stream is not None and tag_stream is not None:
        tag_stream.finish(header)
        stream.finish(meta)
    records = None
    extra: dict[str, dict[str, np.ndarray]] = {}
    if keep_records:
        columns: list[Any] = [
            np.concatenate([p[i] for p in record_parts])
            if record_parts
            else np.zeros(0, np.int64 if i == 0 else np.uint8)
            for i in range(6)
        ]
        idx, a_c, abit_c, zeros, b_c, bbit_c = columns
        records = RawRecords(
            meta=meta,
            alice=PartyRecords(slot=idx, basis=a_c, bit=abit_c, intensity=zeros),
            bob=PartyRecords(slot=idx.copy(), basis=b_c, bit=bbit_c, intensity=zeros.copy()),
        )
        extra["timetags"] = {
            "alice_tag_ps": np.concatenate([t[0] for t in tag_parts]) if tag_parts else np.zeros(0),
            "bob_tag_ps": np.concatenate([t[1] for t in tag_parts]) if tag_parts else np.zeros(0),
            **header,
        }
    return SimulationResult(
        records=records,
        statistics=stats,
        expected=ex,
        deviation_sigma=deviations,
        verdict=verdict(stats, ex, link),
        extra_files=extra,
    )


@njit(cache=True)
def _seed_numba(value: int) -> None:  # pragma: no cover - compiled
    np.random.seed(value)


def time_tags(
    link: Link, slot: IntArray, click: IntArray, t_emit: FloatArray, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Time tags (ps) of both receivers for the events' clicks (see module docstring)."""
    period_ps = 1e12 / link.repetition_rate_hz
    window_ps = link.receiver.detector.window_ns * 1e3
    jitter = link.receiver.detector.jitter_ps
    length_km = getattr(link.channel, "length_km", 0.0)
    delay_ps = length_km * 1e3 / 2.0e8 * 1e12  # fibre group velocity ~ c/1.5
    position = link.protocol.source_position
    out: dict[str, np.ndarray] = {}
    for side, mask_bit, delay in (
        ("alice", 1, position * delay_ps),
        ("bob", 2, (1 - position) * delay_ps),
    ):
        sel = (click & mask_bit) > 0
        offset = np.minimum(t_emit[sel] * 1e3, 0.45 * window_ps)
        offset = offset + rng.normal(0.0, jitter, size=int(sel.sum())) if jitter > 0 else offset
        offset = np.clip(offset, -0.49 * window_ps, 0.49 * window_ps)
        out[f"{side}_tag_ps"] = (slot[sel] * period_ps + delay + offset).astype(np.float64)
        out[f"{side}_delay_ps"] = np.array([delay])
    out["period_ps"] = np.array([period_ps])
    out["window_ps"] = np.array([window_ps])
    return out


def coincidences(link: Link, tags: dict[str, np.ndarray]) -> tuple[IntArray, IntArray, IntArray]:
    """Windows with a tag on both sides: (pulse slot, index into Alice's tags, into Bob's)."""
    period = float(tags["period_ps"][0])
    slot_a = np.rint((tags["alice_tag_ps"] - tags["alice_delay_ps"][0]) / period).astype(np.int64)
    slot_b = np.rint((tags["bob_tag_ps"] - tags["bob_delay_ps"][0]) / period).astype(np.int64)
    common, ia, ib = np.intersect1d(slot_a, slot_b, assume_unique=True, return_indices=True)
    return common, ia.astype(np.int64), ib.astype(np.int64)
