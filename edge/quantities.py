"""Durations and byte sizes as people write them in the edge YAML.

``30`` or ``"30s"``, ``"5m"``, ``"2h"``, ``"7d"``, ``"250ms"`` are durations (the
model sees seconds as a float); ``1048576`` or ``"256MiB"``, ``"1GB"``, ``"512k"`` are
sizes (the model sees bytes as an int). Binary and decimal prefixes mean what they
say: ``MiB`` is 2**20, ``MB`` is 10**6.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator, Field

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]i?[bB]?|[bB])?\s*$")


def _size_factor(unit: str | None) -> int:
    if unit is None or unit.lower() == "b":
        return 1
    power = "kmgt".index(unit[0].lower()) + 1
    binary = len(unit) > 1 and unit[1] == "i"
    # A bare "k"/"M" (no "B") is read as binary, as in most config files.
    if binary or len(unit) == 1:
        return int(1024**power)
    return int(1000**power)


def parse_duration(value: Any) -> Any:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        match = _DURATION_RE.match(value)
        if match:
            return float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    raise ValueError("expected a duration such as 30, '30s', '5m', '2h' or '7d'")


def parse_size(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        match = _SIZE_RE.match(value)
        if match:
            return int(float(match.group(1)) * _size_factor(match.group(2)))
    raise ValueError("expected a size such as 1048576, '256MiB' or '1GB'")


Duration = Annotated[float, BeforeValidator(parse_duration), Field(gt=0)]
"""Seconds, written as a number or with a unit (ms, s, m, h, d)."""

ByteSize = Annotated[int, BeforeValidator(parse_size), Field(gt=0)]
"""Bytes, written as a number or with a unit (k, KiB, MB, MiB, GB, GiB, ...)."""
