"""Synthetic raw records for post-processing tests (seeded numpy Generator, no simulator)."""

from __future__ import annotations

import numpy as np

from qdnet.protocols.records import PartyRecords, RawRecords, RecordsMeta


def synthetic_records(
    rng: np.random.Generator,
    detections: int = 60_000,
    qber: float = 0.02,
    basis_bias: float = 0.8,
    protocol: str = "bb84",
    link_name: str = "test-link",
    pulses: int | None = None,
) -> RawRecords:
    """BB84-like records: i.i.d. bases with P(Z) = basis_bias on both sides, bit flips with
    probability ``qber`` where bases agree, random bits where they differ; decoy-bb84 uses three
    classes (0.5, 0.1, 0.0002) with the signal class most frequent."""
    if protocol == "decoy-bb84":
        intensities: tuple[float, ...] = (0.5, 0.1, 0.0002)
        weights = np.array([0.8, 0.15, 0.05])
    else:
        intensities = (0.5,)
        weights = np.array([1.0])
    total_pulses = pulses if pulses is not None else detections * 100
    per_class = tuple(int(total_pulses * w) for w in weights)
    slot = np.sort(rng.choice(total_pulses, size=detections, replace=False)).astype(np.int64)
    intensity = rng.choice(len(intensities), size=detections, p=weights).astype(np.uint8)
    a_basis = (rng.random(detections) >= basis_bias).astype(np.uint8)
    b_basis = (rng.random(detections) >= basis_bias).astype(np.uint8)
    a_bit = rng.integers(0, 2, detections, dtype=np.uint8)
    flips = (rng.random(detections) < qber).astype(np.uint8)
    b_bit = np.where(a_basis == b_basis, a_bit ^ flips, rng.integers(0, 2, detections)).astype(
        np.uint8
    )
    meta = RecordsMeta(
        protocol=protocol,
        link_name=link_name,
        pulses=total_pulses,
        intensities=intensities,
        pulses_per_intensity=per_class,
        basis_bias=basis_bias,
        repetition_rate_hz=1e9,
        seed=None,
        link={"source": {"kind": "weak-coherent"}} if protocol == "decoy-bb84" else {},
        multiphoton_probability=(1e-4,) if protocol == "bb84" else (),
    )
    return RawRecords(
        meta=meta,
        alice=PartyRecords(slot=slot, basis=a_basis, bit=a_bit, intensity=intensity),
        bob=PartyRecords(
            slot=slot.copy(), basis=b_basis, bit=b_bit, intensity=np.zeros_like(intensity)
        ),
    )
