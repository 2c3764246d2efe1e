"""The demo's kernel warm-up: child processes that fill Numba's cache (qdnet.apps.warmup)."""

import os
import subprocess
import sys
import tempfile
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
    warmup.finish(warmup.Warmup({"part": child}), ("part",), timeout_s=0.1)
    assert child.poll() is not None


def test_a_step_waits_for_its_part_only(tmp_path: Path) -> None:
    # The child marks its first part done and goes on with the next: the step that needs only
    # the first part goes on at once, with the child still running; stop ends it.
    folder = tempfile.TemporaryDirectory(dir=tmp_path)
    marker = Path(folder.name) / "first.done"
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import pathlib, time; pathlib.Path({str(marker)!r}).touch(); time.sleep(60)",
        ]
    )
    warm = warmup.Warmup({"first": child, "second": child}, folder)
    warmup.finish(warm, ("first",), timeout_s=30)
    assert marker.exists() and child.poll() is None
    warmup.stop(warm)
    assert child.poll() is not None and not Path(folder.name).exists()


@pytest.mark.slow
def test_children_compile_everything_the_chain_runs(tmp_path: Path) -> None:
    # The children (as the demo starts them) fill a fresh cache; a new process finds the main
    # kernels cached for this CPU (so the demo would start no child), and the whole chain then
    # compiles nothing: every kernel it runs was warmed.
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache")}
    for parts in warmup.CHILDREN:
        subprocess.run(
            [sys.executable, "-m", "qdnet.apps.warmup", ",".join(parts), str(LINK), "ldpc"],
            env=env,
            check=True,
        )
    code = "from qdnet.apps import warmup; print(warmup.is_warm('ldpc'))"
    assert _in_fresh_cache(code, tmp_path / "cache") == "True"
    chain = (
        "from pathlib import Path\n"
        "from numba.core import event\n"
        "from qdnet.apps.chain import ChainSettings, run_chain\n"
        "compiled = []\n"
        "class Listener(event.Listener):\n"
        "    def on_start(self, e): compiled.append(e.data['dispatcher'].py_func.__qualname__)\n"
        "    def on_end(self, e): pass\n"
        "event.register('numba:compile', Listener())\n"
        f"run_chain(ChainSettings(link_file=Path({str(LINK)!r}), "
        f"workdir=Path({str(tmp_path / 'demo')!r})))\n"
        "print(compiled)\n"
    )
    assert _in_fresh_cache(chain, tmp_path / "cache").splitlines()[-1] == "[]"
