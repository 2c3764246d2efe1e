"""Real processes in two Linux network namespaces joined by a veth pair, and a KMS in each,
fed with keys distilled from a simulated quantum-dot link. Everything a test starts is stopped,
and every namespace deleted, by fixture finalizers even when the test fails.

Without root, network namespaces, /dev/net/tun or the programs, these tests skip with the
reason; with ``CI=true`` they fail instead (CI machines have all of them).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from qdnet.config import load_link_config
from qdnet.kms.pki import PKI
from qdnet.kms.service import open_store
from qdnet.kms.settings import KMSSettings, dump_settings, settings_from_dict
from qdnet.postprocessing.keyblock import KeyFolder
from qdnet.postprocessing.loopback import distill_loopback
from qdnet.postprocessing.session import SessionConfig
from qdnet.simulation.runner import simulate
from qdnet.transport.authentication import write_psk
from tests.conftest import EXAMPLES

UNDERLAY = ("10.201.0.1", "10.201.0.2")
"""Addresses of the two namespaces on the veth pair (also in the KME certificates)."""
KMS_SAE_PORT = 8443
KMS_PEER_PORT = 8444
QDNET = [sys.executable, "-c", "from qdnet.cli import app; app()"]


def unavailable(programs: tuple[str, ...]) -> str | None:
    """Why namespace tests cannot run here (None if they can)."""
    if sys.platform != "linux":
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "network namespaces need root"
    missing = [
        p
        for p in ("ip", *programs)
        if not (os.path.exists(p) if p.startswith("/") else shutil.which(p))
    ]
    if missing:
        return f"programs missing: {', '.join(missing)} (install with .ci/apps-setup.sh)"
    if not os.path.exists("/dev/net/tun"):
        return "/dev/net/tun is missing"
    probe = f"qdprobe{uuid.uuid4().hex[:6]}"
    done = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if done.returncode != 0:
        return f"cannot create a network namespace: {done.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def require(programs: tuple[str, ...]) -> None:
    """Skip (fail when CI=true) unless namespaces and ``programs`` are available."""
    reason = unavailable(programs)
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but {reason}")
    pytest.skip(reason)


def run(cmd: list[str], check: bool = True, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` (30 s at most); raise with its stderr when ``check`` and it fails."""
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=30, **kwargs)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {done.returncode} {done.stderr.strip()}")
    return done


@dataclass
class NetPair:
    """Two namespaces (``ns[0]``, ``ns[1]``) and the processes started in them."""

    tag: str
    workdir: Path
    ns: tuple[str, str] = ("", "")
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def in_ns(self, side: int, *cmd: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns[side], *cmd]

    def run(self, side: int, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run(self.in_ns(side, *cmd), check=check)

    def spawn(self, side: int, cmd: list[str], log: str, **kwargs: Any) -> subprocess.Popen[bytes]:
        """Start ``cmd`` in namespace ``side`` (``ip netns exec`` execs: the PID is the
        program's), output to ``workdir/log``; it is stopped at teardown."""
        with open(self.workdir / log, "ab") as out:
            proc = subprocess.Popen(
                self.in_ns(side, *cmd), stdout=out, stderr=subprocess.STDOUT, **kwargs
            )
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
        """Stop one process (``sig``, then SIGKILL after 10 s)."""
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def ping(self, side: int, address: str, count: int = 3, source: str | None = None) -> bool:
        cmd = ["ping", "-n", "-c", str(count), "-i", "0.3", "-W", "1", "-w", str(count + 3)]
        if source:
            cmd += ["-I", source]
        return self.run(side, *cmd, address, check=False).returncode == 0

    def setup(self) -> None:
        a, b = self.ns = (f"qd{self.tag}a", f"qd{self.tag}b")
        run(["ip", "netns", "add", a])
        run(["ip", "netns", "add", b])
        run(["ip", "link", "add", f"v{self.tag}a", "type", "veth", "peer", "name", f"v{self.tag}b"])
        for side, ns in enumerate(self.ns):
            dev = f"v{self.tag}{'ab'[side]}"
            run(["ip", "link", "set", dev, "netns", ns])
            run(["ip", "-n", ns, "addr", "add", f"{UNDERLAY[side]}/24", "dev", dev])
            run(["ip", "-n", ns, "link", "set", dev, "up"])
            run(["ip", "-n", ns, "link", "set", "lo", "up"])

    def teardown(self) -> None:
        for proc in reversed(self.procs):
            self.stop(proc)
        for ns in self.ns:
            if ns:
                run(["ip", "netns", "del", ns], check=False)


@pytest.fixture
def netpair(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[NetPair]:
    """Two fresh namespaces joined by a veth pair (deleted afterwards, with their processes).

    The test module's ``PROGRAMS`` must be installed (else skip, or fail when CI=true).
    """
    require(getattr(request.module, "PROGRAMS", ()))
    pair = NetPair(uuid.uuid4().hex[:6], tmp_path)
    try:
        pair.setup()
        yield pair
    finally:
        pair.teardown()


@pytest.fixture(scope="session")
def distilled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Key blocks distilled by the two post-processing ends from a simulated quantum-dot link
    (telecom dot, BB84, 10 km, 5e7 pulses: about 1.2e5 key bits, some 460 keys of 256 bits)."""
    wd = tmp_path_factory.mktemp("distilled")
    link = load_link_config(EXAMPLES / "telecom-dot-bb84.yaml").build().with_distance_km(10.0)
    simulate(
        link, 50_000_000, np.random.default_rng(11), keep_records=False, seed=11, out=wd / "run"
    )
    psk = wd / "psk.bin"
    write_psk(psk)
    folders = (KeyFolder.open(wd / "ka", psk, "alice"), KeyFolder.open(wd / "kb", psk, "bob"))
    result = distill_loopback(wd / "run", folders[0], folders[1], SessionConfig())
    assert not result.aborted, result.alice.reason
    return wd / "ka", wd / "kb"


@dataclass
class KMSPair:
    """A KMS in each namespace (subprocesses), serving SAE ``app-a`` (side 0) and ``app-b``."""

    pair: NetPair
    settings: tuple[KMSSettings, KMSSettings]
    files: tuple[Path, Path]
    procs: list[subprocess.Popen[bytes] | None] = field(default_factory=lambda: [None, None])

    def url(self, side: int) -> str:
        return f"https://{UNDERLAY[side]}:{KMS_SAE_PORT}"

    def start(self, side: int) -> None:
        cmd = [sys.executable, "-m", "qdnet.kms.server", str(self.files[side])]
        self.procs[side] = self.pair.spawn(side, cmd, f"kms-{side}.log")
        wait_port(self.pair, side, UNDERLAY[side], KMS_SAE_PORT)

    def kill(self, side: int) -> None:
        proc = self.procs[side]
        if proc is not None:
            self.pair.stop(proc, signal.SIGKILL)

    def wait_shared(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        for s in self.settings:
            store = open_store(s)
            try:
                while store.unshared_block_ids(limit=1):
                    assert time.monotonic() < deadline, "key blocks not shared in time"
                    time.sleep(0.1)
            finally:
                store.close()


def wait_port(pair: NetPair, side: int, host: str, port: int, timeout_s: float = 30.0) -> None:
    """Wait until ``host:port`` accepts TCP connections inside namespace ``side``."""
    deadline = time.monotonic() + timeout_s
    probe = f"exec 3<>/dev/tcp/{host}/{port}"
    while pair.run(side, "bash", "-c", probe, check=False).returncode != 0:
        assert time.monotonic() < deadline, f"nothing listens on {host}:{port}"
        time.sleep(0.2)


@pytest.fixture
def kms_pair(
    netpair: NetPair, app_pki: PKI, distilled: tuple[Path, Path], tmp_path: Path
) -> KMSPair:
    """KMS A in namespace 0 (app-a), KMS B in namespace 1 (app-b), peered over the veth pair,
    both stores holding the distilled blocks."""
    kmes, saes = ("kme-alice", "kme-bob"), ("app-a", "app-b")
    settings, files = [], []
    for i in (0, 1):
        j = 1 - i
        wd = tmp_path / f"kms-{i}"
        shutil.copytree(distilled[i], wd / "blocks", ignore=shutil.ignore_patterns("*.pool*"))
        raw = {
            "kme_id": kmes[i],
            "listen": {"host": UNDERLAY[i], "port": KMS_SAE_PORT},
            "peer_listen": {"host": UNDERLAY[i], "port": KMS_PEER_PORT},
            "tls": {
                "ca": str(app_pki.ca_cert),
                "cert": str(app_pki.credential(kmes[i]).cert),
                "key": str(app_pki.credential(kmes[i]).key),
            },
            "peer": {
                "kme_id": kmes[j],
                "url": f"https://{UNDERLAY[j]}:{KMS_PEER_PORT}",
                "saes": [saes[j]],
            },
            "saes": [saes[i]],
            "key_blocks_dir": str(wd / "blocks"),
            "ingest_interval_s": 0.2,
        }
        s = settings_from_dict(raw, wd, f"{kmes[i]}.yaml")
        (wd / f"{kmes[i]}.yaml").write_text(dump_settings(s))
        settings.append(s)
        files.append(wd / f"{kmes[i]}.yaml")
    kp = KMSPair(netpair, (settings[0], settings[1]), (files[0], files[1]))
    kp.start(0)
    kp.start(1)
    kp.wait_shared()
    return kp


def app_command(
    kind: str,
    kp: KMSPair,
    side: int,
    pki: PKI,
    *extra: str,
    interval: str | None = "2s",
    events: Path | None = None,
) -> list[str]:
    """``qdnet app KIND`` for side 0 (initiator, app-a) or 1 (responder, app-b)."""
    saes = ("app-a", "app-b")
    cmd = [
        *QDNET,
        "app",
        kind,
        "--kms",
        kp.url(side),
        "--sae",
        saes[side],
        "--peer-sae",
        saes[1 - side],
        "--pki",
        str(pki.root),
    ]
    if interval is not None:
        cmd += ["--interval", interval]
    if side == 0:
        cmd += ["--role", "initiator", "--peer-control", f"{UNDERLAY[1]}:9400"]
    else:
        cmd += ["--role", "responder", "--listen", f"{UNDERLAY[1]}:9400"]
    if events is not None:
        cmd += ["--events", str(events)]
    return cmd + list(extra)


def read_events(path: Path) -> list[dict[str, Any]]:
    """The JSON lines an app wrote with ``--events`` (none yet: empty)."""
    if not path.exists():
        return []
    return [yaml.safe_load(line) for line in path.read_text().splitlines() if line.strip()]


def wait_until(condition: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.1)


def report(name: str, figures: dict[str, Any]) -> None:
    """Print measured figures (run with ``-s``) and append them to ``$QDNET_APPS_FIGURES``."""
    line = json.dumps({"measurement": name, **figures}, sort_keys=True)
    print(line)
    target = os.environ.get("QDNET_APPS_FIGURES")
    if target:
        with open(target, "a") as out:
            out.write(line + "\n")


def timed_ms(pair: NetPair, side: int, script: str) -> float:
    """Milliseconds that the bash ``script`` takes inside namespace ``side`` (no exec overhead)."""
    out = pair.run(
        side,
        "bash",
        "-c",
        f"s=$(date +%s%N); {{ {script} ; }} >/dev/null 2>&1; e=$(date +%s%N); echo $(( (e-s)/1000 ))",
    )
    return int(out.stdout.strip()) / 1000.0
