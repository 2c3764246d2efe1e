"""Photon-level Monte Carlo of MDI-QKD (``qdnet simulate`` on a ``protocol.kind: mdi-bb84`` link).

The analytic model is :mod:`qdnet.protocols.mdi`; this module plays the experiment pulse pair by
pulse pair, with event skipping, and counts what the relay announces:

* **Choices.** Alice and Bob each pick an intensity class (lasers: signal, weak decoy, vacuum
  with probabilities ``class_probabilities``; dots: their one brightness), a basis (Z with
  ``protocol.basis_bias``) and a bit, and send the BB84 polarisation (Z: H/V, X: +-45 degrees);
  ``receiver.misalignment`` e_d as the analytic model reads it: for dots Bob's frame is rotated
  by asin(sqrt(e_d)); for lasers Bob's pulse leaves in the orthogonal state with probability e_d
  (the bit-flip model behind Xu et al. 2013's closed forms, Appendix B: E_Z Q_Z = e_d Q_C +
  (1 - e_d) Q_E).
* **Photons.** A dot emits 0, 1 or 2 photons (its photon-number distribution); each reaches the
  relay's detectors with eta. A phase-randomised coherent pulse is a Poisson mixture of photon
  numbers: given the two pulses' relative phase phi (uniform), each of the four detectors (cH,
  cV, dH, dV) receives an independent Poisson number of photons of mean |alpha_A,k + e^(i phi)
  alpha_B,k|^2, and these sum to eta_a mu_a + eta_b mu_b for every phi; so the total number of
  arriving photons is Poisson and, given it, the photons split multinomially over the detectors.
  Two dot photons, one from each side, are identical with probability V (their single-photon
  overlap) and leave the beam splitter as one two-photon state (probability |u_m v_n + u_n v_m|^2
  for detectors m != n, Hong-Ou-Mandel bunching for m = n), otherwise independently.
* **Clicks and announcements.** Every detector has dark/background clicks with p_d. The relay
  announces Psi- (cH dV or cV dH) or Psi+ (cH cV or dH dV) when exactly two detectors click
  (Lo, Curty and Qi, PRL 108, 130503 (2012)). Bob flips his bit after any Z success and after
  Psi- in X; an error is an announced pulse pair whose bits then differ.
* **Event skipping.** An announcement needs two "units" (arriving photons plus dark counts). The
  probability of at least two units in a pulse pair does not depend on the bases, bits or phase,
  so the pulse pairs with two or more units form a Bernoulli process (geometric gaps): only they
  are visited, each with its number of photons and darks drawn conditionally, and the pulse
  pairs in between are counted per class pair with one multinomial draw. The work scales with
  the announcements, not the pulses. Each candidate (class pair, units, bases, bits, relative
  phase, photons over the detectors, darks, announcement, error) is played by one Numba kernel
  (:func:`_candidate_kernel`, seeded from the caller's generator through
  :func:`qdnet.simulation.rng.new_state`: a seed reproduces the run); without records, the
  candidates whose bases differ are counted and skipped (they give no figure), and their number
  comes from one binomial draw instead of the geometric gaps.

The result gives, per class pair and basis (both parties in Z, or both in X), the gain and the
QBER with their standard errors and deviations from the analytic model in sigma (the tests
require agreement within 4).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
from numba import njit
from numpy.typing import NDArray

from qdnet.protocols import mdi as model
from qdnet.protocols.link import Link
from qdnet.protocols.records import PartyRecords, RawRecords, RecordsMeta, save_records
from qdnet.simulation.rng import U64, State, fair_bit, load, new_state, step, store, u53
from qdnet.simulation.sampling import Estimate, binomial_estimate
from qdnet.sources.laser import WeakCoherentSource
from qdnet.sources.quantum_dot import SinglePhotonSource

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

#: Default intensity-class probabilities of decoy lasers: signal, weak decoy, vacuum.
LASER_CLASS_PROBABILITIES = (0.7, 0.2, 0.1)
#: Largest number of photons that arrive together from two lasers in one pulse pair (the tail
#: beyond it is below 1e-15 for the mean photon numbers a link uses, checked at run time).
MAX_LASER_PHOTONS = 16
#: Announced pulse pairs buffered per kernel call when records are written (bounds memory).
CHUNK_CANDIDATES = 1 << 18
#: Candidates per kernel call without records (a call holds the interpreter: Ctrl-C waits for it).
KERNEL_CANDIDATES = 1 << 24
BASES = ("z", "x")
_TWO53 = 9007199254740992.0


@dataclass(frozen=True)
class MdiPlan:
    """What one run sends: intensities and their probabilities per party, basis bias."""

    intensities_a: tuple[float, ...]
    intensities_b: tuple[float, ...]
    class_probabilities: tuple[float, ...]
    basis_bias: float
    lasers: bool


@dataclass(frozen=True)
class ClassResult:
    """One class pair and basis: pulses, announcements, errors, and their comparison."""

    classes: tuple[int, int]
    basis: str
    pulses: int
    successes: int
    errors: int
    gain: Estimate
    qber: Estimate

    def to_json(self) -> dict[str, Any]:
        """JSON of one row."""
        return {
            "classes": list(self.classes),
            "basis": self.basis,
            "pulses": self.pulses,
            "successes": self.successes,
            "errors": self.errors,
            "gain": self.gain.to_json(),
            "qber": self.qber.to_json(),
        }


@dataclass(frozen=True)
class MdiMonteCarlo:
    """Counts and estimates of one MDI run."""

    plan: MdiPlan
    pulses: int
    rows: list[ClassResult]
    elapsed_s: float

    @property
    def max_deviation_sigma(self) -> float:
        """The largest |deviation| over every figure with data."""
        deviations = [abs(r.gain.deviation_sigma) for r in self.rows]
        deviations += [abs(r.qber.deviation_sigma) for r in self.rows]
        return max((d for d in deviations if not math.isnan(d)), default=0.0)

    def to_json(self) -> dict[str, Any]:
        """JSON of ``qdnet simulate MDI.yaml --json``."""
        return {
            "protocol": "mdi-bb84",
            "pulses": self.pulses,
            "intensities": {
                "alice": list(self.plan.intensities_a),
                "bob": list(self.plan.intensities_b),
            },
            "class_probabilities": list(self.plan.class_probabilities),
            "basis_bias": self.plan.basis_bias,
            "announcements": sum(r.successes for r in self.rows),
            "per_class": [r.to_json() for r in self.rows],
            "max_deviation_sigma": self.max_deviation_sigma,
            "elapsed_s": self.elapsed_s,
            "pulses_per_s": self.pulses / self.elapsed_s if self.elapsed_s > 0 else None,
        }


def plan_of(link: Link, class_probabilities: tuple[float, ...] | None = None) -> MdiPlan:
    """The intensities a run sends: the configured ones (keyrate optimises them; a run needs
    them written in the file)."""
    alice, bob = model.sources(link)
    bias = link.protocol.basis_bias or 0.5
    if isinstance(alice, WeakCoherentSource) and isinstance(bob, WeakCoherentSource):
        if alice.mean_photon_number is None or not alice.decoy_intensities:
            raise ValueError(
                "the mdi-bb84 Monte Carlo sends the configured intensities: set "
                "source.mean_photon_number and source.decoy_intensities (the weak decoy; the "
                "third class is vacuum)"
            )
        levels = (float(alice.mean_photon_number), float(alice.decoy_intensities[0]), 0.0)
        probs = class_probabilities or LASER_CLASS_PROBABILITIES
        if len(probs) != 3 or any(p < 0 for p in probs) or not math.isclose(sum(probs), 1.0):
            raise ValueError(f"class probabilities {probs} must be 3 numbers >= 0 summing to 1")
        return MdiPlan(levels, levels, tuple(probs), bias, lasers=True)
    assert isinstance(alice, SinglePhotonSource) and isinstance(bob, SinglePhotonSource)
    return MdiPlan(
        (float(alice.mean_photon_number),),
        (float(bob.mean_photon_number),),
        (1.0,),
        bias,
        lasers=False,
    )


def _units_table(plan: MdiPlan, view: model.RelayView, link: Link) -> FloatArray:
    """Per class pair: P(k_a, k_b arriving photons, d darks). Lasers: k_a is the total number of
    arriving photons and k_b unused (0); dots: each party's own. Shape (classes^2, K, K, 5)."""
    n_classes = len(plan.class_probabilities)
    darks = np.array(
        [math.comb(4, d) * view.noise**d * (1 - view.noise) ** (4 - d) for d in range(5)]
    )
    if plan.lasers:
        size = MAX_LASER_PHOTONS + 1
        table = np.zeros((n_classes * n_classes, size, 1, 5))
        for i in range(n_classes):
            for j in range(n_classes):
                mean = view.eta_a * plan.intensities_a[i] + view.eta_b * plan.intensities_b[j]
                k = np.arange(size)
                poisson = (
                    np.exp(-mean + k * math.log(mean) - _log_factorial(k))
                    if mean > 0
                    else ((k == 0).astype(float))
                )
                if 1.0 - poisson.sum() > 1e-13:
                    raise ValueError(
                        f"mean photon number {mean:.3g} at the relay is too high for the Monte Carlo"
                    )
                table[i * n_classes + j, :, 0, :] = np.outer(poisson, darks)
        return table
    alice, bob = model.sources(link)
    assert isinstance(alice, SinglePhotonSource) and isinstance(bob, SinglePhotonSource)
    emitted_a = alice.photon_number_distribution(plan.intensities_a[0])
    emitted_b = bob.photon_number_distribution(plan.intensities_b[0])
    return np.einsum(
        "a,b,d->abd",
        _emitted_arriving(emitted_a, view.eta_a),
        _emitted_arriving(emitted_b, view.eta_b),
        darks,
    )[None, :, :, :]


def _emitted_arriving(emitted: FloatArray, eta: float) -> FloatArray:
    """P(n emitted, k arriving) at index 3 n + k (n, k <= 2): the interference of a dot's photon
    depends on what it emitted (a lone survivor of two photons does not interfere, as in the
    analytic model), the clicks on what arrived."""
    size = model.MAX_DOT_PHOTONS + 1
    out = np.zeros(size * size)
    for n in range(size):
        for k in range(n + 1):
            out[size * n + k] = emitted[n] * math.comb(n, k) * eta**k * (1 - eta) ** (n - k)
    return out


def _log_factorial(k: IntArray) -> FloatArray:
    return np.array([math.lgamma(x + 1.0) for x in k])


def _candidate_tables(
    table: FloatArray, units_a: IntArray, units_b: IntArray
) -> tuple[FloatArray, FloatArray]:
    """Per class pair: P(candidate) (two or more units: arriving photons plus dark counts) and
    the conditional cumulative over the flattened (a, b, d) cells."""
    units = (units_a[:, None, None] + units_b[None, :, None] + np.arange(5)[None, None, :]).reshape(
        -1
    )
    flat = table.reshape(table.shape[0], -1)
    candidate = np.where(units >= 2, flat, 0.0)
    probability = candidate.sum(axis=1)
    cumulative = np.cumsum(candidate, axis=1) / np.where(probability > 0, probability, 1.0)[:, None]
    return probability, cumulative


def simulate_mdi(
    link: Link,
    pulses: int,
    rng: np.random.Generator,
    class_probabilities: tuple[float, ...] | None = None,
    out: str | os.PathLike[str] | None = None,
    seed: int | None = None,
    link_document: dict[str, Any] | None = None,
) -> MdiMonteCarlo:
    """Run ``pulses`` pulse pairs of an mdi-bb84 link and compare with the analytic model.

    With ``out``, the announced pulse pairs become records for ``qdnet distill``
    (:mod:`qdnet.protocols.records`: Bob's bits flipped as the announcements say, each party's
    intensity class in its own file).
    """
    if pulses < 1:
        raise ValueError(f"pulses must be >= 1, got {pulses}")
    started = time.perf_counter()
    plan = plan_of(link, class_probabilities)
    view = model.relay_view(link)
    assert link.mdi is not None
    table = _units_table(plan, view, link)
    if plan.lasers:
        units_a, units_b = np.arange(table.shape[1]), np.zeros(1, dtype=np.int64)
    else:
        units_a = units_b = np.arange(table.shape[1]) % (model.MAX_DOT_PHOTONS + 1)
    p_candidate, cumulative = _candidate_tables(table, units_a, units_b)
    n_classes = len(plan.class_probabilities)
    prior = np.outer(plan.class_probabilities, plan.class_probabilities).reshape(-1)
    total_candidate = float(prior @ p_candidate)
    counts = np.zeros((n_classes * n_classes, 2, 3), dtype=np.int64)  # pulses, successes, errors
    pair_candidates = np.zeros(n_classes * n_classes, dtype=np.int64)
    state = new_state(rng)
    if total_candidate > 0:
        pair_cum = np.cumsum(prior * p_candidate / total_candidate)
    else:
        pair_cum = np.ones(prior.size)
    rotation = 0.0 if plan.lasers else math.degrees(math.asin(math.sqrt(view.misalignment)))
    levels_a = np.repeat(np.asarray(plan.intensities_a) * view.eta_a, n_classes)
    levels_b = np.tile(np.asarray(plan.intensities_b) * view.eta_b, n_classes)
    # Probabilities scaled by 2**53: ``uniform < p`` is ``top 53 bits < p * 2**53`` exactly.
    amp_a, amp_b = _amplitudes(1.0, 0.0), _amplitudes(-1.0, rotation)
    tables = _KernelTables(
        pair_cum * _TWO53,
        cumulative * _TWO53,
        table.shape[2],
        n_classes,
        plan.lasers,
        plan.basis_bias * _TWO53,
        (view.misalignment if plan.lasers else 0.0) * _TWO53,
        link.mdi.photon_overlap * _TWO53,
        amp_a,
        amp_b,
        *_two_photon_table(amp_a, amp_b),
        levels_a,
        levels_b,
    )
    announced: list[_Buffers] = []
    if out is None:
        candidates = int(rng.binomial(pulses, total_candidate)) if total_candidate > 0 else 0
        none = _Buffers.empty(0)
        for start in range(0, candidates, KERNEL_CANDIDATES):  # back to Python now and then
            budget = min(KERNEL_CANDIDATES, candidates - start)
            tables.run(state, 0, pulses, 0.0, budget, none, counts, pair_candidates)
    else:
        candidates = 0
        pos = 0
        # 1 / ln(1 - P): geometric gaps (every pulse pair a candidate: gaps of 0).
        inv_log_gap = 1.0 / math.log1p(-total_candidate) if total_candidate < 1 else -1e-300
        buffers = _Buffers.empty(CHUNK_CANDIDATES)
        while pos < pulses and total_candidate > 0:
            pos, processed, written = tables.run(
                state, pos, pulses, inv_log_gap, 0, buffers, counts, pair_candidates
            )
            candidates += processed
            announced.append(buffers.head(written))
    # Pulse pairs with fewer than two units: never announced; counted per class pair and basis
    # pair (both Z, both X, different).
    rest = pulses - candidates
    quiet = prior * (1.0 - p_candidate)
    pair_pulses = pair_candidates.copy()
    if rest > 0 and quiet.sum() > 0:
        bias = plan.basis_bias
        bases = np.array([bias**2, (1 - bias) ** 2, 2 * bias * (1 - bias)])
        cells = np.outer(quiet / quiet.sum(), bases).reshape(-1)
        drawn = rng.multinomial(rest, cells / cells.sum()).reshape(-1, 3)
        counts[:, :, 0] += drawn[:, :2]
        pair_pulses += drawn.sum(axis=1)
    if out is not None:
        # Alice's pulses per intensity class (the decoy bound's class probabilities).
        class_pulses = pair_pulses.reshape(n_classes, n_classes).sum(axis=1)
        _write_records(out, link, plan, pulses, class_pulses, announced, seed, link_document)
    elapsed = time.perf_counter() - started
    return MdiMonteCarlo(plan, pulses, _rows(link, plan, counts), elapsed)


def _write_records(
    out: str | os.PathLike[str],
    link: Link,
    plan: MdiPlan,
    pulses: int,
    class_pulses: IntArray,
    announced: list[_Buffers],
    seed: int | None,
    link_document: dict[str, Any] | None,
) -> None:
    """Alice's and Bob's files of the announced pulse pairs (each with its own intensity class)
    and the public metadata (the intensities, Alice's pulses per class, both sources' P(n>=2)
    and P(n>=1) of the signal class)."""
    alice, bob = model.sources(link)
    rows = _Buffers.join(announced)
    figures = []
    for source, mu in ((alice, plan.intensities_a[0]), (bob, plan.intensities_b[0])):
        emitted = source.photon_number_distribution(mu)
        figures += [source.multiphoton_probability(mu), float(1.0 - emitted[0])]
    meta = RecordsMeta(
        protocol="mdi-bb84",
        link_name=link.name,
        pulses=pulses,
        intensities=plan.intensities_a,
        pulses_per_intensity=tuple(int(n) for n in class_pulses),
        basis_bias=plan.basis_bias,
        repetition_rate_hz=link.repetition_rate_hz,
        seed=seed,
        link=link_document or {},
        multiphoton_probability=tuple(figures),
    )
    save_records(
        RawRecords(
            meta=meta,
            alice=PartyRecords(rows.slot, rows.basis_a, rows.bit_a, rows.class_a),
            bob=PartyRecords(rows.slot, rows.basis_b, rows.bit_b, rows.class_b),
        ),
        out,
    )


# ---------------------------------------------------------------------------------------------
# the candidate kernel


@dataclass(frozen=True)
class _Buffers:
    """Announced pulse pairs: slot, Alice's basis and bit, Bob's basis and (flipped) bit, the
    intensity classes of Alice and Bob."""

    slot: IntArray
    basis_a: NDArray[np.uint8]
    bit_a: NDArray[np.uint8]
    basis_b: NDArray[np.uint8]
    bit_b: NDArray[np.uint8]
    class_a: NDArray[np.uint8]
    class_b: NDArray[np.uint8]

    @classmethod
    def empty(cls, size: int) -> _Buffers:
        """Buffers for ``size`` announcements."""
        small = [np.empty(size, dtype=np.uint8) for _ in range(6)]
        return cls(np.empty(size, dtype=np.int64), *small)

    def head(self, n: int) -> _Buffers:
        """A copy of the first ``n`` rows."""
        return _Buffers(*(getattr(self, f.name)[:n].copy() for f in fields(self)))

    @classmethod
    def join(cls, parts: list[_Buffers]) -> _Buffers:
        """The rows of every part, in order."""
        if not parts:
            return cls.empty(0)
        return cls(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(cls)))


@dataclass(frozen=True)
class _KernelTables:
    """What :func:`_candidate_kernel` reads (probabilities scaled by 2**53)."""

    pair_cum53: FloatArray
    cell_cum53: FloatArray
    size_b: int
    n_classes: int
    lasers: bool
    bias53: float
    flip53: float
    overlap53: float
    amp_a: FloatArray
    amp_b: FloatArray
    pair_out_cum: FloatArray
    pair_out_masks: IntArray
    mean_a: FloatArray
    mean_b: FloatArray

    def run(
        self,
        state: U64,
        pos: int,
        end: int,
        inv_log_gap: float,
        budget: int,
        out: _Buffers,
        counts: IntArray,
        pair_candidates: IntArray,
    ) -> tuple[int, int, int]:
        """One kernel call (its docstring): (next pulse, candidates, announcements written)."""
        result: tuple[int, int, int] = _candidate_kernel(
            state,
            pos,
            end,
            inv_log_gap,
            budget,
            self.pair_cum53,
            self.cell_cum53,
            self.size_b,
            self.n_classes,
            self.lasers,
            self.bias53,
            self.flip53,
            self.overlap53,
            self.amp_a,
            self.amp_b,
            self.pair_out_cum,
            self.pair_out_masks,
            self.mean_a,
            self.mean_b,
            out.slot,
            out.basis_a,
            out.bit_a,
            out.basis_b,
            out.bit_b,
            out.class_a,
            out.class_b,
            counts,
            pair_candidates,
        )
        return result


def _amplitudes(sign: float, rotation_deg: float) -> FloatArray:
    """Amplitudes over (cH, cV, dH, dV) of each BB84 state, row ``2 basis + bit``: the state's
    polarisation angle (Z: 0/90 degrees, X: 45/135) plus ``rotation_deg``, split by the beam
    splitter (``sign`` -1 for Bob's input port)."""
    out = np.empty((4, 4))
    for basis in range(2):
        for bit in range(2):
            angle = math.radians(45.0 * basis + 90.0 * bit + rotation_deg)
            c, s = math.cos(angle), math.sin(angle)
            out[2 * basis + bit] = np.array([c, s, sign * c, sign * s]) / math.sqrt(2.0)
    return out


def _two_photon_table(amp_a: FloatArray, amp_b: FloatArray) -> tuple[FloatArray, IntArray]:
    """Where two identical photons of states ``row_a`` and ``row_b`` leave the beam splitter:
    cumulative weights ``|u_m v_n + u_n v_m|^2`` (m < n) and ``2 (u_m v_m)^2`` (both in m) over the
    ten detector pairs, shape (4, 4, 10), and each pair's click mask (Hong, Ou, Mandel 1987)."""
    pairs = [(m, n) for m in range(4) for n in range(m, 4)]
    cumulative = np.empty((4, 4, len(pairs)))
    for row_a in range(4):
        for row_b in range(4):
            acc = 0.0
            for index, (m, n) in enumerate(pairs):
                x = amp_a[row_a, m] * amp_b[row_b, n]
                if m == n:
                    acc += 2.0 * x * x
                else:
                    y = x + amp_a[row_a, n] * amp_b[row_b, m]
                    acc += y * y
                cumulative[row_a, row_b, index] = acc
    masks = np.array([(1 << m) | (1 << n) for m, n in pairs], dtype=np.int64)
    return cumulative, masks


@njit(inline="always")
def _detector(st: State, weights: FloatArray) -> tuple[int, State]:  # pragma: no cover - compiled
    """One detector drawn from four unnormalised non-negative weights."""
    w, st = step(st)
    total = weights[0] + weights[1] + weights[2] + weights[3]
    v = u53(w) * (1.0 / _TWO53) * total
    det = 0
    acc = weights[0]
    while det < 3 and v >= acc:
        det += 1
        acc += weights[det]
    return det, st


@njit(cache=True, nogil=True)
def _candidate_kernel(  # pragma: no cover - compiled
    s: U64,
    pos: int,
    end: int,
    inv_log_gap: float,
    budget: int,
    pair_cum53: FloatArray,
    cell_cum53: FloatArray,
    size_b: int,
    n_classes: int,
    lasers: bool,
    bias53: float,
    flip53: float,
    overlap53: float,
    amp_a: FloatArray,
    amp_b: FloatArray,
    pair_out_cum: FloatArray,
    pair_out_masks: IntArray,
    mean_a: FloatArray,
    mean_b: FloatArray,
    o_slot: IntArray,
    o_basis_a: NDArray[np.uint8],
    o_bit_a: NDArray[np.uint8],
    o_basis_b: NDArray[np.uint8],
    o_bit_b: NDArray[np.uint8],
    o_class_a: NDArray[np.uint8],
    o_class_b: NDArray[np.uint8],
    counts: IntArray,
    pair_candidates: IntArray,
) -> tuple[int, int, int]:
    """Candidate pulse pairs (two or more units), one by one: class pair, units cell, bases,
    bits, photons over the detectors, dark counts, announcement, error (module docstring).

    Walking (``inv_log_gap`` < 0, ``1 / ln(1 - P_candidate)``): candidates at geometric gaps from
    ``pos`` to ``end``, each announced one written to the ``o_*`` buffers until they are full.
    Otherwise ``budget`` candidates without slots, those with different bases skipped (they
    count nowhere). Returns (next pulse, candidates processed, announcements written)."""
    walking = inv_log_gap < 0.0
    cap = len(o_slot)
    last_pair = len(pair_cum53) - 1
    cells = cell_cum53.shape[1]
    size = 3  # photons 0..MAX_DOT_PHOTONS per dot (emitted and arrived: index 3 n + k)
    weights = np.empty(4)
    processed = 0
    written = 0
    st = load(s)
    while True:
        if walking:
            if written == cap:
                break
            w, st = step(st)
            u = (_TWO53 - u53(w)) * (1.0 / _TWO53)
            gap = math.floor(math.log(u) * inv_log_gap)
            if gap >= end - pos:
                pos = end
                break
            pos += int(gap)
        elif processed == budget:
            break
        processed += 1
        w, st = step(st)
        v = u53(w)
        pair = 0
        while pair < last_pair and v >= pair_cum53[pair]:
            pair += 1
        pair_candidates[pair] += 1
        w, st = step(st)
        basis_a = 0 if u53(w) < bias53 else 1
        w, st = step(st)
        basis_b = 0 if u53(w) < bias53 else 1
        if not walking and basis_a != basis_b:
            continue
        bit_a, st = fair_bit(st)
        bit_b, st = fair_bit(st)
        # Units cell: binary search of the class pair's conditional cumulative.
        w, st = step(st)
        v = u53(w)
        lo, hi = 0, cells - 1
        while lo < hi:
            mid = (lo + hi) >> 1
            if cell_cum53[pair, mid] > v:
                hi = mid
            else:
                lo = mid + 1
        darks = lo % 5
        index_b = (lo // 5) % size_b
        index_a = lo // (5 * size_b)
        sent_b = bit_b
        if lasers:
            w, st = step(st)
            if u53(w) < flip53:  # Xu et al. 2013: Bob's pulse leaves in the orthogonal state
                sent_b ^= 1
        row_a = 2 * basis_a + bit_a
        row_b = 2 * basis_b + sent_b
        clicks = 0
        if lasers:
            photons = index_a
            if photons > 0:
                ma, mb = mean_a[pair], mean_b[pair]
                w, st = step(st)
                cross = 2.0 * math.sqrt(ma * mb) * math.cos(u53(w) * (2.0 * math.pi / _TWO53))
                for k in range(4):
                    x, y = amp_a[row_a, k], amp_b[row_b, k]
                    weights[k] = max(0.0, ma * x * x + mb * y * y + cross * x * y)
                for _ in range(photons):
                    det, st = _detector(st, weights)
                    clicks |= 1 << det
        else:
            k_a, k_b = index_a % size, index_b % size
            identical = False
            if index_a // size == 1 and index_b // size == 1 and k_a == 1 and k_b == 1:
                w, st = step(st)
                identical = u53(w) < overlap53
            if identical:
                # Two-photon output (_two_photon_table): one of the ten detector pairs.
                cum = pair_out_cum[row_a, row_b]
                w, st = step(st)
                v = u53(w) * (1.0 / _TWO53) * cum[9]
                chosen = 0
                while chosen < 9 and v >= cum[chosen]:
                    chosen += 1
                clicks |= pair_out_masks[chosen]
            else:
                for k in range(4):
                    weights[k] = amp_a[row_a, k] * amp_a[row_a, k]
                for _ in range(k_a):
                    det, st = _detector(st, weights)
                    clicks |= 1 << det
                for k in range(4):
                    weights[k] = amp_b[row_b, k] * amp_b[row_b, k]
                for _ in range(k_b):
                    det, st = _detector(st, weights)
                    clicks |= 1 << det
        # Dark counts on ``darks`` distinct detectors, chosen uniformly.
        taken = 0
        for j in range(darks):
            w, st = step(st)
            r = int(u53(w) * ((4 - j) / _TWO53))
            for det in range(4):
                if not (taken >> det) & 1:
                    if r == 0:
                        taken |= 1 << det
                        break
                    r -= 1
        clicks |= taken
        minus = clicks == 0b1001 or clicks == 0b0110
        plus = clicks == 0b0011 or clicks == 0b1100
        if basis_a == basis_b:
            same = bit_a == bit_b
            error = same if (basis_a == 0 or minus) else not same
            counts[pair, basis_a, 0] += 1
            if minus or plus:
                counts[pair, basis_a, 1] += 1
                if error:
                    counts[pair, basis_a, 2] += 1
        if walking:
            if minus or plus:
                # Bob's recorded bit: flipped after every Z success and after Psi- in X.
                flip = 1 if (basis_b == 0 or minus) else 0
                o_slot[written] = pos
                o_basis_a[written] = basis_a
                o_bit_a[written] = bit_a
                o_basis_b[written] = basis_b
                o_bit_b[written] = bit_b ^ flip
                o_class_a[written] = pair // n_classes
                o_class_b[written] = pair % n_classes
                written += 1
            pos += 1
            if pos >= end:
                break
    store(st, s)
    return pos, processed, written


def _rows(link: Link, plan: MdiPlan, counts: IntArray) -> list[ClassResult]:
    """Per class pair and basis: observed against the analytic gains."""
    n_classes = len(plan.class_probabilities)
    if plan.lasers:
        gains = model.decoy_gains(link, plan.intensities_a[0], plan.intensities_a[1])
        expected = {
            (i, j): (
                (gains.gain_z[(i, j)], gains.error_gain_z[(i, j)]),
                (gains.gain_x[(i, j)], gains.error_gain_x[(i, j)]),
            )
            for i in range(n_classes)
            for j in range(n_classes)
        }
    else:
        dot = model.dot_gains(link)
        expected = {(0, 0): ((dot.gain_z, dot.error_gain_z), (dot.gain_x, dot.error_gain_x))}
    rows = []
    for index in range(n_classes * n_classes):
        classes = (index // n_classes, index % n_classes)
        for slot, basis in enumerate(BASES):
            sent, successes, errors = (int(x) for x in counts[index, slot])
            gain, error_gain = (float(x) for x in expected[classes][slot])
            qber = error_gain / gain if gain > 0 else 0.5
            gain_estimate = binomial_estimate(successes, sent, gain)
            qber_estimate = binomial_estimate(errors, successes, qber)
            rows.append(
                ClassResult(classes, basis, sent, successes, errors, gain_estimate, qber_estimate)
            )
    return rows
