"""Which finite-key analysis ``qdnet distill`` applies to a run, by its protocol.

* ``bb84``, ``decoy-bb84``, ``bbm92``: :func:`qdnet.security.finite_key.secret_key_length`.
* ``mdi-bb84`` with a quantum-dot source at each end: :func:`qdnet.security.mdi.dot_key_length`
  (pulse pairs tagged when either dot may have sent two photons, bounded with the four source
  figures the run publishes: Alice's and Bob's P(n>=2) and P(n>=1)). The key-basis error count
  is not known before error correction; the bound takes every key bit as a possible error there
  (the vacuum-side bound then rests on the Chernoff term alone: conservative).
"""

from __future__ import annotations

from collections.abc import Callable

from qdnet.protocols.records import MDI_SOURCE_FIGURES, RecordsMeta
from qdnet.security import mdi
from qdnet.security.finite_key import KeyLength, ObservedCounts, secret_key_length

KeyLengthFn = Callable[[ObservedCounts, float, float, float], KeyLength]


def key_length_for(meta: RecordsMeta) -> KeyLengthFn:
    """The finite-key length function for the run ``meta`` describes."""
    if meta.protocol != "mdi-bb84":
        return secret_key_length
    figures = meta.multiphoton_probability
    if len(figures) != MDI_SOURCE_FIGURES or len(meta.intensities) != 1:
        raise ValueError(
            "mdi-bb84 records need one intensity class per party and Alice's and Bob's "
            "P(n>=2), P(n>=1) (quantum dots); decoy-laser MDI runs cannot be distilled yet"
        )
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
            key_errors=key,
            test_detections=float(sum(counts.test_detections)),
            test_errors=float(sum(counts.test_errors)),
        )
        return mdi.dot_key_length(observed, tagged, leak_ec_bits, eps_sec, eps_cor)

    return dot_pairs
