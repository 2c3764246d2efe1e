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
  the announcements, not the pulses.

The result gives, per class pair and basis (both parties in Z, or both in X), the gain and the
QBER with their standard errors and deviations from the analytic model in sigma (the tests
require agreement within 4).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from qdnet.protocols import mdi as model
from qdnet.protocols.link import Link
from qdnet.protocols.records import PartyRecords, RawRecords, RecordsMeta, save_records
from qdnet.simulation.sampling import Estimate, bernoulli_positions
from qdnet.sources.laser import WeakCoherentSource
from qdnet.sources.quantum_dot import SinglePhotonSource

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

#: Default intensity-class probabilities of decoy lasers: signal, weak decoy, vacuum.
LASER_CLASS_PROBABILITIES = (0.7, 0.2, 0.1)
#: Largest number of photons that arrive together from two lasers in one pulse pair (the tail
#: beyond it is below 1e-15 for the mean photon numbers a link uses, checked at run time).
MAX_LASER_PHOTONS = 16
#: Largest number of candidate pulse pairs handled in one chunk (bounds memory).
CHUNK_CANDIDATES = 1 << 18
BASES = ("z", "x")


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


def _shares(basis: IntArray, bit: IntArray, sign: float, rotation_deg: float) -> FloatArray:
    """Amplitudes of each pulse's polarisation over (cH, cV, dH, dV): shape (n, 4)."""
    angles = np.where(basis == 0, 0.0, 45.0) + 90.0 * bit + rotation_deg
    c, s = np.cos(np.radians(angles)), np.sin(np.radians(angles))
    return np.stack([c, s, sign * c, sign * s], axis=1) / math.sqrt(2.0)


def _draw_detector(rng: np.random.Generator, weights: FloatArray) -> IntArray:
    """One detector per row from unnormalised non-negative weights (n, 4)."""
    cumulative = np.cumsum(weights, axis=1)
    u = rng.random(weights.shape[0]) * cumulative[:, -1]
    return np.minimum((u[:, None] >= cumulative).sum(axis=1), 3).astype(np.int64)


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


def _cells(rng: np.random.Generator, cumulative: FloatArray, pair: IntArray) -> IntArray:
    """One (k_a, k_b, d) cell per candidate from its class pair's conditional cumulative."""
    u = rng.random(pair.size)
    cell = np.empty(pair.size, dtype=np.int64)
    for index in np.unique(pair):
        rows = np.flatnonzero(pair == index)
        cell[rows] = np.searchsorted(cumulative[index], u[rows], side="right")
    return np.minimum(cell, cumulative.shape[1] - 1)


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

    With ``out`` (quantum dots), the announced pulse pairs become records for ``qdnet distill``
    (:mod:`qdnet.protocols.records`: Bob's bits flipped as the announcements say).
    """
    if pulses < 1:
        raise ValueError(f"pulses must be >= 1, got {pulses}")
    started = time.perf_counter()
    plan = plan_of(link, class_probabilities)
    view = model.relay_view(link)
    assert link.mdi is not None
    overlap = link.mdi.photon_overlap
    rotation = math.degrees(math.asin(math.sqrt(view.misalignment)))
    table = _units_table(plan, view, link)
    if plan.lasers:
        units_a, units_b = np.arange(table.shape[1]), np.zeros(1, dtype=np.int64)
    else:
        units_a = units_b = np.arange(table.shape[1]) % (model.MAX_DOT_PHOTONS + 1)
    p_candidate, cumulative = _candidate_tables(table, units_a, units_b)
    n_classes = len(plan.class_probabilities)
    prior = np.outer(plan.class_probabilities, plan.class_probabilities).reshape(-1)
    total_candidate = float(prior @ p_candidate)
    # Candidate pulse pairs: a Bernoulli process (their slots only where records are written);
    # the rest counted per class pair at the end.
    if out is not None and plan.lasers:
        raise ValueError(
            "records of decoy-laser MDI runs are not written: distill has the quantum-dot MDI "
            "finite-key bound only (run without --out)"
        )
    slots = bernoulli_positions(rng, total_candidate, pulses) if out is not None else None
    if slots is not None:
        candidates = int(slots.size)
    else:
        candidates = int(rng.binomial(pulses, total_candidate)) if total_candidate > 0 else 0
    announced: list[IntArray] = []
    counts = np.zeros((n_classes * n_classes, 2, 3), dtype=np.int64)  # pulses, successes, errors
    size_b = table.shape[2]
    done = 0
    while done < candidates:
        n = min(CHUNK_CANDIDATES, candidates - done)
        chunk_slots = slots[done : done + n] if slots is not None else None
        done += n
        pair = rng.choice(prior.size, size=n, p=prior * p_candidate / total_candidate)
        cell = _cells(rng, cumulative, pair)
        darks = cell % 5
        index_b = (cell // 5) % size_b
        index_a = cell // (5 * size_b)
        basis_a = (rng.random(n) >= plan.basis_bias).astype(np.int64)
        basis_b = (rng.random(n) >= plan.basis_bias).astype(np.int64)
        bit_a = rng.integers(0, 2, size=n)
        bit_b = rng.integers(0, 2, size=n)
        u = _shares(basis_a, bit_a, 1.0, 0.0)
        if plan.lasers:
            # Xu et al. 2013's misalignment: Bob's pulse leaves in the orthogonal state with e_d.
            flipped = bit_b ^ (rng.random(n) < view.misalignment)
            v = _shares(basis_b, flipped, -1.0, 0.0)
        else:
            v = _shares(basis_b, bit_b, -1.0, rotation)
        clicks = np.zeros((n, 4), dtype=bool)
        if plan.lasers:
            _laser_photons(rng, plan, view, pair, n_classes, index_a, u, v, clicks)
        else:
            size = model.MAX_DOT_PHOTONS + 1
            single = (index_a // size == 1) & (index_b // size == 1)
            _dot_photons(rng, overlap, index_a % size, index_b % size, single, u, v, clicks)
        _dark_clicks(rng, darks, clicks)
        code = clicks @ np.array([1, 2, 4, 8])
        two = clicks.sum(axis=1) == 2
        minus = two & ((code == 0b1001) | (code == 0b0110))
        plus = two & ((code == 0b0011) | (code == 0b1100))
        same = bit_a == bit_b
        error = np.where(basis_a == 0, same, np.where(minus, same, ~same))
        matched = basis_a == basis_b
        success = (minus | plus) & matched
        slot = basis_a  # 0: both Z, 1: both X (where matched)
        np.add.at(counts, (pair[matched], slot[matched], 0), 1)
        np.add.at(counts, (pair[success], slot[success], 1), 1)
        np.add.at(counts, (pair[success & error], slot[success & error], 2), 1)
        if chunk_slots is not None:
            # Bob's recorded bit: flipped after every Z success and after Psi- in X.
            flip = np.where(basis_b == 0, True, minus)
            rows = minus | plus
            announced.append(
                np.stack(
                    [
                        chunk_slots[rows],
                        basis_a[rows],
                        bit_a[rows],
                        basis_b[rows],
                        (bit_b ^ flip)[rows],
                    ]
                )
            )
    # Pulse pairs with fewer than two units: never announced; counted per class pair and basis.
    rest = pulses - candidates
    quiet = prior * (1.0 - p_candidate)
    if rest > 0 and quiet.sum() > 0:
        basis_pair = np.array([plan.basis_bias**2, (1 - plan.basis_bias) ** 2])
        mismatch = 1.0 - basis_pair.sum()
        cells = np.concatenate([np.outer(quiet / quiet.sum(), basis_pair).reshape(-1), [0.0]])
        cells[-1] = mismatch
        cells = cells / cells.sum()
        drawn = rng.multinomial(rest, cells)
        counts[:, :, 0] += drawn[:-1].reshape(-1, 2)
    if out is not None:
        _write_records(out, link, plan, pulses, announced, seed, link_document)
    elapsed = time.perf_counter() - started
    return MdiMonteCarlo(plan, pulses, _rows(link, plan, counts), elapsed)


def _write_records(
    out: str | os.PathLike[str],
    link: Link,
    plan: MdiPlan,
    pulses: int,
    announced: list[IntArray],
    seed: int | None,
    link_document: dict[str, Any] | None,
) -> None:
    """Alice's and Bob's files of the announced pulse pairs and the public metadata."""
    alice, bob = model.sources(link)
    assert isinstance(alice, SinglePhotonSource) and isinstance(bob, SinglePhotonSource)
    columns = np.concatenate(announced, axis=1) if announced else np.zeros((5, 0), np.int64)
    figures = []
    for source, mu in ((alice, plan.intensities_a[0]), (bob, plan.intensities_b[0])):
        emitted = source.photon_number_distribution(mu)
        figures += [source.multiphoton_probability(mu), float(1.0 - emitted[0])]
    meta = RecordsMeta(
        protocol="mdi-bb84",
        link_name=link.name,
        pulses=pulses,
        intensities=(plan.intensities_a[0],),
        pulses_per_intensity=(pulses,),
        basis_bias=plan.basis_bias,
        repetition_rate_hz=link.repetition_rate_hz,
        seed=seed,
        link=link_document or {},
        multiphoton_probability=tuple(figures),
    )
    zeros = np.zeros(columns.shape[1], dtype=np.uint8)
    save_records(
        RawRecords(
            meta=meta,
            alice=PartyRecords(
                slot=columns[0].astype(np.int64),
                basis=columns[1].astype(np.uint8),
                bit=columns[2].astype(np.uint8),
                intensity=zeros,
            ),
            bob=PartyRecords(
                slot=columns[0].astype(np.int64),
                basis=columns[3].astype(np.uint8),
                bit=columns[4].astype(np.uint8),
                intensity=zeros,
            ),
        ),
        out,
    )


def _laser_photons(
    rng: np.random.Generator,
    plan: MdiPlan,
    view: model.RelayView,
    pair: IntArray,
    n_classes: int,
    photons: IntArray,
    u: FloatArray,
    v: FloatArray,
    clicks: NDArray[np.bool_],
) -> None:
    """Distribute each pulse pair's arriving photons over the detectors (random relative phase)."""
    mu_a = np.asarray(plan.intensities_a)[pair // n_classes] * view.eta_a
    mu_b = np.asarray(plan.intensities_b)[pair % n_classes] * view.eta_b
    phi = rng.random(pair.size) * 2.0 * math.pi
    cross = 2.0 * np.sqrt(mu_a * mu_b) * np.cos(phi)
    means = mu_a[:, None] * u * u + mu_b[:, None] * v * v + cross[:, None] * u * v
    means = np.maximum(means, 0.0)
    for j in range(int(photons.max(initial=0))):
        rows = np.flatnonzero(photons > j)
        clicks[rows, _draw_detector(rng, means[rows])] = True


def _dot_photons(
    rng: np.random.Generator,
    overlap: float,
    k_a: IntArray,
    k_b: IntArray,
    single: NDArray[np.bool_],
    u: FloatArray,
    v: FloatArray,
    clicks: NDArray[np.bool_],
) -> None:
    """Dot photons: when each dot emitted one photon and both arrive, they interfere with
    probability V (``single``: one emitted at each side); every other photon goes independently."""
    n = k_a.size
    identical = single & (k_a == 1) & (k_b == 1) & (rng.random(n) < overlap)
    rows = np.flatnonzero(identical)
    if rows.size:
        # Two-photon output: |u_m v_n + u_n v_m|^2 for m < n, 2 (u_m v_m)^2 for m = n.
        pairs = [(m, k) for m in range(4) for k in range(m, 4)]
        weights = np.stack(
            [
                2.0 * (u[rows, m] * v[rows, m]) ** 2
                if m == k
                else (u[rows, m] * v[rows, k] + u[rows, k] * v[rows, m]) ** 2
                for m, k in pairs
            ],
            axis=1,
        )
        cumulative = np.cumsum(weights, axis=1)
        draw = rng.random(rows.size) * cumulative[:, -1]
        index = np.minimum((draw[:, None] >= cumulative).sum(axis=1), len(pairs) - 1)
        first = np.array([m for m, _ in pairs])[index]
        second = np.array([k for _, k in pairs])[index]
        clicks[rows, first] = True
        clicks[rows, second] = True
    for count, amplitudes in ((k_a, u), (k_b, v)):
        for j in range(int(count.max(initial=0))):
            rows = np.flatnonzero((count > j) & ~identical)
            clicks[rows, _draw_detector(rng, amplitudes[rows] ** 2)] = True


def _dark_clicks(rng: np.random.Generator, darks: IntArray, clicks: NDArray[np.bool_]) -> None:
    """``darks`` dark counts on distinct detectors, chosen uniformly."""
    rows = np.flatnonzero(darks > 0)
    if rows.size == 0:
        return
    order = np.argsort(rng.random((rows.size, 4)), axis=1)
    for j in range(4):
        chosen = rows[darks[rows] > j]
        clicks[chosen, order[darks[rows] > j, j]] = True


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
            gain_estimate = Estimate(
                successes / sent if sent else math.nan,
                math.sqrt(gain * (1 - gain) / sent) if sent else math.nan,
                gain,
            )
            qber_estimate = Estimate(
                errors / successes if successes else math.nan,
                math.sqrt(qber * (1 - qber) / successes) if successes else math.nan,
                qber,
            )
            rows.append(
                ClassResult(classes, basis, sent, successes, errors, gain_estimate, qber_estimate)
            )
    return rows
