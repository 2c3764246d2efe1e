"""Shared fixtures: the example links of the repository."""

from pathlib import Path

import pytest

from qdnet.config import load_link
from qdnet.protocols.link import Link

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "links"


@pytest.fixture(scope="session")
def examples_dir() -> Path:
    return EXAMPLES


def example_link(name: str, overrides: list[str] | None = None) -> Link:
    """Load ``examples/links/<name>.yaml`` with optional ``--set`` style overrides."""
    return load_link(EXAMPLES / f"{name}.yaml", overrides)
