"""A KMS with several peers (``peers:``): one key pool per link, settings of a network
(:func:`qdnet.kms.topology.mesh_settings`), and the peer listener routing each neighbour to
its own link."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from qdnet.kms.client import KMEError
from qdnet.kms.link import link_settings
from qdnet.kms.pki import PKI, create_pki
from qdnet.kms.settings import SettingsError, dump_settings, settings_from_dict
from qdnet.kms.store import KeyStore, Piece
from qdnet.kms.tls import client_context
from qdnet.kms.topology import KMSMesh, mesh_settings, start_mesh
from tests.kms.conftest import write_blocks

KMES = ["kme-a", "kme-b", "kme-c", "kme-d"]
SAES = ["app-a", "app-b", "app-c", "app-d", "app-x"]


@pytest.fixture(scope="module")
def mesh_pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return create_pki(tmp_path_factory.mktemp("mesh-pki"), KMES, SAES)


def feed(work: Path, a: str, b: str, count: int, nbytes: int = 8192) -> None:
    """The same ``count`` blocks at both ends of link a-b (as the link's post-processing does)."""
    write_blocks([work / a / "keys" / b, work / b / "keys" / a], count, nbytes)


def links_status(mesh: KMSMesh, sae: str, slave: str) -> dict[str, Any]:
    with mesh.client(sae) as c:
        return dict(c.status(slave)["status_extension"])


def wait_stored(mesh: KMSMesh, sae: str, slave: str, want: dict[str, int], wait_s: float = 20):
    """Until the node of ``sae`` reports at least ``want`` stored bytes on each named link."""
    deadline = time.monotonic() + wait_s
    while True:
        links = links_status(mesh, sae, slave)["qdnet_links"]
        if all(links[k]["stored_key_bytes"] >= v for k, v in want.items()):
            return links
        assert time.monotonic() < deadline, links
        time.sleep(0.05)


@pytest.fixture
def line(tmp_path: Path, mesh_pki: PKI) -> Iterator[KMSMesh]:
    """kme-a -- kme-c -- kme-b; kme-c serves app-c; A-C has 2 blocks, C-B 3 blocks."""
    feed(tmp_path, "kme-a", "kme-c", 2)
    feed(tmp_path, "kme-c", "kme-b", 3)
    with start_mesh(
        tmp_path,
        mesh_pki,
        nodes={"kme-a": ["app-a"], "kme-b": ["app-b"], "kme-c": ["app-c"]},
        links=[("kme-a", "kme-c"), ("kme-c", "kme-b")],
        extra={"ingest_interval_s": 0.05},
    ) as mesh:
        yield mesh


def test_each_link_has_its_own_pool(line: KMSMesh) -> None:
    links = wait_stored(line, "app-c", "app-a", {"kme-a": 2 * 8192, "kme-b": 3 * 8192})
    assert links == {
        "kme-a": {"stored_key_bytes": 2 * 8192, "blocks_ingested": 2},
        "kme-b": {"stored_key_bytes": 3 * 8192, "blocks_ingested": 3},
    }
    with line.client("app-a") as a, line.client("app-c") as c, line.client("app-b") as b:
        assert a.status("app-c")["target_KME_ID"] == "kme-c"
        assert a.status("app-c")["stored_key_count"] == 2 * 8192 * 8 // 256
        ka = a.enc_keys("app-c", 4, 256)
        assert [k.key for k in c.dec_keys("app-a", [k.key_id for k in ka])] == [k.key for k in ka]
        kb = b.enc_keys("app-c", 2, 512)
        assert [k.key for k in c.dec_keys("app-b", [k.key_id for k in kb])] == [k.key for k in kb]
        kc = c.enc_keys("app-a", 1, 256)
        assert a.dec_keys("app-c", [kc[0].key_id])[0].key == kc[0].key
        # an SAE fetches keys addressed to it at its own node only
        with line.client("app-b", at="kme-c") as wrong, pytest.raises(KMEError) as err:
            wrong.dec_keys("app-a", [ka[0].key_id])
        assert err.value.status == 401
    links = links_status(line, "app-c", "app-a")["qdnet_links"]
    assert links["kme-a"]["stored_key_bytes"] == 2 * 8192 - 4 * 32 - 32
    assert links["kme-b"]["stored_key_bytes"] == 3 * 8192 - 2 * 64
    assert links_status(line, "app-a", "app-c")["qdnet_links"] == {
        "kme-c": {"stored_key_bytes": 2 * 8192 - 5 * 32, "blocks_ingested": 2}
    }


def test_peer_listener_takes_every_neighbour_and_no_one_else(line: KMSMesh, mesh_pki: PKI) -> None:
    wait_stored(line, "app-c", "app-a", {"kme-a": 1, "kme-b": 1})
    url = line.nodes["kme-a"].settings.peers[0].url  # kme-c's peer listener
    body = {"segment_bytes": 4096, "blocks": {}}
    for who, code in (("kme-a", 200), ("kme-b", 200), ("kme-d", 401), ("app-a", 401)):
        cred = mesh_pki.credential(who)
        with httpx.Client(verify=client_context(mesh_pki.ca_cert, cred.cert, cred.key)) as h:
            r = h.post(url + "/peer/v1/consumed", json=body)
            assert r.status_code == code, (who, r.text)


def test_a_link_never_applies_another_links_bytes(tmp_path: Path) -> None:
    store = KeyStore(f"sqlite:///{tmp_path / 's.sqlite'}")
    try:
        (block,) = write_blocks([tmp_path / "x"], 1, 4096)
        assert store.ingest(block, link="kme-b")
        store.mark_shared([block.block_id], "kme-b")
        store.mark_shared([block.block_id], "kme-a")  # the wrong link cannot share it
        assert store.available_bytes("kme-a") == 0
        item = ([Piece(block.block_id, 0, 32)], [("k", 256, "m", [])])
        assert store.apply_allocations([item], True, "kme-a") == [False]
        assert store.plan([32], True, "kme-a") == [None]
        assert store.apply_allocations([item], True, "kme-b") == [True]
        assert store.available_bytes("kme-b") == 4096 - 32
        assert not store.ingest(block, link="kme-a")  # a block ID belongs to one link
    finally:
        store.close()


def test_mesh_settings(tmp_path: Path, mesh_pki: PKI) -> None:
    out = mesh_settings(
        tmp_path,
        mesh_pki,
        nodes={"kme-a": ["app-a"], "kme-b": ["app-b"], "kme-c": [], "kme-d": ["app-d"]},
        links=[("kme-a", "kme-c"), ("kme-c", "kme-b"), ("kme-b", "kme-d")],
        ports={"kme-a": (1001, 2001), "kme-b": (1002, 2002)},
        extra={"relay": {"timeout_s": 4}, "limits": {"key_size": 512}},
    )
    c = out["kme-c"]
    assert c.saes == [] and [p.kme_id for p in c.peers] == ["kme-a", "kme-b"]
    assert c.peers[0].url == "https://127.0.0.1:2001" and c.peers[1].saes == ["app-b"]
    assert c.peers[0].key_blocks_dir == tmp_path.resolve() / "kme-c" / "keys" / "kme-a"
    assert c.peers[0].key_blocks_dir.is_dir()
    assert c.relay is not None and c.relay.timeout_s == 4 and c.relay.saes == {"app-d": "kme-d"}
    assert c.limits.key_size == 512 and c.limits.max_key_size == 8192
    assert out["kme-a"].listen.port == 1001 and out["kme-a"].kme_of("app-d") == "kme-d"
    assert str(tmp_path.resolve() / "kme-a" / "kme-a.sqlite") in str(out["kme-a"].database_url)
    # the YAML a user would write gives the same settings back
    again = settings_from_dict(yaml.safe_load(dump_settings(c)), tmp_path / "kme-c", "c.yaml")
    assert again == c
    for bad, field in (
        ({"links": [("kme-a", "kme-z")]}, "links[0]: unknown KME 'kme-z'"),
        ({"links": [("kme-a", "kme-a")]}, "to itself"),
        ({"links": [("kme-a", "kme-b"), ("kme-b", "kme-a")]}, "listed twice"),
        ({"nodes": {"kme-a": ["x"], "kme-b": ["x"]}}, "SAE 'x' is served by"),
    ):
        kw: dict[str, Any] = {"nodes": {"kme-a": ["app-a"], "kme-b": ["app-b"]}, "links": []}
        kw.update(bad)
        with pytest.raises(ValueError, match=field.replace("[", r"\[").replace("]", r"\]")):
            mesh_settings(tmp_path, mesh_pki, **kw)


def test_settings_peer_and_peers(tmp_path: Path, pki: PKI) -> None:
    one, _ = link_settings(tmp_path, pki, key_blocks_dirs=("ka", None), write_yaml=False)
    assert len(one.peers) == 1 and one.peers[0].key_blocks_dir == (tmp_path / "ka").resolve()
    raw = yaml.safe_load(dump_settings(one))
    peer = raw["peers"][0]

    def error(**changes: Any) -> str:
        doc = {k: v for k, v in raw.items() if k != "peers"} | changes
        with pytest.raises(SettingsError) as err:
            settings_from_dict(doc, tmp_path, "n.yaml")
        return str(err.value)

    assert "n.yaml: peer.url: Field required" in error(peer={"kme_id": "kme-bob"})
    assert "peers.1.url" in error(peers=[peer, {"kme_id": "kme-carol"}])
    assert "peer and peers" in error(peer=peer, peers=[peer])
    assert "key_blocks_dir: with peers" in error(peers=[peer], key_blocks_dir="x")
    assert "peers[1].kme_id: 'kme-bob'" in error(peers=[peer, peer])
    assert "saes: at least one SAE" in error(peers=[peer], saes=[])
    assert "relay.links[0]: a link from 'x' to itself" in error(
        peers=[peer], relay={"links": [["x", "x"]]}
    )
    assert "relay.saes: 'app-b' is served by 'kme-bob'" in error(
        peers=[peer], relay={"saes": {"app-b": "kme-z"}}
    )


def test_cli_ingest_names_the_link(tmp_path: Path, mesh_pki: PKI) -> None:
    from typer.testing import CliRunner

    from qdnet.cli.main import app

    out = mesh_settings(
        tmp_path,
        mesh_pki,
        nodes={"kme-a": ["app-a"], "kme-b": ["app-b"], "kme-c": ["app-c"]},
        links=[("kme-a", "kme-c"), ("kme-c", "kme-b")],
    )
    path = tmp_path / "kme-c.yaml"
    path.write_text(dump_settings(out["kme-c"]))
    write_blocks([tmp_path / "blocks"], 2, 1024)
    runner = CliRunner()
    cmd = ["kms", "ingest", str(path), str(tmp_path / "blocks"), "--json"]
    res = runner.invoke(app, cmd)
    assert res.exit_code == 2 and "kme-c has 2 peers: name the link's peer KME" in res.output
    res = runner.invoke(app, [*cmd, "--peer", "kme-z"])
    assert res.exit_code == 2 and "'kme-z' is not a peer of kme-c" in res.output
    res = runner.invoke(app, [*cmd, "--peer", "kme-b"])
    assert res.exit_code == 0 and '"ingested": 2' in res.output
    store = KeyStore(str(out["kme-c"].database_url), out["kme-c"].keyring_path)
    try:
        assert store.link_summary() == {"kme-b": {"stored_key_bytes": 0, "blocks_ingested": 2}}
    finally:
        store.close()
