"""Unit-bearing strings users type: durations (``90s``, ``2h``, ``24h``, ``1.5d``, ``500ms``)."""

from __future__ import annotations

import math
import re

_DURATION = re.compile(r"^\s*((?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)\s*(ms|s|min|m|h|d)?\s*$")
_SECONDS = {"ms": 1e-3, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration_s(text: str, option: str = "duration") -> float:
    """Seconds in ``text``: a number with an optional unit ms, s, m/min, h or d (default s)."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(
            f"{option} {text!r}: expected a duration such as 90s, 15m, 2h, 24h or 1.5d"
        )
    value = float(match.group(1)) * _SECONDS[match.group(2) or "s"]
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{option} {text!r}: expected a finite duration >= 0")
    return value
