"""The two post-processing endpoints: sift -> estimate -> reconcile -> verify -> amplify.

Alice and Bob are separate coroutines that share nothing but messages on an
:class:`~qdnet.transport.authentication.AuthenticatedChannel`; each reads only its own records and
keeps its own :class:`~qdnet.postprocessing.keyblock.KeyFolder` (blocks, pending blocks, pool).
Message flow (A = Alice, B = Bob)::

    A HELLO(block id, parameters, metadata digest, secret fingerprint, slot, nonce, segments)
    B HELLO_ACK(metadata digest, secret fingerprint, slot, nonce, segments)
      -> both check the run and the secret, agree on the session's one-time keys and persist
         them as used; a mismatch stops here, before any record is disclosed
    B SIFT_REQUEST x k (slots, Bob's bases; chunks of SIFT_CHUNK detections; decoy MDI: and
      Bob's intensity classes)
    A SIFT_REPLY x k (bases, classes; the last one with Alice's test bits; decoy MDI: and the
      seed of the key sample, :mod:`qdnet.postprocessing.sifting`)
    B TEST_BITS(Bob's test bits)
      -> both compute the same estimate and the same abort decision
    A EC_START ... B/A EC rounds (Cascade: questions/answers; LDPC: syndrome, reveals)
    A VERIFY_HASH(keys, digest)          B VERIFY_RESULT(ok, corrected bits)
    A PA_SEED(fresh Toeplitz seed, output length)
    A AUTH_TAG                           B AUTH_TAG   (tags on the whole transcript, both ways)
    A CONFIRM or ABORT, each with a one-time Poly1305 tag (the verdict; 3 x 256 bits in all)

Alice keeps the block once Bob's tag verifies (then sends CONFIRM); Bob holds it *pending* once
Alice's tag verifies (before revealing his own) and keeps it on an authentic CONFIRM. A pending
block is never offered to a KMS; the next session's authenticated HELLO confirms it (Alice's
pool holds its refill) or discards it (see :meth:`KeyFolder.resolve_pending`). Both ends also
remember a digest of their records with the pool and refuse to distil the same run twice.

Every disclosed parity or syndrome bit, the verification hash and the count of corrected bits Bob
announces (at most log2(n + 1) bits) are charged to the key (``leak_ec_bits`` passed to
:func:`qdnet.security.finite_key.secret_key_length`; the hash bits are charged on top of the
formula's log2(2/eps_cor) term, which is conservative). A block is eps_total-secure with
eps_total = eps_sec + eps_cor + eps_auth (eps_auth: Poly1305 forgery bound of the session's three
tags). Any failure -- a failed verification or tag, a malformed, out-of-sequence or late message,
a QBER above threshold, or any other exception -- ends the session with ``aborted=True`` and the
reason; no key block is kept then.

Decoy-state BB84 is distilled only from a weak-coherent (Poisson) source: the finite-key decoy
bound used here (Lim et al., PRA 89, 022307 (2014)) assumes Poisson photon numbers, and qdnet has
no finite-size bound for a quantum dot with decoy intensities.
"""

from __future__ import annotations

import dataclasses
import math
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
from numpy.typing import NDArray

from qdnet.postprocessing import ldpc as ldpc_ec
from qdnet.postprocessing.amplification import fresh_seed, toeplitz_hash
from qdnet.postprocessing.cascade import (
    MAX_PASSES,
    CascadeAliceFrames,
    CascadeBobFrames,
    CascadeConfig,
)
from qdnet.postprocessing.estimation import (
    Estimate,
    estimate_run,
    observed_counts,
)
from qdnet.postprocessing.key_length import KeyLengthFn, key_length_for
from qdnet.postprocessing.keyblock import KeyBlock, KeyFolder
from qdnet.postprocessing.sifting import (
    Sifted,
    SiftingError,
    alice_sift,
    bob_sift,
    class_pairs,
)
from qdnet.postprocessing.verification import MERSENNE_61, VerificationHash
from qdnet.protocols.records import PartyRecords, RecordsMeta
from qdnet.security.entropy import binary_entropy
from qdnet.transport.authentication import (
    COMMIT_KEY_BITS,
    AuthenticAbortError,
    AuthenticatedChannel,
)
from qdnet.transport.messages import FieldValue, Message, MessageKind, ProtocolError

Progress = Callable[[str, float], None]
METHODS = ("cascade", "ldpc")
#: Detections per SIFT_REQUEST / SIFT_REPLY frame (9 bytes each: 36 MiB at most, so a run of
#: 1e9 detections goes in 239 chunks under the transport's frame cap).
SIFT_CHUNK = 1 << 22
#: Authentication key refilled from each kept block: two session slots (one pays for this
#: session, one for a failed session), so a pool grows while sessions succeed.
AUTH_REFILL_BITS = 2 * COMMIT_KEY_BITS


@dataclass(frozen=True)
class SessionConfig:
    """Parameters Alice announces in HELLO (Bob adopts them; users change them in the CLI)."""

    method: str = "cascade"
    eps_sec: float = 1e-10
    eps_cor: float = 1e-15
    eps_pe: float = 1e-10
    qber_threshold: float = 0.11
    frame_bits: int = 1_000_000
    cascade: CascadeConfig = field(default_factory=CascadeConfig)
    ldpc_frame_bits: int = 20_000

    def to_fields(self) -> dict[str, Any]:
        """Wire form."""
        c = self.cascade
        return {
            "method": self.method,
            "eps_sec": self.eps_sec,
            "eps_cor": self.eps_cor,
            "eps_pe": self.eps_pe,
            "qber_threshold": self.qber_threshold,
            "frame_bits": self.frame_bits,
            "ldpc_frame_bits": self.ldpc_frame_bits,
            "cascade": [
                c.passes,
                c.concurrent_from,
                c.first_block_factor,
                c.second_block_multiplier,
                c.min_qber,
                c.large_frame_bits,
                c.tail_depth,
                c.tail_divisor,
                c.tail_min,
                c.partner_probe,
                int(c.probe_any),
                int(c.defer_late),
                c.priority,
                c.large_frame_passes,
            ],
        }

    @classmethod
    def from_message(cls, msg: Message) -> SessionConfig:
        """Parse Alice's HELLO."""
        raw = msg.fields.get("cascade")
        if not isinstance(raw, list) or len(raw) != 14:
            raise ProtocolError("HELLO: bad cascade parameters")
        method = msg.field_str("method")
        if method not in METHODS:
            raise ProtocolError(f"HELLO: unknown method {method!r}")
        try:
            cascade = CascadeConfig(
                int(raw[0]),
                int(raw[1]),
                float(raw[2]),
                int(raw[3]),
                float(raw[4]),
                int(raw[5]),
                min(4, max(1, int(raw[6]))),
                max(1, int(raw[7])),
                int(raw[8]),
                max(0, int(raw[9])),
                bool(int(raw[10])),
                bool(int(raw[11])),
                min(4, max(-1, int(raw[12]))),
                int(raw[13]),
            )
        except (TypeError, ValueError):
            raise ProtocolError("HELLO: bad cascade parameters") from None
        if not (
            1 <= cascade.passes <= MAX_PASSES and 1 <= cascade.large_frame_passes <= MAX_PASSES
        ):
            raise ProtocolError(f"HELLO: Cascade passes must be 1..{MAX_PASSES}")
        return cls(
            method=method,
            eps_sec=msg.field_float("eps_sec"),
            eps_cor=msg.field_float("eps_cor"),
            eps_pe=msg.field_float("eps_pe"),
            qber_threshold=msg.field_float("qber_threshold"),
            frame_bits=msg.field_int("frame_bits"),
            ldpc_frame_bits=msg.field_int("ldpc_frame_bits"),
            cascade=cascade,
        )


@dataclass
class SessionReport:
    """What one endpoint reports (never any key bits)."""

    role: str
    block_id: str = ""
    link_name: str = ""
    protocol: str = ""
    method: str = ""
    aborted: bool = False
    reason: str = ""
    detected_slots: int = 0
    sifted_key_bits: int = 0
    sifted_test_bits: int = 0
    estimate: dict[str, object] = field(default_factory=dict)
    qber_key: float | None = None
    leak_ec_bits: int = 0
    verification_bits: int = 0
    efficiency_f: float | None = None
    verified: bool | None = None
    eps_cor_achieved: float | None = None
    final_key_bits: int = 0
    finite_key_terms: dict[str, float] = field(default_factory=dict)
    auth_consumed_bits: int = 0
    auth_replenished_bits: int = 0
    auth_pool_bits: int = 0
    round_trips: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    frames: int = 0
    confirmed: bool | None = None
    pending: bool = False
    pending_resolution: str | None = None
    leak_corrected_count_bits: int = 0
    eps_sec: float | None = None
    eps_cor: float | None = None
    eps_auth: float | None = None
    eps_total: float | None = None
    simulated: bool | None = None
    auth_warning: str | None = None
    block: KeyBlock | None = field(default=None, repr=False)

    def as_dict(self) -> dict[str, object]:
        """JSON-ready report without the key."""
        out = {k: v for k, v in self.__dict__.items() if k != "block"}
        out["key_block_written"] = self.block is not None
        return out


class SessionAbortError(Exception):
    """A locally decided abort (reason in the message)."""


def _split_frames(n: int, frame_bits: int) -> list[tuple[int, int]]:
    count = max(1, math.ceil(n / max(1, frame_bits)))
    edges = np.linspace(0, n, count + 1).astype(np.int64)
    return [(int(edges[i]), int(edges[i + 1])) for i in range(count) if edges[i + 1] > edges[i]]


def _pack(bits: NDArray[np.uint8]) -> NDArray[np.uint8]:
    return np.packbits(bits)


def _unpack(msg: Message, name: str, count: int) -> NDArray[np.uint8]:
    packed = msg.array(name, "uint8", (count + 7) // 8)
    return np.unpackbits(packed)[:count].copy()


#: Error-correction efficiency assumed when deciding, before reconciliation, whether a key is
#: possible at all (worse than every method's measured f, so no block is started in vain).
PREDICTED_EC_EFFICIENCY = 1.2


def _decide(
    est: Estimate, meta: RecordsMeta, cfg: SessionConfig, key_length: KeyLengthFn
) -> str | None:
    """The abort decision both ends take from the same public estimate (None: go on)."""
    if sum(est.key_detections) == 0:
        return "no sifted key bits"
    if sum(est.test_detections) == 0:
        return "no test-basis bits to estimate the QBER"
    if est.qber_upper > cfg.qber_threshold:
        return (
            f"QBER {est.qber:.4f} (upper bound {est.qber_upper:.4f} at eps {cfg.eps_pe:g}) "
            f"exceeds the threshold {cfg.qber_threshold:.4f}"
        )
    n_key = sum(est.key_detections)
    predicted_leak = PREDICTED_EC_EFFICIENCY * n_key * binary_entropy(min(est.qber, 0.5))
    predicted = key_length(observed_counts(meta, est), predicted_leak, cfg.eps_sec, cfg.eps_cor)
    if predicted.bits <= 0:
        return (
            f"no secret key possible: finite-key length <= 0 for {n_key} key bits at "
            f"QBER {est.qber:.4f}"
        )
    return None


def unsupported_reason(meta: RecordsMeta) -> str | None:
    """Why these records cannot be distilled with a sound finite-key bound (None: they can)."""
    if meta.protocol != "decoy-bb84":
        return None
    source = meta.link.get("source") if isinstance(meta.link, dict) else None
    kind = source.get("kind") if isinstance(source, dict) else None
    if kind == "weak-coherent":
        return None
    return (
        f"decoy-bb84 records from a {kind or 'unstated'} source: the finite-key decoy bound "
        "(Lim et al. 2014) assumes Poisson photon numbers (source.kind weak-coherent), and qdnet "
        "has no finite-size bound for a quantum dot with decoy intensities"
    )


def _meta_fields(meta: RecordsMeta) -> dict[str, FieldValue]:
    return {"link_name": meta.link_name, "protocol": meta.protocol, "meta_digest": meta.digest()}


def _check_meta(msg: Message, meta: RecordsMeta) -> None:
    """Stop before any disclosure when the peer's run is not this end's run."""
    if msg.field_str("link_name") != meta.link_name or msg.field_str("protocol") != meta.protocol:
        raise SessionAbortError(
            f"the peer runs link {msg.fields.get('link_name')!r}/{msg.fields.get('protocol')!r}, "
            f"this endpoint has {meta.link_name!r}/{meta.protocol!r}"
        )
    if msg.field_str("meta_digest") != meta.digest():
        raise SessionAbortError(
            "the peer's run metadata (meta.json) differs from this endpoint's: both ends must "
            "load the same run (pulses per intensity, intensities, basis bias, link, ...)"
        )


def _block_id(msg: Message) -> str:
    raw = msg.field_str("block_id")
    try:
        if str(uuid.UUID(raw)) == raw:
            return raw
    except ValueError:
        pass
    raise ProtocolError("HELLO: block_id is not a UUID")


# ---------------------------------------------------------------------------------------------
# error correction: Cascade over many frames in lockstep


async def _cascade_alice(
    chan: AuthenticatedChannel,
    key: NDArray[np.uint8],
    frames: list[tuple[int, int]],
    qber: float,
    cfg: SessionConfig,
) -> int:
    seed = secrets.randbits(63)
    alice = CascadeAliceFrames([key[a:b] for a, b in frames], qber, seed, cfg.cascade)
    tops = alice.top_parities()
    await chan.send(
        Message(
            MessageKind.EC_START,
            fields={"seed": seed, "qber": qber, "counts": [len(t) for t in tops]},
            arrays={"tops": _pack(np.concatenate(tops))},
        )
    )
    while True:
        msg = await chan.recv(MessageKind.EC_QUESTIONS)
        frame = msg.array("frame", "int32")
        count = len(frame)
        if count == 0:
            break
        passes = msg.array("pass", "uint8", count)
        levels = msg.array("level", "uint8", count)
        index = msg.array("index", "int64", count)
        try:
            answers = alice.answer(frame, passes, levels, index)
        except ValueError as exc:
            raise ProtocolError(f"EC_QUESTIONS: {exc}") from None
        await chan.send(
            Message(MessageKind.EC_ANSWERS, fields={"count": count}, arrays={"p": _pack(answers)})
        )
    return alice.leaked_bits


async def _cascade_bob(
    chan: AuthenticatedChannel,
    key: NDArray[np.uint8],
    frames: list[tuple[int, int]],
    estimated_qber: float,
    cfg: SessionConfig,
    progress: Progress | None,
) -> tuple[NDArray[np.uint8], int]:
    start = await chan.recv(MessageKind.EC_START)
    seed = start.field_int("seed")
    qber = start.field_float("qber")
    if qber != estimated_qber:  # both ends computed it from the same disclosed test bits
        raise ProtocolError("EC_START: QBER differs from the estimate both ends computed")
    counts_raw = start.fields.get("counts")
    if not isinstance(counts_raw, list) or len(counts_raw) != len(frames):
        raise ProtocolError("EC_START: bad frame counts")
    bob = CascadeBobFrames([key[a:b] for a, b in frames], qber, seed, cfg.cascade)
    counts = [int(c) for c in counts_raw]
    if counts != bob.expected_top_parities():
        raise ProtocolError("EC_START: top-level parity counts do not match")
    tops = _unpack(start, "tops", sum(counts))
    leaked = len(tops)
    edges = np.cumsum([0, *counts])
    questions = bob.start([tops[edges[i] : edges[i + 1]] for i in range(len(counts))])
    while True:
        frame, passes, levels, index = questions
        total = len(frame)
        msg = Message(
            MessageKind.EC_QUESTIONS,
            arrays={"frame": frame, "pass": passes, "level": levels, "index": index},
        )
        if total == 0:
            await chan.send(msg)
            break
        reply = await chan.request(msg, MessageKind.EC_ANSWERS)
        answers = _unpack(reply, "p", total)
        leaked += total
        questions = bob.step(answers)
        if progress is not None:
            progress("reconcile", bob.progress)
    return np.concatenate(bob.bits), leaked


# ---------------------------------------------------------------------------------------------
# the endpoints


async def _recv_sift_request(
    chan: AuthenticatedChannel, records: PartyRecords, meta: RecordsMeta
) -> tuple[NDArray[np.int64], NDArray[np.uint8], NDArray[np.uint8], int]:
    """Alice: Bob's detected slots, bases and (decoy MDI) classes, in chunks; returns (slots,
    bases, classes or an empty array, chunk size)."""
    first = await chan.recv(MessageKind.SIFT_REQUEST)
    total = first.field_int("total")
    chunk = first.field_int("chunk")
    if not 0 <= total <= len(records):
        raise SessionAbortError(
            f"Bob announces {total} detections, Alice's records hold {len(records)}: "
            "not the same run"
        )
    if chunk < 1:
        raise ProtocolError("SIFT_REQUEST: chunk size must be positive")
    slots: list[NDArray[np.int64]] = []
    bases: list[NDArray[np.uint8]] = []
    classes: list[NDArray[np.uint8]] = [np.zeros(0, dtype=np.uint8)]
    msg = first
    for start in range(0, max(total, 1), chunk):
        size = min(chunk, total - start)
        if start:
            msg = await chan.recv(MessageKind.SIFT_REQUEST)
        slots.append(msg.array("slots", "int64", size))
        bases.append(msg.array("basis", "uint8", size))
        if class_pairs(meta):
            classes.append(msg.array("intensity", "uint8", size))
    return np.concatenate(slots), np.concatenate(bases), np.concatenate(classes), chunk


async def _send_sift_request(
    chan: AuthenticatedChannel, records: PartyRecords, meta: RecordsMeta
) -> None:
    total = len(records)
    slot = records.slot.astype(np.int64)
    basis = records.basis.astype(np.uint8)
    for start in range(0, max(total, 1), SIFT_CHUNK):
        stop = min(total, start + SIFT_CHUNK)
        await chan.send(
            Message(
                MessageKind.SIFT_REQUEST,
                fields={"total": total, "chunk": SIFT_CHUNK},
                arrays={
                    "slots": slot[start:stop],
                    "basis": basis[start:stop],
                    **({"intensity": records.intensity[start:stop]} if class_pairs(meta) else {}),
                },
            )
        )


async def run_alice(
    chan: AuthenticatedChannel,
    records: PartyRecords,
    meta: RecordsMeta,
    keys: KeyFolder,
    cfg: SessionConfig | None = None,
    key_length: KeyLengthFn | None = None,
    progress: Progress | None = None,
) -> SessionReport:
    """Alice's endpoint. ``report.block`` holds the key if one was kept (also in ``keys``);
    ``key_length`` defaults to the run's protocol's analysis (:func:`key_length_for`)."""
    cfg = cfg or SessionConfig()
    report = SessionReport(
        role="alice",
        block_id=str(uuid.uuid4()),
        link_name=meta.link_name,
        protocol=meta.protocol,
        method=cfg.method,
    )
    pool_start = chan.pool.consumed_bits
    try:
        _check_pool(chan, keys)
        reason = unsupported_reason(meta)
        if reason is not None:
            raise SessionAbortError(reason)
        length_fn = key_length or key_length_for(meta)
        ack = await chan.open_session(
            {"block_id": report.block_id, **_meta_fields(meta), **cfg.to_fields()}
        )
        _check_meta(ack, meta)
        keys.pool.claim(records.digest())  # persisted before anything of them is disclosed
        slots, bob_basis, bob_class, chunk = await _recv_sift_request(chan, records, meta)
        sample_seed = secrets.randbits(63)  # chosen after Bob's announcement (decoy MDI)
        n_classes = class_pairs(meta)
        pairs = (bob_class, n_classes, sample_seed) if n_classes else None
        try:
            basis, intensity, sifted = alice_sift(records, slots, bob_basis, pairs)
        except SiftingError as exc:
            raise SessionAbortError(str(exc)) from None
        report.detected_slots = len(slots)
        for start in range(0, max(len(slots), 1), chunk):
            stop = min(len(slots), start + chunk)
            last = stop >= len(slots)
            await chan.send(
                Message(
                    MessageKind.SIFT_REPLY,
                    fields=(
                        {
                            "test_bits": len(sifted.test_bits),
                            **({"sample_seed": sample_seed} if n_classes else {}),
                        }
                        if last
                        else {}
                    ),
                    arrays={
                        "basis": basis[start:stop],
                        "intensity": intensity[start:stop],
                        **({"test": _pack(sifted.test_bits)} if last else {}),
                    },
                )
            )
        tb = await chan.recv(MessageKind.TEST_BITS)
        bob_test = _unpack(tb, "test", len(sifted.test_bits))
        est = _estimate_and_decide(report, sifted, bob_test, meta, cfg, length_fn, progress)
        key = sifted.key_bits
        if cfg.method == "cascade":
            frames = _split_frames(len(key), cfg.frame_bits)
            report.leak_ec_bits = await _cascade_alice(chan, key, frames, est.qber, cfg)
        else:
            frames = _split_frames(len(key), cfg.ldpc_frame_bits)
            report.leak_ec_bits = await ldpc_ec.alice_reconcile(chan, key, frames, est.qber)
        report.frames = len(frames)
        vh = VerificationHash.fresh(len(key), cfg.eps_cor)
        await chan.send(
            Message(
                MessageKind.VERIFY_HASH,
                fields={"keys": list(vh.keys), "digest": list(vh.digest(key))},
            )
        )
        result = await chan.recv(MessageKind.VERIFY_RESULT)
        report.verification_bits = vh.leaked_bits
        report.eps_cor_achieved = vh.collision_probability(len(key))
        report.verified = result.fields.get("ok") is True
        corrected = result.field_int("corrected")
        if not 0 <= corrected <= len(key):
            raise ProtocolError("VERIFY_RESULT: corrected count out of range")
        _fill_ec(report, len(key), corrected)
        if not report.verified:
            raise SessionAbortError(
                "verification failed: the keys still differ after error correction"
            )
        final_fn = key_length or key_length_for(meta, corrected)
        length = _final_length(report, est, meta, cfg, final_fn)
        seed = fresh_seed(len(key), length)
        await chan.send(
            Message(
                MessageKind.PA_SEED,
                fields={"m": length, "nbits": len(seed)},
                arrays={"seed": _pack(seed)},
            )
        )
        block, refill = _make_block(report, toeplitz_hash(key, seed, length), est, meta, cfg)
        report.confirmed = await chan.commit(
            report.block_id.encode(), lambda: keys.keep(_with_auth(block, chan), refill)
        )
        report.block = _with_auth(block, chan)
        _fill_eps(report, report.block)
        await chan.close()  # Bob treats the end of the stream after his tag as "no ABORT"
    except Exception as exc:  # any failure aborts the session cleanly
        await _abort(report, chan, exc)
    finally:
        _fill_channel(report, chan, pool_start)
    return report


async def run_bob(
    chan: AuthenticatedChannel,
    records: PartyRecords,
    meta: RecordsMeta,
    keys: KeyFolder,
    key_length: KeyLengthFn | None = None,
    progress: Progress | None = None,
) -> SessionReport:
    """Bob's endpoint; he adopts the parameters Alice announces in HELLO.

    ``report.block`` holds the key when Alice's tag verified; ``report.pending`` says it waits
    in ``KEYS/pending`` for her confirmation (no authentic CONFIRM arrived).
    """
    report = SessionReport(role="bob", link_name=meta.link_name, protocol=meta.protocol)
    pool_start = chan.pool.consumed_bits
    held = False
    try:
        _check_pool(chan, keys)
        hello = await chan.recv(MessageKind.HELLO)
        _check_meta(hello, meta)
        cfg = SessionConfig.from_message(hello)
        report.block_id = _block_id(hello)
        report.method = cfg.method
        reason = unsupported_reason(meta)
        if reason is not None:
            raise SessionAbortError(reason)
        length_fn = key_length or key_length_for(meta)
        await chan.accept_session(hello, _meta_fields(meta))
        keys.pool.claim(records.digest())  # persisted before anything of them is disclosed
        await _send_sift_request(chan, records, meta)
        report.detected_slots = len(records)
        basis_parts: list[NDArray[np.uint8]] = []
        class_parts: list[NDArray[np.uint8]] = []
        for start in range(0, max(len(records), 1), SIFT_CHUNK):
            size = min(SIFT_CHUNK, len(records) - start)
            reply = await chan.recv(MessageKind.SIFT_REPLY)
            basis_parts.append(reply.array("basis", "uint8", size))
            class_parts.append(reply.array("intensity", "uint8", size))
        alice_basis = np.concatenate(basis_parts)
        intensity = np.concatenate(class_parts)
        if len(intensity) and int(intensity.max()) >= len(meta.intensities):
            raise ProtocolError("SIFT_REPLY: intensity class out of range")
        if len(alice_basis) and int(alice_basis.max()) > 1:
            raise ProtocolError("SIFT_REPLY: basis out of range")
        n_classes = class_pairs(meta)
        pairs = (n_classes, reply.field_int("sample_seed")) if n_classes else None
        try:
            sifted = bob_sift(records, alice_basis, intensity, pairs)
        except SiftingError as exc:
            raise SessionAbortError(str(exc)) from None
        if reply.field_int("test_bits") != len(sifted.test_bits):
            raise ProtocolError("SIFT_REPLY: test bit count disagrees with the sifting")
        alice_test = _unpack(reply, "test", len(sifted.test_bits))
        await chan.send(Message(MessageKind.TEST_BITS, arrays={"test": _pack(sifted.test_bits)}))
        est = _estimate_and_decide(report, sifted, alice_test, meta, cfg, length_fn, progress)
        key = sifted.key_bits
        if cfg.method == "cascade":
            frames = _split_frames(len(key), cfg.frame_bits)
            corrected, report.leak_ec_bits = await _cascade_bob(
                chan, key, frames, est.qber, cfg, progress
            )
        else:
            frames = _split_frames(len(key), cfg.ldpc_frame_bits)
            corrected, report.leak_ec_bits = await ldpc_ec.bob_reconcile(chan, key, frames)
        report.frames = len(frames)
        flipped = int(np.count_nonzero(corrected != key))
        vmsg = await chan.recv(MessageKind.VERIFY_HASH)
        keys_raw = vmsg.fields.get("keys")
        digest_raw = vmsg.fields.get("digest")
        if (
            not isinstance(keys_raw, list)
            or not isinstance(digest_raw, list)
            or len(keys_raw) != len(digest_raw)
            or not keys_raw
            or len(keys_raw) > 64
            or not all(isinstance(k, int) and 0 <= k < MERSENNE_61 for k in keys_raw)
        ):
            raise ProtocolError("VERIFY_HASH: malformed hash keys")
        vh = VerificationHash(tuple(int(k) for k in keys_raw))
        report.verified = list(vh.digest(corrected)) == digest_raw
        report.verification_bits = vh.leaked_bits
        report.eps_cor_achieved = vh.collision_probability(len(key))
        _fill_ec(report, len(key), flipped)
        await chan.send(
            Message(MessageKind.VERIFY_RESULT, fields={"ok": report.verified, "corrected": flipped})
        )
        if not report.verified:
            raise SessionAbortError(
                "verification failed: the keys still differ after error correction"
            )
        final_fn = key_length or key_length_for(meta, flipped)
        length = _final_length(report, est, meta, cfg, final_fn)
        pa = await chan.recv(MessageKind.PA_SEED)
        if pa.field_int("m") != length or pa.field_int("nbits") != len(key) + length - 1:
            raise ProtocolError("PA_SEED: output length disagrees with Bob's finite-key length")
        seed = _unpack(pa, "seed", len(key) + length - 1)
        block, refill = _make_block(report, toeplitz_hash(corrected, seed, length), est, meta, cfg)

        def hold() -> None:  # Alice's tag verified: her HELLO was authentic
            nonlocal held
            tail = hello.fields.get("auth_tail")
            report.pending_resolution = keys.resolve_pending(
                hello.field_int("auth_segments"), cast(list[str], tail)
            )
            keys.hold(_with_auth(block, chan), refill)
            held = True

        report.confirmed = await chan.commit(report.block_id.encode(), hold)
        if report.confirmed:
            keys.confirm()
        report.pending = not report.confirmed
        report.block = _with_auth(block, chan)
        _fill_eps(report, report.block)
    except Exception as exc:  # any failure aborts the session cleanly
        if held and isinstance(exc, AuthenticAbortError):
            keys.discard()  # Alice really rejected the block
        elif held:
            report.pending = True  # Alice may hold it: a later session decides
        await _abort(report, chan, exc)
    finally:
        _fill_channel(report, chan, pool_start)
    return report


# ---------------------------------------------------------------------------------------------
# shared helpers


def _estimate_and_decide(
    report: SessionReport,
    sifted: Sifted,
    peer_test_bits: NDArray[np.uint8],
    meta: RecordsMeta,
    cfg: SessionConfig,
    key_length: KeyLengthFn,
    progress: Progress | None,
) -> Estimate:
    """Parameter estimation from the disclosed test bits, then the common abort decision."""
    est = estimate_run(
        meta, sifted.key_class, sifted.test_class, peer_test_bits != sifted.test_bits, cfg.eps_pe
    )
    report.sifted_key_bits = sum(est.key_detections)
    report.sifted_test_bits = sum(est.test_detections)
    report.estimate = est.as_dict()
    if progress is not None:
        progress("estimate", 1.0)
    reason = _decide(est, meta, cfg, key_length)
    if reason is not None:
        raise SessionAbortError(reason)
    return est


def _fill_ec(report: SessionReport, n: int, corrected: int) -> None:
    q = corrected / n if n else 0.0
    report.qber_key = q
    h = binary_entropy(q)
    report.efficiency_f = report.leak_ec_bits / (n * h) if h > 0 else None


def _check_pool(chan: AuthenticatedChannel, keys: KeyFolder) -> None:
    if chan.pool is not keys.pool:
        raise ValueError("the channel must draw from the key folder's authentication pool")


def corrected_count_bits(n: int) -> int:
    """Bits Bob's announced count of corrected errors can carry: ceil(log2(n + 1))."""
    return max(1, math.ceil(math.log2(n + 1)))


def _final_length(
    report: SessionReport,
    est: Estimate,
    meta: RecordsMeta,
    cfg: SessionConfig,
    key_length: KeyLengthFn,
) -> int:
    """Finite-key length with every disclosure charged, in whole bytes; aborts when it leaves no
    key after the authentication refill."""
    n = sum(est.key_detections)
    report.leak_corrected_count_bits = corrected_count_bits(n)
    leak = report.leak_ec_bits + report.verification_bits + report.leak_corrected_count_bits
    result = key_length(observed_counts(meta, est), float(leak), cfg.eps_sec, cfg.eps_cor)
    report.finite_key_terms = {k: float(v) for k, v in result.terms.items()}
    usable = min(result.bits, n)
    if usable - AUTH_REFILL_BITS < 8:
        raise SessionAbortError(
            f"finite-key length {result.bits} bits leaves no key after refilling "
            f"{AUTH_REFILL_BITS} authentication bits"
        )
    return (usable // 8) * 8


def _make_block(
    report: SessionReport,
    final: NDArray[np.uint8],
    est: Estimate,
    meta: RecordsMeta,
    cfg: SessionConfig,
) -> tuple[KeyBlock, bytes]:
    """The key block and the authentication refill taken from the front of the final key."""
    packed = np.packbits(final).tobytes()
    refill, key = packed[: AUTH_REFILL_BITS // 8], packed[AUTH_REFILL_BITS // 8 :]
    report.auth_replenished_bits = AUTH_REFILL_BITS
    report.final_key_bits = len(key) * 8
    block = KeyBlock(
        block_id=report.block_id,
        link_name=meta.link_name,
        key=key,
        length_bits=len(key) * 8,
        protocol=meta.protocol,
        eps_sec=cfg.eps_sec,
        eps_cor=cfg.eps_cor,
        qber=float(report.qber_key if report.qber_key is not None else est.qber),
        simulated=meta.simulated,
    )
    return block, refill


def _with_auth(block: KeyBlock, chan: AuthenticatedChannel) -> KeyBlock:
    """The block with the session's authentication failure probability (known at commit)."""
    return dataclasses.replace(block, eps_auth=chan.eps_auth)


def _fill_eps(report: SessionReport, block: KeyBlock) -> None:
    report.eps_sec = block.eps_sec
    report.eps_cor = block.eps_cor
    report.eps_auth = block.eps_auth
    report.eps_total = block.eps_total
    report.simulated = block.simulated


async def _abort(report: SessionReport, chan: AuthenticatedChannel, exc: Exception) -> None:
    report.aborted = True
    report.reason = str(exc) or type(exc).__name__
    report.block = None
    report.final_key_bits = 0
    await chan.abort(report.reason)


def _fill_channel(report: SessionReport, chan: AuthenticatedChannel, pool_start: int) -> None:
    report.round_trips = chan.round_trips
    report.bytes_sent = chan.bytes_sent
    report.bytes_received = chan.bytes_received
    report.auth_consumed_bits = chan.pool.consumed_bits - pool_start
    if report.block is None:
        report.auth_replenished_bits = 0
    report.auth_pool_bits = chan.pool.available_bits
    report.auth_warning = chan.pool.low_warning()
