"""``kill -9`` of every KMS on a relay path (origin, middle node, far end) under a load of
relayed keys, then the accounting (issue 15, :mod:`qdnet.kms.relay`).

Three ``qdnet kms serve`` processes in a line kme-a -- kme-c -- kme-b; app-a (at kme-a) asks for
keys shared with app-b (at kme-b), which kme-a relays through kme-c. Invariants afterwards:
* no key ID and no key bytes delivered twice;
* every key app-a received is fetched by app-b at kme-b, with the same bytes (no key at one end
  only: the origin answers only after the far end's completion);
* no pad byte of any link was sent under two relays (the audit logs of every node);
* both ends of every link hold the same bytes once reconciled (no drift).
"""

from __future__ import annotations

import contextlib
import json
import random
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from qdnet.kms.client import SAEClient
from qdnet.kms.link import spawn_kms, wait_until_serving
from qdnet.kms.pki import PKI, create_pki
from qdnet.kms.service import open_store
from qdnet.kms.settings import KMSSettings, dump_settings
from qdnet.kms.topology import mesh_settings
from tests.kms.adversarial.conftest import KMSProcesses
from tests.kms.conftest import write_blocks

NODES = {"kme-a": ["app-a"], "kme-b": ["app-b"], "kme-c": ["app-c"]}
LINKS = [("kme-a", "kme-c"), ("kme-c", "kme-b")]
WAIT_AS = {"kme-a": ("app-a", "app-c"), "kme-b": ("app-b", "app-c"), "kme-c": ("app-c", "app-a")}
THREADS = 4
MAX_KEYS = 4


@dataclass
class Line(KMSProcesses):
    """The three KMS processes."""

    work: Path
    pki: PKI
    settings: dict[str, KMSSettings]
    blocks: dict[tuple[str, str], int]
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def url(self, kme: str) -> str:
        return f"https://127.0.0.1:{self.settings[kme].listen.port}"

    def start(self, kme: str) -> None:
        self.procs[kme] = spawn_kms(self.work / kme / f"{kme}.yaml", self.work / f"{kme}.log")
        sae, slave = WAIT_AS[kme]
        wait_until_serving(self.url(kme), self.pki, sae, slave, timeout_s=30)

    def client(self, sae: str, kme: str) -> SAEClient:
        cred = self.pki.credential(sae)
        return SAEClient(self.url(kme), self.pki.ca_cert, cred.cert, cred.key, timeout_s=15)


@contextlib.contextmanager
def spawned_line(work: Path, blocks: int) -> Iterator[Line]:
    pki = create_pki(work / "pki", list(NODES), [s for v in NODES.values() for s in v])
    settings = mesh_settings(
        work,
        pki,
        nodes=NODES,
        links=LINKS,
        extra={
            "ingest_interval_s": 0.1,
            "reconcile_interval_s": 0.5,
            "relay": {"timeout_s": 5, "audit_log": "relay-audit.jsonl"},
        },
    )
    for kme, s in settings.items():
        (work / kme / f"{kme}.yaml").write_text(dump_settings(s))
    for a, b in LINKS:
        write_blocks([work / a / "keys" / b, work / b / "keys" / a], blocks, 8192)
    line = Line(work, pki, settings, {link: blocks * 8192 for link in LINKS})
    try:
        for kme in NODES:
            line.start(kme)
        yield line
    finally:
        line.stop()


def wait_pools(line: Line, timeout_s: float = 30) -> None:
    """Until kme-a offers app-b (through kme-c) the whole first hop."""
    deadline = time.monotonic() + timeout_s
    with line.client("app-c", "kme-c") as c:
        while True:
            links = c.status("app-a")["status_extension"]["qdnet_links"]
            if all(v["stored_key_bytes"] == line.blocks[LINKS[0]] for v in links.values()):
                return
            assert time.monotonic() < deadline, links
            time.sleep(0.1)


def pad_reuse(work: Path) -> tuple[int, int]:
    """Pads sent (all nodes' audit logs) and byte positions sent under two relays."""
    owner: dict[tuple[str, str, int], str] = {}
    sent = reused = 0
    for log in work.glob("*/relay-audit.jsonl"):
        for line in log.read_text().splitlines():
            entry = json.loads(line)
            sent += 1
            link = "-".join(entry["link"])
            for block, offset, length in entry["pieces"]:
                for o in range(offset, offset + length):
                    prev = owner.setdefault((link, block, o), entry["relay_id"])
                    reused += prev != entry["relay_id"]
    return sent, reused


def campaign(line: Line, kills: int) -> dict[str, int]:
    wait_pools(line)
    delivered: list[tuple[str, bytes]] = []
    failed = [0]
    lock = threading.Lock()
    stop = threading.Event()

    def load(seed: int) -> None:
        rng = random.Random(seed)
        client = line.client("app-a", "kme-a")
        while not stop.is_set():
            try:
                keys = client.enc_keys("app-b", number=rng.randint(1, MAX_KEYS), size=256)
            except Exception:
                failed[0] += 1
                client.close()
                time.sleep(0.05)
                client = line.client("app-a", "kme-a")
                continue
            with lock:
                delivered.extend((k.key_id, k.key) for k in keys)
        client.close()

    def progress(count: int, after: str = "", timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while len(delivered) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(delivered) >= count, f"no progress after a restart of {after}"

    threads = [threading.Thread(target=load, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    try:
        progress(20)
        for i in range(kills):
            kme = ("kme-a", "kme-c", "kme-b")[i % 3]
            time.sleep(random.Random(i).uniform(0.0, 0.3))  # at any moment of a relay
            line.kill(kme)
            line.start(kme)
            progress(len(delivered) + 20, kme)
    finally:
        stop.set()
        for t in threads:
            t.join(30)

    ids = [k for k, _ in delivered]
    assert len(set(ids)) == len(ids), "a key ID delivered twice"
    assert len({m for _, m in delivered}) == len(delivered), "key bytes delivered twice"
    one_end = 0
    with line.client("app-b", "kme-b") as b:
        for i in range(0, len(delivered), 100):
            chunk = delivered[i : i + 100]
            try:
                got = b.dec_keys("app-a", [k for k, _ in chunk])
            except Exception:
                one_end += len(chunk)
                continue
            one_end += sum(g.key != m for g, (_, m) in zip(got, chunk, strict=True))
    assert one_end == 0, f"{one_end} key(s) app-a holds that app-b cannot fetch"

    sent, reused = pad_reuse(line.work)
    assert sent >= 2 * len(delivered) // MAX_KEYS and reused == 0, (sent, reused)

    stores = {k: open_store(s) for k, s in line.settings.items()}
    try:
        deadline = time.monotonic() + 30
        while True:  # the leaders reconcile every link
            drift = sum(
                abs(
                    stores[a].pool_summary(b)["held_bytes"]
                    - stores[b].pool_summary(a)["held_bytes"]
                )
                for a, b in LINKS
            )
            if drift == 0:
                break
            assert time.monotonic() < deadline, ("drift", drift)
            time.sleep(0.2)
        orphans = len(stores["kme-b"].reserved_key_ids())
        assert stores["kme-a"].reserved_key_ids() == {}
    finally:
        for s in stores.values():
            s.close()
    assert orphans <= kills * THREADS * MAX_KEYS, orphans
    return {
        "kills": kills,
        "relayed_keys_delivered": len(delivered),
        "failed_requests": failed[0],
        "delivered_twice": 0,
        "one_end_only": one_end,
        "pads_sent": sent,
        "pad_bytes_reused": reused,
        "orphan_keys": orphans,
        "drift_bytes": 0,
    }


def test_kill_9_on_the_relay_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # a sender pads from its own half of each segment: one 8192-byte block carries 8192 / 2 / 32 =
    # 128 relayed 256-bit keys one way, and the load runs until the campaign ends, so the pools
    # must outlast it (12 blocks: 1536 keys; faster relays spent the 512 of 4 blocks mid-way)
    with spawned_line(tmp_path, blocks=12) as line:
        figures = campaign(line, kills=3)
    with capsys.disabled():
        print("relay kill -9 campaign:", figures)


@pytest.mark.slow
def test_kill_9_on_the_relay_path_campaign(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with spawned_line(tmp_path, blocks=64) as line:  # 8192 keys one way (see above)
        figures = campaign(line, kills=18)
    with capsys.disabled():
        print("relay kill -9 campaign:", figures)
