"""Issue 17 item 5: WireGuard between two namespaces whose preshared key comes from two nodes of
a running network (``qdnet network up``) with no QKD link between them: every key is relayed.

The network is examples/networks/line-3.yaml (A - B - C); ``qdnet app wireguard`` runs for SAE
app-a at A and app-c at C. The apps run in this namespace, where the KMSs listen, and set the keys
of the wireguard-go interfaces in the two test namespaces through wireguard-go's control sockets
(``/var/run/wireguard/IF.sock``, shared by all namespaces); the tunnel's traffic crosses the veth
pair between the namespaces.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from qdnet.kms.link import free_port
from qdnet.network.runtime.status import network_status, wait_for_pools
from tests.apps.netns import QDNET, NetPair, read_events, wait_until
from tests.apps.test_wireguard_netns import TUNNEL, Tunnel

PROGRAMS = ("wireguard-go", "wg", "ping")
LINE = Path(__file__).resolve().parents[2] / "examples" / "networks" / "line-3.yaml"


@pytest.fixture
def network(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """line-3 up (``--fast --detach``); its ``network.json``."""
    workdir = tmp_path / "net"
    up = subprocess.run(
        [*QDNET, "network", "up", str(LINE), "--workdir", str(workdir), "--fast", "--detach"],
        capture_output=True,
        text=True,
        timeout=180,
    )
    try:
        assert up.returncode == 0, up.stderr
        wait_for_pools(workdir, min_bytes=1024, timeout_s=90)
        yield json.loads((workdir / "network.json").read_text())
    finally:
        subprocess.run([*QDNET, "network", "down", str(workdir)], capture_output=True, timeout=120)


def _app(net: dict[str, Any], tunnel: Tunnel, side: int, port: int, events: Path) -> list[str]:
    sae, peer = ("app-a", "app-c") if side == 0 else ("app-c", "app-a")
    role = (
        ["--role", "initiator", "--peer-control", f"127.0.0.1:{port}"]
        if side == 0
        else ["--role", "responder", "--listen", f"127.0.0.1:{port}"]
    )
    return [
        *QDNET, "app", "wireguard", "--kms", net["saes"][sae]["kms_url"], "--sae", sae,
        "--peer-sae", peer, "--pki", str(Path(net["ca"]).parent), *role,
        "--interface", tunnel.ifname[side], "--peer-public-key", tunnel.public[1 - side],
        "--interval", "2s", "--events", str(events),
    ]  # fmt: skip


def test_wireguard_between_nodes_without_a_link_runs_on_relayed_keys(
    netpair: NetPair, network: dict[str, Any], tmp_path: Path
) -> None:
    tunnel = Tunnel(netpair)
    port = free_port()
    events = [tmp_path / "events-0.jsonl", tmp_path / "events-1.jsonl"]
    apps: list[subprocess.Popen[bytes]] = []
    try:
        for side in (1, 0):  # the responder listens first
            with open(tmp_path / f"app-{side}.log", "ab") as log:
                apps.append(
                    subprocess.Popen(
                        _app(network, tunnel, side, port, events[side]),
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )

        def applied(side: int) -> list[dict[str, Any]]:
            return [e for e in read_events(events[side]) if e["event"] == "applied"]

        wait_until(lambda: len(applied(0)) >= 2 and len(applied(1)) >= 2, 60, "two rotations")
        assert netpair.ping(0, TUNNEL[1], count=2)  # traffic through the tunnel
        psk = tunnel.psk(0)
        assert psk is not None and psk == tunnel.psk(1)  # the same relayed key at both ends
        key_ids = [e["key_id"] for e in applied(0)]
        assert len(set(key_ids)) == len(key_ids)  # a new key at every rotation
        status = network_status(Path(network["workdir"]))
        assert status["nodes"]["B"]["relay"]["forwarded"] >= len(key_ids)  # each through B
        assert status["nodes"]["C"]["relay"]["terminated"] >= len(key_ids)
    finally:
        for proc in apps:
            proc.terminate()
            proc.wait(timeout=20)
