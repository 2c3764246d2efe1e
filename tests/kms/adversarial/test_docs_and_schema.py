"""Finding 9: ``/docs`` and ``/openapi.json`` need a client certificate (configurable), and the
served OpenAPI document is valid (every ``$ref`` resolves): it loads in openapi-spec-validator
and in schemathesis."""

from __future__ import annotations

from pathlib import Path

import httpx
import schemathesis
from openapi_spec_validator import validate

from qdnet.kms.pki import PKI
from qdnet.kms.tls import client_context
from tests.kms.adversarial.conftest import spawned_pair


def test_docs_need_a_certificate_and_the_schema_is_valid(tmp_path: Path, pki: PKI) -> None:
    cred = pki.credential("app-a")
    with spawned_pair(tmp_path, pki) as pair:
        with httpx.Client(verify=client_context(pki.ca_cert), timeout=5) as anonymous:
            for path in ("/openapi.json", "/docs", "/redoc", "/nothing"):
                r = anonymous.get(pair.url_a + path)
                assert r.status_code == 401 and r.json()["message"], path
                assert "kme-alice" not in r.text
        ctx = client_context(pki.ca_cert, cred.cert, cred.key)
        with httpx.Client(verify=ctx, timeout=5) as h:
            assert h.get(pair.url_a + "/docs").status_code == 200
            doc = h.get(pair.url_a + "/openapi.json").json()
    validate(doc)
    schema = schemathesis.openapi.from_dict(doc)
    ops = [op.ok() for op in schema.get_all_operations()]
    assert len(ops) == 5
    assert "KeyIDItem" in doc["components"]["schemas"]


def test_docs_can_be_public(tmp_path: Path, pki: PKI) -> None:
    with (
        spawned_pair(tmp_path, pki, extra={"docs_require_client_cert": False}) as pair,
        httpx.Client(verify=client_context(pki.ca_cert), timeout=5) as anonymous,
    ):
        assert anonymous.get(pair.url_a + "/openapi.json").status_code == 200
        r = anonymous.get(pair.url_a + "/api/v1/keys/app-b/status")
        assert r.status_code == 401  # the keys still need one
