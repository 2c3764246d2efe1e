"""Finding 7: deeply nested JSON is a 400 with a JSON message (after the caller check), never a
503 "key data access error" or an ERROR log."""

from __future__ import annotations

import json
from pathlib import Path

from qdnet.kms.pki import PKI
from tests.kms.adversarial.conftest import read_response, spawned_pair, tls_socket


def _post(sock_url: str, pki: PKI, who: str | None, path: str, body: bytes) -> tuple[int, bytes]:
    with tls_socket(sock_url, pki, who) as sock:
        sock.sendall(
            b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (path.encode(), len(body), body)
        )
        return read_response(sock)


def test_nested_json_is_a_clean_400(tmp_path: Path, pki: PKI) -> None:
    nested = [b"[" * 50_000, b'{"a":' * 10_000 + b"1" + b"}" * 10_000]  # under 64 KiB
    with spawned_pair(tmp_path, pki) as pair:
        for body in nested:
            for path, who in (
                ("/api/v1/keys/app-b/enc_keys", "app-a"),
                ("/api/v1/keys/app-a/dec_keys", "app-b"),
            ):
                url = pair.url_a if who == "app-a" else pair.url_b
                status, answer = _post(url, pki, who, path, body)
                assert status == 400, answer
                assert json.loads(answer)["message"] == "request body is nested too deeply"
                status, answer = _post(url, pki, None, path, body)  # no certificate
                assert status == 401 and json.loads(answer)["message"]
        assert "ERROR" not in pair.log()
