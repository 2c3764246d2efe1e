"""Stream raw records to disk chunk by chunk, so a run's memory does not grow with its length.

:class:`RecordStream` appends each column of every batch of events to its own raw file in a hidden
work folder inside the run directory (``RUN/.parts-XXXX/``). :meth:`RecordStream.finish` then
writes ``alice.npz`` and ``bob.npz`` in the documented format of :mod:`qdnet.protocols.records`
(a zip of ``.npy`` members, deflate-compressed) by copying the raw files through in fixed-size
blocks, writes ``meta.json`` last (it marks a complete run; the seed goes to the private
``RUN/private/seed.json``, see :func:`qdnet.protocols.records.write_meta`) and removes the work
folder. Files are
written under temporary names and renamed, as :func:`qdnet.protocols.records.save_records` does, so
:func:`~qdnet.protocols.records.load_records` reads a streamed run exactly like a saved one.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

import numpy as np
from numpy.typing import NDArray

from qdnet.protocols.records import RecordsMeta, write_meta

#: Bytes copied per block when the parts are consolidated.
BLOCK = 1 << 22
#: Columns of a prepare-and-measure stream: (name, dtype).
PM_COLUMNS = (
    ("slot", np.int64),
    ("alice_basis", np.uint8),
    ("alice_bit", np.uint8),
    ("intensity", np.uint8),
    ("bob_basis", np.uint8),
    ("bob_bit", np.uint8),
)


class RecordStream:
    """Append-only column files for one run directory (see module docstring)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.work = Path(tempfile.mkdtemp(prefix=".parts-", dir=self.directory))
        self.rows = 0
        self._files: dict[str, BinaryIO] = {
            name: open(self.work / f"{name}.bin", "wb")  # noqa: SIM115 - closed in finish/abort
            for name, _ in PM_COLUMNS
        }

    def append(self, columns: Iterable[NDArray[np.generic]]) -> None:
        """Append one batch: arrays in the order of :data:`PM_COLUMNS`, all of one length."""
        arrays = list(columns)
        n = len(arrays[0])
        for (name, dtype), array in zip(PM_COLUMNS, arrays, strict=True):
            if len(array) != n:
                raise ValueError(f"column {name} has {len(array)} rows, slot has {n}")
            self._files[name].write(np.ascontiguousarray(array, dtype=dtype).tobytes())
        self.rows += n

    def finish(self, meta: RecordsMeta) -> Path:
        """Consolidate into ``alice.npz`` / ``bob.npz``, write ``meta.json``, drop the parts."""
        for handle in self._files.values():
            handle.close()
        n = self.rows
        parts = {name: self.work / f"{name}.bin" for name, _ in PM_COLUMNS}
        _write_npz(
            self.directory / "alice.npz",
            [
                ("slot", np.int64, n, parts["slot"]),
                ("basis", np.uint8, n, parts["alice_basis"]),
                ("bit", np.uint8, n, parts["alice_bit"]),
                ("intensity", np.uint8, n, parts["intensity"]),
            ],
        )
        _write_npz(
            self.directory / "bob.npz",
            [
                ("slot", np.int64, n, parts["slot"]),
                ("basis", np.uint8, n, parts["bob_basis"]),
                ("bit", np.uint8, n, parts["bob_bit"]),
                ("intensity", np.uint8, n, None),
            ],
        )
        shutil.rmtree(self.work, ignore_errors=True)
        write_meta(meta, self.directory)
        return self.directory

    def abort(self) -> None:
        """Close and remove the parts (after an error)."""
        for handle in self._files.values():
            handle.close()
        shutil.rmtree(self.work, ignore_errors=True)


def _write_npz(
    path: Path,
    members: list[tuple[str, type[np.generic], int, Path | None]],
    small: dict[str, NDArray[np.generic]] | None = None,
) -> None:
    """A compressed ``.npz`` whose members are copied from raw files (None: zeros), plus ``small``
    arrays written as they are."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with (
            os.fdopen(fd, "wb") as handle,
            zipfile.ZipFile(
                handle, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1, allowZip64=True
            ) as archive,
        ):
            for name, dtype, count, source in members:
                with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                    header = {
                        "descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                        "fortran_order": False,
                        "shape": (count,),
                    }
                    np.lib.format.write_array_header_2_0(member, header)
                    if source is None:
                        left = count * np.dtype(dtype).itemsize
                        zeros = bytes(min(left, BLOCK))
                        while left > 0:
                            member.write(zeros[: min(left, BLOCK)])
                            left -= min(left, BLOCK)
                    else:
                        with open(source, "rb") as raw:
                            shutil.copyfileobj(raw, member, BLOCK)
            for name, array in (small or {}).items():
                with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class TagStream:
    """Append-only time tags of both receivers, consolidated into ``RUN/timetags.npz``."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.work = Path(tempfile.mkdtemp(prefix=".tags-", dir=self.directory))
        self.rows = {"alice_tag_ps": 0, "bob_tag_ps": 0}
        self._files: dict[str, BinaryIO] = {
            name: open(self.work / f"{name}.bin", "wb")  # noqa: SIM115 - closed in finish/abort
            for name in self.rows
        }

    def append(self, alice_tag_ps: NDArray[np.float64], bob_tag_ps: NDArray[np.float64]) -> None:
        """Append one batch of each side's tags (ps)."""
        for name, tags in (("alice_tag_ps", alice_tag_ps), ("bob_tag_ps", bob_tag_ps)):
            self._files[name].write(np.ascontiguousarray(tags, dtype=np.float64).tobytes())
            self.rows[name] += len(tags)

    def finish(self, header: dict[str, NDArray[np.generic]]) -> Path:
        """Write ``timetags.npz``: the streamed tags plus the small ``header`` arrays."""
        for handle in self._files.values():
            handle.close()
        path = self.directory / "timetags.npz"
        _write_npz(
            path,
            [(name, np.float64, n, self.work / f"{name}.bin") for name, n in self.rows.items()],
            header,
        )
        shutil.rmtree(self.work, ignore_errors=True)
        return path

    def abort(self) -> None:
        """Close and remove the parts (after an error)."""
        for handle in self._files.values():
            handle.close()
        shutil.rmtree(self.work, ignore_errors=True)
