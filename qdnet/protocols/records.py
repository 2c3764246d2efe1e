"""Raw records of a QKD run: what Alice prepared and what Bob measured, per detection slot.

On-disk format (a directory, format version 2)::

    RUN/meta.json          RecordsMeta as JSON (protocol, link name, pulses per intensity
                           class, ..., ``simulated``): public, both endpoints read it
    RUN/alice.npz          slot (int64), basis (uint8), bit (uint8), intensity (uint8)
    RUN/bob.npz            slot (int64), basis (uint8), bit (uint8), intensity (uint8, all zero
                           but for mdi-bb84: Bob's own class)
    RUN/private/seed.json  {"seed": 7} for a simulated run (mode 0600; never in meta.json:
                           re-simulating with it reproduces Alice's records bit for bit)

Each ``.npz`` is a zip of ``.npy`` members (NumPy's ``savez`` layout) whose members qdnet writes
*stored*, uncompressed (22 bytes per detection over the two files; deflate cut that to ~4.6 but
took ~80 % of a bright link's run time); a reader accepts deflated members as well (runs written
before, or re-packed with ``np.savez_compressed``): the arrays, not the zip method, are the
format. Version 1 kept the seed in ``meta.json``; such runs are refused (re-simulate them).
``simulated`` is true for Monte Carlo runs: keys distilled from them are labelled, since anyone
holding the seed can recompute them. Loading is strict: a missing or unknown ``meta.json``
field, a wrong type, an unreadable ``.npz`` or a missing array is a ``ValueError`` that names
the file and the problem.

``slot`` identifies a detection event both parties can name publicly: the pulse index for
prepare-and-measure protocols (BB84, decoy BB84), the coincidence index for BBM92, and for MDI-QKD
(``mdi-bb84``) the index of a pulse pair the untrusted relay announced as a Bell-state success:
both files then hold every announced pulse pair, and Bob's bits are already flipped as the public
announcement says (after every Z success and after Psi- in X), so they compare with Alice's as in
BB84; each file's ``intensity`` is that party's own class (decoy lasers: 0 signal, 1 decoy,
2 vacuum, announced by both in sifting; ``pulses_per_intensity`` counts Alice's); and
``multiphoton_probability`` holds Alice's P(n>=2) and P(n>=1), then Bob's (of the signal class). Bob's file
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
index). Loaders ignore files they do not know, so the optional file leaves the format version as is.
Large runs are streamed to the same ``.npz`` files batch by batch (:mod:`qdnet.simulation.stream`,
written while the next batch is simulated); they load like any other run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from qdnet.files import atomic_file, write_atomic

RECORDS_FORMAT_VERSION = 2
#: mdi-bb84 runs publish four source figures in ``multiphoton_probability``: Alice's P(n>=2) and
#: P(n>=1), then Bob's (the tagged pairs of :func:`qdnet.security.mdi.tagged_pairs`).
MDI_SOURCE_FIGURES = 4
SEED_FILE = Path("private") / "seed.json"
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
    #: The simulation seed: private, written to ``RUN/private/seed.json``, never to meta.json.
    seed: int | None = None
    link: dict[str, Any] = field(default_factory=dict)
    format_version: int = RECORDS_FORMAT_VERSION
    #: Alice's characterised P(n>=2) per intensity class (prepare-and-measure; empty for BBM92).
    multiphoton_probability: tuple[float, ...] = ()
    #: True for Monte Carlo records (keys from them are not secret).
    simulated: bool = True

    def public(self) -> dict[str, Any]:
        """The public metadata: what ``meta.json`` holds (everything but the seed)."""
        doc = asdict(self)
        del doc["seed"]
        return doc

    def digest(self) -> str:
        """SHA-256 of the public metadata in canonical JSON (both endpoints compare it)."""
        canonical = json.dumps(self.public(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


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

    def digest(self) -> str:
        """SHA-256 of the records (to refuse distilling the same raw bits twice)."""
        h = hashlib.sha256(b"qdnet-records-v1")
        for arr in (self.slot, self.basis, self.bit, self.intensity):
            h.update(np.ascontiguousarray(arr).view(np.uint8).data)
        return h.hexdigest()


@dataclass(frozen=True)
class RawRecords:
    """Both parties' records of one run plus the public metadata."""

    meta: RecordsMeta
    alice: PartyRecords
    bob: PartyRecords


def _party_to_npz(records: PartyRecords, path: Path) -> None:
    with atomic_file(path, 0o600) as handle:
        np.savez(
            handle,
            slot=records.slot.astype(np.int64, copy=False),
            basis=records.basis.astype(np.uint8, copy=False),
            bit=records.bit.astype(np.uint8, copy=False),
            intensity=records.intensity.astype(np.uint8, copy=False),
        )


def save_records(records: RawRecords, directory: str | os.PathLike[str]) -> Path:
    """Write a run atomically file by file; ``meta.json`` is written last and marks completion."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    _party_to_npz(records.alice, out / "alice.npz")
    _party_to_npz(records.bob, out / "bob.npz")
    write_meta(records.meta, out)
    return out


def write_meta(meta: RecordsMeta, directory: str | os.PathLike[str]) -> None:
    """``meta.json`` (public) and, for a seeded run, ``private/seed.json`` (0600), atomically;
    meta.json last: it marks a complete run."""
    out = Path(directory)
    if meta.seed is not None:
        (out / SEED_FILE.parent).mkdir(mode=0o700, exist_ok=True)
        write_atomic(out / SEED_FILE, json.dumps({"seed": meta.seed}).encode(), 0o600)
    write_atomic(out / "meta.json", json.dumps(meta.public(), indent=2).encode(), 0o644)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


#: Type check of each public field: (test, expectation in words).
_META_FIELDS: dict[str, tuple[Any, str]] = {
    "protocol": (
        lambda v: v in ("bb84", "decoy-bb84", "bbm92", "mdi-bb84"),
        "bb84, decoy-bb84, bbm92 or mdi-bb84",
    ),
    "link_name": (lambda v: isinstance(v, str), "a string"),
    "pulses": (lambda v: type(v) is int and v > 0, "a positive integer"),
    "intensities": (
        lambda v: isinstance(v, list) and 0 < len(v) < 256 and all(_number(x) for x in v),
        "a list of 1..255 numbers",
    ),
    "pulses_per_intensity": (
        lambda v: isinstance(v, list) and all(type(x) is int and x >= 0 for x in v),
        "a list of non-negative integers",
    ),
    "basis_bias": (lambda v: _number(v) and 0 < v < 1, "a number in (0, 1)"),
    "repetition_rate_hz": (lambda v: _number(v) and v > 0, "a positive number"),
    "link": (lambda v: isinstance(v, dict), "an object"),
    "format_version": (lambda v: v == RECORDS_FORMAT_VERSION, f"{RECORDS_FORMAT_VERSION}"),
    "multiphoton_probability": (
        lambda v: isinstance(v, list) and all(_number(x) and 0 <= x <= 1 for x in v),
        "a list of probabilities",
    ),
    "simulated": (lambda v: isinstance(v, bool), "true or false"),
}


def load_meta(directory: str | os.PathLike[str]) -> RecordsMeta:
    """Read the public metadata of a run; raises ``ValueError`` naming the file and problem."""
    path = Path(directory) / "meta.json"
    if not path.is_file():
        raise ValueError(f"{directory}: no meta.json; not a qdnet records directory")
    try:
        raw = json.loads(path.read_bytes())
    except (ValueError, OSError) as exc:
        raise ValueError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a JSON object")
    version = raw.get("format_version")
    if version == 1:
        raise ValueError(
            f"{path}: format_version 1 published the simulation seed (anyone could recompute "
            "the key); re-create the run with qdnet simulate"
        )
    missing = sorted(set(_META_FIELDS) - set(raw))
    extra = sorted(set(raw) - set(_META_FIELDS))
    if missing:
        raise ValueError(f"{path}: missing field {missing[0]!r}")
    if extra:
        raise ValueError(f"{path}: unknown field {extra[0]!r}")
    for name, (test, expectation) in _META_FIELDS.items():
        if not test(raw[name]):
            raise ValueError(f"{path}: field {name!r} must be {expectation}, got {raw[name]!r}")
    if len(raw["pulses_per_intensity"]) != len(raw["intensities"]):
        raise ValueError(f"{path}: pulses_per_intensity and intensities differ in length")
    if raw["protocol"] == "bb84" and len(raw["multiphoton_probability"]) != len(raw["intensities"]):
        raise ValueError(
            f"{path}: multiphoton_probability must give the source's P(n>=2) for each of the "
            f"{len(raw['intensities'])} intensity classes (re-create the run with qdnet simulate)"
        )
    if raw["protocol"] == "mdi-bb84" and len(raw["multiphoton_probability"]) != MDI_SOURCE_FIGURES:
        raise ValueError(
            f"{path}: multiphoton_probability of an mdi-bb84 run must give Alice's P(n>=2), "
            "P(n>=1), then Bob's P(n>=2), P(n>=1) (re-create the run with qdnet simulate)"
        )
    raw["intensities"] = tuple(raw["intensities"])
    raw["pulses_per_intensity"] = tuple(raw["pulses_per_intensity"])
    raw["multiphoton_probability"] = tuple(raw["multiphoton_probability"])
    known = {f.name for f in fields(RecordsMeta)}
    return RecordsMeta(**{k: v for k, v in raw.items() if k in known})


def load_seed(directory: str | os.PathLike[str]) -> int | None:
    """The private simulation seed of a run, or None (not simulated here or no seed file)."""
    path = Path(directory) / SEED_FILE
    if not path.is_file():
        return None
    try:
        seed = json.loads(path.read_bytes())["seed"]
    except (ValueError, KeyError, TypeError, OSError) as exc:
        raise ValueError(f"{path}: unreadable seed file ({exc})") from None
    if type(seed) is not int:
        raise ValueError(f"{path}: seed must be an integer")
    return seed


_COLUMNS = {"slot": np.int64, "basis": np.uint8, "bit": np.uint8, "intensity": np.uint8}


def load_party_records(directory: str | os.PathLike[str], party: Party) -> PartyRecords:
    """Load one endpoint's own records (an endpoint never opens its peer's file).

    Raises ``ValueError`` naming the file for an unreadable archive, a missing array, a wrong
    dtype or shape, or columns of different lengths.
    """
    path = Path(directory) / f"{party}.npz"
    if not path.is_file():
        raise ValueError(f"{directory}: missing {party}.npz")
    columns: dict[str, NDArray[Any]] = {}
    try:
        with np.load(path, allow_pickle=False) as data:
            for name, dtype in _COLUMNS.items():
                if name not in data.files:
                    raise ValueError(f"{path}: missing array {name!r}")
                arr = data[name]
                if not isinstance(arr, np.ndarray):
                    raise ValueError(f"{path}: member {name!r} is not an array")
                if arr.ndim != 1 or arr.dtype.kind not in "iub":
                    raise ValueError(
                        f"{path}: array {name!r} must be 1-D {np.dtype(dtype).name}, "
                        f"got {arr.ndim}-D {arr.dtype}"
                    )
                columns[name] = arr.astype(dtype)
    except ValueError as exc:
        if str(exc).startswith(str(path)):
            raise
        raise ValueError(f"{path}: not a readable records archive ({exc})") from None
    except Exception as exc:  # zipfile, pickle guard, header parser: all name the file
        raise ValueError(f"{path}: not a readable records archive ({exc})") from None
    lengths = {name: len(arr) for name, arr in columns.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"{path}: arrays of different lengths {lengths}")
    return PartyRecords(**columns)


def load_records(directory: str | os.PathLike[str]) -> RawRecords:
    """Load a whole run with its private seed (for analysis and tests; an endpoint uses
    :func:`load_meta` and :func:`load_party_records`)."""
    return RawRecords(
        meta=dataclasses.replace(load_meta(directory), seed=load_seed(directory)),
        alice=load_party_records(directory, "alice"),
        bob=load_party_records(directory, "bob"),
    )
