"""Which finite-key analysis ``qdnet distill`` applies to a run, by its protocol.

* ``bb84``, ``decoy-bb84``, ``bbm92``: :func:`qdnet.security.finite_key.secret_key_length`.
* ``mdi-bb84`` with a quantum-dot source at each end (one intensity class):
  :func:`qdnet.security.mdi.dot_key_length` (pulse pairs tagged when either dot may have sent
  two photons, bounded with the four source figures the run publishes: Alice's and Bob's P(n>=2)
  and P(n>=1)). The key basis's error count enters the bound on the silent-party pairs of that
  basis; before error correction it is unknown and every key bit counts as a possible error (the
  vacuum-side bound then rests on the Chernoff term alone: conservative); the final length uses
  the count error correction found (``key_errors``: Bob announces it, verification confirms it
  with failure probability eps_cor, and its log2(n + 1) bits are charged to the key).
* ``mdi-bb84`` with decoy lasers (intensity classes mu, nu, 0 at each end):
  :func:`qdnet.security.mdi.decoy_key_length` on the counts per class pair (i, j) the sifting
  gives (:mod:`qdnet.postprocessing.sifting`): the Z detections of each pair (key bits and
  disclosed key-sample bits), the X detections and errors; the class probabilities are Alice's
  pulses per class over all pulses (as :func:`~qdnet.security.finite_key.secret_key_length` takes
  them for decoy BB84). The bound's key is every Z detection; the key sample disclosed from it is
  charged bit for bit on top of error correction's leak: for classical X_D of d bits,
  H_min(X_K | E X_D) >= H_min(X_K X_D | E) - d (the chain rule of the smooth min-entropy for a
  classical register: Renner, PhD thesis, ETH Zurich 2005, Sec. 3.1), so the length formula with
  ``leak + d`` bounds what the kept bits X_K hold.
"""

from __future__ import annotations

from collections.abc import Callable

from qdnet.postprocessing.sifting import class_pairs
from qdnet.protocols.records import MDI_SOURCE_FIGURES, RecordsMeta
from qdnet.security import mdi
from qdnet.security.finite_key import KeyLength, ObservedCounts, secret_key_length

KeyLengthFn = Callable[[ObservedCounts, float, float, float], KeyLength]
#: Decoy MDI-QKD needs a signal, a weak decoy and vacuum at each end.
DECOY_CLASSES = 3


def key_length_for(meta: RecordsMeta, key_errors: int | None = None) -> KeyLengthFn:
    """The finite-key length function for the run ``meta`` describes; ``key_errors``: the key
    bits error correction corrected (None: not known yet; used by the quantum-dot MDI bound)."""
    if meta.protocol != "mdi-bb84":
        return secret_key_length
    if class_pairs(meta):
        return _decoy_pairs(meta)
    figures = meta.multiphoton_probability
    if len(figures) != MDI_SOURCE_FIGURES:
        raise ValueError("mdi-bb84 records of quantum dots need Alice's and Bob's P(n>=2), P(n>=1)")
    tagged = mdi.tagged_pairs(*figures)

    def dot_pairs(
        counts: ObservedCounts, leak_ec_bits: float, eps_sec: float, eps_cor: float
    ) -> KeyLength:
        if counts.basis_bias is None:
            raise ValueError("mdi-bb84 records need the basis bias P(Z)")
        key = float(sum(counts.key_detections))
        observed = mdi.DotCounts(
            pulses=float(sum(counts.pulses)),
            basis_bias=counts.basis_bias,
            key_detections=key,
            key_errors=key if key_errors is None else float(key_errors),
            test_detections=float(sum(counts.test_detections)),
            test_errors=float(sum(counts.test_errors)),
        )
        return mdi.dot_key_length(observed, tagged, leak_ec_bits, eps_sec, eps_cor)

    return dot_pairs


def _decoy_pairs(meta: RecordsMeta) -> KeyLengthFn:
    """Decoy MDI-QKD (module docstring): counts per (basis, class pair) as the estimation
    numbers them, index ``n^2 b + n i + j``."""
    n = len(meta.intensities)
    if n != DECOY_CLASSES or meta.intensities[2] != 0.0:
        raise ValueError(
            f"mdi-bb84 decoy records need intensity classes (signal, decoy, 0); got "
            f"{meta.intensities}"
        )
    mu, nu, vacuum = (float(k) for k in meta.intensities)
    low, high, zero = (k / meta.pulses for k in meta.pulses_per_intensity)
    pairs = n * n

    def by_pair(values: list[float]) -> dict[tuple[int, int], float]:
        return {(c // n, c % n): float(values[c]) for c in range(pairs)}

    def decoy_pairs(
        counts: ObservedCounts, leak_ec_bits: float, eps_sec: float, eps_cor: float
    ) -> KeyLength:
        if len(counts.key_detections) != 2 * pairs:
            raise ValueError(f"mdi-bb84 decoy counts need {2 * pairs} (basis, class pair) cells")
        key, test, errors = counts.key_detections, counts.test_detections, counts.test_errors
        disclosed = float(sum(test[:pairs]))
        observed = mdi.DecoyCounts(
            intensities=(mu, nu, vacuum),
            probabilities=(low, high, zero),
            key_detections=by_pair([key[c] + test[c] for c in range(pairs)]),
            test_detections=by_pair(list(test[pairs:])),
            test_errors=by_pair(list(errors[pairs:])),
        )
        result = mdi.decoy_key_length(observed, leak_ec_bits + disclosed, eps_sec, eps_cor)
        result.terms["key_sample_bits_disclosed"] = disclosed
        return result

    return decoy_pairs
