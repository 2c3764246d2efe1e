"""One link's key production for ``qdnet network up`` (in this process, no KMS)."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml

from qdnet.network.config import link_document, load_network_config
from qdnet.network.runtime import linkloop
from qdnet.network.runtime.linkloop import LinkLoop
from qdnet.network.simulation import INTERCEPT_RESEND_QBER
from qdnet.postprocessing.keyblock import KeyFolder, read_key_block
from qdnet.transport.authentication import write_psk

NETWORKS = Path(__file__).resolve().parents[2] / "examples" / "networks"
LINKS = NETWORKS.parent / "links"


class _Stop:
    """A stop flag for the loop (set by :class:`_Loop` after a number of blocks)."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def __bool__(self) -> bool:
        return self.event.is_set()

    def sleep(self, seconds: float) -> None:
        self.event.wait(max(0.0, seconds))


class _Loop(LinkLoop):
    """A link loop that stops itself after ``blocks`` blocks (delivered or refused)."""

    def __init__(self, spec: dict[str, Any], blocks: int) -> None:
        self.flag = _Stop()
        super().__init__(spec, self.flag)  # type: ignore[arg-type]
        self.blocks = blocks

    def record(self, delivered_bits: int | None, qber: float | None, refusal: str | None) -> None:
        super().record(delivered_bits, qber, refusal)
        if self.stats.blocks_delivered + self.stats.blocks_refused >= self.blocks:
            self.flag.event.set()


def _spec(tmp_path: Path, **fields: Any) -> dict[str, Any]:
    folder = tmp_path / "links" / "A-B"
    folder.mkdir(parents=True)
    spec = {
        "name": "A-B",
        "index": 0,
        "between": ["A", "B"],
        "folders": {
            "alice": str(tmp_path / "kme-A" / "keys" / "kme-B"),
            "bob": str(tmp_path / "kme-B" / "keys" / "kme-A"),
        },
        "folder": str(folder),
        "tap": None,
        "fast": True,
        "seed": 3,
        "cpu_slots": 1,
        "slots_dir": str(tmp_path / "links" / ".cpu-slots"),
    }
    spec.update(fields)
    return spec


def _blocks(folder: str) -> dict[str, bytes]:
    return {p.stem: read_key_block(p).key for p in Path(folder).glob("*.json")}


def test_given_rate_link_writes_the_same_random_blocks_at_both_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(linkloop, "GIVEN_BLOCK_S", 0.05)
    spec = _spec(tmp_path, kind="given", key_rate_bps=8000.0, qber=0.01)
    loop = _Loop(spec, 3)
    loop.run()
    alice, bob = _blocks(spec["folders"]["alice"]), _blocks(spec["folders"]["bob"])
    assert len(alice) == 3 and alice == bob
    assert {len(k) for k in alice.values()} == {50}  # 8000 bit/s x 0.05 s = 400 bits
    assert len(set(alice.values())) == len(alice)  # fresh CSPRNG bytes every block
    assert loop.stats.blocks_delivered == len(alice) and loop.stats.blocks_refused == 0


def test_tapped_given_rate_link_refuses_its_blocks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(linkloop, "GIVEN_BLOCK_S", 0.05)
    spec = _spec(
        tmp_path, kind="given", key_rate_bps=8000.0, qber=0.01, tap={"from_s": 0, "fraction": 0.5}
    )
    loop = _Loop(spec, 3)
    loop.run()
    # 1 % + 0.5 x 25 % = 13.5 %: no key survives (Shor-Preskill), every block refused.
    assert loop.stats.blocks_refused == 3 and loop.stats.blocks_delivered == 0
    assert f"QBER {0.01 + 0.5 * INTERCEPT_RESEND_QBER:.3f}" in (loop.stats.last_refusal or "")
    assert not Path(spec["folders"]["alice"]).exists() or not _blocks(spec["folders"]["alice"])


def _modelled(tmp_path: Path, tap: dict[str, float] | None) -> dict[str, Any]:
    network = load_network_config(NETWORKS / "line-3.yaml")
    spec = _spec(
        tmp_path, kind="modelled", tap=tap, link_document=link_document(network, 0, NETWORKS)
    )
    psk = tmp_path / "psk.bin"
    write_psk(psk)
    KeyFolder.open(spec["folders"]["alice"], psk, "alice")
    KeyFolder.open(spec["folders"]["bob"], psk, "bob")
    return spec


def test_modelled_link_distils_identical_blocks_at_both_ends(tmp_path: Path) -> None:
    spec = _modelled(tmp_path, None)
    loop = _Loop(spec, 2)
    loop.run()
    alice, bob = _blocks(spec["folders"]["alice"]), _blocks(spec["folders"]["bob"])
    assert loop.stats.blocks_delivered == 2 and alice == bob and len(alice) == 2
    assert loop.stats.key_bits_delivered == 8 * sum(len(k) for k in alice.values())
    assert loop.stats.last_qber is not None and loop.stats.last_qber < 0.02
    assert not (Path(spec["folder"]) / "run").exists()  # raw records deleted after each block


def test_without_fast_a_block_takes_at_least_the_links_own_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(linkloop, "PROBE_PULSES", 800_000)
    spec = _modelled(tmp_path, None)
    spec["fast"] = False
    spec["link_document"]["source"]["repetition_rate_hz"] = 2e5  # the probe: 4 s of the link

    class _Timed(_Loop):
        busy_first = 0.0

        def record(self, bits: int | None, qber: float | None, refusal: str | None) -> None:
            if not self.busy_first:
                self.busy_first = self.stats.busy_s
            super().record(bits, qber, refusal)

    loop = _Timed(spec, 2)
    loop.run()
    # Between the blocks the loop waited for the rest of the probe's 4 s of link time (with
    # --fast it would not wait at all).
    idle_s = loop.stats.elapsed_s - loop.stats.busy_s
    assert idle_s >= 4.0 - loop.busy_first - 0.05
    assert loop.stats.blocks_delivered + loop.stats.blocks_refused == 2


def test_tapped_modelled_link_is_refused_by_its_post_processing(tmp_path: Path) -> None:
    spec = _modelled(tmp_path, {"from_s": 0.0, "fraction": 0.5})
    loop = _Loop(spec, 1)
    loop.run()
    assert loop.stats.blocks_refused == 1 and loop.stats.blocks_delivered == 0
    assert loop.stats.last_qber is not None and loop.stats.last_qber > 0.1
    assert "QBER" in (loop.stats.last_refusal or "")
    assert not _blocks(spec["folders"]["alice"]) and not _blocks(spec["folders"]["bob"])


def test_a_link_tapped_for_long_exhausts_its_authentication_pool_and_halts(
    tmp_path: Path,
) -> None:
    spec = _modelled(tmp_path, {"from_s": 0.0, "fraction": 0.5})
    slots = KeyFolder.open(spec["folders"]["alice"], None, "alice").pool.slots_left
    loop = _Loop(spec, 10 * slots)
    loop.run()  # ends by itself
    # Every aborted session spent one slot of the pre-shared secret; none refilled it.
    assert loop.stats.blocks_refused == slots and loop.stats.blocks_delivered == 0
    assert loop.stats.auth_slots_left == 0
    assert "authentication pool exhausted" in (loop.stats.halted or "")
    assert json.loads((Path(spec["folder"]) / "stats.json").read_text())["halted"]


def test_a_link_the_monte_carlo_refuses_halts_with_the_reason(tmp_path: Path) -> None:
    spec = _modelled(tmp_path, None)
    # The Monte Carlo models polarisation BB84 and BBM92, not this time-bin protocol.
    spec["link_document"] = yaml.safe_load((LINKS / "telecom-dot-three-state.yaml").read_text())
    loop = _Loop(spec, 5)
    loop.run()  # ends by itself, without a traceback
    assert loop.stats.blocks_delivered == loop.stats.blocks_refused == 0
    assert "this link cannot run" in (loop.stats.halted or "")
    assert "time-bin" in (loop.stats.halted or "")
    assert not (Path(spec["folder"]) / "run").exists()


def test_link_refused_for_its_size_grows_its_blocks_until_it_delivers(tmp_path: Path) -> None:
    # metro-dots D-E: the decoy laser over 40 km, whose finite-key terms leave nothing of a
    # block of 2e5 detections at 1 % QBER.
    network = load_network_config(NETWORKS / "metro-dots.yaml")
    index = next(i for i, link in enumerate(network.links) if link.name == "D-E")
    spec = _spec(
        tmp_path,
        kind="modelled",
        index=index,
        link_document=link_document(network, index, NETWORKS),
    )
    psk = tmp_path / "psk.bin"
    write_psk(psk)
    KeyFolder.open(spec["folders"]["alice"], psk, "alice")
    KeyFolder.open(spec["folders"]["bob"], psk, "bob")

    class _UntilDelivered(_Loop):
        def record(self, bits: int | None, qber: float | None, refusal: str | None) -> None:
            super().record(bits, qber, refusal)
            if bits is not None or self.stats.blocks_refused >= 8:
                self.flag.event.set()

    loop = _UntilDelivered(spec, 100)
    loop.run()
    assert loop.stats.blocks_delivered == 1 and 2 <= loop.stats.blocks_refused < 8
    assert loop.stats.pulses > 10 * linkloop.PROBE_PULSES


def _mdi(tmp_path: Path, tap: dict[str, float] | None) -> dict[str, Any]:
    document = yaml.safe_load((LINKS / "telecom-dot-mdi.yaml").read_text())
    document["channel"]["length_km"] = 20
    document["source"].update(
        {"mean_photon_number": 0.2, "indistinguishability": 0.98, "spectral_diffusion_uev": 0}
    )
    spec = _spec(tmp_path, kind="modelled", tap=tap, link_document=document)
    psk = tmp_path / "psk.bin"
    write_psk(psk)
    KeyFolder.open(spec["folders"]["alice"], psk, "alice")
    KeyFolder.open(spec["folders"]["bob"], psk, "bob")
    return spec


def test_mdi_link_distils_identical_blocks_at_both_ends(tmp_path: Path) -> None:
    """An MDI link (two telecom dots through an untrusted relay) runs the MDI Monte Carlo and
    its post-processing: identical blocks at both ends."""
    spec = _mdi(tmp_path, None)
    loop = _Loop(spec, 4)
    loop.run()
    alice, bob = _blocks(spec["folders"]["alice"]), _blocks(spec["folders"]["bob"])
    assert loop.stats.halted is None
    assert loop.stats.blocks_delivered >= 1, loop.stats.last_refusal
    assert alice == bob and len(alice) == loop.stats.blocks_delivered
    assert loop.stats.last_qber is not None and loop.stats.last_qber < 0.02


def test_tapped_mdi_link_halts_with_the_reason(tmp_path: Path) -> None:
    spec = _mdi(tmp_path, {"from_s": 0.0, "fraction": 0.5})
    loop = _Loop(spec, 1)
    loop.run()
    assert loop.stats.halted is not None and "tap on an MDI link" in loop.stats.halted
