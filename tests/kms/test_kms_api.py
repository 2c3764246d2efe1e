"""ETSI GS QKD 014 API over mutual TLS between two peered KMS nodes."""

from __future__ import annotations

import datetime as dt
import ssl
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from qdnet.kms.client import KMEError, SAEClient
from qdnet.kms.link import KMSLink
from qdnet.kms.pki import PKI, issue, make_ca
from qdnet.kms.tls import client_context

STATUS_FIELDS = {
    "source_KME_ID": str,
    "target_KME_ID": str,
    "master_SAE_ID": str,
    "slave_SAE_ID": str,
    "key_size": int,
    "stored_key_count": int,
    "max_key_count": int,
    "max_key_per_request": int,
    "max_key_size": int,
    "min_key_size": int,
    "max_SAE_ID_count": int,
}


def raw(link: KMSLink, sae: str, pki: PKI) -> httpx.Client:
    cred = pki.credential(sae)
    return httpx.Client(
        base_url=link.node_of(sae).url + "/api/v1/keys",
        verify=client_context(pki.ca_cert, cred.cert, cred.key),
    )


def test_status_fields_and_types(link: KMSLink) -> None:
    with link.client("app-a") as a:
        st = a.status("app-b")
    assert set(st) == set(STATUS_FIELDS) | {"status_extension"}
    for name, typ in STATUS_FIELDS.items():
        assert type(st[name]) is typ, name
    ext = st["status_extension"]
    assert ext["qdnet_simulated"] is False and ext["qdnet_reserved_key_ttl_s"] == 86400.0
    assert st["source_KME_ID"] == "kme-alice" and st["target_KME_ID"] == "kme-bob"
    assert st["master_SAE_ID"] == "app-a" and st["slave_SAE_ID"] == "app-b"
    assert st["stored_key_count"] == 4 * 8192 * 8 // 256


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_round_trip_both_directions(link: KMSLink, method: str) -> None:
    with link.client("app-a") as a, link.client("app-b") as b:
        ka = a.enc_keys("app-b", number=3, size=512, method=method)
        assert len(ka) == 3 and all(len(k.key) == 64 for k in ka)
        assert all(uuid.UUID(k.key_id).version == 4 for k in ka)
        assert len({k.key for k in ka}) == 3
        got = b.dec_keys("app-a", [k.key_id for k in ka])
        assert [(g.key_id, g.key) for g in got] == [(k.key_id, k.key) for k in ka]
        kb = b.enc_keys("app-a", method=method)
        assert len(kb[0].key) == 32  # default key_size
        assert a.dec_keys("app-b", [kb[0].key_id], method="GET")[0].key == kb[0].key
        assert not {k.key for k in ka} & {kb[0].key}
        with pytest.raises(KMEError) as err:
            b.dec_keys("app-a", [ka[0].key_id])
        assert err.value.status == 400
        assert err.value.message == "one or more keys specified are not found on KME"
        # the pool shrank by exactly what was delivered, on both sides
        used = 3 * 512 + 256
        assert a.status("app-b")["stored_key_count"] == (4 * 8192 * 8 - used) // 256
        assert b.status("app-a")["stored_key_count"] == (4 * 8192 * 8 - used) // 256


def test_multicast_additional_slaves(link: KMSLink) -> None:
    with link.client("app-b") as b, link.client("app-a") as a, link.client("app-c") as c:
        keys = b.enc_keys("app-a", 2, 256, additional_slave_sae_ids=["app-c"])
        ids = [k.key_id for k in keys]
        assert [k.key for k in a.dec_keys("app-b", ids)] == [k.key for k in keys]
        assert [k.key for k in c.dec_keys("app-b", ids)] == [k.key for k in keys]
        with pytest.raises(KMEError):
            c.dec_keys("app-b", ids)


def test_slave_of_same_kms(link: KMSLink) -> None:
    with link.client("app-a") as a, link.client("app-c") as c:
        k = a.enc_keys("app-c")[0]
        assert c.dec_keys("app-a", [k.key_id])[0].key == k.key


def test_other_sae_gets_401(link: KMSLink, pki: PKI) -> None:
    with link.client("app-a") as a, link.client("app-c") as c:
        k = a.enc_keys("app-b")[0]
        with pytest.raises(KMEError) as err:  # app-c is served by the same KMS as app-b? no: A
            c.dec_keys("app-a", [k.key_id])
        assert err.value.status in (400, 401)
    with link.client("app-b") as b:
        k2 = b.enc_keys("app-a")[0]
    with link.client("app-c") as c:  # app-c is a local SAE of kme-alice but not a slave
        with pytest.raises(KMEError) as err:
            c.dec_keys("app-b", [k2.key_id])
        assert err.value.status == 401 and err.value.message
    with link.client("app-a") as a:  # the real slave still gets it afterwards
        assert a.dec_keys("app-b", [k2.key_id])[0].key == k2.key


def test_unknown_sae_certificate_gets_401(link: KMSLink, pki: PKI) -> None:
    with (
        raw(link, "app-a", pki) as _,
        httpx.Client(
            base_url=link.a.url,
            verify=client_context(pki.ca_cert, *_cred(pki, "app-x")),
        ) as x,
    ):
        r = x.get("/api/v1/keys/app-b/status")
        assert r.status_code == 401 and "message" in r.json()
        r = x.post("/api/v1/keys/app-b/enc_keys", json={})
        assert r.status_code == 401 and "message" in r.json()
    # a KME certificate is not an SAE identity either
    with httpx.Client(
        base_url=link.a.url, verify=client_context(pki.ca_cert, *_cred(pki, "kme-bob"))
    ) as k:
        assert k.get("/api/v1/keys/app-b/status").status_code == 401


def _cred(pki: PKI, name: str) -> tuple[Path, Path]:
    c = pki.credential(name)
    return c.cert, c.key


def test_no_client_certificate_gets_401_json(link: KMSLink, pki: PKI) -> None:
    with httpx.Client(verify=client_context(pki.ca_cert)) as h:
        r = h.get(link.a.url + "/api/v1/keys/app-b/status")
        assert r.status_code == 401 and r.json()["message"]
        r = h.post(link.a.url + "/api/v1/keys/app-b/dec_keys", content=b"{")
        assert r.status_code == 401 and r.json()["message"]


def test_expired_and_foreign_certificates_are_rejected(
    link: KMSLink, pki: PKI, tmp_path: Path
) -> None:
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=10)
    expired_pki = PKI(tmp_path, pki.ca_cert, pki.ca_key)
    expired = issue(
        expired_pki, "app-a", "sae", not_before=past, not_after=past + dt.timedelta(days=1)
    )
    foreign = make_ca(tmp_path / "foreign")
    fake = issue(foreign, "app-a", "sae")
    for cert, key in ((expired.cert, expired.key), (fake.cert, fake.key)):
        ctx = client_context(pki.ca_cert, cert, key)
        with httpx.Client(verify=ctx) as h, pytest.raises((httpx.HTTPError, ssl.SSLError)):
            h.get(link.a.url + "/api/v1/keys/app-b/status")
    with link.client("app-a") as a:  # the server is unharmed
        assert a.status("app-b")["master_SAE_ID"] == "app-a"


def test_server_certificate_names_the_kme(link: KMSLink, pki: PKI) -> None:
    ctx = client_context(pki.ca_cert, *_cred(pki, "app-a"))
    host, port = link.a.url.removeprefix("https://").split(":")
    import socket

    with (
        socket.create_connection((host, int(port))) as s,
        ctx.wrap_socket(s, server_hostname="localhost") as t,
    ):
        cert = t.getpeercert()
        assert t.version() in ("TLSv1.2", "TLSv1.3")
    assert cert is not None
    assert ("commonName", "kme-alice") in [x for rdn in cert["subject"] for x in rdn]


BAD_ENC: list[tuple[str, Any, str | None]] = [
    ("POST", b"{not json", "request body is not valid JSON"),
    ("POST", b"\xff\xfe", "request body is not valid JSON"),
    ("POST", b"[1,2]", "Key request shall be a JSON object"),
    ("POST", {"number": "2"}, "number shall be an integer"),
    ("POST", {"number": True}, "number shall be an integer"),
    ("POST", {"number": 1.5}, "number shall be an integer"),
    ("POST", {"size": 257}, "size shall be a multiple of 8"),
    ("POST", {"size": 10**400}, None),
    ("POST", {"number": 10**30}, None),
    ("POST", {"number": 0}, None),
    ("POST", {"number": -3}, None),
    ("POST", {"number": 129}, None),
    ("POST", {"size": 8}, None),
    ("POST", {"size": 2**40}, None),
    ("POST", {"additional_slave_SAE_IDs": "app-c"}, None),
    ("POST", {"additional_slave_SAE_IDs": ["nobody"]}, None),
    ("POST", {"additional_slave_SAE_IDs": ["app-c"] * 5}, None),
    (
        "POST",
        {"extension_mandatory": [{"abc_route_type": "direct"}]},
        "not all extension_mandatory parameters are supported",
    ),
    (
        "POST",
        {"extension_mandatory": [{"qdnet_route_type": "indirect"}]},
        "not all extension_mandatory request options could be met",
    ),
    ("POST", {"extension_mandatory": {"x": 1}}, None),
    ("GET", "number=abc", "number shall be a positive integer"),
    ("GET", "number=99999999999999999999999", None),
    ("GET", "size=257", "size shall be a multiple of 8"),
    ("GET", "number=-1", None),
]


@pytest.mark.parametrize(("method", "payload", "message"), BAD_ENC)
def test_bad_enc_keys_input_is_clean_400(
    link: KMSLink, pki: PKI, method: str, payload: Any, message: str | None
) -> None:
    before = None
    with raw(link, "app-a", pki) as h:
        before = h.get("/app-b/status").json()["stored_key_count"]
        if method == "GET":
            r = h.get(f"/app-b/enc_keys?{payload}")
        elif isinstance(payload, bytes):
            r = h.post("/app-b/enc_keys", content=payload)
        else:
            r = h.post("/app-b/enc_keys", json=payload)
        assert r.status_code == 400, r.text
        body = r.json()
        assert isinstance(body["message"], str) and body["message"]
        if message:
            assert body["message"] == message
        assert "keys" not in body
        assert h.get("/app-b/status").json()["stored_key_count"] == before


def test_mandatory_extension_details_and_optional_ignored(link: KMSLink, pki: PKI) -> None:
    with raw(link, "app-a", pki) as h:
        r = h.post("/app-b/enc_keys", json={"extension_mandatory": [{"abc_route_type": "x"}]})
        assert r.json()["details"] == [
            {"extension_mandatory_unsupported": "abc_route_type is not supported"}
        ]
        r = h.post("/app-b/enc_keys", json={"extension_optional": [{"abc_whatever": 1}]})
        assert r.status_code == 200 and len(r.json()["keys"]) == 1
        r = h.post(
            "/app-b/enc_keys", json={"extension_mandatory": [{"qdnet_route_type": "direct"}]}
        )
        assert r.status_code == 200
        assert r.json()["key_container_extension"] == {"qdnet_route_type": "direct"}
        r = h.post("/app-b/enc_keys", content=b"")  # empty body means {}
        assert r.status_code == 200 and len(r.json()["keys"]) == 1


BAD_DEC: list[tuple[str, Any]] = [
    ("POST", b"{"),
    ("POST", b"null"),
    ("POST", {"key_IDs": "x"}),
    ("POST", {"key_IDs": [{"key_ID": 5}]}),
    ("POST", {"key_IDs": []}),
    ("POST", {"key_IDs": [{"key_ID": "not-a-uuid"}]}),
    ("POST", {"key_IDs": [{"key_ID": str(uuid.uuid4())}]}),
    ("POST", {"key_IDs": [{"key_ID": str(uuid.UUID(int=0))}] * 2}),
    ("POST", {"key_IDs": [{"key_ID": str(uuid.uuid4())} for _ in range(500)]}),
    ("GET", ""),
    ("GET", f"key_ID={uuid.uuid4()}&key_ID={uuid.uuid4()}"),
    ("GET", "key_ID=%00%ff"),
]


@pytest.mark.parametrize(("method", "payload"), BAD_DEC)
def test_bad_dec_keys_input_is_clean_400(
    link: KMSLink, pki: PKI, method: str, payload: Any
) -> None:
    with raw(link, "app-b", pki) as h:
        if method == "GET":
            r = h.get(f"/app-a/dec_keys?{payload}")
        elif isinstance(payload, bytes):
            r = h.post("/app-a/dec_keys", content=payload)
        else:
            r = h.post("/app-a/dec_keys", json=payload)
    assert r.status_code == 400, r.text
    assert r.json()["message"]


def test_unknown_sae_paths_and_methods(link: KMSLink, pki: PKI) -> None:
    with raw(link, "app-a", pki) as h:
        for path in ("/nobody/status", "/nobody/enc_keys", "/app-a/status"):
            r = h.get(path)
            assert r.status_code == 400 and r.json()["message"], path
        r = h.get("/a/b/status")
        assert r.status_code == 400 and r.json()["message"] == "unknown request path"
        r = h.delete("/app-b/enc_keys")
        assert r.status_code == 400 and r.json()["message"]


def test_openapi_is_served(link: KMSLink, pki: PKI) -> None:
    with raw(link, "app-a", pki) as h:
        doc = h.get(link.a.url + "/openapi.json").json()
    paths = doc["paths"]
    for p in ("status", "enc_keys", "dec_keys"):
        assert f"/api/v1/keys/{{sae_id}}/{p}" in paths
    assert set(paths["/api/v1/keys/{sae_id}/enc_keys"]) == {"get", "post"}
    assert "KeyContainer" in doc["components"]["schemas"]


def test_peer_api_refuses_saes(link: KMSLink, pki: PKI) -> None:
    url = link.b.settings.peers[0].url  # kme-alice's peer listener
    with httpx.Client(verify=client_context(pki.ca_cert, *_cred(pki, "app-a"))) as h:
        r = h.post(url + "/peer/v1/allocations", json={"segment_bytes": 4096, "items": []})
        assert r.status_code == 401
    with httpx.Client(verify=client_context(pki.ca_cert)) as h, pytest.raises(httpx.HTTPError):
        h.post(url + "/peer/v1/blocks", json={"block_ids": []})


def test_keys_are_never_logged(
    link: KMSLink, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    import base64
    import logging

    caplog.set_level(logging.DEBUG)
    with link.client("app-a") as a, link.client("app-b") as b:
        ks = a.enc_keys("app-b", 4, 256)
        b.dec_keys("app-a", [k.key_id for k in ks])
    out = caplog.text + "".join(capfd.readouterr())
    for k in ks:
        assert base64.b64encode(k.key).decode() not in out
        assert k.key.hex() not in out
        assert k.key.hex() not in repr(k)


def test_not_enough_key_material_is_503(link: KMSLink) -> None:
    with link.client("app-a") as a:
        left = a.status("app-b")["stored_key_count"]
        while left >= 128:
            a.enc_keys("app-b", 128, 256)
            left -= 128
        with pytest.raises(KMEError) as err:
            a.enc_keys("app-b", 128, 256)
        assert err.value.status == 503 and err.value.message


def test_sae_client_type() -> None:
    assert SAEClient.__init__.__annotations__


def test_h11_fallback_protocol_keeps_the_limits(
    tmp_path: Path, pki: PKI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without httptools uvicorn's h11 parser serves: same answers, same deadlines."""
    import socket

    import qdnet.kms.server as server
    from qdnet.kms.link import start_link
    from qdnet.kms.tls import MTLSProtocol

    monkeypatch.setattr(server, "FAST_PROTOCOL", MTLSProtocol)
    extra = {"timeouts": {"idle_s": 1.0}}
    with start_link(tmp_path, pki, saes=(["app-a"], ["app-b"]), extra=extra) as lk:
        with lk.client("app-a") as a:
            assert a.status("app-b")["master_SAE_ID"] == "app-a"
            assert a.status("app-b")["slave_SAE_ID"] == "app-b"
        host, port = lk.a.url.removeprefix("https://").split(":")
        ctx = client_context(pki.ca_cert, *_cred(pki, "app-a"))
        with (
            socket.create_connection((host, int(port)), timeout=5) as s,
            ctx.wrap_socket(s, server_hostname=host) as t,
        ):
            assert t.recv(1) == b""  # closed after idle_s without a request
