"""Link YAML validation: errors name the field and the expectation."""

from pathlib import Path

import pytest

from qdnet.config import ConfigError, load_link, load_link_config
from qdnet.optics.fibre import FibreChannel


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
