"""Schemathesis against the served OpenAPI document, over mutual TLS as a real SAE (app-a):
every answer is one of the spec's codes (200, 400, 401, 503) with a JSON body, a 503 only when
the pool is empty, and the server stays up. A few hundred requests by default; the full
campaign is ``slow``."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.generation import GenerationMode

from qdnet.kms.pki import PKI
from qdnet.kms.tls import client_context
from tests.kms.adversarial.conftest import spawned_pair, wait_shared

EXPECTED_503 = {"not enough key material available"}


def fuzz(tmp_path: Path, pki: PKI, examples: int) -> Counter[str]:
    cred = pki.credential("app-a")
    ctx = client_context(pki.ca_cert, cred.cert, cred.key)
    counts: Counter[str] = Counter()
    with spawned_pair(tmp_path, pki, blocks=16, block_bytes=65536) as pair:
        wait_shared(pair)
        with httpx.Client(verify=ctx, timeout=10) as h:
            doc = h.get(pair.url_a + "/openapi.json").json()
        schema = schemathesis.openapi.from_dict(doc)
        ops = [op.ok() for op in schema.get_all_operations()]
        cases = st.one_of([op.as_strategy(generation_mode=m) for op in ops for m in GenerationMode])
        # the path's SAE ID: as generated, or a real one (app-b at the peer, app-c here)
        saes = st.sampled_from([None, "app-b", "app-b", "app-c"])
        session = requests.Session()
        session.cert = (str(cred.cert), str(cred.key))
        session.verify = str(pki.ca_cert)

        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(st.data())
        def run(data: st.DataObject) -> None:
            case = data.draw(cases)
            sae = data.draw(saes)
            if sae is not None:
                case.path_parameters["sae_id"] = sae
            r = case.call(
                base_url=pair.url_a,
                session=session,
                timeout=15,
                verify=str(pki.ca_cert),
                cert=(str(cred.cert), str(cred.key)),
            )
            counts["requests"] += 1
            counts[str(r.status_code)] += 1
            assert r.status_code in (200, 400, 401, 503), (r.status_code, r.text)
            assert r.headers["content-type"][0].startswith("application/json"), r.headers
            body = r.json()
            if r.status_code != 200:
                assert isinstance(body["message"], str) and body["message"]
            if r.status_code >= 500:
                counts["5xx"] += 1
                if body["message"] not in EXPECTED_503:
                    counts["unexpected_5xx"] += 1

        run()
        session.close()
        with httpx.Client(verify=ctx, timeout=10) as h:  # still up
            assert h.get(pair.url_a + "/api/v1/keys/app-b/status").status_code == 200
        assert "ERROR" not in pair.log()
    assert counts["unexpected_5xx"] == 0, counts
    return counts


def test_fuzz_served_schema(tmp_path: Path, pki: PKI, capsys: pytest.CaptureFixture[str]) -> None:
    counts = fuzz(tmp_path, pki, 300)
    with capsys.disabled():
        print("schemathesis:", dict(counts))


@pytest.mark.slow
def test_fuzz_full_campaign(tmp_path: Path, pki: PKI, capsys: pytest.CaptureFixture[str]) -> None:
    counts = fuzz(tmp_path, pki, 8000)
    with capsys.disabled():
        print("schemathesis:", dict(counts))
