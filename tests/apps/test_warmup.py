"""The demo's kernel warm-up: child processes that fill Numba's cache (qdnet.apps.warmup)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from qdnet.apps import warmup

LINK = Path(__file__).parents[2] / "examples" / "links" / "telecom-dot-bb84.yaml"


def _in_fresh_cache(code: str, cache: Path) -> str:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache)}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def test_a_fresh_cache_is_cold(tmp_path: Path) -> None:
    code = "from qdnet.apps import warmup; print(warmup.is_warm('ldpc'))"
    assert _in_fresh_cache(code, tmp_path) == "False"


def test_stop_leaves_no_child_running() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    warmup.finish([child], timeout_s=0.1)
    assert child.poll() is not None


@pytest.mark.slow
def test_children_fill_the_cache_the_demo_reads(tmp_path: Path) -> None:
    # Each part in its own process (as the demo starts them), then a new process finds the
    # main kernels cached for this CPU and would start no child.
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    for part in warmup.PARTS:
        subprocess.run(
            [sys.executable, "-m", "qdnet.apps.warmup", part, str(LINK), "50.0", "ldpc"],
            env=env,
            check=True,
        )
    code = "from qdnet.apps import warmup; print(warmup.is_warm('ldpc'))"
    assert _in_fresh_cache(code, tmp_path) == "True"
