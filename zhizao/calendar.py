"""Shift calendars (班次日历): when an enterprise, or one of its lines, is scheduled to work.

A calendar is a weekly pattern of shifts with breaks, plus dated exceptions: holidays
(no shift starts that day) and make-up working days (调休: a weekend day worked with the
shifts of a given weekday). Calendars come from a YAML file (format in ``docs/kpi.md``,
sample ``zhizao/data/calendar_2026.yaml``) and are stored in the registry per enterprise,
optionally per line; a line's calendar replaces the enterprise's for its devices.

Rules that decide figures, written down once here:

- A shift belongs to the local day it starts on: a night shift 20:00-08:00 on the eve
  of a holiday runs; one that would start on the holiday does not.
- Times are the enterprise's local wall-clock times (``Enterprise.time_zone``), turned
  into UTC instants with :mod:`zoneinfo`, so daylight-saving zones get the right
  length of shift.
- Breaks are not scheduled time: a machine that stops for lunch loses nothing, one that
  runs through lunch is working overtime (which extends planned busy time, DESIGN §7).
- No calendar means every instant is scheduled.

:func:`scheduled_intervals` is the pure function the rollups use: instants as epoch
milliseconds, because the rollup sweep adds and compares integers exactly.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Self
from zoneinfo import ZoneInfo

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from zhizao.errors import ConfigError
from zhizao.registry import Code, CreditCode

MS_PER_DAY = 86_400_000


class Weekday(StrEnum):
    MON = "mon"
    TUE = "tue"
    WED = "wed"
    THU = "thu"
    FRI = "fri"
    SAT = "sat"
    SUN = "sun"

    @property
    def number(self) -> int:
        """Monday 0 ... Sunday 6, as :meth:`datetime.date.weekday`."""
        return list(Weekday).index(self)


WORKWEEK: tuple[Weekday, ...] = (Weekday.MON, Weekday.TUE, Weekday.WED, Weekday.THU, Weekday.FRI)


def _clock(value: Any) -> Any:
    # YAML 1.1 reads an unquoted 20:00 as the base-60 integer 1200 (minutes), and
    # "24:00" is how people write the end of a day: accept both.
    if isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value <= 24 * 60:
            raise ValueError(f"{value} is not a time of day")
        return time(0) if value == 24 * 60 else time(value // 60, value % 60)
    if isinstance(value, str) and value.strip() == "24:00":
        return time(0)
    return value


Clock = Annotated[time, BeforeValidator(_clock)]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class Break(_Model):
    """A pause inside a shift; it starts at the first ``start`` at or after the shift's start."""

    start: Clock
    end: Clock
    name: str | None = None


class Shift(_Model):
    name: str = Field(min_length=1, max_length=64)
    start: Clock
    end: Clock  # at or before ``start``: the shift ends the next day
    days: tuple[Weekday, ...] = WORKWEEK  # the weekdays on which the shift starts
    breaks: tuple[Break, ...] = ()


class Holiday(_Model):
    """One day (``date``) or a range (``from``/``to``, inclusive) with no shift."""

    name: str | None = None
    day: date | None = Field(default=None, alias="date")
    first: date | None = Field(default=None, alias="from")
    last: date | None = Field(default=None, alias="to")

    @model_validator(mode="after")
    def _one_form(self) -> Self:
        if self.day is not None and (self.first is not None or self.last is not None):
            raise ValueError("give either date or from/to, not both")
        if self.day is None and (self.first is None or self.last is None):
            raise ValueError("give date, or both from and to")
        if self.first is not None and self.last is not None and self.last < self.first:
            raise ValueError(f"to {self.last} is before from {self.first}")
        return self

    def days(self) -> list[date]:
        if self.day is not None:
            return [self.day]
        assert self.first is not None  # noqa: S101 - validated above
        assert self.last is not None  # noqa: S101
        return [self.first + timedelta(days=i) for i in range((self.last - self.first).days + 1)]


class Workday(_Model):
    """A make-up working day (调休): worked with the shifts of weekday ``as``."""

    day: date = Field(alias="date")
    as_weekday: Weekday = Field(default=Weekday.MON, alias="as")
    name: str | None = None


class ShiftCalendar(_Model):
    """The calendar of one enterprise, or of one line when ``line`` is set."""

    enterprise: CreditCode
    line: Code | None = None
    name: str = Field(min_length=1, max_length=200)
    shifts: tuple[Shift, ...] = Field(min_length=1)
    holidays: tuple[Holiday, ...] = ()
    workdays: tuple[Workday, ...] = ()

    @model_validator(mode="after")
    def _exceptions_consistent(self) -> Self:
        off = {d for h in self.holidays for d in h.days()}
        clash = sorted(w.day for w in self.workdays if w.day in off)
        if clash:
            raise ValueError(f"{clash[0]} is both a holiday and a make-up working day")
        return self

    def holiday_dates(self) -> frozenset[date]:
        return frozenset(d for h in self.holidays for d in h.days())

    def pattern_weekday(self, day: date) -> int | None:
        """The weekday whose shifts run on ``day``; None on a holiday."""
        if day in self.holiday_dates():
            return None
        for workday in self.workdays:
            if workday.day == day:
                return workday.as_weekday.number
        return day.weekday()


class CalendarFile(_Model):
    """A YAML calendar file: holidays and make-up days shared by all its calendars."""

    holidays: tuple[Holiday, ...] = ()
    workdays: tuple[Workday, ...] = ()
    calendars: tuple[dict[str, Any], ...] = Field(min_length=1)


def read_calendar_file(path: Path | str) -> list[ShiftCalendar]:
    """Read a YAML calendar file; a ConfigError names the file, the key and the problem.

    The calendars stored in the database are read by
    :func:`zhizao.storage.rollups.load_stored_calendars`.
    """
    source = str(path)
    try:
        document = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(source, "", f"cannot read YAML: {exc}") from exc
    return parse_calendars(document, source=source)


def parse_calendars(document: Any, *, source: str = "<calendar>") -> list[ShiftCalendar]:
    try:
        file = CalendarFile.model_validate(document)
    except ValidationError as exc:
        raise _config_error(source, exc, ()) from exc
    calendars: list[ShiftCalendar] = []
    for index, raw in enumerate(file.calendars):
        merged = {
            **raw,
            "holidays": [*file.holidays, *raw.get("holidays", ())],
            "workdays": [*file.workdays, *raw.get("workdays", ())],
        }
        try:
            calendars.append(ShiftCalendar.model_validate(merged))
        except ValidationError as exc:
            raise _config_error(source, exc, ("calendars", index)) from exc
    return calendars


def _config_error(source: str, exc: ValidationError, prefix: tuple[object, ...]) -> ConfigError:
    first = exc.errors(include_url=False)[0]
    key = ".".join(str(part) for part in (*prefix, *first["loc"]))
    return ConfigError(source, key, f"{first['msg']} (got {first.get('input')!r})")


# --- the pure part -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ShiftInstance:
    """One occurrence of a shift: its window and the working intervals inside it."""

    name: str
    day: date  # the local day the shift starts on
    start_ms: int
    end_ms: int
    working: tuple[tuple[int, int], ...]  # the window minus its breaks

    @property
    def scheduled_ms(self) -> int:
        return sum(e - s for s, e in self.working)


def to_ms(instant: datetime) -> int:
    if instant.tzinfo is None:
        raise ValueError("instants must be timezone-aware")
    return int(instant.timestamp() * 1000)


def from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def _local_ms(day: date, clock: time, zone: ZoneInfo) -> int:
    return to_ms(datetime.combine(day, clock, tzinfo=zone))


def shift_instances(
    calendar: ShiftCalendar, zone: ZoneInfo, start_ms: int, end_ms: int
) -> list[ShiftInstance]:
    """Shift occurrences overlapping [start, end), sorted, not clipped."""
    first = from_ms(start_ms).astimezone(zone).date() - timedelta(days=1)
    last = from_ms(end_ms).astimezone(zone).date()
    found: list[ShiftInstance] = []
    day = first
    while day <= last:
        weekday = calendar.pattern_weekday(day)
        if weekday is not None:
            for shift in calendar.shifts:
                if weekday not in {d.number for d in shift.days}:
                    continue
                s = _local_ms(day, shift.start, zone)
                end_day = day if shift.end > shift.start else day + timedelta(days=1)
                e = _local_ms(end_day, shift.end, zone)
                if e <= start_ms or s >= end_ms:
                    continue
                found.append(
                    ShiftInstance(shift.name, day, s, e, _minus_breaks(shift, day, s, e, zone))
                )
        day += timedelta(days=1)
    found.sort(key=lambda i: i.start_ms)
    return found


def _minus_breaks(
    shift: Shift, day: date, s: int, e: int, zone: ZoneInfo
) -> tuple[tuple[int, int], ...]:
    cuts: list[tuple[int, int]] = []
    for pause in shift.breaks:
        bday = day if pause.start >= shift.start else day + timedelta(days=1)
        bs = _local_ms(bday, pause.start, zone)
        bend_day = bday if pause.end > pause.start else bday + timedelta(days=1)
        be = _local_ms(bend_day, pause.end, zone)
        cuts.append((max(bs, s), min(be, e)))
    return tuple(subtract([(s, e)], cuts))


def subtract(
    intervals: Iterable[tuple[int, int]], cuts: Iterable[tuple[int, int]]
) -> list[tuple[int, int]]:
    """``intervals`` minus the union of ``cuts``, both as half-open [start, end)."""
    result = merge(intervals)
    for cs, ce in merge(cuts):
        nxt: list[tuple[int, int]] = []
        for s, e in result:
            if ce <= s or cs >= e:
                nxt.append((s, e))
                continue
            if s < cs:
                nxt.append((s, cs))
            if ce < e:
                nxt.append((ce, e))
        result = nxt
    return result


def merge(intervals: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted, non-overlapping union of half-open intervals; empty ones dropped."""
    out: list[tuple[int, int]] = []
    for s, e in sorted(i for i in intervals if i[1] > i[0]):
        if out and s <= out[-1][1]:
            if e > out[-1][1]:
                out[-1] = (out[-1][0], e)
        else:
            out.append((s, e))
    return out


def scheduled_intervals(
    calendar: ShiftCalendar | None, zone: ZoneInfo, start_ms: int, end_ms: int
) -> list[tuple[int, int]]:
    """Scheduled time in [start, end) as sorted disjoint intervals; all of it without a calendar."""
    if end_ms <= start_ms:
        return []
    if calendar is None:
        return [(start_ms, end_ms)]
    working = [
        w for inst in shift_instances(calendar, zone, start_ms, end_ms) for w in inst.working
    ]
    return [
        (max(s, start_ms), min(e, end_ms)) for s, e in merge(working) if e > start_ms and s < end_ms
    ]


class Schedule:
    """Scheduled intervals with fast overlap queries for the rollup sweep."""

    __slots__ = ("_ends", "_intervals", "_prefix", "_starts")

    def __init__(self, intervals: Sequence[tuple[int, int]]) -> None:
        self._intervals = merge(intervals)
        self._starts = [s for s, _ in self._intervals]
        self._ends = [e for _, e in self._intervals]
        self._prefix = [0]
        for s, e in self._intervals:
            self._prefix.append(self._prefix[-1] + (e - s))

    def _covered_before(self, t: int) -> int:
        """Scheduled ms in (-inf, t)."""
        i = bisect.bisect_right(self._starts, t)  # intervals starting at or before t
        if i == 0:
            return 0
        s, e = self._intervals[i - 1]
        return self._prefix[i - 1] + (min(e, t) - s)

    def overlap(self, start: int, end: int) -> int:
        """Scheduled milliseconds within [start, end)."""
        if end <= start:
            return 0
        return self._covered_before(end) - self._covered_before(start)

    @property
    def intervals(self) -> list[tuple[int, int]]:
        return list(self._intervals)


def calendar_for(
    calendars: Iterable[ShiftCalendar], enterprise: str, line: str | None
) -> ShiftCalendar | None:
    """The line's calendar if it has one, else the enterprise's, else None."""
    fallback: ShiftCalendar | None = None
    for calendar in calendars:
        if calendar.enterprise != enterprise:
            continue
        if line is not None and calendar.line == line:
            return calendar
        if calendar.line is None:
            fallback = calendar
    return fallback
