"""CLI (``qdnet pki init``, ``qdnet kms ingest|pool``), example configs and settings errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from cryptography import x509
from typer.testing import CliRunner

from qdnet.cli.main import app
from qdnet.kms.settings import SettingsError, load_settings
from tests.kms.conftest import write_blocks

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "kms"


def test_pki_init_and_ingest(tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(
        app,
        ["pki", "init", str(tmp_path / "pki"), "--kme", "kme-alice", "--kme", "kme-bob",
         "--sae", "app-a", "--sae", "app-b"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    cert = x509.load_pem_x509_certificate((tmp_path / "pki" / "kme-alice.crt").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    assert [str(i) for i in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert (tmp_path / "pki" / "app-a.key").stat().st_mode & 0o077 == 0
    again = runner.invoke(app, ["pki", "init", str(tmp_path / "pki"), "--sae", "x"])
    assert again.exit_code == 2 and "exists" in again.output

    for name in ("kms-alice.yaml", "kms-bob.yaml"):
        shutil.copy(EXAMPLES / name, tmp_path / name)
    a, b = load_settings(tmp_path / "kms-alice.yaml"), load_settings(tmp_path / "kms-bob.yaml")
    assert a.peers[0].kme_id == b.kme_id and b.peers[0].kme_id == a.kme_id
    assert a.peers[0].url.endswith(str(b.peer_listen.port)) and b.peers[0].url.endswith(
        str(a.peer_listen.port)
    )
    blocks = write_blocks([tmp_path / "blocks"], 3, 1024)
    cmd = ["kms", "ingest", str(tmp_path / "kms-alice.yaml"), str(tmp_path / "blocks"), "--json"]
    first = runner.invoke(app, cmd)
    assert first.exit_code == 0, first.output
    assert json.loads(first.output) == {"ingested": 3, "already_known": 0, "deferred": 0}
    assert json.loads(runner.invoke(app, cmd).output)["already_known"] == 3
    pool = runner.invoke(app, ["kms", "pool", str(tmp_path / "kms-alice.yaml"), "--json"])
    summary = json.loads(pool.output)
    assert summary["blocks"] == 3 and summary["held_bytes"] == sum(len(x.key) for x in blocks)
    assert summary["shared_bytes"] == 0  # until the peer confirms it holds the same blocks
    # the node's pool and each link's: one link here, which holds every block
    assert summary["links"] == {"kme-bob": {k: v for k, v in summary.items() if k != "links"}}
    one = runner.invoke(app, ["kms", "pool", str(tmp_path / "kms-alice.yaml"), "--link", "kme-bob"])
    assert one.exit_code == 0 and "link kme-bob:" in one.output and "blocks: 3" in one.output
    bad = runner.invoke(app, ["kms", "pool", str(tmp_path / "kms-alice.yaml"), "--link", "kme-x"])
    assert bad.exit_code == 2 and "--link: 'kme-x' is not a peer of kme-alice" in bad.output


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda t: t.replace("port: 8443", "port: 99999"), "listen.port"),
        (lambda t: t.replace("key_size: 256", "key_size: 250"), "limits"),
        (lambda t: t.replace("cert: pki/kme-alice.crt", "cert: pki/nope.crt"), "tls.cert"),
        (lambda t: t.replace("kme_id: kme-alice", "kme_idd: kme-alice"), "kme_idd"),
        (lambda t: t + "\nbogus: [\n", "not valid YAML"),
        (lambda t: t.replace("saes: [app-b]", "saes: [app-a]"), "SAE IDs served by both"),
    ],
)
def test_settings_errors_name_the_field(tmp_path: Path, edit: object, field: str) -> None:
    from qdnet.kms.pki import create_pki

    create_pki(tmp_path / "pki", ["kme-alice", "kme-bob"], ["app-a"])
    text = (EXAMPLES / "kms-alice.yaml").read_text()
    assert callable(edit)
    (tmp_path / "kms-alice.yaml").write_text(edit(text))
    with pytest.raises(SettingsError) as err:
        load_settings(tmp_path / "kms-alice.yaml")
    assert field in str(err.value) and "kms-alice.yaml" in str(err.value)


def test_examples_document_every_setting() -> None:
    from qdnet.kms.settings import (
        KMSSettings,
        Limits,
        PeerSettings,
        RelaySettings,
        Timeouts,
        TLSSettings,
    )

    for name in ("kms-alice.yaml", "kms-bob.yaml"):
        text = (EXAMPLES / name).read_text()
        for model in (KMSSettings, Limits, Timeouts, PeerSettings, TLSSettings, RelaySettings):
            for field in model.model_fields:
                if field not in ("database_url", "log_level", "ingest_interval_s"):
                    assert f"{field}:" in text, (name, model.__name__, field)


def test_three_node_example(tmp_path: Path) -> None:
    from qdnet.kms.pki import create_pki

    shutil.copytree(EXAMPLES / "three-nodes", tmp_path / "net")
    create_pki(tmp_path / "net" / "pki", ["kme-a", "kme-b", "kme-c"], ["app-a", "app-b", "app-c"])
    a, b, c = (load_settings(tmp_path / "net" / f"kme-{x}.yaml") for x in "abc")
    assert [p.kme_id for p in c.peers] == ["kme-a", "kme-b"] and c.relay is None
    assert a.kme_of("app-b") == "kme-b" and b.kme_of("app-a") == "kme-a"
    ports = {s.kme_id: s.peer_listen.port for s in (a, b, c)}
    for s in (a, b, c):
        for p in s.peers:
            assert p.url == f"https://127.0.0.1:{ports[p.kme_id]}"
            assert p.key_blocks_dir == (tmp_path / "net" / "keys" / s.kme_id / p.kme_id).resolve()
