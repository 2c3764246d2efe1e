"""``qdnet --help`` stays fast: the command modules import no heavy library at start-up."""

from __future__ import annotations

import subprocess
import sys

HEAVY = (
    "scipy",
    "numba",
    "numpy",
    "fastapi",
    "sqlalchemy",
    "matplotlib",
    "networkx",
    "cryptography",
)


def test_cli_import_pulls_in_no_heavy_library() -> None:
    code = (
        "import sys, qdnet.cli; "
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", f"imported at start-up: {out.stdout.strip()}"
