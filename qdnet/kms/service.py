"""The KMS node: key store + peer channel + the logic behind the ETSI GS QKD 014 calls.

``enc_keys`` requests are grouped: every request waiting when the previous group finished goes
into the next one, which costs one local transaction (carving the bytes) and one round trip to
the peer KMS (which reserves the same key IDs for the same slaves before any key is returned).
Groups are sent one at a time so the peer applies allocations in the order they were carved.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from qdnet.kms.peer import KeySpec, PeerClient, PeerError
from qdnet.kms.settings import KMSSettings
from qdnet.kms.store import Allocation, KeyStore, Piece, StoredKey, TakeOutcome
from qdnet.postprocessing.keyblock import iter_key_blocks, read_key_block

log = logging.getLogger("qdnet.kms")


class KMSError(Exception):
    """An error answered to an SAE: HTTP status, spec message and optional details."""

    def __init__(
        self, status: int, message: str, details: list[dict[str, object]] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details


@dataclass
class _EncJob:
    master: str
    slaves: list[str]
    number: int
    size_bits: int
    future: asyncio.Future[list[tuple[str, bytes]]] = field(repr=False)


@dataclass(frozen=True)
class IngestReport:
    """What one ingestion pass did."""

    ingested: int
    already_known: int
    deferred: int


def ingest_folder(
    store: KeyStore,
    folder: str | os.PathLike[str],
    *,
    capacity_bytes: int | None = None,
    remove: bool = False,
) -> IngestReport:
    """Store every complete key block in ``folder`` (idempotent by block ID).

    With ``remove`` a block file is deleted once its key is committed (or was already known).
    Blocks that would overflow ``capacity_bytes`` are left in place for a later pass.
    """
    ingested = known = deferred = 0
    paths = sorted(Path(folder).glob("*.json"))
    for path in paths:
        try:
            block = read_key_block(path)
        except (ValueError, OSError) as err:
            log.warning("skipping key block file %s: %s", path.name, err)
            continue
        try:
            fresh = store.ingest(block, capacity_bytes)
        except OverflowError:
            deferred += 1
            continue
        ingested += fresh
        known += not fresh
        if remove:
            path.unlink(missing_ok=True)
    return IngestReport(ingested, known, deferred)


def ingest_blocks(store: KeyStore, folder: str | os.PathLike[str]) -> int:
    """Ingest all blocks of ``folder`` via :func:`iter_key_blocks`; number of new blocks."""
    return sum(store.ingest(b) for b in iter_key_blocks(folder))


class KMSService:
    """One KMS node. Create, ``await start()``, use, ``await stop()``."""

    def __init__(self, settings: KMSSettings, store: KeyStore | None = None) -> None:
        assert settings.database_url is not None, "use resolved settings"
        self.settings = settings
        self.limits = settings.limits
        self.store = store or KeyStore(settings.database_url)
        self.peer: PeerClient | None = None
        self._queue: asyncio.Queue[_EncJob] | None = None
        self._tasks: list[asyncio.Task[None]] = []

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the peer channel and start the batcher and the ingest/sync loop."""
        tls = self.settings.tls
        self.peer = PeerClient(
            self.settings.peer.url, tls.ca, tls.cert, tls.key, self.settings.peer.timeout_s
        )
        self._queue = asyncio.Queue()
        self._tasks = [
            asyncio.create_task(self._batcher(), name="kms-batcher"),
            asyncio.create_task(self._maintenance(), name="kms-maintenance"),
        ]

    async def stop(self) -> None:
        """Stop background work and close the peer channel and the database pool."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self.peer is not None:
            await self.peer.aclose()
        self.store.close()

    async def _maintenance(self) -> None:
        while True:
            try:
                await self.ingest_and_sync()
            except asyncio.CancelledError:
                raise
            except Exception as err:  # keep serving; the next pass retries
                log.warning("ingest/sync pass failed: %s", type(err).__name__)
            await asyncio.sleep(self.settings.ingest_interval_s)

    async def ingest_and_sync(self) -> None:
        """Ingest the watched folder (if any) and confirm new blocks with the peer."""
        folder = self.settings.key_blocks_dir
        if folder is not None and folder.is_dir():
            cap = self.limits.max_key_count * self.limits.key_size // 8
            await asyncio.to_thread(
                ingest_folder,
                self.store,
                folder,
                capacity_bytes=cap,
                remove=self.settings.remove_ingested_blocks,
            )
        await self.sync_blocks()

    async def sync_blocks(self) -> int:
        """Mark as shared the blocks both KMS hold; number newly shared."""
        assert self.peer is not None
        pending = self.store.unshared_block_ids()
        if not pending:
            return 0
        held = await self.peer.blocks(pending)
        self.store.mark_shared(held)
        return len(held)

    def peer_inventory(self, block_ids: list[str]) -> list[str]:
        """Peer asks which blocks we hold; the ones we hold become shared here too."""
        held = self.store.held_block_ids(block_ids)
        self.store.mark_shared(held)
        return held

    def apply_peer_allocations(self, items: list[tuple[list[Piece], list[KeySpec]]]) -> list[bool]:
        """Apply the peer's carvings; keep only keys whose slaves are served here."""
        mine = set(self.settings.saes)
        local = [
            (pieces, [(k, b, m, [s for s in sl if s in mine]) for k, b, m, sl in specs])
            for pieces, specs in items
        ]
        return self.store.apply_peer_allocations(local, peer_from_front=not self.settings.is_leader)

    # --- ETSI GS QKD 014 logic -----------------------------------------------------------------

    def check_slave(self, master: str, slave: str) -> str:
        """KME serving ``slave``; raises 400 for unknown SAEs or a self-addressed request."""
        kme = self.settings.kme_of(slave)
        if kme is None:
            raise KMSError(400, f"SAE ID {slave!r} is not known to this KME")
        if slave == master and not self.settings.allow_self_addressed:
            raise KMSError(400, "the slave SAE ID shall differ from the master SAE ID")
        return kme

    def status(self, master: str, slave: str) -> dict[str, object]:
        """Spec Table 9 for ``master`` asking about keys shared with ``slave``."""
        target = self.check_slave(master, slave)
        lim = self.limits
        stored = self.store.available_bytes() * 8 // lim.key_size
        return {
            "source_KME_ID": self.settings.kme_id,
            "target_KME_ID": target,
            "master_SAE_ID": master,
            "slave_SAE_ID": slave,
            "key_size": lim.key_size,
            "stored_key_count": min(stored, lim.max_key_count),
            "max_key_count": lim.max_key_count,
            "max_key_per_request": lim.max_key_per_request,
            "max_key_size": lim.max_key_size,
            "min_key_size": lim.min_key_size,
            "max_SAE_ID_count": lim.max_SAE_ID_count,
        }

    async def enc_keys(
        self, master: str, slaves: list[str], number: int, size_bits: int
    ) -> list[tuple[str, bytes]]:
        """New keys for ``master``, reserved for ``slaves`` at their KMS before returning."""
        assert self._queue is not None, "service not started"
        fut: asyncio.Future[list[tuple[str, bytes]]] = asyncio.get_running_loop().create_future()
        await self._queue.put(_EncJob(master, slaves, number, size_bits, fut))
        return await fut

    async def _batcher(self) -> None:
        assert self._queue is not None
        while True:
            jobs = [await self._queue.get()]
            while not self._queue.empty() and len(jobs) < 256:
                jobs.append(self._queue.get_nowait())
            try:
                await self._run_batch(jobs)
            except asyncio.CancelledError:
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(KMSError(503, "KME is shutting down"))
                raise
            except Exception as err:
                log.error("enc_keys batch failed: %s", type(err).__name__)
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(KMSError(503, "key data access error"))

    async def _run_batch(self, jobs: list[_EncJob]) -> None:
        assert self.peer is not None
        allocs = self.store.allocate(
            [j.number * j.size_bits // 8 for j in jobs], from_front=self.settings.is_leader
        )
        live: list[tuple[_EncJob, Allocation, list[str]]] = []
        items: list[tuple[list[Piece], list[KeySpec]]] = []
        peer_saes = set(self.settings.peer.saes)
        for job, alloc in zip(jobs, allocs, strict=True):
            if alloc is None:
                job.future.set_exception(KMSError(503, "not enough key material available"))
                continue
            ids = [str(uuid.uuid4()) for _ in range(job.number)]
            remote = [s for s in job.slaves if s in peer_saes]
            items.append((alloc.pieces, [(k, job.size_bits, job.master, remote) for k in ids]))
            live.append((job, alloc, ids))
        if not live:
            return
        try:
            accepted = await self.peer.allocations(items)
        except PeerError as err:
            log.warning("%s", err)
            for job, _, _ in live:
                job.future.set_exception(KMSError(503, "peer KME is unreachable"))
            return
        local_reservations: list[tuple[str, int, bytes, str, list[str]]] = []
        results: list[tuple[_EncJob, list[tuple[str, bytes]]]] = []
        mine = set(self.settings.saes)
        for (job, alloc, ids), ok in zip(live, accepted, strict=True):
            if not ok:
                job.future.set_exception(KMSError(503, "not enough key material available"))
                continue
            n = job.size_bits // 8
            cut = [(k, alloc.material[i * n : (i + 1) * n]) for i, k in enumerate(ids)]
            local = [s for s in job.slaves if s in mine]
            if local:
                local_reservations.extend((k, job.size_bits, m, job.master, local) for k, m in cut)
            results.append((job, cut))
        self.store.reserve(local_reservations)
        for job, cut in results:
            if not job.future.done():
                job.future.set_result(cut)

    def dec_keys(self, master: str, caller: str, key_ids: list[str]) -> list[StoredKey]:
        """The keys ``key_ids`` that ``master`` obtained for ``caller``; each handed out once."""
        outcome, found = self.store.take_keys(key_ids, master, caller)
        if outcome is TakeOutcome.NOT_FOUND:
            raise KMSError(400, "one or more keys specified are not found on KME")
        if outcome is TakeOutcome.UNAUTHORIZED:
            raise KMSError(
                401, "the requesting SAE is not a slave SAE of one or more of the specified keys"
            )
        return found
