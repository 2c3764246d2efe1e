"""Processes of a running network, named so that a recycled PID is never mistaken for one of them.

A process is recorded as its PID and its start time in clock ticks since boot (field 22 of
``/proc/PID/stat``, proc(5)); a PID whose start time differs is another process, and a zombie
(state ``Z``) counts as gone. Linux only, like the rest of ``qdnet network up``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass
from typing import Any


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            raw = handle.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ")".
    return raw[raw.rindex(")") + 2 :].split()


@dataclass(frozen=True)
class ProcessRef:
    """One process: PID and start time (clock ticks after boot)."""

    pid: int
    start_ticks: int

    @classmethod
    def of(cls, pid: int) -> ProcessRef:
        """The process running now as ``pid`` (``start_ticks`` -1 when it is already gone)."""
        fields = _stat_fields(pid)
        return cls(pid, int(fields[19]) if fields else -1)

    @classmethod
    def from_json(cls, raw: Any) -> ProcessRef:
        """From ``{"pid": ..., "start_ticks": ...}``."""
        return cls(int(raw["pid"]), int(raw["start_ticks"]))

    def to_json(self) -> dict[str, int]:
        """``{"pid": ..., "start_ticks": ...}``."""
        return {"pid": self.pid, "start_ticks": self.start_ticks}

    def alive(self) -> bool:
        """True while this very process runs (not a zombie, not a recycled PID)."""
        fields = _stat_fields(self.pid)
        return fields is not None and fields[0] != "Z" and int(fields[19]) == self.start_ticks

    def signal(self, signum: int) -> None:
        """Send ``signum`` if this process still runs."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)


def stop_processes(refs: list[ProcessRef], grace_s: float = 10.0) -> list[ProcessRef]:
    """SIGTERM every process, wait up to ``grace_s``, SIGKILL the rest; return those killed."""
    for ref in refs:
        ref.signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while any(ref.alive() for ref in refs) and time.monotonic() < deadline:
        time.sleep(0.05)
    killed = [ref for ref in refs if ref.alive()]
    for ref in killed:
        ref.signal(signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while any(ref.alive() for ref in killed) and time.monotonic() < deadline:
        time.sleep(0.05)
    return killed
