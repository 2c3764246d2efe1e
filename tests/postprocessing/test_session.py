"""End-to-end sessions: identical key blocks, aborts with reasons, attacks on the channel,
and both endpoints as separate processes over TCP."""

from __future__ import annotations

import json
import math
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from qdnet.postprocessing import session as session_mod
from qdnet.postprocessing.keyblock import iter_key_blocks
from qdnet.postprocessing.session import SessionConfig, SessionReport
from qdnet.protocols.records import RawRecords, save_records
from qdnet.transport.messages import (
    Message,
    MessageKind,
    ProtocolError,
    decode_message,
    encode_message,
)
from tests.adversarial.harness import Endpoints

from .synthetic import synthetic_records

Tap = Callable[[bytes], list[bytes]]


def _run(
    rec: RawRecords,
    cfg: SessionConfig,
    tap_ab: Tap | None = None,
    tap_ba: Tap | None = None,
) -> tuple[SessionReport, SessionReport]:
    with tempfile.TemporaryDirectory() as root:
        return Endpoints(Path(root)).session(rec, cfg, tap_ab, tap_ba, recv_timeout_s=30)


@pytest.mark.parametrize("method", ["cascade", "ldpc"])
@pytest.mark.parametrize("protocol", ["bb84", "bbm92"])
def test_identical_key_blocks(method: str, protocol: str) -> None:
    rec = synthetic_records(np.random.default_rng(11), 80_000, qber=0.02, protocol=protocol)
    ra, rb = _run(rec, SessionConfig(method=method))
    assert not ra.aborted and not rb.aborted, (ra.reason, rb.reason)
    assert ra.block is not None and rb.block is not None
    assert ra.block.key == rb.block.key
    assert ra.block.block_id == rb.block.block_id
    assert ra.final_key_bits == ra.block.length_bits > 1000
    assert ra.leak_ec_bits == rb.leak_ec_bits > 0
    assert ra.verified and rb.verified
    assert ra.auth_consumed_bits == rb.auth_consumed_bits == 768
    # Bob's announced count of corrected bits (finding 8c) is charged: ceil(log2(n + 1)) bits
    n = ra.sifted_key_bits
    assert ra.leak_corrected_count_bits == math.ceil(math.log2(n + 1)) > 10
    assert ra.finite_key_terms["leak_ec_bits"] == (
        ra.leak_ec_bits + ra.verification_bits + ra.leak_corrected_count_bits
    )
    # the reported eps figures (finding 8d): eps_total = eps_sec + eps_cor + eps_auth
    assert ra.eps_sec == 1e-10 and ra.eps_cor == 1e-15 and 0 < ra.eps_auth < 1e-20  # type: ignore[operator]
    assert ra.eps_total == ra.eps_sec + ra.eps_cor + ra.eps_auth == rb.eps_total
    assert ra.block.to_json()["eps_total"] == ra.eps_total and ra.block.simulated
    assert ra.efficiency_f is not None and 1.0 < ra.efficiency_f < 1.5
    assert "key" not in json.dumps(ra.as_dict(), default=str).replace("key_", "").replace(
        "_key", ""
    )


def test_decoy_classes_are_counted_separately() -> None:
    rec = synthetic_records(np.random.default_rng(12), 30_000, qber=0.02, protocol="decoy-bb84")
    ra, rb = _run(rec, SessionConfig())
    assert ra.estimate == rb.estimate
    counts = ra.estimate["key_detections"]
    assert isinstance(counts, list) and len(counts) == 3
    assert sum(counts) == ra.sifted_key_bits


def test_abort_above_qber_threshold() -> None:
    rec = synthetic_records(np.random.default_rng(13), 50_000, qber=0.16, basis_bias=0.5)
    ra, rb = _run(rec, SessionConfig())
    for r in (ra, rb):
        assert r.aborted and r.block is None
        assert "exceeds the threshold" in r.reason
        assert r.auth_consumed_bits == 768  # the slot is spent at the handshake, whatever follows


def test_verification_catches_planted_residual_error(monkeypatch: pytest.MonkeyPatch) -> None:
    original = session_mod._cascade_bob

    async def leaky(*args: object, **kwargs: object) -> tuple[np.ndarray, int]:
        corrected, leak = await original(*args, **kwargs)  # type: ignore[arg-type]
        corrected = corrected.copy()
        corrected[len(corrected) // 2] ^= 1
        return corrected, leak

    monkeypatch.setattr(session_mod, "_cascade_bob", leaky)
    rec = synthetic_records(np.random.default_rng(14), 40_000, qber=0.02)
    ra, rb = _run(rec, SessionConfig())
    assert ra.verified is False and rb.verified is False
    for r in (ra, rb):
        assert r.aborted and r.block is None and "verification failed" in r.reason


def _on_kind(kind: MessageKind, action: Callable[[bytes], list[bytes]]) -> Tap:
    done = {"hit": False}

    def tap(frame: bytes) -> list[bytes]:
        if not done["hit"] and decode_message(frame).kind == kind:
            done["hit"] = True
            return action(frame)
        return [frame]

    return tap


def _flip_last_byte(frame: bytes) -> list[bytes]:
    raw = bytearray(frame)
    raw[-1] ^= 0x01
    return [bytes(raw)]


@pytest.mark.parametrize(
    ("tap", "reason"),
    [
        (_on_kind(MessageKind.PA_SEED, _flip_last_byte), "authentication failed"),
        (_on_kind(MessageKind.EC_ANSWERS, lambda f: [f, f]), "out of sequence"),
        (_on_kind(MessageKind.SIFT_REPLY, lambda f: [f[:-5]]), "truncated"),
    ],
    ids=["tampered", "replayed", "truncated"],
)
def test_channel_attacks_abort_the_session(tap: Tap, reason: str) -> None:
    rec = synthetic_records(np.random.default_rng(15), 40_000, qber=0.02)
    ra, rb = _run(rec, SessionConfig(), tap_ab=tap)
    assert ra.block is None and rb.block is None
    assert ra.aborted and rb.aborted
    assert reason in rb.reason


def _forged_abort(frame: bytes) -> list[bytes]:
    seq = decode_message(frame).seq
    return [encode_message(Message(MessageKind.ABORT, fields={"reason": "forged"}), seq)]


@pytest.mark.parametrize(
    "action",
    [_flip_last_byte, lambda f: [], _forged_abort, lambda f: [f[:-3]]],
    ids=["tampered", "dropped", "forged-abort", "truncated"],
)
def test_closing_message_attacks_leave_identical_blocks(
    action: Callable[[bytes], list[bytes]],
) -> None:
    """The final message (Alice's verdict) cannot make the two ends disagree."""
    rec = synthetic_records(np.random.default_rng(19), 40_000, qber=0.02)
    ra, rb = _run(rec, SessionConfig(), tap_ab=_on_kind(MessageKind.CONFIRM, action))
    assert not ra.aborted and not rb.aborted, (ra.reason, rb.reason)
    assert ra.block is not None and rb.block is not None
    assert ra.block.key == rb.block.key and ra.block.block_id == rb.block.block_id
    assert ra.confirmed is True and rb.confirmed is False


@pytest.mark.parametrize("direction", ["ab", "ba"])
def test_tampered_closing_tag_leaves_no_block(direction: str) -> None:
    """A modified tag on either side: both ends discard (Alice's rejection is authenticated)."""
    rec = synthetic_records(np.random.default_rng(20), 40_000, qber=0.02)
    tap = _on_kind(MessageKind.AUTH_TAG, _flip_last_byte)
    ra, rb = _run(
        rec, SessionConfig(), **({"tap_ab": tap} if direction == "ab" else {"tap_ba": tap})
    )
    assert ra.block is None and rb.block is None
    assert ra.aborted and rb.aborted


def test_tampering_bobs_messages_is_detected_by_both_ends() -> None:
    """Tags cover both directions, so Bob also notices a change made to his own messages."""
    rec = synthetic_records(np.random.default_rng(21), 40_000, qber=0.02)

    def lie(frame: bytes) -> list[bytes]:  # Alice accepts it, only her report changes
        msg = decode_message(frame)
        fields = {**msg.fields, "corrected": msg.field_int("corrected") + 1}
        return [encode_message(Message(msg.kind, fields=fields), msg.seq)]

    tap = _on_kind(MessageKind.VERIFY_RESULT, lie)
    ra, rb = _run(rec, SessionConfig(), tap_ba=tap)
    assert ra.block is None and rb.block is None
    assert "authentication failed" in rb.reason


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_endpoints_as_separate_processes(tmp_path: Path) -> None:
    run = tmp_path / "run"
    save_records(synthetic_records(np.random.default_rng(16), 60_000, qber=0.03), run)
    port = _free_port()
    psk = tmp_path / "secret.bin"
    qdnet = [sys.executable, "-c", "from qdnet.cli import app; app()"]
    init = subprocess.run([*qdnet, "auth", "init", str(psk)], capture_output=True, text=True)
    assert init.returncode == 0 and "fingerprint" in init.stdout, init.stderr
    assert psk.stat().st_mode & 0o777 == 0o600 and len(psk.read_bytes()) == 4096
    cli = [*qdnet, "endpoint"]
    common = ["--records", str(run), "--json", "--timeout", "30", "--psk", str(psk)]
    alice = subprocess.Popen(
        [*cli, "alice", "--listen", f"127.0.0.1:{port}", "--keys", str(tmp_path / "ka"), *common],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    bob = subprocess.run(
        [*cli, "bob", "--connect", f"127.0.0.1:{port}", "--keys", str(tmp_path / "kb"), *common],
        capture_output=True,
        text=True,
        timeout=120,
    )
    out_a, err_a = alice.communicate(timeout=120)
    assert alice.returncode == 0 and bob.returncode == 0, (err_a, bob.stderr)
    rep_a = json.loads(out_a)["alice"]
    rep_b = json.loads(bob.stdout)["bob"]
    assert rep_a["block_id"] == rep_b["block_id"] and not rep_a["aborted"]
    [blk_a] = list(iter_key_blocks(tmp_path / "ka"))
    [blk_b] = list(iter_key_blocks(tmp_path / "kb"))
    assert blk_a.key == blk_b.key and blk_a.length_bits == rep_a["final_key_bits"]
    assert rep_b["confirmed"] is True and not list((tmp_path / "kb" / "pending").glob("*"))
    pool_a = json.loads((tmp_path / "ka" / "auth" / "pool.json").read_text())
    pool_b = json.loads((tmp_path / "kb" / "auth" / "pool.json").read_text())
    assert pool_a["segments"] == pool_b["segments"] and pool_a["next_slot"] == 1
    assert blk_a.key.hex() not in out_a + err_a


def test_cli_errors_are_clean(tmp_path: Path) -> None:
    cli = [sys.executable, "-c", "from qdnet.cli import app; app()"]
    res = subprocess.run(
        [*cli, "distill", str(tmp_path / "missing")], capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 2
    assert "Traceback" not in res.stderr and "no meta.json" in res.stderr


def test_distill_writes_identical_blocks(tmp_path: Path) -> None:
    run = tmp_path / "run"
    save_records(synthetic_records(np.random.default_rng(17), 60_000, qber=0.01), run)
    cli = [sys.executable, "-c", "from qdnet.cli import app; app()", "distill", str(run), "--json"]
    res = subprocess.run([*cli, "--method", "ldpc"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["alice"]["method"] == "ldpc" and doc["bob"]["verified"] is True
    [blk_a] = list(iter_key_blocks(run / "keys" / "alice"))
    [blk_b] = list(iter_key_blocks(run / "keys" / "bob"))
    assert blk_a.key == blk_b.key and blk_a.block_id == doc["bob"]["block_id"]
    # a second run draws its authentication keys from the refilled pools
    run2 = tmp_path / "run2"
    save_records(synthetic_records(np.random.default_rng(27), 60_000, qber=0.01), run2)
    keys = ["--keys", str(run / "keys"), "--psk", str(run / "private" / "auth-psk.bin")]
    res2 = subprocess.run([*cli[:-2], str(run2), "--json", *keys], capture_output=True, text=True)
    assert res2.returncode == 0, res2.stderr
    assert len(list(iter_key_blocks(run / "keys" / "bob"))) == 2


def test_sifting_rejects_unknown_and_duplicate_slots() -> None:
    from qdnet.postprocessing.sifting import SiftingError, alice_sift

    rec = synthetic_records(np.random.default_rng(18), 1000)
    slots = rec.bob.slot.copy()
    with pytest.raises(SiftingError, match="duplicate"):
        alice_sift(rec.alice, np.concatenate([slots[:5], slots[:1]]), np.zeros(6, np.uint8))
    with pytest.raises(SiftingError, match="not in Alice"):
        alice_sift(rec.alice, np.array([-5], np.int64), np.zeros(1, np.uint8))
    basis, _intensity, sifted = alice_sift(rec.alice, slots, rec.bob.basis)
    np.testing.assert_array_equal(basis, rec.alice.basis)
    agree = (rec.alice.basis == rec.bob.basis) & (rec.alice.basis == 0)
    np.testing.assert_array_equal(sifted.key_bits, rec.alice.bit[agree])


@pytest.mark.parametrize("index", [0, 13])
def test_hello_rejects_cascade_passes_out_of_range(index: int) -> None:
    """Bob refuses a HELLO whose Cascade pass counts exceed the 64 hash bits of the late passes
    (field 0: passes below 50 000 bits, field 13: passes above)."""
    fields = SessionConfig().to_fields()
    assert SessionConfig.from_message(Message(MessageKind.HELLO, fields=fields)).cascade.passes
    fields["cascade"][index] = 65
    with pytest.raises(ProtocolError, match="passes"):
        SessionConfig.from_message(Message(MessageKind.HELLO, fields=fields))
