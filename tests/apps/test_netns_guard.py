"""The namespace tests skip with the reason where they cannot run, and fail instead on CI."""

from __future__ import annotations

import pytest

from tests.apps.netns import require, unavailable

MISSING = ("qdnet-no-such-program",)


def test_the_reason_names_what_is_missing() -> None:
    reason = unavailable(MISSING)
    assert reason is not None
    assert "qdnet-no-such-program" in reason or "root" in reason or "Linux" in reason


def test_skips_without_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception):
        require(MISSING)


def test_fails_with_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        require(MISSING)
