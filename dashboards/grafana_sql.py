"""Panel SQL as Grafana's PostgreSQL datasource would send it, for the tests.

Grafana expands a query in two steps: the frontend interpolates the dashboard's
template variables (``$var``, ``${var}``, ``${var:format}``, ``[[var]]`` and the global
``$__interval``/``$__interval_ms``, ``${__from}``/``${__to}``), then the datasource's
backend expands its macros. This module does the same, following Grafana's documented
rules for SQL datasources:

- a single value is inserted as it is; a multi-value (or "All") selection is quoted
  with single quotes (a ``'`` doubled) and joined with commas;
- formats ``raw`` (as is), ``csv`` (joined with commas), ``sqlstring`` (each quoted,
  ``'`` doubled), ``singlequote`` (``'v'``, ``'`` escaped as ``\\'``), ``doublequote``;
- ``$__timeFilter(c)`` → ``c BETWEEN '<from>' AND '<to>'`` (RFC 3339 UTC),
  ``$__timeFrom()``/``$__timeTo()`` → ``'<from>'``/``'<to>'``,
  ``$__timeGroup(c, '5m')`` → ``floor(extract(epoch from c)/300)*300`` and
  ``$__timeGroupAlias`` the same ``AS "time"``, ``$__time(c)`` → ``c AS "time"``,
  ``$__unixEpochFilter(c)`` → ``c >= <from s> AND c <= <to s>``.

What it cannot show is what only a real Grafana does with the result (frames, long to
wide conversion, value mappings on screen): docs/dashboards.md.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

_VAR = re.compile(
    r"\$\{(?P<b>[A-Za-z_][A-Za-z0-9_]*)(?::(?P<fmt>[a-z]+))?\}"
    r"|\[\[(?P<k>[A-Za-z_][A-Za-z0-9_]*)\]\]"
    r"|\$(?P<p>[A-Za-z_][A-Za-z0-9_]*)(?!\()"
)
_MACRO = re.compile(r"\$__(?P<name>[A-Za-z]+)\((?P<args>[^()]*(?:\([^()]*\)[^()]*)*)\)")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


@dataclass(frozen=True)
class Variable:
    values: tuple[str, ...]
    multi: bool = False  # a multi-value or include-all variable


def interval_seconds(text: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)", text.strip().strip("'\""))
    if match is None:
        raise ValueError(f"not a Grafana interval: {text!r}")
    return float(match[1]) * _UNITS[match[2]]


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _format(var: Variable, fmt: str | None) -> str:  # noqa: PLR0911 - one per format
    values = var.values
    if fmt is None:
        if var.multi or len(values) > 1:
            return ",".join(_quote(v) for v in values)
        return values[0] if values else ""
    if fmt == "raw":
        return ",".join(values)
    if fmt == "csv":
        return ",".join(values)
    if fmt == "sqlstring":
        return ",".join(_quote(v) for v in values)
    if fmt == "singlequote":
        return ",".join("'" + v.replace("'", "\\'") + "'" for v in values)
    if fmt == "doublequote":
        return ",".join('"' + v.replace('"', '\\"') + '"' for v in values)
    raise ValueError(f"variable format {fmt!r} is not handled here")


def _rfc3339(instant: datetime) -> str:
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def interpolate(
    text: str,
    variables: Mapping[str, Variable | str | Sequence[str]],
    *,
    time_from: datetime,
    time_to: datetime,
    interval: str = "1h",
) -> str:
    """Template variables, as Grafana's frontend replaces them."""
    known: dict[str, Variable] = {}
    for name, value in variables.items():
        if isinstance(value, Variable):
            known[name] = value
        elif isinstance(value, str):
            known[name] = Variable((value,))
        else:
            known[name] = Variable(tuple(value), multi=True)
    known["__interval"] = Variable((interval,))
    known["__interval_ms"] = Variable((str(round(interval_seconds(interval) * 1000)),))
    known["__from"] = Variable((str(round(time_from.timestamp() * 1000)),))
    known["__to"] = Variable((str(round(time_to.timestamp() * 1000)),))

    def replace(match: re.Match[str]) -> str:
        name = match["b"] or match["k"] or match["p"]
        if name.startswith("__") and name not in known:
            return match[0]  # a macro or a global left to the datasource
        if name not in known:
            raise KeyError(f"the query uses variable ${name}, which has no value")
        return _format(known[name], match["fmt"])

    return _VAR.sub(replace, text)


def expand_macros(text: str, *, time_from: datetime, time_to: datetime) -> str:
    """The PostgreSQL datasource's macros, as its backend expands them."""
    start, end = _rfc3339(time_from), _rfc3339(time_to)

    def replace(match: re.Match[str]) -> str:
        name = match["name"]
        args = [a.strip() for a in match["args"].split(",")] if match["args"].strip() else []
        if name == "timeFilter":
            return f"{args[0]} BETWEEN '{start}' AND '{end}'"
        if name == "timeFrom":
            return f"'{start}'"
        if name == "timeTo":
            return f"'{end}'"
        if name in ("timeGroup", "timeGroupAlias"):
            step = interval_seconds(args[1])
            step_text = f"{step:g}"
            group = f"floor(extract(epoch from {args[0]})/{step_text})*{step_text}"
            return group + (' AS "time"' if name == "timeGroupAlias" else "")
        if name == "time":
            return f'{args[0]} AS "time"'
        if name == "unixEpochFilter":
            lo, hi = int(time_from.timestamp()), int(time_to.timestamp())
            return f"{args[0]} >= {lo} AND {args[0]} <= {hi}"
        raise ValueError(f"macro $__{name} is not handled here")

    return _MACRO.sub(replace, text)


def expand(
    text: str,
    variables: Mapping[str, Variable | str | Sequence[str]],
    *,
    time_from: datetime,
    time_to: datetime,
    interval: str = "1h",
) -> str:
    """Variables first, then macros: the SQL the database receives."""
    interpolated = interpolate(
        text, variables, time_from=time_from, time_to=time_to, interval=interval
    )
    out = expand_macros(interpolated, time_from=time_from, time_to=time_to)
    if "$" in out.replace("$$", ""):
        raise ValueError(f"something was left unexpanded in {out!r}")
    return out
