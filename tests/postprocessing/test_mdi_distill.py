"""MDI-QKD records from the Monte Carlo, distilled into keys by the two endpoints."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from qdnet.cli import app
from qdnet.config import load_link
from qdnet.postprocessing.keyblock import KeyFolder
from qdnet.postprocessing.loopback import distill_loopback
from qdnet.postprocessing.session import SessionConfig
from qdnet.protocols.records import load_meta
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
    assert alice.estimate["qber_test"] > 0.03  # X: two-photon interference V < 1
    assert alice.finite_key_terms["tagged_key_bits_upper"] > 0  # two-photon pairs charged


def test_decoy_laser_mdi_records_are_refused(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "simulate",
            str(LINKS / "telecom-laser-mdi.yaml"),
            "--pulses",
            "1e4",
            "--out",
            str(tmp_path / "r"),
        ],
    )
    assert result.exit_code != 0
    assert "quantum-dot MDI finite-key bound only" in result.output
    assert not (tmp_path / "r" / "meta.json").exists()


def test_mdi_meta_needs_both_sources_figures(tmp_path: Path) -> None:
    link = load_link(LINKS / "telecom-dot-mdi.yaml", ["channel.length_km=20"])
    simulate_mdi(link, 1_000_000, np.random.default_rng(1), out=tmp_path, seed=1)
    raw = json.loads((tmp_path / "meta.json").read_text())
    raw["multiphoton_probability"] = raw["multiphoton_probability"][:1]
    (tmp_path / "meta.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError, match="Alice's P\\(n>=2\\), P\\(n>=1\\), then Bob's"):
        load_meta(tmp_path)
