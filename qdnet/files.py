"""Files written so that a crash leaves the old version or the new one, never half of one.

:func:`atomic_file` opens a temporary file beside the target; when the block ends without an
exception the data are flushed and fsynced, the file gets its mode and is renamed over the target,
and the folder is fsynced so the rename itself survives a power cut (POSIX ``rename`` is atomic).
On an exception the temporary file is deleted and the target is untouched. Used for key blocks,
pre-shared secrets and authentication pools, raw records and a running network's state.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


def fsync_directory(directory: Path) -> None:
    """Make a rename or a new file in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_file(path: Path, mode: int = 0o600, *, text: bool = False) -> Iterator[IO[Any]]:
    """A temporary file that becomes ``path`` (with ``mode``) when the block succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w" if text else "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_file`)."""
    with atomic_file(path, mode) as handle:
        handle.write(data)
