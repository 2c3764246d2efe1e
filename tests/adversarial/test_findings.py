"""Issue 12's findings, one regression test each (every one fails on the code before the fix)."""

from __future__ import annotations

import asyncio
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from qdnet.cli import app
from qdnet.postprocessing import session as session_mod
from qdnet.postprocessing.keyblock import KeyFolder, iter_key_blocks, read_key_block
from qdnet.protocols.records import RawRecords, RecordsMeta, save_records
from qdnet.transport import AuthenticatedChannel, memory_pair
from qdnet.transport.authentication import OneTimeKey, PoolError, write_psk
from qdnet.transport.messages import Message, MessageKind, decode_message, encode_message
from tests.adversarial.harness import (
    SMALL_CASCADE,
    Endpoints,
    Tap,
    hostile_frames,
    instrumented,
    records,
)

runner = CliRunner()


def _on_kind(kind: MessageKind, action: Tap, occurrence: int = 0) -> Tap:
    seen = {"n": 0}

    def tap(frame: bytes) -> list[bytes]:
        if decode_message(frame).kind == kind:
            seen["n"] += 1
            if seen["n"] == occurrence + 1:
                return action(frame)
        return [frame]

    return tap


def _flip_last(frame: bytes) -> list[bytes]:
    raw = bytearray(frame)
    raw[-1] ^= 1
    return [bytes(raw)]


def _kinds_log(log: list[str]) -> Tap:
    def tap(frame: bytes) -> list[bytes]:
        log.append(decode_message(frame).kind.name)
        return [frame]

    return tap


# --- finding 1: one-time keys are never reused ------------------------------------------------


def test_drawn_keys_are_on_disk_as_used_before_any_tag_is_revealed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ends = Endpoints(tmp_path)
    checked: list[int] = []
    original = AuthenticatedChannel._sign

    def sign(self: AuthenticatedChannel, key: OneTimeKey, data: bytes) -> bytes:
        assert self.pool.path is not None
        on_disk = json.loads(self.pool.path.read_text())["next_slot"]
        assert key.key_id // 3 < on_disk, "a key was used before its slot was persisted"
        checked.append(key.key_id)
        return original(self, key, data)

    monkeypatch.setattr(AuthenticatedChannel, "_sign", sign)
    ra, rb = ends.session(records(1))
    assert not ra.aborted and not rb.aborted, (ra.reason, rb.reason)
    assert sorted(checked) == [0, 1, 2]


def test_an_edited_frame_after_the_tags_never_leads_to_key_reuse(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reviewed attack: edit the frame after the tags (a hostile CONFIRM), so that both ends
    die with the old pool; the next session must tag under fresh keys."""

    def hostile(frame: bytes) -> list[bytes]:
        seq = decode_message(frame).seq
        return [hostile_frames(MessageKind.CONFIRM, seq)["huge-shape"]]

    with instrumented(monkeypatch) as ledger:
        ends = Endpoints(tmp_path)
        ends.session(records(2), tap_ab=_on_kind(MessageKind.CONFIRM, hostile))
        ends.restart()
        ra, rb = ends.session(records(3))
    assert not ra.aborted and not rb.aborted, (ra.reason, rb.reason)
    assert ledger.reused() == {}
    assert ends.violations() == []


def test_any_exception_inside_a_session_aborts_it_cleanly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_args: object, **_kwargs: object) -> None:
        raise OverflowError("hostile value")

    monkeypatch.setattr(session_mod, "_fill_ec", broken)
    ra, rb = Endpoints(tmp_path).session(records(4))
    assert ra.aborted and rb.aborted and ra.block is None and rb.block is None
    assert "hostile value" in ra.reason


def test_a_recorded_session_replayed_to_a_restarted_bob_yields_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorded: list[bytes] = []

    def record(frame: bytes) -> list[bytes]:
        recorded.append(frame)
        return [frame]

    rec = records(5)
    with instrumented(monkeypatch) as ledger:
        ends = Endpoints(tmp_path)
        ra, _ = ends.session(rec, tap_ab=record)
        assert not ra.aborted
        ends.restart()  # Bob restarts; Alice is gone, the attacker replays her frames
        bob_blocks_before = {b.block_id for b in ends.bob.blocks()}

        async def replay() -> session_mod.SessionReport:
            end_a, end_b = memory_pair()
            chan_b = AuthenticatedChannel(end_b, ends.bob.pool, "bob", 2.0)
            for frame in recorded:
                await end_a.send_frame(frame)
            return await session_mod.run_bob(chan_b, rec.bob, rec.meta, ends.bob)

        rb = asyncio.run(replay())
    assert rb.aborted and rb.block is None
    assert {b.block_id for b in ends.bob.blocks()} == bob_blocks_before
    assert ends.bob.pending() == []
    assert ledger.reused() == {}


# --- finding 2: the pre-shared secret starts each role's pool once ----------------------------


def test_a_secret_starts_each_roles_pool_once(tmp_path: Path) -> None:
    psk = tmp_path / "psk.bin"
    write_psk(psk)
    KeyFolder.open(tmp_path / "a1", psk, "alice")
    KeyFolder.open(tmp_path / "b1", psk, "bob")
    with pytest.raises(PoolError, match="already started alice's authentication pool"):
        KeyFolder.open(tmp_path / "a2", psk, "alice")
    assert not (tmp_path / "a2" / "auth").exists()


def test_endpoint_refuses_a_second_keys_folder_from_one_secret(tmp_path: Path) -> None:
    run = tmp_path / "run"
    save_records(records(6), run)
    psk = tmp_path / "psk.bin"
    write_psk(psk)
    KeyFolder.open(tmp_path / "first", psk, "alice")
    result = runner.invoke(
        app,
        [
            "endpoint",
            "alice",
            "--records",
            str(run),
            "--keys",
            str(tmp_path / "second"),
            "--listen",
            "127.0.0.1:0",
            "--psk",
            str(psk),
        ],
    )
    assert result.exit_code == 2 and "already started" in result.output


# --- finding 3: one edited message never puts the pools out of step ---------------------------


@pytest.mark.parametrize("kind", [MessageKind.PA_SEED, MessageKind.HELLO, MessageKind.AUTH_TAG])
def test_a_failed_session_leaves_the_next_one_able_to_succeed(
    tmp_path: Path, kind: MessageKind
) -> None:
    ends = Endpoints(tmp_path)
    ra, rb = ends.session(records(7), tap_ab=_on_kind(kind, _flip_last))
    assert ra.aborted and rb.aborted
    ra, rb = ends.session(records(8))
    assert not ra.aborted and not rb.aborted, (ra.reason, rb.reason)
    assert ra.block is not None and rb.block is not None and ra.block.key == rb.block.key
    assert ends.alice.pool.next_slot == ends.bob.pool.next_slot


# --- finding 4: a block without Alice's authentic CONFIRM is pending ---------------------------


def test_bobs_unconfirmed_block_is_pending_until_a_later_session_confirms_it(
    tmp_path: Path,
) -> None:
    ends = Endpoints(tmp_path)
    ra, rb = ends.session(records(9), tap_ab=_on_kind(MessageKind.CONFIRM, lambda f: []))
    assert not ra.aborted and not rb.aborted and rb.pending and rb.confirmed is False
    assert list(iter_key_blocks(tmp_path / "bob")) == []  # what a KMS would ingest
    [held] = ends.bob.pending()
    assert held.block_id == ra.block_id and ra.block is not None and held.key == ra.block.key
    ra2, rb2 = ends.session(records(10))
    assert not rb2.aborted and rb2.pending_resolution == f"confirmed pending block {held.block_id}"
    assert {b.block_id for b in ends.bob.blocks()} == {ra.block_id, ra2.block_id}
    assert ends.bob.pending() == [] and ends.violations() == []


def test_a_pending_block_alice_did_not_keep_is_discarded(tmp_path: Path) -> None:
    ends = Endpoints(tmp_path)
    # Bob's tag modified (Alice rejects it) and her authenticated ABORT dropped
    tap_ba = _on_kind(MessageKind.AUTH_TAG, _flip_last)
    ra, _rb = ends.session(
        records(11), tap_ab=_on_kind(MessageKind.ABORT, lambda f: []), tap_ba=tap_ba
    )
    assert ra.aborted and ends.alice.blocks() == []
    assert len(ends.bob.pending()) == 1 and ends.bob.blocks() == []
    ra2, rb2 = ends.session(records(12))
    assert not rb2.aborted and (rb2.pending_resolution or "").startswith("discarded")
    assert {b.block_id for b in ends.bob.blocks()} == {ra2.block_id}
    assert ends.violations() == []


# --- finding 5: every receive has a deadline ----------------------------------------------------


def test_a_silent_peer_ends_the_session_at_the_receive_deadline(tmp_path: Path) -> None:
    ends = Endpoints(tmp_path)
    rec = records(13)

    async def alice_alone() -> session_mod.SessionReport:
        end_a, _end_b = memory_pair()
        chan = AuthenticatedChannel(end_a, ends.alice.pool, "alice", recv_timeout_s=0.3)
        return await asyncio.wait_for(
            session_mod.run_alice(chan, rec.alice, rec.meta, ends.alice, SMALL_CASCADE), 10
        )

    report = asyncio.run(alice_alone())
    assert report.aborted and "no message from the peer in 0.3 s (--recv-timeout)" in report.reason


# --- finding 6: mismatched runs or secrets stop in the handshake -------------------------------


def test_different_run_metadata_stops_before_error_correction(tmp_path: Path) -> None:
    rec = records(14)
    meta_b = RecordsMeta(**{**rec.meta.__dict__, "pulses_per_intensity": (1234,)})
    ends = Endpoints(tmp_path)
    log: list[str] = []

    async def go() -> tuple[session_mod.SessionReport, session_mod.SessionReport]:
        end_a, end_b = memory_pair(_kinds_log(log), _kinds_log(log))
        chan_a = AuthenticatedChannel(end_a, ends.alice.pool, "alice", 5)
        chan_b = AuthenticatedChannel(end_b, ends.bob.pool, "bob", 5)
        return await asyncio.gather(
            session_mod.run_alice(chan_a, rec.alice, rec.meta, ends.alice, SMALL_CASCADE),
            session_mod.run_bob(chan_b, rec.bob, meta_b, ends.bob),
        )

    ra, rb = asyncio.run(go())
    assert "run metadata (meta.json) differs" in rb.reason and ra.aborted
    assert not [k for k in log if k.startswith(("SIFT", "EC_", "TEST"))]


def test_a_wrong_secret_is_named_as_such(tmp_path: Path) -> None:
    ends = Endpoints(tmp_path)
    other = tmp_path / "other.bin"
    write_psk(other)
    ends.bob = KeyFolder.open(tmp_path / "bob2", other, "bob")
    rec = records(15)
    ra, rb = ends.session(rec)
    assert ra.aborted and rb.aborted
    assert "pre-shared secrets differ" in rb.reason and "modified" not in rb.reason
    # nothing of the records was disclosed: with the right secret the same run still distils
    ends.bob = KeyFolder.open(tmp_path / "bob", None, "bob")
    ra, rb = ends.session(rec)
    assert not ra.aborted and not rb.aborted, (ra.reason, rb.reason)


def test_a_missing_secret_is_an_error_not_a_new_secret(tmp_path: Path) -> None:
    run = tmp_path / "run"
    save_records(records(16), run)
    result = runner.invoke(
        app,
        [
            "endpoint",
            "bob",
            "--records",
            str(run),
            "--keys",
            str(tmp_path / "kb"),
            "--connect",
            "127.0.0.1:9",
            "--psk",
            str(tmp_path / "nope.bin"),
        ],
    )
    assert result.exit_code == 2 and "qdnet auth init" in result.output
    assert not (tmp_path / "nope.bin").exists() and not (run / "auth-psk.bin").exists()
    result = runner.invoke(
        app,
        [
            "endpoint",
            "bob",
            "--records",
            str(run),
            "--keys",
            str(tmp_path / "kb"),
            "--connect",
            "127.0.0.1:9",
        ],
    )
    assert result.exit_code == 2 and "--psk" in result.output


# --- finding 7: simulated keys are labelled; old runs with a public seed are refused ----------


def test_keys_from_simulated_records_are_labelled(tmp_path: Path) -> None:
    ra, rb = Endpoints(tmp_path).session(records(17))
    assert ra.block is not None and ra.block.simulated and rb.simulated is True
    [path] = list((tmp_path / "alice").glob("*.json"))
    doc = json.loads(path.read_text())
    assert doc["format_version"] == 2 and doc["simulated"] is True
    assert doc["eps_total"] == doc["eps_sec"] + doc["eps_cor"] + doc["eps_auth"]
    assert read_key_block(path).key == ra.block.key


def test_a_run_with_the_seed_in_its_public_metadata_is_refused(tmp_path: Path) -> None:
    run = tmp_path / "run"
    save_records(records(18), run)
    meta = json.loads((run / "meta.json").read_text())
    (run / "meta.json").write_text(json.dumps({**meta, "format_version": 1, "seed": 7}))
    result = runner.invoke(app, ["distill", str(run)])
    assert result.exit_code == 2 and "published the simulation seed" in result.output


# --- finding 8b: decoy states from a quantum dot are refused in distill -------------------------


def test_distill_refuses_decoy_records_from_a_quantum_dot(tmp_path: Path) -> None:
    rec = records(19)
    meta = RecordsMeta(
        **{
            **rec.meta.__dict__,
            "protocol": "decoy-bb84",
            "link": {"source": {"kind": "single-photon"}},
        }
    )
    save_records(RawRecords(meta, rec.alice, rec.bob), tmp_path / "run")
    result = runner.invoke(app, ["distill", str(tmp_path / "run")])
    assert result.exit_code == 2 and "Poisson photon numbers" in result.output
    assert not list((tmp_path / "run").glob("keys/*/*.json"))


# --- finding 9: broken records give one clear line, exit 2, no key file ------------------------


def _break(run: Path, how: str) -> str:
    """Damage a saved run; returns the file the error must name."""
    if how == "truncated-npz":
        data = (run / "alice.npz").read_bytes()
        (run / "alice.npz").write_bytes(data[: len(data) // 2])
        return "alice.npz"
    if how == "random-npz":
        (run / "bob.npz").write_bytes(np.random.default_rng(0).bytes(5000))
        return "bob.npz"
    if how == "missing-array":
        with np.load(run / "alice.npz") as data:
            kept = {k: data[k] for k in data.files if k != "bit"}
        np.savez(run / "alice.npz", **kept)  # type: ignore[arg-type]
        return "alice.npz"
    meta = json.loads((run / "meta.json").read_text())
    if how == "meta-missing-field":
        del meta["basis_bias"]
    elif how == "meta-extra-field":
        meta["colour"] = "blue"
    elif how == "no-multiphoton":
        meta["multiphoton_probability"] = []
    (run / "meta.json").write_text(json.dumps(meta))
    return "meta.json"


@pytest.mark.parametrize(
    "how",
    [
        "truncated-npz",
        "random-npz",
        "missing-array",
        "meta-missing-field",
        "meta-extra-field",
        "no-multiphoton",
    ],
)
def test_broken_records_give_one_clear_line(tmp_path: Path, how: str) -> None:
    run = tmp_path / "run"
    save_records(records(20, detections=4000), run)
    name = _break(run, how)
    result = runner.invoke(app, ["distill", str(run)])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and name in lines[0], lines
    assert "Traceback" not in result.output
    assert not list(run.glob("keys/**/*.json"))


def test_zip_of_garbage_members_is_a_clean_error(tmp_path: Path) -> None:
    run = tmp_path / "run"
    save_records(records(21, detections=4000), run)
    with zipfile.ZipFile(run / "bob.npz", "w") as archive:
        archive.writestr("slot.npy", b"not an array")
    result = runner.invoke(app, ["distill", str(run)])
    assert result.exit_code == 2 and "bob.npz" in result.output


def test_bobs_sifting_goes_in_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(session_mod, "SIFT_CHUNK", 5000)
    log: list[str] = []
    ra, rb = Endpoints(tmp_path).session(
        records(22), tap_ab=_kinds_log(log), tap_ba=_kinds_log(log)
    )
    assert not ra.aborted and not rb.aborted, (ra.reason, rb.reason)
    assert log.count("SIFT_REQUEST") == log.count("SIFT_REPLY") == 8


# --- also expected: a run is distilled once; a low pool says how to re-key ----------------------


def test_a_run_already_distilled_is_refused(tmp_path: Path) -> None:
    run = tmp_path / "run"
    save_records(records(23), run)
    first = runner.invoke(app, ["distill", str(run), "--json", "--frame-bits", "3000"])
    assert first.exit_code == 0, first.output
    again = runner.invoke(app, ["distill", str(run)])
    assert again.exit_code == 2 and "already distilled" in again.output
    elsewhere = runner.invoke(app, ["distill", str(run), "--keys", str(tmp_path / "k2")])
    assert elsewhere.exit_code == 2 and "already started" in elsewhere.output
    assert len(list(iter_key_blocks(run / "keys" / "alice"))) == 1


def test_a_low_or_exhausted_pool_says_how_to_rekey(tmp_path: Path) -> None:
    psk = tmp_path / "small.bin"
    write_psk(psk, 32 + 2 * 96)  # two sessions
    ends = Endpoints.__new__(Endpoints)
    ends.root = tmp_path
    ends.alice = KeyFolder.open(tmp_path / "alice", psk, "alice")
    ends.bob = KeyFolder.open(tmp_path / "bob", psk, "bob")
    ra, _ = ends.session(records(24), tap_ab=_on_kind(MessageKind.PA_SEED, _flip_last))
    assert ra.aborted and "qdnet auth init" in (ra.auth_warning or "")
    ends.session(records(25), tap_ab=_on_kind(MessageKind.PA_SEED, _flip_last))
    ra, _rb = ends.session(records(26))
    assert ra.aborted and "exhausted" in ra.reason and "qdnet auth init" in ra.reason


def test_forged_cascade_parities_end_the_session_instead_of_spinning(tmp_path: Path) -> None:
    """A forged EC_START (right counts and QBER, random top-level parities) made Bob's compiled
    Cascade round flip bits back and forth for ever, out of reach of any receive deadline."""
    rng = np.random.default_rng(5)

    def forge(frame: bytes) -> list[bytes]:
        msg = decode_message(frame)
        tops = rng.integers(0, 256, len(msg.arrays["tops"]), dtype=np.uint8)
        return [encode_message(Message(msg.kind, msg.fields, {"tops": tops}), msg.seq)]

    ends = Endpoints(tmp_path)
    ra, rb = ends.session(records(30), tap_ab=_on_kind(MessageKind.EC_START, forge))
    assert rb.aborted and "Cascade: flips in one round exceed half" in rb.reason, ra.reason
    ra, rb = ends.session(records(31))
    assert not ra.aborted and not rb.aborted


def test_a_forged_slot_in_hello_cannot_burn_the_pool(tmp_path: Path) -> None:
    """The handshake agrees on the larger slot; a forged far-ahead slot is refused instead."""

    def forge(frame: bytes) -> list[bytes]:
        msg = decode_message(frame)
        fields = {**msg.fields, "auth_slot": 40}
        return [encode_message(Message(msg.kind, fields, msg.arrays), msg.seq)]

    ends = Endpoints(tmp_path)
    ra, rb = ends.session(records(32), tap_ab=_on_kind(MessageKind.HELLO, forge))
    assert rb.aborted and "out of step" in rb.reason
    assert ends.bob.pool.next_slot == 0 and ends.bob.pool.slots_left == 42
    ra, rb = ends.session(records(33))
    assert not ra.aborted and not rb.aborted


def test_a_forged_cascade_question_cannot_read_out_of_bounds(tmp_path: Path) -> None:
    """index << level overflowed to a negative start in Alice's compiled answer: a segfault."""

    def forge(frame: bytes) -> list[bytes]:
        msg = decode_message(frame)
        arrays = {**msg.arrays}
        arrays["index"] = np.full(len(arrays["index"]), 1 << 62, dtype=np.int64)
        arrays["level"] = np.full(len(arrays["level"]), 40, dtype=np.uint8)
        return [encode_message(Message(msg.kind, msg.fields, arrays), msg.seq)]

    ends = Endpoints(tmp_path)
    ra, _rb = ends.session(records(34), tap_ba=_on_kind(MessageKind.EC_QUESTIONS, forge))
    assert ra.aborted and "parity question out of range" in ra.reason
