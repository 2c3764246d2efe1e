"""Both endpoints in one process, talking over loopback TCP: what ``qdnet distill`` and the demo run.

Alice and Bob still share nothing but framed, authenticated messages: each endpoint loads only its
own records and its own key folder (blocks, pending blocks, authentication pool), and the two
coroutines meet on a real TCP socket.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from qdnet.postprocessing.keyblock import KeyFolder
from qdnet.postprocessing.session import SessionConfig, SessionReport, run_alice, run_bob
from qdnet.protocols.records import load_meta, load_party_records
from qdnet.transport.authentication import DEFAULT_RECV_TIMEOUT_S, AuthenticatedChannel
from qdnet.transport.channel import TcpChannel

#: How long Alice's listening socket waits for Bob (seconds).
ACCEPT_TIMEOUT_S = 30.0


@dataclass
class LoopbackResult:
    """Both endpoints' reports (each ``report.block`` holds that side's key block, if any)."""

    alice: SessionReport
    bob: SessionReport

    @property
    def aborted(self) -> bool:
        """True when either side aborted (then neither has a key block)."""
        return self.alice.aborted or self.bob.aborted


async def distill_loopback_async(
    run: Path,
    keys_alice: KeyFolder,
    keys_bob: KeyFolder,
    config: SessionConfig,
    progress: Callable[[str, float], None] | None = None,
    recv_timeout_s: float = DEFAULT_RECV_TIMEOUT_S,
) -> LoopbackResult:
    """Run Alice and Bob on ``run`` (a raw-records folder) over a loopback TCP connection."""
    meta = load_meta(run)
    records_alice = load_party_records(run, "alice")
    records_bob = load_party_records(run, "bob")
    ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    server = asyncio.create_task(
        TcpChannel.accept_one("127.0.0.1", 0, ACCEPT_TIMEOUT_S, on_listening=ready.set_result)
    )
    port = await ready
    client = await TcpChannel.connect("127.0.0.1", port)
    chan_a = AuthenticatedChannel(await server, keys_alice.pool, "alice", recv_timeout_s)
    chan_b = AuthenticatedChannel(client, keys_bob.pool, "bob", recv_timeout_s)
    try:
        alice, bob = await asyncio.gather(
            run_alice(chan_a, records_alice, meta, keys_alice, config),
            run_bob(chan_b, records_bob, meta, keys_bob, progress=progress),
        )
    finally:
        await chan_a.close()
        await chan_b.close()
    return LoopbackResult(alice, bob)


def distill_loopback(
    run: Path,
    keys_alice: KeyFolder,
    keys_bob: KeyFolder,
    config: SessionConfig,
    progress: Callable[[str, float], None] | None = None,
) -> LoopbackResult:
    """Blocking wrapper of :func:`distill_loopback_async`."""
    return asyncio.run(distill_loopback_async(run, keys_alice, keys_bob, config, progress))
