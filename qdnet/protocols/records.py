"""Raw records of a QKD run: what Alice prepared and what Bob measured, per detection slot.

On-disk format (a directory, format version 1)::

    RUN/meta.json   RecordsMeta as JSON (protocol, link name, pulses per intensity class, ...)
    RUN/alice.npz   slot (int64), basis (uint8), bit (uint8), intensity (uint8)
    RUN/bob.npz     slot (int64), basis (uint8), bit (uint8), intensity (uint8, all zero)

``slot`` identifies a detection event both parties can name publicly: the pulse index for
prepare-and-measure protocols (BB84, decoy BB84) and the coincidence index for BBM92. Bob's file
holds every slot in which he registered a (possibly squashed double) click. Alice's file holds her
settings for exactly those slots: the list of detected slots is the first public message of
sifting, so storing the rest of her 1e10 pulses would only waste disk. Bases: 0 = Z (H/V),
1 = X (D/A). Intensity: index into ``RecordsMeta.intensities`` (0 = signal).
An endpoint loads only its own file with :func:`load_party_records`.

Optional files. A BBM92 run written by ``qdnet simulate --out`` (:mod:`qdnet.simulation.entangled`)
also holds the raw time tags its coincidence analysis started from::

    RUN/timetags.npz   alice_tag_ps (float64)   every click of Alice's receiver, in ps
                       bob_tag_ps (float64)     every click of Bob's receiver, in ps
                       alice_delay_ps, bob_delay_ps (float64, one value each): fibre delay of each arm
                       period_ps (float64, one value): pulse period, 1e12 / repetition rate
                       window_ps (float64, one value): detection window

A tag is ``slot x period_ps + delay + offset``: the offset is the first pair's emission time (zero
for a click without a photon pair), capped at 0.45 window, plus Gaussian jitter, clipped to within
half a window. The pulse of a tag is
``rint((tag - delay) / period_ps)``; the windows holding tags on both sides are the coincidences
whose settings ``alice.npz`` / ``bob.npz`` list, in pulse order (there ``slot`` is the coincidence
index). Loaders ignore files they do not know, so the optional file leaves format version 1 as is.
Large prepare-and-measure runs are streamed to the same two ``.npz`` files batch by batch
(:mod:`qdnet.simulation.stream`); they load like any other run.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

RECORDS_FORMAT_VERSION = 1
Party = Literal["alice", "bob"]


@dataclass(frozen=True)
class RecordsMeta:
    """Public facts of a run that both endpoints know."""

    protocol: str
    link_name: str
    pulses: int
    intensities: tuple[float, ...]
    pulses_per_intensity: tuple[int, ...]
    basis_bias: float
    repetition_rate_hz: float
    seed: int | None = None
    link: dict[str, Any] = field(default_factory=dict)
    format_version: int = RECORDS_FORMAT_VERSION
    #: Alice's characterised P(n>=2) per intensity class (prepare-and-measure; empty for BBM92).
    multiphoton_probability: tuple[float, ...] = ()


@dataclass(frozen=True)
class PartyRecords:
    """One party's per-slot record, as parallel arrays of equal length."""

    slot: NDArray[np.int64]
    basis: NDArray[np.uint8]
    bit: NDArray[np.uint8]
    intensity: NDArray[np.uint8]

    def __post_init__(self) -> None:
        n = len(self.slot)
        for name in ("basis", "bit", "intensity"):
            if len(getattr(self, name)) != n:
                raise ValueError(
                    f"PartyRecords.{name} has {len(getattr(self, name))} rows, slot has {n}"
                )

    def __len__(self) -> int:
        return len(self.slot)


@dataclass(frozen=True)
class RawRecords:
    """Both parties' records of one run plus the public metadata."""

    meta: RecordsMeta
    alice: PartyRecords
    bob: PartyRecords


def _atomic_write_bytes(path: Path, payload: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _party_to_npz(records: PartyRecords, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez_compressed(
                handle,
                slot=records.slot.astype(np.int64, copy=False),
                basis=records.basis.astype(np.uint8, copy=False),
                bit=records.bit.astype(np.uint8, copy=False),
                intensity=records.intensity.astype(np.uint8, copy=False),
            )
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_records(records: RawRecords, directory: str | os.PathLike[str]) -> Path:
    """Write a run atomically file by file; ``meta.json`` is written last and marks completion."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    _party_to_npz(records.alice, out / "alice.npz")
    _party_to_npz(records.bob, out / "bob.npz")
    meta = asdict(records.meta)
    _atomic_write_bytes(out / "meta.json", json.dumps(meta, indent=2).encode())
    return out


def load_meta(directory: str | os.PathLike[str]) -> RecordsMeta:
    """Read the public metadata of a run; raises ``ValueError`` naming what is wrong."""
    path = Path(directory) / "meta.json"
    if not path.is_file():
        raise ValueError(f"{directory}: no meta.json; not a qdnet records directory")
    raw = json.loads(path.read_text())
    version = raw.get("format_version")
    if version != RECORDS_FORMAT_VERSION:
        raise ValueError(f"{path}: format_version {version!r}, expected {RECORDS_FORMAT_VERSION}")
    raw["intensities"] = tuple(raw["intensities"])
    raw["pulses_per_intensity"] = tuple(raw["pulses_per_intensity"])
    raw["multiphoton_probability"] = tuple(raw.get("multiphoton_probability", ()))
    return RecordsMeta(**raw)


def load_party_records(directory: str | os.PathLike[str], party: Party) -> PartyRecords:
    """Load one endpoint's own records (an endpoint never opens its peer's file)."""
    path = Path(directory) / f"{party}.npz"
    if not path.is_file():
        raise ValueError(f"{directory}: missing {party}.npz")
    with np.load(path) as data:
        return PartyRecords(
            slot=data["slot"].astype(np.int64),
            basis=data["basis"].astype(np.uint8),
            bit=data["bit"].astype(np.uint8),
            intensity=data["intensity"].astype(np.uint8),
        )


def load_records(directory: str | os.PathLike[str]) -> RawRecords:
    """Load a whole run (for analysis and tests; endpoints use :func:`load_party_records`)."""
    return RawRecords(
        meta=load_meta(directory),
        alice=load_party_records(directory, "alice"),
        bob=load_party_records(directory, "bob"),
    )
