"""The whole chain end to end: keys reach both applications; a tapped block never does."""

import threading
from pathlib import Path

from qdnet.apps.chain import ChainSettings, run_chain
from tests.conftest import EXAMPLES


def test_whole_chain_delivers_keys_and_refuses_the_tapped_block(tmp_path: Path) -> None:
    threads_before = threading.active_count()
    summary = run_chain(
        ChainSettings(
            link_file=EXAMPLES / "telecom-dot-bb84.yaml", workdir=tmp_path, pulses=200_000_000
        )
    )
    assert summary.honest_run["verdict"] == "secret key possible"
    assert summary.honest_distillation["identical_keys"]
    assert summary.honest_distillation["verified"]
    assert summary.kms["same_keys_at_b"]
    assert summary.application["decrypted_ok"]
    assert summary.tapped_run["verdict"] == "interception detected"
    assert summary.tapped_distillation["aborted"]
    assert not summary.tapped_block_delivered
    # The tapped block added nothing: only the 4 delivered keys left the pool.
    assert summary.kms["stored_key_count_after_tap"] == summary.kms["stored_key_count_before"] - 4
    assert len(list((tmp_path / "keys-alice").glob("*.json"))) == 1
    assert threading.active_count() == threads_before
