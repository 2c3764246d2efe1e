"""Stream raw records to disk batch by batch, at the speed of the Monte Carlo kernel.

:class:`RecordStream` appends each column of every batch of events to its own raw file in a hidden
work folder inside the run directory (``RUN/.parts-XXXX/``). The writes and their CRC-32 run in a
background thread while the caller simulates the next batch (at most :data:`PENDING` batches wait,
so memory stays bounded). :meth:`RecordStream.finish` then writes ``alice.npz`` and ``bob.npz`` in
the documented format of :mod:`qdnet.protocols.records`: a zip of ``.npy`` members, *stored*
(uncompressed; deflate took ~80 % of a bright link's run time for ~4.6 bytes per detection instead
of 22). Each member's data is copied from its raw file by the kernel (``os.copy_file_range``, no
pass through Python), Bob's all-zero ``intensity`` column is a hole in the file, and each member's
CRC-32 is combined from the CRC of its ``.npy`` header and the CRC accumulated while streaming
(:func:`crc32_combine`), so no byte is read back. ``meta.json`` is written last (it marks a
complete run; the seed goes to the private ``RUN/private/seed.json``, see
:func:`qdnet.protocols.records.write_meta`) and the work folder is removed. Files are written under
temporary names and renamed, as :func:`qdnet.protocols.records.save_records` does, so
:func:`~qdnet.protocols.records.load_records` reads a streamed run exactly like a saved one.

Zip layout (PKWARE APPNOTE 6.3.10, Sec. 4.3 and 4.5.3): every entry is written with ZIP64 sizes
and offsets, so archives above 4 GiB need no special case.
"""

from __future__ import annotations

import functools
import io
import os
import shutil
import struct
import tempfile
import zlib
from collections import deque
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

import numpy as np
from numpy.typing import NDArray

from qdnet.protocols.records import RecordsMeta, write_meta

#: Batches handed to the writer thread and not yet written, at most.
PENDING = 2
#: Columns of a prepare-and-measure stream: (name, dtype).
Columns = tuple[tuple[str, type[np.generic]], ...]
PM_COLUMNS: Columns = (
    ("slot", np.int64),
    ("alice_basis", np.uint8),
    ("alice_bit", np.uint8),
    ("intensity", np.uint8),
    ("bob_basis", np.uint8),
    ("bob_bit", np.uint8),
)
#: Columns of a time-tag stream.
TAG_COLUMNS: Columns = (("alice_tag_ps", np.float64), ("bob_tag_ps", np.float64))

_CRC_POLYNOMIAL = 0xEDB88320  # reflected CRC-32 of zip (ISO 3309)
_ZIP64_MARK = 0xFFFFFFFF
_VERSION = 45  # 4.5: ZIP64
_UNIX = 3
_DOS_DATE = (1 << 5) | 1  # 1980-01-01, the zip epoch (runs are dated by meta.json)


def _gf2_times(matrix: list[int], vector: int) -> int:
    total, row = 0, 0
    while vector:
        if vector & 1:
            total ^= matrix[row]
        vector >>= 1
        row += 1
    return total


def _gf2_square(matrix: list[int]) -> list[int]:
    return [_gf2_times(matrix, matrix[n]) for n in range(32)]


@functools.cache
def _zero_operators() -> tuple[list[int], ...]:
    """GF(2) matrices that append 2^k zero bytes to a CRC-32 register, k = 0..63."""
    operator = [_CRC_POLYNOMIAL] + [1 << n for n in range(31)]  # one zero bit
    for _ in range(3):  # one zero byte
        operator = _gf2_square(operator)
    operators = [operator]
    for _ in range(63):
        operators.append(_gf2_square(operators[-1]))
    return tuple(operators)


def crc32_combine(crc1: int, crc2: int, length2: int) -> int:
    """CRC-32 of ``A + B`` from ``crc32(A)``, ``crc32(B)`` and ``len(B)``: the CRC is linear over
    GF(2), so appending ``len(B)`` zero bytes to A is a product of the cached matrices for the
    set bits of ``len(B)`` (zlib's ``crc32_combine``, M. Adler)."""
    operators = _zero_operators()
    bit = 0
    while length2 > 0:
        if length2 & 1:
            crc1 = _gf2_times(operators[bit], crc1)
        length2 >>= 1
        bit += 1
    return crc1 ^ crc2


def crc32_of_zeros(length: int) -> int:
    """CRC-32 of ``length`` zero bytes."""
    block = bytes(min(length, 1 << 20))
    crc = 0
    while length > 0:
        crc = zlib.crc32(block[: min(length, len(block))], crc)
        length -= len(block)
    return crc


def _npy_header(dtype: type[np.generic], count: int) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_2_0(
        buffer,
        {
            "descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
            "fortran_order": False,
            "shape": (count,),
        },
    )
    return buffer.getvalue()


class _Member:
    """One ``.npy`` member of a stored npz: a 1-D array whose data is a raw file, zeros or bytes."""

    def __init__(
        self,
        name: str,
        dtype: type[np.generic],
        count: int,
        *,
        source: Path | None = None,
        data_crc: int | None = None,
        array: NDArray[np.generic] | None = None,
    ) -> None:
        self.name = f"{name}.npy"
        if array is not None:  # a small array: the whole .npy goes out with the header
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.asanyarray(array), allow_pickle=False)
            self.header, self.data_length, data_crc = buffer.getvalue(), 0, 0
        else:
            self.header = _npy_header(dtype, count)
            self.data_length = count * np.dtype(dtype).itemsize
            if source is None:
                data_crc = crc32_of_zeros(self.data_length)
        self.source = source
        self.size = len(self.header) + self.data_length
        self.crc = crc32_combine(zlib.crc32(self.header), data_crc or 0, self.data_length)


def _copy_range(source: Path, target: BinaryIO, length: int) -> None:
    """Append ``length`` bytes of ``source`` to ``target`` in the kernel where it can."""
    with open(source, "rb") as raw:
        left = length
        try:
            while left > 0:
                done = os.copy_file_range(raw.fileno(), target.fileno(), left)
                if done == 0:
                    break
                left -= done
        except OSError:  # a file system without copy_file_range: copy through user space
            raw.seek(length - left)
            target.seek(0, os.SEEK_END)
            shutil.copyfileobj(raw, target, 1 << 22)
            left = 0
        if left:
            raise OSError(f"{source}: {left} bytes short of {length}")


def write_stored_npz(path: Path, members: list[_Member]) -> None:
    """Write a stored (uncompressed) ZIP64 npz of ``members`` atomically (temporary name, rename)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with open(fd, "wb", buffering=0) as handle:
            os.fchmod(handle.fileno(), 0o644)
            directory: list[bytes] = []
            for member in members:
                offset = handle.tell()
                name = member.name.encode()
                local_extra = struct.pack("<HHQQ", 1, 16, member.size, member.size)
                handle.write(
                    struct.pack(
                        "<4s2B4HL2L2H",
                        b"PK\x03\x04",
                        _VERSION,
                        0,
                        0,
                        0,
                        0,
                        _DOS_DATE,
                        member.crc,
                        _ZIP64_MARK,
                        _ZIP64_MARK,
                        len(name),
                        len(local_extra),
                    )
                    + name
                    + local_extra
                    + member.header
                )
                if member.source is not None:
                    _copy_range(member.source, handle, member.data_length)
                elif member.data_length:
                    end = handle.tell() + member.data_length
                    os.ftruncate(handle.fileno(), end)  # a hole: zeros that take no disk
                    handle.seek(end)
                central_extra = struct.pack("<HHQQQ", 1, 24, member.size, member.size, offset)
                directory.append(
                    struct.pack(
                        "<4s4B4HL2L5H2L",
                        b"PK\x01\x02",
                        _VERSION,
                        _UNIX,
                        _VERSION,
                        0,
                        0,
                        0,
                        0,
                        _DOS_DATE,
                        member.crc,
                        _ZIP64_MARK,
                        _ZIP64_MARK,
                        len(name),
                        len(central_extra),
                        0,
                        0,
                        0,
                        0o644 << 16,
                        _ZIP64_MARK,
                    )
                    + name
                    + central_extra
                )
            start = handle.tell()
            handle.write(b"".join(directory))
            size, end64 = handle.tell() - start, handle.tell()
            count = len(directory)
            handle.write(
                struct.pack(
                    "<4sQ2H2L4Q",
                    b"PK\x06\x06",
                    44,
                    _VERSION,
                    _VERSION,
                    0,
                    0,
                    count,
                    count,
                    size,
                    start,
                )
                + struct.pack("<4sLQL", b"PK\x06\x07", 0, end64, 1)
                + struct.pack(
                    "<4s4H2LH",
                    b"PK\x05\x06",
                    0,
                    0,
                    min(count, 0xFFFF),
                    min(count, 0xFFFF),
                    _ZIP64_MARK,
                    _ZIP64_MARK,
                    0,
                )
            )
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class _ColumnStream:
    """Raw column files in a hidden work folder, written (with their CRC-32) by a background
    thread while the caller goes on."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        columns: Columns,
        prefix: str,
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.work = Path(tempfile.mkdtemp(prefix=prefix, dir=self.directory))
        self.columns = columns
        self.rows = dict.fromkeys((name for name, _ in columns), 0)
        self.crc = dict.fromkeys((name for name, _ in columns), 0)
        self._files: dict[str, BinaryIO] = {
            name: open(self.work / f"{name}.bin", "wb", buffering=0)  # noqa: SIM115 - closed in _close
            for name, _ in columns
        }
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qdnet-records")
        self._pending: deque[Future[None]] = deque()

    def _submit(self, arrays: dict[str, NDArray[np.generic]]) -> None:
        """Queue one batch (arrays owned by the stream); wait while :data:`PENDING` are queued."""
        self._pending.append(self._writer.submit(self._write, arrays))
        while len(self._pending) > PENDING:
            self._pending.popleft().result()

    def _write(self, arrays: dict[str, NDArray[np.generic]]) -> None:
        for name, array in arrays.items():
            self._files[name].write(array.data)
            self.crc[name] = zlib.crc32(array.data, self.crc[name])
            self.rows[name] += len(array)

    @staticmethod
    def _own(dtype: type[np.generic], array: NDArray[np.generic]) -> NDArray[np.generic]:
        """A private contiguous copy (the caller reuses its buffers for the next batch)."""
        return np.array(array, dtype=dtype, copy=True, order="C")

    def _drain(self) -> None:
        while self._pending:
            self._pending.popleft().result()

    def _close(self) -> None:
        self._writer.shutdown(wait=True)
        for handle in self._files.values():
            handle.close()

    def _member(self, name: str, column: str, dtype: type[np.generic]) -> _Member:
        return _Member(
            name,
            dtype,
            self.rows[column],
            source=self.work / f"{column}.bin",
            data_crc=self.crc[column],
        )

    def abort(self) -> None:
        """Stop the writer, close and remove the parts (after an error)."""
        for future in self._pending:
            future.cancel()
        self._pending.clear()
        self._close()
        shutil.rmtree(self.work, ignore_errors=True)


class RecordStream(_ColumnStream):
    """Append-only column files for one run directory (see module docstring)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        super().__init__(directory, PM_COLUMNS, ".parts-")

    def append(self, columns: Iterable[NDArray[np.generic]]) -> None:
        """Append one batch: arrays in the order of :data:`PM_COLUMNS`, all of one length. The
        arrays are copied: the caller may reuse them at once."""
        arrays = list(columns)
        n = len(arrays[0])
        owned: dict[str, NDArray[np.generic]] = {}
        for (name, dtype), array in zip(PM_COLUMNS, arrays, strict=True):
            if len(array) != n:
                raise ValueError(f"column {name} has {len(array)} rows, slot has {n}")
            owned[name] = self._own(dtype, array)
        self._submit(owned)

    def finish(self, meta: RecordsMeta) -> Path:
        """Write ``alice.npz`` / ``bob.npz`` and ``meta.json``, drop the parts (also when a write
        fails: the error is raised and no ``meta.json`` marks the run complete)."""
        try:
            self._drain()
        except BaseException:
            self.abort()
            raise
        self._close()
        try:
            self._consolidate()
        finally:
            shutil.rmtree(self.work, ignore_errors=True)
        write_meta(meta, self.directory)
        return self.directory

    def _consolidate(self) -> None:
        n = self.rows["slot"]
        write_stored_npz(
            self.directory / "alice.npz",
            [
                self._member("slot", "slot", np.int64),
                self._member("basis", "alice_basis", np.uint8),
                self._member("bit", "alice_bit", np.uint8),
                self._member("intensity", "intensity", np.uint8),
            ],
        )
        write_stored_npz(
            self.directory / "bob.npz",
            [
                self._member("slot", "slot", np.int64),
                self._member("basis", "bob_basis", np.uint8),
                self._member("bit", "bob_bit", np.uint8),
                _Member("intensity", np.uint8, n),
            ],
        )


class TagStream(_ColumnStream):
    """Append-only time tags of both receivers, consolidated into ``RUN/timetags.npz``."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        super().__init__(directory, TAG_COLUMNS, ".tags-")

    def append(self, alice_tag_ps: NDArray[np.float64], bob_tag_ps: NDArray[np.float64]) -> None:
        """Append one batch of each side's tags (ps); the arrays are copied."""
        self._submit(
            {
                name: self._own(dtype, tags)
                for (name, dtype), tags in zip(TAG_COLUMNS, (alice_tag_ps, bob_tag_ps), strict=True)
            }
        )

    def finish(self, header: dict[str, NDArray[np.generic]]) -> Path:
        """Write ``timetags.npz``: the streamed tags plus the small ``header`` arrays (the parts are
        dropped also when a write fails)."""
        try:
            self._drain()
        except BaseException:
            self.abort()
            raise
        self._close()
        path = self.directory / "timetags.npz"
        try:
            write_stored_npz(
                path,
                [self._member(name, name, dtype) for name, dtype in TAG_COLUMNS]
                + [_Member(name, np.float64, 0, array=array) for name, array in header.items()],
            )
        finally:
            shutil.rmtree(self.work, ignore_errors=True)
        return path
