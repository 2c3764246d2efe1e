"""Start, watch and stop every process of a running network.

The supervisor is the ``qdnet network up`` process itself (foreground) or, with ``--detach``,
``python -m qdnet.network.runtime.supervisor DIR`` in a session of its own. It starts one KMS per
node (``qdnet kms serve``, :func:`qdnet.kms.link.spawn_kms`) and one loop per link
(:mod:`qdnet.network.runtime.linkloop`), records each in ``network.json``, waits until every KMS
answers (``state`` becomes ``running``), and on SIGTERM/SIGINT stops the link loops first (no block
is half-written: blocks are written atomically), then the KMSs, each with SIGTERM and, after a
grace period, SIGKILL. ``qdnet network down DIR`` signals the supervisor and then ends whatever
it left (a supervisor killed with SIGKILL leaves its children to ``down``; link loops also stop by
themselves when their parent is gone).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qdnet.network.runtime.processes import ProcessRef, stop_processes
from qdnet.network.runtime.state import (
    NETWORK_JSON,
    read_state,
    status_identity,
    write_json_atomic,
)

#: How long every KMS has to answer after its start (seconds; many processes share the CPUs).
START_TIMEOUT_S = 90.0
#: SIGTERM-to-SIGKILL grace of each process (seconds).
GRACE_S = 10.0
#: How long ``down`` waits for a supervisor's orderly shutdown before ending processes itself.
DOWN_WAIT_S = 2 * GRACE_S + 10.0


def _log(workdir: Path, message: str) -> None:
    stamp = time.strftime("%H:%M:%S")
    with open(workdir / "supervisor.log", "a") as handle:
        handle.write(f"{stamp} {message}\n")


class Supervisor:
    """The processes of one network folder (see the module docstring)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir.resolve()
        self.state = read_state(self.workdir)
        self.kms: dict[str, subprocess.Popen[bytes]] = {}
        self.links: dict[str, subprocess.Popen[bytes]] = {}
        self.stop_requested = threading.Event()

    def save(self) -> None:
        """Rewrite ``network.json``."""
        write_json_atomic(self.workdir / NETWORK_JSON, self.state)

    def request_stop(self, *_args: object) -> None:
        """Signal handler: stop soon."""
        self.stop_requested.set()

    def start(self) -> None:
        """Start every process and wait until each KMS answers (``state`` running)."""
        from qdnet.kms.link import spawn_kms, wait_until_serving
        from qdnet.kms.pki import PKI

        self.state["supervisor"] = ProcessRef.of(os.getpid()).to_json()
        for name, node in self.state["nodes"].items():
            proc = spawn_kms(node["settings"], node["log"])
            self.kms[name] = proc
            node["process"] = ProcessRef.of(proc.pid).to_json()
        self.save()
        for name, link in self.state["links"].items():
            with open(link["log"], "ab") as log:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "qdnet.network.runtime.linkloop", link["spec"]],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            self.links[name] = proc
            link["process"] = ProcessRef.of(proc.pid).to_json()
        self.save()
        _log(self.workdir, f"started {len(self.kms)} KMS and {len(self.links)} link loops")
        pki = PKI.at(Path(self.state["ca"]).parent)
        deadline = time.monotonic() + START_TIMEOUT_S
        for name, node in self.state["nodes"].items():
            sae, slave = status_identity(self.state, name)
            if self.kms[name].poll() is not None:
                raise RuntimeError(f"the KMS of node {name} exited; see {node['log']}")
            if self.stop_requested.is_set():
                raise RuntimeError("stopped while starting")
            wait_until_serving(
                node["kms_url"], pki, sae, slave, max(1.0, deadline - time.monotonic())
            )
        self.state["state"] = "running"
        self.save()
        _log(self.workdir, "every KMS answers: running")

    def watch(self, on_exit: Callable[[str], None] | None = None) -> None:
        """Wait until a stop is requested, noting processes that end early in the log."""
        reported: set[str] = set()
        while not self.stop_requested.wait(0.5):
            for kind, procs in (("KMS of node", self.kms), ("link loop", self.links)):
                for name, proc in procs.items():
                    code = proc.poll()
                    if code is not None and name not in reported:
                        reported.add(name)
                        message = f"the {kind} {name} exited with code {code}"
                        _log(self.workdir, message)
                        if on_exit is not None:
                            on_exit(message)

    def shutdown(self) -> None:
        """Stop link loops, then KMSs; ``state`` stopped."""
        self.state["state"] = "stopping"
        self.save()
        for label, group in (("link loops", self.links), ("KMS", self.kms)):
            start = time.monotonic()
            refs = [ProcessRef.of(p.pid) for p in group.values() if p.poll() is None]
            killed = stop_processes(refs, GRACE_S)
            for proc in group.values():
                proc.wait()
            _log(self.workdir, f"{label} stopped in {time.monotonic() - start:.1f} s")
            if killed:
                _log(self.workdir, f"killed after {GRACE_S} s: {[r.pid for r in killed]}")
        self.state["state"] = "stopped"
        self.save()
        _log(self.workdir, "stopped")


def serve(
    workdir: Path,
    on_ready: Callable[[dict[str, Any]], None] | None = None,
    on_exit: Callable[[str], None] | None = None,
) -> int:
    """Run the network of a prepared folder until SIGTERM/SIGINT (the supervisor's whole life);
    ``on_ready`` gets ``network.json`` once running, ``on_exit`` a line for each process that
    ends early (both are also in ``supervisor.log``)."""
    supervisor = Supervisor(workdir)
    previous = {
        sig: signal.signal(sig, supervisor.request_stop) for sig in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        try:
            supervisor.start()
        except (RuntimeError, TimeoutError) as error:
            _log(supervisor.workdir, f"start failed: {error}")
            raise
        if on_ready is not None:
            on_ready(supervisor.state)
        supervisor.watch(on_exit)
        return 0
    finally:
        supervisor.shutdown()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def detach(workdir: Path, timeout_s: float = START_TIMEOUT_S + 30.0) -> dict[str, Any]:
    """Start the supervisor in a session of its own; return ``network.json`` once running."""
    workdir = workdir.resolve()
    with open(workdir / "supervisor.log", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "qdnet.network.runtime.supervisor", str(workdir)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout_s
    while True:
        state = read_state(workdir)
        if state["state"] == "running":
            return state
        if proc.poll() is not None or time.monotonic() > deadline:
            if proc.poll() is None:
                proc.terminate()
                proc.wait()
            tail = (workdir / "supervisor.log").read_text(errors="replace").strip().splitlines()
            raise RuntimeError(
                "the network did not start: "
                + (tail[-1] if tail else "no log")
                + f" (see {log.name})"
            )
        time.sleep(0.1)


def down(workdir: Path) -> list[ProcessRef]:
    """Stop the network of ``workdir``; return the processes that were still running."""
    workdir = workdir.resolve()
    state = read_state(workdir)
    supervisor = ProcessRef.from_json(state["supervisor"]) if state.get("supervisor") else None
    refs = [
        ProcessRef.from_json(entry["process"])
        for group in ("links", "nodes")
        for entry in state[group].values()
        if entry.get("process")
    ]
    running = [r for r in ([supervisor] if supervisor else []) + refs if r.alive()]
    if supervisor is not None and supervisor.alive():
        supervisor.signal(signal.SIGTERM)
        deadline = time.monotonic() + DOWN_WAIT_S
        while supervisor.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        stop_processes([supervisor], GRACE_S)
    leftovers = [r for r in refs if r.alive()]
    stop_processes(leftovers, GRACE_S)
    state = read_state(workdir)
    if state["state"] != "stopped":
        state["state"] = "stopped"
        write_json_atomic(workdir / NETWORK_JSON, state)
    return running


def main(argv: list[str] | None = None) -> int:
    """``python -m qdnet.network.runtime.supervisor DIR`` (what ``up --detach`` starts)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m qdnet.network.runtime.supervisor DIR", file=sys.stderr)
        return 2
    try:
        return serve(Path(args[0]))
    except (RuntimeError, TimeoutError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
