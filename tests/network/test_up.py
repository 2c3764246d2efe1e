"""``qdnet network up|down|status`` with real processes: a KMS per node, a loop per link."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from qdnet.cli import app
from qdnet.kms.client import KMEError, SAEClient
from qdnet.kms.link import free_port
from qdnet.network.runtime.processes import ProcessRef
from qdnet.network.runtime.status import wait_for_pools

NETWORKS = Path(__file__).resolve().parents[2] / "examples" / "networks"
QDNET = [sys.executable, "-c", "from qdnet.cli import app; app(prog_name='qdnet')"]


def qdnet(*args: str | Path, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the ``qdnet`` command line."""
    return subprocess.run(
        [*QDNET, *map(str, args)], capture_output=True, text=True, timeout=timeout_s
    )


def client(state: dict[str, Any], sae: str) -> SAEClient:
    """An ETSI GS QKD 014 client of ``sae``, from ``network.json`` alone."""
    c = state["saes"][sae]
    return SAEClient(c["kms_url"], c["ca"], c["cert"], c["key"])


def processes(state: dict[str, Any]) -> list[ProcessRef]:
    """Every process ``network.json`` names."""
    entries = [state["supervisor"]] + [
        e["process"] for group in ("nodes", "links") for e in state[group].values()
    ]
    return [ProcessRef.from_json(e) for e in entries if e]


def processes_in(folder: Path) -> list[int]:
    """PIDs of live processes whose command line names ``folder``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if str(folder) in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


def wait_running(
    workdir: Path, proc: subprocess.Popen[str], timeout_s: float = 90
) -> dict[str, Any]:
    """``network.json`` once the foreground ``up`` reports every KMS answering."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        try:
            state: dict[str, Any] = json.loads((workdir / "network.json").read_text())
        except (OSError, ValueError):
            state = {}
        if state.get("state") == "running":
            return state
        time.sleep(0.2)
    raise TimeoutError("network did not start")


@dataclass
class Line:
    """The 3-node line of examples/networks/line-3.yaml, up in the foreground (``--fast``)."""

    workdir: Path
    up: subprocess.Popen[str]
    state: dict[str, Any]


@pytest.fixture(scope="module")
def line(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Line]:
    workdir = tmp_path_factory.mktemp("line") / "net"
    command = ["network", "up", str(NETWORKS / "line-3.yaml"), "--workdir", str(workdir), "--fast"]
    up = subprocess.Popen(
        [*QDNET, *command], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        state = wait_running(workdir, up)
        wait_for_pools(workdir, min_bytes=1024, timeout_s=90)  # past the probe blocks
        yield Line(workdir, up, state)
    finally:
        if up.poll() is None:
            up.send_signal(signal.SIGINT)  # Ctrl-C
            up.wait(timeout=60)


def test_line_relays_a_key_through_real_processes(line: Line) -> None:
    state, workdir = line.state, line.workdir
    assert all(r.alive() for r in processes(state)) and len(processes(state)) == 1 + 3 + 2
    # A and C share no link: the key is relayed through B, the same at both ends.
    with client(state, "app-a") as a, client(state, "app-c") as c:
        keys = a.enc_keys("app-c", number=2, size=256)
        got = c.dec_keys("app-a", [k.key_id for k in keys])
        assert [k.key for k in got] == [k.key for k in keys]
        with pytest.raises(KMEError) as refused:  # never delivered twice
            c.dec_keys("app-a", [keys[0].key_id])
        assert refused.value.status in (400, 404)
    with client(state, "app-a") as a, client(state, "app-b") as b:  # one hop
        key = a.enc_keys("app-b", number=1, size=256)[0]
        assert b.dec_keys("app-a", [key.key_id])[0].key == key.key

    # The commands that only read or signal run in this process (each `qdnet` start costs).
    status = CliRunner().invoke(app, ["network", "status", str(workdir), "--json"])
    assert status.exit_code == 0, status.output
    document = json.loads(status.stdout)
    nodes = document["nodes"]
    assert all(n["alive"] and n["error"] is None for n in nodes.values())
    assert nodes["A"]["pools"]["kme-B"]["blocks_ingested"] >= 1
    assert set(nodes["B"]["pools"]) == {"kme-A", "kme-C"}
    assert nodes["A"]["relay"]["originated"] >= 1  # one relay carried both keys
    assert nodes["B"]["relay"]["forwarded"] >= 1
    assert nodes["C"]["relay"]["terminated"] >= 1
    for link in document["links"].values():
        assert link["alive"] and link["stats"]["blocks_delivered"] >= 1
        assert link["stats"]["key_rate_bps"] > 0
    table = CliRunner().invoke(app, ["network", "status", str(workdir)])
    assert table.exit_code == 0 and "kme-C" in table.stdout, table.output


TLS = "-tls1_3 -ciphersuites TLS_AES_128_GCM_SHA256"  # OpenSSL binds a -psk key to SHA-256
PSK = '-psk "$QDNET_PSK_HEX" -psk_identity "$QDNET_PSK_IDENTITY"'


def _tls_app(line: Line, sae: str, peer: str, role: str, port: int, script: str) -> list[str]:
    where = ["--listen" if role == "responder" else "--peer-control", f"127.0.0.1:{port}"]
    return [
        *QDNET, "app", "tls-psk", "--kms", line.state["saes"][sae]["kms_url"],
        "--sae", sae, "--peer-sae", peer, "--pki", str(line.workdir / "pki"),
        "--role", role, *where, "--", "bash", "-c", script,
    ]  # fmt: skip


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_tls13_between_nodes_without_a_link_runs_on_a_relayed_key(
    line: Line, tmp_path: Path
) -> None:
    """Issue 17 item 5: ``qdnet app tls-psk`` at A and C (no link between them), keyed by the
    network: A's KMS relays the key through B, C's KMS hands it to the server side."""
    control, tls = free_port(), free_port()
    server = f"exec openssl s_server -nocert {TLS} {PSK} -accept 127.0.0.1:{tls} -rev </dev/null"
    wait = (
        f"for i in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/{tls}) 2>/dev/null && break; "
        "sleep 0.1; done"
    )
    client_script = (
        f"{wait}; (echo hello-qkd; sleep 0.5) | openssl s_client -connect 127.0.0.1:{tls} "
        f"{TLS} {PSK} -brief"
    )
    before = json.loads(
        CliRunner().invoke(app, ["network", "status", str(line.workdir), "--json"]).stdout
    )["nodes"]["B"]["relay"]["forwarded"]
    with open(tmp_path / "server.log", "w") as log:  # noqa: SIM117
        with subprocess.Popen(
            _tls_app(line, "app-c", "app-a", "responder", control, server),
            stdout=log,
            stderr=subprocess.STDOUT,
        ) as responder:
            try:
                initiator = subprocess.run(
                    _tls_app(line, "app-a", "app-c", "initiator", control, client_script),
                    capture_output=True,
                    text=True,
                    timeout=60,
                )
            finally:
                responder.terminate()
    out = initiator.stdout + initiator.stderr
    assert initiator.returncode == 0, out
    assert "dkq-olleh" in out  # the server's reversed echo came back over TLS 1.3
    assert "Protocol version: TLSv1.3" in out and "No peer certificate" in out
    after = json.loads(
        CliRunner().invoke(app, ["network", "status", str(line.workdir), "--json"]).stdout
    )["nodes"]["B"]["relay"]["forwarded"]
    assert after == before + 1  # the PSK went through B


def test_second_up_is_refused_and_down_ends_every_process(line: Line) -> None:
    workdir, refs = line.workdir, processes(line.state)
    again = CliRunner().invoke(
        app, ["network", "up", str(NETWORKS / "line-3.yaml"), "--workdir", str(workdir)]
    )
    assert again.exit_code == 2
    assert "already holds a network, running" in " ".join(again.output.split())

    # A process that dies is reported by the foreground `up` (and left out of what down stops).
    loop = ProcessRef.from_json(line.state["links"]["A-B"]["process"])
    loop.signal(signal.SIGKILL)
    deadline = time.monotonic() + 10
    while loop.alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # the supervisor looks every 0.5 s

    down = CliRunner().invoke(app, ["network", "down", str(workdir)])
    assert down.exit_code == 0, down.output
    assert "stopped 5 processes" in down.stdout
    out, err = line.up.communicate(timeout=30)
    assert line.up.returncode == 0, err
    assert "stopped" in out
    assert "the link loop A-B exited with code -9" in " ".join(err.split())
    assert not any(r.alive() for r in refs)
    assert processes_in(workdir) == []
    assert json.loads((workdir / "network.json").read_text())["state"] == "stopped"
    assert "no process" in CliRunner().invoke(app, ["network", "down", str(workdir)]).stdout


@pytest.mark.slow
def test_metro_dots_with_a_tapped_link_keeps_serving_on_other_paths(tmp_path: Path) -> None:
    workdir = tmp_path / "metro"
    command = [
        "network", "up", str(NETWORKS / "metro-dots.yaml"), "--workdir", str(workdir),
        "--fast", "--tap", "C-B@0s:0.5",
    ]  # fmt: skip
    # In the foreground, in a process group of its own: Ctrl-C at a terminal signals the group.
    up = subprocess.Popen(
        [*QDNET, *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        state = wait_running(workdir, up)
        wait_for_pools(workdir, min_bytes=1024, timeout_s=240)
        with client(state, "bank-a") as a, client(state, "bank-b") as b:
            for _ in range(3):
                keys = a.enc_keys("bank-b", number=1, size=256)
                assert b.dec_keys("bank-a", [keys[0].key_id])[0].key == keys[0].key
        document = json.loads(qdnet("network", "status", workdir, "--json").stdout)
        tapped = document["links"]["C-B"]["stats"]
        assert tapped["blocks_refused"] >= 1 and tapped["blocks_delivered"] == 0
        assert "QBER" in tapped["last_refusal"]
        nodes = document["nodes"]
        assert nodes["B"]["pools"]["kme-C"]["stored_key_bytes"] == 0
        assert nodes["C"]["pools"]["kme-B"]["stored_key_bytes"] == 0
        # Every relayed key reached B from F (A-...-E-F-B): the only way round C-B.
        assert nodes["F"]["relay"]["forwarded"] >= 3
        assert nodes["B"]["relay"]["terminated"] >= 3
    finally:
        os.killpg(up.pid, signal.SIGINT)  # Ctrl-C
        out, err = up.communicate(timeout=60)
    assert up.returncode == 0, err
    assert out.rstrip().endswith("stopped")
    assert processes_in(workdir) == []


@pytest.mark.slow
def test_secoqc_comes_up_with_links_given_by_their_rates(tmp_path: Path) -> None:
    workdir = tmp_path / "secoqc"
    up = qdnet("network", "up", NETWORKS / "secoqc-vienna.yaml", "--workdir", workdir, "--detach")
    assert up.returncode == 0, up.stderr
    state = json.loads((workdir / "network.json").read_text())
    try:
        wait_for_pools(workdir, min_bytes=64, timeout_s=120)  # STP-BRT: 500 bit/s
        with client(state, "video-stp") as stp, client(state, "video-frm") as frm:
            key = stp.enc_keys("video-frm", number=1, size=256)[0]
            assert frm.dec_keys("video-stp", [key.key_id])[0].key == key.key
        document = json.loads(qdnet("network", "status", workdir, "--json").stdout)
        for link in document["links"].values():
            assert link["kind"] == "given" and link["stats"]["blocks_delivered"] >= 1
        # A supervisor killed with SIGKILL leaves its children to `down`.
        supervisor = ProcessRef.from_json(state["supervisor"])
        supervisor.signal(signal.SIGKILL)
        deadline = time.monotonic() + 10
        while supervisor.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert any(r.alive() for r in processes(state))
    finally:
        down = qdnet("network", "down", workdir)
    assert down.returncode == 0 and "stopped" in down.stdout, down.stderr
    assert processes_in(workdir) == []
