"""Round trips with real ETSI GS QKD 014 clients from PyPI, and ``qkdsec doctor``.

App A talks to kme-alice, app B to kme-bob: keys from ``enc_keys`` on one KMS come back by
ID from ``dec_keys`` on the other.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from etsi_qkd_014_client import QKD014Client
from qkdsec.client.errors import KMEHTTPError
from qkdsec.client.etsi014 import ETSI014Client

from qdnet.kms.link import KMSLink, start_link
from qdnet.kms.pki import PKI
from tests.kms.conftest import write_blocks


def _lip6(link: KMSLink, pki: PKI, sae: str) -> QKD014Client:
    cred = pki.credential(sae)
    host = link.node_of(sae).url.removeprefix("https://")
    return QKD014Client(host, str(cred.cert), str(cred.key), str(pki.ca_cert))


def _qkdsec(link: KMSLink, pki: PKI, sae: str) -> ETSI014Client:
    cred = pki.credential(sae)
    return ETSI014Client(
        link.node_of(sae).url, client_cert=(str(cred.cert), str(cred.key)), verify=str(pki.ca_cert)
    )


def test_etsi_qkd_014_client_round_trip(link: KMSLink, pki: PKI) -> None:
    a, b = _lip6(link, pki, "app-a"), _lip6(link, pki, "app-b")
    code, status = a.get_status("app-b")
    assert code == 200 and status.stored_key_count > 0 and status.target_kme_id == "kme-bob"
    code, plain = a.get_key("app-b")  # plain GET, no query
    assert code == 200 and len(base64.b64decode(plain.keys[0].key)) == 32
    code, cont = a.get_key("app-b", number=2, size=512)  # POST
    assert code == 200 and len(cont.keys) == 2
    ids = [k.key_id for k in cont.keys]
    code, back = b.get_key_with_key_IDs("app-a", ids)
    assert code == 200 and [k.key for k in back.keys] == [k.key for k in cont.keys]
    code, err = b.get_key_with_key_IDs("app-a", ids)  # replay
    assert code == 400 and err.message == "one or more keys specified are not found on KME"
    code, err = a.get_key("app-b", size=257)
    assert code == 400 and err.message == "size shall be a multiple of 8"
    code, from_b = b.get_key("app-a")
    assert code == 200
    code, err = _lip6(link, pki, "app-c").get_key_with_key_IDs("app-b", [from_b.keys[0].key_id])
    assert code == 401 and err.message  # app-c (also at kme-alice) is not a slave of that key


def test_qkdsec_round_trip(link: KMSLink, pki: PKI) -> None:
    with _qkdsec(link, pki, "app-a") as a, _qkdsec(link, pki, "app-b") as b:
        st = a.status("app-b")
        assert st.master_sae_id == "app-a" and st.max_key_per_request == 128
        keys = a.get_enc_keys("app-b", number=4, size=256)  # GET with query
        keys += a.get_enc_keys("app-b", number=1, size=1024, method="POST")
        # qkdsec calls its argument slave_sae_id, but the spec path takes the MASTER's ID
        back = b.get_dec_keys("app-a", key_ids=[k.key_id for k in keys])
        assert [k.key for k in back] == [k.key for k in keys]
        with pytest.raises(KMEHTTPError) as err:
            b.get_dec_keys("app-a", key_ids=[keys[0].key_id])
        assert err.value.status_code == 400
        # and the other way round
        kb = b.get_enc_keys("app-a", number=2, size=256)
        assert [k.key for k in a.get_dec_keys("app-b", key_ids=[k.key_id for k in kb])] == [
            k.key for k in kb
        ]


def test_qkdsec_cli_round_trip(link: KMSLink, pki: PKI) -> None:
    exe = shutil.which("qkdsec") or str(Path(sys.executable).parent / "qkdsec")

    def cli(sae: str, *args: str) -> object:
        cred = pki.credential(sae)
        tls = ["--cert", str(cred.cert), "--key", str(cred.key), "--ca-cert", str(pki.ca_cert)]
        out = subprocess.run(
            [exe, *args, *tls, "--json"], capture_output=True, text=True, timeout=60, check=True
        )
        return json.loads(out.stdout)

    got = cli("app-a", "keys", "get", link.a.url, "app-b", "--number", "2", "--size", "256")
    keys = got["keys"] if isinstance(got, dict) else got
    assert isinstance(keys, list) and len(keys) == 2
    kid = keys[0]["key_ID"] if "key_ID" in keys[0] else keys[0]["key_id"]
    back = cli("app-b", "keys", "retrieve", link.b.url, "app-a", kid)
    text = json.dumps(back)
    first = keys[0].get("key") or keys[0].get("key_b64") or keys[0].get("key_hex")
    assert first and str(first) in text


@pytest.fixture
def self_link(tmp_path: Path, pki: PKI) -> Iterator[KMSLink]:
    with start_link(
        tmp_path,
        pki,
        saes=(["app-a"], ["app-b"]),
        allow_self_addressed=True,
        extra={"ingest_interval_s": 0.05},
    ) as lk:
        write_blocks([tmp_path / "ka", tmp_path / "kb"], 2)
        lk.ingest(tmp_path / "ka", tmp_path / "kb")
        yield lk


def test_qkdsec_doctor_conformance(self_link: KMSLink, pki: PKI, tmp_path: Path) -> None:
    """9 PASS, 1 WARN: ``error_contract_404`` expects 404 for an unknown key; the spec
    (V1.1.1 §5.4, Table 13) says 400 "one or more keys specified are not found on KME"."""
    exe = shutil.which("qkdsec") or str(Path(sys.executable).parent / "qkdsec")
    cred = pki.credential("app-a")
    report = tmp_path / "doctor.json"
    run = subprocess.run(
        [
            exe, "doctor", self_link.a.url, "--slave-sae-id", "app-a",
            "--cert", str(cred.cert), "--key", str(cred.key), "--ca-cert", str(pki.ca_cert),
            "--format", "json", "--output", str(report),
        ],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    data = json.loads(report.read_text())
    probes = data.get("probes") or data.get("results")
    assert isinstance(probes, list) and probes
    verdicts = {p["name"]: str(p["status"]).upper() for p in probes}
    assert "FAIL" not in verdicts.values(), verdicts
    warns = [n for n, v in verdicts.items() if v == "WARN"]
    assert warns == ["error_contract_404"], verdicts
    assert run.returncode == 0, run.stdout + run.stderr
