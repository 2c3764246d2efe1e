"""Sifting: both parties announce bases per detected slot and keep the slots where they agree.

Bob announces the slots in which he detected something and his bases; Alice looks up her own
settings for those slots and answers with her bases and the intensity class of each (the decoy
classes are revealed only after detection, as in Lo, Ma, Chen, PRL 94, 230504 (2005)). For
BBM92 the "slot" is a coincidence index and Alice's basis is her measurement basis. Key basis =
Z (0): its sifted bits form the raw key; test basis = X (1): all its sifted bits are disclosed
for estimation (efficient BB84 with biased bases, Lo, Chau, Ardehali, J. Cryptology 18, 133
(2005)).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from qdnet.protocols.records import PartyRecords

KEY_BASIS = 0
TEST_BASIS = 1


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
) -> Sifted:
    agree = alice_basis == bob_basis
    key = agree & (alice_basis == KEY_BASIS)
    test = agree & (alice_basis == TEST_BASIS)
    return Sifted(
        key_bits=bits[key].astype(np.uint8),
        key_class=intensity[key].astype(np.uint8),
        test_bits=bits[test].astype(np.uint8),
        test_class=intensity[test].astype(np.uint8),
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
    records: PartyRecords, slots: NDArray[np.int64], bob_basis: NDArray[np.uint8]
) -> tuple[NDArray[np.uint8], NDArray[np.uint8], Sifted]:
    """Alice's answer (her bases and intensity classes for Bob's slots) and her sifted bits."""
    if len(bob_basis) != len(slots):
        raise SiftingError("slot and basis arrays differ in length")
    rows = alice_lookup(records, slots)
    basis = records.basis[rows].astype(np.uint8)
    intensity = records.intensity[rows].astype(np.uint8)
    return basis, intensity, _split(records.bit[rows], basis, bob_basis, intensity)


def bob_sift(
    records: PartyRecords, alice_basis: NDArray[np.uint8], intensity: NDArray[np.uint8]
) -> Sifted:
    """Bob's sifted bits given Alice's announced bases and classes (his own slot order)."""
    if len(alice_basis) != len(records) or len(intensity) != len(records):
        raise SiftingError("Alice's basis announcement does not match Bob's slots")
    return _split(records.bit, alice_basis, records.basis, intensity)
