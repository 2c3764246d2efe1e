"""Records streamed to disk (issue 14): stored npz members written by the kernel's copy, CRC-32s
combined without reading the data back, archives every zip reader accepts."""

from __future__ import annotations

import os
import subprocess
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from qdnet.protocols.records import RecordsMeta, load_records
from qdnet.simulation import stream
from qdnet.simulation.stream import RecordStream, TagStream, crc32_combine, crc32_of_zeros


@pytest.mark.parametrize(("first", "second"), [(0, 0), (0, 7), (3, 0), (1000, 12345), (5, 1 << 20)])
def test_crc32_combine_is_the_crc_of_the_concatenation(first: int, second: int) -> None:
    a, b = os.urandom(first), os.urandom(second)
    assert crc32_combine(zlib.crc32(a), zlib.crc32(b), len(b)) == zlib.crc32(a + b)


@pytest.mark.parametrize("length", [0, 1, 3, 1 << 20, (1 << 20) + 17])
def test_crc32_of_zeros(length: int) -> None:
    assert crc32_of_zeros(length) == zlib.crc32(bytes(length))


def meta() -> RecordsMeta:
    return RecordsMeta(
        protocol="bbm92",
        link_name="test",
        pulses=10**6,
        intensities=(0.1,),
        pulses_per_intensity=(10**6,),
        basis_bias=0.5,
        repetition_rate_hz=1e8,
    )


def batches(rng: np.random.Generator, sizes: list[int]) -> list[tuple[np.ndarray, ...]]:
    out: list[tuple[np.ndarray, ...]] = []
    first = 0
    for n in sizes:
        slot = np.sort(rng.integers(first, first + 10 * n + 1, size=n))
        first += 10 * n + 1
        out.append((slot, *(rng.integers(0, 2, size=n).astype(np.uint8) for _ in range(5))))
    return out


def test_streamed_archives_are_valid_stored_npz(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    parts = batches(rng, [0, 1, 3000, 70_000, 5])
    records = RecordStream(tmp_path)
    buffer = [np.zeros(80_000, dtype=np.int64)] + [np.zeros(80_000, np.uint8) for _ in range(5)]
    for part in parts:
        # the caller reuses its buffers at once: the stream must have taken copies
        views = []
        for column, values in zip(buffer, part, strict=True):
            column[: len(values)] = values
            views.append(column[: len(values)])
        records.append(views)
        for column in buffer:
            column[:] = 7
    records.finish(meta())
    tags = TagStream(tmp_path)
    tag_parts = [(rng.normal(size=n), rng.normal(size=n + 1)) for n in (10, 0, 4000)]
    for alice, bob in tag_parts:
        tags.append(alice, bob)
    tags.finish({"period_ps": np.array([1e4]), "window_ps": np.array([1e3])})
    for name in ("alice.npz", "bob.npz", "timetags.npz"):
        with zipfile.ZipFile(tmp_path / name) as archive:
            assert archive.testzip() is None  # every member's CRC-32 checks
            assert {info.compress_type for info in archive.infolist()} == {zipfile.ZIP_STORED}
        unzip = subprocess.run(["unzip", "-tq", str(tmp_path / name)], capture_output=True)
        if unzip.returncode != 127:  # Info-ZIP reads the ZIP64 layout too where installed
            assert unzip.returncode == 0, unzip.stdout + unzip.stderr
    back = load_records(tmp_path)
    columns = [np.concatenate([p[i] for p in parts]) for i in range(6)]
    np.testing.assert_array_equal(back.alice.slot, columns[0])
    np.testing.assert_array_equal(back.bob.slot, columns[0])
    np.testing.assert_array_equal(back.alice.basis, columns[1])
    np.testing.assert_array_equal(back.alice.bit, columns[2])
    np.testing.assert_array_equal(back.alice.intensity, columns[3])
    np.testing.assert_array_equal(back.bob.basis, columns[4])
    np.testing.assert_array_equal(back.bob.bit, columns[5])
    assert not back.bob.intensity.any() and len(back.bob.intensity) == len(columns[0])
    with np.load(tmp_path / "timetags.npz") as data:
        np.testing.assert_array_equal(
            data["alice_tag_ps"], np.concatenate([a for a, _ in tag_parts])
        )
        np.testing.assert_array_equal(data["bob_tag_ps"], np.concatenate([b for _, b in tag_parts]))
        assert data["period_ps"][0] == 1e4
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "alice.npz",
        "bob.npz",
        "meta.json",
        "timetags.npz",
    ]


def test_copy_without_copy_file_range(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object) -> int:
        raise OSError(95, "Operation not supported")

    monkeypatch.setattr(stream.os, "copy_file_range", refuse)
    parts = batches(np.random.default_rng(2), [2000, 3])
    records = RecordStream(tmp_path)
    for part in parts:
        records.append(part)
    records.finish(meta())
    np.testing.assert_array_equal(
        load_records(tmp_path).alice.slot, np.concatenate([p[0] for p in parts])
    )


def test_a_failed_write_surfaces_and_abort_leaves_no_parts(tmp_path: Path) -> None:
    records = RecordStream(tmp_path)
    with pytest.raises(ValueError, match="column alice_basis has 2 rows, slot has 3"):
        records.append([np.arange(3), np.zeros(2, np.uint8), *(np.zeros(3, np.uint8),) * 4])
    records.abort()
    assert list(tmp_path.iterdir()) == []


def test_runs_with_deflated_members_still_load(tmp_path: Path) -> None:
    # Runs written before (deflate) keep format version 2: the zip method is not the format.
    parts = batches(np.random.default_rng(3), [500])
    records = RecordStream(tmp_path)
    records.append(parts[0])
    records.finish(meta())
    with np.load(tmp_path / "alice.npz") as data:
        kept = {name: data[name] for name in data.files}
    np.savez_compressed(tmp_path / "alice.npz", **kept)
    with zipfile.ZipFile(tmp_path / "alice.npz") as archive:
        assert archive.infolist()[0].compress_type == zipfile.ZIP_DEFLATED
    np.testing.assert_array_equal(load_records(tmp_path).alice.slot, parts[0][0])


def test_a_write_error_in_the_writer_thread_reaches_the_caller(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = RecordStream(tmp_path)
    parts = batches(np.random.default_rng(4), [100, 100, 100, 100])

    def full(data: object) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(records._files["alice_bit"], "write", full)
    with pytest.raises(OSError, match="No space left"):
        for part in parts:
            records.append(part)
        records.finish(meta())
    records.abort()
    assert list(tmp_path.iterdir()) == []  # no parts, no meta.json: the run is not complete
