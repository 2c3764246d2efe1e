"""Key relay between trusted nodes (:mod:`qdnet.kms.relay`): a 3-node line, a 4-node ring with
an empty hop, who may fetch a relayed key, who may complete a relay, and the pad halves."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from qdnet.kms.client import KMEError
from qdnet.kms.peer import RELAY_COMPLETION_PATH, PeerClient, PeerError
from qdnet.kms.pki import PKI
from qdnet.kms.relay import Relay
from qdnet.kms.store import IncomingPad, KeyStore, OnwardPads, TakeOutcome, xor
from qdnet.kms.topology import KMSMesh, start_mesh
from tests.kms.conftest import (
    BACKENDS,
    PG_ENV,
    pg_admin_url,
    pg_databases,
    reserved_leaves,
    write_blocks,
)
from tests.kms.test_kms_topology import feed, links_status, mesh_pki, wait_stored

__all__ = ["mesh_pki"]  # the module-scoped PKI fixture of test_kms_topology

FAST = {"ingest_interval_s": 0.05}


@pytest.fixture(params=BACKENDS)
def line(request: pytest.FixtureRequest, tmp_path: Path, mesh_pki: PKI) -> Iterator[KMSMesh]:
    """kme-a -- kme-c -- kme-b: app-a and app-b share no link; kme-b serves app-x too (SQLite,
    and PostgreSQL when ``QDNET_TEST_POSTGRES_URL`` reaches a server)."""
    feed(tmp_path, "kme-a", "kme-c", 2)
    feed(tmp_path, "kme-c", "kme-b", 2)
    kmes = ["kme-a", "kme-b", "kme-c"]
    with contextlib.ExitStack() as stack:
        dbs = None
        if request.param == "postgresql":
            url = pg_admin_url()
            if url is None:
                pytest.skip(f"no PostgreSQL server at {PG_ENV}")
            dbs = dict(zip(kmes, stack.enter_context(pg_databases(url, 3)), strict=True))
        mesh = stack.enter_context(
            start_mesh(
                tmp_path,
                mesh_pki,
                nodes={"kme-a": ["app-a"], "kme-b": ["app-b", "app-x"], "kme-c": ["app-c"]},
                links=[("kme-a", "kme-c"), ("kme-c", "kme-b")],
                database_urls=dbs,
                extra=FAST,
            )
        )
        wait_stored(mesh, "app-c", "app-a", {"kme-a": 2 * 8192, "kme-b": 2 * 8192})
        yield mesh


def test_relay_through_a_trusted_node(line: KMSMesh) -> None:
    with line.client("app-a") as a, line.client("app-b") as b:
        st = a.status("app-b")
        assert st["target_KME_ID"] == "kme-b" and st["stored_key_count"] > 0
        keys = a.enc_keys("app-b", 3, 512)
        back = b.dec_keys("app-a", [k.key_id for k in keys])
        assert [k.key for k in back] == [k.key for k in keys]
        assert len({k.key for k in keys}) == 3
        with pytest.raises(KMEError) as err:  # once only
            b.dec_keys("app-a", [keys[0].key_id])
        assert err.value.status == 400
        # the other direction, and a key for a node two hops away asked at the middle node
        k2 = b.enc_keys("app-a", 1, 256)[0]
        assert a.dec_keys("app-b", [k2.key_id])[0].key == k2.key
    # every hop paid for the key: 3 x 64 + 32 bytes on each link, at both of its ends
    for sae, slave in (("app-c", "app-a"), ("app-a", "app-c"), ("app-b", "app-c")):
        for v in links_status(line, sae, slave)["qdnet_links"].values():
            assert v["stored_key_bytes"] == 2 * 8192 - 3 * 64 - 32
    assert links_status(line, "app-a", "app-b")["qdnet_relay"] == {
        "originated": 1, "forwarded": 0, "terminated": 1, "failed": 0,
    }  # fmt: skip
    assert links_status(line, "app-c", "app-a")["qdnet_relay"]["forwarded"] == 2


def test_concurrent_relays_and_direct_keys_share_a_link(line: KMSMesh) -> None:
    """Relayed keys (a -> c -> b) and direct keys (a -> c) carved from the same end of link
    a-c at the same time: every request is served (the peer applies the pads in the order they
    were carved, none is refused as already consumed)."""
    results: list[tuple[str, list[tuple[str, bytes]]]] = []
    errors: list[str] = []

    def run(slave: str) -> None:
        with line.client("app-a") as a:
            for _ in range(8):
                try:
                    keys = a.enc_keys(slave, 1, 256)
                except KMEError as err:
                    errors.append(err.message)
                    continue
                results.append((slave, [(k.key_id, k.key) for k in keys]))

    threads = [threading.Thread(target=run, args=(s,)) for s in ("app-b", "app-c") * 3]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == [] and len(results) == 48
    with line.client("app-b") as b, line.client("app-c") as c:
        for slave, keys in results:
            got = (b if slave == "app-b" else c).dec_keys("app-a", [k for k, _ in keys])
            assert [g.key for g in got] == [m for _, m in keys]


def test_only_the_slave_at_its_own_node_fetches_a_relayed_key(line: KMSMesh) -> None:
    with line.client("app-a") as a:
        key = a.enc_keys("app-b", 1, 256)[0]
    for sae, node in (("app-b", "kme-c"), ("app-b", "kme-a"), ("app-x", "kme-b")):
        with line.client(sae, at=node) as c, pytest.raises(KMEError) as err:
            c.dec_keys("app-a", [key.key_id])
        assert err.value.status == 401, (sae, node)
    with line.client("app-b") as b:
        assert b.dec_keys("app-a", [key.key_id])[0].key == key.key


def test_a_far_end_that_is_down_costs_almost_no_key(line: KMSMesh) -> None:
    """kme-b stopped: the first relay fails at kme-c, which cannot connect to kme-b and so
    consumes no pad of link c-b (only the a-c pad of that one request is burned); the next
    requests are refused at kme-a at once (kme-b was not reached lately), spending nothing."""
    before = links_status(line, "app-c", "app-a")["qdnet_links"]
    line.nodes["kme-b"].stop()
    with line.client("app-a") as a:
        for _ in range(5):
            with pytest.raises(KMEError) as err:
                a.enc_keys("app-b", 2, 256)
            assert err.value.status == 503 and "kme-b unreachable" in err.value.message
    after = links_status(line, "app-c", "app-a")["qdnet_links"]
    assert after["kme-b"] == before["kme-b"]
    assert after["kme-a"]["stored_key_bytes"] == before["kme-a"]["stored_key_bytes"] - 64
    assert links_status(line, "app-a", "app-c")["qdnet_relay"]["failed"] == 5


def test_a_relayed_request_cannot_insist_on_a_direct_route(line: KMSMesh) -> None:
    with line.client("app-a") as a, pytest.raises(KMEError) as err:
        a.enc_keys("app-b", 1, 256, extension_mandatory=[{"qdnet_route_type": "direct"}])
    assert err.value.status == 400 and "could be met" in err.value.message
    with line.client("app-c") as c:  # a neighbour: direct
        c.enc_keys("app-a", 1, 256, extension_mandatory=[{"qdnet_route_type": "direct"}])


def test_an_empty_hop_is_routed_around_then_503_names_every_reason(
    tmp_path: Path, mesh_pki: PKI
) -> None:
    """Ring a-c-b-d-a: c-b holds no key, so a relays to b through d; once d-b is used up as
    well, a answers 503 with every path's reason in one line."""
    feed(tmp_path, "kme-a", "kme-c", 2)
    feed(tmp_path, "kme-a", "kme-d", 2)
    feed(tmp_path, "kme-d", "kme-b", 1, 4096)
    with start_mesh(
        tmp_path,
        mesh_pki,
        nodes={"kme-a": ["app-a"], "kme-b": ["app-b"], "kme-c": ["app-c"], "kme-d": ["app-d"]},
        links=[("kme-a", "kme-c"), ("kme-c", "kme-b"), ("kme-b", "kme-d"), ("kme-d", "kme-a")],
        extra=FAST,
    ) as ring:
        wait_stored(ring, "app-d", "app-a", {"kme-a": 2 * 8192, "kme-b": 4096})
        wait_stored(ring, "app-a", "app-c", {"kme-c": 2 * 8192})
        delivered = []
        with ring.client("app-a") as a, ring.client("app-b") as b:
            # kme-d sends from its own half of each segment of d-b: 2048 bytes = 4 requests
            for _ in range(4):
                keys = a.enc_keys("app-b", 16, 256)
                back = b.dec_keys("app-a", [k.key_id for k in keys])
                assert [k.key for k in back] == [k.key for k in keys]
                delivered += keys
            with pytest.raises(KMEError) as err:
                a.enc_keys("app-b", 16, 256)
        assert err.value.status == 503
        message = err.value.message
        assert message.startswith("no relay path to KME kme-b could deliver the keys: ")
        assert "via kme-a-kme-d-kme-b: no key on link kme-d-kme-b" in message
        # the path through kme-c was left out: its reason is remembered for a while
        assert "lately: no key on link kme-c-kme-b, no key on link kme-d-kme-b" in message
        assert "\n" not in message
        assert links_status(ring, "app-d", "app-a")["qdnet_relay"]["forwarded"] == 4
        assert links_status(ring, "app-c", "app-a")["qdnet_relay"]["forwarded"] == 0
        assert links_status(ring, "app-a", "app-c")["qdnet_relay"]["failed"] == 1
        assert len({k.key for k in delivered}) == 64


def test_relay_completions_come_only_from_the_network_and_success_only_from_the_far_end(
    line: KMSMesh,
) -> None:
    """The completion route of kme-a's peer API takes calls from any KME of the network (kme-b
    is no neighbour of kme-a), never from an SAE; a completion for a relay kme-a does not wait
    for is refused; a success is accepted only from the relay's far end, a failure from a node
    of its path only."""
    ack_url = line.nodes["kme-a"].settings.relay_ack_url()

    async def post(name: str, body: dict[str, object]) -> dict[str, object]:
        cred = line.pki.credential(name)
        client = PeerClient(ack_url, line.pki.ca_cert, cred.cert, cred.key, 5.0,
                            expected_kme="kme-a")  # fmt: skip
        try:
            return await client.post(RELAY_COMPLETION_PATH, body)
        finally:
            await client.aclose()

    path = ["kme-a", "kme-c", "kme-b"]
    body = {"relay_id": "r-unknown", "path": path, "ok": True, "simulated": False}
    answer = asyncio.run(post("kme-b", body))
    assert answer["ok"] is False and "not awaited" in str(answer["reason"])
    with pytest.raises(PeerError, match=r"HTTP 401|unreachable"):  # 401, or the line cut
        asyncio.run(post("app-b", body))
    with pytest.raises(PeerError, match="HTTP 400"):
        asyncio.run(post("kme-b", {**body, "ok": "yes"}))

    relay = Relay(cast(Any, SimpleNamespace(settings=line.nodes["kme-a"].settings)))

    async def judge(sender: str, ok: bool) -> tuple[dict[str, Any], bool]:
        done: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        relay._waiting["r1"] = (done, path)
        answer = {"ok": ok, "reason": "", "avoid_link": None, "avoid_node": None,
                  "simulated": False}  # fmt: skip
        return relay.on_completion(sender, "r1", path, answer), done.done()

    assert asyncio.run(judge("kme-b", True)) == ({"ok": True, "reason": ""}, True)
    for sender, ok in (("kme-c", True), ("kme-x", False), ("kme-a", False)):
        got, settled = asyncio.run(judge(sender, ok))
        assert got["ok"] is False and not settled, (sender, ok)
    assert asyncio.run(judge("kme-c", False))[0]["ok"] is True  # a middle node's failure


def test_the_far_end_keeps_relayed_keys_with_their_pad_once(tmp_path: Path) -> None:
    store = KeyStore(f"sqlite:///{tmp_path / 's.sqlite'}")
    try:
        (block,) = write_blocks([tmp_path / "x"], 1, 4096)
        store.ingest(block, link="p")
        store.mark_shared([block.block_id], "p")
        ids = [str(uuid.uuid4()) for _ in range(2)]
        for i, relay in enumerate(("r1", "r2")):
            (plan,) = store.plan([32], True, "p", True)
            assert plan is not None
            cipher = bytes(range(32))
            keep = (relay, [(ids[i], 256, "app-a", ["app-b"])])
            (hop,) = store.relay_receive([IncomingPad(plan.pieces, True, "p", cipher, keep)])
            assert hop is not None and hop.key == xor(cipher, plan.material)
            # the same pad twice: refused, nothing kept
            again = IncomingPad(plan.pieces, True, "p", cipher, ("again", []))
            assert store.relay_receive([again]) == [None]
            leaf = reserved_leaves(store)[ids[i]]
            assert store.take_keys([ids[i]], "app-a", "app-x")[0] is TakeOutcome.UNAUTHORIZED
            outcome, got = store.take_keys([ids[i]], "app-a", "app-b")
            assert outcome is TakeOutcome.OK and got[0].material == hop.key
            assert not store.keyring.holds(leaf)
        assert store.reserved_key_ids() == {}
        assert store.available_bytes("p") == 4096 - 2 * 32
    finally:
        store.close()


def test_a_middle_node_carves_the_next_pads_in_the_receiving_transaction(tmp_path: Path) -> None:
    """relay_receive with OnwardPads: the incoming pads of link "in" are consumed and the next
    hop's pads carved from this end's half of link "out" at once; a refused incoming pad gets
    no next pad, and a link without enough key gives None."""
    store = KeyStore(f"sqlite:///{tmp_path / 's.sqlite'}")
    try:
        (b_in,) = write_blocks([tmp_path / "x"], 1, 4096)
        (b_out,) = write_blocks([tmp_path / "y"], 1, 150)
        store.ingest(b_in, link="in")
        store.ingest(b_out, link="out")
        store.mark_shared([b_in.block_id], "in")
        store.mark_shared([b_out.block_id], "out")
        plans = store.plan([32, 32, 64], True, "in", True)
        assert all(p is not None for p in plans)
        pads = [IncomingPad(p.pieces, True, "in", bytes(len(p.material)))
                for p in plans if p is not None]  # fmt: skip
        onward = OnwardPads("out", False, [0, 1, 2])
        refused = IncomingPad(pads[0].pieces, True, "in", None)  # the same bytes again
        hops = store.relay_receive([pads[0], refused, pads[2]], [onward])
        assert hops[0] is not None and hops[1] is None and hops[2] is not None
        first, none, third = (onward.pads[i] for i in (0, 1, 2))
        assert first is not None and none is None and third is None  # 75-byte half: 32 fit
        assert first.material == b_out.key[150 - 32 :]  # from the back: not the leader's end
        assert store.available_bytes("in") == 4096 - 128  # up to the end of the last pad
        assert store.available_bytes("out") == 150 - 32
    finally:
        store.close()


def test_the_two_ends_carve_relay_pads_from_disjoint_halves(tmp_path: Path) -> None:
    store = KeyStore(f"sqlite:///{tmp_path / 's.sqlite'}")
    try:
        blocks = write_blocks([tmp_path / "x"], 2, 5000)  # segments of 4096 and 904 bytes
        for b in blocks:
            store.ingest(b, link="p")
        store.mark_shared([b.block_id for b in blocks], "p")
        used: set[tuple[str, int]] = set()
        total = 0
        for front in (True, False) * 200:
            (alloc,) = store.carve([97], front, "p")
            if alloc is None:
                continue
            for p in alloc.pieces:
                span = {(p.block_id, o) for o in range(p.offset, p.offset + p.length)}
                assert not span & used
                used |= span
                seg_start = p.offset - p.offset % 4096
                seg_len = min(4096, 5000 - seg_start)
                mid = seg_start + seg_len // 2
                assert (p.offset + p.length <= mid) if front else (p.offset >= mid)
            total += 97
        assert 10000 - 4 * 97 <= total <= 10000
        assert store.carve([97], True, "p") == [None] and store.carve([97], False, "p") == [None]
    finally:
        store.close()
