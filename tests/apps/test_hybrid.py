"""Hybrid keys: both the QKD key and the ML-KEM-768 secret determine the result."""

from __future__ import annotations

import os

import pytest

from qdnet.apps.hybrid import MLKEM768_CT_BYTES, HybridResponder, combine, encapsulate


def test_both_ends_derive_the_same_key_and_each_input_matters() -> None:
    responder = HybridResponder()
    ek = responder.public_bytes
    secret, ct = encapsulate(ek)
    qkd = os.urandom(32)
    key = combine(qkd, secret, "id-1", ek, ct)
    assert responder.mix(qkd, "id-1", ct) == key and len(key) == 32
    assert key not in (qkd, secret)
    assert combine(os.urandom(32), secret, "id-1", ek, ct) != key  # QKD key changed
    assert combine(qkd, os.urandom(32), "id-1", ek, ct) != key  # ML-KEM secret changed
    assert combine(qkd, secret, "id-2", ek, ct) != key  # bound to the key ID


def test_a_key_pair_is_used_once() -> None:
    responder = HybridResponder()
    _secret, ct = encapsulate(responder.public_bytes)
    responder.mix(os.urandom(32), "id", ct)
    with pytest.raises(ValueError, match="used"):
        responder.mix(os.urandom(32), "id", ct)


def test_malformed_kem_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="public key must be 1184 bytes"):
        encapsulate(b"\0" * 10)
    with pytest.raises(ValueError, match=f"{MLKEM768_CT_BYTES} bytes"):
        HybridResponder().mix(os.urandom(32), "id", b"\0" * 10)
