"""Sifting: both parties announce bases per detected slot and keep the slots where they agree.

Bob announces the slots in which he detected something and his bases; Alice looks up her own
settings for those slots and answers with her bases and the intensity class of each (the decoy
classes are revealed only after detection, as in Lo, Ma, Chen, PRL 94, 230504 (2005)). For
BBM92 the "slot" is a coincidence index and Alice's basis is her measurement basis. Key basis =
Z (0): its sifted bits form the raw key; test basis = X (1): all its sifted bits are disclosed
for estimation (efficient BB84 with biased bases, Lo, Chau, Ardehali, J. Cryptology 18, 133
(2005)).

Decoy MDI-QKD (``mdi-bb84`` with several intensity classes) differs in two ways. Both parties
sent a pulse, so the estimation runs per class pair (i, j), index ``n i + j`` for n classes
(Lo, Curty, Qi, PRL 108, 130503 (2012)): Bob announces his class with his bases (the classes are
public once the relay has announced, as in decoy BB84) and Alice answers with hers. And the key
basis's error rate has nothing to do with the test basis's (in X, two coherent pulses err ~25 %
of the time whatever the channel), so a random sample of the key bits, chosen by Alice with a
fresh seed after Bob's announcement, is disclosed to estimate it before error correction
(:func:`key_sample`); the key-length function charges every disclosed key bit
(:mod:`qdnet.postprocessing.key_length`). Test classes are then ``c + n^2 b``: c the class pair,
b the basis (0: the key sample, 1: X).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from qdnet.protocols.records import PartyRecords, RecordsMeta

KEY_BASIS = 0
TEST_BASIS = 1
#: Decoy MDI-QKD: key bits disclosed to estimate the key basis's error rate: a fraction of them,
#: at most a fixed number (4096 give a QBER of 1 % within ~0.6 % at one standard error).
KEY_SAMPLE_FRACTION = 0.02
KEY_SAMPLE_MAX = 4096


def class_pairs(meta: RecordsMeta) -> int:
    """Intensity classes per party when both announce theirs (decoy MDI-QKD), else 0."""
    if meta.protocol == "mdi-bb84" and len(meta.intensities) > 1:
        return len(meta.intensities)
    return 0


def key_sample(seed: int, key_bits: int) -> NDArray[np.bool_]:
    """Which of ``key_bits`` key bits are disclosed (decoy MDI-QKD): a uniformly random subset of
    ``min(KEY_SAMPLE_MAX, KEY_SAMPLE_FRACTION key_bits)`` drawn from ``seed`` (both ends draw the
    same)."""
    size = min(KEY_SAMPLE_MAX, int(KEY_SAMPLE_FRACTION * key_bits))
    chosen = np.zeros(key_bits, dtype=bool)
    chosen[np.random.default_rng(seed).choice(key_bits, size=size, replace=False)] = True
    return chosen


@dataclass(frozen=True)
class Sifted:
    """One party's sifted bits in slot order, split into key (Z) and test (X) bits."""

    key_bits: NDArray[np.uint8]
    key_class: NDArray[np.uint8]
    test_bits: NDArray[np.uint8]
    test_class: NDArray[np.uint8]


class SiftingError(ValueError):
    """The peer announced slots this party has no record of, or inconsistent arrays."""


def _split(
    bits: NDArray[np.uint8],
    alice_basis: NDArray[np.uint8],
    bob_basis: NDArray[np.uint8],
    intensity: NDArray[np.uint8],
    pairs: tuple[NDArray[np.uint8], int, int] | None = None,
) -> Sifted:
    """Key and test bits; ``pairs`` (decoy MDI: Bob's classes, classes per party, the key
    sample's seed) makes the classes class pairs and moves the key sample to the test bits."""
    agree = alice_basis == bob_basis
    key = agree & (alice_basis == KEY_BASIS)
    test = agree & (alice_basis == TEST_BASIS)
    classes = intensity.astype(np.uint8)
    if pairs is not None:
        bob_class, n, seed = pairs
        classes = (intensity.astype(np.int64) * n + bob_class).astype(np.uint8)
        sample = np.zeros(len(bits), dtype=bool)
        sample[np.flatnonzero(key)[key_sample(seed, int(np.count_nonzero(key)))]] = True
        key &= ~sample
        test |= sample
        classes = np.where(sample | key, classes, classes + n * n).astype(np.uint8)
    return Sifted(
        key_bits=bits[key].astype(np.uint8),
        key_class=classes[key],
        test_bits=bits[test].astype(np.uint8),
        test_class=classes[test],
    )


def alice_lookup(records: PartyRecords, slots: NDArray[np.int64]) -> NDArray[np.int64]:
    """Row of Alice's records for each announced slot; raises :class:`SiftingError` if unknown."""
    order = np.argsort(records.slot, kind="stable")
    sorted_slots = records.slot[order]
    idx = np.searchsorted(sorted_slots, slots)
    idx = np.minimum(idx, len(sorted_slots) - 1) if len(sorted_slots) else idx
    if len(slots) and (len(sorted_slots) == 0 or not np.array_equal(sorted_slots[idx], slots)):
        raise SiftingError("peer announced slots that are not in Alice's records")
    rows = order[idx].astype(np.int64)
    seen = np.zeros(len(records), dtype=bool)
    seen[rows] = True
    if int(np.count_nonzero(seen)) != len(rows):
        raise SiftingError("peer announced duplicate slots")
    return rows


def alice_sift(
    records: PartyRecords,
    slots: NDArray[np.int64],
    bob_basis: NDArray[np.uint8],
    pairs: tuple[NDArray[np.uint8], int, int] | None = None,
) -> tuple[NDArray[np.uint8], NDArray[np.uint8], Sifted]:
    """Alice's answer (her bases and intensity classes for Bob's slots) and her sifted bits;
    ``pairs``: Bob's announced classes, classes per party and the key sample's seed (decoy MDI,
    module docstring)."""
    if len(bob_basis) != len(slots):
        raise SiftingError("slot and basis arrays differ in length")
    if pairs is not None and len(pairs[0]) != len(slots):
        raise SiftingError("slot and class arrays differ in length")
    if pairs is not None and len(slots) and int(pairs[0].max()) >= pairs[1]:
        raise SiftingError(f"peer announced an intensity class >= {pairs[1]}")
    rows = alice_lookup(records, slots)
    basis = records.basis[rows].astype(np.uint8)
    intensity = records.intensity[rows].astype(np.uint8)
    return basis, intensity, _split(records.bit[rows], basis, bob_basis, intensity, pairs)


def bob_sift(
    records: PartyRecords,
    alice_basis: NDArray[np.uint8],
    intensity: NDArray[np.uint8],
    pairs: tuple[int, int] | None = None,
) -> Sifted:
    """Bob's sifted bits given Alice's announced bases and classes (his own slot order);
    ``pairs``: classes per party and the key sample's seed (decoy MDI: his own classes are in
    his records)."""
    if len(alice_basis) != len(records) or len(intensity) != len(records):
        raise SiftingError("Alice's basis announcement does not match Bob's slots")
    full = None if pairs is None else (records.intensity, *pairs)
    return _split(records.bit, alice_basis, records.basis, intensity, full)
