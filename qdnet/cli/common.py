"""Helpers shared by CLI commands: clean errors, sweep ranges, JSON output."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, ParamSpec, TypeVar

import typer
from rich.console import Console

#: Wide enough for the key-rate table when stdout is a pipe or a file.
console = Console(width=None if sys.stdout.isatty() else 140)
error_console = Console(stderr=True)

P = ParamSpec("P")
R = TypeVar("R")


def clean_errors(function: Callable[P, R]) -> Callable[P, R]:
    """Turn ``ValueError`` (incl. ``ConfigError``) and missing files into one red line, exit code 2."""

    @wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return function(*args, **kwargs)
        except (ValueError, FileNotFoundError) as error:
            error_console.print(f"[red]error:[/red] {error}", highlight=False)
            raise typer.Exit(code=2) from None

    return wrapper


def parse_range(text: str, option: str) -> list[float]:
    """``START:STOP:STEP`` with STOP included (a single number is one point)."""
    parts = text.split(":")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise ValueError(
            f"{option} {text!r}: expected START:STOP:STEP numbers, e.g. 0:40:1"
        ) from None
    if len(values) == 1:
        return values
    if len(values) != 3:
        raise ValueError(f"{option} {text!r}: expected START:STOP:STEP, e.g. 0:40:1")
    start, stop, step = values
    if step <= 0 or stop < start or start < 0:
        raise ValueError(f"{option} {text!r}: need 0 <= START <= STOP and STEP > 0")
    count = math.floor((stop - start) / step + 1e-9) + 1
    if count > 100_000:
        raise ValueError(f"{option} {text!r}: {count} points is too many (at most 100000)")
    return [round(start + step * i, 12) for i in range(count)]


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if type(value).__module__ == "numpy" and hasattr(value, "item"):  # numpy scalar
        return _jsonable(value.item())
    return value


def print_json(document: Any) -> None:
    """Print strict JSON (non-finite numbers become null)."""
    typer.echo(json.dumps(_jsonable(document), indent=2))
