"""Link YAML validation: errors name the field and the expectation."""

import re
from pathlib import Path

import pytest

from qdnet.config import ConfigError, load_link, load_link_config
from qdnet.keyrate import key_rate_point
from qdnet.optics.fibre import FibreChannel
from qdnet.protocols import prepare_measure
from qdnet.protocols.prepare_measure import link_intensities


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "link.yaml"
    path.write_text(text)
    return path


BASE = """
name: t
source: {kind: single-photon, repetition_rate_hz: 1.0e6, mean_photon_number: 0.3, g2: 0.02, wavelength_nm: 1310}
channel: {kind: fibre, length_km: 10}
receiver: {efficiency: 0.5}
protocol: {kind: bb84}
"""


def test_examples_load(examples_dir: Path) -> None:
    for path in sorted(examples_dir.glob("*.yaml")):
        link = load_link(path)
        assert link.name == path.stem


def test_default_attenuation_by_wavelength(tmp_path: Path) -> None:
    link = load_link(write(tmp_path, BASE))
    assert isinstance(link.channel, FibreChannel)
    assert link.channel.attenuation_db_per_km == pytest.approx(0.32)
    assert link.channel_loss_db == pytest.approx(3.2)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("source.g2=2", "source.g2"),
        ("receiver.efficiency=0", "receiver.efficiency"),
        ("protocol.kind=bbm92", "protocol.kind bbm92 needs source.kind"),
        ("source.colour=red", "source.colour"),
        ("protocol.eps_sec=0", "protocol.eps_sec"),
        ("channel.length_km=-1", "channel.length_km"),
        ("source.wavelength_nm=400", "attenuation"),
    ],
)
def test_bad_values_name_the_field(tmp_path: Path, override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_link(write(tmp_path, BASE), [override])


def test_set_override_parses_numbers(tmp_path: Path) -> None:
    config = load_link_config(write(tmp_path, BASE), ["protocol.block_size=1e8"])
    assert config.protocol.block_size == 1e8


@pytest.mark.parametrize("text", ["", "[1, 2]", "name: [unclosed"])
def test_unusable_files(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError):
        load_link(write(tmp_path, text))


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_link("does-not-exist.yaml")


LASER = """
name: laser
source: {kind: weak-coherent, repetition_rate_hz: 1.0e8}
channel: {kind: fibre, length_km: 20, attenuation_db_per_km: 0.2}
receiver: {efficiency: 0.2, dark_count_rate_hz: 100}
protocol: {kind: decoy-bb84, block_size: 1.0e8}
"""


def test_weak_coherent_intensities_are_optional_for_keyrate(tmp_path: Path) -> None:
    # keyrate optimises every intensity: a laser link needs neither mean_photon_number nor decoys
    # (the weakest decoy is then a vacuum); what needs fixed intensities says which field.
    link = load_link(write(tmp_path, LASER))
    point = key_rate_point(link, 20.0)[0]
    assert point.secret_bits_per_pulse > 0
    assert point.parameters["weakest_intensity"] == 0.0
    with pytest.raises(ValueError, match=re.escape("source.mean_photon_number is needed here")):
        link_intensities(link)
    fixed = load_link(write(tmp_path, LASER), ["protocol.optimise_intensity=false"])
    plain = fixed.with_protocol(kind="bb84")
    with pytest.raises(
        ValueError, match=re.escape("optimise_intensity false needs source.mean_photon_number")
    ):
        key_rate_point(plain, 20.0)


@pytest.mark.parametrize("field", ["source.g2", "receiver.efficiency", "channel.length_km"])
@pytest.mark.parametrize("value", [".nan", ".inf"])
def test_non_finite_numbers_are_named(tmp_path: Path, field: str, value: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"{field}: Input should be a finite number")):
        load_link(write(tmp_path, BASE), [f"{field}={value}"])


def test_brightness_accepts_g2_up_to_what_the_model_allows(tmp_path: Path) -> None:
    # Perceval's convention P(2) = (1 - gB - sqrt(1 - 2gB))/g is a distribution for g2 B <= 1/2, so
    # g2 above 0.5 is fine with a dim enough source (the schema allows g2 <= 1).
    bright = ["source.mean_photon_number=null", "source.brightness=0.5"]
    link = load_link(write(tmp_path, BASE), [*bright, "source.g2=0.8"])
    dist = link.source.photon_number_distribution()
    assert dist[1] + dist[2] == pytest.approx(0.5)
    assert 2 * dist[2] / (dist[1] + 2 * dist[2]) ** 2 == pytest.approx(0.8)
    with pytest.raises(
        ConfigError, match=re.escape("source.g2 x source.brightness must be <= 0.5")
    ):
        load_link(write(tmp_path, BASE), [*bright, "source.g2=0.9", "source.brightness=0.6"])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["receiver.gate_ns=2.0"], "receiver.gate_ns must be in (0, receiver.window_ns = 1.0]"),
        (["receiver.gate_ns=0"], "receiver.gate_ns must be in (0, receiver.window_ns = 1.0]"),
        (["receiver.gate_ns=wide"], "receiver.gate_ns"),
    ],
)
def test_gate_values_are_checked(tmp_path: Path, overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_link(write(tmp_path, BASE), overrides)


def test_gate_optimise_is_for_keyrate_only(tmp_path: Path, examples_dir: Path) -> None:
    link = load_link(write(tmp_path, BASE), ["receiver.gate_ns=optimise"])
    assert key_rate_point(link, 10.0)[0].parameters["gate_ns"] <= 1.0
    with pytest.raises(ValueError, match="only keyrate chooses a gate"):
        prepare_measure.expected_statistics(link, (0.3,))
    with pytest.raises(
        ConfigError, match=re.escape("receiver.gate_ns is modelled for bb84 and decoy-bb84")
    ):
        load_link(examples_dir / "gaas-dot-bbm92.yaml", ["receiver.gate_ns=0.5"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("protocol.eps_split={estimation: 0.5, privacy_amplification: 0.6}", "must be 1"),
        ("protocol.eps_split={estimation: 0.5}", "protocol.eps_split.privacy_amplification"),
        ("protocol.eps_split={estimation: 0, privacy_amplification: 1}", "eps_split.estimation"),
    ],
)
def test_eps_split_errors_name_the_field(tmp_path: Path, override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_link(write(tmp_path, BASE), [override])


def test_eps_split_changes_the_finite_key(tmp_path: Path) -> None:
    # Moving eps_sec from privacy amplification to estimation: a different (valid) key; the
    # default split given explicitly is the default.
    path = write(tmp_path, BASE)
    finite = ["protocol.block_size=1e6", "protocol.basis_bias=0.9"]

    def key(*split: str) -> float:
        return key_rate_point(load_link(path, [*finite, *split]), None)[0].secret_bits_per_pulse

    default = key()
    same = key(f"protocol.eps_split={{estimation: {17 / 21}, privacy_amplification: {4 / 21}}}")
    moved = key("protocol.eps_split={estimation: 0.5, privacy_amplification: 0.5}")
    assert same == pytest.approx(default, rel=1e-9)
    assert moved > 0
    assert moved != pytest.approx(default, rel=1e-4)
