"""Durations, byte sizes and point names as people write them in the edge YAML.

``30`` or ``"30s"``, ``"5m"``, ``"2h"``, ``"7d"``, ``"250ms"`` are durations (the
model sees seconds as a float); ``1048576`` or ``"256MiB"``, ``"1GB"``, ``"512k"`` are
sizes (the model sees bytes as an int). Binary and decimal prefixes mean what they
say: ``MiB`` is 2**20, ``MB`` is 10**6.

Each has bounds a config can be wrong about: a duration is finite (YAML reads
``1.0e+400`` as infinity and ``.nan`` as NaN), positive and at most
:data:`MAX_DURATION_S`; a size is at most :data:`MAX_BYTES`, which SQLite and the
spool's arithmetic can hold; a point name is printable text, because it travels to
the platform and into every dashboard and log line.
"""

from __future__ import annotations

import math
import re
import unicodedata
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field

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


#: No duration of the edge (a spool's age, a batch's wait, a silence) needs more.
MAX_DURATION_S = 366 * 86400.0
#: A pebibyte: beyond any disk of an edge PC, well inside a signed 64-bit integer.
MAX_BYTES = 2**50


def parse_duration(value: Any) -> Any:
    seconds: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        match = _DURATION_RE.match(value)
        if match:
            seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    if seconds is None:
        raise ValueError("expected a duration such as 30, '30s', '5m', '2h' or '7d'")
    if not math.isfinite(seconds):
        raise ValueError(f"expected a finite duration such as 30s or 7d, not {value!r}")
    if seconds > MAX_DURATION_S:
        raise ValueError(f"expected a duration of at most 366 days, not {value!r}")
    return seconds


def parse_size(value: Any) -> Any:
    size: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    elif isinstance(value, str):
        match = _SIZE_RE.match(value)
        if match:
            number = float(match.group(1)) * _size_factor(match.group(2))
            size = int(number) if math.isfinite(number) else MAX_BYTES + 1
    if size is None:
        raise ValueError("expected a size such as 1048576, '256MiB' or '1GB'")
    if size > MAX_BYTES:
        raise ValueError("expected a size of at most 1 PiB (2**50 bytes)")
    return size


def printable(value: str) -> str:
    """A name without control, format or unassigned characters (U+0000, ESC, U+200B)."""
    for char in value:
        if unicodedata.category(char)[0] == "C":
            raise ValueError(
                f"contains the character U+{ord(char):04X} ({unicodedata.name(char, 'control')}),"
                " which is not printable; a name is printable text"
            )
    return value


Duration = Annotated[float, BeforeValidator(parse_duration), Field(gt=0)]
"""Seconds, written as a number or with a unit (ms, s, m, h, d), finite, at most 366 d."""

ByteSize = Annotated[int, BeforeValidator(parse_size), Field(gt=0)]
"""Bytes, written as a number or with a unit (k, KiB, MB, MiB, GB, GiB, ...), ≤ 1 PiB."""

PointName = Annotated[str, Field(min_length=1, max_length=128), AfterValidator(printable)]
"""The name of a point (spindle_speed, 主轴转速): 1-128 printable characters."""
