"""MDI-QKD records from the Monte Carlo, distilled into keys by the two endpoints."""

from __future__ import annotations

import json
from pathlib import Path
from typing import cast

import numpy as np
import pytest
from typer.testing import CliRunner

from qdnet.cli import app
from qdnet.config import load_link
from qdnet.postprocessing.estimation import Estimate, observed_counts
from qdnet.postprocessing.key_length import key_length_for
from qdnet.postprocessing.keyblock import KeyFolder
from qdnet.postprocessing.loopback import distill_loopback
from qdnet.postprocessing.session import AUTH_REFILL_BITS, SessionConfig
from qdnet.postprocessing.sifting import (
    KEY_SAMPLE_FRACTION,
    KEY_SAMPLE_MAX,
    SiftingError,
    alice_sift,
    bob_sift,
    class_pairs,
)
from qdnet.protocols.mdi import decoy_gains
from qdnet.protocols.records import PartyRecords, RecordsMeta, load_meta, load_party_records
from qdnet.security.mdi import DecoyCounts, decoy_key_length
from qdnet.simulation.mdi import simulate_mdi
from qdnet.transport.authentication import write_psk

LINKS = Path(__file__).resolve().parents[2] / "examples" / "links"
#: Two bright telecom dots 2 x 10 km apart, near-identical photons (X-basis QBER ~4 %).
BRIGHT_DOTS = [
    "channel.length_km=20",
    "source.mean_photon_number=0.2",
    "source.indistinguishability=0.98",
    "source.spectral_diffusion_uev=0",
]


def test_mdi_dot_records_distil_into_identical_keys(tmp_path: Path) -> None:
    link = load_link(LINKS / "telecom-dot-mdi.yaml", BRIGHT_DOTS)
    run = tmp_path / "run"
    simulate_mdi(link, 120_000_000, np.random.default_rng(4), out=run, seed=4)
    meta = load_meta(run)
    assert meta.protocol == "mdi-bb84"
    assert len(meta.multiphoton_probability) == 4  # Alice's and Bob's P(n>=2), P(n>=1)
    psk = tmp_path / "psk.bin"
    write_psk(psk)
    keys = (
        KeyFolder.open(tmp_path / "ka", psk, "alice"),
        KeyFolder.open(tmp_path / "kb", psk, "bob"),
    )
    result = distill_loopback(run, keys[0], keys[1], SessionConfig())
    assert not result.aborted, result.alice.reason
    alice, bob = result.alice, result.bob
    assert alice.block is not None and bob.block is not None
    assert alice.block.key == bob.block.key
    assert alice.final_key_bits > 10_000
    assert alice.qber_key is not None and alice.qber_key < 0.02  # Z: misalignment only
    raw = alice.estimate
    est = Estimate(
        key_detections=tuple(raw["key_detections"]),  # type: ignore[arg-type]
        test_detections=tuple(raw["test_detections"]),  # type: ignore[arg-type]
        test_errors=tuple(raw["test_errors"]),  # type: ignore[arg-type]
        qber=float(raw["qber_test"]),  # type: ignore[arg-type]
        qber_upper=float(raw["qber_test_upper"]),  # type: ignore[arg-type]
        eps=float(raw["qber_confidence_eps"]),  # type: ignore[arg-type]
    )
    assert est.qber > 0.03  # X: two-photon interference V < 1
    assert alice.finite_key_terms["tagged_key_bits_upper"] > 0  # two-photon pairs charged
    # The final length uses the key errors error correction found, not every key bit.
    n = sum(est.key_detections)
    corrected = round(alice.qber_key * n)
    leak = alice.leak_ec_bits + alice.verification_bits + alice.leak_corrected_count_bits
    counts = observed_counts(meta, est)
    cfg = SessionConfig()
    true = key_length_for(meta, corrected)(counts, leak, cfg.eps_sec, cfg.eps_cor)
    conservative = key_length_for(meta)(counts, leak, cfg.eps_sec, cfg.eps_cor)
    assert true.bits > conservative.bits + 64
    assert alice.final_key_bits + AUTH_REFILL_BITS == (min(true.bits, n) // 8) * 8
    assert alice.finite_key_terms["tagged_key_bits_upper"] == true.terms["tagged_key_bits_upper"]


#: Two decoy lasers 2 x 10 km apart, intensities and class probabilities for a short block.
DECOY_LASERS = [
    "channel.length_km=20",
    "source.mean_photon_number=0.4",
    "source.decoy_intensities=[0.1]",
]
DECOY_CLASS_PROBABILITIES = (0.1, 0.6, 0.3)


def _folders(tmp_path: Path) -> tuple[KeyFolder, KeyFolder]:
    psk = tmp_path / "psk.bin"
    write_psk(psk)
    return (
        KeyFolder.open(tmp_path / "ka", psk, "alice"),
        KeyFolder.open(tmp_path / "kb", psk, "bob"),
    )


def test_decoy_laser_mdi_records_distil_into_identical_keys(tmp_path: Path) -> None:
    link = load_link(LINKS / "telecom-laser-mdi.yaml", DECOY_LASERS)
    run = tmp_path / "run"
    simulate_mdi(
        link,
        400_000_000,
        np.random.default_rng(4),
        class_probabilities=DECOY_CLASS_PROBABILITIES,
        out=run,
        seed=4,
    )
    meta = load_meta(run)
    assert meta.intensities == (0.4, 0.1, 0.0)
    assert sum(meta.pulses_per_intensity) == meta.pulses
    bob = load_party_records(run, "bob")
    assert set(np.unique(bob.intensity)) == {0, 1, 2}  # Bob's own classes, announced in sifting
    result = distill_loopback(run, *_folders(tmp_path), SessionConfig())
    assert not result.aborted, result.alice.reason
    alice = result.alice
    assert alice.block is not None and result.bob.block is not None
    assert alice.block.key == result.bob.block.key
    assert alice.final_key_bits > 2_000
    # Per (basis, class pair): the key sample in Z (QBER ~ misalignment), X far noisier.
    test, errors = alice.estimate["test_detections"], alice.estimate["test_errors"]
    assert isinstance(test, list) and isinstance(errors, list) and len(test) == 18
    assert cast(float, alice.estimate["qber_test"]) < 0.03
    assert sum(errors[9:]) / sum(test[9:]) > 0.2
    assert alice.qber_key is not None and alice.qber_key < 0.03
    terms = alice.finite_key_terms
    assert terms["key_sample_bits_disclosed"] == sum(test[:9]) > 1000
    assert terms["leak_ec_bits"] >= alice.leak_ec_bits + terms["key_sample_bits_disclosed"]


def test_cli_writes_decoy_laser_mdi_records(tmp_path: Path) -> None:
    out = tmp_path / "r"
    path = LINKS / "telecom-laser-mdi.yaml"
    args = ["simulate", str(path), "--pulses", "1e6", "--set", "channel.length_km=20"]
    result = CliRunner().invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    meta = load_meta(out)
    assert meta.protocol == "mdi-bb84" and len(meta.intensities) == 3
    alice, bob = load_party_records(out, "alice"), load_party_records(out, "bob")
    assert np.array_equal(alice.slot, bob.slot) and len(alice) > 1000
    assert not np.array_equal(alice.intensity, bob.intensity)
    again = tmp_path / "again"  # the seed reproduces the records bit for bit
    assert CliRunner().invoke(app, [*args, "--out", str(again)]).exit_code == 0
    assert load_party_records(again, "bob").digest() == bob.digest()
    assert load_party_records(again, "alice").digest() == alice.digest()


def test_mdi_meta_needs_both_sources_figures(tmp_path: Path) -> None:
    link = load_link(LINKS / "telecom-dot-mdi.yaml", ["channel.length_km=20"])
    simulate_mdi(link, 1_000_000, np.random.default_rng(1), out=tmp_path, seed=1)
    raw = json.loads((tmp_path / "meta.json").read_text())
    raw["multiphoton_probability"] = raw["multiphoton_probability"][:1]
    (tmp_path / "meta.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError, match="Alice's P\\(n>=2\\), P\\(n>=1\\), then Bob's"):
        load_meta(tmp_path)


def _decoy_meta() -> RecordsMeta:
    return RecordsMeta(
        protocol="mdi-bb84",
        link_name="l",
        pulses=1000,
        intensities=(0.4, 0.1, 0.0),
        pulses_per_intensity=(100, 600, 300),
        basis_bias=0.5,
        repetition_rate_hz=1e6,
        multiphoton_probability=(0.06, 0.33, 0.06, 0.33),
    )


def test_both_ends_sift_the_same_class_pairs_and_key_sample() -> None:
    rng = np.random.default_rng(2)
    n = 50_000
    slot = np.arange(n, dtype=np.int64)
    alice = PartyRecords(slot, *(rng.integers(0, k, n).astype(np.uint8) for k in (2, 2, 3)))
    bob = PartyRecords(slot, *(rng.integers(0, k, n).astype(np.uint8) for k in (2, 2, 3)))
    meta = _decoy_meta()
    assert class_pairs(meta) == 3
    basis, intensity, a = alice_sift(alice, slot, bob.basis, (bob.intensity, 3, 11))
    b = bob_sift(bob, basis, intensity, (3, 11))
    assert np.array_equal(a.key_class, b.key_class) and np.array_equal(a.test_class, b.test_class)
    z = (alice.basis == 0) & (bob.basis == 0)
    sample = min(KEY_SAMPLE_MAX, int(KEY_SAMPLE_FRACTION * np.count_nonzero(z)))
    assert len(a.key_bits) == np.count_nonzero(z) - sample
    assert np.count_nonzero(a.test_class < 9) == sample  # the key sample, by class pair
    pair = 3 * alice.intensity.astype(int) + bob.intensity
    x = (alice.basis == 1) & (bob.basis == 1)
    assert np.array_equal(np.sort(a.test_class[a.test_class >= 9]), np.sort(pair[x] + 9))
    other = bob_sift(bob, basis, intensity, (3, 12))  # another seed: another sample
    assert not np.array_equal(other.test_class, b.test_class)


def test_alice_refuses_a_class_out_of_range() -> None:
    slot = np.arange(4, dtype=np.int64)
    zeros = np.zeros(4, dtype=np.uint8)
    records = PartyRecords(slot, zeros, zeros, zeros)
    with pytest.raises(SiftingError, match="intensity class >= 3"):
        alice_sift(records, slot, zeros, (np.array([0, 1, 2, 3], dtype=np.uint8), 3, 1))


def test_decoy_key_length_charges_the_disclosed_key_sample() -> None:
    """The key sample's bits cost the key bit for bit (without the charge the key is longer)."""
    meta = _decoy_meta()
    link = load_link(LINKS / "telecom-laser-mdi.yaml", DECOY_LASERS)
    gains = decoy_gains(link, 0.4, 0.1)
    share = [
        4e8 * meta.pulses_per_intensity[c // 3] * meta.pulses_per_intensity[c % 3] / 1e6 / 4
        for c in range(9)
    ]
    cells = [(c // 3, c % 3) for c in range(9)]
    z = [n * gains.gain_z[k] for n, k in zip(share, cells, strict=True)]
    x = [n * gains.gain_x[k] for n, k in zip(share, cells, strict=True)]
    x_errors = [n * gains.error_gain_x[k] for n, k in zip(share, cells, strict=True)]
    sample = [v * 0.02 for v in z]
    est = Estimate(
        key_detections=tuple(int(a - b) for a, b in zip(z, sample, strict=True)) + (0,) * 9,
        test_detections=tuple(int(v) for v in sample + x),
        test_errors=tuple(int(v) for v in [0.01 * v for v in sample] + x_errors),
        qber=0.01,
        qber_upper=0.02,
        eps=1e-10,
    )
    counts = observed_counts(meta, est)
    charged = key_length_for(meta)(counts, 5_000.0, 1e-10, 1e-15)
    disclosed = sum(est.test_detections[:9])
    assert charged.terms["key_sample_bits_disclosed"] == disclosed
    pairs = {(c // 3, c % 3): c for c in range(9)}
    uncharged = decoy_key_length(
        DecoyCounts(
            (0.4, 0.1, 0.0),
            (0.1, 0.6, 0.3),
            {k: float(est.key_detections[c] + est.test_detections[c]) for k, c in pairs.items()},
            {k: float(est.test_detections[9 + c]) for k, c in pairs.items()},
            {k: float(est.test_errors[9 + c]) for k, c in pairs.items()},
        ),
        5_000.0,
        1e-10,
        1e-15,
    )
    assert uncharged.bits > 0
    assert charged.length_bits == pytest.approx(uncharged.length_bits - disclosed)
