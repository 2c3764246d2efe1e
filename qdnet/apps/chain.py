"""The whole chain on one machine: quantum-dot link -> raw records -> two post-processing endpoints
over TCP -> two KMS over mutual TLS -> two applications encrypting with the delivered keys; then an
intercept-resend eavesdropper whose block is refused and never reaches the key stores.

Everything lives in one working folder; no process or thread outlives :func:`run_chain`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from qdnet.attacks import make_attack
from qdnet.config import load_link_config
from qdnet.kms.link import start_link
from qdnet.kms.pki import create_pki
from qdnet.postprocessing.keyblock import KeyFolder
from qdnet.postprocessing.loopback import LoopbackResult, distill_loopback
from qdnet.postprocessing.session import SessionConfig
from qdnet.simulation.runner import SimulationResult, simulate
from qdnet.transport.authentication import write_psk

#: AES-256-GCM key size (bits) requested from the KMS.
APPLICATION_KEY_BITS = 256
#: Nonce size for AES-GCM (NIST SP 800-38D recommends 96 bits).
GCM_NONCE_BYTES = 12
#: Seconds between the demo KMS's looks for new key blocks (their default, 1 s, was most of the
#: demo's "store key blocks" step: ~0.9 s of waiting for the peers to share the blocks).
DEMO_INGEST_INTERVAL_S = 0.1

Step = Callable[[str], None]


@dataclass
class ChainSettings:
    """What the demo runs (defaults: the telecom quantum-dot link at 50 km)."""

    link_file: Path
    workdir: Path
    distance_km: float = 50.0
    pulses: int = 400_000_000
    seed: int = 7
    attack_fraction: float = 0.5
    keys_requested: int = 4
    message: bytes = b"qdnet: interception-proof keys from a quantum dot"
    #: Error correction of the sessions: ldpc (compiles in a third of Cascade's time on a fresh
    #: clone) or cascade.
    reconciliation: str = "ldpc"


@dataclass
class ChainSummary:
    """What happened, step by step (no key material)."""

    timings_s: dict[str, float] = field(default_factory=dict)
    honest_run: dict[str, Any] = field(default_factory=dict)
    honest_distillation: dict[str, Any] = field(default_factory=dict)
    kms: dict[str, Any] = field(default_factory=dict)
    application: dict[str, Any] = field(default_factory=dict)
    tapped_run: dict[str, Any] = field(default_factory=dict)
    tapped_distillation: dict[str, Any] = field(default_factory=dict)
    tapped_block_delivered: bool = False


@contextmanager
def _timed(summary: ChainSummary, name: str, step: Step) -> Iterator[None]:
    step(name)
    start = time.perf_counter()
    yield
    summary.timings_s[name] = time.perf_counter() - start


def _run_summary(result: SimulationResult) -> dict[str, Any]:
    doc = result.to_json()
    return {
        "pulses": doc["pulses"],
        "detections": doc["detections"],
        "qber": doc["qber"],
        "expected_qber": doc["expected"]["qber"],
        "verdict": doc["verdict"],
        "reason": doc["reason"],
    }


def _distillation_summary(result: LoopbackResult) -> dict[str, Any]:
    alice, bob = result.alice, result.bob
    same = alice.block is not None and bob.block is not None and alice.block.key == bob.block.key
    return {
        "aborted": result.aborted,
        "reason": alice.reason or bob.reason,
        "sifted_key_bits": alice.sifted_key_bits,
        "qber_key": alice.qber_key,
        "efficiency_f": alice.efficiency_f,
        "verified": alice.verified,
        "final_key_bits": alice.final_key_bits,
        "identical_keys": same,
        "round_trips": alice.round_trips,
        "auth_consumed_bits": alice.auth_consumed_bits,
    }


def _simulate(settings: ChainSettings, folder: str, attack: bool, seed: int) -> SimulationResult:
    config = load_link_config(settings.link_file)
    link = config.build().with_distance_km(settings.distance_km)
    interceptor = (
        make_attack("intercept-resend", settings.attack_fraction, "random", link.protocol.kind)
        if attack
        else None
    )
    return simulate(
        link,
        settings.pulses,
        np.random.default_rng(seed),
        attack=interceptor,
        keep_records=False,
        seed=seed,
        link_document=config.model_dump(mode="json"),
        out=settings.workdir / folder,
    )


def _distill(
    settings: ChainSettings, folder: str, keys: tuple[KeyFolder, KeyFolder]
) -> LoopbackResult:
    """Distil one run; each side's session writes its block into its key folder."""
    config = SessionConfig(method=settings.reconciliation)
    return distill_loopback(settings.workdir / folder, keys[0], keys[1], config)


def run_chain(settings: ChainSettings, step: Step = lambda _name: None) -> ChainSummary:
    """Run the whole chain in ``settings.workdir`` and report what happened."""
    wd = settings.workdir
    wd.mkdir(parents=True, exist_ok=True)
    summary = ChainSummary()
    psk = wd / "private" / "auth-psk.bin"  # a fresh pre-shared secret for this demo run
    write_psk(psk)
    pools = (
        KeyFolder.open(wd / "keys-alice", psk, "alice"),
        KeyFolder.open(wd / "keys-bob", psk, "bob"),
    )

    with _timed(summary, "simulate quantum-dot link (Monte Carlo)", step):
        honest = _simulate(settings, "run-honest", attack=False, seed=settings.seed)
    summary.honest_run = _run_summary(honest)

    with _timed(summary, "distil keys: Alice and Bob over TCP", step):
        distilled = _distill(settings, "run-honest", pools)
    summary.honest_distillation = _distillation_summary(distilled)
    if distilled.aborted:
        raise RuntimeError(f"honest block aborted: {summary.honest_distillation['reason']}")

    with _timed(summary, "PKI and two KMS over mutual TLS", step):
        pki = create_pki(wd / "pki", ["kme-alice", "kme-bob"], ["app-a", "app-b"])
        # The KMS look for new key blocks every DEMO_INGEST_INTERVAL_S (default 1 s): the demo
        # stores its blocks and waits for both KMS to share them, which then takes ~0.1 s.
        link = start_link(
            wd / "kms",
            pki,
            saes=(["app-a"], ["app-b"]),
            extra={"ingest_interval_s": DEMO_INGEST_INTERVAL_S},
        )
    try:
        with _timed(summary, "store key blocks in both KMS", step):
            link.ingest(wd / "keys-alice", wd / "keys-bob")
        with link.client("app-a") as app_a, link.client("app-b") as app_b:
            before = app_a.status("app-b")["stored_key_count"]
            with _timed(summary, "app A enc_keys, app B dec_keys, AES-256-GCM", step):
                keys_a = app_a.enc_keys(
                    "app-b", number=settings.keys_requested, size=APPLICATION_KEY_BITS
                )
                keys_b = app_b.dec_keys("app-a", [k.key_id for k in keys_a])
                nonce = os.urandom(GCM_NONCE_BYTES)
                ciphertext = AESGCM(keys_a[0].key).encrypt(nonce, settings.message, b"qdnet-demo")
                plaintext = AESGCM(keys_b[0].key).decrypt(nonce, ciphertext, b"qdnet-demo")
            summary.kms = {
                "stored_key_count_before": before,
                "keys_delivered": len(keys_a),
                "key_ids": [k.key_id for k in keys_a],
                "same_keys_at_b": [k.key for k in keys_a] == [k.key for k in keys_b],
            }
            summary.application = {
                "message_bytes": len(settings.message),
                "ciphertext_bytes": len(ciphertext),
                "decrypted_ok": plaintext == settings.message,
            }

            with _timed(summary, "eavesdropper: intercept-resend on the link", step):
                tapped = _simulate(settings, "run-tapped", attack=True, seed=settings.seed + 1)
            summary.tapped_run = _run_summary(tapped)
            with _timed(summary, "distil the tapped block", step):
                refused = _distill(settings, "run-tapped", pools)
            summary.tapped_distillation = _distillation_summary(refused)
            with _timed(summary, "offer the key folders to the KMS again", step):
                link.ingest(wd / "keys-alice", wd / "keys-bob")
                after = app_a.status("app-b")["stored_key_count"]
            refused_id = refused.alice.block_id
            stored = {p.stem for p in (wd / "keys-alice").glob("*.json")}
            summary.tapped_block_delivered = (not refused.aborted) or refused_id in stored
            summary.kms["stored_key_count_after_tap"] = after
    finally:
        link.stop()
    return summary
