"""Process identities of a running network: a recycled PID is not the recorded process."""

from __future__ import annotations

import subprocess
import sys

from qdnet.network.runtime.processes import ProcessRef, stop_processes


def test_process_ref_follows_one_process_and_stop_ends_it() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    ref = ProcessRef.of(proc.pid)
    assert ref.alive()
    assert ProcessRef.from_json(ref.to_json()) == ref
    # The same PID with another start time is another process (a recycled PID).
    assert not ProcessRef(ref.pid, ref.start_ticks + 1).alive()
    assert stop_processes([ref], grace_s=5.0) == []  # ended by SIGTERM, no SIGKILL needed
    assert not ref.alive()  # a zombie counts as gone before it is reaped
    proc.wait()
    assert not ref.alive()


def test_stop_processes_kills_what_ignores_sigterm() -> None:
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print(1, flush=True); time.sleep(60)"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline()
    ref = ProcessRef.of(proc.pid)
    assert stop_processes([ref], grace_s=0.3) == [ref]
    assert proc.wait(timeout=5) == -9
