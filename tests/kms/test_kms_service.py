"""The enc_keys batcher of a :class:`qdnet.kms.service.PeerLink` (no peer, no HTTP)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from qdnet.kms.link import link_settings
from qdnet.kms.pki import PKI
from qdnet.kms.service import GATHER_S, KMSService, _EncJob


def test_batcher_gathers_the_clients_of_the_last_batch(tmp_path: Path, pki: PKI) -> None:
    """16 clients that each send their next request a little after their answer (a network
    turnaround, staggered over less than GATHER_S) are served in batches of about 16: the
    batcher does not start a batch with the first one back and leave the others for the next
    (batches alternating between 1 and 15 requests, half the throughput)."""
    settings = link_settings(tmp_path, pki, write_yaml=False)[0].resolved(tmp_path)
    service = KMSService(settings)
    link = service.links["kme-bob"]
    sizes: list[int] = []
    clients, rounds = 16, 12

    async def fake_batch(jobs: list[_EncJob]) -> None:  # a peer round trip and two commits
        sizes.append(len(jobs))
        await asyncio.sleep(0.005)
        for job in jobs:
            job.future.set_result(([], False))

    async def client(i: int) -> None:
        for _ in range(rounds):
            await link.enc_keys("app-a", ["app-b"], 1, 256)
            await asyncio.sleep(i * GATHER_S / (2 * clients))

    async def main() -> None:
        link._queue = asyncio.Queue()
        link._carving = asyncio.Lock()
        link._gathered = asyncio.Event()
        link._run_batch = fake_batch  # type: ignore[method-assign]
        batcher = asyncio.create_task(link._batcher())
        try:
            await asyncio.gather(*(client(i) for i in range(clients)))
        finally:
            batcher.cancel()

    try:
        asyncio.run(main())
    finally:
        service.store.close()
    assert sum(sizes) == clients * rounds
    # without gathering: about 2 batches a round (1 + 15); with it: 1 (+ the first round)
    assert len(sizes) <= rounds + 3, sizes
