"""Options of ``qdnet app ...``: YAML file with the same names, checks with clear messages."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from qdnet.apps.options import COMMON_NAMES, app_options, load_options
from qdnet.cli.main import app
from qdnet.kms.pki import PKI


def _base(pki: PKI) -> dict[str, object]:
    return {
        "kms": "https://10.0.0.1:8443",
        "sae": "app-a",
        "peer-sae": "app-b",
        "role": "initiator",
        "peer-control": "10.0.0.2:9400",
        "pki": str(pki.root),
    }


def test_config_file_with_the_same_names_and_the_command_line_wins(
    app_pki: PKI, tmp_path: Path
) -> None:
    cfg = tmp_path / "app.yaml"
    cfg.write_text(
        "kms: https://10.0.0.1:8443\nsae: app-a\npeer_sae: app-b\nrole: initiator\n"
        f"peer-control: 10.0.0.2:9400\npki: {app_pki.root}\ninterval: 2m\nmax-missed: 5\n"
        "on-missed-key: keep\nhybrid: true\n"
    )
    opts = app_options(load_options(cfg, {"interval": "30s"}, COMMON_NAMES), "120s")
    assert opts.rotation.interval_s == 30.0 and opts.rotation.max_missed == 5
    assert opts.rotation.on_missed == "keep" and opts.rotation.hybrid
    assert (opts.rotation.peer_host, opts.rotation.peer_port) == ("10.0.0.2", 9400)
    assert opts.access.cert == app_pki.credential("app-a").cert
    assert opts.auth.cert == opts.access.cert and opts.auth.mac_secret is None


def test_defaults(app_pki: PKI) -> None:
    opts = app_options(_base(app_pki), "120s")
    assert opts.rotation.interval_s == 120.0 and opts.rotation.on_missed == "close"
    assert opts.rotation.max_missed == 3 and not opts.rotation.hybrid
    assert math.isinf(app_options(_base(app_pki), None).rotation.interval_s)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"role": "boss"}, "--role 'boss'"),
        ({"on-missed-key": "maybe"}, "--on-missed-key 'maybe'"),
        ({"interval": "soon"}, "--interval 'soon'"),
        ({"max-missed": 0}, "--max-missed 0"),
        ({"peer-control": "10.0.0.2"}, "--peer-control '10.0.0.2'"),
        ({"peer-control": None}, "--peer-control HOST:PORT is required"),
        ({"kms": "http://10.0.0.1:8443"}, "expected an https:// URL"),
        ({"peer-sae": "app-a"}, "must differ from --sae"),
        ({"ca": "/etc/hosts"}, "either --pki or --ca/--cert/--key"),
        ({"pki": "/nonexistent"}, "no such file"),
        ({"sae": None}, "--sae is required"),
    ],
)
def test_bad_options_are_named(app_pki: PKI, change: dict[str, object], message: str) -> None:
    opts = {**_base(app_pki), **change}
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        app_options({k: v for k, v in opts.items() if v is not None}, "120s")


def test_unknown_names_in_the_config_file_are_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "app.yaml"
    cfg.write_text("kms: https://x\nintervall: 2s\n")
    with pytest.raises(ValueError, match="unknown option"):
        load_options(cfg, {}, COMMON_NAMES)


def test_cli_reports_bad_input_in_one_line(app_pki: PKI) -> None:
    result = CliRunner().invoke(
        app,
        [
            "app",
            "wireguard",
            "--kms",
            "https://127.0.0.1:1",
            "--sae",
            "app-a",
            "--peer-sae",
            "app-b",
            "--role",
            "initiator",
            "--peer-control",
            "127.0.0.1:9",
            "--pki",
            str(app_pki.root),
            "--interface",
            "wg0",
            "--peer-public-key",
            "nope",
        ],
    )
    assert result.exit_code == 2
    assert "--peer-public-key 'nope'" in result.output and "Traceback" not in result.output
