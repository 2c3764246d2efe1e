"""Atomic files: a failure leaves the old file and no temporary behind; modes are applied."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from qdnet.files import atomic_file, write_atomic


def test_write_replaces_the_file_with_its_mode(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "file.bin"
    write_atomic(target, b"old", 0o644)
    write_atomic(target, b"new", 0o600)
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in target.parent.iterdir()] == ["file.bin"]


def test_an_exception_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    write_atomic(target, b'{"v": 1}')
    with pytest.raises(RuntimeError), atomic_file(target, text=True) as handle:
        handle.write('{"v": 2, "half')
        raise RuntimeError("crash in the middle")
    assert target.read_bytes() == b'{"v": 1}'
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]
