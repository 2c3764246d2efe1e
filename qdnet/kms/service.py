"""The KMS node: key store + peer channel + the logic behind the ETSI GS QKD 014 calls.

``enc_keys`` requests are grouped: every request waiting when the previous group finished goes
into the next one. A group is *planned* (bytes chosen, nothing consumed), sent to the peer KMS
(which consumes the same bytes and reserves the same key IDs for its slaves), and only then
consumed here, with the keys for local slaves, in one transaction. A peer that cannot be reached
therefore costs no key: nothing was consumed on either side. Groups are sent one at a time so
the peer applies allocations in the order they were carved.

Database work runs in a thread pool, never on the event loop: a store that is locked by someone
else delays only the calls that need it, up to ``timeouts.database_s``, then they answer 503.

A node has one :class:`PeerLink` per QKD link (``peers:`` in the settings): each link has its
own key pool in the store, its own peer channel, batcher, ingestion folder and reconciliation,
so one link's outage or empty pool never touches another link's keys.

Reconciliation (each link runs its own): the leader of the link (smaller KME ID) exchanges with
its peer which bytes of each shared block are consumed, and both keep the union. It runs at start, after each reconnection to the peer (a peer restart) and every
``reconcile_interval_s``, while neither side has a group in flight. Reserved keys no slave
collected within ``reserved_key_ttl_s`` are erased; ``status_extension`` reports both.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from qdnet.kms.blocks import block_files, read_block
from qdnet.kms.errors import KMSError
from qdnet.kms.peer import RELAY_PATH, KeySpec, PeerClient, PeerError
from qdnet.kms.relay import Relay, RelayJob, RelayRequest
from qdnet.kms.relay import fail as relay_fail
from qdnet.kms.settings import KMSSettings, PeerSettings
from qdnet.kms.store import (
    Allocation,
    KeyStore,
    Piece,
    Reservation,
    StoreBusyError,
    StoredKey,
    TakeOutcome,
)

log = logging.getLogger("qdnet.kms")

T = TypeVar("T")

RECONCILE_BLOCKS_PER_CALL = 200


def open_store(settings: KMSSettings) -> KeyStore:
    """The key store and keyring named by resolved ``settings``."""
    assert settings.database_url is not None, "use resolved settings"
    return KeyStore(settings.database_url, settings.keyring_path, settings.timeouts.database_s)


@dataclass
class _EncJob:
    master: str
    slaves: list[str]
    number: int
    size_bits: int
    future: asyncio.Future[tuple[list[tuple[str, bytes]], bool]] = field(repr=False)
    tries: int = 0


@dataclass
class _TakeJob:
    key_ids: list[str]
    master: str
    caller: str
    future: asyncio.Future[tuple[TakeOutcome, list[StoredKey]]] = field(repr=False)


_MAX_TAKE_IDS = 4096
"""Most key IDs answered in one group commit of ``dec_keys`` (SQLite binds them all)."""


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
    link: str = "",
) -> IngestReport:
    """Store every complete key block directly in ``folder`` into ``link``'s pool (idempotent
    by block ID; format 1 or 2; never a subfolder such as ``pending/``).

    With ``remove`` a block file is deleted once its key is committed (or was already known).
    Blocks that would overflow ``capacity_bytes`` are left in place for a later pass.
    """
    ingested = known = deferred = 0
    for path in block_files(folder):
        try:
            block = read_block(path)
        except (ValueError, OSError) as err:
            log.warning("skipping key block file %s: %s", path.name, err)
            continue
        try:
            fresh = store.ingest(block, capacity_bytes, link)
        except OverflowError:
            deferred += 1
            continue
        ingested += fresh
        known += not fresh
        if remove:
            path.unlink(missing_ok=True)
    return IngestReport(ingested, known, deferred)


GATHER_S = 0.002
"""Longest wait of the enc_keys batcher for more requests (see ``PeerLink._gather``)."""
_MAX_BATCH = 256


class _Outage:
    """Logs a peer outage once when it starts (with the first error) and once when it ends
    (with the number of failed calls), instead of once per call."""

    def __init__(self, peer_id: str) -> None:
        self.peer_id = peer_id
        self.failures = 0
        self.since = 0.0

    def failed(self, err: Exception) -> None:
        if self.failures == 0:
            self.since = time.monotonic()
            log.warning("peer KME %s unreachable: %s (failing calls until it is back)",
                        self.peer_id, err)  # fmt: skip
        self.failures += 1

    def ok(self) -> bool:
        """Record a success; True if it ended an outage."""
        if self.failures == 0:
            return False
        log.warning(
            "peer KME %s reachable again after %.1f s; %d call(s) failed meanwhile",
            self.peer_id,
            time.monotonic() - self.since,
            self.failures,
        )
        self.failures = 0
        return True


class PeerLink:
    """One QKD link of a node: the peer channel, the link's enc_keys batcher, the ingestion of
    its key-block folder, and its reconciliation. Created and started by :class:`KMSService`."""

    def __init__(self, service: KMSService, peer: PeerSettings) -> None:
        self.service = service
        self.peer = peer
        self.name = peer.kme_id
        self.leader = service.settings.is_leader(peer.kme_id)
        self.client: PeerClient | None = None
        self._queue: asyncio.Queue[_EncJob] | None = None
        self._carving: asyncio.Lock | None = None
        # batch gathering (see _gather): enc_keys calls in progress, their peak during the
        # batch in flight, and the event that wakes the batcher when the queue holds that many
        self._enc_active = 0
        self._enc_peak = 0
        self._gather_want = 0
        self._gathered: asyncio.Event | None = None
        self._outage = _Outage(peer.kme_id)
        self._reconcile_due: asyncio.Event | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._relay_jobs: asyncio.Queue[RelayJob] | None = None

    async def send_relay(
        self, nbytes: int, build: Callable[[Allocation], RelayRequest]
    ) -> tuple[dict[str, Any], Allocation | None]:
        """Carve a relay pad of ``nbytes`` from this end of the link, have ``build`` make the
        relay request with it and send it to the peer: the peer's answer and the pad (None if
        none was carved). Requests waiting together go in one message and one transaction."""
        assert self._relay_jobs is not None, "link not started"
        fut: asyncio.Future[tuple[dict[str, Any], Allocation | None]] = (
            asyncio.get_running_loop().create_future()
        )
        self._relay_jobs.put_nowait(RelayJob(nbytes, build, fut))
        return await fut

    async def _relay_batcher(self) -> None:
        assert self._relay_jobs is not None and self._carving is not None
        while True:
            jobs = [await self._relay_jobs.get()]
            while not self._relay_jobs.empty() and len(jobs) < _MAX_BATCH:
                jobs.append(self._relay_jobs.get_nowait())
            try:
                async with self._carving:  # carved and sent in the order the peer applies them
                    await self._send_relays(jobs)
            except asyncio.CancelledError:
                for job in jobs:
                    if not job.future.done():
                        job.future.set_result((relay_fail("KME is shutting down"), None))
                raise
            except Exception as err:
                reason = getattr(err, "message", type(err).__name__)
                for job in jobs:
                    if not job.future.done():
                        job.future.set_result((relay_fail(f"{self.name}: {reason}"), None))

    async def _send_relays(self, jobs: list[RelayJob]) -> None:
        assert self.client is not None
        try:  # a peer that is down costs no pad
            await self.client.connect()
        except PeerError as err:
            self._outage.failed(err)
            for job in jobs:
                job.future.set_result(
                    (relay_fail(f"{self.name} unreachable", node=self.name), None)
                )
            return
        # the pads are consumed here before any of them leaves (a restart never sends one again)
        pads = await self.db(
            self.store.carve, [j.nbytes for j in jobs], self.leader, self.name, True
        )
        await self.post_relays(jobs, pads)

    async def post_relays(self, jobs: list[RelayJob], pads: list[Allocation | None]) -> None:
        """Send relay requests whose pads were carved (consumed) here, in one message, and
        settle each job with the peer's answer; the caller holds the link's carving lock."""
        me = self.service.settings.kme_id
        assert self.client is not None
        sent: list[tuple[RelayJob, Allocation]] = []
        bodies = []
        for job, alloc in zip(jobs, pads, strict=True):
            if alloc is None:
                job.future.set_result(
                    (relay_fail(f"no key on link {me}-{self.name}", (me, self.name)), None)
                )
                continue
            req = job.build(alloc)
            self.service.relay.audit(req.relay_id, self.name, alloc.pieces)
            sent.append((job, alloc))
            bodies.append(req.to_json())
        if not sent:
            return
        timeout = max(b["ttl_s"] for b in bodies)
        try:
            if timeout <= 0:
                raise PeerError("relay deadline passed")
            data = await self.client.post(RELAY_PATH, {"requests": bodies}, timeout)
            answers = data.get("answers")
            if not isinstance(answers, list) or len(answers) != len(sent):
                raise PeerError("peer KMS answered a malformed relay result")
        except PeerError as err:
            self._outage.failed(err)
            for job, _ in sent:
                job.future.set_result(
                    (relay_fail(f"{self.name} unreachable", node=self.name), None)
                )
            return
        self.peer_ok()
        for (job, alloc), answer in zip(sent, answers, strict=True):
            if not isinstance(answer, dict) or not isinstance(answer.get("ok"), bool):
                answer = relay_fail(
                    f"{self.name} answered a malformed relay result", node=self.name
                )
            job.future.set_result((answer, alloc))

    async def hold_for_relay(self) -> bool:
        """Take the link's carving lock if it is free and the peer is connected (then the
        caller carves relay pads itself, see :meth:`post_relays`, and must call
        :meth:`release`); False (nothing held) otherwise."""
        assert self._carving is not None and self.client is not None
        if self._carving.locked():
            return False
        await self._carving.acquire()
        try:
            await self.client.connect()
        except PeerError as err:
            self._outage.failed(err)
            self._carving.release()
            return False
        return True

    def release(self) -> None:
        """Give back the carving lock taken by :meth:`hold_for_relay`."""
        assert self._carving is not None
        self._carving.release()

    @property
    def store(self) -> KeyStore:
        """The node's store (this link's pool is the rows with ``link == self.name``)."""
        return self.service.store

    async def db(self, fn: Callable[..., T], *args: Any) -> T:
        """See :meth:`KMSService.db`."""
        return await self.service.db(fn, *args)

    def start(self) -> None:
        """Open the peer channel; start the batcher and the maintenance loop."""
        tls = self.service.settings.tls
        self.client = PeerClient(
            self.peer.url, tls.ca, tls.cert, tls.key, self.peer.timeout_s,
            expected_kme=self.peer.kme_id,
        )  # fmt: skip
        self._queue = asyncio.Queue()
        self._carving = asyncio.Lock()
        self._gathered = asyncio.Event()
        self._reconcile_due = asyncio.Event()
        self._reconcile_due.set()
        self._relay_jobs = asyncio.Queue()
        self._tasks = [
            asyncio.create_task(self._batcher(), name=f"kms-batcher-{self.name}"),
            asyncio.create_task(self._relay_batcher(), name=f"kms-relay-{self.name}"),
            asyncio.create_task(self._maintenance(), name=f"kms-maintenance-{self.name}"),
        ]

    async def stop(self) -> None:
        """Stop the background tasks and close the peer channel."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self.client is not None:
            await self.client.aclose()

    async def _maintenance(self) -> None:
        settings = self.service.settings
        next_reconcile = 0.0
        while True:
            try:
                await self.ingest_and_sync()
                assert self._reconcile_due is not None
                if self.leader and (
                    self._reconcile_due.is_set() or time.monotonic() >= next_reconcile
                ):
                    self._reconcile_due.clear()
                    await self.reconcile()
                    next_reconcile = time.monotonic() + settings.reconcile_interval_s
            except asyncio.CancelledError:
                raise
            except PeerError as err:
                self._outage.failed(err)
            except Exception as err:  # keep serving; the next pass retries
                log.warning(
                    "maintenance pass of link %s failed: %s",
                    self.name,
                    getattr(err, "message", type(err).__name__),
                )
            await asyncio.sleep(settings.ingest_interval_s)

    def peer_ok(self) -> None:
        """Record a successful call to the peer (ends an outage; a reconnection means the peer
        may have restarted: compare the pools soon)."""
        assert self.client is not None and self._reconcile_due is not None
        if self._outage.ok() or self.client.reconnected:
            self.client.reconnected = False
            self._reconcile_due.set()

    async def ingest_and_sync(self) -> None:
        """Ingest the link's folder (if any) and confirm new blocks with the peer."""
        folder = self.peer.key_blocks_dir
        lim = self.service.limits
        if folder is not None and folder.is_dir():
            await self.db(
                functools.partial(
                    ingest_folder,
                    self.store,
                    folder,
                    capacity_bytes=lim.max_key_count * lim.key_size // 8,
                    remove=self.service.settings.remove_ingested_blocks,
                    link=self.name,
                )
            )
        await self.sync_blocks()

    async def sync_blocks(self) -> int:
        """Mark as shared the blocks both KMS hold; number newly shared."""
        assert self.client is not None
        pending = await self.db(functools.partial(self.store.unshared_block_ids, link=self.name))
        if not pending:
            return 0
        held = await self.client.blocks(pending)
        self.peer_ok()
        await self.db(self.store.mark_shared, held, self.name)
        return len(held)

    async def reconcile(self) -> int:
        """Leader: agree with the peer on the consumed bytes of every shared block (union);
        bytes newly consumed on both sides together."""
        assert self.client is not None and self._carving is not None
        total = 0
        async with self._carving:  # no group of ours in flight
            ids = await self.db(self.store.shared_block_ids, self.name)
            for i in range(0, len(ids), RECONCILE_BLOCKS_PER_CALL):
                chunk = ids[i : i + RECONCILE_BLOCKS_PER_CALL]
                mine = await self.db(self.store.segment_state, chunk, self.name)
                theirs, their_count = await self.client.consumed(mine)
                self.peer_ok()
                total += their_count + await self.db(
                    self.store.merge_segment_state, theirs, self.name
                )
        self.service.reconciled(total)
        if total:
            log.warning("reconciliation with peer KME %s: %d byte(s) consumed on one side only "
                        "are now consumed on both", self.name, total)  # fmt: skip
        return total

    async def peer_consumed(
        self, state: dict[str, list[list[int]]]
    ) -> tuple[dict[str, list[list[int]]], int]:
        """Follower side of :meth:`reconcile`: merge the leader's state, answer ours."""
        assert self._carving is not None
        async with self._carving:  # no group of ours in flight
            count = await self.db(self.store.merge_segment_state, state, self.name)
            self.service.reconciled(count)
            return await self.db(self.store.segment_state, list(state), self.name), count

    async def peer_inventory(self, block_ids: list[str]) -> list[str]:
        """Peer asks which blocks we hold; the ones we hold become shared here too."""
        held = await self.db(self.store.held_block_ids, block_ids, self.name)
        await self.db(self.store.mark_shared, held, self.name)
        return held

    async def apply_peer_allocations(
        self, items: list[tuple[list[Piece], list[KeySpec]]]
    ) -> list[bool]:
        """Apply the peer's carvings; keep only keys whose slaves are served here."""
        mine = set(self.service.settings.saes)
        local = [
            (pieces, [(k, b, m, [s for s in sl if s in mine]) for k, b, m, sl in specs])
            for pieces, specs in items
        ]
        return await self.db(self.store.apply_allocations, local, not self.leader, self.name)

    # --- enc_keys batching --------------------------------------------------------------------

    async def enc_keys(
        self, master: str, slaves: list[str], number: int, size_bits: int
    ) -> tuple[list[tuple[str, bytes]], bool]:
        """New keys for ``master`` from this link's pool, reserved for ``slaves`` at both KMS of
        the link before returning; and whether any comes from a simulated link (not secret)."""
        assert self._queue is not None and self._gathered is not None, "link not started"
        fut: asyncio.Future[tuple[list[tuple[str, bytes]], bool]] = (
            asyncio.get_running_loop().create_future()
        )
        self._enc_active += 1
        self._enc_peak = max(self._enc_peak, self._enc_active)
        try:
            self._queue.put_nowait(_EncJob(master, slaves, number, size_bits, fut))
            if self._queue.qsize() >= self._gather_want:
                self._gathered.set()
            return await fut
        finally:
            self._enc_active -= 1

    async def _batcher(self) -> None:
        assert self._queue is not None and self._carving is not None
        assert self._gathered is not None
        while True:
            jobs = [await self._queue.get()]
            try:
                await self._gather()
                while not self._queue.empty() and len(jobs) < _MAX_BATCH:
                    jobs.append(self._queue.get_nowait())
                async with self._carving:
                    await self._run_batch(jobs)
            except asyncio.CancelledError:
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(KMSError(503, "KME is shutting down"))
                raise
            except KMSError as err:
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(err)
            except Exception as err:
                log.error("enc_keys batch failed: %s", type(err).__name__)
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(KMSError(503, "key data access error"))

    async def _gather(self) -> None:
        """Wait a little (at most ``GATHER_S``) for the next batch to fill.

        A batch costs nearly the same for 1 request as for 16 (a peer round trip and two
        commits) and one is in flight at a time: a batch started at once with the few requests
        that came in during the last one leaves the others (answered by the last batch) waiting
        a whole batch more, and under load batches alternate between many and few requests
        (half the throughput). So the batcher waits until as many requests are queued as were
        in progress during the last batch; a lone client never waits.
        """
        assert self._queue is not None and self._gathered is not None
        want = min(self._enc_peak, _MAX_BATCH)
        self._enc_peak = self._enc_active
        if self._queue.qsize() + 1 >= want:
            return
        self._gather_want = want - 1
        self._gathered.clear()
        try:
            async with asyncio.timeout(GATHER_S):
                await self._gathered.wait()
        except TimeoutError:
            pass
        finally:
            self._gather_want = 0

    async def _run_batch(self, jobs: list[_EncJob]) -> None:
        assert self.client is not None
        front = self.leader
        allocs = await self.db(
            self.store.plan, [j.number * j.size_bits // 8 for j in jobs], front, self.name
        )
        live: list[tuple[_EncJob, Allocation, list[str]]] = []
        items: list[tuple[list[Piece], list[KeySpec]]] = []
        peer_saes = set(self.peer.saes)
        mine = set(self.service.settings.saes)
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
            accepted = await self.client.allocations(items)
        except PeerError as err:
            self._outage.failed(err)
            for job, _, _ in live:  # nothing was consumed here: the outage costs no key
                job.future.set_exception(KMSError(503, f"peer KME {self.name} is unreachable"))
            return
        self.peer_ok()
        # consume here what the peer consumed; bytes it refused (it had consumed some of them:
        # only after a crash or a lost answer) are consumed here too and never handed out
        batch: list[tuple[list[Piece], list[Reservation]]] = []
        for (job, alloc, ids), ok in zip(live, accepted, strict=True):
            local = [s for s in job.slaves if s in mine] if ok else []
            batch.append((alloc.pieces, [(k, job.size_bits, job.master, local) for k in ids]))
        assert self._queue is not None and self._reconcile_due is not None
        try:
            applied = await self.db(self.store.apply_allocations, batch, front, self.name)
        except KMSError:  # the peer consumed these bytes, this store could not: reconcile soon
            self._reconcile_due.set()
            raise
        for (job, alloc, ids), ok, done in zip(live, accepted, applied, strict=True):
            if not ok and job.tries < 2:
                # the peer had consumed some of these bytes (a crash or a lost answer): they are
                # consumed here too now, and the request goes again with fresh bytes
                job.tries += 1
                self._reconcile_due.set()
                self._queue.put_nowait(job)
                continue
            if not (ok and done):
                job.future.set_exception(KMSError(503, "not enough key material available"))
                continue
            n = job.size_bits // 8
            cut = [(k, alloc.material[i * n : (i + 1) * n]) for i, k in enumerate(ids)]
            if not job.future.done():
                job.future.set_result((cut, alloc.simulated))


class KMSService:
    """One KMS node. Create, ``await start()``, use, ``await stop()``."""

    def __init__(self, settings: KMSSettings, store: KeyStore | None = None) -> None:
        assert settings.database_url is not None, "use resolved settings"
        self.settings = settings
        self.limits = settings.limits
        self.store = store or open_store(settings)
        self.links: dict[str, PeerLink] = {p.kme_id: PeerLink(self, p) for p in settings.peers}
        self.relay = Relay(self)
        self._tasks: list[asyncio.Task[None]] = []
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="kms-db")
        self._takes: asyncio.Queue[_TakeJob] | None = None
        self.expired_keys = 0
        self.reconciled_bytes = 0
        self.last_reconciled: float | None = None

    async def db(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a store call in the thread pool (bulk work: ingestion, reconciliation, expiry,
        summaries); a busy store answers 503."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, functools.partial(fn, *args))
        except StoreBusyError as err:
            raise KMSError(503, f"key store busy, try again ({err})") from None

    def reconciled(self, nbytes: int) -> None:
        """Count a reconciliation (of any link) and the bytes it consumed."""
        self.reconciled_bytes += nbytes
        self.last_reconciled = time.time()

    def link(self, kme_id: str | None) -> PeerLink | None:
        """The link to neighbour ``kme_id`` (None: not a neighbour)."""
        return self.links.get(kme_id) if kme_id is not None else None

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the peer channels and start every link's batcher and maintenance loop."""
        if len(self.links) == 1:  # a store made before pools per link belongs to the one link
            with contextlib.suppress(KMSError):
                await self.db(self.store.adopt_unlinked, next(iter(self.links)))
        with contextlib.suppress(KMSError):
            await self.db(self.store.collect_orphans)
        for link in self.links.values():
            link.start()
        self._takes = asyncio.Queue()
        self._tasks = [
            asyncio.create_task(self._housekeeping(), name="kms-housekeeping"),
            asyncio.create_task(self._take_batcher(), name="kms-dec-keys"),
        ]

    async def stop(self) -> None:
        """Stop background work and close the peer channels and the database pool."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        await self.relay.stop()
        for link in self.links.values():
            await link.stop()
        self._pool.shutdown(wait=True)
        self.store.close()

    async def _housekeeping(self) -> None:
        """Node-wide periodic work: expiry of reserved keys nobody collected (relayed ones
        included)."""
        while True:
            try:
                ttl = self.settings.reserved_key_ttl_s
                if ttl is not None:
                    self.expired_keys += await self.db(self.store.expire_reserved, ttl)
            except asyncio.CancelledError:
                raise
            except Exception as err:  # keep serving; the next pass retries
                log.warning(
                    "housekeeping pass failed: %s", getattr(err, "message", type(err).__name__)
                )
            await asyncio.sleep(self.settings.ingest_interval_s)

    # --- ETSI GS QKD 014 logic -----------------------------------------------------------------

    def check_slave(self, master: str, slave: str) -> str:
        """KME serving ``slave``; raises 400 for unknown SAEs or a self-addressed request."""
        kme = self.settings.kme_of(slave)
        if kme is None:
            raise KMSError(400, f"SAE ID {slave!r} is not known to this KME")
        if slave == master and not self.settings.allow_self_addressed:
            raise KMSError(400, "the slave SAE ID shall differ from the master SAE ID")
        return kme

    def target_of(self, slaves: list[str]) -> str:
        """The one KME (other than this one, if any) serving ``slaves``; 400 if several."""
        kmes = {str(self.settings.kme_of(s)) for s in slaves} - {self.settings.kme_id}
        if len(kmes) > 1:
            raise KMSError(
                400, "the slave SAEs of one request shall be served by one KME "
                f"(here: {', '.join(sorted(kmes))})",
            )  # fmt: skip
        return kmes.pop() if kmes else self.settings.kme_id

    def is_relayed(self, slaves: list[str]) -> bool:
        """Whether keys for ``slaves`` would be relayed (no QKD link to their KME)."""
        target = self.target_of(slaves)
        return target != self.settings.kme_id and self.link(target) is None

    async def status(self, master: str, slave: str) -> dict[str, object]:
        """Spec Table 9 for ``master`` asking about keys shared with ``slave``, with the
        ``status_extension`` of this KME (simulated key material, expiries, reconciliation,
        every link's pool)."""
        target = self.check_slave(master, slave)
        lim = self.limits
        link = self.link(target) or (
            next(iter(self.links.values()))
            if target == self.settings.kme_id
            else self.link(self.relay.first_hop(target))  # a relayed key starts on this link
        )
        summary = await self.db(self.store.pool_summary, link.name if link else None)
        stored = summary["shared_bytes"] * 8 // lim.key_size if link is not None else 0
        per_link = await self.db(self.store.link_summary)
        empty = {"stored_key_bytes": 0, "blocks_ingested": 0}
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
            "status_extension": {
                "qdnet_simulated": summary["simulated_bytes"] > 0,
                "qdnet_simulated_key_count": summary["simulated_bytes"] * 8 // lim.key_size,
                "qdnet_reserved_key_count": summary["reserved_keys"],
                "qdnet_reserved_key_ttl_s": self.settings.reserved_key_ttl_s,
                "qdnet_expired_reserved_keys": self.expired_keys,
                "qdnet_reconciled_bytes": self.reconciled_bytes,
                "qdnet_links": {name: per_link.get(name, empty) for name in self.links},
                "qdnet_relay": self.relay.counters.as_dict(),
            },
        }

    async def enc_keys(
        self, master: str, slaves: list[str], number: int, size_bits: int
    ) -> tuple[list[tuple[str, bytes]], bool]:
        """New keys for ``master``, reserved for ``slaves`` at their KMS before returning; and
        whether any of them comes from a simulated link (not secret)."""
        target = self.target_of(slaves)
        link = self.link(target)
        if link is None and target == self.settings.kme_id:
            link = next(iter(self.links.values()))  # only slaves served here (tests)
        if link is None:
            return await self.relay.originate(master, slaves, number, size_bits, target)
        return await link.enc_keys(master, slaves, number, size_bits)

    async def dec_keys(self, master: str, caller: str, key_ids: list[str]) -> list[StoredKey]:
        """The keys ``key_ids`` that ``master`` obtained for ``caller``; each handed out once."""
        assert self._takes is not None, "service not started"
        future: asyncio.Future[tuple[TakeOutcome, list[StoredKey]]] = (
            asyncio.get_running_loop().create_future()
        )
        self._takes.put_nowait(_TakeJob(key_ids, master, caller, future))
        outcome, found = await future
        if outcome is TakeOutcome.NOT_FOUND:
            raise KMSError(400, "one or more keys specified are not found on KME")
        if outcome is TakeOutcome.UNAUTHORIZED:
            raise KMSError(
                401, "the requesting SAE is not a slave SAE of one or more of the specified keys"
            )
        return found

    async def _take_batcher(self) -> None:
        """Group commit of ``dec_keys``: the requests that arrived while the last batch was in
        the store are answered together in one transaction (:meth:`KeyStore.take_many`), so
        concurrent SAEs share one fsync and one trip to the database thread."""
        assert self._takes is not None
        while True:
            jobs = [await self._takes.get()]
            count = len(jobs[0].key_ids)
            while not self._takes.empty() and count < _MAX_TAKE_IDS:
                jobs.append(self._takes.get_nowait())
                count += len(jobs[-1].key_ids)
            jobs = [j for j in jobs if not j.future.done()]  # a caller gone: its keys stay
            if not jobs:
                continue
            requests = [(j.key_ids, j.master, j.caller) for j in jobs]
            try:
                answers = await self.db(self.store.take_many, requests)
            except asyncio.CancelledError:
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(KMSError(503, "KME is shutting down"))
                raise
            except Exception as err:  # e.g. KMSError 503 (store busy): every job gets it
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(err)
                continue
            for job, answer in zip(jobs, answers, strict=True):
                if not job.future.done():
                    job.future.set_result(answer)
